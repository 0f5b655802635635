"""VNC / RFB (RFC 6143): the 12-byte ProtocolVersion both sides send first.

The server opens with ``RFB 003.008\\n`` (or 003.003, 003.007, Apple's
003.889, 004.001...); the client echoes the version it chose.  Exactly
that shape and nothing else.
"""

from __future__ import annotations

import re

from dpicore import Verdict

from ..base import CERTAIN, TCP_ONLY, Context, Heuristic, found, starts

_VERSION = re.compile(rb"^RFB (\d{3})\.(\d{3})\n$")


def detect(ctx: Context) -> Verdict | None:
    m = _VERSION.match(ctx.payload) if ctx.index == 1 else None
    if m is None:
        return None
    return found("VNC", CERTAIN, version=f"{int(m.group(1))}.{int(m.group(2))}")


HEURISTICS = [
    Heuristic("VNC", detect, TCP_ONLY, starts(b"RFB"), server_first=True, order=20),
]
