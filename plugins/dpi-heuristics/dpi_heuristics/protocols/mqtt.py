"""MQTT 3.1, 3.1.1 and 5.0: the CONNECT packet that opens every session.

Fixed header 0x10, a variable-length "remaining length" (1-4 bytes) that
must cover the packet, then the protocol name and level: ``MQTT`` with
level 4 (3.1.1) or 5, or ``MQIsdp`` with level 3 (3.1); the reserved bit
of the connect flags is zero.  The CONNECT decides from either direction
(a capture may start at the broker's side of a bridge).
"""

from __future__ import annotations

import struct

from dpicore import Verdict

from ..base import CERTAIN, TCP_ONLY, Context, Heuristic, found, starts

LEVELS = {(b"MQTT", 4): "3.1.1", (b"MQTT", 5): "5.0", (b"MQIsdp", 3): "3.1"}


def remaining_length(data: bytes, off: int) -> tuple[int, int] | None:
    """(value, offset after) of an MQTT variable byte integer."""
    value = 0
    for i in range(4):
        if off + i >= len(data):
            return None
        b = data[off + i]
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            return value, off + i + 1
    return None


def detect(ctx: Context) -> Verdict | None:
    data = ctx.payload
    if ctx.index > 1 or len(data) < 12 or data[0] != 0x10:
        return None
    rl = remaining_length(data, 1)
    if rl is None:
        return None
    length, off = rl
    if off + length < len(data) and data[off + length] >> 4 not in range(1, 15):
        return None  # bytes after the CONNECT must start another packet
    if off + 2 > len(data):
        return None
    name_len = struct.unpack_from("!H", data, off)[0]
    name = data[off + 2:off + 2 + name_len]
    pos = off + 2 + name_len
    if pos + 4 > len(data) or length < name_len + 6:
        return None
    version = LEVELS.get((name, data[pos]))
    flags = data[pos + 1]
    if version is None or flags & 0x01:
        return None
    keepalive = struct.unpack_from("!H", data, pos + 2)[0]
    client_id = None
    cid = pos + 4
    if data[pos] == 5:  # MQTT 5 properties before the payload
        props = remaining_length(data, cid)
        cid = props[1] + props[0] if props else len(data)
    if cid + 2 <= len(data):
        n = struct.unpack_from("!H", data, cid)[0]
        raw = data[cid + 2:cid + 2 + n]
        if len(raw) == n and raw.isascii():
            client_id = raw.decode("ascii")
    return found("MQTT", CERTAIN, version=version, client_id=client_id or None, keepalive=keepalive)


HEURISTICS = [
    Heuristic("MQTT", detect, TCP_ONLY, starts(b"\x10"), order=30),
]
