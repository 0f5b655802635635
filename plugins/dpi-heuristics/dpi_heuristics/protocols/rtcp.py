"""RTCP (RFC 3550 section 6) over UDP, compound packets included.

Each packet has version 2, a type in 200..207 and a length in 32-bit words
minus one; a datagram is a compound of such packets that must tile it
exactly (SRTCP may append its index and an authentication tag, up to 20
bytes).  A compound that starts with a sender or receiver report, as
RFC 3550 requires, is strong evidence; other first types want a second
datagram.
"""

from __future__ import annotations

import struct

from dpicore import Verdict

from ..base import LIKELY, STRONG, UDP_ONLY, Context, Heuristic, found

TYPES = {200: "SR", 201: "RR", 202: "SDES", 203: "BYE", 204: "APP", 205: "RTPFB", 206: "PSFB", 207: "XR"}
#: SRTCP trailer: E flag and index (4 bytes) plus an authentication tag of up to 16 bytes.
MAX_TRAILER = 20


def compound(data: bytes) -> tuple[list[int], int] | None:
    """(packet types, trailer length) of an RTCP compound packet filling ``data``, or None."""
    types: list[int] = []
    off = 0
    while off + 4 <= len(data):
        b0, ptype, words = struct.unpack_from("!BBH", data, off)
        if b0 >> 6 != 2 or ptype not in TYPES:
            break
        size = 4 * (words + 1)
        if off + size > len(data):
            return None
        if ptype in (200, 201) and size < 8 + 24 * (b0 & 0x1F):  # report blocks must fit
            return None
        types.append(ptype)
        off += size
    if not types:
        return None
    rest = len(data) - off
    if rest and (rest < 4 or rest > MAX_TRAILER):
        return None
    return types, rest


def detect(ctx: Context) -> Verdict | None | object:
    parsed = compound(ctx.payload)
    if parsed is None:
        return None
    types, trailer = parsed
    names = "+".join(TYPES[t] for t in types)
    if types[0] in (200, 201) and (len(types) > 1 or not trailer):
        return found("RTCP", STRONG, packets=names)
    seen = ctx.memo.get("RTCP", 0) + 1
    ctx.memo["RTCP"] = seen
    if seen >= 2:
        return found("RTCP", STRONG, packets=names)
    return ctx.guess(found("RTCP", LIKELY, packets=names))


HEURISTICS = [
    Heuristic("RTCP", detect, UDP_ONLY, frozenset(range(0x80, 0xC0)), server_first=False, order=35),
]
