"""Multicast DNS (RFC 6762): DNS messages on 224.0.0.251 / ff02::fb, port 5353.

Sent to the mDNS group, a DNS-format message is mDNS by definition.  Off the
group (unicast replies, legacy queries) mDNS's own conventions still show:
a zero query ID with the unicast-response or cache-flush class bit, answers
nobody asked for, or only ``.local`` names.  A message that is valid plain
DNS and carries none of those is named mDNS only because port 5353 breaks
the tie, at low confidence and with ``port_hint``.
"""

from __future__ import annotations

from ..base import UDP_ONLY, Heuristic
from .dnswire import detector

HEURISTICS = [
    Heuristic("MDNS", detector("MDNS"), UDP_ONLY, None, server_first=False, order=58),
]
