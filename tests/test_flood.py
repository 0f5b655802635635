"""A flood of 200k one-packet flows against a cap of 10k live flows: the table
stays bounded, 190k flows are evicted, every flow is reported exactly once,
and the number of live Python objects does not grow with the number of flows seen.

A layer that holds 1 KiB of per-flow state checks that eviction really
releases what layers attached (dpi_flow_end once per flow).
"""

from __future__ import annotations

import gc
import sys

from dpicore import LayerInfo, hookimpl
from dpicore.config import Config
from dpicore.engine import Engine
from dpicore.model import UDP, Packet
from dpicore.plugins import PluginSet
from dpicore.protocols import ProtocolRegistry

FLOWS = 200_000
CAP = 10_000


class Stateful:
    def __init__(self) -> None:
        self.new = 0
        self.ended = 0

    @hookimpl
    def dpi_layer_info(self) -> LayerInfo:
        return LayerInfo(id="stateful", max_packets=4)

    @hookimpl
    def dpi_flow_new(self) -> bytearray:
        self.new += 1
        return bytearray(1024)

    @hookimpl
    def dpi_classify(self, state: bytearray) -> None:
        state[0] += 1

    @hookimpl
    def dpi_flow_end(self, state: bytearray) -> None:
        self.ended += 1
        state.clear()


def flood(n: int):
    """One UDP packet per flow, from distinct (address, port) clients, 10 µs apart."""
    dst = bytes([192, 0, 2, 1])
    for i in range(n):
        src = bytes([10, (i >> 16) & 0xFF, (i >> 8) & 0xFF, i & 0xFF])
        yield Packet(1_700_000_000.0 + i * 1e-5, 4, src, dst, UDP, 1024 + (i % 50_000), 53, 0, 60, b"q", 1,
                     b"", 0, 0, i + 1)


def test_flood_keeps_the_table_bounded() -> None:
    layer = Stateful()
    config = Config(max_flows=CAP)
    plugins = PluginSet(config, registry=ProtocolRegistry())
    assert plugins.add("stateful", layer)
    engine = Engine(plugins, config)
    table = engine.table
    reported = bytearray(FLOWS + 1)  # times each flow (by its first packet's number) was reported
    max_len = 0
    at_cap = 0
    for i, pkt in enumerate(flood(FLOWS)):
        for flow in engine.feed(pkt):
            assert flow.end_reason == "evicted"
            reported[flow.number] += 1
        if len(table) > max_len:
            max_len = len(table)
        if i == 2 * CAP:
            gc.collect()
            at_cap = sys.getallocatedblocks()
    gc.collect()
    before_flush = sys.getallocatedblocks()
    assert max_len == CAP
    assert table.evicted == FLOWS - CAP and engine.stats.evicted == FLOWS - CAP
    rest = engine.flush()
    assert {f.end_reason for f in rest} == {"eof"} and len(rest) == CAP
    for flow in rest:
        reported[flow.number] += 1
    assert reported[1:] == b"\x01" * FLOWS, "every flow reported exactly once"
    assert len(table) == 0
    assert layer.new == FLOWS and layer.ended == FLOWS, "every flow's layer state was released"
    # 180k more flows went through between the two measurements while the table stayed full;
    # keeping even one object per evicted flow would add 180k allocated blocks.
    growth = before_flush - at_cap
    assert growth < 20_000, f"{growth} more allocated blocks while the table stayed at {CAP} flows"


def scan_records() -> list[tuple[float, bytes]]:
    """A SYN scan of 3,000 ports: closed ones answer RST/ACK, open ones complete the handshake, some
    with a banner; UDP probes between them."""
    from tests.helpers.frames import ACK, PSH, RST, SYN, eth, tcp4, udp4

    recs = []
    t = 1_600_000_000.0
    for i in range(3000):
        me, port = ("10.9.0.1", 50000 + i % 300), 1 + i % 1024
        target = f"10.8.{i // 250}.{i % 250}"
        out = [tcp4(*me, target, port, SYN, b"", 100 + i)]
        if i % 3 == 0:
            out.append(tcp4(target, port, *me, RST | ACK, b"", 0))
        if i % 7 == 0:
            out += [tcp4(target, port, *me, SYN | ACK, b"", 5000), tcp4(*me, target, port, ACK, b"", 101 + i)]
            if i % 14 == 0:
                out.append(tcp4(target, port, *me, PSH | ACK, b"SSH-2.0-OpenSSH_8.9\r\n", 5001))
        if i % 11 == 0:
            out.append(udp4(me[0], 40000 + i, target, 53, b""))
        for frame in out:
            recs.append((t, eth(frame)))
            t += 0.001
    return recs


def test_a_scan_gets_the_records_of_layers_started_with_the_first_packet(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The shipped layers all hold payload-less packets, so a flow's layers start only once it has a
    packet they would not hold (engine.defer): a scan's flows then cost no layer state.  The records
    must be those of an engine that starts every layer with the flow's first packet."""
    from dpicore import Classifier
    from dpicore.output import flow_record
    from tests.helpers.frames import pcap_bytes

    path = tmp_path / "scan.pcap"
    path.write_bytes(pcap_bytes(scan_records()))
    for all_layers in (False, True):
        runs = []
        for defer in (None, 0):
            with Classifier(config=Config(all_layers=all_layers)) as clf:
                if defer is not None:
                    clf.engine.defer = defer
                else:
                    assert {layer.id for layer in clf.engine.layers} >= {"heuristics", "ndpi", "ml"}
                    assert clf.engine.defer > 0, "the shipped layers all hold payload-less packets"
                runs.append(sorted(str(flow_record(f, all_layers)) for f in clf.classify_pcap(path)))
        assert len(runs[0]) == 3273 and runs[0] == runs[1]
