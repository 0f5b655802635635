"""Link-Local Multicast Name Resolution (RFC 4795): DNS-format queries to 224.0.0.252 / ff02::1:3.

Queries go to the LLMNR group, which defines the protocol.  Answers come
back by unicast from port 5355 and look like DNS answers without recursion
(RA and the Z bits clear); for those the port breaks the tie between the two
valid readings, at low confidence and with ``port_hint``.
"""

from __future__ import annotations

from dpicore import Verdict

from ..base import UDP_ONLY, Context, Heuristic, found
from .dnswire import reading, verdict_fields


def detect(ctx: Context) -> Verdict | None:
    r = reading(ctx)
    if r is None or r.protocol != "LLMNR":
        return None
    return found("LLMNR", r.confidence, port_hint=r.port_hint or None, **verdict_fields(r.message))


HEURISTICS = [
    Heuristic("LLMNR", detect, UDP_ONLY, None, server_first=False, order=59),
]
