"""libprotoident's filling rules (lpi_update_data of 2.0.15), checked through the C test double."""

from __future__ import annotations

import pytest

from dpicore.model import ACK, FIN, ICMP, PSH, RST, SYN, TCP, UDP, Packet

from dpi_lpi.binding import Library, open_library
from dpi_lpi.flowdata import OBSERVED_CAP, LpiFlowData

CLIENT, SERVER = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
C6, S6 = bytes(15) + b"\x01", bytes(15) + b"\x02"


def tcp(d: int, flags: int, seq: int, payload: bytes = b"", wire: int | None = None, v6: bool = False) -> Packet:
    src, dst = (C6, S6) if v6 else (CLIENT, SERVER)
    sport, dport = 40000, 80
    if d:
        src, dst, sport, dport = dst, src, dport, sport
    return Packet(0.0, 6 if v6 else 4, src, dst, TCP, sport, dport, flags, 0, payload,
                  len(payload) if wire is None else wire, seq=seq)


def udp(d: int, payload: bytes, wire: int | None = None, fragment: bool = False) -> Packet:
    src, dst, sport, dport = (CLIENT, SERVER, 5353, 53) if d == 0 else (SERVER, CLIENT, 53, 5353)
    return Packet(0.0, 4, src, dst, UDP, sport, dport, 0, 0, payload, len(payload) if wire is None else wire,
                  fragment=fragment)


def feed(packets: list[tuple[int, Packet]]) -> LpiFlowData:
    state = LpiFlowData()
    for d, pkt in packets:
        state.update(pkt, d)
    return state


@pytest.fixture(scope="module")
def seen(fake_lpi, parse_dump):
    """What the C side receives for a filled state (through to_struct and the ctypes call)."""
    lib = Library(str(fake_lpi), open_library(str(fake_lpi)))
    lib.initialise()
    yield lambda state: parse_dump(lib.guess(state.to_struct()).name)
    lib.free()


def test_tcp_first_payload_per_direction_from_isn_plus_one(seen) -> None:
    state = feed([
        (0, tcp(0, SYN, 1000)),
        (1, tcp(1, SYN | ACK, 5000)),
        (0, tcp(0, ACK, 1001)),
        (0, tcp(0, PSH | ACK, 1001, b"GET / HTTP/1.1\r\n\r\n")),
        (1, tcp(1, PSH | ACK, 5001, b"HTTP/1.1 200 OK\r\n")),
        (0, tcp(0, PSH | ACK, 1019, b"more")),
    ])
    assert state.complete
    got = seen(state)
    assert got["p0"] == b"GET ".hex() and got["p1"] == b"HTTP".hex()
    assert got["len"] == "18,17" and got["syn"] == "1,1" and got["seq"] == "1001,5001"
    assert got["sp"] == "80" and got["cp"] == "40000" and got["tp"] == "6"
    assert got["obs"] == "22,17"
    assert got["ip0"] == CLIENT.hex() and got["ip1"] == SERVER.hex()


def test_tcp_reordered_segment_does_not_become_the_first_payload(seen) -> None:
    state = feed([
        (0, tcp(0, SYN, 0xFFFFFFFF)),  # ISN+1 wraps to 0
        (0, tcp(0, PSH | ACK, 100, b"LATE")),  # arrives before the segment at ISN+1
        (0, tcp(0, PSH | ACK, 0, b"EARLY SEGMENT")),
    ])
    got = seen(state)
    assert got["p0"] == b"EARL".hex() and got["len"] == "13,0" and got["seq"] == "0,0"
    assert got["obs"] == "17,0"


def test_rst_counts_in_observed_but_gives_no_payload_and_no_ports(seen) -> None:
    state = feed([(1, tcp(1, RST | ACK, 77, b"boom", wire=4)), (0, tcp(0, PSH | ACK, 9, b"ABCD"))])
    got = seen(state)
    assert got["obs"] == "4,4" and got["p1"] == "00000000" and got["len"] == "4,0"
    # The RST came first but the ports come from the first non-RST packet.
    assert (got["sp"], got["cp"]) == ("80", "40000")


def test_ports_come_from_the_first_packet_even_when_it_is_the_responders(seen) -> None:
    state = feed([(1, tcp(1, SYN | ACK, 5000)), (0, tcp(0, ACK, 1001))])
    got = seen(state)
    assert (got["sp"], got["cp"]) == ("40000", "80")


def test_without_syn_the_first_payload_segment_sets_the_sequence(seen) -> None:
    state = feed([(0, tcp(0, ACK, 500)), (0, tcp(0, PSH | ACK, 700, b"SSH-2.0")), (0, tcp(0, ACK, 690, b"x"))])
    got = seen(state)
    assert got["p0"] == b"SSH-".hex() and got["seq"] == "700,0" and got["syn"] == "1,0"


def test_short_payload_is_masked_to_its_wire_length_and_wire_length_wins(seen) -> None:
    state = feed([(0, tcp(0, SYN, 1)), (0, tcp(0, PSH, 2, b"\x16\x03\x01\x02\x00", wire=2)),
                  (1, tcp(1, SYN | ACK, 9)), (1, tcp(1, PSH, 10, b"AB", wire=1500))])
    got = seen(state)
    assert got["p0"] == "16030000"  # only two bytes on the wire
    assert got["p1"] == b"AB".hex() + "0000" and got["len"] == "2,1500"  # snap length cut the capture


def test_observed_stops_after_32_kib(seen) -> None:
    packets = [(0, tcp(0, SYN, 0))] + [(0, tcp(0, ACK, 1 + i * 1400, b"D" * 4, wire=1400)) for i in range(30)]
    state = feed(packets)
    assert state.observed[0] == 24 * 1400  # 23 * 1400 = 32200 <= 32768, so the 24th is still added
    assert state.observed[0] > OBSERVED_CAP
    assert seen(state)["obs"] == f"{24 * 1400},0"


def test_udp_keeps_the_first_datagram_per_direction(seen) -> None:
    state = feed([(0, udp(0, b"")), (0, udp(0, b"\x12\x34\x01\x00")), (0, udp(0, b"next")),
                  (1, udp(1, b"\x12\x34\x81\x80"))])
    got = seen(state)
    assert got["p0"] == "12340100" and got["p1"] == "12348180" and got["len"] == "4,4"
    assert got["sp"] == "53" and got["cp"] == "5353" and got["tp"] == "17" and got["obs"] == "8,4"
    assert got["syn"] == "0,0" and state.complete


def test_non_first_fragment_carries_nothing() -> None:
    state = feed([(0, udp(0, b"", wire=1480, fragment=True)), (0, udp(0, b"abcd"))])
    assert state.observed[0] == 4 and state.payload_len[0] == 4


def test_ipv6_leaves_ips_zero(seen) -> None:
    state = feed([(0, tcp(0, PSH, 1, b"hello", v6=True)), (1, tcp(1, PSH, 1, b"world", v6=True))])
    got = seen(state)
    assert got["ip0"] == got["ip1"] == "00000000" and got["p0"] == b"hell".hex()


def test_other_transports_are_complete_at_once() -> None:
    state = LpiFlowData()
    assert not state.complete
    state.update(Packet(0.0, 4, CLIENT, SERVER, ICMP, payload=b"\x08\x00", payload_len=8), 0)
    assert state.complete and state.trans_proto == ICMP


def test_tcp_flow_is_not_complete_with_one_direction_only() -> None:
    state = feed([(0, tcp(0, SYN, 1)), (0, tcp(0, PSH, 2, b"GET ")), (1, tcp(1, FIN | ACK, 7))])
    assert not state.complete
