"""SMTP (RFC 5321): the server's ``220`` greeting, or the client's EHLO/HELO.

The server speaks first.  A ``220`` greeting is also how FTP starts, so the
greeting alone decides only when it names the protocol (``ESMTP``, ``SMTP``)
or a mail server (Postfix, Exim, Sendmail, Exchange...); nearly every MTA
does.  A bare ``220 host ready`` waits for the client: ``EHLO``/``HELO``
settle it.  When the capture starts at the client, EHLO/HELO or a
``MAIL FROM:`` decide alone: no other protocol uses those verbs.
"""

from __future__ import annotations

import re

from dpicore import Verdict

from ..base import CERTAIN, MORE, PORT_TIE, STRONG, TCP_ONLY, Context, Heuristic, found, starts, text
from ..textproto import complete_lines, first_line, incomplete, printable, reply_code, verb

#: Words in a greeting that name SMTP itself.
_SMTP_WORD = re.compile(rb"\bE?SMTP\b|\bLMTP\b", re.I)
#: Mail server software and mail words that only MTAs put in a 220 greeting.
_MTA_WORD = re.compile(rb"postfix|\bexim\b|sendmail|qmail|exchange|\bmail\b|\bmta\b|\bmx\b|haraka|opensmtpd|zimbra",
                       re.I)
_FTP_WORD = re.compile(rb"ftp", re.I)
#: Greeting codes: 220 ready, 421 and 554 refusals (RFC 5321 section 3.1).
GREETINGS = (220, 421, 554)
CLIENT_VERBS = (b"EHLO", b"HELO")
#: Submission and relay ports: only ever a tie-break for a greeting that names nothing.
PORTS = frozenset({25, 465, 587, 2525})


def greeting(data: bytes) -> tuple[bytes, bool, bool] | None:
    """(first line, names SMTP or a mail server, last line seen) of a 220/421/554 greeting, else None."""
    lines = complete_lines(data)
    if not lines or reply_code(lines[0]) not in GREETINGS or not all(printable(x) for x in lines):
        return None
    head = b"\n".join(lines)
    named = bool(_SMTP_WORD.search(head) or (_MTA_WORD.search(head) and not _FTP_WORD.search(head)))
    return lines[0], named, lines[-1][3:4] != b"-"


def client_command(data: bytes) -> str | None:
    """The HELO name of an EHLO/HELO line, or ``""`` for ``MAIL FROM:``; None for anything else."""
    line = first_line(data)
    if line is None or not printable(line):
        return None
    word, rest = verb(line)
    if word in CLIENT_VERBS and rest.strip() and b" " not in rest.strip():
        return text(rest)
    if line[:10].upper() == b"MAIL FROM:":
        return ""
    return None


def detect(ctx: Context) -> Verdict | None | object:
    memo = ctx.memo.get("SMTP")
    data = ctx.stream if ctx.index > 1 else ctx.payload
    if not ctx.from_client:
        found_greeting = greeting(data)
        if found_greeting is None:
            return MORE if memo is None and incomplete(data, ctx.index) and data[:1] in b"245" else None
        line, named, last = found_greeting
        banner = text(line[4:])
        if named:
            return found("SMTP", CERTAIN, banner=banner)
        if not last:
            return MORE if ctx.index < 4 else None  # a multi-line greeting: its next lines may name it
        # "220 host ready": an FTP server could say that too; the client's verb will tell.
        if memo is None:
            ctx.memo["SMTP"] = banner
            if ctx.server_port in PORTS:
                ctx.guess(found("SMTP", PORT_TIE, banner=banner, port_hint=True))
        return MORE
    helo = client_command(data)
    if helo is None:
        return MORE if memo is None and incomplete(data, ctx.index) else None
    if memo is not None:
        return found("SMTP", CERTAIN, banner=memo, helo=helo or None)
    return found("SMTP", STRONG, helo=helo or None)


HEURISTICS = [
    Heuristic("SMTP", detect, TCP_ONLY, starts("220", "421", "554", "EHLO", "HELO", "MAIL FROM:"),
              server_first=True, order=40),
]
