"""DHCPv6 (RFC 8415): a message type, a 3-byte transaction id, then options that tile the datagram.

Client/server messages (types 1-11) carry a Client or Server Identifier
option holding a DUID of a known type with a length that fits it; relay
messages (12, 13) have a 34-byte header (hop count, link and peer
addresses) and must carry a Relay Message option.  Every option must end
exactly where the datagram ends.
"""

from __future__ import annotations

import struct

from dpicore import Verdict

from ..base import CERTAIN, UDP_ONLY, Context, Heuristic, found

MESSAGE_TYPES = {1: "solicit", 2: "advertise", 3: "request", 4: "confirm", 5: "renew", 6: "rebind",
                 7: "reply", 8: "release", 9: "decline", 10: "reconfigure", 11: "information-request",
                 12: "relay-forw", 13: "relay-repl"}
CLIENT_ID, SERVER_ID, RELAY_MSG = 1, 2, 9
#: Option codes IANA has assigned stay below this.
MAX_OPTION = 160


def options(data: bytes, off: int) -> dict[int, bytes] | None:
    out: dict[int, bytes] = {}
    while off < len(data):
        if off + 4 > len(data):
            return None
        code, length = struct.unpack_from("!HH", data, off)
        if not 0 < code < MAX_OPTION or off + 4 + length > len(data):
            return None
        out.setdefault(code, data[off + 4:off + 4 + length])
        off += 4 + length
    return out


def duid_ok(duid: bytes) -> bool:
    """DUID-LLT (1), DUID-EN (2), DUID-LL (3), DUID-UUID (4): lengths that fit the type."""
    if len(duid) < 4:
        return False
    (kind,) = struct.unpack_from("!H", duid)
    if kind == 1:
        return len(duid) >= 8 + 1 and len(duid) <= 8 + 20
    if kind == 2:
        return 6 < len(duid) <= 130
    if kind == 3:
        return 4 < len(duid) <= 4 + 20
    if kind == 4:
        return len(duid) == 18
    return False


def detect(ctx: Context) -> Verdict | None:
    data = ctx.payload
    kind = data[0]
    if kind in (12, 13):
        opts = options(data, 34) if len(data) >= 34 + 4 and data[1] <= 32 else None
        if not opts or RELAY_MSG not in opts:
            return None
        return found("DHCPv6", CERTAIN, message_type=MESSAGE_TYPES[kind])
    opts = options(data, 4) if len(data) >= 8 else None
    if not opts:
        return None
    ids = [opts[c] for c in (CLIENT_ID, SERVER_ID) if c in opts]
    if not ids or not all(duid_ok(d) for d in ids):
        return None
    return found("DHCPv6", CERTAIN, message_type=MESSAGE_TYPES[kind])


HEURISTICS = [
    Heuristic("DHCPv6", detect, UDP_ONLY, frozenset(range(1, 14)), server_first=False, order=32),
]
