"""Batch B heuristics (mail, file transfer, databases, messaging, directory, media, routing, industrial):
each named from real payloads, its metadata checked, near misses and other protocols' payloads refused.

Where the payloads come from:

* ``tests/captures/realclients/*.pcap``: the project's recordings of real
  clients and servers on loopback (curl, redis-cli, psql, mariadb,
  mosquitto_pub, memcached clients, telnet, dovecot, pyftpdlib, aiosmtpd);
  read at run time;
* literal bytes below, each captured here from a real program talking to a
  loopback listener (the program and version are named next to them);
* hand-built variants of those, for the near misses (one field broken at a
  time) and for formats no real program here speaks (BGP OPEN/KEEPALIVE,
  the AMQP protocol header), built field by field from the RFC.

The nDPI corpus is read in ``test_batch_b_corpus.py`` through the corpus
fixture.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from dpicore import Classifier
from dpicore.decode import CaptureSource
from dpicore.model import TCP, UDP, Flow, FlowKey, parse_ip

from dpi_heuristics.base import PORT_TIE
from dpi_heuristics.dispatch import Dispatcher
from dpi_heuristics.protocols import all_heuristics
from dpi_heuristics.protocols.ftp import ANNOUNCES, SHARED_KEY, announcements, may_announce
from dpi_heuristics.textproto import complete_lines
from dpi_heuristics.testing import classify, make_flow, run_detector

ROOT = Path(__file__).resolve().parents[3]
REALCLIENTS = ROOT / "tests" / "captures" / "realclients"

# --- real bytes captured from programs on loopback (see the module docstring) ----------------------

#: rsync 3.5.0 (protocol 32): the daemon's greeting, and the client's answer to it.
RSYNC_SERVER = b"@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n"
RSYNC_CLIENT = b"@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n"
#: git 2.39.5 ``git ls-remote git://127.0.0.1:19419/repo.git`` (protocol v0, then v2), and git daemon's answer.
GIT_V0 = b"0033git-upload-pack /repo.git\x00host=127.0.0.1:19419\x00"
GIT_V2 = b"003egit-upload-pack /repo.git\x00host=127.0.0.1:19419\x00\x00version=2\x00"
GIT_ADVERT = (b"0103286747bafc1610d9cd23fa49779b0148888b1c17 HEAD\x00multi_ack thin-pack side-band side-band-64k "
              b"ofs-delta shallow deepen-since deepen-not deepen-relative no-progress include-tag multi_ack_detailed "
              b"symref=HEAD:refs/heads/main object-format=sha1 agent=git/2.39.5\n")
#: curl 7.88.1 (OpenLDAP 2.5.13) ``curl ldap://127.0.0.1:13890/dc=dpicore,dc=test?cn?sub?(objectClass=person)``.
LDAP_BIND = b"0\x0c\x02\x01\x01`\x07\x02\x01\x03\x04\x00\x80\x00"
LDAP_SEARCH = (b"0E\x02\x01\x02c@\x04\x12dc=dpicore,dc=test\n\x01\x02\n\x01\x00\x02\x01\x00\x02\x01\x00\x01\x01\x00"
               b"\xa3\x15\x04\x0bobjectClass\x04\x06person0\x04\x04\x02cn")
LDAP_BIND_OK = bytes.fromhex("300c02010161070a010004000400")
#: curl 7.88.1 ``curl rtsp://127.0.0.1:15540/stream`` and ``curl mqtt://127.0.0.1:18830/dpicore/topic``.
RTSP_OPTIONS = b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: curl/7.88.1\r\n\r\n"
MQTT_CURL = b"\x10\x18\x00\x04MQTT\x04\x02\x00<\x00\x0ccurl7df57d4f"
#: pymongo 4.20.1 (server API 1): the OP_MSG ``hello`` a driver opens with.
MONGO_HELLO = bytes.fromhex(
    "4f010000c6237b3200000000dd07000000000000003a0100001068656c6c6f0001000000026261636b70726573737572650002"
    "000000320003636c69656e7400ed00000003647269766572002e000000026e616d65000a00000050794d6f6e676f7c630002"
    "76657273696f6e0008000000342e32302e317c0000036f73005b000000027479706500060000004c696e757800026e616d65"
    "00060000004c696e7578000261726368697465637475726500070000007838365f3634000276657273696f6e00100000003"
    "62e31382e34342d66632d76373832000002706c6174666f726d001700000043507974686f6e20332e31312e372e66696e61"
    "6c2e300003656e76002900000003636f6e7461696e657200190000000272756e74696d650007000000646f636b657200000000"
    "0261706956657273696f6e0002000000310002246462000600000061646d696e0000")


# --- helpers -------------------------------------------------------------------------------------------

def only(*names: str) -> list:
    return [h for h in all_heuristics() if h.name in names]


def named(payloads, transport: int = TCP, names: tuple[str, ...] = (), flow: Flow | None = None):
    """(protocol, confidence) the layer gives a flow carrying ``payloads`` (None: Unknown)."""
    verdict = classify(payloads, transport, only(*names) if names else None, flow)
    return None if verdict is None else (verdict.protocol, verdict.confidence)


def realclient_flows(name: str) -> list[list[tuple[int, bytes]]]:
    """The payloads (with directions) of every flow of one real-client capture, in order."""
    flows: dict[FlowKey, tuple[tuple[bytes, int], list[tuple[int, bytes]]]] = {}
    for p in CaptureSource(REALCLIENTS / f"{name}.pcap"):
        client, payloads = flows.setdefault(FlowKey.of(p), ((p.src, p.sport), []))
        if p.payload:
            payloads.append((0 if (p.src, p.sport) == client else 1, bytes(p.payload)))
    return [payloads for _, payloads in flows.values() if payloads]


def first_from(name: str, direction: int, start: bytes = b"") -> bytes:
    """The first payload of ``direction`` (starting with ``start``) in a real-client capture."""
    for flow in realclient_flows(name):
        for d, data in flow:
            if d == direction and data.startswith(start):
                return data
    raise AssertionError(f"{name}: no payload from side {direction} starting with {start!r}")


def realclient_verdicts(name: str) -> list[Flow]:
    with Classifier(layers=["heuristics"]) as clf:
        return [f for f in clf.classify_pcap(REALCLIENTS / f"{name}.pcap") if f.verdict is not None]


# --- the real-client captures, through the whole pipeline, with their metadata ----------------------

def test_ftp_control_and_passive_data_connections() -> None:
    flows = realclient_verdicts("ftp_pasv")
    control = [f for f in flows if f.verdict.protocol == "FTP"]
    data = [f for f in flows if f.verdict.protocol == "FTP_DATA"]
    assert len(control) == 3 and len(data) == 3
    assert {f.verdict.metadata["banner"] for f in control} == {"dpicore capture FTP server ready."}
    assert {f.verdict.metadata["mode"] for f in data} == {"passive"}
    assert all(30100 <= f.server_port <= 30109 for f in data)


@pytest.mark.parametrize("capture, protocol, key, value", [
    ("smtp_curl", "SMTP", "banner", "localhost Python SMTP 1.4.6"),
    ("mysql_mariadb", "MySQL", "server_version", "5.5.5-10.11.19-MariaDB-0+deb12u1"),
    ("postgresql_psql", "PostgreSQL", "user", "dpi"),
    ("mqtt_mosquitto", "MQTT", "version", "3.1.1"),
    ("memcached_binary", "Memcached", "format", "binary"),
])
def test_real_clients_metadata(capture: str, protocol: str, key: str, value: str) -> None:
    flows = realclient_verdicts(capture)
    assert flows and {f.verdict.protocol for f in flows} == {protocol}
    assert {f.verdict.metadata.get(key) for f in flows} == {value}


def test_mail_banners_and_real_client_commands() -> None:
    flows = {f.verdict.protocol: f for f in realclient_verdicts("imap_pop3_dovecot")}
    assert flows["POP3"].verdict.metadata["banner"] == "Dovecot (Debian) ready."
    assert flows["IMAP"].verdict.metadata["banner"].startswith("OK [CAPABILITY IMAP4rev1 ")
    assert {f.verdict.metadata["command"] for f in realclient_verdicts("redis_cli")} >= {"PING", "SET", "GET"}
    text = realclient_verdicts("memcached_text")
    assert {f.verdict.metadata["command"] for f in text} == {"set", "get"}
    assert {f.verdict.protocol for f in realclient_verdicts("telnet_2323")} == {"Telnet"}


# --- the first payload alone (honeypot API), server greetings and client openings --------------------

SERVER_FIRST = [
    ("SMTP", lambda: first_from("smtp_curl", 1)),
    ("FTP", lambda: first_from("ftp_pasv", 1)),
    ("POP3", lambda: first_from("imap_pop3_dovecot", 1, b"+OK")),
    ("IMAP", lambda: first_from("imap_pop3_dovecot", 1, b"* OK")),
    ("MySQL", lambda: first_from("mysql_mariadb", 1)),
    ("Telnet", lambda: first_from("telnet_2323", 1)),
    ("Rsync", lambda: RSYNC_SERVER),
    ("Git", lambda: GIT_ADVERT),
]
CLIENT_FIRST = [
    ("Redis", lambda: first_from("redis_cli", 0)),
    ("PostgreSQL", lambda: first_from("postgresql_psql", 0)),
    ("MQTT", lambda: MQTT_CURL),
    ("Memcached", lambda: first_from("memcached_text", 0, b"set")),
    ("Memcached", lambda: first_from("memcached_binary", 0)),
    ("Git", lambda: GIT_V0),
    ("Git", lambda: GIT_V2),
    ("LDAP", lambda: LDAP_BIND),
    ("LDAP", lambda: LDAP_SEARCH),
    ("RTSP", lambda: RTSP_OPTIONS),
    ("MongoDB", lambda: MONGO_HELLO),
    ("Rsync", lambda: RSYNC_CLIENT),
    ("Telnet", lambda: first_from("telnet_2323", 0)),
]


@pytest.mark.parametrize("protocol, payload", SERVER_FIRST, ids=[p for p, _ in SERVER_FIRST])
def test_server_greeting_alone_on_a_misleading_port(protocol: str, payload) -> None:
    with Classifier(layers=["heuristics"]) as clf:
        verdict = clf.classify_payload(payload(), from_server=True, dst_port=80)
    assert verdict.protocol == protocol and verdict.confidence >= 0.8
    assert "port_hint" not in verdict.metadata


@pytest.mark.parametrize("protocol, payload", CLIENT_FIRST, ids=[p for p, _ in CLIENT_FIRST])
def test_client_first_payload_alone_on_a_misleading_port(protocol: str, payload) -> None:
    with Classifier(layers=["heuristics"]) as clf:
        verdict = clf.classify_payload(payload(), dst_port=443)
    assert verdict.protocol == protocol
    assert verdict.confidence >= (0.7 if protocol in ("Memcached", "Telnet") else 0.8)


def test_greeting_metadata() -> None:
    with Classifier(layers=["heuristics"]) as clf:
        mysql = clf.classify_payload(first_from("mysql_mariadb", 1), from_server=True)
        git = clf.classify_payload(GIT_V2)
        ldap = clf.classify_payload(LDAP_SEARCH)
        mongo = clf.classify_payload(MONGO_HELLO)
        rsync = clf.classify_payload(RSYNC_SERVER, from_server=True)
    assert mysql.app == "MariaDB"
    assert git.metadata == {"service": "git-upload-pack", "path": "/repo.git", "host": "127.0.0.1:19419"}
    assert ldap.metadata["operation"] == "searchRequest" and ldap.metadata["base"] == "dc=dpicore,dc=test"
    assert mongo.metadata == {"opcode": "OP_MSG", "command": "hello"}
    assert rsync.metadata["version"] == "32.0"


# --- greetings SMTP and FTP share -------------------------------------------------------------------

def test_a_bare_220_greeting_waits_for_the_client() -> None:
    greeting = (1, b"220 gateway.example ready\r\n")
    assert named([greeting, (0, b"EHLO client.example\r\n")]) == ("SMTP", 0.95)
    assert named([greeting, (0, b"USER anonymous\r\n")]) == ("FTP", 0.95)
    assert named([greeting, (0, b"GET / HTTP/1.1\r\n\r\n")], names=("SMTP", "FTP")) is None
    # Alone, the greeting names nothing, unless a well-known port breaks the tie (and says so).
    assert named([greeting]) is None
    smtp = classify([greeting], flow=make_flow(server_port=25))
    ftp = classify([greeting], flow=make_flow(server_port=21))
    assert (smtp.protocol, smtp.confidence, smtp.metadata["port_hint"]) == ("SMTP", PORT_TIE, True)
    assert (ftp.protocol, ftp.confidence, ftp.metadata["port_hint"]) == ("FTP", PORT_TIE, True)


def test_multi_line_greetings_and_split_lines() -> None:
    assert named([(1, b"220-mail.example\r\n"), (1, b"220 ESMTP Exim 4.96\r\n")]) == ("SMTP", 0.95)
    assert named([(1, b"220-Welcome\r\n220-FileZilla Server 1.7\r\n220 ok\r\n")]) == ("FTP", 0.95)
    assert named([(1, b"220 mx.example ES"), (1, b"MTP Postfix\r\n")]) == ("SMTP", 0.95)
    # An FTP greeting is never SMTP and the other way round.
    assert named([(1, b"220 (vsFTPd 3.0.3)\r\n")], names=("SMTP",)) is None
    assert named([(1, b"220 mx.google.com ESMTP x - gsmtp\r\n")], names=("FTP",)) is None


def test_pop3_and_imap_client_commands() -> None:
    assert named([(0, b"CAPA\r\n")]) == ("POP3", 0.85)
    assert named([(0, b"USER alice\r\n"), (1, b"+OK\r\n")]) == ("POP3", 0.85)
    assert named([(0, b"USER alice\r\n"), (1, b"331 Password required\r\n")]) == ("FTP", 0.85)
    assert named([(0, b"A001 CAPABILITY\r\n")]) == ("IMAP", 0.85)
    assert named([(0, b"a2 SELECT INBOX\r\n"), (1, b"* 3 EXISTS\r\n")]) == ("IMAP", 0.95)
    # A Redis "+OK" answers a command: it is not a POP3 greeting.
    assert named([(0, b"SELECT 1\r\n"), (1, b"+OK\r\n")], names=("POP3",)) is None
    assert named([(0, b"MAIL FROM:<a@b>\r\n")], names=("IMAP",)) is None
    assert named([(0, b"USER LOGIN\r\n")], names=("IMAP",)) is None


# --- data connections announced on the control connection ------------------------------------------

@pytest.mark.parametrize("line, from_client, expected", [
    (b"227 Entering Passive Mode (90,130,70,73,100,85).", False, ("passive", bytes([90, 130, 70, 73]), 25685)),
    (b"227 =10,0,0,5,195,80", False, ("passive", bytes([10, 0, 0, 5]), 50000)),
    (b"229 Entering Extended Passive Mode (|||30105|)", False, ("passive", None, 30105)),
    (b"PORT 127,0,0,1,118,92", True, ("active", bytes([127, 0, 0, 1]), 30300)),
    (b"EPRT |1|127.0.0.1|30300|", True, ("active", bytes([127, 0, 0, 1]), 30300)),
    (b"EPRT |2|2001:db8::7|4242|", True, ("active", parse_ip("2001:db8::7"), 4242)),
    (b"227 Entering Passive Mode (300,1,1,1,1,1).", False, None),
    (b"229 Extended Passive Mode (|||0|)", False, None),
    (b"EPRT |1|not-an-ip|21|", True, None),
    (b"PORT 127,0,0,1,118,92", False, None),
    (b"227 Entering Passive Mode (1,2,3,4,5,6).", True, None),
])
def test_announcements(line: bytes, from_client: bool, expected) -> None:
    assert announcements(line, from_client) == expected


@pytest.mark.parametrize("payload, from_client", [
    (b"227 Entering Passive Mode (90,130,70,73,100,85).\r\n", False),
    (b"150 Here comes the listing\r\n229 Entering Extended Passive Mode (|||30105|)\r\n", False),
    (b"PORT 127,0,0,1,118,92\r\n", True),
    (b"port 127,0,0,1,118,92\r\n", True),
    (b"NOOP\r\neprt |1|127.0.0.1|30300|\r\n", True),
])
def test_watched_packets_that_announce_pass_the_cheap_check(payload: bytes, from_client: bool) -> None:
    """_expect skips packets without "227"/"229" (server) or PORT/EPRT in any case (client), and the engine
    shows FTP only the watched packets ANNOUNCES finds something in: every packet whose lines announce
    something must pass both checks, whatever its case or line position."""
    assert any(announcements(line, from_client) for line in complete_lines(payload))
    assert may_announce(payload, from_client)
    assert ANNOUNCES.search(payload)
    assert not may_announce(b"226 Transfer complete\r\n", False) and not may_announce(b"LIST\r\n", True)
    assert not ANNOUNCES.search(b"226 Transfer complete\r\n200 PORT command successful\r\n")


_LINES = st.sampled_from([b"227 Entering Passive Mode (10,0,0,5,195,80).", b"229 Extended (|||30105|)", b"pOrT 1,2,3,4,5,6",
                          b"EPRT |2|::1|4000|", b"eprt |1|10.0.0.1|4000|", b"PORT 10,0,0,1,0,0", b"200 PORT ok",
                          b"NOOP", b"", b"227", b" 227 (1,2,3,4,5,6)", b"\r", b"x" * 300])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_LINES, st.binary(max_size=40)), max_size=12), st.sampled_from([b"\n", b"\r\n"]),
       st.booleans())
def test_announces_is_a_necessary_condition_of_an_announcement(lines: list[bytes], end: bytes, cut: bool) -> None:
    """A watched payload ANNOUNCES finds nothing in is never shown to FTP (Verdict.watch_for), so it must
    find something in every payload one of whose lines announces a data connection, from either side."""
    payload = end.join(lines) + (b"" if cut else end)
    for from_client in (True, False):
        if may_announce(payload, from_client) and any(
                announcements(line, from_client) for line in complete_lines(payload, 64)):
            assert ANNOUNCES.search(payload), (payload, from_client)


def test_passive_announcement_behind_nat_and_expiry() -> None:
    """A server behind NAT announces its private address; the capture sees the public one."""
    control = make_flow(server_port=21)
    shared: dict = {}
    h = only("FTP")[0]
    run_detector(h, [(1, b"220 ProFTPD Server\r\n"), (0, b"PASV\r\n"),
                     (1, b"227 Entering Passive Mode (10,0,0,5,195,80).\r\n")], flow=control, shared=shared)
    data_flow = make_flow(client_port=51000, server_port=50000, server=control.server)
    data = only("FTP_DATA")[0]
    assert run_detector(data, [(1, b"-rw-r--r-- 1 ftp ftp 4 readme\r\n")], flow=data_flow, shared=shared)[0] \
        .protocol == "FTP_DATA"
    # Each announcement names one connection; another flow to the same port is not taken for it.
    again = make_flow(client_port=51001, server_port=50000, server=control.server)
    assert run_detector(data, [(1, b"x")], flow=again, shared=shared) == [None]
    # An announcement the data connection comes too late for has expired.
    run_detector(h, [(1, b"220 ProFTPD\r\n"), (1, b"227 (10,0,0,5,195,81)\r\n")], flow=control, shared=shared)
    late = make_flow(client_port=51002, server_port=50001, server=control.server)
    late.first_seen = 10_000.0
    assert run_detector(data, [(1, b"x")], flow=late, shared=shared) == [None]
    assert len(shared[SHARED_KEY]) == 2  # the private and the seen address of the expired one


# --- split heads ---------------------------------------------------------------------------------

def test_heads_split_over_segments() -> None:
    sip = (b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\nVia: SIP/2.0/TCP client.atlanta.example.com:5060;"
           b"branch=z9hG4bK74bf9\r\nFrom: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n"
           b"To: Bob <sip:bob@biloxi.example.com>\r\nCall-ID: 3848276298220188511@atlanta.example.com\r\n"
           b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    assert named([(0, sip[:20]), (0, sip[20:])]) == ("SIP", 0.95)
    verdict = classify([(0, sip)])
    assert verdict.metadata["from_user"] == "alice" and verdict.metadata["to_user"] == "bob"
    assert named([(0, RTSP_OPTIONS[:9]), (0, RTSP_OPTIONS[9:])]) == ("RTSP", 0.95)
    startup = first_from("postgresql_psql", 0, b"\x00\x00\x00:")
    assert named([(0, startup[:12]), (0, startup[12:])]) == ("PostgreSQL", 0.95)
    resp = first_from("redis_cli", 0, b"*3")
    assert named([(0, resp[:6]), (0, resp[6:])]) == ("Redis", 0.95)
    assert named([(0, GIT_V0[:3]), (0, GIT_V0[3:])]) == ("Git", 0.95)
    assert named([(0, b"<?xml version='1.0'?>"),
                  (0, b"<stream:stream to='example.com' xmlns='jabber:client' "
                      b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")]) == ("XMPP", 0.95)


def test_sip_over_udp_and_tcp_and_its_responses() -> None:
    register = (b"REGISTER sip:registrar.biloxi.example.com SIP/2.0\r\nVia: SIP/2.0/UDP bobspc.biloxi.example.com"
                b":5060;branch=z9hG4bKnashds7\r\nTo: Bob <sip:bob@biloxi.example.com>\r\nCSeq: 1826 REGISTER\r\n\r\n")
    ok = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP bobspc.biloxi.example.com:5060\r\nCSeq: 1826 REGISTER\r\n\r\n"
    for transport in (UDP, TCP):
        assert named([(0, register)], transport) == ("SIP", 0.95)
        assert named([(1, ok)], transport) == ("SIP", 0.95)
    # HTTP's OPTIONS, and RTSP, are not SIP; SIP is not RTSP or HTTP.
    assert named([(0, b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")], names=("SIP",)) is None
    assert named([(0, RTSP_OPTIONS)], names=("SIP", "HTTP")) is None
    assert named([(0, register)], names=("RTSP", "HTTP")) is None


# --- binary protocols built from their specifications: valid, and one field broken at a time ----------

def bgp(kind: int, body: bytes = b"") -> bytes:
    return b"\xff" * 16 + struct.pack("!HB", 19 + len(body), kind) + body


BGP_OPEN = bgp(1, struct.pack("!BHH4sB", 4, 65001, 180, bytes([192, 0, 2, 1]), 0))


def modbus(tid: int, fc: int, data: bytes, unit: int = 1, proto: int = 0) -> bytes:
    return struct.pack("!HHHBB", tid, proto, 2 + len(data), unit, fc) + data


def test_bgp() -> None:
    verdict = classify([(0, BGP_OPEN)])
    assert verdict.protocol == "BGP" and verdict.metadata == {"message": "OPEN", "asn": 65001, "bgp_id": "192.0.2.1"}
    assert named([(0, bgp(4))]) == ("BGP", 0.95)
    for broken in (bgp(6), bgp(4, b"\x00"), b"\xff" * 15 + b"\xfe" + BGP_OPEN[16:], BGP_OPEN[:19] + b"\x03"
                   + BGP_OPEN[20:], bgp(1, struct.pack("!BHH4sB", 4, 65001, 2, bytes(4), 0))):
        assert named([(0, broken)], names=("BGP",)) is None, broken


def test_modbus_needs_the_matching_response() -> None:
    request = modbus(0xD1, 3, struct.pack("!HH", 1, 1))
    response = modbus(0xD1, 3, b"\x02\x00\x00")
    assert named([(0, request), (1, response)]) == ("Modbus", 0.95)
    assert named([(0, request), (1, modbus(0xD1, 0x83, b"\x02"))]) == ("Modbus", 0.95)  # an exception reply
    assert named([(0, request)]) == ("Modbus", 0.7)  # a request alone is a guess
    # A response to another transaction withdraws the guess.
    assert named([(0, request), (1, modbus(0xD2, 3, b"\x02\x00\x00"))], names=("Modbus",)) is None
    for broken in (modbus(1, 3, struct.pack("!HH", 1, 126)), modbus(1, 3, struct.pack("!HH", 1, 1), proto=1),
                   modbus(1, 5, struct.pack("!HH", 1, 0x1234)), modbus(1, 99, b"\x00\x01"),
                   request + b"\x00"):
        assert named([(0, broken)], names=("Modbus",)) is None, broken


def test_amqp_header_and_frames() -> None:
    assert named([(0, b"AMQP\x00\x00\x09\x01")]) == ("AMQP", 0.95)
    assert named([(0, b"AMQP\x00\x01\x00\x00")]) == ("AMQP", 0.95)
    assert named([(0, b"AMQP\x07\x07\x07\x07")], names=("AMQP",)) is None
    heartbeat = b"\x08\x00\x00\x00\x00\x00\x00\xce"
    method = struct.pack("!BHI", 1, 1, 4) + struct.pack("!HH", 60, 40) + b"\xce"
    assert named([(0, heartbeat + method)]) == ("AMQP", 0.95)
    assert named([(0, method)]) == ("AMQP", 0.85)
    for broken in (method[:-1] + b"\x00", struct.pack("!BHI", 1, 1, 4) + struct.pack("!HH", 61, 40) + b"\xce",
                   b"\x08\x00\x00\x00\x00\x01\x00\xce", method + b"\x09"):
        assert named([(0, broken)], names=("AMQP",)) is None, broken


def test_mqtt_connect_versions_and_near_misses() -> None:
    v5 = b"\x10\x10\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x03abc"
    v31 = b"\x10\x12\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x04dpi1"
    assert classify([(0, v5)]).metadata["version"] == "5.0"
    assert classify([(0, v31)]).metadata == {"version": "3.1", "client_id": "dpi1", "keepalive": 60}
    assert classify([(1, MQTT_CURL)]).protocol == "MQTT"  # a capture that starts at the broker's side
    for broken in (MQTT_CURL.replace(b"MQTT", b"MQTX"), MQTT_CURL[:8] + b"\x03" + MQTT_CURL[9:],
                   MQTT_CURL[:9] + b"\x03" + MQTT_CURL[10:], MQTT_CURL + b"\x00"):
        assert named([(0, broken)], names=("MQTT",)) is None, broken


def test_mongodb_near_misses() -> None:
    assert named([(0, MONGO_HELLO)]) == ("MongoDB", 0.95)
    wrong_opcode = MONGO_HELLO[:12] + struct.pack("<i", 2010) + MONGO_HELLO[16:]
    wrong_length = struct.pack("<i", len(MONGO_HELLO) + 40) + MONGO_HELLO[4:]
    bad_flags = MONGO_HELLO[:16] + struct.pack("<I", 4) + MONGO_HELLO[20:]
    bad_document = MONGO_HELLO[:21] + struct.pack("<i", 4000) + MONGO_HELLO[25:]
    for broken in (wrong_opcode, wrong_length, bad_flags, bad_document):
        assert named([(0, broken)], names=("MongoDB",)) is None


def test_mysql_and_postgresql_near_misses() -> None:
    greeting = first_from("mysql_mariadb", 1)
    assert named([(1, greeting[:4] + b"\x09" + greeting[5:])], names=("MySQL",)) is None  # protocol 9
    assert named([(1, greeting[:3] + b"\x01" + greeting[3:][1:])], names=("MySQL",)) is None  # sequence 1
    assert named([(1, b"\xff" + greeting[1:])], names=("MySQL",)) is None  # length past the payload
    refused = b"\x48\x00\x00\x00\xff\x6a\x04Host '192.0.2.1' is not allowed to connect to this MariaDB server"
    refused = struct.pack("<I", len(refused) - 4)[:3] + refused[3:]
    assert named([(1, refused)]) == ("MySQL", 0.85)
    assert named([(0, b"\x00\x00\x00\x08\x04\xd2\x16\x2f")]) == ("PostgreSQL", 0.95)  # SSLRequest
    startup = first_from("postgresql_psql", 0, b"\x00\x00\x00:")
    for broken in (startup[:4] + b"\x00\x02\x00\x00" + startup[8:], startup.replace(b"user\x00", b"usex\x00"),
                   startup[:-1], b"\x00\x00\x00\x08\x04\xd2\x16\x31"):
        assert named([(0, broken)], names=("PostgreSQL",)) is None, broken


def test_redis_memcached_disambiguation() -> None:
    assert named([(0, b"PING\r\n"), (1, b"+PONG\r\n")]) == ("Redis", 0.85)
    assert named([(0, b"PING\r\n")]) == ("Redis", 0.7)
    # memcached's get: the reply decides; alone it is a guess.
    assert named([(0, b"get k\r\n"), (1, b"VALUE k 0 1\r\nx\r\nEND\r\n")]) == ("Memcached", 0.95)
    assert named([(0, b"get k\r\n"), (1, b"END\r\n")]) == ("Memcached", 0.95)
    assert named([(0, b"get k\r\n")]) == ("Memcached", 0.7)
    assert named([(0, b"get k\r\n"), (1, b"$-1\r\n")], names=("Memcached",)) is None  # Redis answered
    for broken in (b"*2\r\n$3\r\nGET\r\n$1\r\nab\r\n", b"*0\r\n", b"*1\r\n$3\r\nGE\r\n\r\n", b"*1\r\n$0\r\n\r\n"):
        assert named([(0, broken)], names=("Redis",)) is None, broken
    for broken in (b"set k x 0 1\r\n", b"SET k 0 0 1\r\n", b"stats\x01\r\n"):
        assert named([(0, broken)], names=("Memcached",)) is None, broken
    # memcached over UDP: the 8-byte frame header, then the text command.
    assert named([(0, b"\x12\x34\x00\x00\x00\x01\x00\x00stats\r\n")], UDP) == ("Memcached", 0.85)
    assert named([(0, b"\x12\x34\x00\x00\x00\x02\x00\x00stats\r\n")], UDP, names=("Memcached",)) is None


def test_vnc_rsync_telnet_irc_xmpp_near_misses() -> None:
    assert named([(1, b"RFB 003.008\n")]) == ("VNC", 0.95)
    for broken in (b"RFB 003.008", b"RFB 3.8\n", b"RFB 003.008\nx"):
        assert named([(1, broken)], names=("VNC",)) is None
    assert named([(1, b"@RSYNCD: 32.0 sha512\r")], names=("Rsync",)) is None
    assert named([(1, b"\xff\xfd\x18")]) == ("Telnet", 0.7)  # one negotiation: a guess
    assert named([(1, b"\xff\xfd\x18"), (0, b"\xff\xfb\x18")]) == ("Telnet", 0.85)
    for broken in (b"\xff\xfd\x99\xff\xfb\x01", b"\xff\xfa\x18\x01", b"\xff\xff\xfd\x18", b"\xff\xf0\xff\xfd\x18"):
        assert named([(1, broken)], names=("Telnet",)) is None, broken
    assert named([(0, b"NICK dpicore\r\nUSER dpi 0 * :dpicore test\r\n")]) == ("IRC", 0.95)
    assert named([(0, b"CAP LS 302\r\n")]) == ("IRC", 0.85)
    assert named([(1, b":irc.example.net NOTICE * :*** Looking up your hostname...\r\n")]) == ("IRC", 0.85)
    assert named([(0, b"USER dpi\r\n")], names=("IRC",)) is None
    assert named([(0, b"PASS x\r\nPRIVMSG #a :b\r\n")], names=("IRC",)) is None
    assert named([(0, b"<?xml version='1.0'?><stream:stream to='a' xmlns='urn:other'>")], names=("XMPP",)) is None
    assert named([(0, b"<?xml version='1.0'?><html>")], names=("XMPP",)) is None


def test_kerberos_and_ldap_near_misses() -> None:
    # pvno [1] 5, msg-type [2] 10, req-body [4] { kdc-options [0], realm [2] "EXAMPLE.COM" }
    as_req_body = bytes.fromhex("a103020105a20302010a" "a41a3018" "a00703050050800000" "a20d1b0b") + b"EXAMPLE.COM"
    as_req = b"\x6a" + bytes([len(as_req_body) + 2]) + b"\x30" + bytes([len(as_req_body)]) + as_req_body
    assert named([(0, as_req)], UDP) == ("Kerberos", 0.95)
    assert named([(0, struct.pack("!I", len(as_req)) + as_req)]) == ("Kerberos", 0.95)
    pvno4 = as_req.replace(b"\xa1\x03\x02\x01\x05", b"\xa1\x03\x02\x01\x04")
    mismatch = as_req.replace(b"\xa2\x03\x02\x01\x0a", b"\xa2\x03\x02\x01\x0c")
    for broken in (pvno4, mismatch, b"\x6b" + as_req[1:]):
        assert named([(0, broken)], UDP, names=("Kerberos",)) is None, broken
    assert named([(0, struct.pack("!I", len(as_req) + 9) + as_req + b"\x00")], names=("Kerberos",)) is None
    assert named([(0, LDAP_SEARCH)], UDP) == ("LDAP", 0.95)  # CLDAP
    assert named([(1, LDAP_BIND_OK)]) == ("LDAP", 0.95)
    assert named([(0, bytes.fromhex("30050201034200"))]) == ("LDAP", 0.85)  # unbind: only its tag to check
    snmp = bytes.fromhex("302602010104067075626c6963a01902040a0b0c0d020100020100300b300906052b06010201050500")
    version4 = LDAP_BIND.replace(b"\x02\x01\x03\x04", b"\x02\x01\x04\x04")
    bad_scope = LDAP_SEARCH.replace(b"\n\x01\x02\n", b"\n\x01\x07\n")
    for broken in (snmp, version4, bad_scope, LDAP_BIND[:-2] + b"\x81\x00"):
        assert named([(0, broken)], UDP, names=("LDAP",)) is None, broken


def test_mssql_near_misses() -> None:
    prelogin_body = struct.pack("!BHHBHHB", 0, 11, 6, 1, 17, 1, 0xFF) + bytes([15, 0, 7, 208, 0, 0]) + b"\x00"
    prelogin = struct.pack("!BBHHBB", 0x12, 1, 8 + len(prelogin_body), 0, 1, 0) + prelogin_body
    assert named([(0, prelogin)]) == ("MSSQL", 0.95)
    batch_text = "select 1".encode("utf-16-le")
    headers = struct.pack("<IIH", 22, 18, 2) + bytes(8) + struct.pack("<I", 1)
    batch = struct.pack("!BBHHBB", 1, 1, 8 + len(headers) + len(batch_text), 0, 1, 0) + headers + batch_text
    assert named([(0, batch)]) == ("MSSQL", 0.95)
    for broken in (prelogin[:7] + b"\x01" + prelogin[8:], prelogin[:8] + b"\x09" + prelogin[9:],
                   prelogin[:3] + bytes([prelogin[3] + 1]) + prelogin[4:], batch[:-len(batch_text)] + bytes(16),
                   b"\x01\x20" + batch[2:]):
        assert named([(0, broken)], names=("MSSQL",)) is None, broken


# --- each heuristic, alone, refuses the others' real payloads ----------------------------------------

EXAMPLES = {
    "SMTP": [(1, b"220 mx.google.com ESMTP s4si9696358qcc.63 - gsmtp\r\n")],
    "FTP": [(1, b"220 (vsFTPd 3.0.3)\r\n"), (0, b"USER anonymous\r\n")],
    "POP3": [(1, b"+OK Dovecot (Debian) ready.\r\n")],
    "IMAP": [(0, b"A001 CAPABILITY\r\n")],
    "Redis": [(0, b"*1\r\n$4\r\nPING\r\n"), (1, b"+PONG\r\n")],
    "Memcached": [(0, b"stats\r\n"), (1, b"STAT pid 8837\r\nSTAT uptime 193\r\n")],
    "Git": [(0, GIT_V0)], "LDAP": [(0, LDAP_BIND), (1, LDAP_BIND_OK)], "RTSP": [(0, RTSP_OPTIONS)],
    "MQTT": [(0, MQTT_CURL)], "MongoDB": [(0, MONGO_HELLO)], "Rsync": [(1, RSYNC_SERVER)],
    "BGP": [(0, BGP_OPEN)], "VNC": [(1, b"RFB 003.008\n")], "IRC": [(0, b"NICK a\r\nUSER a 0 * :a\r\n")],
    "Modbus": [(0, modbus(7, 4, struct.pack("!HH", 0, 10))), (1, modbus(7, 4, b"\x14" + bytes(20)))],
    "AMQP": [(0, b"AMQP\x00\x00\x09\x01")],
    "HTTP": [(0, b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"), (1, b"HTTP/1.1 200 OK\r\n\r\n")],
    "SSH": [(1, b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")],
}


def test_each_heuristic_alone_refuses_the_other_examples() -> None:
    examples = dict(EXAMPLES)
    for capture, proto in (("mysql_mariadb", "MySQL"), ("postgresql_psql", "PostgreSQL"), ("telnet_2323", "Telnet"),
                           ("memcached_binary", "Memcached"), ("tls_openssl", "TLS")):
        examples[f"{proto}/{capture}"] = realclient_flows(capture)[0][:4]
    mine = sorted({h.name for h in all_heuristics()} & {name.split("/")[0] for name in examples} - {"HTTP", "SSH",
                                                                                                    "TLS"})
    dispatchers = {name: Dispatcher(only(name)) for name in mine}
    for name, dispatcher in dispatchers.items():
        for example, flow in examples.items():
            verdict = classify(flow, dispatcher=dispatcher)
            if example.split("/")[0] == name:
                assert verdict is not None and verdict.protocol == name, (name, example)
            else:
                assert verdict is None, (name, example, verdict)
