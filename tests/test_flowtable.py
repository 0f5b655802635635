"""The flow table, driven through the engine with no layers: keys, client
choice, timeouts, FIN/RST endings, 5-tuple reuse and the live-flow cap.

Packets are decoded from real frames (tests/helpers/frames.py).
"""

from __future__ import annotations

from dpicore.config import Config
from dpicore.engine import Engine
from dpicore.flowtable import FlowTable
from dpicore.model import Flow, FlowKey, Packet
from dpicore.plugins import PluginSet
from tests.helpers.frames import ACK, FIN, PSH, RST, SYN, addr, packet, tcp_session


def engine(**settings) -> Engine:
    config = Config(**settings)
    return Engine(PluginSet(config), config)


def run(packets: list[Packet], **settings) -> list[Flow]:
    return list(engine(**settings).run(packets))


def test_key_is_bidirectional_and_includes_transport_and_vlan() -> None:
    a = packet(1.0, "10.0.0.1", 1111, "10.0.0.2", 80)
    b = packet(1.1, "10.0.0.2", 80, "10.0.0.1", 1111)
    assert FlowKey.of(a) == FlowKey.of(b)
    u = packet(1.0, "10.0.0.1", 1111, "10.0.0.2", 80, proto="udp")
    assert FlowKey.of(u) != FlowKey.of(a)
    a.vlan = 5
    assert FlowKey.of(a) != FlowKey.of(b)
    flows = run([packet(1.0, "10.0.0.1", 1111, "10.0.0.2", 80), packet(1.1, "10.0.0.2", 80, "10.0.0.1", 1111),
                 u])
    assert len(flows) == 2
    tcp_flow = next(f for f in flows if f.proto == 6)
    assert (tcp_flow.c2s_packets, tcp_flow.s2c_packets) == (1, 1)


def test_client_is_the_first_sender() -> None:
    (flow,) = run([packet(1.0, "10.0.0.9", 53, "10.0.0.1", 5353, proto="udp"),
                   packet(1.1, "10.0.0.1", 5353, "10.0.0.9", 53, proto="udp")])
    assert (flow.client, flow.client_port, flow.server_port) == (addr("10.0.0.9"), 53, 5353)
    assert (flow.c2s_packets, flow.s2c_packets) == (1, 1)


def test_syn_sender_is_client_when_syn_ack_comes_first() -> None:
    """The capture started after the SYN: the SYN/ACK's receiver opened the connection."""
    pk = tcp_session()[1:]
    (flow,) = run(pk)
    assert (flow.client, flow.client_port, flow.server, flow.server_port) == \
        (addr("10.0.0.1"), 40000, addr("10.0.0.2"), 80)
    assert (flow.c2s_packets, flow.s2c_packets) == (4, 3)
    assert flow.c2s_bytes == sum(p.wire_len for p in pk if p.src == addr("10.0.0.1"))


def test_idle_timeout_splits_a_flow_and_expires_others() -> None:
    e = engine(idle_timeout=10.0)
    assert e.feed(packet(0.0, sport=1)) == []
    assert e.feed(packet(5.0, sport=2)) == []
    ended = e.feed(packet(10.5, sport=2))       # flow 1 idle for 10.5 s: expired by the clock
    assert [(f.client_port, f.end_reason) for f in ended] == [(1, "idle")]
    ended = e.feed(packet(25.0, sport=2))       # same key, 14.5 s later: a new flow
    assert [(f.client_port, f.end_reason, f.packets) for f in ended] == [(2, "idle", 2)]
    (last,) = e.flush()
    assert (last.client_port, last.packets, last.end_reason, last.first_seen) == (2, 1, "eof", 25.0)


def test_no_split_within_idle_timeout() -> None:
    flows = run([packet(t, sport=1) for t in (0.0, 9.0, 18.0, 27.0)], idle_timeout=10.0)
    assert [f.packets for f in flows] == [4]


def test_active_timeout_cuts_long_flows() -> None:
    flows = run([packet(float(t), sport=1) for t in range(0, 31)], idle_timeout=100.0, active_timeout=10.0)
    assert [f.packets for f in flows] == [11, 11, 9]
    assert [f.end_reason for f in flows] == ["active", "active", "eof"]
    assert [f.first_seen for f in flows] == [0.0, 11.0, 22.0]


def test_fin_fin_ends_the_flow_and_trailing_ack_stays() -> None:
    pk = tcp_session(close="fin")
    e = engine()
    ended = [f for p in pk for f in e.feed(p)]
    assert ended == []  # closing, waiting for stragglers
    ended = e.feed(packet(pk[-1].ts + 30, sport=5555))  # the clock moves past the close timeout
    closed = [f for f in ended if f.client_port == 40000]
    assert len(closed) == 1 and closed[0].packets == len(pk) and closed[0].end_reason == "fin"


def test_single_fin_does_not_end_the_flow() -> None:
    pk = tcp_session(close="fin")[:-2]  # only the client's FIN
    (flow,) = run(pk + [packet(pk[-1].ts + 60, "10.0.0.2", 80, "10.0.0.1", 40000, flags=ACK)])
    assert flow.end_reason == "eof" and flow.packets == len(pk) + 1


def test_rst_ends_the_flow() -> None:
    pk = tcp_session(close="rst")
    flows = run(pk + [packet(pk[-1].ts + 0.01, "10.0.0.2", 80, "10.0.0.1", 40000, flags=RST)])
    assert [(f.packets, f.end_reason) for f in flows] == [(len(pk) + 1, "rst")]


def test_new_syn_on_reused_5_tuple_starts_a_new_flow() -> None:
    first = tcp_session(t0=100.0, close="fin")
    second = tcp_session(t0=100.5, close="rst")  # same ports, before the close timeout
    flows = run(first + second)
    assert [(f.packets, f.end_reason, f.first_seen) for f in flows] == [
        (len(first), "fin", 100.0), (len(second), "rst", 100.5)]
    after_rst = tcp_session(t0=100.0, close="rst") + tcp_session(t0=100.2, close="fin")
    assert [f.end_reason for f in run(after_rst)] == ["rst", "fin"]


def test_syn_retransmission_does_not_split_an_open_flow() -> None:
    syn = packet(1.0, flags=SYN, seq=5)
    flows = run([syn, packet(2.0, flags=SYN, seq=5), packet(2.1, "10.0.0.2", 80, "10.0.0.1", 40000, SYN | ACK)])
    assert [f.packets for f in flows] == [3]


def test_cap_evicts_least_recently_seen_first() -> None:
    e = engine(max_flows=3)
    for port, t in ((1, 0.0), (2, 1.0), (3, 2.0)):
        assert e.feed(packet(t, sport=port)) == []
    e.feed(packet(3.0, sport=1))                       # flow 1 is now the most recent
    ended = e.feed(packet(4.0, sport=4))               # a fourth flow: flow 2 goes
    assert [(f.client_port, f.end_reason) for f in ended] == [(2, "evicted")]
    ended = e.feed(packet(5.0, sport=5))
    assert [(f.client_port, f.end_reason) for f in ended] == [(3, "evicted")]
    assert len(e.table) == 3 and e.table.evicted == 2 and e.stats.evicted == 2
    rest = e.flush()
    assert sorted(f.client_port for f in rest) == [1, 4, 5] and {f.end_reason for f in rest} == {"eof"}
    assert [f.packets for f in rest if f.client_port == 1] == [2]


def test_evicting_a_closing_flow_keeps_its_reason() -> None:
    e = engine(max_flows=1)
    for p in tcp_session(close="fin"):
        e.feed(p)
    (ended,) = e.feed(packet(100.2, sport=9, proto="udp"))
    assert ended.end_reason == "fin"


def test_flush_reports_every_flow_once_in_first_seen_order() -> None:
    pk = [packet(float(i), sport=1000 + i % 7, payload=b"x", seq=i) for i in range(50)]
    flows = run(pk)
    assert len(flows) == 7 and sum(f.packets for f in flows) == 50
    assert len({id(f) for f in flows}) == 7


def test_flowtable_unit_new_flow_picks_client() -> None:
    t = FlowTable()
    synack = packet(1.0, "10.0.0.2", 80, "10.0.0.1", 40000, flags=SYN | ACK)
    f = t.new_flow(FlowKey.of(synack), synack)
    assert (f.client_port, f.server_port) == (40000, 80)
    data = packet(1.0, "10.0.0.2", 80, "10.0.0.1", 40000, flags=PSH | ACK, payload=b"x")
    g = t.new_flow(FlowKey.of(data), data)
    assert (g.client_port, g.server_port) == (80, 40000)
    fin_only = packet(1.0, flags=FIN | ACK)
    assert t.new_flow(FlowKey.of(fin_only), fin_only).client_port == 40000


def test_engine_reused_for_an_older_input_still_expires_idle_flows() -> None:
    """Each file of a directory run is one run() of the same engine; the next file may be older."""
    e = engine(idle_timeout=10.0)
    list(e.run([packet(2_000_000_000.0, sport=1)]))
    later_file = [packet(1_600_000_000.0, sport=2), packet(1_600_000_100.0, sport=3)]
    ended = [(f.client_port, f.end_reason) for f in e.run(later_file)]
    assert ended == [(2, "idle"), (3, "eof")]


def test_flows_hold_shared_port_objects() -> None:
    """A flow and its key keep the one shared int of each port, not the packet's own (64 bytes of each
    flow of a million-flow table); the values are the packet's."""
    table = FlowTable()
    first, second = (packet(1.0, sport=int(f"4000{i}"), dport=int("9999")) for i in range(2))
    assert first.dport is not second.dport, "decoded packets carry their own ints"
    a, b = (table.new_flow(FlowKey.of(p), p) for p in (first, second))
    assert (a.client_port, a.server_port, b.client_port) == (40000, 9999, 40001)
    assert a.server_port is b.server_port is a.key.port_b is b.key.port_b
    assert a.key == FlowKey.of(first) and b.key == FlowKey.of(second)


def test_a_flow_behind_a_clock_jump_still_times_out() -> None:
    """The scan stops at the first flow that is not idle.  When the capture's clock goes back, a flow
    moved to the end can be older than one in front of it: B (t=100000) shielded A (t=1000) from the
    scan at 100500, A then took a packet at 1001, and -j 2, whose worker held A without B, split A in
    two.  Found by differential fuzzing (-j 1 against -j 2 on concatenated corpus captures)."""
    b = packet(100000.0, "10.0.0.3", 4000, "10.0.1.1", 4001, proto="udp", payload=b"b")
    a = packet(1000.0, "10.0.0.1", 5000, "10.0.0.2", 5001, proto="udp", payload=b"a")
    b2 = packet(100500.0, "10.0.0.3", 4000, "10.0.1.1", 4001, proto="udp", payload=b"b")
    a2 = packet(1001.0, "10.0.0.1", 5000, "10.0.0.2", 5001, proto="udp", payload=b"a")
    flows = run([b, a, b2, a2], idle_timeout=600.0)
    a_flows = sorted((f.first_seen, f.packets, f.end_reason) for f in flows if f.client_port == 5000)
    assert a_flows == [(1000.0, 1, "idle"), (1001.0, 1, "eof")]
    # as one process without B gives it: the shard of a -j 2 worker
    alone = sorted((f.first_seen, f.packets, f.end_reason) for f in run([a, b2, a2], idle_timeout=600.0)
                   if f.client_port == 5000)
    assert alone == a_flows



def _ports(flows: list[Flow], *ports: int) -> list[tuple[int, int]]:
    return sorted((f.client_port, f.packets) for f in flows if f.client_port in ports)


def test_a_closed_flow_behind_a_clock_jump_goes_at_its_close_time() -> None:
    """X closes at t=100 (gone at 105), the clock goes back, Y closes at t=50 (gone at 55); a packet at
    101.5 scans; Y's late ACK comes at t=53.  A queue in closing order kept Y behind X past its close
    time, so the ACK joined Y; a -j 2 worker without X ended Y at the scan (regression fuzzing)."""
    def conn(t: float, server: str, port: int) -> list[Packet]:
        c = "10.0.0.1"
        return [packet(t, c, port, server, 80, flags=SYN), packet(t + .01, server, 80, c, port, flags=SYN | ACK),
                packet(t + .02, c, port, server, 80), packet(t + .03, c, port, server, 80, flags=FIN | ACK),
                packet(t + .04, server, 80, c, port, flags=FIN | ACK)]

    x, y = conn(100.0, "10.0.3.9", 5000), conn(50.0, "10.0.1.9", 6000)
    rest = [packet(101.5, "10.0.0.1", 7000, "10.0.1.9", 81, flags=SYN), packet(53.0, "10.0.0.1", 6000, "10.0.1.9", 80)]
    assert _ports(run(x + y + rest), 6000, 7000) == _ports(run(y + rest), 6000, 7000) == [(6000, 1), (6000, 5), (7000, 1)]


def test_a_flow_just_behind_another_is_not_shielded_by_it() -> None:
    """X moved to the end 0.53 s behind W was trusted to the next scan (a second later at most), but
    its late packet came before that: with W in the table X took it, without W (a -j 2 worker) it
    started a new flow (regression fuzzing)."""
    w = [packet(33.51, "10.0.0.3", 4000, "10.0.1.1", 4001, proto="udp", payload=b"w")]
    x = [packet(32.98, "10.0.0.1", 5000, "10.0.0.2", 5001, proto="udp", payload=b"x")]
    rest = [packet(63.5, "10.0.0.5", 6000, "10.0.0.6", 6001, proto="udp", payload=b"s"),
            packet(30.79, "10.0.0.1", 5000, "10.0.0.2", 5001, proto="udp", payload=b"x")]
    assert _ports(run(w + x + rest, idle_timeout=30.0), 5000) == _ports(run(x + rest, idle_timeout=30.0), 5000) \
        == [(5000, 1), (5000, 1)]


def test_the_queue_behind_a_clock_jump_follows_the_table_not_the_capture() -> None:
    """After a jump back every new flow is queued; ended and evicted ones stayed queued until their idle
    time, so 200,000 flows under a cap of 1,000 held 199,500 entries (regression fuzzing)."""
    e = engine(max_flows=100)
    e.feed(packet(1e6, "10.9.0.1", 1, "10.9.0.2", 2, proto="udp", payload=b"j"))
    most = 0
    for i in range(20_000):
        src = f"10.1.{i // 250}.{i % 250 + 1}"
        e.feed(packet(1.0 + i * 1e-5, src, 1000, "10.2.0.1", 53, proto="udp", payload=b"q"))
        most = max(most, len(e.table._behind))
    assert most <= 2 * 100 + 4096 + 1


def test_fin_mask_final_and_end_reason_share_one_int_without_touching_each_other() -> None:
    """Flow keeps the three in one slot (Flow._bits); each property reads and writes only its own bits."""
    import pytest

    from dpicore.model import CLIENT_B, END_REASONS

    pkt = packet(1.0, "10.0.0.1", 1111, "10.0.0.2", 80)
    pkt.number = 2 ** 40 + 3
    flow = FlowTable().new_flow(FlowKey.of(pkt), pkt)
    assert (flow.fin_mask, flow.final, flow.end_reason, flow.number) == (0, False, "", 2 ** 40 + 3)
    for number in (0, 1, 255, 2 ** 40 + 3):
        flow.number = number
        for mask in range(8):
            for final in (False, True):
                for reason in END_REASONS:
                    flow.fin_mask, flow.final, flow.end_reason = mask, final, reason
                    assert (flow.fin_mask, flow.final, flow.end_reason, flow.number) == (mask, final, reason, number)
                    flow.final = not final
                    assert (flow.fin_mask, flow.final, flow.end_reason) == (mask, not final, reason)
                    assert flow.number == number and (flow.client, flow.client_port) == (pkt.src, 1111)
                    assert flow._bits < 256  # one of CPython's small ints
    with pytest.raises(ValueError, match="end_reason must be one of"):
        flow.end_reason = "gone"
    with pytest.raises(ValueError, match="three bits"):
        flow.fin_mask = 8
    # A client at the key's second end (CLIENT_B, the top bit) keeps its reasons and its end too.
    answer = packet(1.0, "10.0.0.1", 80, "10.0.0.2", 40000, flags=SYN | ACK)
    flow = FlowTable().new_flow(FlowKey.of(answer), answer)
    for reason in END_REASONS:
        flow.end_reason, flow.fin_mask = reason, 7
        assert flow._bits >= CLIENT_B
        assert (flow.end_reason, flow.fin_mask, flow.client, flow.client_port) == (reason, 7, answer.dst, 40000)


def test_the_server_end_is_the_end_of_the_key_that_is_not_the_clients() -> None:
    """Both ends are read from the key (a bit says which is the client's); a constructor given the server's
    checks it, and a call written for the earlier field order (server and its port after the client's port)
    fails."""
    import pytest

    from dpicore.model import parse_ip

    # A SYN/ACK seen first: the flow table makes its receiver the client, whichever end of the key it is.
    for src, dst in (("10.0.0.9", "10.0.0.1"), ("10.0.0.1", "10.0.0.9")):
        pkt = packet(1.0, src, 80, dst, 40000, flags=SYN | ACK)
        flow = FlowTable().new_flow(FlowKey.of(pkt), pkt)
        assert (flow.client, flow.client_port) == (pkt.dst, 40000)
        assert (flow.server, flow.server_port) == flow.ends()[2:] == (pkt.src, 80)
        assert flow.ends()[:2] == (pkt.dst, 40000) and flow.direction_of(pkt) == 1  # S2C
    # One address, two ports: the ports tell the ends apart.
    pkt = packet(1.0, "10.0.0.1", 5000, "10.0.0.1", 53, proto="udp")
    flow = FlowTable().new_flow(FlowKey.of(pkt), pkt)
    assert (flow.client_port, flow.server_port) == (5000, 53)
    key = FlowKey.of(pkt)
    client, server = parse_ip("10.0.0.1"), parse_ip("10.0.0.1")
    assert Flow(key, client, 5000, 1.0, 1.0, server=server, server_port=53).server_port == 53
    with pytest.raises(ValueError, match="not the key's other end"):
        Flow(key, client, 5000, 1.0, 1.0, server=server, server_port=54)
    with pytest.raises(ValueError, match="not one of the key's"):
        Flow(key, parse_ip("10.0.0.2"), 5000, 1.0, 1.0, server=server)
    with pytest.raises(ValueError, match="packet's number"):
        Flow(key, client, 5000, 1.0, 1.0, -1)
    with pytest.raises(TypeError, match="packet's number"):
        Flow(key, client, 5000, server, 53, 1.0, 1.0)  # type: ignore[arg-type]  # the earlier order
    with pytest.raises(ValueError, match="packet's number"):
        flow.number = -1
    import numpy as np

    assert Flow(key, client, 5000, 1.0, 1.0, np.int64(7)).number == 7  # the batch decoder's columns


def test_number_state_and_errors_share_a_slot() -> None:

    pkt = packet(1.0, "10.0.0.1", 1111, "10.0.0.2", 80)
    flow = Flow(FlowKey.of(pkt), pkt.src, 1111, 1.0, 1.0, 12)
    assert flow._rare == 12 and flow.number == 12  # the number alone, until state or errors are used
    flow.errors.append("x")
    assert flow.errors == ["x"] and flow._rare._state is None and flow.number == 12  # type: ignore[union-attr]
    flow.state["layer"] = 1
    flow.number = 13
    assert flow.state == {"layer": 1} and flow.errors == ["x"] and flow.number == 13
    other = Flow(FlowKey.of(pkt), pkt.src, 1111, 1.0, 1.0, state={"a": 2}, errors=["y"])
    assert (other.state, other.errors) == ({"a": 2}, ["y"])
