"""The Git protocol (git://, ``git daemon``): pkt-line requests and the server's ref advertisement.

A pkt-line is four hex digits giving its own length, then the data.  The
client's first line names the service: ``git-upload-pack /path\\0host=...\\0``
(or receive-pack / upload-archive).  A server's first line advertises a
ref: 40 (or 64) hex digits, a space and a ref name.  Git over SSH or HTTP
is SSH or HTTP on the wire.
"""

from __future__ import annotations

import re

from dpicore import Verdict

from ..base import CERTAIN, MORE, TCP_ONLY, Context, Heuristic, found, starts

_REQUEST = re.compile(rb"^([0-9a-f]{4})(git-(?:upload-pack|receive-pack|upload-archive)) ([^\x00\n]{1,1024})")
_HOST = re.compile(rb"\x00host=([^\x00]{1,255})\x00")
_PARTIAL = re.compile(rb"^[0-9a-f]{0,4}$|^[0-9a-f]{4}g(?:i(?:t(?:-[a-z-]{0,16})?)?)?$")
_ADVERT = re.compile(rb"^([0-9a-f]{4})(?:[0-9a-f]{40}|[0-9a-f]{64}) [\x21-\x7e]{1,255}(\x00|\n)")


def detect(ctx: Context) -> Verdict | None | object:
    data = ctx.stream if ctx.index > 1 else ctx.payload
    m = _REQUEST.match(data)
    if m:
        length = int(m.group(1), 16)
        if length < m.end() or length > 65520:
            return None
        host = _HOST.search(data, 0, length)
        return found("Git", CERTAIN, service=m.group(2).decode(), path=m.group(3).decode("latin-1"),
                     host=host.group(1).decode("latin-1") if host else None)
    m = _ADVERT.match(data)
    if m and int(m.group(1), 16) >= m.end():
        return found("Git", CERTAIN, service="ref-advertisement")
    if _PARTIAL.match(data) and ctx.index < 3:
        return MORE  # a request cut by the segment
    return None


HEURISTICS = [
    Heuristic("Git", detect, TCP_ONLY, starts("0"), order=30),
]
