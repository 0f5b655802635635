"""TLS, DTLS and QUIC: real OpenSSL handshakes, the RFC 9001 / RFC 9369 Initial packets, the JA4
specification's worked example, and the corpus's own server names."""

from __future__ import annotations

import hashlib
import ssl
import struct
from pathlib import Path

import pytest
from dpicore import Classifier
from dpicore.corpus import captures, flow_key, match
from dpicore.model import TCP, UDP

from dpi_heuristics import quicinitial, tlshello
from dpi_heuristics.protocols import dtls, tls
from dpi_heuristics.testing import classify, packets

DATA = Path(__file__).parent / "data"


def _hex_file(name: str) -> bytes:
    return bytes.fromhex("".join(l for l in (DATA / name).read_text().splitlines() if not l.startswith("#")))


def _body(record: bytes) -> bytes:
    """The handshake body of a single-record hello (after the 5-byte record and 4-byte handshake headers)."""
    return record[9:5 + struct.unpack_from("!H", record, 3)[0]]


# --- the shared hello parser -------------------------------------------------

def _ext(etype: int, body: bytes) -> bytes:
    return struct.pack("!HH", etype, len(body)) + body


def _u16s(values: list[int], prefix: int = 2) -> bytes:
    raw = b"".join(struct.pack("!H", v) for v in values)
    return (struct.pack("!H", len(raw)) if prefix == 2 else bytes([len(raw)])) + raw


def hello_body(ciphers: list[int], extensions: list[tuple[int, bytes]], version: int = 0x0303) -> bytes:
    exts = b"".join(_ext(t, b) for t, b in extensions)
    return (struct.pack("!H", version) + bytes(32) + b"\x00" + _u16s(ciphers) + b"\x01\x00"
            + struct.pack("!H", len(exts)) + exts)


def spec_example(grease: bool = False) -> bytes:
    """The ClientHello of FoxIO's JA4 worked example (technical_details/JA4.md): its ciphers, its
    extensions in its order, its signature algorithms; h2 first in ALPN, TLS 1.3 in supported_versions."""
    ciphers = [0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013, 0xC014,
               0x009C, 0x009D, 0x002F, 0x0035]
    bodies = {
        0x0000: struct.pack("!HBH", 14, 0, 11) + b"example.com",
        0x0010: struct.pack("!H", 12) + b"\x02h2\x08http/1.1",
        0x002B: _u16s([0x0304, 0x0303], prefix=1),
        0x000D: _u16s([0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]),
        0x000A: _u16s([0x001D, 0x0017, 0x0018]),
        0x000B: b"\x01\x00",
    }
    order = [0x001B, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002D, 0x000D, 0x0005, 0x0023, 0x0012, 0x002B,
             0xFF01, 0x000B, 0x000A, 0x0015]
    exts = [(t, bodies.get(t, b"")) for t in order]
    if grease:
        ciphers = [0x1A1A] + ciphers
        exts = [(0x2A2A, b"")] + exts + [(0xFAFA, b"\x00")]
    return hello_body(ciphers, exts)


def test_ja4_matches_the_specification_example() -> None:
    hello = tlshello.parse_client_hello(spec_example())
    assert hello is not None and hello.sni == "example.com" and hello.alpn_names == ["h2", "http/1.1"]
    assert hello.ja4("t") == "t13d1516h2_8daaf6152771_e5627efa2ab1"
    # GREASE values are ignored everywhere (ciphers, extensions).
    greased = tlshello.parse_client_hello(spec_example(grease=True))
    assert greased is not None and greased.ja4("t") == hello.ja4("t")
    assert greased.ja3() == hello.ja3()


def test_ja3_string_layout() -> None:
    hello = tlshello.parse_client_hello(spec_example(grease=True))
    assert hello is not None
    version, ciphers, exts, groups, formats = hello.ja3_string().split(",")
    assert version == "771"
    assert ciphers.split("-")[:3] == ["4865", "4866", "4867"] and "6682" not in ciphers  # 0x1a1a dropped
    assert exts.split("-")[:2] == ["27", "0"] and "10794" not in exts  # 0x2a2a dropped
    assert groups == "29-23-24" and formats == "0"
    assert hello.ja3() == hashlib.md5(hello.ja3_string().encode()).hexdigest()


def test_ja4_edge_cases() -> None:
    # No ALPN, no SNI, TLS 1.2 legacy version, no signature algorithms: "i", "00" and a hash without "_".
    bare = tlshello.parse_client_hello(hello_body([0xC02F], [(0x000A, _u16s([0x0017]))]))
    assert bare is not None
    ext_hash = hashlib.sha256(b"000a").hexdigest()[:12]
    assert bare.ja4("t") == f"t12i010100_{hashlib.sha256(b'c02f').hexdigest()[:12]}_{ext_hash}"
    # Only SNI/ALPN extensions: the extension hash is twelve zeros; a non-alphanumeric ALPN uses hex.
    odd = tlshello.parse_client_hello(hello_body([0x1301], [(0x0010, struct.pack("!H", 3) + b"\x02\xab\xcd")]))
    assert odd is not None and odd.ja4("q").endswith("_000000000000") and odd.ja4("q")[8:10] == "ad"


def test_remembered_fingerprints_equal_computed_ones() -> None:
    """client_metadata serves JA3/JA4 from a memo keyed by the fields they hash: a hello that differs
    only in what the fingerprints ignore (SNI, later ALPN entries) reuses them, any other difference
    (kind, a cipher, a signature algorithm, the first ALPN) gets its own, and each equals the direct
    computation; hellos listing too many values are computed but not remembered."""
    tlshello._fingerprints.clear()
    first = tlshello.parse_client_hello(spec_example())
    other_sni = tlshello.parse_client_hello(spec_example().replace(b"example.com", b"example.org"))
    assert first is not None and other_sni is not None
    meta = tlshello.client_metadata(first, "t")
    assert (meta["ja3"], meta["ja4"]) == (first.ja3(), first.ja4("t")) and len(tlshello._fingerprints) == 1
    again = tlshello.client_metadata(other_sni, "t")
    assert again["sni"] == "example.org" and (again["ja3"], again["ja4"]) == (meta["ja3"], meta["ja4"])
    assert len(tlshello._fingerprints) == 1
    variants = [
        (first, "q"),
        (tlshello.parse_client_hello(hello_body([0x1301, 0x1302], [(0x0010, b"\x00\x03\x02h2")])), "t"),
        (tlshello.parse_client_hello(hello_body([0x1301, 0x1303], [(0x0010, b"\x00\x03\x02h2")])), "t"),
        (tlshello.parse_client_hello(hello_body([0x1301, 0x1303], [(0x0010, b"\x00\x03\x02h3")])), "t"),
        (tlshello.parse_client_hello(hello_body([0x1301], [(0x000D, _u16s([0x0403]))])), "t"),
        (tlshello.parse_client_hello(hello_body([0x1301], [(0x000D, _u16s([0x0804]))])), "t"),
    ]
    for hello, kind in variants:
        assert hello is not None
        meta = tlshello.client_metadata(hello, kind)
        assert (meta["ja3"], meta["ja4"]) == (hello.ja3(), hello.ja4(kind))
    assert len(tlshello._fingerprints) == 1 + len(variants)
    huge = tlshello.parse_client_hello(hello_body(list(range(0x0100, 0x0101 + tlshello.MAX_FINGERPRINT_VALUES)), []))
    assert huge is not None
    assert tlshello.client_metadata(huge, "t")["ja4"] == huge.ja4("t")
    assert len(tlshello._fingerprints) == 1 + len(variants)


@pytest.mark.parametrize("body", [
    b"", bytes(37), hello_body([0x1301], [])[:-3],
    hello_body([0x1301], [(0x0000, b"\x00\x05")]),           # SNI list cut short
    hello_body([0x1301], [(0x002B, b"\x03\x03\x04")]),       # odd supported_versions length
    b"\x03\x03" + bytes(32) + b"\x21" + bytes(40),            # session ID longer than 32
])
def test_malformed_hellos_are_rejected(body: bytes) -> None:
    assert tlshello.parse_client_hello(body) is None


def test_openssl_client_hello_is_parsed(tls_handshake) -> None:
    hello_record, _ = tls_handshake(sni="www.dpicore.test", alpn=["h2", "http/1.1"])
    hello = tlshello.parse_client_hello(_body(hello_record))
    assert hello is not None
    assert hello.sni == "www.dpicore.test" and hello.alpn_names == ["h2", "http/1.1"]
    assert 0x0304 in hello.supported_versions and hello.ja4("t").startswith("t13d")


# --- TLS over TCP --------------------------------------------------------------

def test_client_hello_split_over_three_segments(tls_handshake) -> None:
    hello, _ = tls_handshake(sni="split.dpicore.test")
    cuts = [0, 3, 100, len(hello)]
    segments = [(0, hello[a:b]) for a, b in zip(cuts, cuts[1:])]
    with Classifier(layers=["heuristics"]) as clf:
        flow = clf.classify_flow(packets(segments, TCP, server_port=5555))
    assert flow.verdict is not None and flow.verdict.protocol == "TLS"
    assert flow.verdict.metadata["sni"] == "split.dpicore.test"


def test_server_hello_gives_the_negotiated_version(tls_handshake) -> None:
    hello, flight = tls_handshake(server_max=ssl.TLSVersion.TLSv1_2)
    with Classifier(layers=["heuristics"]) as clf:
        flow = clf.classify_flow(packets([(0, hello), (1, flight)], TCP, server_port=4443))
        assert flow.verdict.protocol == "TLS" and flow.verdict.metadata["version"] == "TLSv1.2"
        # A flow where only the server speaks (the client's packets were not captured).
        only_server = clf.classify_payload(flight, "tcp", from_server=True)
    assert only_server.protocol == "TLS" and only_server.metadata["version"] == "TLSv1.2"


def test_sslv2_compatible_client_hello() -> None:
    # RFC 6101 appendix E: msg type 1, version 3.1, 3 cipher specs, no session ID, 16-byte challenge.
    body = b"\x01\x03\x01" + struct.pack("!HHH", 9, 0, 16) + bytes.fromhex("00000a" "010080" "000004") + bytes(16)
    hello = bytes([0x80 | len(body) >> 8, len(body) & 0xFF]) + body
    verdict = classify([(0, hello)], TCP)
    assert verdict is not None and verdict.protocol == "TLS" and verdict.metadata["hello"] == "SSLv2"


def test_mid_stream_records_and_non_tls() -> None:
    records = b"\x17\x03\x03\x00\x20" + bytes(32) + b"\x17\x03\x03\x00\x10" + bytes(16)
    verdict = classify([(0, records)], TCP)
    assert verdict is not None and verdict.protocol == "TLS" and verdict.confidence < 0.95
    # Record type and version right, but a handshake length that cannot hold a hello.
    assert classify([(0, b"\x16\x03\x01\x00\x08\x01\x00\x00\x04abcd")], TCP, [tls.HEURISTICS[0]]) is None
    assert classify([(0, b"\x16\x07\x01\x00\x08" + bytes(8))], TCP, [tls.HEURISTICS[0]]) is None


# --- DTLS ----------------------------------------------------------------------

def _dtls_record(tls_body: bytes, cookie: bytes = b"") -> bytes:
    """A DTLS 1.2 ClientHello record built from a TLS ClientHello body (cookie field inserted)."""
    sid_end = 35 + tls_body[34]
    body = b"\xfe\xfd" + tls_body[2:sid_end] + bytes([len(cookie)]) + cookie + tls_body[sid_end:]
    hs = b"\x01" + len(body).to_bytes(3, "big") + b"\x00\x00" + bytes(3) + len(body).to_bytes(3, "big") + body
    return b"\x16\xfe\xff" + bytes(8) + struct.pack("!H", len(hs)) + hs


def test_dtls_client_hello_shares_the_parser(tls_handshake) -> None:
    hello, _ = tls_handshake(sni="dtls.dpicore.test")
    verdict = classify([(0, _dtls_record(_body(hello), cookie=b"\x11" * 20))], UDP)
    assert verdict is not None and verdict.protocol == "DTLS"
    assert verdict.metadata["sni"] == "dtls.dpicore.test" and verdict.metadata["ja4"].startswith("dd")
    # One byte more than the record announces: not DTLS.
    assert classify([(0, _dtls_record(_body(hello)) + b"\x00")], UDP, dtls.HEURISTICS) is None


# --- QUIC ----------------------------------------------------------------------

@pytest.mark.parametrize("name,version", [("rfc9001_a2_client_initial.hex", "v1"),
                                          ("rfc9369_a2_client_initial.hex", "v2")])
def test_rfc_initial_packets_decrypt(name: str, version: str) -> None:
    packet = _hex_file(name)
    with Classifier(layers=["heuristics"]) as clf:
        verdict = clf.classify_payload(packet, "udp", dst_port=9999)
        assert verdict.protocol == "QUIC" and verdict.confidence >= 0.95
        assert verdict.metadata["version"] == version
        assert verdict.metadata["sni"] == "example.com" and verdict.metadata["alpn"] == ["alpn"]
        assert verdict.metadata["ja4"].startswith("q13d")
        # A flipped ciphertext bit fails the AEAD tag: still a QUIC long header, but no ClientHello.
        tampered = bytearray(packet)
        tampered[700] ^= 0x01
        weaker = clf.classify_payload(bytes(tampered), "udp")
    assert weaker.protocol == "QUIC" and "sni" not in weaker.metadata and weaker.confidence < 0.95


def test_quic_version_negotiation_echoing_the_client() -> None:
    dcid, scid = bytes(range(8)), bytes(range(8, 16))
    client = b"\xc0" + b"\x1a\x2a\x3a\x4a" + bytes([8]) + dcid + bytes([8]) + scid + bytes(1180)
    reply = b"\x80" + bytes(4) + bytes([8]) + scid + bytes([8]) + dcid + struct.pack("!II", 1, 0x6B3343CF)
    alone = classify([(0, client)], UDP)
    assert alone is not None and alone.protocol == "QUIC" and alone.confidence < 0.8  # a guess
    answered = classify([(0, client), (1, reply)], UDP)
    assert answered is not None and answered.confidence >= 0.95 and answered.metadata["offered"] == "v1, v2"


# --- real server names -------------------------------------------------------

@pytest.mark.corpus
def test_sni_agrees_with_ndpi_host(corpus: Path) -> None:
    """Wherever nDPI read a host name from a TLS or QUIC hello, ours is the same name."""
    compared, different = 0, []
    with Classifier(layers=["heuristics"]) as clf:
        for path, labels in captures(corpus):
            flows = list(clf.classify_pcap(path))
            pairs, _, _ = match(((flow_key(f), f) for f in flows), labels)
            for flow, label in pairs:
                sni = flow.verdict.metadata.get("sni") if flow.verdict else None
                if label.host and sni and label.protocol in ("TLS", "QUIC"):
                    compared += 1
                    if sni != label.host:
                        different.append(f"{path.name}: ours {sni!r}, nDPI {label.host!r}")
    assert compared >= 200, compared
    assert not different, different


def test_crypto_stream_assembles_from_chunks_in_any_order() -> None:
    """CRYPTO frames come out of order, overlapping, or one byte each (last byte first, 2,000 of them
    here: once a pass over every chunk per byte, a hostile Initial took minutes); the stream is the
    contiguous part from offset 0."""
    assemble = quicinitial.assemble
    stream = bytes(range(256)) * 8
    assert assemble({o: stream[o:o + 1] for o in reversed(range(len(stream)))}) == stream
    assert assemble({0: stream[:10], 5: stream[5:30], 30: stream[30:40], 12: stream[12:20]}) == stream[:40]
    assert assemble({0: stream[:10], 11: stream[11:20]}) == stream[:10], "a gap ends the stream"
    assert assemble({5: stream[5:9]}) == b"" and assemble({}) == b""
