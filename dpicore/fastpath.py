"""Classify a capture batch by batch: flows already decided cost numpy, not Python.

Most packets belong to flows whose verdict is final (about 80% in the nDPI
corpus, far more in bulk traffic), and for those the engine only updates
counters.  Here a batch's common-case headers (TCP/UDP over IPv4 or IPv6) are
decoded by numpy (:mod:`dpicore.decode.batch`), its packets are mapped to
flows once per batch, and the batch is cut into intervals at the expiry scans
of the packet-by-packet path (one before the first packet at or past each
second of capture time).  Each interval is run flow by flow, in order of
first packet: a group of packets that only changes counters (the flow is
decided, or the group is empty and no layer wants empty packets; no FIN/RST,
no timeout) is accounted in one step from numpy's sums; any other group runs
packet by packet, where a packet of a live flow is still accounted
inline (and handed to the flow's layers when they look at it), and one
that opens or restarts a flow goes to :meth:`Engine.feed`, as a Packet
built from the decoded columns (or by the scalar decoder, for the frames
numpy leaves to it), in order within its flow.

The records equal the packet-by-packet path's; the order in which ended
flows are reported can differ (flows are fed flow by flow within an
interval), so compare outputs as sorted lines.  Where the order across
flows decides a record, a batch that may reach the flow cap
(``engine.max_flows``: which flow is evicted) runs packet by packet, and
a batch run flow by flow leaves its flows in the table in the order of
their last packets, as the packet-by-packet path does.  The
idle scans end the same flows in both paths, also when the capture's clock
goes back (the flow table queues flows moved behind the latest, see
:class:`~dpicore.flowtable.FlowTable`).  Two cases are left.  A flow that
depends on another's state (an FTP data connection on its control
connection's announcement) sees that state as the other flow's packets of
the same interval left it, not as of its own first packet: the control
connection of an interval runs first (it started first), so a data
connection opened up to a second before its announcement (FTP_DATA allows
that much) is named in the batch path only, and one opened after a second
announcement of an endpoint whose first the previous data connection took
is named in the packet-by-packet path only.  And in captures whose clock goes
back a frame that is no IP packet (ARP, EAPOL) starts a scan in the batch
path, whose scan points come from every frame so that every -j shard scans
at the same times, but not in the packet-by-packet one.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from typing import Any, Callable, Iterator

import numpy as np

from .decode.batch import Batch, Headers, batches, decode_headers
from .decode.capture import CaptureError
from .decode.source import CaptureSource
from .decode.walks import SharedWalks
from .engine import Engine, holding, passes, watchers
from .flowtable import CLOSE_AT, CLOSING, FlowTable
from .model import C2S, CLIENT_B, FIN, RST, S2C, SYN, Flow, FlowKey, Packet, new_key


def classify_batched(engine: Engine, source: CaptureSource, shard: tuple[int, int] | None = None,
                     walks: SharedWalks | None = None) -> Iterator[Flow]:
    """Every flow of ``source``'s capture, yielded as it ends: those a batch ended once the batch is done.

    Why not each at once: a flow's record, made by the caller between one flow's packets and the next,
    emptied the processor's caches of the engine's and the layers' code each time, and theirs of its
    own; written one after the other, at the batch's end, both run warm (4-6% of a real-client run,
    docs/performance-history.md, run BK).  A batch is what one read gives (from a pipe, what has arrived), so
    a slow capture's records still come as its packets do.

    ``shard=(i, n)`` keeps only the flows whose key hashes to ``i`` modulo
    ``n``, so ``n`` processes can split one file without splitting a flow;
    ``walks`` lets them share the walk from record to record.
    """
    try:
        for batch in batches(source.path, walks=walks, skip=source.skipped):
            yield from _batch(engine, source, batch, shard)
    except CaptureError as exc:
        source.fail(exc)
    finally:
        source.finish()
    yield from engine.drained()


_M64 = (1 << 64) - 1
_K_ADDR = 0x9E3779B97F4A7C15
_K_REST = 0xC2B2AE3D27D4EB4F


def shard_of(key: FlowKey, n: int) -> int:
    """Stable (process-independent) shard of a flow key: a hash of its address pair and VLAN.

    Not of its ports: flows between the same two hosts share a shard, so state one flow leaves for
    another (an FTP control connection announcing its data connection, nDPI's caches keyed by
    address) is in the process that needs it, and a split file gives the labels of one process.
    The price: a capture between two hosts is one shard.  Symmetric in the two endpoints and
    computed in 64-bit wrapping arithmetic, so :func:`shards` gets the same answer for the flows
    numpy decodes straight from the decoded columns, before any key is built.
    """
    addrs = int.from_bytes(key.addr_a, "big") + int.from_bytes(key.addr_b, "big")
    h = (addrs * _K_ADDR + key.vlan * _K_REST) & _M64
    return (h ^ (h >> 32)) % n


def shards(h: Headers, n: int) -> np.ndarray:
    """:func:`shard_of` of every numpy-decoded frame's flow, as an array (garbage where not ``h.ok``).

    For IPv6 ``h.src``/``h.dst`` hold the addresses' low 64 bits: their sum modulo 2**64 is the sum
    of the whole addresses modulo 2**64, all that shard_of's 64-bit arithmetic keeps."""
    addrs = (h.src + h.dst).astype(np.uint64)
    x = addrs * np.uint64(_K_ADDR) + h.vlan.astype(np.uint64) * np.uint64(_K_REST)  # arrays wrap modulo 2**64
    x ^= x >> np.uint64(32)
    return x % np.uint64(n)


#: ``_Flows.ids`` of a frame numpy did not decode (the scalar decoder finds its flow) / of a frame that
#: is no packet of this run (another shard's, or one the scalar decoder rejected).
_SCALAR, _DROPPED = -1, -2


def _batch(engine: Engine, source: CaptureSource, batch: Batch, shard: tuple[int, int] | None) -> Iterator[Flow]:
    source.frames = batch.first + len(batch) - 1
    h = decode_headers(batch)
    # Frames left to the scalar decoder; with a shard, numpy drops the other shards' frames here,
    # before any grouping or key building (the scalar decoder's are filtered by their key).
    rest = ~h.ok
    if shard is not None:
        h.ok &= shards(h, shard[1]) == shard[0]
    flows = _Flows(h, rest)
    times = batch.ts.tolist()
    decoded = _decode_rest(source, batch, times, flows, shard)
    # The packet-by-packet path scans for timed-out flows before the first packet at or past each
    # second of capture time.  Here the scans cut the batch into intervals, and each interval is
    # run flow by flow: one group per (interval, flow), in order of first packet.  The scan points
    # come from every frame, kept or not, so that each shard of a file (-j) scans at the same times
    # (also in a batch where it keeps no frame).
    points = _scan_points(times, batch.ts, engine.next_expiry)
    scan_times = [times[i] for i in points]  # engine.tick(t) sets next_expiry to t + 1, as feed does
    kept = np.flatnonzero(flows.ids >= 0)
    if not len(kept):
        for t in scan_times:
            yield from engine.tick(t)
        return
    mark = np.zeros(len(batch), dtype=np.int64)
    mark[points] = 1
    interval = np.cumsum(mark)[kept]
    group_key = interval * len(flows.keys) + flows.ids[kept]
    order = np.argsort(group_key, kind="stable")
    grouped = group_key[order]
    starts = np.flatnonzero(np.concatenate(([True], grouped[1:] != grouped[:-1])))
    pos = kept[order]  # frames, grouped; in capture order within a group
    g = _Groups(h, batch, flows, pos, starts)
    cols = _Columns(batch, h, flows, kept, times)  # the kept frames' fields: frame kept[c] is cols' row c
    if decoded:
        decoded = dict(zip(np.searchsorted(kept, list(decoded)).tolist(), decoded.values()))
    table = engine.table
    if len(table.flows) + len(flows.keys) > table.max_flows:
        # The flow cap may be reached in this batch, and which flow it evicts depends on the order of
        # packets across flows: this batch goes packet by packet, as the frame-by-frame path does.
        yield from _in_order(engine, source, cols, flows, kept, points, scan_times, decoded)
        return
    get, move = table.flows.get, table.flows.move_to_end
    idle, active = table.idle_timeout, table.active_timeout
    skip_empty = not engine.wants_empty
    keys, group_flow, group_interval = flows.keys, g.flow, interval[order][starts].tolist()
    positions = order.tolist()  # rows of cols, grouped as pos
    at = 0  # scans done (interval 0 comes before the first)
    summed = 0
    ended: list[Flow] = []
    for r in np.argsort(pos[starts], kind="stable").tolist():
        if at < group_interval[r]:
            for t in scan_times[at:group_interval[r]]:
                ended += engine.tick(t)
            at = group_interval[r]
        key = keys[group_flow[r]]
        flow = get(key)
        last = g.last[r]
        # A group that only changes counters is accounted in one step: the flow exists and is decided
        # (or the group carries no payload and no layer wants empty packets), no packet of it was left
        # to the scalar decoder or carries FIN/RST, the flow is not closing, and not even its last
        # packet reaches a timeout; the same checks as _group's, for the whole group at once.
        # (Each field read once, and a direction with no packets left alone: compiled code reads and
        # writes a flow's fields through CPython's generic attribute calls, ~100 instructions each.)
        if (flow is not None and not g.hard[r] and (not flow.pending or skip_empty and not g.payload[r])
                and not (bits := flow._bits) & CLOSING and last - (seen := flow.last_seen) <= idle
                and last - flow.first_seen <= active):
            n, n_a, b, b_a = g.packets[r], g.packets_a[r], g.bytes[r], g.bytes_a[r]
            later = last if last > seen else None
            if bits < CLIENT_B:  # the client's end is the key's first (packets_a's)
                _count(flow, n_a, b_a, n - n_a, b - b_a, later)
            else:
                _count(flow, n - n_a, b - b_a, n_a, b_a, later)
            summed += n
            move(key)
            table.moved(flow)
            continue
        s = g.start[r]
        ended.extend(_group(engine, source, cols, key, positions[s:s + g.packets[r]], decoded))
    _in_capture_order(table, keys, g)
    for t in scan_times[at:]:  # the scans after the batch's last kept packet
        ended += engine.tick(t)
    engine.stats.packets += summed
    source.packets += summed
    yield from ended


def _in_capture_order(table: FlowTable, keys: list[FlowKey], g: _Groups) -> None:
    """Put the batch's flows at the end of the table in the order of their last packets, as the
    packet-by-packet path leaves them (the groups ran in order of first packet): the flow cap evicts the
    least recently seen flow, maybe in a later batch, and which one that is must not depend on the path.
    Each is noted as moved again: one now behind a flow seen later (the clock went back) must be queued
    where the idle scans find it."""
    ids = g.flow_ids
    flow, last = np.unique(ids[::-1], return_index=True)  # each flow's last group: groups go by interval
    flows = table.flows
    move = flows.move_to_end
    for k in flow[np.argsort(g.last_frame[len(ids) - 1 - last])].tolist():
        f = flows.get(keys[k])
        if f is not None:
            move(f.key)
            table.moved(f)


def _in_order(engine: Engine, source: CaptureSource, cols: "_Columns", flows: "_Flows", kept: np.ndarray,
              points: list[int], scan_times: list[float], decoded: dict[int, Packet]) -> Iterator[Flow]:
    """A batch's kept packets fed one by one in capture order, each scan before the first frame at or
    past its point (what _batch does group by group, where the order across flows does not matter)."""
    keys, ids = flows.keys, flows.ids[kept].tolist()
    at = 0
    for c, frame in enumerate(kept.tolist()):
        while at < len(points) and points[at] <= frame:
            yield from engine.tick(scan_times[at])
            at += 1
        pkt = decoded.get(c)
        if pkt is None:
            pkt = cols.packet(c)
        source.packets += 1
        ended = engine.feed(pkt, expire=False, key=keys[ids[c]])
        if ended:
            yield from ended
    for t in scan_times[at:]:
        yield from engine.tick(t)


def _scan_points(times: list[float], array: np.ndarray, due: float) -> list[int]:
    """The packets (indices) before which the packet-by-packet path scans for timed-out flows: the
    first at or past ``due``, then the first at or past one second after it, and so on."""
    points: list[int] = []
    n = len(times)
    if n > 1 and bool((array[1:] < array[:-1]).any()):  # the capture's clock jumps back: every packet
        for i, t in enumerate(times):
            if t >= due:
                points.append(i)
                due = t + 1.0
        return points
    i = 0
    while i < n:
        i = bisect_left(times, due, i)
        if i < n:
            points.append(i)
            due = times[i] + 1.0
            i += 1
    return points


def _decode_rest(source: CaptureSource, batch: Batch, times: list[float], flows: _Flows,
                 shard: tuple[int, int] | None) -> dict[int, Packet]:
    """The frames numpy left to the scalar decoder, decoded (in capture order: the decoder's state,
    such as fragments, follows the capture) and given their flow ids; the others become _DROPPED.
    Returns {frame index: Packet}."""
    decoded: dict[int, Packet] = {}
    ids = flows.ids
    for i in np.flatnonzero(ids == _SCALAR).tolist():
        pkt = source.decode(batch.linktype, batch.frame(i), times[i], int(batch.wire[i]), batch.first + i)
        if pkt is None:
            ids[i] = _DROPPED
            continue
        source.packets -= 1  # counted again when fed
        key = FlowKey.of(pkt)
        if shard is not None and shard_of(key, shard[1]) != shard[0]:
            ids[i] = _DROPPED
            continue
        decoded[i] = pkt
        ids[i] = flows.id_of(key)
    return decoded


class _Groups:
    """Per (interval, flow) group of a batch, as lists: where it starts in the grouped frames, its flow,
    its packets and bytes (in all and from the flow key's ``a`` endpoint), its last capture time, and
    whether some packet is left to the scalar decoder or carries FIN/RST (``hard``) or a payload."""

    __slots__ = ("start", "flow", "flow_ids", "last_frame", "packets", "packets_a", "bytes", "bytes_a", "last", "hard",
                 "payload")

    def __init__(self, h: Headers, batch: Batch, flows: _Flows, pos: np.ndarray, starts: np.ndarray) -> None:
        self.start: list[int] = starts.tolist()
        self.packets: list[int] = np.diff(np.append(starts, len(pos))).tolist()
        self.flow_ids = flows.ids[pos[starts]]
        self.flow: list[int] = self.flow_ids.tolist()
        #: Each group's last frame (frames are in capture order within a group).
        self.last_frame = pos[np.append(starts[1:], len(pos)) - 1]
        a = flows.is_a[pos]
        wire = batch.wire[pos]
        self.packets_a: list[int] = np.add.reduceat(a.astype(np.int64), starts).tolist()
        self.bytes: list[int] = np.add.reduceat(wire, starts).tolist()
        self.bytes_a: list[int] = np.add.reduceat(np.where(a, wire, 0), starts).tolist()
        self.last: list[float] = np.maximum.reduceat(batch.ts[pos], starts).tolist()
        hard = ~h.ok[pos] | (h.flags[pos] & (FIN | RST) != 0)
        self.hard: list[bool] = np.logical_or.reduceat(hard, starts).tolist()
        self.payload: list[bool] = np.logical_or.reduceat(h.paylen[pos] > 0, starts).tolist()


class _Flows:
    """The flows of a batch's numpy-decoded frames, found once per batch: ``ids[i]`` is frame i's flow
    (an index into ``keys``, numbered in order of first packet), or _SCALAR / _DROPPED; ``is_a[i]``
    says frame i comes from its key's ``a`` endpoint (address and port; the lower one)."""

    __slots__ = ("ids", "is_a", "keys", "_index")

    def __init__(self, h: Headers, rest: np.ndarray) -> None:
        ids = np.where(rest, _SCALAR, _DROPPED)
        self.is_a = np.zeros(len(ids), dtype=bool)
        self.keys: list[FlowKey] = []
        self._index: dict[FlowKey, int] | None = None
        firsts: list[np.ndarray] = []  # per address family: each flow's first frame, its key, its frames' flow
        keys: list[FlowKey] = []
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        for rows, frames, is_a, make in (_rows4(h), _rows6(h)):
            if not len(frames):
                continue
            self.is_a[frames] = is_a
            first, inverse = _unique_rows(rows)
            parts.append((frames, inverse + len(keys)))
            firsts.append(frames[first])
            keys.extend(make(rows[first].tolist()))
        if keys:
            seen = np.argsort(np.concatenate(firsts), kind="stable")  # flows in order of first packet
            rank = np.empty_like(seen)
            rank[seen] = np.arange(len(seen))
            for frames, flow in parts:
                ids[frames] = rank[flow]
            self.keys = [keys[k] for k in seen.tolist()]
        self.ids: np.ndarray = ids

    def id_of(self, key: FlowKey) -> int:
        """The id of a scalar-decoded packet's flow (the same as numpy's when numpy saw that flow too)."""
        index = self._index
        if index is None:
            index = self._index = {k: i for i, k in enumerate(self.keys)}
        i = index.get(key)
        if i is None:
            i = index[key] = len(self.keys)
            self.keys.append(key)
        return i


def _unique_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first index of each distinct row of ``rows`` (64-bit columns) and each row's distinct-row
    number, as ``np.unique(..., return_index=True, return_inverse=True)`` gives them.

    The rows are told apart by a 64-bit mix of their columns, which numpy sorts
    several times faster than the rows themselves (1.2 ms vs 0.5 ms for 8,192
    rows); if two different rows share a mix, which the check below finds, the
    rows themselves are sorted.
    """
    u = rows.view(np.uint64)
    mix = u[:, 0].copy()
    for col in range(1, u.shape[1]):
        mix *= np.uint64(_K_ADDR)  # arrays wrap modulo 2**64
        mix ^= u[:, col] + np.uint64(_K_REST)
    _, first, inverse = np.unique(mix, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    if not (rows[first[inverse]] == rows).all():  # two rows, one mix
        _, first, inverse = np.unique(rows.view(np.dtype((np.void, rows.shape[1] * 8))).ravel(),
                                      return_index=True, return_inverse=True)
        inverse = inverse.ravel()
    return first, inverse


def _rows4(h: Headers) -> tuple[np.ndarray, np.ndarray, np.ndarray, Callable[[list[list[int]]], list[FlowKey]]]:
    """Flow rows of the numpy-decoded IPv4 frames: both endpoints (address << 16 | port, lower first)
    and proto << 12 | vlan, with the frames' indices, whether each frame's source is the lower
    endpoint, and the FlowKeys of a list of rows."""
    frames = np.flatnonzero(h.ok & ~h.ip6)
    a = (h.src[frames] << 16) | h.sport[frames]
    b = (h.dst[frames] << 16) | h.dport[frames]
    rows = np.empty((len(frames), 3), dtype=np.int64)
    np.minimum(a, b, out=rows[:, 0])
    np.maximum(a, b, out=rows[:, 1])
    rows[:, 2] = (h.proto[frames] << 12) | h.vlan[frames]
    is_a = a <= b

    def keys(rows: list[list[int]]) -> list[FlowKey]:
        return [new_key(FlowKey, (pv >> 12, pv & 0xFFF, (lo >> 16).to_bytes(4, "big"), lo & 0xFFFF,
                                  (hi >> 16).to_bytes(4, "big"), hi & 0xFFFF)) for lo, hi, pv in rows]
    return rows, frames, is_a, keys


def _rows6(h: Headers) -> tuple[np.ndarray, np.ndarray, np.ndarray, Callable[[list[list[int]]], list[FlowKey]]]:
    """Flow rows of the numpy-decoded IPv6 frames: each endpoint as (high 64 bits, low 64 bits, port),
    the lower first as FlowKey.of orders them, then proto << 12 | vlan (uint64); as :func:`_rows4`."""
    frames = np.flatnonzero(h.ok & h.ip6)  # ok: a shard's filter clears it, not ip6
    u = np.uint64
    s_hi, s_lo, s_port = h.src_hi[frames], h.src[frames].view(u), h.sport[frames].astype(u)
    d_hi, d_lo, d_port = h.dst_hi[frames], h.dst[frames].view(u), h.dport[frames].astype(u)
    swap = (d_hi < s_hi) | (d_hi == s_hi) & ((d_lo < s_lo) | (d_lo == s_lo) & (d_port < s_port))
    rows = np.empty((len(frames), 7), dtype=u)
    for col, (x, y) in enumerate(((s_hi, d_hi), (s_lo, d_lo), (s_port, d_port))):
        rows[:, col] = np.where(swap, y, x)
        rows[:, col + 3] = np.where(swap, x, y)
    rows[:, 6] = ((h.proto[frames] << 12) | h.vlan[frames]).astype(u)

    def keys(rows: list[list[int]]) -> list[FlowKey]:
        return [new_key(FlowKey, (pv >> 12, pv & 0xFFF, ((a_hi << 64) | a_lo).to_bytes(16, "big"), a_port,
                                  ((b_hi << 64) | b_lo).to_bytes(16, "big"), b_port))
                for a_hi, a_lo, a_port, b_hi, b_lo, b_port, pv in rows]
    return rows, frames, ~swap, keys


#: A row of ``_Columns._more``: ten int64 columns.
_ROW = struct.Struct("=10q")
_row = _ROW.unpack_from


class _Columns:
    """The per-packet fields of a batch's kept frames (``rows``: all of them in one process, a shard's
    under -j) as Python lists, row c for frame ``rows[c]``: the groups are small, and indexing a list is
    far cheaper than numpy's per-call cost of a fancy index per group; leaving out the other shards'
    frames keeps each -j worker from converting the whole batch."""

    __slots__ = ("first", "buf", "h", "rows", "flags", "paylen", "is_a", "sport", "times", "wires", "_more")

    def __init__(self, batch: Batch, h: Headers, flows: _Flows, rows: np.ndarray, times: list[float]) -> None:
        self.first, self.buf, self.h = batch.first, batch.buf, h
        every = len(rows) == len(batch)
        self.rows: np.ndarray | slice = slice(None) if every else rows
        sel = self.rows
        self.flags = h.flags[sel].tolist()
        self.paylen = h.paylen[sel].tolist()
        #: The packet comes from its key's first end (True/False): from the client when the flow's client
        #: is that end (Flow._bits below CLIENT_B).
        self.is_a = flows.is_a[sel].tolist()
        self.sport = h.sport[sel].tolist()
        self.times = times if every else batch.ts[rows].tolist()
        self.wires = batch.wire[sel].tolist()
        self._more: np.ndarray | None = None

    def _fields(self, c: int) -> tuple[int, ...]:
        """Row ``c``'s columns that only packets fed to the engine need: dport, proto, vlan, seq, l3, pay,
        ipend, paywire, ip6, frame.  They are stacked into one array on first use and a row is converted
        when asked for: a batch feeds the engine a fraction of its packets (none, in bulk traffic), and
        converting every column of every row cost several times more."""
        more = self._more
        if more is None:
            h, sel = self.h, self.rows
            frames = np.arange(len(h.ok)) if isinstance(sel, slice) else sel
            more = self._more = np.stack([col[sel] for col in (h.dport, h.proto, h.vlan, h.seq, h.l3, h.pay, h.ipend,
                                                                h.paywire, h.ip6)] + [frames], axis=1, dtype=np.int64)
        return _row(more, c * _ROW.size)  # the row read from the array's bytes: a third of more[c].tolist()

    def transport(self, c: int) -> tuple[int, int, bytes]:
        """Row ``c``'s transport, TCP sequence number and payload (as its Packet has them)."""
        fields = self._fields(c)
        return fields[1], fields[3], self.buf[fields[5]:fields[6]]

    def packet(self, c: int) -> Packet:
        """The Packet the scalar decoder makes of row ``c``'s numpy-decoded frame (TCP/UDP in unfragmented
        IPv4 or in IPv6 without extension headers), built from the decoded columns and slices of the
        buffer instead of decoding the frame again."""
        dport, proto, vlan, seq, l3, pay, ipend, paywire, ip6, frame = self._fields(c)
        buf, start, end = self.buf, l3, ipend
        if ip6:
            version, src, dst = 6, buf[start + 8:start + 24], buf[start + 24:start + 40]
        else:
            version, src, dst = 4, buf[start + 12:start + 16], buf[start + 16:start + 20]
        return Packet(self.times[c], version, src, dst, proto, self.sport[c], dport, self.flags[c],
                      self.wires[c], buf[pay:end], paywire, buf[start:end], vlan, seq, self.first + frame)


def _count(flow: Flow, c2s: int, c2s_bytes: int, s2c: int, s2c_bytes: int, last_seen: float | None) -> None:
    """Add packets counted in one step to ``flow``: a direction with none is left alone (compiled code
    writes a field through CPython's generic attribute calls, ~100 instructions each), and so is
    ``last_seen`` when None."""
    if c2s:
        flow.c2s_packets += c2s
        flow.c2s_bytes += c2s_bytes
    if s2c:
        flow.s2c_packets += s2c
        flow.s2c_bytes += s2c_bytes
    if last_seen is not None:
        flow.last_seen = last_seen


def _looked_at(flow: Flow | None, defer: int) -> tuple[Any, float, float, int, bool, Any, Any]:
    """What _group's loop reads of ``flow``: its pending layers, first_seen, last_seen and bits, whether
    the key's first end is the client's, its watchers and the packets it holds (see _group)."""
    if flow is None:
        return None, 0.0, 0.0, 0, False, None, None
    pending, bits = flow.pending, flow._bits
    return (pending, flow.first_seen, flow.last_seen, bits, bits < CLIENT_B, watchers(pending) if pending else None,
            holding(pending) if defer else None)


def _group(engine: Engine, source: CaptureSource, cols: _Columns, key: FlowKey, idx: list[int],
           decoded: dict[int, Packet]) -> Iterator[Flow]:
    """Run one flow's packets of an interval in order (``idx``: their rows of ``cols``; ``decoded``: the
    scalar decoder's Packets, by row).

    A packet that changes only counters — the flow exists and is decided
    (or the packet has no payload and no layer wants empty packets), no
    timeout, not a SYN or a straggler after the closing time of a closed
    connection — is accounted inline, its FIN/RST noted as
    :meth:`Engine.feed` notes them; so is a payload that every layer still
    looking watches past (:func:`~dpicore.engine.passes`: FTP's control
    connection but for its announcements), with :meth:`Engine.watched_past`;
    and so is a payload-less packet of a flow whose layers have not started,
    which it keeps for them (:func:`~dpicore.engine.holding`: the handshake
    nDPI and the ML layer want, held until a payload).  (This repeats the counting of
    :meth:`Engine.feed` and the checks of :meth:`FlowTable.must_restart`
    on purpose: calling them per packet cost 7-10% of the whole run on
    corpus_x10; tests/test_fastpath.py holds the two paths equal.)
    A packet that joins the flow (those same checks) but that its layers
    look at is counted inline too, and only then handed to them with
    :meth:`Engine.offer_counted`, the last step of feed: a flow's first
    payloads and handshake went through the whole of feed, which cost
    ~3% of a real-client run's instructions.  Any other packet (one that
    opens a flow, or restarts it, or that the scalar decoder made) goes
    to :meth:`Engine.feed`, as a Packet built from the numpy-decoded
    columns (or the scalar decoder's, for the frames numpy left to it).
    """
    table = engine.table
    idle, active = table.idle_timeout, table.active_timeout
    skip_empty = not engine.wants_empty
    defer = engine.defer
    flags, paylen, is_a, times, wires = cols.flags, cols.paylen, cols.is_a, cols.times, cols.wires
    summed = 0
    # The flow's fields this loop reads are read once per flow object (_looked_at), and what it counts
    # inline stays in locals (n_c, b_c, n_s, b_s, and seen: None while last_seen is unchanged) until
    # the engine is handed the flow or the group ends (_count): compiled code reads and writes a
    # flow's fields through CPython's generic attribute calls, ~100 instructions each, and the loop
    # read or wrote ten of them per packet.
    flow = table.flows.get(key)
    pending, first, last, bits, client_a, watching, held = _looked_at(flow, defer)
    n_c = b_c = n_s = b_s = 0
    seen = None
    for j in idx:
        if flow is not None and j not in decoded:
            ts = times[j]
            f = flags[j]
            if ts - last <= idle and ts - first <= active and (
                    not bits & CLOSING or not (f & SYN or ts > flow.notes.get(CLOSE_AT, ts))):
                if is_a[j] is client_a:
                    direction = C2S
                    n_c += 1
                    b_c += wires[j]
                else:
                    direction = S2C
                    n_s += 1
                    b_s += wires[j]
                if ts > last:  # captures whose clock jumps back keep first <= last
                    last = seen = ts
                if f & (FIN | RST):  # numpy's flags are 0 for UDP
                    table.note_tcp_flags(flow, f, direction, ts)
                    bits = flow._bits
                summed += 1
                if not pending or skip_empty and not paylen[j]:
                    continue
                if watching is not None and paylen[j] and passes(watching, (row := cols.transport(j))[2]):
                    engine.watched_past(flow, direction, *row)  # watched past (a decided flow has no watchers)
                    continue
                if held is not None and not paylen[j] and len(held) < defer:
                    held.append(cols.packet(j))  # kept for the layers that want it, which have not started
                    continue
                _count(flow, n_c, b_c, n_s, b_s, seen)
                n_c = b_c = n_s = b_s = 0
                seen = None
                engine.offer_counted(flow, cols.packet(j), direction)
                pending, first, last, bits, client_a, watching, held = _looked_at(flow, defer)
                continue
        if n_c or n_s:
            _count(flow, n_c, b_c, n_s, b_s, seen)
            n_c = b_c = n_s = b_s = 0
            seen = None
        pkt = decoded.get(j)
        if pkt is None:
            pkt = cols.packet(j)
        source.packets += 1
        ended = engine.feed(pkt, expire=False, key=key)
        flow = table.flows.get(key)
        pending, first, last, bits, client_a, watching, held = _looked_at(flow, defer)
        if ended:
            yield from ended
    if summed:
        engine.stats.packets += summed
        source.packets += summed
        if flow is not None:
            _count(flow, n_c, b_c, n_s, b_s, seen)
            table.flows.move_to_end(key)
            table.moved(flow)
