"""POP3 (RFC 1939): the server's ``+OK`` greeting, or the client's POP3-only commands.

The server speaks first, ``+OK`` and a text (often with an APOP
``<timestamp@host>``).  A greeting is the server's *first* payload of the
flow; a Redis server also answers ``+OK``, but only after a command, so a
``+OK`` that follows a client payload is not taken as a greeting.  From the
client side, CAPA/STLS/APOP/UIDL/STAT decide alone; ``USER name`` (also an
FTP command) and ``AUTH`` (also SMTP's) wait for the server's ``+OK``.
"""

from __future__ import annotations

import re

from dpicore import Verdict

from ..base import CERTAIN, LIKELY, MORE, STRONG, TCP_ONLY, Context, Heuristic, found, starts, text
from ..textproto import head_line, verb

_POP_WORD = re.compile(rb"\bPOP3?\b|<[^<>@\s]+@[^<>\s]+>", re.I)
CLIENT_ONLY = frozenset({b"CAPA", b"STLS", b"APOP", b"UIDL", b"STAT"})
#: Commands shared with other protocols: the server's reply decides.
SHARED = frozenset({b"USER", b"AUTH", b"PASS"})
_REPLY = re.compile(rb"^(\+OK|-ERR)( |$)|^\+ ")


def detect(ctx: Context) -> Verdict | None | object:
    memo = ctx.memo.get("POP3")
    line = head_line(ctx)
    if not isinstance(line, bytes):
        return line
    if not ctx.from_client:
        if memo == "command":
            return found("POP3", STRONG) if _REPLY.match(line) else None
        if ctx.first(0) is not None or not line.startswith(b"+OK"):
            return None  # not a greeting: a reply to something the client said
        rest = line[3:]
        if rest[:1] not in (b"", b" "):
            return None
        banner = text(rest)
        if _POP_WORD.search(rest):
            return found("POP3", CERTAIN, banner=banner)
        if banner:
            return found("POP3", STRONG, banner=banner)
        # A bare "+OK": wait for the client's command.
        ctx.memo["POP3"] = "greeting"
        return ctx.guess(found("POP3", LIKELY))
    word, rest = verb(line)
    if word in CLIENT_ONLY and (word != b"APOP" or len(rest.split()) == 2):
        return found("POP3", CERTAIN if memo == "greeting" else STRONG)
    if memo == "greeting" and word in SHARED:
        return found("POP3", CERTAIN)
    if memo is None and word in SHARED and rest.strip():
        ctx.memo["POP3"] = "command"
        return MORE
    return None


HEURISTICS = [
    Heuristic("POP3", detect, TCP_ONLY, starts("+OK", "CAPA", "STLS", "APOP", "UIDL", "STAT", "USER", "AUTH", "PASS"),
              server_first=True, order=45),
]
