"""SIP (RFC 3261) over UDP and TCP: ``METHOD sip:uri SIP/2.0`` requests and ``SIP/2.0 NNN`` responses.

The version token ``SIP/2.0`` and a request URI with a ``sip:``/``sips:``/
``tel:`` scheme decide alone; HTTP shares method names (OPTIONS, NOTIFY,
SUBSCRIBE) but never that version.  Metadata: method, From and To users,
User-Agent.
"""

from __future__ import annotations

import re

from dpicore import Verdict
from dpicore.model import TCP

from ..base import CERTAIN, MORE, STRONG, TCP_UDP, Context, Heuristic, found, starts, text
from ..textproto import incomplete

METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH",
           "INFO", "REFER", "MESSAGE", "UPDATE")
_METHOD_SET = frozenset(m.encode() for m in METHODS)
_REQUEST = re.compile(rb"^([A-Z]{3,16}) ((?:sips?|tel|urn):[^\s]{1,2048}) SIP/2\.0\r?\n", re.I)
_RESPONSE = re.compile(rb"^SIP/2\.0 ([1-6]\d\d)(?: [^\r\n]*)?\r?\n")
_HEADER = re.compile(rb"^(From|To|f|t|User-Agent|Server|Call-ID|i|CSeq|Via|v):[ \t]*+([^\r\n]*+)\r?$",
                     re.M | re.I)  # possessive: see http._HEADER
_URI_USER = re.compile(rb"<?(?:sips?|tel):([^@>;\s]{1,128})")
_SHORT = {"f": "from", "t": "to", "i": "call-id", "v": "via"}


def _headers(data: bytes) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name, value in _HEADER.findall(data[:8192]):
        key = name.decode().lower()
        out.setdefault(_SHORT.get(key, key), value.strip())
    return out


def _user(value: bytes | None) -> str | None:
    m = _URI_USER.search(value) if value else None
    return m.group(1).decode("latin-1") if m else None


def detect(ctx: Context) -> Verdict | None | object:
    # Over UDP every datagram is a whole message; over TCP a head may span segments.
    data = ctx.stream if ctx.index > 1 and ctx.transport == TCP else ctx.payload
    m = _REQUEST.match(data)
    if m:
        method = m.group(1).upper()
        h = _headers(data)
        known = method in _METHOD_SET
        return found("SIP", CERTAIN if known and ("via" in h or "cseq" in h) else STRONG, method=method.decode(),
                     uri=text(m.group(2), 512), from_user=_user(h.get("from")), to_user=_user(h.get("to")),
                     user_agent=text(h["user-agent"]) if "user-agent" in h else None)
    m = _RESPONSE.match(data)
    if m:
        h = _headers(data)
        return found("SIP", CERTAIN if "cseq" in h or "via" in h else STRONG, status=int(m.group(1)),
                     server=text(h["server"]) if "server" in h else None)
    word = data.split(b" ", 1)[0].upper()
    if ctx.transport == TCP and (word in _METHOD_SET or data.startswith(b"SIP/")) and incomplete(data, ctx.index):
        return MORE
    return None


HEURISTICS = [
    Heuristic("SIP", detect, TCP_UDP, starts(*METHODS, "SIP/"), order=25),
]
