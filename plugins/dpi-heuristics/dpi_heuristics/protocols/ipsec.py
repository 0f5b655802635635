"""IPsec: IKE/ISAKMP (RFC 2408, RFC 7296), its NAT-T encapsulation (RFC 3948), ESP and AH.

An ISAKMP header is 28 bytes: a non-zero initiator SPI, the responder SPI,
a next-payload type, the version (1.0 or 2.0), an exchange type, flags, a
message ID and a length that must equal the datagram's, which is certain.
On the NAT-T port a non-ESP marker (four zero bytes) precedes it; any other
datagram there is ESP-in-UDP: an SPI of at least 256 and a sequence number
that counts up, which needs a second packet of the same SPI.

ESP and AH flows (IP protocols 50 and 51) are IPsec by their IP protocol
number, the layer below any port; their headers are still checked.
"""

from __future__ import annotations

import struct

from dpicore import Verdict
from dpicore.model import UDP

from ..base import CERTAIN, MORE, STRONG, Context, Heuristic, found

ESP, AH = 50, 51
IKEV1_PAYLOADS = frozenset(range(0, 14)) | frozenset({15, 16, 20, 21, 130, 131, 132})
IKEV2_PAYLOADS = frozenset({0}) | frozenset(range(33, 256))  # 33..53 assigned, 128+ private use
IKEV1_EXCHANGES = frozenset({0, 1, 2, 3, 4, 5, 6, 32, 33, 34})
IKEV2_EXCHANGES = frozenset(range(34, 45))


def isakmp(data: bytes) -> dict[str, object] | None:
    """Version and exchange of an ISAKMP message filling ``data``, or None."""
    if len(data) < 28:
        return None
    ispi, _rspi, next_payload, version, exchange, flags, _msgid, length = struct.unpack_from("!QQBBBBII", data)
    if ispi == 0 or length != len(data):
        return None
    major, minor = version >> 4, version & 0x0F
    if minor != 0:
        return None
    if major == 1 and next_payload in IKEV1_PAYLOADS and exchange in IKEV1_EXCHANGES and not flags & 0xF8:
        return {"ike": 1, "exchange": exchange}
    if major == 2 and next_payload in IKEV2_PAYLOADS and exchange in IKEV2_EXCHANGES and not flags & 0xC7:
        return {"ike": 2, "exchange": exchange}
    return None


def _esp_in_udp(ctx: Context, data: bytes) -> object:
    """ESP in UDP: the same SPI twice in one direction, the sequence number one higher.

    ESP pads to a multiple of four bytes, an SPI below 256 is reserved, and
    security associations are one-way: the other direction uses another
    SPI, so a "SPI" seen both ways is a constant header of some other
    protocol (Nintendo's PIA has one).  No guess from one packet: too many
    UDP payloads start with two non-zero words.
    """
    if len(data) < 24 or len(data) % 4:
        return None
    spi, seq = struct.unpack_from("!II", data)
    if spi < 256 or seq == 0:
        return None
    seen = ctx.memo.setdefault("IPsec", {0: None, 1: None})
    other = seen[1 - ctx.direction]
    if other is not None and other[0] == spi:
        return None
    last = seen[ctx.direction]
    if last is not None:
        if last == (spi, seq - 1):
            return found("IPsec", STRONG, encapsulation="esp-in-udp")
        if last[0] != spi:
            return None
    seen[ctx.direction] = (spi, seq)
    return MORE if ctx.index <= 2 else None


def detect(ctx: Context) -> Verdict | None | object:
    data = ctx.payload
    if ctx.transport == ESP:
        if len(data) >= 8 and struct.unpack_from("!I", data)[0] >= 256:
            return found("IPsec", CERTAIN, encapsulation="esp")
        return None
    if ctx.transport == AH:
        if len(data) >= 12 and data[2:4] == b"\x00\x00" and (data[1] + 2) * 4 <= len(data):
            return found("IPsec", CERTAIN, encapsulation="ah")
        return None
    if ctx.transport != UDP:
        return None
    info = isakmp(data)
    if info is not None:
        return found("IPsec", CERTAIN, encapsulation="ike", **info)
    if data[:4] == b"\x00\x00\x00\x00":
        info = isakmp(data[4:])
        return found("IPsec", CERTAIN, encapsulation="nat-t-ike", **info) if info else None
    return _esp_in_udp(ctx, data)


HEURISTICS = [
    Heuristic("IPsec", detect, frozenset({UDP, ESP, AH}), None, server_first=False, order=45),
]
