"""TFTP (RFC 1350, options RFC 2347-2349, 7440), over UDP.

A transfer starts with a read or write request: opcode 1 or 2, a file name,
NUL, a mode (``netascii``, ``octet`` or ``mail``, any case), NUL, and
optional name/value option pairs, each NUL-terminated, up to the end of the
datagram.  That is certain on its own.

The transfer itself runs on a new port pair (the server answers from a
fresh port), so its flow opens with DATA (3, block number, up to a block of
data) or ACK (4, block number, nothing else).  Each alone is four bytes of
structure; the flow is named when the other side answers in step (ACK n
after DATA n, DATA n+1 after ACK n).  A first DATA of block 1, or the ACK 0
that accepts a write, is offered as a guess meanwhile.  ERROR (5) and OACK
(6) are checked field by field.
"""

from __future__ import annotations

import struct

from dpicore import Verdict

from ..base import CERTAIN, LIKELY, MORE, STRONG, UDP_ONLY, Context, Heuristic, found, text

MODES = frozenset({b"netascii", b"octet", b"mail"})
OPTIONS = frozenset({b"blksize", b"tsize", b"timeout", b"windowsize", b"multicast", b"rollover", b"utimeout"})
OPCODES = {1: "RRQ", 2: "WRQ", 3: "DATA", 4: "ACK", 5: "ERROR", 6: "OACK"}
#: Largest DATA payload: blksize may be negotiated up to 65464 (RFC 2348).
MAX_BLOCK = 65464


def _printable(b: bytes) -> bool:
    return all(0x20 <= c < 0x7F or c >= 0x80 for c in b)


def request(data: bytes) -> Verdict | None:
    """RRQ/WRQ: filename NUL mode NUL [option NUL value NUL]..."""
    if data[-1:] != b"\x00":
        return None
    fields = data[2:-1].split(b"\x00")
    filename = fields[0]
    rest = fields[1:]
    # Some clients (and scanners) pad the name with NULs: skip empty fields before the mode
    # (one slice: a slice per field was quadratic in a datagram of NULs).
    skip = 0
    while skip < len(rest) and not rest[skip]:
        skip += 1
    rest = rest[skip:]
    if not rest or rest[0].lower() not in MODES or not _printable(filename) or len(filename) > 512:
        return None
    pairs = rest[1:]
    if len(pairs) % 2 or not all(name and _printable(name + value) for name, value in zip(pairs[::2], pairs[1::2])):
        return None
    options = [n.decode("latin-1").lower() for n in pairs[::2]]
    return found("TFTP", CERTAIN if filename else STRONG, opcode=OPCODES[data[1]],
                 filename=text(filename, 256) if filename else None, mode=rest[0].decode().lower(),
                 options=options or None)


def error(data: bytes) -> Verdict | None:
    if len(data) < 5 or data[-1:] != b"\x00":
        return None
    (code,) = struct.unpack_from("!H", data, 2)
    msg = data[4:].rstrip(b"\x00")
    if code > 8 or not _printable(msg):
        return None
    return found("TFTP", STRONG, opcode="ERROR", error_code=code, error=text(msg, 128) or None)


def option_ack(data: bytes) -> Verdict | None:
    if data[-1:] != b"\x00":
        return None
    fields = data[2:-1].split(b"\x00")
    pairs = zip(fields[::2], fields[1::2])
    if len(fields) % 2 or not all(n.lower() in OPTIONS and v.isdigit() for n, v in pairs):
        return None
    return found("TFTP", STRONG, opcode="OACK", options=[n.decode().lower() for n in fields[::2]])


def transfer(ctx: Context, opcode: int, data: bytes) -> Verdict | None | object:
    """DATA and ACK: named once the peer answers in step."""
    if opcode == 4 and len(data) != 4 or opcode == 3 and len(data) > 4 + MAX_BLOCK:
        return None
    (block,) = struct.unpack_from("!H", data, 2)
    memo = ctx.memo.setdefault("TFTP", {})
    last = memo.get("last")
    memo["last"] = (ctx.direction, opcode, block)
    if last is not None and last[0] != ctx.direction:
        _, prev_op, prev_block = last
        if (prev_op == 3 and opcode == 4 and block == prev_block) or \
                (prev_op == 4 and opcode == 3 and block == (prev_block + 1) & 0xFFFF):
            return found("TFTP", STRONG, opcode=OPCODES[opcode], block=block)
    if last is not None and last[0] == ctx.direction and last[1] != opcode:
        return None  # one side sending both DATA and ACK: not a TFTP transfer
    if ctx.index > 4:
        return None
    if (opcode == 3 and block == 1) or (opcode == 4 and block == 0):
        return ctx.guess(found("TFTP", LIKELY, opcode=OPCODES[opcode], block=block))
    return MORE


def detect(ctx: Context) -> Verdict | None | object:
    data = ctx.payload
    if len(data) < 4 or data[0] != 0 or data[1] not in OPCODES:
        return None
    opcode = data[1]
    if opcode in (1, 2):
        return request(data) if ctx.index == 1 else None
    if opcode == 5:
        return error(data)
    if opcode == 6:
        return option_ack(data)
    return transfer(ctx, opcode, data)


HEURISTICS = [
    Heuristic("TFTP", detect, UDP_ONLY, frozenset({0}), server_first=False, order=38),
]
