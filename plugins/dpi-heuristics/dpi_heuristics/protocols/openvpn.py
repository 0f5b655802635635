"""OpenVPN over UDP and TCP (TCP adds a 2-byte packet length).

A connection opens with the client's hard-reset packet: opcode 1, 7 or 10
in the high five bits and key id 0, an 8-byte session ID, optionally the
tls-auth HMAC (16 to 64 bytes) with its packet ID and time, an empty ACK
array and message packet ID 0.  Its size and five trailing zero bytes are
fixed by that layout, which is strong evidence; the server's hard reset
that acknowledges the client's session ID (it echoes it) is certain.
With tls-crypt the tail is encrypted, so the client packet is only a
guess until the server answers with a hard reset of its own.
"""

from __future__ import annotations

import struct

from dpicore import Verdict
from dpicore.model import TCP

from ..base import CERTAIN, LIKELY, STRONG, TCP_UDP, Context, Heuristic, found

CLIENT_RESETS = frozenset({1, 7, 10})
SERVER_RESETS = frozenset({2, 8})
#: Client hard-reset sizes: plain (14), and tls-auth with a 16, 20, 32 or 64-byte HMAC.
RESET_SIZES = frozenset({14, 38, 42, 54, 86})
OPCODE_NAMES = {1: "hard-reset-client-v1", 2: "hard-reset-server-v1", 7: "hard-reset-client-v2",
                8: "hard-reset-server-v2", 10: "hard-reset-client-v3"}


def packet(ctx: Context) -> bytes | None:
    """The first OpenVPN packet of the payload (TCP: after its length prefix)."""
    data = ctx.payload
    if ctx.transport != TCP:
        return data
    if len(data) < 3:
        return None
    (length,) = struct.unpack_from("!H", data)
    if length < 9 or length + 2 > len(data):
        return None
    return data[2:2 + length]


def _plausible_time(pkt: bytes, off: int) -> bool:
    """A replay-protection timestamp (seconds since 1970) between 2001 and 2106 at ``off``."""
    return len(pkt) >= off + 4 and pkt[off] >= 0x3B


def client_reset(pkt: bytes) -> float | None:
    """Confidence that ``pkt`` is a client hard reset, from its layout; None if it is not one."""
    if len(pkt) in RESET_SIZES and pkt[-5:] == b"\x00" * 5:
        # Plain (14 bytes), or tls-auth: the HMAC, then packet ID 1 and a timestamp.
        if len(pkt) == 14 or (pkt[len(pkt) - 13:len(pkt) - 9] == b"\x00\x00\x00\x01"
                              and _plausible_time(pkt, len(pkt) - 9)):
            return STRONG
    # tls-crypt(-v2): packet ID and timestamp in clear right after the session ID, the rest sealed.
    if len(pkt) >= 54 and pkt[9:13] == b"\x00\x00\x00\x01" and _plausible_time(pkt, 13):
        return LIKELY
    return None


def detect(ctx: Context) -> Verdict | None | object:
    pkt = packet(ctx)
    if pkt is None or len(pkt) < 9 or pkt[0] & 0x07:
        return None
    opcode = pkt[0] >> 3
    meta = {"opcode": OPCODE_NAMES.get(opcode), "transport": "tcp" if ctx.transport == TCP else "udp"}
    state = ctx.memo.setdefault("OpenVPN", {})
    if ctx.from_client and opcode in CLIENT_RESETS and ctx.index == 1:
        confidence = client_reset(pkt)
        if confidence is None:
            return None
        state["session"] = pkt[1:9]
        if confidence == STRONG:
            return found("OpenVPN", CERTAIN if ctx.transport == TCP else STRONG, **meta)
        return ctx.guess(found("OpenVPN", confidence, **meta))
    if not ctx.from_client and opcode in SERVER_RESETS and ctx.index == 1:
        session = state.get("session")
        if session is not None:
            return found("OpenVPN", CERTAIN if session in pkt[9:] else STRONG, **meta)
        plain = len(pkt) == 26 and pkt[9] == 1 and pkt[-4:] == b"\x00" * 4  # one ACK, message ID 0
        if plain or pkt[9:13] == b"\x00\x00\x00\x01" and _plausible_time(pkt, 13):
            return ctx.guess(found("OpenVPN", LIKELY, **meta))
    return None


HEURISTICS = [
    Heuristic("OpenVPN", detect, TCP_UDP,
              frozenset(op << 3 for op in CLIENT_RESETS | SERVER_RESETS) | frozenset(range(0, 6)),
              server_first=False, order=30),
]
