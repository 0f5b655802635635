"""NTP versions 1-4 (RFC 1059, 1119, 1305, 5905), including the control (6) and private (7) modes.

The first byte packs leap indicator, version and mode, which leaves no magic
number; the test is the whole fixed layout:

* modes 1-5 (symmetric, client, server, broadcast): a 48-byte header, then
  nothing, a 4-byte crypto-NAK, a MAC (key id + MD5 or SHA-1 digest), or
  NTPv4 extension fields; a stratum of at most 16, a poll exponent and a
  precision in the ranges implementations use.  A server's answer whose
  receive and transmit timestamps lie within an hour of each other is
  certain; a lone request is strong;
* mode 6 (ntpq): a 12-byte header whose count covers the data that follows;
* mode 7 (ntpdc, the "monlist" of amplification attacks): an 8-byte header
  whose item count times item size is exactly the data of a response.
"""

from __future__ import annotations

import struct

from dpicore import Verdict

from ..base import CERTAIN, LIKELY, STRONG, UDP_ONLY, Context, Heuristic, found

MODES = {1: "symmetric active", 2: "symmetric passive", 3: "client", 4: "server", 5: "broadcast",
         6: "control", 7: "private"}
#: Bytes after the 48-byte header: none, crypto-NAK, key id + MD5, key id + SHA-1.
TRAILERS = frozenset({0, 4, 20, 24})
#: ntpdc request codes (ntp_request.h) go up to 45.
MAX_REQUEST_CODE = 45


def _first(b: int) -> tuple[int, int]:
    return (b >> 3) & 7, b & 7


def _extensions_fit(rest: bytes) -> bool:
    """NTPv4 extension fields (RFC 7822): each 16+ bytes, a multiple of 4, then an optional MAC."""
    off = 0
    while len(rest) - off not in TRAILERS:
        if off + 4 > len(rest):
            return False
        (length,) = struct.unpack_from("!H", rest, off + 2)
        if length < 16 or length % 4:
            return False
        off += length
    return True


def _signed(b: int) -> int:
    return b - 256 if b > 127 else b


def standard(data: bytes, version: int, mode: int) -> Verdict | None:
    if len(data) < 48:
        return None
    extra = len(data) - 48
    if extra not in TRAILERS and not (version == 4 and _extensions_fit(data[48:])):
        return None
    stratum, poll, precision = data[1], _signed(data[2]), _signed(data[3])
    if stratum > 16 or not -8 <= poll <= 17 or not -32 <= precision <= 0:
        return None
    receive, transmit = struct.unpack_from("!II", data, 32)[0], struct.unpack_from("!I", data, 40)[0]
    confidence = STRONG
    if mode in (2, 4) and receive and transmit and abs(((transmit - receive + 2**31) % 2**32) - 2**31) < 3600:
        confidence = CERTAIN
    refid = data[12:16]
    kiss = refid.decode("ascii") if stratum == 0 and mode == 4 and refid.isalpha() else None
    return found("NTP", confidence, version=version, mode=MODES[mode], stratum=stratum, kiss_code=kiss)


def control(data: bytes, version: int) -> Verdict | None:
    """Mode 6: LI/VN/mode, R/E/M/opcode, sequence, status, association id, offset, count, data."""
    if len(data) < 12 or data[1] & 0x1F == 0:  # opcode 0 is reserved
        return None
    offset, count = struct.unpack_from("!HH", data, 8)
    padded = 12 + ((count + 3) & ~3)
    if count > 468 or len(data) not in (12 + count, padded, padded + 4, padded + 20, padded + 24):
        return None
    if offset > 0x8000:
        return None
    return found("NTP", STRONG if count else LIKELY, version=version, mode=MODES[6],
                 response=bool(data[1] & 0x80), opcode=data[1] & 0x1F)


def private(data: bytes, version: int) -> Verdict | None:
    """Mode 7: R/M/VN/mode, A/sequence, implementation, request code, err/nitems, mbz/itemsize."""
    if len(data) < 8 or data[2] not in (0, 2, 3) or data[3] > MAX_REQUEST_CODE:
        return None
    err_items, mbz_size = struct.unpack_from("!HH", data, 4)
    nitems, size = err_items & 0x0FFF, mbz_size & 0x0FFF
    response = bool(data[0] & 0x80)
    if mbz_size & 0xF000 or err_items >> 12 > 7:
        return None
    if response:
        if 8 + nitems * size != len(data) or (nitems and not size):
            return None
        return found("NTP", CERTAIN if nitems else STRONG, version=version, mode=MODES[7], response=True,
                     request_code=data[3])
    if nitems * size > len(data) - 8 or len(data) not in (8, 48, 8 + nitems * size, 48 + 20, 48 + 24):
        return None
    return found("NTP", STRONG, version=version, mode=MODES[7], response=False, request_code=data[3])


def detect(ctx: Context) -> Verdict | None:
    data = ctx.payload
    version, mode = _first(data[0])
    if not 1 <= version <= 4 or mode == 0:
        return None
    if mode == 6:
        return control(data, version)
    if mode == 7:
        return private(data, version)
    return standard(data, version, mode)


HEURISTICS = [
    # Any first byte whose version field is 1-4 and mode is not 0.
    Heuristic("NTP", detect, UDP_ONLY,
              frozenset(b for b in range(256) if 1 <= (b >> 3) & 7 <= 4 and b & 7), server_first=False,
              order=45),
]
