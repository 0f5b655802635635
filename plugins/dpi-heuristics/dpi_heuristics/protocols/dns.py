"""DNS over UDP and over TCP (2-byte length framing, RFC 1035 §4.2.2).

The message format and the choice between DNS, mDNS and LLMNR live in
:mod:`.dnswire`; this heuristic answers only when that reading is plain
unicast DNS, so blocking ``MDNS`` or ``LLMNR`` never turns their traffic
into "DNS".
"""

from __future__ import annotations

from ..base import TCP_UDP, Heuristic
from .dnswire import detector

HEURISTICS = [
    # No first-byte filter: the first bytes are a random query ID (or, over TCP, a length).  Early in the
    # order all the same: the whole message must parse and end where the datagram does, as specific as a
    # magic number, and DNS is a third of real flows; behind the tests once ordered before it each DNS flow
    # made ~10 rejected calls (benchmarks/detector_calls.py, docs/performance-history.md run BH).
    Heuristic("DNS", detector("DNS"), TCP_UDP, None, server_first=False, order=11),
]
