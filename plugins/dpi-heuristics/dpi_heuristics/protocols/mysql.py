"""MySQL / MariaDB client-server protocol: the server's initial handshake.

Every packet is a 3-byte little-endian length and a sequence number.  The
server speaks first: sequence 0, protocol version 10, a NUL-terminated
version string ("8.0.36", "5.5.5-10.6.12-MariaDB"), a thread id and an
8-byte scramble followed by a zero filler.  A server that refuses the host
greets with an error packet instead (0xFF, error code, text).  When the
capture starts at the client, its handshake response (sequence 1,
CLIENT_PROTOCOL_41 set, 23 reserved zero bytes) decides alone.
"""

from __future__ import annotations

import re
import struct

from dpicore import Verdict

from ..base import CERTAIN, STRONG, TCP_ONLY, Context, Heuristic, found

_VERSION = re.compile(rb"^[0-9][0-9A-Za-z.+_~-]{0,79}$")
CLIENT_PROTOCOL_41 = 0x0200
CLIENT_SSL = 0x0800
#: Error codes a server sends instead of a greeting (too many connections, host blocked/not allowed, ...).
GREETING_ERRORS = range(1040, 1300)


def _header(data: bytes) -> tuple[int, int] | None:
    if len(data) < 5:
        return None
    length = data[0] | data[1] << 8 | data[2] << 16
    if length == 0 or length + 4 > len(data):
        return None
    return length, data[3]


def greeting(data: bytes) -> dict[str, str] | None:
    """Server version and flavour of an initial handshake (or greeting error) packet, else None."""
    head = _header(data)
    if head is None or head[1] != 0:
        return None
    length, _ = head
    body = data[4:4 + length]
    if body[0] == 0xFF:
        if len(body) < 4:
            return None
        code = struct.unpack_from("<H", body, 1)[0]
        msg = body[3:]
        if code not in GREETING_ERRORS or not msg.isascii() or not msg.decode("ascii").isprintable():
            return None
        return {"error": str(code), "message": msg.decode("ascii")[:200]}
    if body[0] != 10:
        return None
    end = body.find(b"\x00", 1, 81)
    if end < 2:
        return None
    version = body[1:end]
    if not _VERSION.match(version):
        return None
    # thread id (4), scramble part 1 (8), filler 0, capability flags (2)
    rest = body[end + 1:]
    if len(rest) < 15 or rest[12] != 0:
        return None
    caps = struct.unpack_from("<H", rest, 13)[0]
    if not caps & CLIENT_PROTOCOL_41:
        return None
    v = version.decode("ascii")
    return {"server_version": v, "flavour": "MariaDB" if "mariadb" in v.lower() else "MySQL"}


def handshake_response(data: bytes) -> bool:
    """A client's handshake response (or its SSL request): sequence 1, protocol 4.1, 23 zero bytes."""
    head = _header(data)
    if head is None or head[1] != 1 or head[0] < 32:
        return False
    body = data[4:4 + head[0]]
    caps = struct.unpack_from("<I", body)[0]
    return bool(caps & CLIENT_PROTOCOL_41) and body[9:32] == bytes(23) and body[8] != 0


def detect(ctx: Context) -> Verdict | None:
    data = ctx.payload
    if ctx.index != 1:
        return None
    # The greeting: the server's first payload (or the flow's first, when the capture missed the SYN).
    if not ctx.from_client or ctx.first(1) is None:
        info = greeting(data)
        if info is not None:
            if "error" in info:
                return found("MySQL", STRONG, **info)
            return found("MySQL", CERTAIN, app=info["flavour"] if info["flavour"] == "MariaDB" else None,
                         server_version=info["server_version"])
    if ctx.from_client and handshake_response(data):
        return found("MySQL", STRONG)
    return None


HEURISTICS = [
    # The first byte is a length: no byte filter.
    Heuristic("MySQL", detect, TCP_ONLY, None, server_first=True, order=35),
]
