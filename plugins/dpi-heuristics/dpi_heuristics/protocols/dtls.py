"""DTLS 1.0, 1.2 and 1.3 over UDP (RFC 6347, RFC 9147).

A datagram holds whole records with 13-byte headers: content type, version
0xfeff / 0xfefd (0x0100 for OpenSSL's pre-standard DTLS), epoch, a 48-bit
sequence number and a length.  Every record of the datagram must fit
exactly.  A ClientHello (handshake header of 12 bytes, with a cookie field)
is parsed by the shared TLS hello parser for SNI, ALPN, JA3 and JA4.
"""

from __future__ import annotations

import struct

from dpicore import Verdict

from .. import tlshello
from ..base import CERTAIN, STRONG, UDP_ONLY, Context, Heuristic, found

CONTENT_TYPES = frozenset({20, 21, 22, 23, 24, 25})
VERSIONS = {0xFEFF: "DTLSv1.0", 0xFEFD: "DTLSv1.2", 0xFEFC: "DTLSv1.3", 0x0100: "DTLSv1.0-OpenSSL-pre"}
HANDSHAKE = 22
CLIENT_HELLO, SERVER_HELLO, HELLO_VERIFY_REQUEST = 1, 2, 3
HANDSHAKE_TYPES = frozenset({0, 1, 2, 3, 4, 11, 12, 13, 14, 15, 16, 20})


def records(data: bytes) -> list[tuple[int, int, int, bytes]] | None:
    """(type, version, epoch, fragment) of every record, or None unless they fill the datagram exactly."""
    out = []
    off = 0
    while off < len(data):
        if off + 13 > len(data):
            return None
        ctype, version, epoch = struct.unpack_from("!BHH", data, off)
        (length,) = struct.unpack_from("!H", data, off + 11)
        if ctype not in CONTENT_TYPES or version not in VERSIONS or off + 13 + length > len(data):
            return None
        out.append((ctype, version, epoch, data[off + 13:off + 13 + length]))
        off += 13 + length
    return out or None


def detect(ctx: Context) -> Verdict | None:
    recs = records(ctx.payload)
    if recs is None:
        return None
    ctype, version, epoch, fragment = recs[0]
    meta: dict[str, object] = {"version": VERSIONS[version]}
    if ctype == HANDSHAKE and epoch == 0:
        if len(fragment) < 12 or fragment[0] not in HANDSHAKE_TYPES:
            return None
        length = int.from_bytes(fragment[1:4], "big")
        frag_off = int.from_bytes(fragment[6:9], "big")
        frag_len = int.from_bytes(fragment[9:12], "big")
        if frag_len != len(fragment) - 12 or frag_off + frag_len > length:
            return None
        if fragment[0] == CLIENT_HELLO and frag_off == 0 and frag_len == length:
            hello = tlshello.parse_client_hello(fragment[12:], dtls=True)
            if hello is not None:
                meta.update(tlshello.client_metadata(hello, "d"))
                meta["version"] = VERSIONS.get(hello.best_version, meta["version"])
                return found("DTLS", CERTAIN, **meta)
        return found("DTLS", CERTAIN if fragment[0] in (CLIENT_HELLO, SERVER_HELLO, HELLO_VERIFY_REQUEST)
                     else STRONG, **meta)
    # Later epochs are encrypted: framing only, and one record alone is thin evidence.
    if len(recs) >= 2 or ctype in (20, 21, 23) and epoch >= 1:
        return found("DTLS", STRONG, **meta)
    return None


HEURISTICS = [
    Heuristic("DTLS", detect, UDP_ONLY, frozenset(CONTENT_TYPES), server_first=True, order=10),
]
