"""Syslog (RFC 3164 BSD format, RFC 5424), over UDP and TCP (RFC 6587 framing).

Every message starts with ``<PRI>``: one to three digits, no leading zero,
a value of at most 191 (facility * 8 + severity).  Then:

* RFC 5424: a version (``1``), a space and an ISO timestamp or ``-``: certain;
* RFC 3164: ``Mmm dd hh:mm:ss``: certain;
* anything else devices really send (Cisco's sequence numbers, key=value
  firewall logs, a bare program tag): printable text, and strong when a
  timestamp appears early in it, likely otherwise.

Over TCP a message may also be octet-counted (``LEN SP <PRI>...``).
"""

from __future__ import annotations

import re

from dpicore import Verdict
from dpicore.model import TCP

from ..base import CERTAIN, LIKELY, STRONG, TCP_UDP, Context, Heuristic, found, starts, text

_PRI = re.compile(rb"<(0|[1-9]\d{0,2})>")
_OCTET_COUNT = re.compile(rb"([1-9]\d{0,5}) <")
_RFC5424 = re.compile(rb"[1-9]\d{0,1} (-|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)")
_MONTHS = rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_RFC3164 = re.compile(_MONTHS + rb" [ 0-3]\d \d\d:\d\d:\d\d")
_TIME_SOMEWHERE = re.compile(rb"(" + _MONTHS + rb" +\d{1,2} |\d{4}-\d\d-\d\d|\d\d/\d\d/\d{4})[ T-]?\d\d:\d\d:\d\d")
#: Printable ASCII, tab, and the UTF-8 / Latin-1 upper half; the first line must be all of these.
_TEXT = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
              "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4",
              "local5", "local6", "local7")
SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")


def message(data: bytes) -> tuple[float, dict[str, object]] | None:
    m = _PRI.match(data)
    if m is None:
        return None
    pri = int(m.group(1))
    if pri > 191:
        return None
    body = data[m.end():m.end() + 512]
    line = body.split(b"\n", 1)[0].rstrip(b"\r\x00")
    if len(line) < 4 or _TEXT.fullmatch(line) is None:
        return None
    meta: dict[str, object] = {"facility": FACILITIES[pri >> 3], "severity": SEVERITIES[pri & 7]}
    if _RFC5424.match(body):
        meta["format"] = "rfc5424"
        return CERTAIN, meta
    if _RFC3164.match(body):
        meta["format"] = "rfc3164"
        return CERTAIN, meta
    if _TIME_SOMEWHERE.search(line[:64]):
        return STRONG, meta
    if sum(c >= 0x80 for c in line) * 4 > len(line):
        return None  # mostly non-ASCII: binary that happens to start like a PRI
    meta["tag"] = text(line, 48)
    return LIKELY, meta


def detect(ctx: Context) -> Verdict | None:
    data = ctx.payload
    if ctx.transport == TCP:
        counted = _OCTET_COUNT.match(data)
        if counted is not None:
            data = data[counted.end() - 1:]
    result = message(data)
    if result is None:
        return None
    confidence, meta = result
    return found("Syslog", confidence, **meta)


HEURISTICS = [
    Heuristic("Syslog", detect, TCP_UDP, starts("<", *"123456789"), server_first=False, order=40),
]
