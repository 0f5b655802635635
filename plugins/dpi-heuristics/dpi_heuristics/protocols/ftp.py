"""FTP control (RFC 959) and the data connections it announces.

Control: the server speaks first with a ``220`` greeting.  SMTP greets the
same way, so the greeting decides alone only when it names FTP (vsFTPd,
ProFTPD, Pure-FTPd, FileZilla, "Microsoft FTP Service"...); otherwise the
client's first command settles it (USER, AUTH TLS, FEAT, SYST...).  A
capture that starts at the client's ``USER name`` waits for the server's
``331``/``230``/``530``.

Data: after the verdict the layer keeps watching the control connection
(``Verdict.watch``) and records every endpoint it announces, passive
(``227``, ``229``) or active (``PORT``, ``EPRT``), in the layer-wide shared
state.  The FTP_DATA heuristic runs first on every new TCP flow and names
one whose endpoint was announced: nDPI's and every firewall's FTP helper
work the same way.  The endpoint is part of the protocol's own messages,
so this is not a port guess.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any, NamedTuple

from dpicore import Verdict
from dpicore.model import format_ip, parse_ip

from ..base import CERTAIN, MORE, PORT_TIE, STRONG, TCP_ONLY, Context, Heuristic, found, starts, text
from ..textproto import complete_lines, first_line, incomplete, printable, reply_code, verb

_FTP_WORD = re.compile(rb"ftp|filezilla|serv-u", re.I)
_SMTP_WORD = re.compile(rb"\bE?SMTP\b", re.I)
#: Client commands only FTP uses (USER and PASS are shared with POP3 and IRC).
CLIENT_ONLY = frozenset({b"FEAT", b"SYST", b"PASV", b"EPSV", b"PBSZ", b"PROT", b"CWD", b"XPWD", b"SITE", b"CLNT"})
#: Replies to USER: password needed, logged in, refused, account needed.
USER_REPLIES = frozenset({230, 331, 332, 530})
#: Payload packets of the control connection watched for data-connection announcements.
WATCH = 256
#: How long an announced endpoint waits for its connection, in seconds.
EXPECT_TTL = 300.0
#: Announced endpoints remembered at most (oldest forgotten first).
MAX_EXPECTED = 4096
#: ``Context.shared`` key of the announced endpoints.
SHARED_KEY = "ftp_data"
PORTS = frozenset({21})

_PASV = re.compile(rb"(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3})")
_EPSV = re.compile(rb"\(([\x21-\x7e])\1\1(\d{1,5})\1\)")
_EPRT = re.compile(rb"^([\x21-\x7e])([12])\1([0-9a-fA-F.:]{2,45})\1(\d{1,5})\1")


class Expected(NamedTuple):
    """A data connection announced on a control connection."""

    ts: float
    mode: str        # "passive" or "active"
    control: str     # the control connection's server endpoint, for the record
    #: Every table key of this announcement (the announced address and the one the capture shows).
    keys: tuple[tuple[bytes, int], ...]


def _host_port(groups: tuple[bytes, ...]) -> tuple[bytes, int] | None:
    nums = [int(g) for g in groups]
    if any(n > 255 for n in nums):
        return None
    port = nums[4] * 256 + nums[5]
    return (bytes(nums[:4]), port) if port else None


def announcements(line: bytes, from_client: bool) -> tuple[str, bytes | None, int] | None:
    """(mode, announced address or None for "the server's", port) of one control line, else None."""
    if from_client:
        word, rest = verb(line)
        if word == b"PORT":
            m = _PASV.match(rest.strip())
            hp = _host_port(m.groups()) if m else None
            return ("active", *hp) if hp else None
        if word == b"EPRT":
            m = _EPRT.match(rest.strip())
            if m is None:
                return None
            try:
                addr = parse_ip(m.group(3).decode())
            except ValueError:
                return None
            port = int(m.group(4))
            return ("active", addr, port) if 0 < port < 65536 else None
        return None
    code = reply_code(line)
    if code == 227:
        m = _PASV.search(line)
        hp = _host_port(m.groups()) if m else None
        return ("passive", *hp) if hp else None
    if code == 229:
        m = _EPSV.search(line)
        port = int(m.group(2)) if m else 0
        return ("passive", None, port) if 0 < port < 65536 else None
    return None


#: Some line of a client packet may be a PORT or EPRT command (a necessary condition, in one C pass).
_CLIENT_ANNOUNCES = re.compile(rb"(?i)port|eprt")
#: What a packet from either side must hold to announce a data connection, at the start of a line as
#: :func:`announcements` reads it (a reply code, or a command word in either case): the watched control
#: connection's ``Verdict.watch_for``, so the engine shows the layer only such packets (most of a
#: session's packets are other commands and replies).  Anchored: the search of a bulk payload takes a
#: fifth of the time of an unanchored one.
ANNOUNCES = re.compile(rb"(?m)^(?:22[79]|[Pp][Oo][Rr][Tt]|[Ee][Pp][Rr][Tt])")


def may_announce(payload: bytes, from_client: bool) -> bool:
    """Cheap necessary condition for :func:`announcements` to find something in ``payload``.

    The engine shows the layer only the watched packets in which ANNOUNCES
    finds something, and still nearly none of those announces a data
    connection: the reply code (227, 229) or the command word (PORT, EPRT) of
    the packet's direction must occur somewhere in the payload before
    splitting it into lines is worth it.
    """
    if from_client:
        return _CLIENT_ANNOUNCES.search(payload) is not None
    return b"227" in payload or b"229" in payload


def _expect(ctx: Context) -> None:
    """Record the data endpoints this control packet announces."""
    if not may_announce(ctx.payload, ctx.direction == 0):
        return
    flow = ctx.flow
    for line in complete_lines(ctx.payload, 64):
        ann = announcements(line, ctx.from_client)
        if ann is None:
            continue
        mode, addr, port = ann
        # The side that will listen: the server in passive mode, the client in active mode.
        # Its address as the capture sees it is recorded too, for NAT'd announcements.
        seen = flow.server if mode == "passive" else flow.client
        table: OrderedDict[tuple[bytes, int], Expected] = ctx.shared.setdefault(SHARED_KEY, OrderedDict())
        keys = tuple({(addr or seen, port), (seen, port)})
        entry = Expected(flow.last_seen, mode, f"{format_ip(flow.server)}:{flow.server_port}", keys)
        for key in keys:
            table[key] = entry
            table.move_to_end(key)
        while len(table) > MAX_EXPECTED:
            table.popitem(last=False)


def greeting(data: bytes) -> tuple[bytes, bool, bool] | None:
    """(first line, names FTP, last line seen) of a 220 greeting, else None."""
    lines = complete_lines(data)
    if not lines or reply_code(lines[0]) != 220 or not all(printable(x) for x in lines):
        return None
    head = b"\n".join(lines)
    return lines[0], bool(_FTP_WORD.search(head) and not _SMTP_WORD.search(head)), lines[-1][3:4] != b"-"


def _decided(ctx: Context, confidence: float, **meta: Any) -> Verdict:
    ctx.memo["FTP"] = {"decided": True}
    return found("FTP", confidence, watch=WATCH, watch_for=ANNOUNCES, **meta)


def detect(ctx: Context) -> Verdict | None | object:
    memo: dict[str, Any] = ctx.memo.setdefault("FTP", {})
    if memo.get("decided"):
        _expect(ctx)  # watching after the verdict
        return None
    data = ctx.stream if ctx.index > 1 else ctx.payload
    if not ctx.from_client:
        if memo.get("user"):
            line = first_line(data)
            return _decided(ctx, STRONG) if line is not None and reply_code(line) in USER_REPLIES else None
        g = greeting(data)
        if g is None:
            return MORE if "banner" not in memo and incomplete(data, ctx.index) and data[:1] == b"2" else None
        line, named, last = g
        banner = text(line[4:])
        if named:
            return _decided(ctx, CERTAIN, banner=banner)
        if not last:
            return MORE if ctx.index < 4 else None
        memo["banner"] = banner
        if ctx.server_port in PORTS:
            ctx.guess(found("FTP", PORT_TIE, banner=banner, port_hint=True))
        return MORE
    line = first_line(data)
    if line is None:
        return MORE if incomplete(data, ctx.index) else None
    if not printable(line):
        return None
    word, rest = verb(line)
    arg = rest.strip()
    banner = memo.get("banner")
    if word in CLIENT_ONLY or (word == b"AUTH" and arg.upper() in (b"TLS", b"SSL", b"TLS-C", b"TLS-P")) \
            or (word == b"OPTS" and arg.upper().startswith(b"UTF8")):
        return _decided(ctx, CERTAIN if banner else STRONG, banner=banner)
    if word == b"USER" and arg and b" " not in arg:
        if banner is not None:
            return _decided(ctx, CERTAIN, banner=banner)
        memo["user"] = True  # POP3 says USER too: the server's reply decides
        return MORE
    return None


def detect_data(ctx: Context) -> Verdict | None:
    """Name a flow whose endpoint an FTP control connection announced."""
    table = ctx.shared.get(SHARED_KEY)
    if not table or ctx.index > 1:
        return None
    flow = ctx.flow
    for endpoint in ((flow.server, flow.server_port), (flow.client, flow.client_port)):
        entry = table.get(endpoint)
        if entry is not None and 0 <= flow.first_seen - entry.ts + 1.0 <= EXPECT_TTL:
            for key in entry.keys:  # one announcement, one connection
                table.pop(key, None)
            return found("FTP_DATA", CERTAIN, mode=entry.mode, control=entry.control)
    return None


HEURISTICS = [
    Heuristic("FTP", detect, TCP_ONLY, starts("220", "USER", "AUTH", "FEAT", "SYST", "OPTS"),
              server_first=True, order=40),
    # No byte filter and first in line: a data connection carries anything, files that look like HTTP too.
    Heuristic("FTP_DATA", detect_data, TCP_ONLY, None, order=0),
]
