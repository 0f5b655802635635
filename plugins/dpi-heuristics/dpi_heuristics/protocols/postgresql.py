"""PostgreSQL frontend/backend protocol (v3): the client's first message.

The client speaks first with an untyped message: a 4-byte length and a
4-byte code.  SSLRequest (80877103) and GSSENCRequest (80877104) are 8
bytes long; CancelRequest (80877102) is 16; a StartupMessage carries the
protocol version 3.0 (or 3.2) and NUL-terminated name/value pairs ending
with an empty name, ``user`` among them.  When the capture starts at the
server's side, its authentication request (``R``, length, a known auth
code) followed by more backend messages decides.  After an SSLRequest the
layer watches a few more packets: a server that answers ``N`` gets the
StartupMessage in the clear, and its user and database join the metadata.
"""

from __future__ import annotations

import struct

from dpicore import Verdict

from ..base import CERTAIN, MORE, STRONG, TCP_ONLY, Context, Heuristic, found, starts

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
PROTOCOLS = {0x00030000: "3.0", 0x00030002: "3.2"}
#: AuthenticationRequest codes: ok, kerberos, cleartext, md5, gss, gss-continue, sspi, sasl...
AUTH_CODES = frozenset({0, 2, 3, 5, 7, 8, 9, 10, 11, 12})
#: Backend message types that follow an authentication request.
BACKEND_TYPES = frozenset(b"RSKZE")
MAX_STARTUP = 10000
#: Packets watched after an SSLRequest/GSSENCRequest (the refusal, then the StartupMessage).
WATCH = 3


def startup(data: bytes) -> dict[str, str] | None | object:
    """Metadata of a first client message; MORE for a StartupMessage cut by the segment; None otherwise."""
    if len(data) < 8:
        return None
    length, code = struct.unpack_from("!II", data)
    if length == 8 and code in (SSL_REQUEST, GSSENC_REQUEST) and len(data) == 8:
        return {"request": "SSLRequest" if code == SSL_REQUEST else "GSSENCRequest"}
    if length == 16 and code == CANCEL_REQUEST and len(data) == 16:
        return {"request": "CancelRequest"}
    version = PROTOCOLS.get(code)
    if version is None or not 9 <= length <= MAX_STARTUP or len(data) > length:
        return None
    if len(data) < length:
        return MORE
    fields = data[8:length].split(b"\x00")
    # name, value, ..., "" (terminator), "" (after the final NUL)
    if len(fields) < 4 or fields[-1] != b"" or fields[-2] != b"" or len(fields) % 2:
        return None
    pairs = dict(zip(fields[:-2:2], fields[1:-2:2]))
    if b"user" not in pairs or not all(k.isascii() and k for k in pairs):
        return None
    meta = {"request": "StartupMessage", "version": version, "user": pairs[b"user"].decode("latin-1")}
    if b"database" in pairs:
        meta["database"] = pairs[b"database"].decode("latin-1")
    if b"application_name" in pairs:
        meta["application_name"] = pairs[b"application_name"].decode("latin-1")
    return meta


def backend(data: bytes) -> bool:
    """An authentication request followed by backend messages (or nothing), each of consistent length."""
    off = 0
    count = 0
    while off + 5 <= len(data) and count < 64:
        kind = data[off]
        length = struct.unpack_from("!I", data, off + 1)[0]
        if kind not in BACKEND_TYPES or length < 4 or length > 65536:
            return False
        if count == 0:
            if kind != ord("R") or length < 8 or off + 9 > len(data):
                return False
            if struct.unpack_from("!I", data, off + 5)[0] not in AUTH_CODES:
                return False
        off += 1 + length
        count += 1
    return count > 0 and off == len(data)


def detect(ctx: Context) -> Verdict | None | object:
    if ctx.memo.get("PostgreSQL") == "watching":
        # After an SSLRequest the server refused: the StartupMessage follows in the clear.
        meta = startup(ctx.payload) if ctx.from_client else None
        return found("PostgreSQL", CERTAIN, **meta) if isinstance(meta, dict) and "user" in meta else None
    data = ctx.stream if ctx.index > 1 else ctx.payload
    if ctx.from_client:
        meta = startup(data)
        if meta is MORE:
            return MORE if ctx.index < 4 else None
        if not isinstance(meta, dict):
            return None
        if meta["request"] in ("SSLRequest", "GSSENCRequest"):
            ctx.memo["PostgreSQL"] = "watching"
            return found("PostgreSQL", CERTAIN, watch=WATCH, **meta)
        return found("PostgreSQL", CERTAIN, **meta)
    if ctx.first(0) is None and ctx.index == 1 and backend(data):
        return found("PostgreSQL", STRONG)
    return None


HEURISTICS = [
    Heuristic("PostgreSQL", detect, TCP_ONLY, starts(b"\x00", b"R"), order=30),
]
