"""Helpers for line-oriented text protocols (SMTP, FTP, POP3, IMAP, IRC, memcached, ...).

These protocols put a command or a reply code at the start of a CRLF
terminated line.  A detector only trusts *complete* lines: a line cut by the
segment boundary says "wait" (the stream will complete it), never "yes".
"""

from __future__ import annotations

import re
from typing import Any

from .base import MORE, Context

#: The longest line a detector looks at (RFC 5321 allows 512 for commands, banners are shorter).
MAX_LINE = 1024

_REPLY = re.compile(rb"^([1-5][0-9][0-9])([ -]|\r?$)")
_PRINTABLE = re.compile(rb"^[\t\x20-\x7e\x80-\xff]*$")


def first_line(data: bytes, limit: int = MAX_LINE) -> bytes | None:
    """The first line without its terminator, or None when no LF ends it within ``limit`` bytes."""
    end = data.find(b"\n", 0, limit)
    if end < 0:
        return None
    return data[:end].rstrip(b"\r")


def complete_lines(data: bytes, limit: int = 16) -> list[bytes]:
    """The complete lines at the start of ``data`` (at most ``limit``), without terminators."""
    out: list[bytes] = []
    start = 0
    while len(out) < limit:
        end = data.find(b"\n", start, start + MAX_LINE)
        if end < 0:
            break
        out.append(data[start:end].rstrip(b"\r"))
        start = end + 1
    return out


def printable(line: bytes) -> bool:
    """Text a human or a program would put in a banner or a command line (no control bytes)."""
    return _PRINTABLE.match(line) is not None


def reply_code(line: bytes) -> int | None:
    """The 3-digit code of an SMTP/FTP style reply line (``220 text``, ``250-text``, ``221``), else None."""
    m = _REPLY.match(line)
    return int(m.group(1)) if m else None


def verb(line: bytes) -> tuple[bytes, bytes]:
    """(upper-cased first word, rest of the line) of a command line."""
    word, _, rest = line.partition(b" ")
    return word.upper(), rest


def incomplete(data: bytes, index: int, max_packets: int = 4) -> bool:
    """True while a text head is still short, unterminated and printable: worth another segment."""
    return index < max_packets and len(data) < MAX_LINE and b"\n" not in data and printable(data)


def head_line(ctx: Context) -> Any:
    """The first complete, printable line of this direction's stream; MORE while cut; None if not text."""
    data = ctx.stream if ctx.index > 1 else ctx.payload
    line = first_line(data)
    if line is None:
        return MORE if incomplete(data, ctx.index) else None
    return line if printable(line) else None
