"""TLS over TCP, SSLv3 to TLS 1.3 (and the SSLv2-compatible ClientHello).

The first bytes of either direction are records: content type 20..24,
version 3.x, a length of at most 2^14 + 2048.  A handshake record holding a
ClientHello or ServerHello whose lengths nest exactly is certain; the
ClientHello may span several records and TCP segments, so the direction's
stream is reassembled until the handshake message is complete.  A flow
whose capture starts later (application data, alerts) is named from record
framing alone, at a lower confidence.

After a ClientHello the layer watches a few packets for the ServerHello, so
``version`` becomes the negotiated version when the server answers.
"""

from __future__ import annotations

import struct

from dpicore import Verdict

from .. import tlshello
from ..base import CERTAIN, LIKELY, MORE, STRONG, TCP_ONLY, Context, Heuristic, found

CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA, HEARTBEAT = 20, 21, 22, 23, 24
CONTENT_TYPES = frozenset({CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA, HEARTBEAT})
MAX_RECORD = 2 ** 14 + 2048
#: Largest handshake message waited for (post-quantum ClientHellos reach a few kB).
MAX_HELLO = 1 << 16
#: Payload packets watched after a ClientHello, for the ServerHello.
WATCH = 3
CLIENT_HELLO, SERVER_HELLO = 1, 2
_RECORD_HEADER = struct.Struct("!BHH")


def records(data: bytes) -> tuple[list[tuple[int, int, bytes]], bool] | None:
    """The records at the start of ``data`` as (type, version, fragment), and whether the last is cut short.

    None as soon as a header is impossible.
    """
    out: list[tuple[int, int, bytes]] = []
    off = 0
    header = _RECORD_HEADER.unpack_from
    while off + 5 <= len(data):
        ctype, version, length = header(data, off)
        if ctype not in CONTENT_TYPES or version >> 8 != 3 or version & 0xFF > 4 or length > MAX_RECORD:
            return None
        if ctype != APPLICATION_DATA and length == 0:
            return None
        fragment = data[off + 5:off + 5 + length]
        out.append((ctype, version, fragment))
        off += 5 + length
        if len(fragment) < length:
            return out, True
    return out, off < len(data)


def handshake_message(recs: list[tuple[int, int, bytes]]) -> bytes:
    """The handshake bytes of the leading handshake records, joined (a message may span records)."""
    parts = []
    for ctype, _version, fragment in recs:
        if ctype != HANDSHAKE:
            break
        parts.append(fragment)
    return b"".join(parts)


def sslv2_client_hello(data: bytes) -> Verdict | None:
    """An SSLv2-format ClientHello (sent by old clients offering SSLv3/TLS), RFC 6101 appendix E."""
    if len(data) < 11 or not data[0] & 0x80 or data[2] != 1:
        return None
    length = ((data[0] & 0x7F) << 8) | data[1]
    version, cs_len, sid_len, ch_len = struct.unpack_from("!HHHH", data, 3)
    if version not in (0x0002, 0x0300, 0x0301, 0x0302, 0x0303):
        return None
    if cs_len == 0 or cs_len % 3 or sid_len not in (0, 16, 32) or not 16 <= ch_len <= 32:
        return None
    if 9 + cs_len + sid_len + ch_len != length:
        return None
    return found("TLS", CERTAIN, version=tlshello.version_name(version), hello="SSLv2")


def _server_hello(hs: bytes) -> Verdict | None:
    length = int.from_bytes(hs[1:4], "big")
    hello = tlshello.parse_server_hello(hs[4:4 + length])
    if hello is None:
        return None
    return found("TLS", CERTAIN, version=tlshello.version_name(hello.negotiated), alpn_selected=hello.alpn)


def _watch(ctx: Context) -> Verdict | None:
    """After the ClientHello: read the ServerHello for the negotiated version."""
    if ctx.from_client:
        return None
    parsed = records(ctx.stream if ctx.index > 1 else ctx.payload)
    if parsed is None:
        return None
    hs = handshake_message(parsed[0])
    if len(hs) >= 4 and hs[0] == SERVER_HELLO and len(hs) >= 4 + int.from_bytes(hs[1:4], "big"):
        ctx.memo["TLS"] = "done"
        return _server_hello(hs)
    return None


def detect(ctx: Context) -> Verdict | None | object:
    state = ctx.memo.get("TLS")
    if state is not None:  # watching after the verdict
        return _watch(ctx) if state == "decided" else None
    data = ctx.stream if ctx.index > 1 else ctx.payload
    if data[0] & 0x80:
        return sslv2_client_hello(data) if ctx.from_client else None
    parsed = records(data)
    if parsed is None:
        return None
    recs, partial = parsed
    if not recs:
        return MORE if len(data) < 5 and data[0] in CONTENT_TYPES else None
    if recs[0][0] == HANDSHAKE:
        hs = handshake_message(recs)
        if len(hs) >= 4 and hs[0] in (CLIENT_HELLO, SERVER_HELLO):
            length = int.from_bytes(hs[1:4], "big")
            if length < 38 or length > MAX_HELLO:
                return None
            if len(hs) < 4 + length:
                # Split over records or segments: wait while the records so far are sound (a flow
                # that ends here, like a honeypot's first segment, is still named by the headers).
                if ctx.index >= 8:
                    return None
                return ctx.guess(found("TLS", STRONG, version=tlshello.version_name(recs[0][1]), partial=True))
            if hs[0] == CLIENT_HELLO:
                hello = tlshello.parse_client_hello(hs[4:4 + length])
                if hello is None:
                    return found("TLS", STRONG, version=tlshello.version_name(recs[0][1]))
                ctx.memo["TLS"] = "decided"
                return found("TLS", CERTAIN, watch=WATCH, **tlshello.client_metadata(hello, "t"))
            return _server_hello(hs) or found("TLS", STRONG, version=tlshello.version_name(recs[0][1]))
        if len(hs) < 4 and partial:
            return MORE
    # Not a hello: a capture that starts mid-connection.  Framing alone, so a
    # second record (or a record that ends exactly with the payload) is wanted.
    complete = len(recs) - (1 if partial else 0)
    version = tlshello.version_name(recs[0][1])
    if complete >= 2 or (complete == 1 and not partial):
        return found("TLS", STRONG, version=version)
    return ctx.guess(found("TLS", LIKELY, version=version)) if ctx.index < 4 else None


HEURISTICS = [
    Heuristic("TLS", detect, TCP_ONLY, frozenset(CONTENT_TYPES | set(range(0x80, 0x100))), server_first=True,
              order=10),
]
