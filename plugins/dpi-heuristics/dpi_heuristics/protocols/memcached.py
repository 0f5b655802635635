"""memcached: the text protocol and the binary protocol, over TCP (and UDP's frame header).

Text: storage commands have a fixed shape (``set <key> <flags> <exptime>
<bytes> [noreply]``) that decides alone; ``get key``, ``stats`` and
``version`` are words other text protocols could use, so they wait for the
server's ``VALUE``/``END``/``STAT``/``VERSION`` (and are a guess if the
flow ends first).  Binary: a 24-byte header with magic 0x80 (request) or
0x81 (response), a known opcode, data type 0 and a body length that covers
key and extras.  Over UDP each datagram starts with an 8-byte frame header
(request id, sequence, datagram count, reserved zero).
"""

from __future__ import annotations

import re
import struct

from dpicore import Verdict
from dpicore.model import UDP

from ..base import CERTAIN, LIKELY, MORE, STRONG, TCP_ONLY, UDP_ONLY, Context, Heuristic, found, starts
from ..textproto import first_line, incomplete, printable

_KEY = rb"[\x21-\x7e]{1,250}"
_STORAGE = re.compile(rb"^(set|add|replace|append|prepend|cas) " + _KEY + rb" \d{1,10} -?\d{1,10} \d{1,10}"
                      rb"( \d{1,20})?( noreply)?$")
_RETRIEVAL = re.compile(rb"^(gets?|gat|gats) (\d+ )?" + _KEY + rb"( " + _KEY + rb")*$")
_OTHER = re.compile(rb"^(delete " + _KEY + rb"( noreply)?|(incr|decr) " + _KEY + rb" \d{1,20}( noreply)?|touch "
                    + _KEY + rb" -?\d{1,10}( noreply)?|stats( [a-z_]+)?( \d+)?|version|flush_all( \d+)?( noreply)?"
                    rb"|verbosity \d( noreply)?|(mg|ms|md|ma) " + _KEY + rb"( [^\r\n]*)?|mn)$")
_REPLY = re.compile(rb"^(VALUE " + _KEY + rb" \d+ \d+( \d+)?|END|STORED|NOT_STORED|EXISTS|NOT_FOUND|DELETED|TOUCHED"
                    rb"|STAT [\x21-\x7e]+ [^\r\n]*|VERSION [^\r\n]+|OK|ERROR|(CLIENT|SERVER)_ERROR [^\r\n]*|\d+"
                    rb"|(HD|VA \d+|EN|NF|NS|EX|MN)( [^\r\n]*)?)$")
#: Binary opcodes 0x00-0x22 (get ... SASL) plus touch/GAT (0x1c-0x1e) and range ops (0x30-0x3d).
OPCODES = frozenset(range(0x00, 0x23)) | frozenset(range(0x30, 0x3E))
#: Extras length each common request opcode must carry: get 0, set/add/replace 8, incr/decr 20...
REQUEST_EXTRAS = {0x00: 0, 0x01: 8, 0x02: 8, 0x03: 8, 0x04: 0, 0x05: 20, 0x06: 20, 0x07: 0, 0x08: (0, 4),
                  0x09: 0, 0x0A: 0, 0x0B: 0, 0x0C: 0, 0x0D: 0, 0x10: 0, 0x1C: 4, 0x1D: 4}
#: Response status codes (success ... temporary failure).
STATUSES = frozenset(range(0x00, 0x0A)) | frozenset(range(0x20, 0x23)) | frozenset(range(0x81, 0x87))


def binary(data: bytes) -> int:
    """How many complete, valid binary packets start ``data`` (0 if the first is not one)."""
    off = 0
    count = 0
    while off + 24 <= len(data) and count < 32:
        magic, opcode, keylen, extlen, dtype, vb_status, body = struct.unpack_from("!BBHBBHI", data, off)
        if magic not in (0x80, 0x81) or opcode not in OPCODES or dtype != 0 or body < keylen + extlen:
            return count if count else 0
        if magic == 0x80:
            want = REQUEST_EXTRAS.get(opcode)
            if want is not None and extlen not in (want if isinstance(want, tuple) else (want,)):
                return count if count else 0
        elif vb_status not in STATUSES:
            return count if count else 0
        if body > 1 << 20:
            return 0
        off += 24 + body
        count += 1
        if off > len(data):  # the last packet's body continues in the next segment
            break
    return count


def text_line(data: bytes) -> tuple[str, bool] | None | object:
    """(command, decisive) of a text command line; MORE when the line is cut; None if not memcached."""
    line = first_line(data, 2048)
    if line is None:
        return MORE if len(data) < 2048 and printable(data) else None
    if not printable(line):
        return None
    if _STORAGE.match(line):
        return line.split(b" ", 1)[0].decode(), True
    if _RETRIEVAL.match(line) or _OTHER.match(line):
        return line.split(b" ", 1)[0].decode(), False
    return None


def detect(ctx: Context) -> Verdict | None | object:
    data = ctx.payload if ctx.index == 1 else ctx.stream
    if ctx.transport == UDP:
        # Frame header: request id, sequence 0, one datagram, reserved zero (requests are one datagram).
        if ctx.index > 1 or len(data) < 9 or data[2:8] != b"\x00\x00\x00\x01\x00\x00":
            return None
        body = data[8:]
        if ctx.from_client:
            parsed = text_line(body)
            return found("Memcached", STRONG, command=parsed[0]) if isinstance(parsed, tuple) else None
        line = first_line(body, 4096)
        return found("Memcached", STRONG) if line is not None and _REPLY.match(line) else None
    memo = ctx.memo.get("Memcached")
    if not ctx.from_client:
        if memo is None:
            return None
        if memo == "binary":
            return found("Memcached", CERTAIN, format="binary") if data[:1] == b"\x81" and binary(data) else None
        line = first_line(data, 4096)
        if line is None:
            return MORE if incomplete(data, ctx.index) else None
        return found("Memcached", CERTAIN, command=memo) if _REPLY.match(line) else None
    if data[:1] == b"\x80":
        n = binary(data)
        if not n:
            return MORE if len(data) < 24 and ctx.index < 3 else None
        if n >= 2:
            return found("Memcached", STRONG, format="binary")
        ctx.memo["Memcached"] = "binary"
        return ctx.guess(found("Memcached", LIKELY, format="binary"))
    parsed = text_line(data)
    if parsed is MORE:
        return MORE if ctx.index < 4 else None
    if not isinstance(parsed, tuple):
        return None
    name, decisive = parsed
    if decisive:
        return found("Memcached", STRONG, command=name)
    ctx.memo["Memcached"] = name
    return ctx.guess(found("Memcached", LIKELY, command=name))


HEURISTICS = [
    Heuristic("Memcached", detect, TCP_ONLY,
              starts(b"\x80", "set", "add", "replace", "append", "prepend", "cas", "get", "gat", "delete", "incr",
                     "decr", "touch", "stats", "version", "flush_all", "verbosity", "mg", "ms", "md", "ma", "mn"),
              order=50),
    # Over UDP the payload starts with the frame header's request id: no byte filter.
    Heuristic("Memcached", detect, UDP_ONLY, None, order=50),
]
