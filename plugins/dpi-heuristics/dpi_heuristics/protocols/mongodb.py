"""MongoDB wire protocol: a 16-byte little-endian header and an opcode's body.

``messageLength, requestID, responseTo, opCode``, then per opcode: OP_MSG
(2013) flag bits and a section holding a BSON document; legacy OP_QUERY
(2004) flags, a ``db.collection`` name and a BSON document; OP_REPLY (1)
from a server; OP_COMPRESSED (2012) the original opcode and a compressor
id.  Four length fields must agree (message, BSON document, the document's
trailing NUL), which random data does not do.
"""

from __future__ import annotations

import re
import struct

from dpicore import Verdict

from ..base import CERTAIN, STRONG, TCP_ONLY, Context, Heuristic, found

OP_REPLY, OP_UPDATE, OP_INSERT, OP_QUERY = 1, 2001, 2002, 2004
OP_GET_MORE, OP_DELETE, OP_KILL_CURSORS = 2005, 2006, 2007
OP_COMPRESSED, OP_MSG = 2012, 2013
OPCODES = {OP_REPLY: "OP_REPLY", OP_UPDATE: "OP_UPDATE", OP_INSERT: "OP_INSERT", OP_QUERY: "OP_QUERY",
           OP_GET_MORE: "OP_GET_MORE", OP_DELETE: "OP_DELETE", OP_KILL_CURSORS: "OP_KILL_CURSORS",
           OP_COMPRESSED: "OP_COMPRESSED", OP_MSG: "OP_MSG"}
MAX_MESSAGE = 48 * 1000 * 1000
#: A message longer than its segment must have filled it: no TCP segment is cut shorter than this.
MIN_SEGMENT = 536
#: BSON element types (double ... int64, decimal128, min/max key).
BSON_TYPES = frozenset(range(0x01, 0x14)) | {0x7F, 0xFF}
_COLLECTION = re.compile(rb"^[\x21-\x7e]{1,120}\.[\x20-\x7e]{1,200}$")
#: OP_MSG flag bits: checksumPresent, moreToCome, exhaustAllowed.
MSG_FLAGS = 0x00010003


def bson(data: bytes, off: int, limit: int) -> tuple[str, int] | None:
    """(first key, document length) of a BSON document starting at ``off`` and ending by ``limit``."""
    if off + 5 > len(data):
        return None
    size = struct.unpack_from("<i", data, off)[0]
    if size < 5 or off + size > limit:
        return None
    if off + size <= len(data) and data[off + size - 1] != 0:
        return None
    if size == 5:
        return "", size
    if data[off + 4] not in BSON_TYPES:
        return None
    end = data.find(b"\x00", off + 5, min(len(data), off + 5 + 128))
    if end < 0:
        return None
    key = data[off + 5:end]
    if not key.isascii():
        return None
    return key.decode("ascii"), size


def message(data: bytes) -> dict[str, str] | None:
    """Opcode and first command key of a wire-protocol message at the start of ``data``, else None."""
    if len(data) < 21:
        return None
    length, _request, response_to, opcode = struct.unpack_from("<iiii", data)
    if opcode not in OPCODES or not 21 <= length <= MAX_MESSAGE:
        return None
    if length > len(data) < MIN_SEGMENT or len(data) - 16 < length < len(data):
        return None  # a short segment must hold the whole message; what follows it must be another header
    meta = {"opcode": OPCODES[opcode]}
    if opcode == OP_MSG:
        flags = struct.unpack_from("<I", data, 16)[0]
        if flags & ~MSG_FLAGS or data[20] != 0:
            return None
        doc = bson(data, 21, length)
        if doc is None:
            return None
        meta["command"] = doc[0]
    elif opcode == OP_QUERY:
        flags = struct.unpack_from("<I", data, 16)[0]
        if flags & ~0xFE:
            return None
        end = data.find(b"\x00", 20, 20 + 330)
        if end < 0 or not _COLLECTION.match(data[20:end]):
            return None
        doc = bson(data, end + 9, length)
        if doc is None:
            return None
        meta["collection"] = data[20:end].decode("ascii")
        meta["command"] = doc[0]
    elif opcode == OP_REPLY:
        if response_to == 0 or length < 36:
            return None
        flags, _cursor, start, count = struct.unpack_from("<IqiI", data, 16)
        if flags & ~0x0F or start < 0 or count > 1 << 20:
            return None
        if count and bson(data, 36, length) is None:
            return None
    elif opcode == OP_COMPRESSED:
        if length < 25:
            return None
        original, size, compressor = struct.unpack_from("<iiB", data, 16)
        if original not in OPCODES or original == OP_COMPRESSED or size < 5 or compressor > 3:
            return None
    else:  # the legacy write and cursor opcodes: zero, then a collection name (or a cursor count)
        if struct.unpack_from("<i", data, 16)[0] != 0:
            return None
        if opcode == OP_KILL_CURSORS:
            count = struct.unpack_from("<i", data, 20)[0]
            if not 0 < count <= 1 << 16 or length != 24 + 8 * count:
                return None
        else:
            end = data.find(b"\x00", 20, 20 + 330)
            if end < 0 or not _COLLECTION.match(data[20:end]):
                return None
    return meta


def detect(ctx: Context) -> Verdict | None:
    if ctx.index > 1:
        return None
    meta = message(ctx.payload)
    if meta is None:
        return None
    # Certain when the message is exactly the segment and its document names a command.
    exact = struct.unpack_from("<i", ctx.payload)[0] == len(ctx.payload)
    return found("MongoDB", CERTAIN if exact and "command" in meta else STRONG, **meta)


HEURISTICS = [
    # The first byte is a length: no byte filter.
    Heuristic("MongoDB", detect, TCP_ONLY, None, order=35),
]
