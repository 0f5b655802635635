"""Microsoft SQL Server's TDS (MS-TDS): an 8-byte packet header and a type-specific body.

Header: type, status, big-endian length, SPID, packet id, window (always 0).
The length must be the segment's (or more, for a packet spanning
segments), and the body must fit its type:

- PRELOGIN (0x12, and the server's 0x04 answer): option tokens with offsets
  and lengths inside the body, ending with 0xFF;
- LOGIN7 (0x10): its own little-endian length and a known TDS version;
- SQL batch (0x01), RPC (0x03), transaction manager (0x0E): the ALL_HEADERS
  block of TDS 7.2+, then UTF-16LE SQL text or a procedure name/id;
- a server's tabular result (0x04): a known first token.
"""

from __future__ import annotations

import struct

from dpicore import Verdict

from ..base import CERTAIN, STRONG, TCP_ONLY, Context, Heuristic, found

SQL_BATCH, PRE_TDS7_LOGIN, RPC, RESPONSE, ATTENTION, TRANSACTION, LOGIN7, SSPI, PRELOGIN = (
    0x01, 0x02, 0x03, 0x04, 0x06, 0x0E, 0x10, 0x11, 0x12)
TYPES = {SQL_BATCH: "SQL batch", RPC: "RPC", RESPONSE: "response", TRANSACTION: "transaction manager",
         LOGIN7: "LOGIN7", PRELOGIN: "PRELOGIN"}
#: Status bits: end of message, ignore, event notification, reset connection, reset keeping the transaction.
STATUS_BITS = 0x1F
TDS_VERSIONS = {0x70000000: "7.0", 0x71000000: "7.1", 0x71000001: "7.1", 0x72090002: "7.2", 0x730A0003: "7.3",
                0x730B0003: "7.3", 0x74000004: "7.4", 0x08000000: "8.0"}
#: Tokens a response may start with: COLMETADATA, ERROR, INFO, LOGINACK, ENVCHANGE, DONE*, RETURNSTATUS...
RESPONSE_TOKENS = frozenset({0x81, 0xAA, 0xAB, 0xAD, 0xE3, 0xFD, 0xFE, 0xFF, 0x79, 0xA9, 0xAC, 0xAE, 0xE4, 0xED,
                             0xEE, 0xD1, 0xD2, 0xA5})
#: A packet this long spans segments; shorter ones must fit the segment exactly.
SEGMENT = 512


def _utf16_ascii(data: bytes, chars: int = 4) -> bool:
    """True when ``data`` starts with ``chars`` UTF-16LE characters of printable ASCII or whitespace."""
    if len(data) < 2 * chars:
        return False
    for i in range(0, 2 * chars, 2):
        c, hi = data[i], data[i + 1]
        if hi != 0 or not (32 <= c < 127 or c in (9, 10, 13)):
            return False
    return True


def prelogin(body: bytes) -> bool:
    """PRELOGIN option table: (token, offset, length) triples inside the body, VERSION first, then 0xFF."""
    i = 0
    end_of_table = body.find(b"\xff", 0, 64)
    if end_of_table < 5 or end_of_table % 5:
        return False
    while i < end_of_table:
        token, off, length = struct.unpack_from("!BHH", body, i)
        if token > 8 or (i == 0 and token != 0) or off < end_of_table + 1 or off + length > len(body):
            return False
        i += 5
    return True


def all_headers(body: bytes) -> int | None:
    """Length of a TDS 7.2+ ALL_HEADERS block at the body's start, or None when there is none."""
    if len(body) < 10:
        return None
    total, first_len, first_type = struct.unpack_from("<IIH", body)
    if not 10 <= total <= min(len(body), 1024) or not 6 <= first_len <= total - 4 or first_type not in (1, 2, 3):
        return None
    return total


def request(kind: int, body: bytes) -> float | None:
    """Confidence that ``body`` is a client request of TDS type ``kind``, or None."""
    if kind == PRELOGIN:
        return CERTAIN if prelogin(body) else None
    if kind == LOGIN7:
        if len(body) < 36:
            return None
        length, version = struct.unpack_from("<II", body)
        if length != len(body) and not (length > len(body) >= SEGMENT - 8):
            return None
        ok = version in TDS_VERSIONS or int.from_bytes(body[4:8], "big") in TDS_VERSIONS
        return CERTAIN if ok else None
    if kind in (SQL_BATCH, RPC, TRANSACTION):
        headers = all_headers(body)
        rest = body[headers or 0:]
        if kind == TRANSACTION:
            if headers is None or len(rest) < 2 or struct.unpack_from("<H", rest)[0] > 10:
                return None
            return STRONG
        if kind == SQL_BATCH:
            if not _utf16_ascii(rest):
                return None
        else:
            if len(rest) < 4:
                return None
            name_len = struct.unpack_from("<H", rest)[0]
            if name_len == 0xFFFF:
                if not 1 <= struct.unpack_from("<H", rest, 2)[0] <= 15:
                    return None
            elif not (1 <= name_len <= 128 and _utf16_ascii(rest[2:], min(name_len, 4))):
                return None
        return CERTAIN if headers is not None else STRONG
    return None


def detect(ctx: Context) -> Verdict | None:
    data = ctx.payload
    if ctx.index > 1 or len(data) < 9:
        return None
    kind, status, length, _spid, _packet, window = struct.unpack_from("!BBHHBB", data)
    if kind not in TYPES or status & ~STATUS_BITS or window != 0 or length < 9:
        return None
    if length != len(data) and not (length > len(data) >= SEGMENT):
        return None
    body = data[8:length]
    if kind == RESPONSE:
        if prelogin(body):
            return found("MSSQL", CERTAIN, message="PRELOGIN response")
        return found("MSSQL", STRONG, message="response") if body[0] in RESPONSE_TOKENS and len(body) >= 8 else None
    confidence = request(kind, body)
    if confidence is None:
        return None
    return found("MSSQL", confidence, message=TYPES[kind])


HEURISTICS = [
    Heuristic("MSSQL", detect, TCP_ONLY, frozenset(TYPES), order=35),
]
