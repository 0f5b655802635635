"""SSDP (UPnP Device Architecture): HTTP-formatted messages over UDP (HTTPU/HTTPMU).

Discovery requests are ``M-SEARCH * HTTP/1.1`` and announcements
``NOTIFY * HTTP/1.1``: the ``*`` request target with these methods exists
only in SSDP.  Search answers are unicast ``HTTP/1.1 200 OK`` datagrams,
which are SSDP when they carry the ``ST`` and ``USN`` headers the UPnP
specification requires.  HTTP's heuristic would also accept the request
lines, so this one runs first (a lower ``order``).
"""

from __future__ import annotations

from dpicore import Verdict
from dpicore.model import UDP

from ..base import CERTAIN, TCP_UDP, Context, Heuristic, found, starts
from .http import headers

REQUESTS = {b"M-SEARCH * HTTP/1.1\r\n": "M-SEARCH", b"NOTIFY * HTTP/1.1\r\n": "NOTIFY"}
RESPONSE = b"HTTP/1.1 200 OK\r\n"


def detect(ctx: Context) -> Verdict | None:
    data = ctx.payload
    head = data[:4096]
    for line, method in REQUESTS.items():
        if head.startswith(line):
            h = headers(head)
            return found("SSDP", CERTAIN, method=method, search_target=h.get("st"),
                         notification_type=h.get("nt"), user_agent=h.get("user-agent") or h.get("server"))
    if ctx.transport == UDP and head.startswith(RESPONSE):
        h = headers(head)
        if "st" in h and "usn" in h:
            return found("SSDP", CERTAIN, method="response", search_target=h.get("st"), server=h.get("server"))
    return None


HEURISTICS = [
    Heuristic("SSDP", detect, TCP_UDP, starts("M-SEARCH", "NOTIFY", "HTTP/"), server_first=False, order=15),
]
