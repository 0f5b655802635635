"""The per-flow feeding rules and the lifetime of nDPI memory, on the real libndpi."""

from __future__ import annotations

import gc
import struct
from typing import Any

import dpkt
import pytest

from dpicore import Classifier
from dpicore.api import synthetic_packets
from dpicore.model import TCP, UDP, Packet
from dpi_ndpi.detector import Detector, ndpi_view


def ip4(payload: bytes = b"", proto: int = 17, frag: int = 0, total: int | None = None, dport: int = 53) -> bytes:
    """An IPv4 packet built by hand, so lengths and fragment fields can lie."""
    l4 = struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload if proto == 17 else payload
    length = 20 + len(l4) if total is None else total
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, length, 1, frag, 64, proto, 0, bytes([10, 0, 0, 1]),
                       bytes([10, 0, 0, 2])) + l4


def packet(ip: bytes, ts: float = 1.0, proto: int = UDP, fragment: bool = False) -> Packet:
    return Packet(ts, ip[0] >> 4 if ip else 4, b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02", proto, 40000, 53,
                  ip=ip, fragment=fragment)


def ip6(nxt: int, ext: bytes = b"", l4: bytes = b"\x00" * 8) -> bytes:
    body = ext + l4
    return struct.pack("!IHBB16s16s", 6 << 28, len(body), nxt, 64, b"\x20" + b"\x00" * 15,
                       b"\x20" + b"\x01" * 15) + body


class TestNdpiView:
    def test_whole_packets_show_version_and_transport(self) -> None:
        assert ndpi_view(ip4(b"x" * 10), False) == 0x400 | 17
        assert ndpi_view(ip6(6, l4=b"\x00" * 20), False) == 0x600 | 6

    def test_ipv6_extension_headers_are_walked_like_ndpi(self) -> None:
        hop = bytes([17, 0]) + b"\x00" * 6                      # hop-by-hop, 8 bytes, then UDP
        assert ndpi_view(ip6(0, hop), False) == 0x600 | 17
        first_fragment = bytes([6, 0, 0, 1]) + b"\x00" * 4     # offset 0, more fragments: fed
        assert ndpi_view(ip6(44, first_fragment, l4=b"\x00" * 20), False) == 0x600 | 6
        assert ndpi_view(ip6(44, first_fragment), False) == 0   # but not with 8 bytes of a TCP header
        later_fragment = bytes([6, 0, 0, 0x11]) + b"\x00" * 4  # offset 2: dropped
        assert ndpi_view(ip6(44, later_fragment), False) == 0
        assert ndpi_view(ip6(59), False) == 0                    # no next header
        assert ndpi_view(ip6(60, bytes([17, 9])), False) == 0     # extension longer than the packet

    def test_packets_ndpireader_drops_are_not_fed(self) -> None:
        assert not ndpi_view(ip4(b"x" * 10), True)                      # non-first fragment (flagged)
        assert not ndpi_view(ip4(b"x" * 10, frag=3), False)             # fragment offset in the header
        assert ndpi_view(ip4(b"x" * 10, frag=0x2000), False)            # first fragment (MF only) is fed
        assert not ndpi_view(ip4(b"x" * 10, total=200), False)          # captured shorter than its length
        assert not ndpi_view(b"", False)
        assert not ndpi_view(b"\x45" + b"\x00" * 10, False)             # shorter than a header
        assert not ndpi_view(b"\x44" + b"\x00" * 40, False)             # header length 16
        assert not ndpi_view(b"\x75" + b"\x00" * 40, False)             # IP version 7

    def test_tcp_and_udp_without_their_whole_header_are_not_fed(self) -> None:
        """nDPI 4.2 parses such a packet with no transport header, and the extra dissection of a
        BitTorrent or QUIC flow then reads through the missing one (segfaults found by fuzzing)."""
        tcp = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 5 << 4, 0x18, 65535, 0, 0)
        assert ndpi_view(ip4(tcp, proto=6), False) == 0x400 | 6
        assert ndpi_view(ip4(tcp + b"data", proto=6), False) == 0x400 | 6
        assert not ndpi_view(ip4(b"", proto=6), False)                  # a bare IPv4 header
        assert not ndpi_view(ip4(tcp[:19], proto=6), False)             # TCP cut short
        assert not ndpi_view(ip4(tcp[:12] + b"\xf0" + tcp[13:] + b"x" * 30, proto=6), False)  # data offset 60 > 50
        assert not ndpi_view(ip4(tcp, proto=6, total=0), False)         # IPv4 total length 0 (below its header)
        assert not ndpi_view(ip4(b"x" * 10, total=25), False)           # UDP: 5 bytes within the IP length
        assert ndpi_view(ip4(b"", total=28), False) == 0x400 | 17       # UDP: a header and no payload
        v6 = ip6(17, l4=struct.pack("!HHHH", 50822, 443, 16, 0) + b"\x00" * 8)
        assert ndpi_view(v6, False) == 0x600 | 17
        assert not ndpi_view(v6[:4] + b"\x00\x00" + v6[6:], False)      # IPv6 payload length 0 (a "jumbogram")

    def test_packets_longer_than_65000_bytes_are_cut_for_ndpi(self) -> None:
        """nDPI 4.2's DNS dissector walks a name with a 16-bit offset that wraps past 65,535 and then
        never ends (ntop/nDPI#1803): what it is handed is cut to MAX_TO_NDPI, length fields to match."""
        from dpi_ndpi.detector import MAX_TO_NDPI, _cut

        big = ip4(b"\x3f" * (65535 - 28))
        cut = _cut(big)
        assert len(cut) == MAX_TO_NDPI and cut[:2] == big[:2] and cut[20:24] == big[20:24]
        assert int.from_bytes(cut[2:4], "big") == MAX_TO_NDPI and int.from_bytes(cut[24:26], "big") == MAX_TO_NDPI - 20
        v6 = ip6(17, l4=struct.pack("!HHHH", 1, 53, 65000, 0) + b"\x3f" * 64992)
        cut6 = _cut(v6)
        assert len(cut6) == MAX_TO_NDPI and int.from_bytes(cut6[4:6], "big") == MAX_TO_NDPI - 40
        assert int.from_bytes(cut6[44:46], "big") == MAX_TO_NDPI - 40 and ndpi_view(cut6, False) == 0x600 | 17
        small = ip4(b"x" * 100)
        assert _cut(small) is small
        assert not ndpi_view(b"\x45\x00\x00\x14" + b"\x00" * 65532, False)  # longer than nDPI can take


def test_a_flow_stays_on_its_first_transport(detector: Detector) -> None:
    """A packet whose bytes say TCP never reaches a flow nDPI started as UDP (its state is a union)."""
    flow = detector.new_flow(UDP)
    assert flow.feed(packet(ip4(bytes(range(7, 127)), dport=9999))) is None
    tcp_bytes = ip4(struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 0x50, 0x18, 1024, 0, 0) + b"GET / HTTP/1.1\r\n\r\n",
                    proto=6)
    assert flow.feed(packet(tcp_bytes, proto=TCP)) is None
    assert flow.packets == 1
    flow.release()


def test_detects_dns_and_reports_the_query(detector: Detector) -> None:
    query = dpkt.dns.DNS(id=7, qd=[dpkt.dns.DNS.Q(name="www.example.org", type=dpkt.dns.DNS_A)])
    flow = detector.new_flow(UDP)
    result = flow.feed(packet(ip4(bytes(query))))
    if result is None:  # nDPI may wait for the answer (extra dissection): end the flow instead
        result = flow.giveup()
    flow.release()
    assert result.label == "DNS" and result.confidence == "DPI"
    assert result.host == "www.example.org"
    assert result.category == "Network"


def test_undecodable_packets_do_not_count(detector: Detector) -> None:
    flow = detector.new_flow(UDP)
    for _ in range(50):
        assert flow.feed(packet(ip4(b"x", total=999))) is None
    assert flow.packets == 0
    flow.release()


def test_udp_budget_then_giveup_guesses_by_port(detector: Detector) -> None:
    """Past 24 UDP packets nDPI gives up; port 53 makes its guess DNS (ndpiReader's default)."""
    flow = detector.new_flow(UDP)
    results = [flow.feed(packet(ip4(bytes(range(7, 127))), ts=i)) for i in range(30)]
    done = [i for i, r in enumerate(results) if r is not None]
    assert done == [24], "the answer comes with packet 25 (ndpiReader: more than 24 packets)"
    result = results[24]
    assert result is not None and result.gave_up
    assert (result.label, result.confidence) == ("DNS", "Match by port")
    flow.release()


def test_closing_a_detector_waits_for_its_flows(abi: Any) -> None:
    det = Detector(abi)
    flows = [det.new_flow(TCP) for _ in range(3)]
    det.close()
    assert det.module is not None and det.live == 3
    flows[0].release()
    flows[0].release()  # idempotent
    assert det.live == 2
    del flows[1]
    gc.collect()  # a flow nobody ended frees its nDPI data when collected
    assert det.live == 1
    flows[-1].release()
    assert det.module is None
    with pytest.raises(RuntimeError):
        det.new_flow(TCP)


def test_the_flow_struct_is_made_by_the_first_packet(detector: Detector) -> None:
    """A flow nDPI is never handed a packet of (a SYN scan's, one another layer named first) costs no
    ndpi_flow_struct; the first packet makes it, and release frees it either way."""
    unfed = detector.new_flow(TCP)
    assert unfed.address == 0
    live = detector.live
    unfed.release()
    assert detector.live == live - 1 and unfed.address == 0
    assert unfed.feed(packet(ip4(b"GET / HTTP/1.1\r\n\r\n", proto=TCP))) is None  # released: nothing made
    assert unfed.address == 0
    fed = detector.new_flow(UDP)
    fed.feed(packet(ip4(bytes(range(7, 127))), ts=0))
    assert fed.address != 0 and fed.packets == 1
    fed.release()
    assert fed.address == 0 and detector.live == live - 1  # both made, both released
    with pytest.raises(RuntimeError, match="freed"):
        fed.giveup()  # never handed a freed struct


def test_http_payload_through_the_engine() -> None:
    with Classifier(layers=["ndpi"]) as clf:
        verdict = clf.classify_payload(b"GET /a HTTP/1.1\r\nHost: www.example.net\r\nUser-Agent: t\r\n\r\n",
                                       dst_port=8080)
    assert verdict.protocol == "HTTP" and verdict.source == "ndpi"
    assert verdict.metadata["host"] == "www.example.net"
    assert verdict.metadata["ndpi_label"].startswith("HTTP")
    assert verdict.confidence >= 0.9


def test_two_classifiers_have_their_own_modules() -> None:
    first = Classifier(layers=["ndpi"])
    second = Classifier(layers=["ndpi"])
    try:
        layers = [clf.plugins.plugin("ndpi") for clf in (first, second)]
        assert layers[0] is not layers[1]
        assert layers[0].detector.module != layers[1].detector.module
        packets = synthetic_packets(b"SSH-2.0-OpenSSH_9.0\r\n", TCP, 40000, 22, from_server=False)
        flows = list(first.classify_packets(packets))
        assert flows[0].verdict is not None and flows[0].verdict.protocol == "SSH"
    finally:
        first.close()
        second.close()


def test_ndpi_gets_a_capture_clock_that_never_goes_back(detector: Detector, monkeypatch: pytest.MonkeyPatch) -> None:
    """As ndpiReader clamps its clock: a packet stamped before the flow's last one is handed to nDPI at
    the last one's time (in ms).  The real nDPI runs; the wrapper only records what it was given."""
    given: list[int] = []
    process = detector.abi.process

    def recording(module: Any, address: int, ip: bytes, length: int, ms: int) -> Any:
        given.append(ms)
        return process(module, address, ip, length, ms)

    monkeypatch.setattr(detector.abi, "process", recording)
    flow = detector.new_flow(UDP)
    for ts in (5.0, 3.0, 5.0004, 7.25, -1.0):
        flow.feed(packet(ip4(bytes(range(7, 127)), dport=9999), ts=ts))
    flow.release()
    assert given == [5000, 5000, 5000, 7250, 7250]


def test_a_flow_keeps_its_view_slot_and_count_in_one_int(detector: Detector) -> None:
    """NdpiFlow.cell holds the first packet's view, its struct's slot and the packets fed; each reads back
    on its own, past the 256th packet, and a packet of another view is not fed."""
    flows = [detector.new_flow(1) for _ in range(2)]  # ICMP, so no budget: nDPI gets every packet until it answers
    for flow in flows:
        for i in range(300):
            flow.feed(packet(ip4(bytes(range(7, 127)), dport=9999), ts=float(i)))
    assert [flow.view for flow in flows] == [0x400 | 17] * 2
    assert [flow.packets for flow in flows] == [300, 300]
    assert flows[0].address and flows[1].address and flows[0].address != flows[1].address
    assert flows[0].feed(packet(ip6(6, l4=b"\x00" * 20), proto=TCP)) is None and flows[0].packets == 300
    assert flows[0].cell < 2 ** 60  # one 32-byte int
    for flow in flows:
        flow.release()
        assert (flow.packets, flow.address, flow.view) == (0, 0, -1)


def test_a_released_struct_is_cleared_and_taken_again(detector: Detector) -> None:
    """The arena frees nDPI's data inside a released struct (ndpi_free_flow_data: test_memory.py sees a
    leak without it), zeroes it, and gives the slot to the next flow."""
    import ctypes

    size = detector.abi.flow_size
    flow = detector.new_flow(TCP)
    http = b"GET /a HTTP/1.1\r\nHost: www.example.net\r\n\r\n"
    flow.feed(packet(ip4(http, proto=17, dport=80)))
    address = flow.address
    assert ctypes.string_at(address, size) != bytes(size)
    flow.release()
    assert ctypes.string_at(address, size) == bytes(size)
    again = detector.new_flow(UDP)
    again.feed(packet(ip4(bytes(range(7, 127)), dport=9999)))
    assert again.address == address
    again.release()


def test_the_arena_frees_its_blocks_with_the_module(abi: Any) -> None:
    """Blocks of BLOCK structs: a flow past the first block's last slot gets a second block; both go when
    the closed detector's last flow is released."""
    from dpi_ndpi.arena import BLOCK

    det = Detector(abi)
    flows = [det.new_flow(UDP) for _ in range(BLOCK + 1)]
    for flow in flows:
        flow.feed(packet(ip4(bytes(range(7, 127)), dport=9999)))
    assert len(det.arena.blocks) == 2 and det.arena.made == BLOCK + 1
    assert len({flow.address for flow in flows}) == BLOCK + 1
    assert flows[-1].address == det.arena.blocks[1]
    det.close()
    for flow in flows:
        flow.release()
    assert det.module is None and det.arena.blocks == [] and det.arena.made == 0


def test_done_and_released_are_states_not_counts(detector: Detector) -> None:
    """NdpiFlow keeps "done" as no clock and "released" as a cell no packet makes (the detector and the
    budget are class attributes): a flow made with any budget, even a nonsensical -1, starts neither
    done nor released."""
    flow = detector.flow_type(-1)()
    detector.live += 1  # as Detector.new_flow counts it, so release() balances
    assert not flow.done and not flow.released
    flow.release()
    assert flow.released and not flow.done
    flow.release()  # idempotent
