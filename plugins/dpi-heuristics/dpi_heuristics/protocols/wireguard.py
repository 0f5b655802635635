"""WireGuard (whitepaper section 5.4) over UDP.

Every message starts with a type byte 1..4 and three zero bytes.  The
handshake messages have fixed sizes (initiation 148, response 92, cookie
reply 64 bytes), which is certain.  Transport data (type 4) is a receiver
index, a 64-bit little-endian counter and ciphertext padded to 16 bytes;
a flow seen only from the middle needs a second data packet with the
same receiver index and a later counter.
"""

from __future__ import annotations

import struct

from dpicore import Verdict

from ..base import CERTAIN, LIKELY, STRONG, UDP_ONLY, Context, Heuristic, found

SIZES = {1: (148, "handshake-initiation"), 2: (92, "handshake-response"), 3: (64, "cookie-reply")}
DATA = 4


def detect(ctx: Context) -> Verdict | None | object:
    data = ctx.payload
    if len(data) < 32 or data[1:4] != b"\x00\x00\x00":
        return None
    mtype = data[0]
    if mtype in SIZES:
        size, name = SIZES[mtype]
        if len(data) != size:
            return None
        return found("WireGuard", CERTAIN if mtype != 3 else STRONG, message=name)
    if mtype != DATA or (len(data) - 32) % 16:
        return None
    receiver, counter = struct.unpack_from("<IQ", data, 4)
    if counter >= 1 << 48:
        return None
    seen = ctx.memo.setdefault("WireGuard", {})
    last = seen.get((ctx.direction, receiver))
    if last is not None and last < counter <= last + 4096:
        return found("WireGuard", STRONG, message="transport-data")
    seen[(ctx.direction, receiver)] = counter
    if ctx.index > 4 or len(seen) > 2:
        return None
    return ctx.guess(found("WireGuard", LIKELY, message="transport-data"))


HEURISTICS = [
    Heuristic("WireGuard", detect, UDP_ONLY, frozenset({1, 2, 3, 4}), server_first=False, order=20),
]
