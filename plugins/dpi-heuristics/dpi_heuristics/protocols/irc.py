"""IRC (RFC 1459 / 2812, IRCv3): client registration, or the server's prefixed messages.

A client registers with ``CAP LS``, ``NICK <nick>`` and ``USER <user> <mode>
<unused> :<real name>``; NICK and CAP are IRC's alone, and USER with four
parameters and a trailing one is too (FTP and POP3 send ``USER name``).
``PASS`` comes first on protected servers and waits for the next line.
Servers start with ``:server.name NOTICE * :*** Looking up your
hostname`` or a numeric reply, which is how the first server payload
decides when it is the first thing seen.
"""

from __future__ import annotations

import re

from dpicore import Verdict

from ..base import CERTAIN, MORE, STRONG, TCP_ONLY, Context, Heuristic, found, starts
from ..textproto import complete_lines, incomplete, printable

_NICK = re.compile(rb"^NICK :?([A-Za-z\[\]\\`_^{|}][A-Za-z0-9\[\]\\`_^{|}-]{0,49})$", re.I)
_USER = re.compile(rb"^USER [^ :]{1,64} [^ ]{1,64} [^ ]{1,64} :[^\r\n]{0,200}$", re.I)
_CAP = re.compile(rb"^CAP (LS( 30[12])?|REQ :[^\r\n]*|END)$", re.I)
_PASS = re.compile(rb"^PASS :?[^ ]{1,128}$", re.I)
_SERVER = re.compile(rb"^(:[\x21-\x7e]{1,255} )?(NOTICE [^ ]{1,64} :|[0-9]{3} [^ ]{1,64} |PING :|ERROR :)")


def detect(ctx: Context) -> Verdict | None | object:
    data = ctx.stream if ctx.index > 1 else ctx.payload
    lines = complete_lines(data[:8192], 8)
    if not lines:
        return MORE if incomplete(data, ctx.index) else None
    if not all(printable(x) for x in lines):
        return None
    if not ctx.from_client:
        # The server's first lines, before or after the client spoke.
        if _SERVER.match(lines[0]) and (lines[0].startswith(b":") or lines[0].startswith(b"NOTICE")):
            return found("IRC", CERTAIN if ctx.first(0) is not None else STRONG)
        return None
    nick = None
    evidence = 0
    for line in lines:
        m = _NICK.match(line)
        if m:
            nick = m.group(1).decode("latin-1")
            evidence += 1
        elif _USER.match(line) or _CAP.match(line):
            evidence += 1
        elif _PASS.match(line) and evidence == 0:
            continue
        else:
            return None
    if evidence:
        return found("IRC", CERTAIN if evidence > 1 else STRONG, nick=nick)
    return MORE if ctx.index < 3 else None  # PASS alone: NICK follows


HEURISTICS = [
    Heuristic("IRC", detect, TCP_ONLY, starts("NICK", "USER", "CAP", "PASS", ":", "NOTICE"), server_first=True,
              order=45),
]
