"""DNS over UDP and over TCP (2-byte length framing, RFC 1035 §4.2.2).

The message format and the choice between DNS, mDNS and LLMNR live in
:mod:`.dnswire`; this heuristic answers only when that reading is plain
unicast DNS, so blocking ``MDNS`` or ``LLMNR`` never turns their traffic
into "DNS".
"""

from __future__ import annotations

from dpicore import Verdict

from ..base import TCP_UDP, Context, Heuristic, found
from .dnswire import reading, verdict_fields


def detect(ctx: Context) -> Verdict | None:
    r = reading(ctx)
    if r is None or r.protocol != "DNS":
        return None
    return found("DNS", r.confidence, **verdict_fields(r.message))


HEURISTICS = [
    # No first-byte filter: the first bytes are a random query ID (or, over TCP, a length).
    Heuristic("DNS", detect, TCP_UDP, None, server_first=False, order=60),
]
