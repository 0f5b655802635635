"""QUIC long headers, and the Initial packet's protection removed (RFC 9001 section 5, RFC 9369).

Initial packets are encrypted, but with keys anyone can derive from the
Destination Connection ID of the client's first packet and a per-version
salt; the AEAD tag then proves the packet is QUIC of that version.  The
plaintext holds CRYPTO frames, which carry the TLS ClientHello.
"""

from __future__ import annotations

import importlib.util
import struct

import attrs

# hashlib, hmac and cryptography are imported by the functions that use them, on the first QUIC
# Initial: they were a twentieth of every `dpi classify` start-up, traffic with QUIC or not.  That
# cryptography is installed is still checked here, when the layer loads: a missing one fails the layer
# with this message, as its import did, instead of one error per QUIC flow.
if importlib.util.find_spec("cryptography") is None:
    raise ModuleNotFoundError("No module named 'cryptography' (the QUIC heuristic decrypts Initial packets "
                              "with it: pip install cryptography)", name="cryptography")

V1 = 0x00000001
V2 = 0x6B3343CF

_SALT_V1 = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")
_SALT_V2 = bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9")
_SALT_D29 = bytes.fromhex("afbfec289993d24c9e9786f19c6111e04390a899")  # drafts 29-32
_SALT_D23 = bytes.fromhex("c3eef712c72ebb5a11a7d2432bb46365bef9f502")  # drafts 23-28
_SALT_D22 = bytes.fromhex("7fbcdb0e7c66bbe9193a96cd21519ebd7a02644a")  # draft 22 and earlier
_SALT_Q50 = bytes.fromhex("504574efd066fe2f9d945cfcdbd3a7f0d3b56b45")  # Google QUIC Q050
_SALT_T50 = bytes.fromhex("7ff579e5acd072915580304c43a2367c60488310")  # Google T050
_SALT_T51 = bytes.fromhex("7a4edef4e7ccee5fa4506c19124fc8ccda6e033d")  # Google T051

#: Facebook mvfst versions and the IETF draft each follows.
MVFST = {0xFACEB001: 22, 0xFACEB002: 27, 0xFACEB00E: 27, 0xFACEB010: 29, 0xFACEB011: 29, 0xFACEB012: 29,
         0xFACEB013: 29}


def draft_of(version: int) -> int | None:
    """The IETF draft number a version follows (v1 counts as 34), None for others."""
    if version >> 8 == 0xFF0000:
        return version & 0xFF
    if version in MVFST:
        return MVFST[version]
    if version == V1:
        return 34
    return None


def google_version(version: int) -> str | None:
    """'Q046', 'T051', ... for Google QUIC versions, else None."""
    raw = version.to_bytes(4, "big")
    if raw[:1] in (b"Q", b"T") and raw[1:].isdigit():
        return raw.decode()
    return None


def is_forcing(version: int) -> bool:
    """0x?a?a?a?a: reserved versions clients send to exercise version negotiation (RFC 9000 15)."""
    return version & 0x0F0F0F0F == 0x0A0A0A0A


def version_name(version: int) -> str:
    if version == V1:
        return "v1"
    if version == V2:
        return "v2"
    if version == 0:
        return "negotiation"
    if version >> 8 == 0xFF0000:
        return f"draft-{version & 0xFF}"
    if version in MVFST:
        return f"mvfst-{version:08x}(draft-{MVFST[version]})"
    g = google_version(version)
    if g:
        return g
    if is_forcing(version):
        return f"forcing-negotiation-{version:08x}"
    return f"0x{version:08x}"


def known(version: int) -> bool:
    return version in (V1, V2) or draft_of(version) is not None or google_version(version) is not None


def _salt(version: int) -> bytes | None:
    if version == V1:
        return _SALT_V1
    if version == V2:
        return _SALT_V2
    g = google_version(version)
    if g is not None:
        return {"Q050": _SALT_Q50, "T050": _SALT_T50, "T051": _SALT_T51}.get(g)
    draft = draft_of(version)
    if draft is None:
        return None
    if draft <= 22:
        return _SALT_D22
    if draft <= 28:
        return _SALT_D23
    if draft <= 32:
        return _SALT_D29
    return _SALT_V1


def varint(data: bytes, off: int) -> tuple[int, int] | None:
    """(value, offset after it) of a QUIC variable-length integer, None if cut short."""
    if off >= len(data):
        return None
    n = 1 << (data[off] >> 6)
    if off + n > len(data):
        return None
    value = data[off] & 0x3F
    for b in data[off + 1:off + n]:
        value = (value << 8) | b
    return value, off + n


@attrs.define(slots=True)
class LongHeader:
    first: int
    version: int
    dcid: bytes
    scid: bytes
    #: Offset after the connection IDs.
    offset: int

    @property
    def packet_type(self) -> int:
        """0 Initial, 1 0-RTT, 2 Handshake, 3 Retry, in v1 numbering (v2's is rotated back)."""
        t = (self.first >> 4) & 3
        return (t - 1) & 3 if self.version == V2 else t


def long_header(data: bytes) -> LongHeader | None:
    """The invariant part of a long header (RFC 8999), None if it does not fit the datagram."""
    if len(data) < 7 or not data[0] & 0x80:
        return None
    (version,) = struct.unpack_from("!I", data, 1)
    dlen = data[5]
    if 6 + dlen + 1 > len(data):
        return None
    dcid = data[6:6 + dlen]
    off = 6 + dlen
    slen = data[off]
    scid = data[off + 1:off + 1 + slen]
    if len(scid) < slen:
        return None
    if version != 0 and (dlen > 20 or slen > 20):
        return None
    return LongHeader(data[0], version, dcid, scid, off + 1 + slen)


def _expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    """HKDF-Expand-Label (RFC 8446 7.1) for outputs of at most one SHA-256 block."""
    import hashlib
    import hmac

    full = b"tls13 " + label
    info = struct.pack("!HB", length, len(full)) + full + b"\x00"
    return hmac.new(secret, info + b"\x01", hashlib.sha256).digest()[:length]


@attrs.define(slots=True, frozen=True)
class Keys:
    key: bytes
    iv: bytes
    hp: bytes


def initial_keys(version: int, dcid: bytes, server: bool = False) -> Keys | None:
    """The Initial packet keys RFC 9001 5.2 (RFC 9369 3.3.1 for v2) derives from the client's DCID."""
    import hashlib
    import hmac

    salt = _salt(version)
    if salt is None:
        return None
    initial = hmac.new(salt, dcid, hashlib.sha256).digest()
    secret = _expand_label(initial, b"server in" if server else b"client in", 32)
    prefix = b"quicv2 " if version == V2 else b"quic "
    return Keys(_expand_label(secret, prefix + b"key", 16), _expand_label(secret, prefix + b"iv", 12),
                _expand_label(secret, prefix + b"hp", 16))


def decrypt_initial(data: bytes, header: LongHeader, keys: Keys) -> tuple[bytes, int] | None:
    """(plaintext, bytes of ``data`` this packet used) of an Initial packet, or None if it does not decrypt."""
    tok = varint(data, header.offset)
    if tok is None:
        return None
    token_len, off = tok
    off += token_len
    ln = varint(data, off)
    if ln is None:
        return None
    length, pn_offset = ln
    end = pn_offset + length
    if end > len(data) or length < 20:
        return None
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    sample = data[pn_offset + 4:pn_offset + 20]
    mask = Cipher(algorithms.AES(keys.hp), modes.ECB()).encryptor().update(sample)
    first = data[0] ^ (mask[0] & 0x0F)
    pn_len = (first & 3) + 1
    pn_bytes = bytes(b ^ m for b, m in zip(data[pn_offset:pn_offset + pn_len], mask[1:1 + pn_len]))
    header_bytes = bytes([first]) + data[1:pn_offset] + pn_bytes
    pn = int.from_bytes(pn_bytes, "big")
    nonce = (int.from_bytes(keys.iv, "big") ^ pn).to_bytes(12, "big")
    try:
        plain = AESGCM(keys.key).decrypt(nonce, data[pn_offset + pn_len:end], header_bytes)
    except (InvalidTag, ValueError):
        return None
    return plain, end


def crypto_frames(plain: bytes) -> list[tuple[int, bytes]]:
    """(offset, data) of the CRYPTO frames of an Initial's plaintext; stops at a frame it cannot skip."""
    out: list[tuple[int, bytes]] = []
    off = 0
    while off < len(plain):
        ftype = plain[off]
        if ftype in (0x00, 0x01):  # PADDING, PING
            off += 1
            continue
        if ftype in (0x02, 0x03):  # ACK (with ECN counts for 0x03)
            pos: int | None = off + 1
            values = []
            for _ in range(4):
                r = varint(plain, pos) if pos is not None else None
                if r is None:
                    return out
                values.append(r[0])
                pos = r[1]
            for _ in range(2 * values[2] + (3 if ftype == 0x03 else 0)):
                r = varint(plain, pos)
                if r is None:
                    return out
                pos = r[1]
            off = pos
            continue
        if ftype == 0x06:  # CRYPTO
            a = varint(plain, off + 1)
            b = varint(plain, a[1]) if a else None
            if a is None or b is None or b[1] + b[0] > len(plain):
                return out
            out.append((a[0], plain[b[1]:b[1] + b[0]]))
            off = b[1] + b[0]
            continue
        break  # CONNECTION_CLOSE or a frame Initials do not carry
    return out


def assemble(chunks: dict[int, bytes]) -> bytes:
    """The contiguous CRYPTO stream from offset 0 out of possibly overlapping, out-of-order chunks.

    One pass in offset order: a client that sends its hello as thousands of
    one-byte frames, last byte first, costs a sort, not a pass per chunk.
    Where chunks overlap, the bytes come from the one that starts first.
    """
    buf = bytearray()
    for start, data in sorted(chunks.items()):
        if start > len(buf):
            break  # a gap: nothing after it is contiguous
        if start + len(data) > len(buf):
            buf += data[len(buf) - start:]
    return bytes(buf)
