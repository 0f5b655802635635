"""SOCKS 4/4a (the de-facto protocol of 1992) and SOCKS 5 (RFC 1928).

SOCKS 4: version 4, command 1 or 2, port, IPv4 address, a NUL-terminated
user ID (and, for 4a's address 0.0.0.x, a NUL-terminated host name), with
nothing after it: the exact layout is strong evidence.

SOCKS 5: the greeting is version 5, a method count and that many methods
(3 or 4 bytes in practice), too short to be sure alone: it is a guess until
the server picks one of the offered methods (``05 xx``) or the client's
request (version 5, a command, a zero byte, an address type and an
address of that type) follows.
"""

from __future__ import annotations

import struct

from dpicore import Verdict

from ..base import CERTAIN, LIKELY, MORE, STRONG, TCP_ONLY, Context, Heuristic, found, text


def socks4(data: bytes) -> Verdict | None:
    if len(data) < 9 or data[1] not in (1, 2):
        return None
    end = data.find(b"\x00", 8)
    if end < 0 or end > 8 + 255:
        return None
    host = None
    if data[4:7] == b"\x00\x00\x00" and data[7]:  # SOCKS 4a: the host name follows
        host_end = data.find(b"\x00", end + 1)
        if host_end < 0 or host_end == end + 1:
            return None
        host = text(data[end + 1:host_end])
        end = host_end
    if end + 1 != len(data):
        return None
    (port,) = struct.unpack_from("!H", data, 2)
    return found("SOCKS", STRONG, version=4, command="connect" if data[1] == 1 else "bind", port=port,
                 host=host or ".".join(str(b) for b in data[4:8]))


def greeting(data: bytes) -> bytes | None:
    """The methods of a SOCKS 5 greeting filling ``data`` exactly."""
    if len(data) < 3 or data[0] != 5 or data[1] == 0 or len(data) != 2 + data[1]:
        return None
    methods = data[2:]
    if len(set(methods)) != len(methods) or any(9 < m < 0x80 or m == 0xFF for m in methods):
        return None
    return methods


def request(data: bytes) -> dict[str, object] | None:
    """Command and destination of a SOCKS 5 request filling ``data`` exactly."""
    if len(data) < 7 or data[0] != 5 or data[1] not in (1, 2, 3) or data[2] != 0:
        return None
    atyp = data[3]
    if atyp == 1:
        end, host = 8, ".".join(str(b) for b in data[4:8])
    elif atyp == 3:
        end, host = 5 + data[4], text(data[5:5 + data[4]])
    elif atyp == 4:
        end, host = 20, data[4:20].hex()
    else:
        return None
    if end + 2 != len(data):
        return None
    return {"command": ("connect", "bind", "udp-associate")[data[1] - 1], "host": host,
            "port": struct.unpack_from("!H", data, end)[0]}


def detect(ctx: Context) -> Verdict | None | object:
    data = ctx.payload
    state = ctx.memo.get("SOCKS")
    if state is None:
        if not ctx.from_client or ctx.index != 1:
            return None
        if data[0] == 4:
            return socks4(data)
        methods = greeting(data[:2 + data[1]] if len(data) > 2 else data)
        if methods is None:
            return None
        ctx.memo["SOCKS"] = methods
        rest = data[2 + len(methods):]
        if rest:  # greeting and request pipelined in one segment
            req = request(rest)
            return found("SOCKS", CERTAIN, version=5, **req) if req else None
        return ctx.guess(found("SOCKS", LIKELY, version=5))
    if not ctx.from_client:
        if len(data) == 2 and data[0] == 5 and (data[1] in state or data[1] == 0xFF):
            return found("SOCKS", CERTAIN, version=5)
        return None
    req = request(data)
    if req is not None:
        return found("SOCKS", CERTAIN, version=5, **req)
    return MORE if ctx.index < 3 else None


HEURISTICS = [
    Heuristic("SOCKS", detect, TCP_ONLY, frozenset({4, 5}), server_first=False, order=30),
]
