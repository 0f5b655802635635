"""SSH: the identification string both sides send first (RFC 4253 section 4.2).

``SSH-protoversion-softwareversion SP comments CR LF``; protoversion is 2.0,
1.99 (a server that also speaks SSH-1) or 1.x.  Either side may be seen
first, so the test runs on both directions; the other side's banner, when
it follows, is added to the metadata.
"""

from __future__ import annotations

import re

from dpicore import Verdict

from ..base import CERTAIN, MORE, TCP_ONLY, Context, Heuristic, found, starts

_BANNER = re.compile(rb"^SSH-(2\.0|1\.99|1\.[0-9])-([\x21-\x2c\x2e-\x7e][\x20-\x7e]{0,240}?)\r?\n")
#: Packets watched for the other side's banner.
WATCH = 2


def banner(data: bytes) -> tuple[str, str] | None:
    """(protocol version, software and comments) of an identification line, or None."""
    m = _BANNER.match(data)
    if m is None:
        return None
    return m.group(1).decode(), m.group(2).decode("latin-1").strip()


def _meta(ctx: Context, version: str, software: str) -> dict[str, str]:
    side = "client_software" if ctx.from_client else "server_software"
    return {"version": version, side: software}


def detect(ctx: Context) -> Verdict | None | object:
    data = ctx.stream if ctx.index > 1 else ctx.payload
    seen = ctx.memo.get("SSH")
    if seen is not None:
        # Watching after the verdict: the other side's banner, once.
        if ctx.direction == seen["first"] or seen["done"]:
            return None
        seen["done"] = True
        parsed = banner(data)
        if parsed is None:
            return None
        meta = _meta(ctx, *parsed)
        if not ctx.from_client:
            meta["software"] = parsed[1]
        return found("SSH", CERTAIN, **meta)
    parsed = banner(data)
    if parsed is None:
        # A banner cut by the segment: keep reading while the prefix fits.
        if len(data) < 256 and b"\n" not in data and b"SSH-".startswith(data[:4]) and data[4:5] in (b"", b"1", b"2"):
            return MORE if ctx.index < 4 else None
        return None
    ctx.memo["SSH"] = {"first": ctx.direction, "done": False}
    version, software = parsed
    return found("SSH", CERTAIN, watch=WATCH, software=software, **_meta(ctx, version, software))


HEURISTICS = [
    Heuristic("SSH", detect, TCP_ONLY, starts("SSH-"), server_first=True, order=10),
]
