"""QUIC: IETF v1 (RFC 9000), v2 (RFC 9369), the drafts, mvfst, and Google QUIC.

The client's first datagram is an Initial packet.  Its keys follow from
its Destination Connection ID (RFC 9001 5.2), so the layer decrypts it: an
AEAD tag that verifies is proof, and the CRYPTO frames (reassembled across
packets when a large ClientHello spans two Initials) give SNI, ALPN and
JA4 through the shared TLS hello parser.

Without a decryptable Initial (server side, or a version without public
keys) a long header with a known version is still strong evidence; a
version-negotiation reply that echoes the client's connection IDs is
certain.  Google QUIC before Q046 has its own public header; its CHLO
message is in clear text and names the server in its SNI tag.
"""

from __future__ import annotations

import struct

from dpicore import Verdict

from .. import quicinitial as qi
from .. import tlshello
from ..base import CERTAIN, LIKELY, STRONG, UDP_ONLY, Context, Heuristic, found

#: Payload packets watched after the verdict while the ClientHello is incomplete.
WATCH = 3


def chlo_tags(data: bytes) -> dict[bytes, bytes] | None:
    """Tag/value pairs of a Google QUIC crypto handshake message (CHLO) found in ``data``."""
    i = data.find(b"CHLO")
    if i < 0 or i + 8 > len(data):
        return None
    (count,) = struct.unpack_from("<H", data, i + 4)
    values = i + 8 + 8 * count
    if count == 0 or count > 64 or values > len(data):
        return None
    tags: dict[bytes, bytes] = {}
    prev = 0
    for k in range(count):
        tag = data[i + 8 + 8 * k:i + 12 + 8 * k]
        (end,) = struct.unpack_from("<I", data, i + 12 + 8 * k)
        if end < prev or values + end > len(data):
            break  # the message continues in a later packet: keep what is complete
        tags[tag] = data[values + prev:values + end]
        prev = end
    return tags


def _gquic_meta(tags: dict[bytes, bytes] | None) -> dict[str, object]:
    if not tags:
        return {}
    sni = tags.get(b"SNI\x00")
    uaid = tags.get(b"UAID")
    return {"sni": sni.decode("latin-1") if sni else None,
            "user_agent": uaid.decode("latin-1") if uaid else None}


def gquic_public(data: bytes) -> Verdict | None:
    """Google QUIC Q0xx before Q046: public flags, 8-byte connection ID, ASCII version."""
    flags = data[0]
    if flags & 0x80 or not flags & 0x01:
        return None
    off = 9 if flags & 0x08 else 1
    version = data[off:off + 4]
    if len(version) < 4 or version[:1] != b"Q" or not version[1:].isdigit():
        return None
    meta = _gquic_meta(chlo_tags(data[off + 4:]))
    return found("QUIC", CERTAIN if meta.get("sni") else STRONG, version=version.decode(), **meta)


def _hello_meta(ctx: Context) -> dict[str, object] | None:
    """Metadata of the ClientHello reassembled from this flow's CRYPTO frames, once complete."""
    state = ctx.memo["QUIC"]
    stream = qi.assemble(state["crypto"])
    if stream[:4] == b"CHLO":  # Q050: Google's own handshake inside IETF-style framing
        return _gquic_meta(chlo_tags(stream)) or None
    if len(stream) < 4 or stream[0] != 1:
        return None
    length = int.from_bytes(stream[1:4], "big")
    if len(stream) < 4 + length:
        return None
    hello = tlshello.parse_client_hello(stream[4:4 + length])
    if hello is None:
        return None
    meta = tlshello.client_metadata(hello, "q")
    meta["tls_version"] = meta.pop("version")
    return meta


def _decrypt_client(ctx: Context, header: qi.LongHeader) -> bool:
    """Decrypt the client Initial(s) of this datagram into the flow's CRYPTO chunks; True if any decrypted."""
    state = ctx.memo.setdefault("QUIC", {"crypto": {}, "dcid": header.dcid})
    keys = qi.initial_keys(header.version, state["dcid"])
    if keys is None:
        return False
    data = ctx.payload
    ok = False
    for _ in range(4):  # coalesced packets: Initial(s) first, then 0-RTT/Handshake
        h = qi.long_header(data)
        if h is None or h.version != header.version or h.packet_type != 0:
            break
        result = qi.decrypt_initial(data, h, keys)
        if result is None:
            break
        plain, used = result
        ok = True
        for offset, chunk in qi.crypto_frames(plain):
            if offset < 1 << 16:
                state["crypto"].setdefault(offset, chunk)
        data = data[used:]
    return ok


def _version_negotiation(ctx: Context, header: qi.LongHeader) -> Verdict | None:
    rest = ctx.payload[header.offset:]
    if not rest or len(rest) % 4:
        return None
    versions = [v for (v,) in struct.iter_unpack("!I", rest)]
    offered = ", ".join(qi.version_name(v) for v in versions[:8])
    sent = ctx.memo.get("QUIC_client")
    if sent is not None and not ctx.from_client and sent == (header.scid, header.dcid):
        return found("QUIC", CERTAIN, version="negotiation", offered=offered)
    return found("QUIC", LIKELY if ctx.from_client else STRONG, version="negotiation", offered=offered)


def _watch(ctx: Context) -> Verdict | None:
    """After the verdict: more client Initials complete a ClientHello that spanned datagrams."""
    header = qi.long_header(ctx.payload)
    if not ctx.from_client or header is None or header.packet_type != 0 or "QUIC" not in ctx.memo:
        return None
    if _decrypt_client(ctx, header):
        meta = _hello_meta(ctx)
        if meta:
            ctx.memo["QUIC_done"] = True
            return found("QUIC", CERTAIN, **meta)
    return None


def detect(ctx: Context) -> Verdict | None | object:
    if ctx.memo.get("QUIC_decided"):
        return None if ctx.memo.get("QUIC_done") else _watch(ctx)
    data = ctx.payload
    if not data[0] & 0x80:
        return gquic_public(data) if ctx.from_client else None
    if len(data) >= 5 and data[1:4] in (b"Q04", b"Q03"):
        # Q044-Q046 long header: nibble-coded connection ID lengths, CHLO in clear text.
        version_text = data[1:5].decode("latin-1")
        if not version_text[1:].isdigit():
            return None
        meta = _gquic_meta(chlo_tags(data))
        return found("QUIC", CERTAIN if meta.get("sni") else STRONG, version=version_text, **meta)
    header = qi.long_header(data)
    if header is None:
        return None
    version = header.version
    if version == 0:
        return _version_negotiation(ctx, header)
    name = qi.version_name(version)
    if not qi.known(version):
        if qi.is_forcing(version) and ctx.from_client and ctx.index == 1:
            # Only a reply listing versions and echoing our IDs will confirm it.
            ctx.memo["QUIC_client"] = (header.dcid, header.scid)
            return ctx.guess(found("QUIC", LIKELY, version=name))
        return None
    if ctx.from_client and header.packet_type == 0 and _decrypt_client(ctx, header):
        ctx.memo["QUIC_decided"] = True
        meta = _hello_meta(ctx)
        if meta:
            ctx.memo["QUIC_done"] = True
            return found("QUIC", CERTAIN, version=name, **meta)
        return found("QUIC", CERTAIN, watch=WATCH, version=name)
    return found("QUIC", STRONG, version=name)


HEURISTICS = [
    Heuristic("QUIC", detect, UDP_ONLY,
              frozenset(range(0x80, 0x100)) | frozenset(b for b in range(0x80) if b & 0x01), server_first=True,
              order=15),
]
