"""HTTP/2, WebSocket, SSH, STUN, RTP, RTCP, WireGuard, OpenVPN, IPsec, BitTorrent and SOCKS: each named
from the structure its specification fixes, and near misses left alone."""

from __future__ import annotations

import struct

import pytest
from dpicore import Classifier
from dpicore.model import TCP, UDP

from dpi_heuristics.protocols import all_heuristics
from dpi_heuristics.testing import classify, stun_message


def only(name: str) -> list:
    return [h for h in all_heuristics() if h.name == name]


def named(payloads, transport=TCP, heuristics=None) -> tuple[str, float] | None:
    verdict = classify(payloads, transport, heuristics)
    return None if verdict is None else (verdict.protocol, verdict.confidence)


# --- HTTP/2 and WebSocket -------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS = b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x64"


def test_http2_prior_knowledge_preface() -> None:
    assert named([(0, PREFACE + SETTINGS)]) == ("HTTP2", 0.95)
    assert named([(0, PREFACE[:10]), (0, PREFACE[10:] + SETTINGS)]) == ("HTTP2", 0.95)
    assert named([(0, b"PRI * HTTP/1.1\r\n\r\n")], heuristics=only("HTTP2")) is None


def test_h2c_and_websocket_upgrades_are_named_by_http() -> None:
    h2c = (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
           b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n")
    ws = (b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert named([(0, h2c)])[0] == "HTTP2"
    assert named([(0, ws)])[0] == "WebSocket"
    answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    assert named([(1, answer)])[0] == "WebSocket"
    h2c_answer = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
    assert named([(1, h2c_answer)])[0] == "HTTP2"


def test_websocket_frames_mid_stream() -> None:
    server = b"\x81\x05hello"
    client = b"\x81\x85" + b"\x01\x02\x03\x04" + bytes(b ^ k for b, k in zip(b"hello", b"\x01\x02\x03\x04\x01"))
    assert named([(0, server), (1, client)]) == ("WebSocket", 0.85)
    assert named([(0, server)])[0] == "WebSocket"  # one frame: a guess
    # A length that does not fill the segment, or a masked frame from both sides: no.
    assert named([(0, b"\x81\x06hello")], heuristics=only("WebSocket")) is None
    assert named([(0, client), (1, client)], heuristics=only("WebSocket")) is None


# --- SSH -------------------------------------------------------------------------

def test_ssh_banner_either_side_and_split() -> None:
    with Classifier(layers=["heuristics"]) as clf:
        server = clf.classify_payload(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", from_server=True)
        client = clf.classify_payload(b"SSH-2.0-PuTTY_Release_0.78\r\n", dst_port=80)
    assert server.protocol == "SSH" and server.metadata["software"] == "OpenSSH_9.2p1 Debian-2+deb12u3"
    assert client.protocol == "SSH" and client.metadata["client_software"] == "PuTTY_Release_0.78"
    both = classify([(1, b"SSH-2.0-dropbear_2022.83\r\n"), (0, b"SSH-2.0-OpenSSH_8.9\r\n")])
    assert both.metadata["software"] == "dropbear_2022.83"
    assert named([(0, b"SSH-2.0-Open"), (0, b"SSH_8.9\r\n")]) == ("SSH", 0.95)
    assert named([(0, b"SSH-3.0-x\r\n")], heuristics=only("SSH")) is None


# --- STUN ------------------------------------------------------------------------

def test_stun_and_turn() -> None:
    software = struct.pack("!HH", 0x8022, 5) + b"dpi\x00\x00" + b"\x00\x00\x00"
    assert named([(0, stun_message(0x0001, software))], UDP) == ("STUN", 0.95)
    allocate = classify([(0, stun_message(0x0003, struct.pack("!HHI", 0x0019, 4, 17 << 24)))], UDP)
    assert allocate.metadata == {"method": "Allocate", "class": "request", "turn": "yes"}
    framed = stun_message(0x0101, b"")
    assert named([(0, struct.pack("!H", len(framed)) + framed)], TCP) == ("STUN", 0.95)
    # Classic RFC 3489 binding (no cookie): known type and attributes that tile the body.
    classic = stun_message(0x0001, struct.pack("!HH", 0x0003, 4) + bytes(4), cookie=0x01020304)
    assert named([(0, classic)], UDP) == ("STUN", 0.85)
    assert named([(0, stun_message(0x0001, software)[:-1])], UDP, only("STUN")) is None
    assert named([(0, stun_message(0x0123, b"", cookie=0x01020304))], UDP, only("STUN")) is None


# --- RTP and RTCP ------------------------------------------------------------------

def rtp(seq: int, ts: int, ssrc: int = 0x11223344, pt: int = 0) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq, ts, ssrc) + bytes(160)


def test_rtp_needs_a_second_packet_of_the_stream() -> None:
    assert named([(0, rtp(100, 8000)), (0, rtp(101, 8160))], UDP) == ("RTP", 0.85)
    assert named([(0, rtp(100, 8000))], UDP) == ("RTP", 0.7)  # alone: a guess
    unrelated = [(0, rtp(100, 8000, 1)), (0, rtp(9, 5, 2)), (0, rtp(30000, 7, 3))]
    assert named(unrelated, UDP, only("RTP")) is None
    assert named([(0, rtp(100, 8000, pt=72)), (0, rtp(101, 8160, pt=72))], UDP, only("RTP")) is None


def test_rtcp_compound_packets() -> None:
    sr = struct.pack("!BBH", 0x80, 200, 6) + bytes(24)
    sdes = struct.pack("!BBH", 0x81, 202, 2) + struct.pack("!I", 0x11223344) + b"\x01\x02ab"
    assert named([(0, sr + sdes)], UDP) == ("RTCP", 0.85)
    assert named([(0, sr + sdes + b"\x00")], UDP, only("RTCP")) is None  # does not tile
    assert named([(0, sdes), (0, sdes)], UDP) == ("RTCP", 0.85)


# --- VPNs ------------------------------------------------------------------------

def test_wireguard_handshake_sizes_and_transport_data() -> None:
    assert named([(0, b"\x01\x00\x00\x00" + bytes(144))], UDP) == ("WireGuard", 0.95)
    assert named([(0, b"\x01\x00\x00\x00" + bytes(145))], UDP, only("WireGuard")) is None
    data = [(0, b"\x04\x00\x00\x00" + struct.pack("<IQ", 7, n) + bytes(32)) for n in (5, 6)]
    assert named(data, UDP) == ("WireGuard", 0.85)


def test_openvpn_hard_reset_and_server_echo() -> None:
    session = bytes.fromhex("39fded2daa10a437")
    reset = b"\x38" + session + b"\x00" + bytes(4)
    assert named([(0, reset)], UDP) == ("OpenVPN", 0.85)
    assert named([(0, struct.pack("!H", len(reset)) + reset)], TCP) == ("OpenVPN", 0.95)
    tls_auth = b"\x38" + session + bytes(range(20)) + b"\x00\x00\x00\x01" + b"\x63\xcf\x4f\xf5" + bytes(5)
    assert named([(0, tls_auth)], UDP) == ("OpenVPN", 0.85)
    # tls-crypt: only packet ID and time are clear; the server's echo is what makes it sure.
    crypt = b"\x38" + session + b"\x00\x00\x00\x01\x63\xcf\x4f\xf5" + bytes(range(40))
    server = b"\x40" + bytes(8) + b"\x01" + bytes(4) + session + bytes(4)
    assert named([(0, crypt)], UDP) == ("OpenVPN", 0.7)
    assert named([(0, crypt), (1, server)], UDP) == ("OpenVPN", 0.95)
    assert named([(0, b"\x38" + session + bytes(40))], UDP, only("OpenVPN")) is None


def ike(version: int = 0x20, exchange: int = 34, next_payload: int = 33, flags: int = 0x08,
        body: bytes = bytes(40)) -> bytes:
    return (bytes.fromhex("b64ef32131a48952") + bytes(8) + bytes([next_payload, version, exchange, flags])
            + struct.pack("!II", 0, 28 + len(body)) + body)


def test_ipsec_ike_nat_t_esp_and_ah() -> None:
    assert named([(0, ike())], UDP) == ("IPsec", 0.95)
    assert named([(0, ike(version=0x10, exchange=2, next_payload=1, flags=0))], UDP) == ("IPsec", 0.95)
    assert named([(0, b"\x00\x00\x00\x00" + ike())], UDP) == ("IPsec", 0.95)
    assert named([(0, ike() + b"\x00")], UDP, only("IPsec")) is None  # length must match
    esp = [(0, struct.pack("!II", 0xC0FFEE01, n) + bytes(40)) for n in (7, 8)]
    assert named(esp, UDP) == ("IPsec", 0.85)
    assert named(esp[:1], UDP, only("IPsec")) is None  # one ESP-looking datagram proves nothing
    # The same "SPI" from both sides is a protocol's constant header, not two one-way SAs.
    both_ways = [esp[0], (1, esp[0][1]), (0, esp[1][1])]
    assert named(both_ways, UDP, only("IPsec")) is None
    assert named([(0, struct.pack("!II", 0xC0FFEE01, 1) + bytes(16))], 50) == ("IPsec", 0.95)
    assert named([(0, b"\x01\x04\x00\x00" + struct.pack("!II", 0x604816F6, 1) + bytes(12))], 51)[0] == "IPsec"


# --- BitTorrent and SOCKS -----------------------------------------------------------

def test_bittorrent_handshake_dht_tracker_and_lsd() -> None:
    handshake = b"\x13BitTorrent protocol" + bytes(8) + bytes(range(20)) + b"-qB4250-" + bytes(12)
    verdict = classify([(0, handshake)])
    assert verdict.protocol == "BitTorrent" and verdict.metadata["client"] == "-qB4250-"
    assert named([(0, handshake[:10]), (0, handshake[10:])]) == ("BitTorrent", 0.95)
    ping = b"d1:ad2:id20:" + bytes(20) + b"e1:q4:ping1:t2:aa1:y1:qe"
    assert classify([(0, ping)], UDP).metadata["query"] == "ping"
    assert named([(0, ping[:-1])], UDP, only("BitTorrent")) is None
    assert named([(0, struct.pack("!QII", 0x41727101980, 0, 77))], UDP) == ("BitTorrent", 0.95)
    assert named([(0, b"BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\n\r\n")], UDP)[0] == "BitTorrent"
    announce = b"GET /announce?info_hash=%aa7i&peer_id=-TR3000-&port=51413 HTTP/1.1\r\nHost: t\r\n\r\n"
    assert named([(0, announce)])[0] == "BitTorrent"


def test_utp_syn_and_state() -> None:
    syn = struct.pack("!BBHIIIHH", 0x41, 0, 1000, 1, 0, 1 << 20, 500, 0)
    state = struct.pack("!BBHIIIHH", 0x21, 0, 1000, 2, 1, 1 << 20, 900, 500)
    assert named([(0, syn), (1, state)], UDP) == ("BitTorrent", 0.85)
    assert named([(0, syn), (1, state[:-2] + b"\x00\x01")], UDP, only("BitTorrent")) is None


@pytest.mark.parametrize("payloads,expected", [
    ([(0, b"\x04\x01\x00\x50\x5d\xb8\xd8\x77\x00")], ("SOCKS", 0.85)),
    ([(0, b"\x04\x01\x00\x50\x00\x00\x00\x01\x00www.example.com\x00")], ("SOCKS", 0.85)),
    ([(0, b"\x05\x01\x00")], ("SOCKS", 0.7)),
    ([(0, b"\x05\x02\x00\x01"), (1, b"\x05\x00")], ("SOCKS", 0.95)),
    ([(0, b"\x05\x01\x00\x05\x01\x00\x03\x0ewww.google.com\x00\x50")], ("SOCKS", 0.95)),
    ([(0, b"\x05\x01\x00"), (0, b"\x05\x01\x00\x01\x5d\xb8\xd8\x77\x00\x50")], ("SOCKS", 0.95)),
])
def test_socks(payloads, expected) -> None:
    assert named(payloads) == expected


@pytest.mark.parametrize("payload", [b"\x04\x03\x00\x50\x01\x02\x03\x04\x00", b"\x04\x01\x00\x50\x01\x02\x03\x04",
                                     b"\x05\x01\x00\x00", b"\x05\x02\x00\x00", b"\x05\x00"])
def test_not_socks(payload: bytes) -> None:
    assert named([(0, payload)], heuristics=only("SOCKS")) is None
