"""The pipeline: packets → flow table → layers in priority order → ended flows.

Per packet of a flow that is already decided the cost is one dict lookup
and a few counter updates.  Undecided flows hand *new* payload (never a
replay of the flow from its start) to the layers still interested, in
priority order, until a verdict reaches the confidence threshold.  Every
layer call is isolated: an exception is recorded on the flow and the layer,
and a layer that keeps failing is switched off for new flows.
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import re
from typing import Any, Iterable, Iterator

import attrs

from .config import Config
from .flowtable import FlowTable
from .model import (C2S, CLIENT_B, END_EOF, FIN, FINAL, REASON_OF, RST, TCP, Flow, FlowKey, Packet, SharedVerdict,
                    Verdict, shared_verdict)
from .plugins import PLUGIN_FAILURES, Layer, PluginSet
from .protocols import UNKNOWN, ProtocolRegistry

log = logging.getLogger(__name__)

#: A layer is switched off for new flows after this many exceptions.
MAX_LAYER_ERRORS = 100

REASON_VERDICT = "verdict"
REASON_BUDGET = "budget"
REASON_DECIDED = "decided"
REASON_ERROR = "error"


class _Pending:
    """One layer's interest in one flow; ``Flow.pending`` holds the first layer's, each ``next`` the one after.

    64 bytes, four slots: what the layer's progress on the flow is lives in ``more``, as one of three
    things a layer never needs two of at once.  Before its verdict, the packets it was offered (an int)
    or, while payload-less packets are held back for it, a _Holding of them that knows that count;
    once it decided the flow and watches more packets (``Verdict.watch``), a _Watch.  A flow nDPI and
    the ML layer both inspect cost 224 bytes of these (two entries of six slots and a tuple of them),
    128 now.  (The layer as a class attribute of a subclass per layer, a slot less, cost 1.2% of a
    run's instructions: Python 3.11 specialises no attribute read at a place that sees objects of
    several types, and the loop over a flow's layers is such a place.)
    """

    __slots__ = ("layer", "state", "more", "next")

    def __init__(self, layer: Layer, state: Any) -> None:
        self.layer = layer
        self.state = state
        self.more: int | _Holding | _Watch = 0
        #: The next layer's entry (priority order), None for the last.  A layer leaving is unlinked and
        #: keeps its own ``next``: a walk standing on it goes on to the layers after it.
        self.next: _Pending | None = None

    def __repr__(self) -> str:
        return f"_Pending({self.layer.id!r}, {self.more!r})"


class _Holding(list):  # type: ignore[type-arg]
    """``_Pending.more`` while payload-less packets are held back for a layer with ``LayerInfo.hold_empty``:
    the packets (it gets them, in order, before its next packet that is not held, or at the flow's end;
    never when another layer decides the flow first; packets alone: the replay asks the flow for their
    direction), and ``seen``, the packets it was offered before (set by the maker: a Python __init__
    here cost ~1,000 instructions each time a layer starts holding)."""

    __slots__ = ("seen",)
    seen: int


class _Watch:
    """``_Pending.more`` of a layer that decided the flow and watches ``left`` more packets: the verdict it
    watches with (its metadata grows meanwhile)."""

    __slots__ = ("verdict", "left")

    def __init__(self, verdict: Verdict, left: int) -> None:
        self.verdict = verdict
        self.left = left

    def __repr__(self) -> str:
        return f"_Watch({self.verdict.protocol!r}, left={self.left})"


class _Held(list):  # type: ignore[type-arg]
    """``Flow.pending`` of a flow whose layers have not started: its first packets, none with payload.

    Every layer that wants such packets holds them anyway (``LayerInfo.hold_empty``) and the others
    skip them, so no layer can act on them: the engine keeps them once, on the flow, and starts the
    layers (``dpi_flow_new``, then each held packet as on arrival) with the first packet that carries
    payload, the one past the hold, or the flow's end.  A scan's or a flood's flows (a bare SYN each)
    then cost no layer state at all while they wait.
    """

    __slots__ = ()


#: What :meth:`Engine._replay` found.
_DECIDED, _GONE, _GOING = object(), object(), object()


@attrs.define(slots=True)
class EngineStats:
    packets: int = 0
    non_ip: int = 0
    flows: int = 0
    evicted: int = 0
    layer_errors: int = 0


#: Bare Unknown verdicts shared across flows (see Engine._bare): at most this many layer and confidence pairs.
SHARED_BARE = 256
#: Strings of verdict metadata shared across flows (see Engine._share): at most this many, and no longer
#: ones than SHARED_LENGTH characters.
SHARED_STRINGS = 1 << 14
SHARED_LENGTH = 512

#: Flow.notes keys of the next expected TCP sequence number per direction.
_SEQ_NOTE = ("_seq0", "_seq1")


def unusable(verdict: Any, kept: bool = False) -> str | None:
    """Why a layer's answer cannot be taken (None: it can): not a Verdict, or fields the engine and
    the record need of another type or range (a str confidence, NaN, a list as metadata).  ``kept``:
    a verdict the engine took, checked again when its flow ends (its layer may have changed it since):
    only the fields the record and :meth:`Engine.choose` read, not what it watches for."""
    if not isinstance(verdict, Verdict):
        return f"returned {type(verdict).__name__}, not Verdict"
    c = verdict.confidence
    if (type(verdict.protocol) is str and verdict.protocol and type(c) is float and 0.0 <= c <= 1.0
            and type(verdict.metadata) is dict
            and (kept or type(verdict.watch) is int and verdict.watch >= 0 and verdict.watch_for is None)
            and (verdict.source is None or type(verdict.source) is str)
            and (verdict.app is None or type(verdict.app) is str)
            and (verdict.category is None or type(verdict.category) is str)):
        return None  # the usual Verdict, checked in one expression (this runs for every verdict)
    if not isinstance(verdict.protocol, str) or not verdict.protocol:
        return f"returned a Verdict whose protocol is {verdict.protocol!r}, not a name"
    if not isinstance(c, numbers.Real) or not 0.0 <= c <= 1.0:
        return f"returned a Verdict whose confidence is {c!r}, not a number in [0, 1]"
    if not kept and (type(verdict.watch) is not int or verdict.watch < 0):
        return f"returned a Verdict whose watch is {verdict.watch!r}, not a count"
    w = verdict.watch_for
    if not kept and w is not None and not (isinstance(w, re.Pattern) and isinstance(w.pattern, bytes)):
        return f"returned a Verdict whose watch_for is {w!r}, not a compiled bytes pattern (re.compile(rb'...'))"
    for name in ("source", "app", "category"):
        value = getattr(verdict, name)
        if value is not None and not isinstance(value, str):
            return f"returned a Verdict whose {name} is {value!r}, not text"
    if not isinstance(verdict.metadata, dict):
        return f"returned a Verdict whose metadata is a {type(verdict.metadata).__name__}, not a dict"
    return None


def _changed(verdict: Verdict) -> str | None:
    """What is wrong with a verdict the engine took, checked again when its flow ends (None: nothing); a
    shared bare Unknown is frozen, so no layer changed it."""
    return None if type(verdict) is SharedVerdict else unusable(verdict, kept=True)


#: ``Flow._payloads`` of a flow no layer still looking at reads (``LayerInfo.reads_payloads``): its
#: payloads are not kept.  ``Flow.payloads`` reads it as empty; _let_go puts None back at the end.
_UNREAD: tuple[tuple[int, bytes], ...] = ()


#: ``Flow.pending`` (pipeline-owned): None when no layer looks at the flow, a _Held before its layers
#: start, then the first layer's _Pending, linked to the others' in priority order.
Pending = _Pending | _Held | None


def layers_of(pending: Pending) -> tuple[_Pending, ...]:
    """The layers' entries in ``Flow.pending``, in priority order (none before they start), as a tuple
    that does not change when a layer leaves meanwhile."""
    if pending is None or type(pending) is _Held:
        return ()
    entry: _Pending | None = pending  # type: ignore[assignment]
    if entry.next is None:  # type: ignore[union-attr]
        return (entry,)  # type: ignore[return-value]
    entries = []
    while entry is not None:
        entries.append(entry)
        entry = entry.next
    return tuple(entries)


def _has(pending: Pending, entry: _Pending) -> bool:
    """Whether ``entry``'s layer still looks at the flow whose ``Flow.pending`` is ``pending``."""
    if type(pending) is _Held:
        return False
    walk: _Pending | None = pending  # type: ignore[assignment]
    while walk is not None:
        if walk is entry:
            return True
        walk = walk.next
    return False


def _without(pending: _Pending, entry: _Pending) -> _Pending | None:
    """``Flow.pending`` once ``entry`` (in it) left: None when it was the last.  ``entry`` keeps its own
    ``next``, so a walk standing on it goes on to the layers after it."""
    if pending is entry:
        return entry.next
    walk = pending
    while walk.next is not entry:
        walk = walk.next  # type: ignore[assignment]
    walk.next = entry.next
    return pending


def holding(pending: Pending) -> _Held | None:
    """``pending`` if it is the payload-less packets a flow keeps before its layers start (_Held), else
    None: the batch path adds such packets to it inline, as :meth:`Engine._classify` would."""
    return pending if type(pending) is _Held else None


def watchers(pending: Pending) -> _Pending | None:
    """``pending`` if every layer in it watches for a pattern (``Verdict.watch_for``) and none wants empty
    packets, else None: the flows whose payloads the batch path may count past them (:func:`passes`)."""
    if pending is None or type(pending) is _Held:
        return None
    entry: _Pending | None = pending  # type: ignore[assignment]
    while entry is not None:
        watch = entry.more
        if type(watch) is not _Watch or watch.verdict.watch_for is None or entry.layer.info.wants_empty:
            return None
        entry = entry.next
    return pending  # type: ignore[return-value]


def passes(watched: _Pending, payload: bytes) -> bool:
    """Whether ``payload`` goes past every layer of :func:`watchers`: none of their patterns finds it, and
    each has packets left to watch after it, so counting it ends no watch.  The batch path then counts it
    inline (:meth:`Engine.watched_past`) as :meth:`Engine._classify` would; anything else (a pattern a
    layer broke after its verdict included) it feeds to the engine."""
    entry: _Pending | None = watched
    while entry is not None:
        watch: _Watch = entry.more  # type: ignore[assignment]  # every one watches (watchers)
        if watch.left <= 1:
            return False
        try:
            if watch.verdict.watch_for.search(payload) is not None:  # type: ignore[union-attr]
                return False
        except Exception:  # noqa: BLE001 - reported by the engine, which gets this packet
            return False
        entry = entry.next
    return True


def _reader_in(entry: _Pending | None) -> bool:
    """Whether a layer of ``entry`` or the entries after it reads ``Flow.payloads``."""
    while entry is not None:
        if entry.layer.info.reads_payloads:
            return True
        entry = entry.next
    return False


def _let_go(flow: Flow) -> None:
    """Drop what only the layers read (payloads, the sequence numbers that spot retransmissions) once
    no layer looks at ``flow``: a decided flow can live for minutes, and its first payloads (hellos,
    certificates) were most of its memory."""
    flow._payloads = None
    notes = flow._notes
    if notes is not None:
        for key in _SEQ_NOTE:
            notes.pop(key, None)
        if not notes:
            flow._notes = None


class Engine:
    """Tracks flows and runs the layers of a :class:`PluginSet` over them.

    Feed packets with :meth:`feed` (returns the flows that ended because of
    it); call :meth:`flush` at the end of an input to end the rest.
    """

    def __init__(self, plugins: PluginSet, config: Config | None = None) -> None:
        self.plugins = plugins
        self.config = config or plugins.config
        self.registry: ProtocolRegistry = plugins.registry
        self.layers: list[Layer] = list(plugins.layers)
        self.threshold = self.config.threshold
        self.all_layers = self.config.all_layers
        self.max_payloads = self.config.max_payloads
        #: Some layer wants packets without payload (then those cannot be skipped in bulk).
        self.wants_empty = any(layer.info.wants_empty for layer in self.layers)
        #: Whether no layer, or not every layer, reads Flow.payloads (see _UNREAD): a flow's layers are
        #: some of these, so a flow keeps none from its start in the first case, and can stop keeping
        #: them in the second only.
        self._none_read = not any(layer.info.reads_payloads for layer in self.layers)
        self._some_unread = not all(layer.info.reads_payloads for layer in self.layers)
        holds = [layer.info.hold_empty for layer in self.layers if layer.info.wants_empty]
        #: Payload-less packets a new flow may keep before its layers start (see _Held): as many as every
        #: layer that wants them holds.  0: the layers start with the first packet, when one wants such
        #: packets on arrival, or when none wants them (keeping the packet would then cost more than
        #: the layers' state: a SYN flow with the heuristics layer alone, 896 bytes instead of 963).
        self.defer = min(holds) if holds and all(holds) else 0
        self.table = self._new_table()
        self.stats = EngineStats()
        #: Capture time at which the next idle-expiry scan is due (one per second of capture time).
        self.next_expiry = float("-inf")
        # Per-flow TCP stream position per direction, kept off the Flow to keep it small.
        self._layer_rank = {layer.id: i for i, layer in enumerate(self.layers)}
        #: The SharedVerdict of each layer and confidence given so far (see _bare).
        self._bare_verdicts: dict[tuple[str, float], Verdict] = {}
        #: One object per distinct metadata string (see _share).
        self._strings: dict[str, str] = {}

    # -- packets ---------------------------------------------------------------
    def feed(self, pkt: Packet, expire: bool = True, key: FlowKey | None = None) -> list[Flow]:
        """Account ``pkt`` and run the layers; return flows that ended meanwhile.

        ``expire=False`` leaves timeouts to the caller (:meth:`tick`): the batch
        path feeds a batch flow by flow, so time does not advance monotonically.
        ``key`` is ``FlowKey.of(pkt)`` when the caller has it already (the batch path).
        """
        ended: list[Flow] = []
        self.stats.packets += 1
        ts = pkt.ts
        if expire and ts >= self.next_expiry:
            self.next_expiry = ts + 1.0
            for flow in self.table.expire(ts):
                ended.append(self._finish(flow))
        table = self.table
        if key is None:
            key = FlowKey.of(pkt)
        flow = table.flows.get(key)
        opened = None  # the _Held of a flow this packet opens
        if flow is not None:
            reason = table.must_restart(flow, pkt)
            if reason is not None:
                table.remove(flow, reason)
                ended.append(self._finish(flow))
                flow = None
        if flow is None:
            victim = table.evict_for_new()
            if victim is not None:
                self.stats.evicted += 1
                ended.append(self._finish(victim))
            flow = table.new_flow(key, pkt)
            table.insert(flow)
            self.stats.flows += 1
            if self.defer and not pkt.payload:
                flow.pending = opened = _Held((pkt,))
            else:
                self._start(flow, pkt)
        else:
            table.flows.move_to_end(key)
        # The client's end of the key (its fields by index), as Flow.direction_of reads it, inline.
        if flow._bits >= CLIENT_B:
            direction = C2S if (pkt.src == key[4] and pkt.sport == key[5]) else 1
        else:
            direction = C2S if (pkt.src == key[2] and pkt.sport == key[3]) else 1
        if direction == C2S:
            flow.c2s_packets += 1
            flow.c2s_bytes += pkt.wire_len
        else:
            flow.s2c_packets += 1
            flow.s2c_bytes += pkt.wire_len
        if ts > flow.last_seen:  # captures whose clock jumps back keep first <= last
            flow.last_seen = ts
        table.moved(flow)
        if pkt.proto == TCP and pkt.tcp_flags & (FIN | RST):
            table.note_tcp_flags(flow, pkt.tcp_flags, direction, ts)
        if flow.pending and flow.pending is not opened and (pkt.payload or self.wants_empty):
            self._classify(flow, pkt, direction)  # which skips a payload-less packet when no layer wants one
        return ended

    def tick(self, now: float) -> list[Flow]:
        """End the flows that timed out by ``now`` (live capture: the wall clock moves without packets)."""
        self.next_expiry = now + 1.0
        return [self._finish(flow) for flow in self.table.expire(now)]

    def flush(self) -> list[Flow]:
        """End every live flow (end of input) and return them, oldest first."""
        return list(self.drained())

    def drained(self) -> Iterator[Flow]:
        """End every live flow (end of input), oldest first, yielding each as it ends.

        What the input ends with can be most of its flows (a scan, a flood, a
        short capture): a caller that writes each flow and drops it needs no
        more memory than the live flows did, where a list would hold every
        ended flow, verdicts and all, at once.
        """
        # The next input (the next file of a directory) may be older than this one.
        self.next_expiry = float("-inf")
        for flow in self.table.drain():
            yield self._finish(flow)

    def _new_table(self) -> FlowTable:
        return FlowTable(self.config.idle_timeout, self.config.active_timeout, self.config.max_flows)

    @contextlib.contextmanager
    def apart(self) -> Iterator[None]:
        """Run what the block feeds on a flow table of its own: a flow or payload classified while a
        capture's flows are being read (the table holds that capture's live flows) neither sees them
        nor ends them.  The capture's table and scan time come back afterwards."""
        table, due = self.table, self.next_expiry
        self.table = self._new_table()
        self.next_expiry = float("-inf")
        try:
            yield
        finally:
            self.table, self.next_expiry = table, due

    def run(self, packets: Iterable[Packet]) -> Iterator[Flow]:
        """Classify a stream of packets; yield every flow once it has ended."""
        for pkt in packets:
            ended = self.feed(pkt)
            if ended:
                yield from ended
        yield from self.drained()

    # -- layers ----------------------------------------------------------------
    def _start(self, flow: Flow, pkt: Packet) -> None:
        first = last = None
        for layer in self.layers:
            if layer.disabled:
                continue
            state = None
            if layer.flow_new is not None:
                try:
                    state = layer.flow_new(flow, pkt)
                except PLUGIN_FAILURES as exc:
                    self._layer_failed(flow, layer, "dpi_flow_new", exc)
                    continue
            if last is None:
                first = last = _Pending(layer, state)
            else:
                last.next = last = _Pending(layer, state)
        flow.pending = first
        if first is None:
            flow._bits |= FINAL
        elif self._none_read or self._some_unread and not _reader_in(first):  # no reader started on it
            flow._payloads = _UNREAD

    def _begin(self, flow: Flow) -> None:
        """Start the layers of a flow that kept its first packets (_Held) and hand those over, in order.

        What _classify would do with each: they carry no payload, so a layer that does not want such
        packets skips them, and one that does holds them all (its ``hold_empty`` is at least as long
        as a flow keeps them, Engine.defer), with no layer called in between."""
        held = flow.pending
        assert type(held) is _Held
        flow.pending = None
        self._start(flow, held[0])
        for entry in layers_of(flow.pending):
            layer = entry.layer
            if layer.classify is not None and layer.info.wants_empty:
                entry.more = kept = _Holding(held)
                kept.seen = 0

    def _classify(self, flow: Flow, pkt: Packet, direction: int) -> None:
        if type(flow.pending) is _Held:
            held = flow.pending
            if not pkt.payload and len(held) < self.defer:
                held.append(pkt)
                return
            self._begin(flow)
            if not flow.pending:
                return
        payload = pkt.payload
        if payload and not self._note_payload(flow, direction, pkt.proto, pkt.seq, payload):
            payload = b""  # a retransmission: layers have seen these bytes
        after = flow.pending
        assert after is not None
        while after is not None:  # each layer's entry (layers_of, on every packet)
            entry = after
            after = entry.next  # before the layer runs: an entry that leaves keeps its own next anyway
            layer = entry.layer
            if layer.classify is None:
                continue
            more = entry.more
            kind = type(more)  # int, _Holding or _Watch (see _Pending)
            if not payload:
                if not layer.info.wants_empty:
                    continue
                hold = layer.info.hold_empty
                if hold:
                    if kind is int:
                        if more < hold:  # type: ignore[operator]
                            entry.more = kept = _Holding((pkt,))
                            kept.seen = more  # type: ignore[assignment]
                            continue
                    elif kind is _Holding and more.seen + len(more) < hold:  # type: ignore[union-attr,arg-type]
                        more.append(pkt)  # type: ignore[union-attr]
                        continue
            if kind is _Watch:
                if more.verdict.watch_for is not None and self._past(flow, entry, payload):  # type: ignore[union-attr]
                    continue
            elif kind is not int:  # a _Holding: packets held back for it
                state = self._replay(flow, entry)
                if state is _DECIDED:
                    return
                if state is _GONE:
                    continue
            if self._offer(flow, entry, pkt, direction):
                return
        if flow.pending is None:  # the last layer left
            flow._bits |= FINAL
            _let_go(flow)

    def _offer(self, flow: Flow, entry: _Pending, pkt: Packet, direction: int) -> bool:
        """One packet to one layer; True when the flow got decided (the packet goes no further)."""
        seen = entry.more
        if type(seen) is _Watch:
            self._watch(flow, pkt, direction, entry)
            return False
        layer = entry.layer
        entry.more = seen = seen + 1  # type: ignore[operator]  # an int: _classify replayed what was held
        try:
            verdict = layer.classify(flow, pkt, direction, entry.state)
        except PLUGIN_FAILURES as exc:
            self._layer_failed(flow, layer, "dpi_classify", exc)
            self._leave(flow, entry, REASON_ERROR)
            return flow._bits & FINAL != 0  # its dpi_flow_end may have named the flow: the later layers left with it
        if verdict is not None:
            problem = unusable(verdict)
            if problem is not None:
                self._layer_failed(flow, layer, "dpi_classify", TypeError(problem))
                self._leave(flow, entry, REASON_ERROR)
                return flow._bits & FINAL != 0
            if verdict.watch > 0 and verdict.protocol != UNKNOWN:
                if self.all_layers:  # every layer runs on anyway: this one just keeps watching
                    self._accept(flow, layer, verdict)
                    entry.more = _Watch(verdict, verdict.watch)
                    return False
                if verdict.confidence >= self.threshold:
                    self._accept(flow, layer, verdict, keep=entry)
                    return True
            self._leave(flow, entry, REASON_VERDICT, verdict)
            return flow._bits & FINAL != 0
        if seen >= layer.info.max_packets:
            self._leave(flow, entry, REASON_BUDGET)
            return flow._bits & FINAL != 0
        return False

    def _replay(self, flow: Flow, entry: _Pending) -> object:
        """Hand ``entry``'s layer the payload-less packets held back for it (``LayerInfo.hold_empty``),
        in order, as it would have had them on arrival.  Returns _DECIDED when one decided the flow,
        _GONE when the layer left the flow, else _GOING."""
        held = entry.more
        assert type(held) is _Holding
        entry.more = held.seen
        for p in held:
            if self._offer(flow, entry, p, flow.direction_of(p)):
                return _DECIDED
            if not _has(flow.pending, entry):
                return _GONE
        return _GOING

    def _watch(self, flow: Flow, pkt: Packet, direction: int, entry: _Pending) -> None:
        """Let the deciding layer observe one more packet; a verdict it returns updates the metadata."""
        watch: _Watch = entry.more  # type: ignore[assignment]
        watch.left -= 1
        try:
            verdict = entry.layer.classify(flow, pkt, direction, entry.state)
        except PLUGIN_FAILURES as exc:
            self._layer_failed(flow, entry.layer, "dpi_classify", exc)
            verdict = None
            watch.left = 0
        problem = unusable(verdict) if verdict is not None else None
        if problem is not None:
            self._layer_failed(flow, entry.layer, "dpi_classify", TypeError(problem))
            watch.left = 0
        elif verdict is not None:
            self._share(verdict.metadata)
            kept = watch.verdict.metadata
            if isinstance(kept, dict):
                kept.update(verdict.metadata)
            else:  # the layer changed the verdict it is watching for: _finish reports it
                watch.left = 0
        if watch.left <= 0:
            self._leave(flow, entry, REASON_VERDICT)

    def _past(self, flow: Flow, entry: _Pending, payload: bytes) -> bool:
        """Whether ``payload`` goes past a layer watching for a pattern (``Verdict.watch_for``) that does not
        find it: the layer is not shown it, and it counts against the watch as a shown one would."""
        watch: _Watch = entry.more  # type: ignore[assignment]
        watch_for = watch.verdict.watch_for
        try:
            if watch_for.search(payload) is not None:
                return False
        except Exception as exc:  # noqa: BLE001 - the layer changed the pattern after its verdict
            self._layer_failed(flow, entry.layer, "dpi_classify", TypeError(
                f"watches for {watch_for!r}, which cannot search bytes: {exc}"))
            self._leave(flow, entry, REASON_ERROR)
            return True
        watch.left -= 1
        if watch.left <= 0:
            self._leave(flow, entry, REASON_VERDICT)
        return True

    def offer_counted(self, flow: Flow, pkt: Packet, direction: int) -> None:
        """What :meth:`feed` does last: run ``flow``'s layers on ``pkt``, which the caller (the batch path)
        has counted on the flow as feed would have (the packet starts no flow and ends none)."""
        if flow.pending and (pkt.payload or self.wants_empty):
            self._classify(flow, pkt, direction)

    def watched_past(self, flow: Flow, direction: int, proto: int, seq: int, payload: bytes) -> None:
        """What :meth:`_classify` does with a payload that :func:`passes` every layer watching ``flow``:
        the batch path's inline twin, so the two paths keep the same watches, notes and payloads."""
        if self._note_payload(flow, direction, proto, seq, payload):
            entry = flow.pending
            while entry is not None:
                entry.more.left -= 1  # type: ignore[union-attr]  # every one watches (watchers)
                entry = entry.next

    def _note_payload(self, flow: Flow, direction: int, proto: int, seq: int, payload: bytes) -> bool:
        """False for a TCP segment that only repeats bytes already seen; else notes where it ends and keeps
        it in ``Flow.payloads`` (while a layer that reads them looks at the flow)."""
        if proto == TCP:
            notes = flow._notes  # the field itself (see _classify)
            if notes is None:
                notes = flow._notes = {}
            key = _SEQ_NOTE[direction]
            end = (seq + len(payload)) & 0xFFFFFFFF
            last = notes.get(key)
            if last is not None and not 0 < ((end - last) & 0xFFFFFFFF) < 0x80000000:  # end after last
                return False
            notes[key] = end
        payloads = flow._payloads  # the field itself: Flow.payloads would make a list per read
        if payloads is None:
            flow._payloads = [(direction, payload)]
        elif len(payloads) < self.max_payloads and payloads is not _UNREAD:
            payloads.append((direction, payload))
        return True

    def _leave(self, flow: Flow, entry: _Pending, reason: str, verdict: Verdict | None = None) -> None:
        """Take ``entry``'s layer off the flow, giving it its ``dpi_flow_end`` call."""
        held = entry.more
        if type(held) is _Holding:
            entry.more = held.seen  # the packets held back for it go
        pending = flow.pending
        layer = entry.layer
        unread = False
        if pending is entry and entry.next is None:  # the last layer: the usual case, twice in most flows' life
            flow.pending = None
            unread = self._some_unread and layer.info.reads_payloads
        elif _has(pending, entry):
            flow.pending = pending = _without(pending, entry)  # type: ignore[arg-type]
            unread = self._some_unread and layer.info.reads_payloads and not _reader_in(pending)
        if layer.flow_end is not None:
            try:
                last = layer.flow_end(flow, entry.state, reason)
            except PLUGIN_FAILURES as exc:
                self._layer_failed(flow, layer, "dpi_flow_end", exc)
                last = None
            if verdict is None:
                verdict = last
        if unread:  # only now: the layer may read them in dpi_flow_end
            flow._payloads = _UNREAD
        if verdict is not None and not flow._bits & FINAL:
            self._accept(flow, layer, verdict)

    def _accept(self, flow: Flow, layer: Layer, verdict: Verdict, keep: _Pending | None = None) -> None:
        problem = unusable(verdict)
        if problem is not None:
            self._layer_failed(flow, layer, "dpi_classify", TypeError(problem))
            return
        if type(verdict) is SharedVerdict:  # one a layer got from a flow: frozen, so its own copy
            verdict = Verdict(verdict.protocol, verdict.source, verdict.confidence, verdict.app, verdict.category,
                              {}, verdict.watch)
        protocol = self.registry.canonical(verdict.protocol)
        if protocol != verdict.protocol:
            verdict.protocol = protocol
        if verdict.metadata:
            self._share(verdict.metadata)
        if not verdict.source:
            verdict.source = layer.id
        if (protocol == UNKNOWN and not verdict.metadata and verdict.app is None and verdict.category is None
                and not verdict.watch and type(verdict) is Verdict):  # a subclass may carry more
            verdict = self._bare(verdict)
        flow.add_verdict(verdict)
        if (not self.all_layers and verdict.protocol != UNKNOWN and verdict.confidence >= self.threshold):
            flow.verdict = verdict
            self._decide(flow, keep)

    def _bare(self, verdict: Verdict) -> Verdict:
        """The SharedVerdict for a bare Unknown ``verdict`` (see there): a float confidence only, and not
        -0.0, which would share 0.0's object (an int 0 too): the record must write what the layer said."""
        c = verdict.confidence
        if type(c) is not float or (not c and math.copysign(1.0, c) < 0):
            return verdict
        key = (verdict.source, c)
        kept = self._bare_verdicts.get(key)
        if kept is None:
            if len(self._bare_verdicts) >= SHARED_BARE:
                return verdict  # a layer whose Unknowns vary in confidence: past the bound, its own
            kept = self._bare_verdicts[key] = shared_verdict(verdict.protocol, verdict.source, c)
        return kept

    def _share(self, metadata: dict[str, Any]) -> None:
        """Make each short text value of ``metadata`` the one object kept for that text.

        A verdict lives as long as its flow, and its metadata is mostly text that recurs across flows
        (a host, a user agent, a banner, a query name, "HTTP/1.1"), each flow's its own copy, decoded
        from its own packet: ~0.2 KB of a decided flow.  The table is bounded (cleared when full), so
        values that never recur cost at most SHARED_STRINGS entries.
        """
        strings = self._strings
        for name, value in metadata.items():
            if type(value) is str and len(value) <= SHARED_LENGTH:
                kept = strings.get(value)
                if kept is None:
                    if len(strings) >= SHARED_STRINGS:
                        strings.clear()
                    strings[value] = value
                elif kept is not value:
                    metadata[name] = kept  # an existing key: the dict does not change size while iterated

    def _decide(self, flow: Flow, keep: _Pending | None = None) -> None:
        """The flow is final: release every layer still looking at it (but a watching one)."""
        flow._bits |= FINAL
        pending = layers_of(flow.pending)
        flow.pending = None
        for entry in pending:
            if entry is not keep:
                self._leave(flow, entry, REASON_DECIDED)
        if keep is not None:
            keep.next = None
            if flow.verdict is not None:
                keep.more = _Watch(flow.verdict, flow.verdict.watch)
            flow.pending = keep
        else:
            _let_go(flow)

    def _layer_failed(self, flow: Flow, layer: Layer, hook: str, exc: BaseException) -> None:
        self._layer_error(flow, layer, f"{layer.id}: {hook} raised {type(exc).__name__}: {exc}")

    def _layer_error(self, flow: Flow, layer: Layer | None, message: str) -> None:
        """Note a layer's error on ``flow`` and count it; a layer with too many is switched off.  None: a
        layer that cannot be told (it changed the source of its verdict)."""
        flow.errors.append(message)
        self.stats.layer_errors += 1
        if layer is None:
            return
        layer.errors += 1
        layer.last_error = message
        if layer.errors == MAX_LAYER_ERRORS:
            layer.disabled = True
            log.warning("layer %s disabled for new flows after %d errors; last: %s", layer.id, layer.errors,
                        message)

    def _finish(self, flow: Flow) -> Flow:
        """The flow ended: release layers, pick the verdict."""
        if flow.pending is not None:  # most flows are decided long before they end
            if type(flow.pending) is _Held:
                self._begin(flow)
            for entry in layers_of(flow.pending):
                if type(entry.more) is _Holding and _has(flow.pending, entry):
                    self._replay(flow, entry)  # the packets the layer would have seen before the end
            pending = layers_of(flow.pending)
            if pending:
                flow.pending = None
                reason = REASON_OF[flow._bits] or END_EOF
                for entry in pending:
                    self._leave(flow, entry, reason)
        flow._bits |= FINAL
        _let_go(flow)
        verdicts = flow._verdicts
        if verdicts is not None:
            if (any(_changed(v) is not None for v in verdicts) if type(verdicts) is list
                    else _changed(verdicts) is not None):  # one verdict: most flows, no list made
                self._drop_changed(flow)
            if flow.verdict is None:
                flow.verdict = self.choose(flow.verdicts)
        return flow

    def _drop_changed(self, flow: Flow) -> None:
        """Drop the verdicts whose layer changed them after returning them (it kept a reference) into what
        the record cannot carry (a text confidence, metadata that is no dict): that layer's error on the
        flow, as a bad verdict returned is, instead of a crash where the record is written."""
        kept: list[Verdict] = []
        for v in flow.verdicts:
            problem = _changed(v)
            if problem is None:
                kept.append(v)
                continue
            layer = next((layer for layer in self.layers if layer.id == v.source), None)
            message = (f"{layer.id if layer is not None else 'a layer'}: changed a Verdict after returning it: "
                       f"{problem.replace('returned a Verdict whose', 'its')}")
            self._layer_error(flow, layer, message)
            if flow.verdict is v:
                flow.verdict = None
        flow._verdicts = kept

    def choose(self, verdicts: list[Verdict]) -> Verdict | None:
        """The flow's verdict: the highest-priority confident one, else the most confident one."""
        named = [v for v in verdicts if v.protocol != UNKNOWN]
        if not named:
            return verdicts[0] if verdicts else None
        rank = self._layer_rank
        confident = [v for v in named if v.confidence >= self.threshold]
        if confident:
            return min(confident, key=lambda v: rank.get(v.source, len(rank)))
        return max(named, key=lambda v: (v.confidence, -rank.get(v.source, len(rank))))

    def close(self) -> None:
        self.plugins.close()
