"""IMAP4 (RFC 9051 / 3501): the server's untagged greeting, or a client's tagged command.

The server greets first with ``* OK``, ``* PREAUTH`` or ``* BYE``; nothing
else starts a connection with an untagged ``*`` response.  A client line is
``tag SP command``: the tag is an atom, and real clients number theirs
(``A001``, ``a1``, ``1``, imaplib's ``ABCD1``), so a tag without a digit is
not taken (that keeps ``USER LOGIN`` or ``MAIL FROM:`` away).
"""

from __future__ import annotations

import re

from dpicore import Verdict

from ..base import CERTAIN, MORE, STRONG, TCP_ONLY, Context, Heuristic, found, text
from ..textproto import head_line

_GREETING = re.compile(rb"^\* (OK|PREAUTH|BYE)( |$)", re.I)
_IMAP_WORD = re.compile(rb"IMAP4|\[CAPABILITY ", re.I)
COMMANDS = frozenset({
    b"CAPABILITY", b"NOOP", b"LOGOUT", b"STARTTLS", b"AUTHENTICATE", b"LOGIN", b"ENABLE", b"SELECT", b"EXAMINE",
    b"CREATE", b"DELETE", b"RENAME", b"SUBSCRIBE", b"UNSUBSCRIBE", b"LIST", b"LSUB", b"NAMESPACE", b"STATUS",
    b"APPEND", b"IDLE", b"CLOSE", b"UNSELECT", b"EXPUNGE", b"SEARCH", b"FETCH", b"STORE", b"COPY", b"MOVE", b"UID",
    b"ID", b"CHECK", b"GETQUOTAROOT", b"COMPRESS",
})
_TAGGED = re.compile(rb"^([A-Za-z0-9.]{0,15}[0-9][A-Za-z0-9.]{0,15}) ([A-Za-z]+)(?: |$)")
_UNTAGGED = re.compile(rb"^\* (OK|NO|BAD|BYE|CAPABILITY|FLAGS|LIST|LSUB|STATUS|SEARCH|ENABLED|ID|NAMESPACE"
                       rb"|[0-9]{1,10} (EXISTS|RECENT|EXPUNGE|FETCH))( |$)", re.I)


def detect(ctx: Context) -> Verdict | None | object:
    line = head_line(ctx)
    if not isinstance(line, bytes):
        return line
    memo = ctx.memo.get("IMAP")
    if not ctx.from_client:
        if memo is not None:  # the reply to the client's tagged command: untagged data, or its own tag
            tag, command = memo
            ok = _UNTAGGED.match(line) or re.match(re.escape(tag) + rb" (OK|NO|BAD)( |$)", line, re.I)
            return found("IMAP", CERTAIN, command=command) if ok else None
        m = _GREETING.match(line)
        if m is None:
            return None
        return found("IMAP", CERTAIN if _IMAP_WORD.search(line) else STRONG, banner=text(line[2:]))
    m = _TAGGED.match(line)
    if m is None or m.group(2).upper() not in COMMANDS:
        return None
    command = m.group(2).upper().decode()
    if ctx.first(1) is None and ctx.index == 1 and command in ("CAPABILITY", "LOGIN", "AUTHENTICATE", "STARTTLS",
                                                                  "ID", "NOOP"):
        return found("IMAP", STRONG, command=command)
    ctx.memo["IMAP"] = (m.group(1), command)
    return MORE


HEURISTICS = [
    Heuristic("IMAP", detect, TCP_ONLY,
              frozenset(b"*0123456789.") | frozenset(range(ord("A"), ord("Z") + 1)) | frozenset(range(ord("a"),
                                                                                                    ord("z") + 1)),
              server_first=True, order=55),
]
