"""Classify a capture batch by batch: flows already decided cost numpy, not Python.

Most packets belong to flows whose verdict is final (about 80% in the nDPI
corpus, far more in bulk traffic), and for those the engine only updates
counters.  Here a batch's common-case headers are decoded by numpy
(:mod:`dpicore.decode.batch`), packets are grouped by flow, and a group
whose flow is final — with no SYN/FIN/RST in it and no timeout inside it —
is accounted in one step.  Every other packet goes through the scalar
decoder and :meth:`Engine.feed`, in order within its flow.

Semantics equal the packet-by-packet path except for timing granularity:
idle flows are expired at batch boundaries, so the order in which ended
flows are reported can differ (the set of flows and their records do not).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from .decode.batch import Batch, Headers, batches, decode_headers
from .decode.capture import CaptureError
from .decode.source import CaptureSource
from .engine import Engine
from .flowtable import CLOSING
from .model import Flow, FlowKey, Packet

_CONTROL = 0x07  # FIN | SYN | RST: packets that change a connection's state


def classify_batched(engine: Engine, source: CaptureSource, shard: tuple[int, int] | None = None
                     ) -> Iterator[Flow]:
    """Every flow of ``source``'s capture, yielded as it ends.

    ``shard=(i, n)`` keeps only the flows whose key hashes to ``i`` modulo
    ``n``, so ``n`` processes can split one file without splitting a flow.
    """
    try:
        for batch in batches(source.path):
            yield from _batch(engine, source, batch, shard)
    except CaptureError as exc:
        source.fail(exc)
    finally:
        source.finish()
    yield from engine.flush()


def shard_of(key: FlowKey, n: int) -> int:
    """Stable (process-independent) shard of a flow key."""
    h = key.proto * 1_000_003 + key.vlan * 8191 + key.port_a * 131 + key.port_b
    h ^= int.from_bytes(key.addr_a, "big") * 2_654_435_761 ^ int.from_bytes(key.addr_b, "big") * 40_503
    return h % n


def _batch(engine: Engine, source: CaptureSource, batch: Batch, shard: tuple[int, int] | None) -> Iterator[Flow]:
    source.frames = batch.first + len(batch) - 1
    h = decode_headers(batch)
    # The packet-by-packet path scans for idle flows before the first packet at or past each second
    # of capture time.  Most scans end nothing, and cutting the batch at each one would leave numpy
    # tiny segments, so the batch is cut only at a scan that can end a flow: one whose time reached
    # a deadline in the table as it was when the segment started (FlowTable.next_due), or one at
    # which a packet of the segment could have created a due deadline itself: a FIN/RST (or a frame
    # numpy did not decode) closes a connection close_timeout after it, a new flow idles out
    # idle_timeout after it.  A skipped scan would have ended nothing, so both paths end the same flows.
    table = engine.table
    idle, close = table.idle_timeout, table.close_timeout
    inf = float("inf")
    due = engine.next_expiry
    closing, head = table.next_due()
    lo = lo_fin = inf  # earliest capture time in the current segment, of any packet / of one that may close
    start = 0
    may_close = (~h.ok | (h.flags & 0x05 != 0)).tolist()
    for i, t in enumerate(batch.ts.tolist()):
        if t >= due:
            due = t + 1.0
            if closing <= t or head < t - idle or lo_fin + close <= t or lo < t - idle:
                if i > start:
                    yield from _segment(engine, source, batch, h, start, i, shard)
                ended = engine.tick(t)
                if ended:
                    yield from ended
                closing, head = table.next_due()
                start, lo, lo_fin = i, t, t if may_close[i] else inf
                continue
        if t < lo:
            lo = t
        if t < lo_fin and may_close[i]:
            lo_fin = t
    if start < len(batch):
        yield from _segment(engine, source, batch, h, start, len(batch), shard)
    engine.next_expiry = due


def _segment(engine: Engine, source: CaptureSource, batch: Batch, h: Headers, start: int, end: int,
             shard: tuple[int, int] | None) -> Iterator[Flow]:
    """Frames start..end-1 of a batch, grouped by flow (no expiry scan falls inside)."""
    ok = h.ok[start:end]
    groups: dict[FlowKey, list[int]] = {}
    decoded: dict[int, Packet] = {}
    # Common-case packets: group by flow key with numpy.
    ok_idx = np.flatnonzero(ok) + start
    if len(ok_idx):
        a = (h.src[ok_idx] << 16) | h.sport[ok_idx]
        b = (h.dst[ok_idx] << 16) | h.dport[ok_idx]
        rows = np.empty((len(ok_idx), 3), dtype=np.int64)
        np.minimum(a, b, out=rows[:, 0])
        np.maximum(a, b, out=rows[:, 1])
        rows[:, 2] = (h.proto[ok_idx] << 12) | h.vlan[ok_idx]
        uniq, first, inverse = np.unique(rows.view(np.dtype((np.void, 24))).ravel(), return_index=True,
                                         return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
        for u in range(len(uniq)):
            lo, hi, pv = rows[first[u]]
            key = FlowKey(int(pv >> 12), int(pv & 0xFFF), int(lo >> 16).to_bytes(4, "big"), int(lo & 0xFFFF),
                          int(hi >> 16).to_bytes(4, "big"), int(hi & 0xFFFF))
            groups[key] = ok_idx[order[bounds[u]:bounds[u + 1]]].tolist()
    # Everything else: the scalar decoder, which also knows which flow it belongs to.
    if len(ok_idx) < end - start:
        for i in (np.flatnonzero(~ok) + start).tolist():
            pkt = source.decode(batch.linktype, batch.frame(i), float(batch.ts[i]), int(batch.wire[i]),
                                batch.first + i)
            if pkt is None:
                continue
            source.packets -= 1  # counted again when fed
            decoded[i] = pkt
            groups.setdefault(FlowKey.of(pkt), []).append(i)
    for key, idx in sorted(groups.items(), key=lambda kv: min(kv[1])):
        if shard is not None and shard_of(key, shard[1]) != shard[0]:
            continue
        if len(idx) > 1 and decoded and any(i in decoded for i in idx):
            idx.sort()
        yield from _group(engine, source, batch, h, key, idx, decoded)


def _group(engine: Engine, source: CaptureSource, batch: Batch, h: Headers, key: FlowKey, idx: list[int],
           decoded: dict[int, Packet]) -> Iterator[Flow]:
    """Run one flow's packets of the batch in order.

    A packet that can only change counters (the flow is decided, or it has
    no payload and no layer wants empty packets; no SYN/FIN/RST; no
    timeout) is accounted inline; any other goes through the scalar decoder
    and :meth:`Engine.feed`, exactly as the packet-by-packet path would.
    """
    table = engine.table
    idle, active = table.idle_timeout, table.active_timeout
    skip_empty = not engine.wants_empty
    sel = np.asarray(idx)
    flags = h.flags[sel].tolist()
    paylen = h.paylen[sel].tolist()
    src = h.src[sel].tolist()
    sport = h.sport[sel].tolist()
    times = batch.ts[sel].tolist()
    wires = batch.wire[sel].tolist()
    flow = table.flows.get(key)
    client = int.from_bytes(flow.client, "big") if flow is not None and flow.ip_version == 4 else -1
    summed = 0
    for pos, i in enumerate(idx):
        if (flow is not None and not flags[pos] & _CONTROL and (not flow.pending or skip_empty and not paylen[pos])
                and not flow.fin_mask & CLOSING and i not in decoded):
            ts = times[pos]
            if ts - flow.last_seen <= idle and ts - flow.first_seen <= active:
                if src[pos] == client and sport[pos] == flow.client_port:
                    flow.c2s_packets += 1
                    flow.c2s_bytes += wires[pos]
                else:
                    flow.s2c_packets += 1
                    flow.s2c_bytes += wires[pos]
                if ts > flow.last_seen:  # captures whose clock jumps back keep first <= last
                    flow.last_seen = ts
                summed += 1
                continue
        pkt = decoded.get(i)
        if pkt is None:
            pkt = source.decode(batch.linktype, batch.frame(i), times[pos], wires[pos], batch.first + i)
            if pkt is None:
                continue
        else:
            source.packets += 1
        ended = engine.feed(pkt, expire=False)
        flow = table.flows.get(key)
        client = int.from_bytes(flow.client, "big") if flow is not None and flow.ip_version == 4 else -1
        if ended:
            yield from ended
    if summed:
        engine.stats.packets += summed
        source.packets += summed
        if flow is not None:
            table.flows.move_to_end(key)
