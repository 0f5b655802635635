"""The offset decoder (dpicore/decode/packets.py): every link type and
encapsulation the issue lists, fragments, padding, snap length, and hostile
bytes that must end as Truncated/Malformed, never another exception.

Frames are built with dpkt (real headers, real lengths), so a decoder that
reads a field at the wrong offset gets a wrong value and fails here.
"""

from __future__ import annotations

import random
import struct

import dpkt
import pytest

from dpicore.decode import Decoder, DecodeError, Malformed, Truncated, UnsupportedLinkType
from dpicore.decode import packets as P
from dpicore.model import ICMP, ICMPV6, SCTP, TCP, UDP, FlowKey
from tests.helpers.frames import (ACK, PSH, SYN, addr, eth, ext_header, ip4, ip6, sll, sll2, tcp, tcp4, udp,
                                  udp4)

REQ = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"
V6_SRC, V6_DST = "2001:db8::1", "2001:db8::2"


def decode(linktype: int, frame: bytes, wire_len: int | None = None, decoder: Decoder | None = None):
    return (decoder or Decoder()).decode(linktype, frame, 1.5, len(frame) if wire_len is None else wire_len, 7)


def tcp6(payload: bytes = REQ, ext: bytes = b"", first: int = TCP) -> bytes:
    return ip6(V6_SRC, V6_DST, tcp(40000, 80, PSH | ACK, 5, 0, payload), first if ext else TCP, ext)


def assert_http4(pkt, vlan: int = 0) -> None:
    assert pkt is not None
    assert (pkt.ip_version, pkt.proto) == (4, TCP)
    assert (pkt.src, pkt.dst) == (addr("10.0.0.1"), addr("10.0.0.2"))
    assert (pkt.sport, pkt.dport) == (40000, 80)
    assert pkt.payload == REQ and pkt.payload_len == len(REQ)
    assert pkt.vlan == vlan


# -- link types -------------------------------------------------------------------
IPV4 = tcp4(payload=REQ, flags=PSH | ACK)


@pytest.mark.parametrize("linktype, frame", [
    (P.DLT_EN10MB, eth(IPV4)),
    (P.DLT_LINUX_SLL, sll(IPV4)),
    (P.DLT_LINUX_SLL2, sll2(IPV4)),
    (P.DLT_RAW, IPV4),
    (P.DLT_RAW_OLD, IPV4),
    (P.DLT_RAW_OPENBSD, IPV4),
    (P.DLT_IPV4, IPV4),
    (P.DLT_NULL, struct.pack("<I", 2) + IPV4),   # written on a little-endian host
    (P.DLT_NULL, struct.pack(">I", 2) + IPV4),   # written on a big-endian host
    (P.DLT_LOOP, struct.pack(">I", 2) + IPV4),   # OpenBSD loop: always network order
    (P.DLT_C_HDLC, b"\x0f\x00\x08\x00" + IPV4),
], ids=["ethernet", "sll", "sll2", "raw101", "raw12", "raw14", "ipv4-228", "null-le", "null-be", "loop",
        "cisco-hdlc"])
def test_link_types_ipv4(linktype: int, frame: bytes) -> None:
    pkt = decode(linktype, frame)
    assert_http4(pkt)
    assert pkt.ip == IPV4, "the IP-layer bytes (what nDPI is given) start at the IP header"
    assert pkt.wire_len == len(frame) and pkt.ts == 1.5 and pkt.number == 7


IPV6 = tcp6()


@pytest.mark.parametrize("linktype, frame", [
    (P.DLT_EN10MB, eth(IPV6, 0x86DD)),
    (P.DLT_LINUX_SLL, sll(IPV6, 0x86DD)),
    (P.DLT_LINUX_SLL2, sll2(IPV6, 0x86DD)),
    (P.DLT_RAW, IPV6),
    (P.DLT_IPV6, IPV6),
    (P.DLT_NULL, struct.pack("<I", 30) + IPV6),  # AF_INET6 on macOS
    (P.DLT_NULL, struct.pack(">I", 28) + IPV6),  # AF_INET6 on FreeBSD, big-endian host
    (P.DLT_NULL, struct.pack("<I", 24) + IPV6),  # AF_INET6 on NetBSD/OpenBSD
    (P.DLT_LOOP, struct.pack(">I", 24) + IPV6),
    (P.DLT_C_HDLC, b"\x0f\x00\x86\xdd" + IPV6),
], ids=["ethernet", "sll", "sll2", "raw101", "ipv6-229", "null-30-le", "null-28-be", "null-24-le", "loop",
        "cisco-hdlc"])
def test_link_types_ipv6(linktype: int, frame: bytes) -> None:
    pkt = decode(linktype, frame)
    assert pkt is not None and (pkt.ip_version, pkt.proto) == (6, TCP)
    assert (pkt.src, pkt.dst) == (addr(V6_SRC), addr(V6_DST))
    assert (pkt.sport, pkt.dport, pkt.payload) == (40000, 80, REQ)
    assert pkt.ip == IPV6


def test_unsupported_link_type_is_typed() -> None:
    with pytest.raises(UnsupportedLinkType) as info:
        decode(147, IPV4)  # DLT_USER0
    assert info.value.linktype == 147 and "147" in str(info.value)
    assert isinstance(info.value, DecodeError)


def test_non_ip_frames_are_counted_not_decoded() -> None:
    d = Decoder()
    arp = eth(b"\x00\x01\x08\x00\x06\x04\x00\x01" + b"\x00" * 20, 0x0806)
    assert d.decode(P.DLT_EN10MB, arp, 0.0, len(arp)) is None
    assert d.decode(P.DLT_LINUX_SLL2, sll2(b"\x00" * 28, 0x0806), 0.0, 48) is None
    assert d.non_ip == 2


# -- encapsulations -------------------------------------------------------------------
def test_8021q_vlan() -> None:
    assert_http4(decode(P.DLT_EN10MB, eth(IPV4, tags=[(0x8100, 0x2000 | 42)])), vlan=42)  # PCP bits ignored


def test_qinq_reports_inner_vlan() -> None:
    frame = eth(IPV4, tags=[(0x88A8, 100), (0x8100, 7)])
    assert_http4(decode(P.DLT_EN10MB, frame), vlan=7)


def test_vlan_inside_sll() -> None:
    frame = sll(struct.pack("!HH", 12, 0x0800) + IPV4, 0x8100)
    assert_http4(decode(P.DLT_LINUX_SLL, frame), vlan=12)


@pytest.mark.parametrize("inner", [IPV4, IPV6], ids=["ipv4", "ipv6"])
def test_mpls_label_stack(inner: bytes) -> None:
    labels = struct.pack("!I", (1000 << 12) | (0 << 8) | 64) + struct.pack("!I", (2000 << 12) | (1 << 8) | 64)
    pkt = decode(P.DLT_EN10MB, eth(labels + inner, 0x8847))
    assert pkt is not None and pkt.ip == inner and (pkt.sport, pkt.dport) == (40000, 80)


def test_pppoe_session() -> None:
    pppoe = struct.pack("!BBHH", 0x11, 0, 0x1234, len(IPV4) + 2) + struct.pack("!H", 0x0021)
    assert_http4(decode(P.DLT_EN10MB, eth(pppoe + IPV4, 0x8864)))
    pppoe6 = struct.pack("!BBHH", 0x11, 0, 0x1234, len(IPV6) + 2) + struct.pack("!H", 0x0057)
    pkt = decode(P.DLT_EN10MB, eth(pppoe6 + IPV6, 0x8864, tags=[(0x8100, 3)]))
    assert pkt is not None and pkt.ip_version == 6 and pkt.vlan == 3 and pkt.payload == REQ


# -- IPv4 and IPv6 headers ----------------------------------------------------------------
def test_ipv4_options_are_skipped() -> None:
    router_alert = b"\x94\x04\x00\x00"
    frame = ip4("10.0.0.1", "10.0.0.2", tcp(40000, 80, PSH | ACK, 5, 0, REQ), TCP,
                opts=router_alert + b"\x01\x01\x01\x00")
    pkt = decode(P.DLT_RAW, frame)
    assert_http4(pkt)
    assert len(pkt.ip) == 28 + 20 + len(REQ)


def test_ipv6_extension_header_chain() -> None:
    chain = (ext_header(43, b"\x00" * 6)                                # hop-by-hop → routing
             + ext_header(60, b"\x00\x00" + b"\x00" * 4 + b"\x00" * 8)  # routing (16 bytes) → dest opts
             + ext_header(TCP, b"\x01\x04\x00\x00\x00\x00"))            # dest opts (PadN) → TCP
    pkt = decode(P.DLT_RAW, tcp6(REQ, chain, first=0))
    assert pkt is not None and pkt.proto == TCP
    assert (pkt.sport, pkt.dport, pkt.payload) == (40000, 80, REQ)
    assert pkt.payload_len == len(REQ)


def test_ipv6_ah_is_a_transport_of_its_own() -> None:
    """AH/ESP are not skipped (as nDPI does): the flow is an AH flow."""
    ah = bytes([TCP, 4]) + b"\x00" * 22
    pkt = decode(P.DLT_RAW, ip6(V6_SRC, V6_DST, ah + bytes(tcp(1, 2)), 51))
    assert pkt is not None and pkt.proto == 51 and pkt.sport == 0


def test_6in4_classifies_the_inner_packet() -> None:
    frame = eth(ip4("192.0.2.1", "192.0.2.2", IPV6, 41))
    pkt = decode(P.DLT_EN10MB, frame)
    assert pkt is not None and pkt.ip_version == 6 and pkt.proto == TCP
    assert (pkt.src, pkt.sport, pkt.payload) == (addr(V6_SRC), 40000, REQ)


def test_ipip_classifies_the_inner_packet() -> None:
    pkt = decode(P.DLT_RAW, ip4("192.0.2.1", "192.0.2.2", IPV4, 4))
    assert_http4(pkt)


def nested(levels: int, inner: bytes, v6: bool) -> bytes:
    """``inner`` wrapped in ``levels`` IP-in-IP (or IPv6-in-IPv6) headers."""
    for _ in range(levels):
        inner = ip6(V6_SRC, V6_DST, inner, 41) if v6 else ip4("192.0.2.1", "192.0.2.2", inner, 4)
    return inner


@pytest.mark.parametrize("v6", [False, True], ids=["ip-in-ip", "ipv6-in-ipv6"])
def test_tunnels_nest_up_to_a_limit(v6: bool) -> None:
    """Real tunnels nest a few deep and are followed to the packet inside; a frame of a thousand
    nested headers (hostile) is one malformed frame, not a RecursionError that ends the run."""
    inner = tcp6() if v6 else IPV4
    pkt = decode(P.DLT_RAW, nested(P.MAX_TUNNELS, inner, v6))
    assert pkt is not None and pkt.proto == TCP and pkt.payload == REQ
    with pytest.raises(Malformed, match="nested IP headers"):
        decode(P.DLT_RAW, nested(P.MAX_TUNNELS + 1, inner, v6))
    with pytest.raises(Malformed, match="nested IP headers"):
        decode(P.DLT_RAW, nested(1000, inner, v6))


@pytest.mark.parametrize("frame, proto, ports", [
    (udp4(payload=b"\x12\x34" + b"\x00" * 10), UDP, (40000, 53)),
    (ip4("10.0.0.1", "10.0.0.2", dpkt.icmp.ICMP(type=8, code=0, data=dpkt.icmp.ICMP.Echo(id=1, seq=1)), ICMP),
     ICMP, (0, 0)),
    (ip6(V6_SRC, V6_DST, bytes([128, 0, 0, 0]) + b"\x00\x01\x00\x01", ICMPV6), ICMPV6, (0, 0)),
    (ip4("10.0.0.1", "10.0.0.2", struct.pack("!HHII", 2905, 2906, 0, 0) + b"\x01" * 16, SCTP), SCTP, (2905, 2906)),
    (ip4("10.0.0.1", "10.0.0.2", b"\x00\x00\x08\x00" + b"gre-body", 47), 47, (0, 0)),
    (ip4("10.0.0.1", "10.0.0.2", b"\x02\x01\x00\x2c" + b"\x00" * 40, 89), 89, (0, 0)),  # OSPF
], ids=["udp", "icmp", "icmpv6", "sctp", "gre", "ospf"])
def test_transports(frame: bytes, proto: int, ports: tuple[int, int]) -> None:
    pkt = decode(P.DLT_RAW, frame)
    assert pkt is not None and pkt.proto == proto and (pkt.sport, pkt.dport) == ports
    if proto in (ICMP, ICMPV6):
        assert pkt.payload[:1] in (b"\x08", b"\x80"), "ICMP payload is the message, type first"
    if proto == 47:
        assert pkt.payload == b"\x00\x00\x08\x00gre-body"
    if proto == SCTP:
        assert pkt.payload == b"\x01" * 16


# -- lengths: padding and snap length ---------------------------------------------------------
def test_ethernet_padding_is_trimmed() -> None:
    small = udp4(payload=b"hi")                          # 30 bytes of IP: the NIC pads to 60
    pkt = decode(P.DLT_EN10MB, eth(small, pad_to=60))
    assert pkt is not None and pkt.payload == b"hi" and pkt.payload_len == 2
    assert pkt.ip == small and pkt.wire_len == 60
    syn = tcp4(flags=SYN)
    pkt = decode(P.DLT_EN10MB, eth(syn, pad_to=60))
    assert pkt is not None and pkt.payload == b"" and pkt.payload_len == 0 and pkt.tcp_flags == SYN


def test_snaplen_truncated_frame_keeps_wire_lengths() -> None:
    full = eth(tcp4(flags=PSH | ACK, payload=b"A" * 1400))
    cut = full[:14 + 20 + 20 + 10]                      # snap length 64
    pkt = decode(P.DLT_EN10MB, cut, wire_len=len(full))
    assert pkt is not None and pkt.payload == b"A" * 10
    assert pkt.payload_len == 1400, "payload_len is what the IP header announces"
    assert pkt.wire_len == len(full)


def test_snaplen_inside_tcp_header_is_truncated() -> None:
    with pytest.raises(Truncated):
        decode(P.DLT_EN10MB, eth(tcp4(payload=b"x" * 100))[:14 + 20 + 10], wire_len=200)


# -- fragments -------------------------------------------------------------------------------
def _fragments4(ident: int = 77) -> tuple[bytes, bytes, bytes]:
    """A UDP datagram (8 + 40 bytes) split in three fragments of 24, 16 and 8 bytes."""
    datagram = bytes(udp(5000, 6000, b"B" * 40))
    parts = [datagram[:24], datagram[24:40], datagram[40:]]
    return (ip4("10.0.0.1", "10.0.0.2", parts[0], UDP, ident=ident, frag=0x2000),
            ip4("10.0.0.1", "10.0.0.2", parts[1], UDP, ident=ident, frag=0x2000 | 3),
            ip4("10.0.0.1", "10.0.0.2", parts[2], UDP, ident=ident, frag=5))


def test_ipv4_fragments_counted_on_the_first_fragments_flow() -> None:
    d = Decoder()
    first, middle, last = (decode(P.DLT_RAW, f, decoder=d) for f in _fragments4())
    assert (first.sport, first.dport, first.fragment) == (5000, 6000, False)
    assert first.payload == b"B" * 16
    for later in (middle, last):
        assert later.fragment and (later.sport, later.dport) == (5000, 6000)
        assert later.payload == b""
        assert FlowKey.of(later) == FlowKey.of(first)
    assert (middle.payload_len, last.payload_len) == (16, 8)


def test_ipv4_fragment_whose_first_fragment_was_not_seen() -> None:
    d = Decoder()
    _, middle, last = _fragments4(ident=99)
    a = decode(P.DLT_RAW, middle, decoder=d)
    b = decode(P.DLT_RAW, last, decoder=d)
    for pkt in (a, b):
        assert pkt.fragment and pkt.proto == UDP and (pkt.sport, pkt.dport) == (0, 0)
    assert FlowKey.of(a) == FlowKey.of(b), "orphan fragments of one datagram share one port-less flow"


def test_fragment_ids_are_bounded() -> None:
    d = Decoder()
    for ident in range(Decoder.MAX_FRAGMENT_IDS + 50):
        decode(P.DLT_RAW, _fragments4(ident & 0xFFFF)[0], decoder=d)
    assert len(d._fragments) <= Decoder.MAX_FRAGMENT_IDS


def test_ipv6_fragment_header() -> None:
    d = Decoder()
    datagram = bytes(udp(5353, 5353, b"C" * 40))

    def frag(offset: int, more: bool, data: bytes) -> bytes:
        fh = struct.pack("!BBHI", UDP, 0, offset | int(more), 0xABCDEF)
        return ip6(V6_SRC, V6_DST, fh + data, 44)

    first = decode(P.DLT_RAW, frag(0, True, datagram[:24]), decoder=d)
    last = decode(P.DLT_RAW, frag(24, False, datagram[24:]), decoder=d)
    assert (first.proto, first.sport, first.dport, first.fragment) == (UDP, 5353, 5353, False)
    assert first.payload == b"C" * 16
    assert last.fragment and (last.sport, last.dport) == (5353, 5353) and last.payload_len == 24
    atomic = decode(P.DLT_RAW, frag(0, False, datagram), decoder=d)  # a fragment header on a whole datagram
    assert not atomic.fragment and atomic.payload == b"C" * 40


# -- hostile bytes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("linktype, frame, error", [
    (P.DLT_EN10MB, b"\x00" * 13, Truncated),
    (P.DLT_EN10MB, eth(b"\x45\x00"), Truncated),
    (P.DLT_EN10MB, eth(b""), Truncated),
    (P.DLT_EN10MB, eth(IPV4, tags=[(0x8100, 1)])[:15], Truncated),
    (P.DLT_EN10MB, eth(b"\x00\x01", 0x8847), Truncated),
    (P.DLT_EN10MB, eth(b"\x11\x00", 0x8864), Truncated),
    (P.DLT_LINUX_SLL, b"\x00" * 15, Truncated),
    (P.DLT_LINUX_SLL2, b"\x00" * 19, Truncated),
    (P.DLT_NULL, b"\x02\x00", Truncated),
    (P.DLT_C_HDLC, b"\x0f", Truncated),
    (P.DLT_RAW, b"", Truncated),
    (P.DLT_RAW, b"\x75" + IPV4[1:], Malformed),                   # IP version 7
    (P.DLT_RAW, b"\x44" + IPV4[1:], Malformed),                   # IHL 16 bytes
    (P.DLT_RAW, IPV4[:2] + b"\x00\x10" + IPV4[4:], Malformed),    # total length < header
    (P.DLT_RAW, b"\x4f" + IPV4[1:30], Truncated),                 # 60-byte header, 30 captured
    (P.DLT_RAW, IPV4[:20 + 12] + b"\x10" + IPV4[33:], Malformed),  # TCP data offset 4 bytes
    (P.DLT_RAW, IPV4[:20 + 12] + b"\xf0" + IPV4[33:40], Truncated),  # TCP options beyond the capture
    (P.DLT_RAW, IPV4[:30], Truncated),
    (P.DLT_RAW, udp4()[:24], Truncated),
    (P.DLT_RAW, IPV6[:39], Truncated),
    (P.DLT_IPV6, b"\x45" + IPV6[1:], Malformed),
    (P.DLT_RAW, ip6(V6_SRC, V6_DST, b"\x06\x00\x00", 0), Truncated),  # hop-by-hop cut short
    (P.DLT_RAW, ip6(V6_SRC, V6_DST, b"\x06\x05" + b"\x00" * 6, 0), Truncated),  # claims 48 bytes, has 8
], ids=lambda v: v.__name__ if isinstance(v, type) else None)
def test_bad_headers_raise_typed_errors(linktype: int, frame: bytes, error: type) -> None:
    with pytest.raises(error):
        decode(linktype, frame)


def _valid_frames() -> list[tuple[int, bytes]]:
    frag = _fragments4()
    chain = ext_header(60, b"\x00" * 6) + ext_header(TCP, b"\x01\x04\x00\x00\x00\x00")
    return [
        (P.DLT_EN10MB, eth(IPV4, tags=[(0x88A8, 1), (0x8100, 2)])),
        (P.DLT_EN10MB, eth(struct.pack("!I", (5 << 12) | 0x1FF) + IPV6, 0x8847)),
        (P.DLT_EN10MB, eth(struct.pack("!BBHHH", 0x11, 0, 1, 2, 0x21) + IPV4, 0x8864)),
        (P.DLT_LINUX_SLL2, sll2(tcp6(REQ, chain, first=0), 0x86DD)),
        (P.DLT_LINUX_SLL, sll(udp4(payload=b"q" * 30))),
        (P.DLT_NULL, struct.pack("<I", 2) + ip4("1.1.1.1", "2.2.2.2", IPV6, 41)),
        (P.DLT_RAW, frag[0]), (P.DLT_RAW, frag[1]),
        (P.DLT_RAW, ip4("10.0.0.1", "10.0.0.2", struct.pack("!HHII", 1, 2, 3, 4), SCTP)),
        (P.DLT_C_HDLC, b"\x0f\x00\x86\xdd" + ip6(V6_SRC, V6_DST, struct.pack("!BBHI", TCP, 0, 1, 9)
                                                 + bytes(tcp(1, 2)), 44)),
    ]


def _check_decodes_or_typed_error(d: Decoder, linktype: int, frame: bytes) -> None:
    try:
        pkt = d.decode(linktype, frame, 0.0, len(frame))
    except DecodeError:
        return
    if pkt is not None:
        assert pkt.proto >= 0 and 0 <= pkt.sport <= 0xFFFF and 0 <= pkt.dport <= 0xFFFF
        assert pkt.payload_len >= 0 and len(pkt.payload) <= len(frame)


def test_every_prefix_of_valid_frames() -> None:
    d = Decoder()
    for linktype, frame in _valid_frames():
        for n in range(len(frame) + 1):
            _check_decodes_or_typed_error(d, linktype, frame[:n])


def test_random_corruption_never_raises_anything_else() -> None:
    """20k mutated frames (byte flips, splices, random bytes): only DecodeError may escape."""
    rng = random.Random(1234)
    d = Decoder()
    frames = _valid_frames()
    for _ in range(20_000):
        linktype, frame = rng.choice(frames)
        buf = bytearray(frame)
        for _ in range(rng.randint(1, 6)):
            kind = rng.random()
            if kind < 0.6 and buf:
                buf[rng.randrange(len(buf))] = rng.randrange(256)
            elif kind < 0.8:
                buf = buf[:rng.randint(0, len(buf))]
            else:
                pos = rng.randint(0, len(buf))
                buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
        if rng.random() < 0.05:
            buf = bytearray(rng.randbytes(rng.randint(0, 80)))
        _check_decodes_or_typed_error(d, linktype, bytes(buf))


def test_fragments_make_one_flow_in_the_engine() -> None:
    from dpicore.config import Config
    from dpicore.engine import Engine
    from dpicore.plugins import PluginSet

    d = Decoder()
    packets = [d.decode(P.DLT_RAW, f, 1.0 + i, len(f), i + 1) for i, f in enumerate(_fragments4(ident=5))]
    (flow,) = Engine(PluginSet(Config()), Config()).run(packets)
    assert (flow.packets, flow.client_port, flow.server_port) == (3, 5000, 6000)
    assert flow.c2s_bytes == sum(len(f) for f in _fragments4(ident=5))
