"""AMQP: the protocol header ``AMQP`` + version, or AMQP 0-9-1 frames when the capture starts later.

Every AMQP connection starts with an 8-byte header: ``AMQP\\x00\\x00\\x09\\x01``
(0-9-1), ``AMQP\\x01\\x01\\x00\\x0a`` (0-10), ``AMQP\\x00\\x01\\x00\\x00`` (1.0),
with protocol id 2 (TLS) or 3 (SASL) for 1.0.  A 0-9-1 frame is a type
(method 1, header 2, body 3, heartbeat 8), a channel, a 32-bit size, the
payload and the frame-end octet 0xCE at exactly the announced offset; a
method frame's class id must be one 0-9-1 defines.  Long-lived connections
(the corpus has Celery's) are often seen without their header.
"""

from __future__ import annotations

import struct

from dpicore import Verdict

from ..base import CERTAIN, STRONG, TCP_ONLY, Context, Heuristic, found, starts

HEADERS = {b"\x00\x00\x09\x01": "0-9-1", b"\x01\x01\x00\x09": "0-9", b"\x01\x01\x00\x0a": "0-10",
           b"\x01\x01\x08\x00": "0-8", b"\x00\x01\x00\x00": "1.0", b"\x02\x01\x00\x00": "1.0-tls",
           b"\x03\x01\x00\x00": "1.0-sasl"}
FRAME_TYPES = frozenset({1, 2, 3, 8})
FRAME_END = 0xCE
#: connection, channel, exchange, queue, basic, confirm, tx.
CLASSES = frozenset({10, 20, 40, 50, 60, 85, 90})
MAX_FRAME = 1 << 24


def frames(data: bytes) -> int:
    """How many whole 0-9-1 frames start ``data``; 0 unless every whole frame in it is valid."""
    off = 0
    count = 0
    while off + 8 <= len(data) and count < 64:
        kind, _channel, size = struct.unpack_from("!BHI", data, off)
        end = off + 7 + size
        if kind not in FRAME_TYPES or size > MAX_FRAME or (kind == 8 and size != 0):
            return 0
        if end >= len(data):
            break  # the frame continues in the next segment
        if data[end] != FRAME_END:
            return 0
        if kind == 1:
            if size < 4:
                return 0
            cls, method = struct.unpack_from("!HH", data, off + 7)
            if cls not in CLASSES or not 10 <= method <= 120:
                return 0
        off = end + 1
        count += 1
    if count and len(data) - off < 8 and off < len(data) and data[off] not in FRAME_TYPES:
        return 0  # what follows the last whole frame must be able to start the next one
    return count


def detect(ctx: Context) -> Verdict | None:
    data = ctx.payload
    if ctx.index > 1:
        return None
    if data[:4] == b"AMQP" and len(data) >= 8:
        version = HEADERS.get(data[4:8])
        return found("AMQP", CERTAIN, version=version) if version else None
    n = frames(data)
    if n == 0:
        return None
    return found("AMQP", CERTAIN if n >= 2 else STRONG, version="0-9-1", frames=n)


HEURISTICS = [
    Heuristic("AMQP", detect, TCP_ONLY, starts("AMQP", b"\x01", b"\x02", b"\x03", b"\x08"), order=35),
]
