"""Link-Local Multicast Name Resolution (RFC 4795): DNS-format queries to 224.0.0.252 / ff02::1:3.

Queries go to the LLMNR group, which defines the protocol.  Answers come
back by unicast from port 5355 and look like DNS answers without recursion
(RA and the Z bits clear); for those the port breaks the tie between the two
valid readings, at low confidence and with ``port_hint``.
"""

from __future__ import annotations

from ..base import UDP_ONLY, Heuristic
from .dnswire import detector

HEURISTICS = [
    Heuristic("LLMNR", detector("LLMNR"), UDP_ONLY, None, server_first=False, order=59),
]
