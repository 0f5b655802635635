"""The rsync daemon protocol (rsync://): the ``@RSYNCD: <version>`` greeting both sides send.

The server greets first with ``@RSYNCD: 31.0`` (newer versions append the
checksum names they support) and the client answers the same way.  rsync
over SSH is SSH on the wire.
"""

from __future__ import annotations

import re

from dpicore import Verdict

from ..base import CERTAIN, MORE, TCP_ONLY, Context, Heuristic, found, starts

_GREETING = re.compile(rb"^@RSYNCD: (\d{1,3})(?:\.(\d{1,3}))?( [\x20-\x7e]{0,200})?\n")


def detect(ctx: Context) -> Verdict | None | object:
    data = ctx.stream if ctx.index > 1 else ctx.payload
    m = _GREETING.match(data)
    if m is None:
        return MORE if len(data) < 9 and b"@RSYNCD:".startswith(data) and ctx.index < 3 else None
    version = m.group(1).decode() + ("." + m.group(2).decode() if m.group(2) else "")
    return found("Rsync", CERTAIN, version=version)


HEURISTICS = [
    Heuristic("Rsync", detect, TCP_ONLY, starts(b"@"), server_first=True, order=20),
]
