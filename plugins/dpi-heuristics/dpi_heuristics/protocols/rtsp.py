"""RTSP 1.0/2.0 (RFC 2326, RFC 7826): ``METHOD uri RTSP/1.0`` requests and ``RTSP/1.0 200`` responses.

RTSP borrows HTTP's syntax but not its version token, so the request line
decides alone (the HTTP heuristic only takes ``HTTP/1.x``).  A request line
cut by the segment waits while its method is an RTSP one.
"""

from __future__ import annotations

import re

from dpicore import Verdict

from ..base import CERTAIN, MORE, STRONG, TCP_ONLY, Context, Heuristic, found, starts, text
from ..textproto import incomplete

METHODS = ("OPTIONS", "DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER", "SET_PARAMETER",
           "ANNOUNCE", "RECORD", "REDIRECT", "PLAY_NOTIFY")
_METHOD_SET = frozenset(m.encode() for m in METHODS)
_REQUEST = re.compile(rb"^([A-Z_]{3,16}) (\S{1,4096}) RTSP/([12]\.0)\r?\n")
_RESPONSE = re.compile(rb"^RTSP/([12]\.0) ([1-5]\d\d)(?: [^\r\n]*)?\r?\n")
_HEADER = re.compile(rb"^(CSeq|User-Agent|Server|Session|Transport):[ \t]*+([^\r\n]*+)\r?$",
                     re.M | re.I)  # possessive: see http._HEADER


def _headers(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in _HEADER.findall(data[:4096]):
        out.setdefault(name.decode().lower(), value.decode("latin-1").strip())
    return out


def detect(ctx: Context) -> Verdict | None | object:
    data = ctx.stream if ctx.index > 1 else ctx.payload
    m = _REQUEST.match(data)
    if m:
        method = m.group(1)
        h = _headers(data)
        return found("RTSP", CERTAIN if method in _METHOD_SET else STRONG, method=method.decode(),
                     url=text(m.group(2), 512), user_agent=h.get("user-agent"), version="RTSP/" + m.group(3).decode())
    m = _RESPONSE.match(data)
    if m:
        h = _headers(data)
        return found("RTSP", CERTAIN if "cseq" in h else STRONG, status=int(m.group(2)), server=h.get("server"))
    word = data.split(b" ", 1)[0]
    if (word in _METHOD_SET or data.startswith(b"RTSP/")) and incomplete(data, ctx.index):
        return MORE
    return None


HEURISTICS = [
    Heuristic("RTSP", detect, TCP_ONLY, starts(*METHODS, "RTSP/"), order=25),
]
