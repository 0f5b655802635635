"""The flow table: bidirectional flows keyed by transport, endpoints and VLAN.

Flows live in an ``OrderedDict`` kept in last-seen order (each packet moves
its flow to the end), so the idle flows are always at the front: expiring
them and evicting under the live-flow cap never scans the table.  A capture
whose clock jumps back breaks that order: a flow moved to the end with a
last-seen time before another's sits behind a flow that is not idle,
and the scan, which stops at the first flow that is not idle, would keep it
past its timeout (and -j 2, whose workers hold other flows in front of it,
would not).  Such flows are also kept in a heap by last-seen time, which the
scan drains as well (:meth:`FlowTable.moved`).

TCP: a FIN from both sides or a RST puts the flow into a short *closing*
state; the trailing ACKs still count on it, and a new SYN on the same
5-tuple (or the closing timeout) ends it, so a reused 5-tuple starts a new
flow instead of merging two connections.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from itertools import count
from typing import Iterator

from .model import (ACK, CLOSING, END_ACTIVE, END_EOF, END_EVICTED, END_FIN, END_IDLE, END_REUSED, END_RST, FIN,
                    KEEP_REASONLESS, REASON_BITS, REASON_MASK, REASON_OF, RST, SYN, TCP, Flow, FlowKey, Packet,
                    new_key)

__all__ = ["CLOSING", "CLOSE_AT", "END_ACTIVE", "END_EOF", "END_EVICTED", "END_FIN", "END_IDLE", "END_REUSED",
           "END_RST", "FlowTable"]

#: Flow._bits of each end reason the table sets (see dpicore.model.REASON_BITS).
_RST, _FIN, _IDLE, _EVICTED, _EOF = (REASON_BITS[r] for r in (END_RST, END_FIN, END_IDLE, END_EVICTED, END_EOF))
CLOSE_AT = "close_at"  # Flow.notes key: capture time after which the closed flow is gone

#: Every port number as one shared int object (see FlowTable.new_flow).
_PORTS = tuple(range(1 << 16))

#: Addresses the table keeps one object of (see FlowTable.new_flow); cleared when full.
ADDRESSES = 1 << 12


class FlowTable:
    def __init__(self, idle_timeout: float = 120.0, active_timeout: float = 1800.0,
                 max_flows: int = 1_000_000, close_timeout: float = 5.0) -> None:
        self.idle_timeout = idle_timeout
        self.active_timeout = active_timeout
        self.max_flows = max_flows
        self.close_timeout = close_timeout
        self.flows: OrderedDict[FlowKey, Flow] = OrderedDict()
        #: Closed flows by the time they go: a heap, as a capture's clock may go back (a queue kept a flow
        #: closed before a jump behind one closed after it, past its close time).
        self._closing: list[tuple[float, int, Flow]] = []
        #: The latest last-seen time of a flow moved to the end (see moved).
        self.horizon = float("-inf")
        #: Flows moved to the end behind the horizon, by last-seen time then arrival; each flow is in it
        #: once (``_queued``), its entry's time no later than its last_seen.
        self._behind: list[tuple[float, int, Flow]] = []
        self._queued: set[Flow] = set()
        self._order = count()
        self.evicted = 0
        self.created = 0
        #: One bytes object per address recently seen opening a flow (see new_flow).
        self._addresses: dict[bytes, bytes] = {}

    def __len__(self) -> int:
        return len(self.flows)

    def new_flow(self, key: FlowKey, pkt: Packet) -> Flow:
        """A flow for ``pkt``'s key; the SYN/ACK rule picks the client.

        The flow and its key hold the shared int object of each port, not the
        packet's own: a port above 256 is a 32-byte object, 64 bytes of every
        flow a table of a million holds.  Likewise the addresses: one object per
        address among the last ADDRESSES ones (a server's, a busy client's), not
        each first packet's own 48-byte copy.
        """
        ports = _PORTS
        addresses = self._addresses
        if len(addresses) >= ADDRESSES:
            addresses.clear()
        a = addresses.setdefault(key.addr_a, key.addr_a)
        b = addresses.setdefault(key.addr_b, key.addr_b)
        src, dst = (a, b) if pkt.src == a else (b, a)
        if pkt.proto == TCP and pkt.tcp_flags & (SYN | ACK) == SYN | ACK:
            client, cport = dst, ports[pkt.dport]
        else:
            client, cport = src, ports[pkt.sport]
        key = new_key(FlowKey, (key.proto, key.vlan, a, ports[key.port_a], b, ports[key.port_b]))
        self.created += 1
        # Positional: the same call by field names cost 0.4% of a run's instructions (CPython matches each
        # keyword against the parameters of __init__).
        return Flow(key, client, cport, pkt.ts, pkt.ts, pkt.number)

    def insert(self, flow: Flow) -> None:
        self.flows[flow.key] = flow

    def moved(self, flow: Flow) -> None:
        """``flow`` went to the end of the table, its last_seen updated.  One behind the latest (the capture's
        clock went back, or a batch ran its flows one after the other) is queued where expire finds it."""
        last = flow.last_seen
        if last >= self.horizon:
            self.horizon = last
        elif flow not in self._queued:
            self._queued.add(flow)
            heapq.heappush(self._behind, (last, next(self._order), flow))
            if len(self._behind) > 2 * len(self.flows) + 4096:
                self._compact()

    def _compact(self) -> None:
        """Drop the queue's flows that ended meanwhile (FIN, eviction): they stay in it until their time
        comes, and after a jump back every new flow is queued, so it outgrew the table it serves."""
        flows = self.flows
        self._behind = [e for e in self._behind if flows.get(e[2].key) is e[2]]
        heapq.heapify(self._behind)
        self._queued = {e[2] for e in self._behind}

    def remove(self, flow: Flow, reason: str) -> Flow:
        if self.flows.get(flow.key) is flow:
            del self.flows[flow.key]
        if not flow._bits & REASON_MASK:  # no end reason yet
            flow._bits |= REASON_BITS[reason]
        return flow

    def must_restart(self, flow: Flow, pkt: Packet) -> str | None:
        """Why ``pkt`` cannot join ``flow`` and starts a new one (None if it can)."""
        if pkt.ts - flow.first_seen > self.active_timeout:
            return END_ACTIVE
        if pkt.ts - flow.last_seen > self.idle_timeout:
            return END_IDLE
        if flow._bits & CLOSING:
            if pkt.tcp_flags & (SYN | ACK) == SYN:
                return END_REUSED
            if pkt.ts > flow.notes.get(CLOSE_AT, pkt.ts):
                # closed longer ago than close_timeout: a straggler starts anew
                return REASON_OF[flow._bits]
        return None

    def note_tcp_flags(self, flow: Flow, flags: int, direction: int, ts: float) -> None:
        """Track FIN/RST; schedules the flow's end once the connection is closed."""
        bits = flow._bits
        if bits & CLOSING:
            return
        if flags & RST:
            bits = bits & KEEP_REASONLESS | _RST
        elif flags & FIN:
            bits |= 1 << direction
            if bits & 3 != 3:
                flow._bits = bits
                return
            bits = bits & KEEP_REASONLESS | _FIN
        else:
            return
        flow._bits = bits | CLOSING
        flow.notes[CLOSE_AT] = ts + self.close_timeout
        heapq.heappush(self._closing, (ts + self.close_timeout, next(self._order), flow))

    def expire(self, now: float) -> Iterator[Flow]:
        """Remove and yield the flows that ended by ``now`` (closing and idle ones)."""
        closing = self._closing
        while closing and closing[0][0] < now:  # a straggler at exactly the close time still joins (must_restart)
            flow = heapq.heappop(closing)[2]
            if self.flows.get(flow.key) is flow:
                yield self.remove(flow, REASON_OF[flow._bits])
        flows = self.flows
        limit = now - self.idle_timeout
        while flows:
            key = next(iter(flows))
            flow = flows[key]
            if flow.last_seen >= limit:
                break
            del flows[key]
            yield _idle(flow)
        behind = self._behind
        while behind and behind[0][0] < limit:
            flow = heapq.heappop(behind)[2]
            self._queued.discard(flow)
            if flows.get(flow.key) is not flow:
                continue  # ended meanwhile
            if flow.last_seen < limit:
                del flows[flow.key]
                yield _idle(flow)
            else:
                self.moved(flow)  # seen again since it was queued: queued again if still behind

    def evict_for_new(self) -> Flow | None:
        """Make room for a new flow when the cap is reached: the least recently seen goes."""
        if len(self.flows) < self.max_flows:
            return None
        _, flow = self.flows.popitem(last=False)
        self.evicted += 1
        if not flow._bits & CLOSING:
            flow._bits = flow._bits & KEEP_REASONLESS | _EVICTED
        return flow

    def drain(self) -> Iterator[Flow]:
        """Remove and yield every flow (end of input), oldest first."""
        while self.flows:
            _, flow = self.flows.popitem(last=False)
            if not flow._bits & CLOSING:
                flow._bits = flow._bits & KEEP_REASONLESS | _EOF
            yield flow
        self._closing.clear()
        self._behind.clear()
        self._queued.clear()
        self.horizon = float("-inf")  # the next input (the next file of a directory) may be older


def _idle(flow: Flow) -> Flow:
    if not flow._bits & REASON_MASK or not flow._bits & CLOSING:
        flow._bits = flow._bits & KEEP_REASONLESS | _IDLE
    return flow
