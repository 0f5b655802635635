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
