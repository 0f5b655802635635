"""The one TLS hello parser TLS, DTLS and QUIC share, with JA3 and JA4.

TLS carries the ClientHello in handshake records, DTLS in handshake
fragments with a cookie field, QUIC in CRYPTO frames of its Initial packets;
the message itself (RFC 8446 section 4.1.2) is the same, so each transport
reassembles the handshake message and hands its body here.

Every parser returns None for anything that is not a well-formed message:
lengths must nest exactly, because that exactness is what makes a TLS
verdict certain.

JA3 follows Salesforce's definition (decimal values, GREASE removed, MD5).
JA4 follows FoxIO's specification (technical_details/JA4.md): GREASE is
ignored everywhere, SNI and ALPN are counted but left out of the extension
hash, and an empty list hashes to twelve zeros.
"""

from __future__ import annotations

import struct

import attrs

#: RFC 8701 GREASE values (0x?a?a with both bytes equal).
GREASE = frozenset(0x0A0A + 0x1010 * i for i in range(16))

EXT_SNI = 0x0000
EXT_GROUPS = 0x000A
EXT_POINT_FORMATS = 0x000B
EXT_SIG_ALGS = 0x000D
EXT_ALPN = 0x0010
EXT_SUPPORTED_VERSIONS = 0x002B
#: The extensions :func:`_client_extension` reads (the others are only listed, for the fingerprints).
READ_EXTENSIONS = frozenset({EXT_SNI, EXT_GROUPS, EXT_POINT_FORMATS, EXT_SIG_ALGS, EXT_ALPN, EXT_SUPPORTED_VERSIONS})
_U16 = struct.Struct("!H")
_EXTENSION_HEADER = struct.Struct("!HH")

VERSION_NAMES = {0x0002: "SSLv2", 0x0300: "SSLv3", 0x0301: "TLSv1.0", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2",
                 0x0304: "TLSv1.3", 0xFEFF: "DTLSv1.0", 0xFEFD: "DTLSv1.2", 0xFEFC: "DTLSv1.3"}
_JA4_VERSIONS = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3", 0x0002: "s2",
                 0xFEFF: "d1", 0xFEFD: "d2", 0xFEFC: "d3"}


def version_name(version: int) -> str:
    """Readable name of a (D)TLS protocol version, including TLS 1.3 drafts (0x7fxx)."""
    name = VERSION_NAMES.get(version)
    if name:
        return name
    if version >> 8 == 0x7F:
        return f"TLSv1.3-draft{version & 0xFF}"
    if version >> 8 == 0xFB:  # Facebook's Fizz, a TLS 1.3 draft of its own
        return f"TLSv1.3-fizz{version & 0xFF}"
    return f"0x{version:04x}"


@attrs.define(slots=True)
class ClientHello:
    version: int
    ciphers: list[int]
    #: Extension types in wire order (GREASE included).
    extensions: list[int]
    sni: str | None = None
    alpn: list[bytes] = attrs.field(factory=list)
    supported_versions: list[int] = attrs.field(factory=list)
    groups: list[int] = attrs.field(factory=list)
    point_formats: list[int] = attrs.field(factory=list)
    sig_algs: list[int] = attrs.field(factory=list)

    @property
    def best_version(self) -> int:
        """The highest version offered: supported_versions when present (TLS 1.3), else the legacy field."""
        offered = [v for v in self.supported_versions if v not in GREASE]
        if self.version >> 8 == 0xFE:  # DTLS counts down, and only its own numbers count
            offered = [v for v in offered if v >> 8 == 0xFE]
            return min(offered) if offered else self.version
        return max(offered) if offered else self.version

    @property
    def alpn_names(self) -> list[str]:
        return [p.decode("latin-1") for p in self.alpn]

    def ja3_string(self) -> str:
        def dec(values: list[int]) -> str:
            return "-".join([str(v) for v in values if v not in GREASE])
        return ",".join((str(self.version), dec(self.ciphers), dec(self.extensions), dec(self.groups),
                         dec(self.point_formats)))

    def ja3(self) -> str:
        import hashlib  # on the first hello, not at every start-up (OpenSSL's bindings, ~3 ms)

        return hashlib.md5(self.ja3_string().encode(), usedforsecurity=False).hexdigest()

    def ja4(self, kind: str = "t") -> str:
        """JA4 of this hello; ``kind`` is "t" (TLS over TCP), "q" (QUIC) or "d" (DTLS)."""
        ciphers = [c for c in self.ciphers if c not in GREASE]
        exts = [e for e in self.extensions if e not in GREASE]
        version = _JA4_VERSIONS.get(self.best_version, "00")
        sni = "d" if EXT_SNI in exts else "i"
        head = f"{kind}{version}{sni}{min(len(ciphers), 99):02d}{min(len(exts), 99):02d}{_ja4_alpn(self.alpn)}"
        cipher_hash = _hash12(_hex_list(sorted(ciphers))) if ciphers else "0" * 12
        ext_list = sorted(e for e in exts if e not in (EXT_SNI, EXT_ALPN))
        sigs = [s for s in self.sig_algs if s not in GREASE]
        if ext_list:
            raw = _hex_list(ext_list)
            if sigs:
                raw += "_" + _hex_list(sigs)
            ext_hash = _hash12(raw)
        else:
            ext_hash = "0" * 12
        return f"{head}_{cipher_hash}_{ext_hash}"


def _hex_list(values: list[int]) -> str:
    """JA4's "0a0b,1301" spelling of 16-bit values ("%04x" is the fastest way CPython has to write them)."""
    return ",".join(["%04x" % v for v in values])


def _hash12(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _alnum(b: int) -> bool:
    return 0x30 <= b <= 0x39 or 0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A


def _ja4_alpn(alpn: list[bytes]) -> str:
    if not alpn or not alpn[0]:
        return "00"
    first = alpn[0]
    a, z = first[0], first[-1]
    if _alnum(a) and _alnum(z):
        return chr(a) + chr(z)
    h = first.hex()
    return h[0] + h[-1]


@attrs.define(slots=True)
class ServerHello:
    version: int
    cipher: int
    extensions: list[int]
    selected_version: int | None = None
    alpn: str | None = None

    @property
    def negotiated(self) -> int:
        return self.selected_version or self.version


def _u16_list(data: bytes) -> list[int] | None:
    if len(data) < 2:
        return None
    (n,) = struct.unpack_from("!H", data)
    if n % 2 or 2 + n > len(data):
        return None
    return list(struct.unpack_from(f"!{n // 2}H", data, 2))


def _client_extension(hello: ClientHello, etype: int, body: bytes) -> bool:
    """Read the extensions the fingerprints and metadata need; False when one is malformed."""
    if etype == EXT_SNI:
        if len(body) < 5:
            return len(body) == 0  # an empty server_name extension is legal in a ServerHello only, be lenient
        (list_len,) = struct.unpack_from("!H", body)
        off, end = 2, min(2 + list_len, len(body))
        while off + 3 <= end:
            name_type, name_len = body[off], struct.unpack_from("!H", body, off + 1)[0]
            name = body[off + 3:off + 3 + name_len]
            if name_type == 0 and hello.sni is None and len(name) == name_len:
                hello.sni = name.decode("latin-1")
            off += 3 + name_len
        return True
    if etype == EXT_ALPN:
        if len(body) < 2:
            return False
        (list_len,) = struct.unpack_from("!H", body)
        off, end = 2, min(2 + list_len, len(body))
        while off < end:
            n = body[off]
            hello.alpn.append(body[off + 1:off + 1 + n])
            off += 1 + n
        return True
    if etype == EXT_SUPPORTED_VERSIONS:
        if not body or body[0] % 2 or 1 + body[0] > len(body):
            return False
        n = body[0] // 2
        hello.supported_versions = list(struct.unpack_from(f"!{n}H", body, 1))
        return True
    if etype == EXT_GROUPS:
        values = _u16_list(body)
        if values is None:
            return False
        hello.groups = values
        return True
    if etype == EXT_SIG_ALGS:
        values = _u16_list(body)
        if values is None:
            return False
        hello.sig_algs = values
        return True
    if etype == EXT_POINT_FORMATS:
        if not body or 1 + body[0] > len(body):
            return False
        hello.point_formats = list(body[1:1 + body[0]])
        return True
    return True


_DTLS_VERSIONS = (0xFEFF, 0xFEFD, 0xFEFC, 0x0100)


def _after_session_id(body: bytes, dtls: bool) -> tuple[int, int] | None:
    """(legacy version, offset after the session ID) of a hello body: the part both hellos share."""
    if len(body) < 38:
        return None
    version = struct.unpack_from("!H", body)[0]
    if not (version >> 8 == 3 and version & 0xFF <= 4 or dtls and version in _DTLS_VERSIONS):
        return None
    sid_len = body[34]
    if sid_len > 32:
        return None
    return version, 35 + sid_len


def _extensions(body: bytes, off: int) -> list[tuple[int, bytes]] | None:
    """The (type, body) extensions from ``off``, which must end exactly with the message (none is fine)."""
    if off == len(body):
        return []  # an SSLv3-style hello without extensions
    if off + 2 > len(body):
        return None
    (total,) = _U16.unpack_from(body, off)
    off += 2
    end = off + total
    if end != len(body):
        return None
    out = []
    header = _EXTENSION_HEADER.unpack_from
    while off < end:
        if off + 4 > end:
            return None
        etype, elen = header(body, off)
        off += 4
        if off + elen > end:
            return None
        out.append((etype, body[off:off + elen]))
        off += elen
    return out


def parse_client_hello(body: bytes, dtls: bool = False) -> ClientHello | None:
    """The ClientHello whose handshake *body* (after the 4-byte, or DTLS 12-byte, header) is ``body``."""
    start = _after_session_id(body, dtls)
    if start is None:
        return None
    version, off = start
    if dtls:
        if off >= len(body):
            return None
        off += 1 + body[off]  # cookie
    if off + 2 > len(body):
        return None
    (clen,) = struct.unpack_from("!H", body, off)
    off += 2
    if clen < 2 or clen % 2 or off + clen > len(body):
        return None
    ciphers = list(struct.unpack_from(f"!{clen // 2}H", body, off))
    off += clen
    if off >= len(body):
        return None
    comp_len = body[off]
    if comp_len < 1 or off + 1 + comp_len > len(body):
        return None
    extensions = _extensions(body, off + 1 + comp_len)
    if extensions is None:
        return None
    hello = ClientHello(version, ciphers, [etype for etype, _ in extensions])
    for etype, ext in extensions:
        if etype in READ_EXTENSIONS and not _client_extension(hello, etype, ext):
            return None
    return hello


def parse_server_hello(body: bytes, dtls: bool = False) -> ServerHello | None:
    """The ServerHello whose handshake body is ``body`` (same conventions as :func:`parse_client_hello`)."""
    start = _after_session_id(body, dtls)
    if start is None or start[1] + 3 > len(body):
        return None
    version, off = start
    (cipher,) = struct.unpack_from("!H", body, off)
    extensions = _extensions(body, off + 3)  # after the cipher suite and compression method
    if extensions is None:
        return None
    hello = ServerHello(version, cipher, [etype for etype, _ in extensions])
    for etype, ext in extensions:
        if etype == EXT_SUPPORTED_VERSIONS and len(ext) == 2:
            hello.selected_version = struct.unpack("!H", ext)[0]
        elif etype == EXT_ALPN and len(ext) >= 4 and ext[2] + 3 <= len(ext):
            hello.alpn = ext[3:3 + ext[2]].decode("latin-1")
    return hello


#: Fingerprints remembered at most (the memo is emptied when full).
MAX_FINGERPRINTS = 1024
#: Hellos listing more values than this are fingerprinted without being remembered (bounds the memo's size).
MAX_FINGERPRINT_VALUES = 256
_fingerprints: dict[tuple[object, ...], tuple[str, str]] = {}


def fingerprints(hello: ClientHello, kind: str) -> tuple[str, str]:
    """(JA3, JA4) of ``hello``, remembered by the fields they are computed from.

    One client program sends the same cipher suites, extensions, groups and
    signature algorithms in every hello (only its random, session ID, key
    shares and server name change), so most hellos repeat an earlier
    fingerprint: the formatting and hashing are done once per distinct set.
    """
    key = (kind, hello.version, tuple(hello.ciphers), tuple(hello.extensions), tuple(hello.groups),
           tuple(hello.point_formats), tuple(hello.sig_algs), tuple(hello.supported_versions),
           hello.alpn[0] if hello.alpn else None)  # JA4 reads only the first ALPN protocol
    known = _fingerprints.get(key)
    if known is not None:
        return known
    result = (hello.ja3(), hello.ja4(kind))
    if sum(len(part) for part in key[2:8]) <= MAX_FINGERPRINT_VALUES:  # type: ignore[arg-type]
        if len(_fingerprints) >= MAX_FINGERPRINTS:
            _fingerprints.clear()
        _fingerprints[key] = result
    return result


def client_metadata(hello: ClientHello, kind: str) -> dict[str, object]:
    """The verdict metadata of a ClientHello, shared by TLS, DTLS and QUIC."""
    ja3, ja4 = fingerprints(hello, kind)
    return {
        "version": version_name(hello.best_version),
        "sni": hello.sni,
        "alpn": hello.alpn_names or None,
        "ja3": ja3,
        "ja4": ja4,
    }
