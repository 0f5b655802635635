"""Telnet (RFC 854/855): option negotiation with IAC (0xFF) commands.

Both sides open with ``IAC DO/DONT/WILL/WONT option`` and ``IAC SB ... IAC
SE`` sub-negotiations, usually several in one segment.  The whole payload
must parse as negotiation (optionally followed by text), with options from
the IANA registry.  Two negotiations decide; a lone one (a server's single
``IAC DO TERMINAL-TYPE``) waits for the peer's answer, and stays a guess if
none comes.  A telnet server that greets with plain text has nothing to
recognise and is left to other layers.
"""

from __future__ import annotations

from dpicore import Verdict

from ..base import LIKELY, STRONG, TCP_ONLY, Context, Heuristic, found, starts

IAC, SE, SB, WILL, WONT, DO, DONT = 255, 240, 250, 251, 252, 253, 254
#: Telnet options IANA lists (0-49, the 138-140 range and EXOPL).
OPTIONS = frozenset(range(0, 50)) | {138, 139, 140, 255}
OPTION_NAMES = {0: "BINARY", 1: "ECHO", 3: "SUPPRESS-GO-AHEAD", 5: "STATUS", 24: "TERMINAL-TYPE", 31: "NAWS",
                32: "TERMINAL-SPEED", 33: "TOGGLE-FLOW-CONTROL", 34: "LINEMODE", 35: "X-DISPLAY-LOCATION",
                36: "OLD-ENVIRON", 37: "AUTHENTICATION", 38: "ENCRYPT", 39: "NEW-ENVIRON"}
MAX_SB = 512


def negotiations(data: bytes) -> list[int] | None:
    """The options negotiated at the start of ``data`` (in order), or None if it is not telnet negotiation."""
    if len(data) < 3 or data[0] != IAC or data[1] not in (SB, WILL, WONT, DO, DONT):
        return None
    opts: list[int] = []
    i = 0
    n = len(data)
    while i < n:
        if data[i] != IAC:
            # Text after the negotiation (a login prompt): fine, negotiation is over.
            break
        if i + 1 >= n:
            return None
        cmd = data[i + 1]
        if WILL <= cmd <= DONT:
            if i + 2 >= n or data[i + 2] not in OPTIONS:
                return None
            opts.append(data[i + 2])
            i += 3
        elif cmd == SB:
            if i + 2 >= n or data[i + 2] not in OPTIONS:
                return None
            end = data.find(bytes((IAC, SE)), i + 3, i + 3 + MAX_SB)
            if end < 0:
                return None
            opts.append(data[i + 2])
            i = end + 2
        elif SE < cmd < SB:  # NOP, DM, BRK, IP, AO, AYT, EC, EL, GA
            i += 2
        else:
            return None
    return opts


def detect(ctx: Context) -> Verdict | None | object:
    opts = negotiations(ctx.payload)
    memo = ctx.memo.get("Telnet")
    if opts is None:
        return None
    names = [OPTION_NAMES.get(o, str(o)) for o in opts[:8]]
    if len(opts) >= 2 or (memo is not None and memo != ctx.direction):
        return found("Telnet", STRONG, options=names)
    ctx.memo["Telnet"] = ctx.direction
    return ctx.guess(found("Telnet", LIKELY, options=names))


HEURISTICS = [
    Heuristic("Telnet", detect, TCP_ONLY, starts(b"\xff"), server_first=True, order=30),
]
