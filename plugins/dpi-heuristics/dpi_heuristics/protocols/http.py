"""HTTP/1.x requests and responses, also when the request head spans segments.

A request line is ``METHOD SP target SP HTTP/1.x``; a response starts with
``HTTP/1.x SP 3DIGIT``.  Methods come from the IANA method registry plus
WebDAV's; an unknown token followed by a valid request line still counts,
at a lower confidence, because RFC 9110 lets servers define methods.

The same heuristic names what an HTTP/1.1 head turns into: an ``Upgrade:
websocket`` handshake is WebSocket, an ``Upgrade: h2c`` with its
``HTTP2-Settings`` is HTTP2 (and a 101 answer to either), and a GET of a
tracker's ``announce``/``scrape`` with an ``info_hash`` is BitTorrent.
"""

from __future__ import annotations

import re

from dpicore import Verdict

from ..base import CERTAIN, LIKELY, MORE, STRONG, TCP_ONLY, Context, Heuristic, found, starts, text

METHODS = (
    "GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PATCH", "PROPFIND", "PROPPATCH",
    "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH", "REPORT", "MKACTIVITY", "CHECKOUT", "MERGE",
    "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE", "PURGE", "ACL", "BIND", "LINK", "UNLINK", "MKCALENDAR",
    "VERSION-CONTROL", "BASELINE-CONTROL", "UPDATE", "LABEL", "ORDERPATCH", "REBIND", "UNBIND", "M-SEARCH",
)
_METHOD_SET = frozenset(m.encode() for m in METHODS)
_REQUEST = re.compile(rb"^([A-Z][A-Z_-]{1,19}) (\S{1,8192}) HTTP/(1\.[01]|0\.9)\r?\n")
_RESPONSE = re.compile(rb"^HTTP/(1\.[01]|2|2\.0) ([1-5]\d\d)(?: [^\r\n]*)?\r?\n")
#: Possessive quantifiers: with plain ones, a line whose value ends in a lone CR (``a:`` and 64 KB of
#: spaces, then ``\rx``) is retried at every split of the spaces, seconds per packet.
_HEADER = re.compile(rb"^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*+([^\r\n]*+)\r?$", re.M)
MAX_HEAD = 16384


def headers(head: bytes) -> dict[str, str]:
    """Header fields of a message head (lower-case names, first occurrence wins)."""
    out: dict[str, str] = {}
    for name, value in _HEADER.findall(head):
        out.setdefault(name.decode("latin-1").lower(), value.decode("latin-1").strip())
    return out


def _upgrade(h: dict[str, str], response: bool = False) -> str | None:
    """The protocol an Upgrade header asks for (a request must also carry HTTP2-Settings for h2c)."""
    up = h.get("upgrade", "").lower()
    if "websocket" in up:
        return "WebSocket"
    if "h2c" in up and (response or "http2-settings" in h):
        return "HTTP2"
    return None


def request(ctx: Context, data: bytes) -> Verdict | None | object:
    """Decide on a client stream that may hold a (partial) HTTP request head."""
    m = _REQUEST.match(data)
    if m is None:
        # An incomplete first line: keep waiting while it still looks like one.
        line = data.split(b"\n", 1)[0]
        if b"\n" not in data and len(data) < 8192 and b" " in line:
            method = line.split(b" ", 1)[0]
            if method in _METHOD_SET:
                return MORE
        return None
    method, target, version = m.group(1), m.group(2), m.group(3)
    known = method in _METHOD_SET
    if not known and method.upper() != method:
        return None
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = data.find(b"\n\n")
    if end < 0 and len(data) < MAX_HEAD:
        if known:
            # The request line alone is already unambiguous; read on for Host and friends
            # (and answer with what is there if the flow ends first).
            if len(data) >= 2048:
                return _verdict(method, target, version, data, known)
            ctx.guess(_verdict(method, target, version, data, known))
        return MORE
    return _verdict(method, target, version, data[:end] if end >= 0 else data, known)


#: BitTorrent tracker requests (BEP 3, BEP 48) are HTTP on the wire but BitTorrent by purpose.
_TRACKER = re.compile(rb"^/(?:[^?\s]*/)?(?:announce|scrape)(?:\.php)?\?(?:[^\s]*&)?info_hash=")


def _verdict(method: bytes, target: bytes, version: bytes, head: bytes, known: bool) -> Verdict:
    h = headers(head)
    proto = _upgrade(h) or ("BitTorrent" if method == b"GET" and _TRACKER.match(target) else "HTTP")
    confidence = CERTAIN if known else LIKELY
    return found(proto, confidence, method=method.decode(), host=h.get("host"), path=text(target, 512),
                 user_agent=h.get("user-agent"), version="HTTP/" + version.decode(),
                 upgrade=h.get("upgrade"))


def detect(ctx: Context) -> Verdict | None | object:
    data = ctx.stream if ctx.index > 1 else ctx.payload
    if ctx.from_client:
        result = request(ctx, data)
        if result is MORE and ctx.index >= 6:
            return ctx.tentative  # a head that never ends: the request line alone decides (or nothing)
        return result
    m = _RESPONSE.match(data)
    if m is None:
        return None
    end = data.find(b"\r\n\r\n")
    h = headers(data[:end] if end >= 0 else data[:MAX_HEAD])
    proto = "HTTP"
    if m.group(2) == b"101":
        proto = _upgrade(h, response=True) or "HTTP"
    return found(proto, STRONG, status=int(m.group(2)), server=h.get("server"),
                 content_type=h.get("content-type"))


HEURISTICS = [
    Heuristic("HTTP", detect, TCP_ONLY, starts(*METHODS, "HTTP/") | frozenset(range(ord("A"), ord("Z") + 1)),
              server_first=False, order=20, also=("WebSocket", "HTTP2", "BitTorrent")),
]
