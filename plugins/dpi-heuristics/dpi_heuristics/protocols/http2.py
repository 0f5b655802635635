"""HTTP/2 with prior knowledge (RFC 9113 section 3.3): the 24-byte client preface.

A cleartext HTTP/2 connection opens with ``PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n``
followed by a SETTINGS frame; the upgrade path (``Upgrade: h2c``) is an
HTTP/1.1 request and is named by the HTTP heuristic.  A capture that missed
the preface may still show the server's SETTINGS frame first; that alone is
a guess.
"""

from __future__ import annotations

import struct

from dpicore import Verdict

from ..base import CERTAIN, LIKELY, MORE, TCP_ONLY, Context, Heuristic, found

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS = 0x4


def settings_frame(data: bytes) -> bool:
    """A SETTINGS frame on stream 0 whose length is a multiple of 6 and fits the payload."""
    if len(data) < 9:
        return False
    length = int.from_bytes(data[:3], "big")
    ftype, flags = data[3], data[4]
    (stream,) = struct.unpack_from("!I", data, 5)
    return (ftype == SETTINGS and stream == 0 and length % 6 == 0 and length <= 16384 and flags in (0, 1)
            and (flags == 0 or length == 0) and 9 + length <= len(data))


def detect(ctx: Context) -> Verdict | None | object:
    data = ctx.stream if ctx.index > 1 else ctx.payload
    if ctx.from_client:
        if data.startswith(PREFACE):
            return found("HTTP2", CERTAIN, mode="prior-knowledge")
        if len(data) < len(PREFACE) and PREFACE.startswith(data):
            return MORE
        return None
    if ctx.index == 1 and settings_frame(data):
        return ctx.guess(found("HTTP2", LIKELY, mode="server-settings"))
    return None


HEURISTICS = [
    Heuristic("HTTP2", detect, TCP_ONLY, frozenset({ord("P"), 0x00}), server_first=True, order=15),
]
