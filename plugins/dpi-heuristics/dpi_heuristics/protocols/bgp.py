"""BGP-4 (RFC 4271): the 16-byte all-ones marker, a length of 19-4096 and a message type.

Either peer may speak first (both send OPEN).  The marker alone is 128
bits of evidence; the length and type must agree with it (KEEPALIVE is
exactly 19 bytes, OPEN carries version 4).  Metadata: the first message
type and, for OPEN, the speaker's AS number and BGP identifier.
"""

from __future__ import annotations

import struct

from dpicore import Verdict

from ..base import CERTAIN, TCP_ONLY, Context, Heuristic, found, starts

MARKER = b"\xff" * 16
TYPES = {1: "OPEN", 2: "UPDATE", 3: "NOTIFICATION", 4: "KEEPALIVE", 5: "ROUTE-REFRESH"}


def detect(ctx: Context) -> Verdict | None:
    data = ctx.payload
    if ctx.index > 1 or len(data) < 19 or not data.startswith(MARKER):
        return None
    length, kind = struct.unpack_from("!HB", data, 16)
    if not 19 <= length <= 4096 or kind not in TYPES or (kind == 4 and length != 19):
        return None
    meta: dict[str, object] = {"message": TYPES[kind]}
    if kind == 1:
        if len(data) < 29 or data[19] != 4 or length < 29:
            return None
        asn, hold = struct.unpack_from("!HH", data, 20)
        if 0 < hold < 3:
            return None
        meta["asn"] = asn
        meta["bgp_id"] = ".".join(str(b) for b in data[24:28])
    return found("BGP", CERTAIN, **meta)


HEURISTICS = [
    Heuristic("BGP", detect, TCP_ONLY, starts(b"\xff"), server_first=True, order=20),
]
