"""WebSocket frames (RFC 6455 section 5.2), for flows captured after the upgrade.

The opening handshake is an HTTP/1.1 Upgrade and is named by the HTTP
heuristic.  A capture that starts later sees frames: FIN and opcode (text,
binary, close, ping, pong; RSV1 for permessage-deflate), a mask bit, a
7/16/64-bit length and, from the client only, a 4-byte masking key.  A
frame whose length fills the segment exactly is a guess; a second exact
frame (the other side's with the opposite mask bit, or the same side's
with the same one) makes it strong.
"""

from __future__ import annotations

import struct

from dpicore import Verdict

from ..base import LIKELY, STRONG, TCP_ONLY, Context, Heuristic, found

OPCODES = {1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong"}
FIRST_BYTES = frozenset(0x80 | op for op in OPCODES) | frozenset({0xC1, 0xC2, 0x01, 0x02})


def frame(data: bytes) -> tuple[int, bool] | None:
    """(opcode, masked) of one frame that fills ``data`` exactly, or None."""
    if len(data) < 2 or data[0] not in FIRST_BYTES:
        return None
    opcode = data[0] & 0x0F
    masked = bool(data[1] & 0x80)
    length = data[1] & 0x7F
    off = 2
    if length == 126:
        if len(data) < 4:
            return None
        (length,) = struct.unpack_from("!H", data, 2)
        off = 4
    elif length == 127:
        if len(data) < 10:
            return None
        (length,) = struct.unpack_from("!Q", data, 2)
        off = 10
    if opcode >= 8 and (length > 125 or not data[0] & 0x80):  # control frames: short, never fragmented
        return None
    if masked:
        off += 4
    if off + length != len(data):
        return None
    return opcode, masked


def detect(ctx: Context) -> Verdict | None | object:
    parsed = frame(ctx.payload)
    if parsed is None:
        return None
    opcode, masked = parsed
    first = ctx.memo.get("WebSocket")
    if first is None:
        ctx.memo["WebSocket"] = (ctx.direction, masked)
        return ctx.guess(found("WebSocket", LIKELY, opcode=OPCODES.get(opcode, "continuation")))
    direction, first_masked = first
    if (direction == ctx.direction) == (first_masked == masked):
        return found("WebSocket", STRONG, opcode=OPCODES.get(opcode, "continuation"), mid_stream=True)
    return None


HEURISTICS = [
    Heuristic("WebSocket", detect, TCP_ONLY, FIRST_BYTES, server_first=True, order=70),
]
