"""XMPP (RFC 6120): the ``<stream:stream>`` header that opens both directions.

A client may send the XML declaration alone first (``<?xml version='1.0'
?>``) and the stream header in the next segment, so a lone declaration
waits.  The stream header must carry the XMPP streams namespace (or a
``jabber:`` one), which plain XML over TCP does not.
"""

from __future__ import annotations

import re

from dpicore import Verdict

from ..base import CERTAIN, MORE, TCP_ONLY, Context, Heuristic, found, starts

_DECL = re.compile(rb"^\s*<\?xml[^>]{0,200}\?>\s*", re.I)
_STREAM = re.compile(rb"<(?:stream:)?stream\b[^>]{0,2048}>", re.S)
_NAMESPACE = re.compile(rb"http://etherx\.jabber\.org/streams|['\"]jabber:(?:client|server|component:accept)['\"]")
_TO = re.compile(rb"""\bto=['"]([^'"]{1,255})['"]""")
_FROM = re.compile(rb"""\bfrom=['"]([^'"]{1,255})['"]""")


def detect(ctx: Context) -> Verdict | None | object:
    data = (ctx.stream if ctx.index > 1 else ctx.payload)[:4096]
    decl = _DECL.match(data)
    rest = data[decl.end():] if decl else data.lstrip()
    if not rest:
        return MORE if decl and ctx.index < 3 else None
    if not rest.startswith(b"<stream"):
        if decl is None and b"<stream:stream".startswith(rest[:14]) and len(rest) < 14:
            return MORE if ctx.index < 3 else None
        return None
    m = _STREAM.match(rest)
    if m is None:
        return MORE if len(rest) < 2048 and b">" not in rest and ctx.index < 4 else None
    header = m.group(0)
    if not _NAMESPACE.search(header):
        return None
    peer = _TO.search(header) if ctx.from_client else _FROM.search(header)
    domain = peer.group(1).decode("latin-1") if peer else None
    return found("XMPP", CERTAIN, **{"to" if ctx.from_client else "from": domain})


HEURISTICS = [
    Heuristic("XMPP", detect, TCP_ONLY, starts("<", " ", "\r", "\n"), order=40),
]
