"""Pick the heuristics that could match a flow, run them, keep the survivors.

Candidates are chosen once per flow, from its transport and the first byte
of its first payload, through a precomputed table: a flow never runs every
heuristic.  Each later payload packet runs only the candidates that said
:data:`~dpi_heuristics.base.MORE`; once one decided, only that one runs (for
the packets the engine lets it watch after the verdict, e.g. TLS reading the
ServerHello for the negotiated version).
"""

from __future__ import annotations

import logging
from collections import Counter
from types import MappingProxyType
from typing import Any, Iterable, Sequence

from dpicore import Verdict

from .base import MORE, Context, Heuristic

log = logging.getLogger(__name__)


class FlowState:
    """The layer's state of one flow (a plain ``__slots__`` class: one is made per flow)."""

    __slots__ = ("candidates", "seen", "decided", "memo", "guesses")

    def __init__(self) -> None:
        #: Heuristics still plausible; None until the first payload packet.  Never mutated in
        #: place (it may be the dispatcher's shared table entry): replaced by the survivors.
        self.candidates: Sequence[Heuristic] | None = None
        #: The heuristic that named the flow (it alone sees the watched packets).
        self.decided: Heuristic | None = None
        # The containers below are made by the first payload packet (:meth:`start`): a flow that never
        # carries one (a SYN scan's) keeps only this object, ~0.2 KB less per flow.
        #: Payload packets seen per direction.
        self.seen: list[int] = _NONE_SEEN
        #: Per-flow scratch space shared with the detectors (``Context.memo``).
        self.memo: dict[str, Any] = _NO_MEMO
        #: ``Context.guess`` offers per heuristic; a heuristic that gives up takes its offer back.
        self.guesses: dict[str, Verdict] = _NO_MEMO

    def start(self, candidates: Sequence[Heuristic]) -> None:
        """The first payload packet: the flow's candidates, and its containers."""
        self.candidates = candidates
        self.seen = [0, 0]
        self.memo = {}
        self.guesses = {}

    @property
    def guess(self) -> Verdict | None:
        """The most confident standing guess: the verdict if the flow ends undecided."""
        return max(self.guesses.values(), key=lambda v: v.confidence, default=None)


#: What a flow without a payload packet yet holds instead of its containers: read-only stand-ins, so
#: a write before :meth:`FlowState.start` replaced them would raise instead of reaching every flow.
_NONE_SEEN: Any = (0, 0)
_NO_MEMO: Any = MappingProxyType({})


class Dispatcher:
    def __init__(self, heuristics: Iterable[Heuristic]) -> None:
        self.heuristics = sorted(heuristics, key=lambda h: (h.order, h.name))
        # (transport, first byte) -> candidates, each entry made when a flow first needs it (all 512 of
        # them at once were a seventh of the layer's start-up).
        # Tuples: a flow's FlowState.candidates starts as the shared entry itself (never mutated).
        self._table: dict[tuple[int, int], tuple[Heuristic, ...]] = {}
        self.shared: dict[str, Any] = {}
        #: Exceptions per heuristic name (a detector bug; each is also noted on its flow).
        self.errors: Counter[str] = Counter()

    def candidates(self, transport: int, first: int) -> list[Heuristic]:
        return list(self._candidates(transport, first))

    def _candidates(self, transport: int, first: int) -> tuple[Heuristic, ...]:
        """The heuristics that may match a flow of ``transport`` whose first payload starts with ``first``."""
        key = (transport, first)
        found = self._table.get(key)
        if found is None:
            found = self._table[key] = tuple(
                h for h in self.heuristics
                if transport in h.transports and (h.first_bytes is None or first in h.first_bytes))
        return found

    def classify(self, state: FlowState, ctx_args: tuple[Any, int, int, bytes]) -> Verdict | None | Any:
        """Run the candidates on one payload packet.

        Returns a verdict, :data:`MORE` while some candidate is still
        plausible, or None when none is left.
        """
        flow, transport, direction, payload = ctx_args
        candidates = state.candidates
        if not payload:
            return MORE if candidates is None or candidates else None
        if candidates is None:
            candidates = self._candidates(transport, payload[0])
            state.start(candidates)
        seen = state.seen
        seen[direction] += 1
        ctx = Context(flow, transport, direction, payload, seen[direction], self.shared, state.memo)
        decided = state.decided
        if decided is not None:  # watching after the verdict (FTP: the control connection's announcements)
            try:
                return decided.detect(ctx)
            except Exception as exc:
                return self._failed(decided, exc, flow)
        survivors: list[Heuristic] = []
        best: Verdict | None = None
        guesses = state.guesses
        for h in candidates:
            try:
                result = h.detect(ctx)
            except Exception as exc:  # a detector bug must not cost the flow its other candidates
                result = self._failed(h, exc, flow)
            if ctx.tentative is not None:
                guesses[h.name] = ctx.tentative
                ctx.tentative = None
            if result is None:
                if guesses:
                    guesses.pop(h.name, None)
                continue
            if result is MORE:
                survivors.append(h)
                continue
            if isinstance(result, Verdict):
                if best is None or result.confidence > best.confidence:
                    best, decided = result, h
                if result.confidence >= 0.8:
                    break
        if best is not None:
            state.decided = decided
            # Only the deciding heuristic runs from now on (watching): the other candidates and the
            # standing guesses are never read again, and a watched flow may live for minutes.
            state.candidates = ()
            state.guesses = _NO_MEMO
            return best
        state.candidates = survivors
        return MORE if survivors else None

    def _failed(self, h: Heuristic, exc: Exception, flow: Any) -> None:
        """Count and note a detector's exception: it counts as "not this protocol" (and is logged once).

        The detector calls themselves are inlined in :meth:`classify` (its loop is the layer's hot path).
        """
        self.errors[h.name] += 1
        message = f"heuristics: {h.name} raised {type(exc).__name__}: {exc}"
        errors = getattr(flow, "errors", None)
        if isinstance(errors, list):
            errors.append(message)
        if self.errors[h.name] == 1:
            log.warning("%s (further errors of this heuristic are counted, not logged)", message)
        return None
