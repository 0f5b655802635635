"""Pick the heuristics that could match a flow, run them, keep the survivors.

Candidates are chosen once per flow, from its transport and the first byte
of its first payload, through a precomputed table: a flow never runs every
heuristic.  Each later payload packet runs only the candidates that said
:data:`~dpi_heuristics.base.MORE`.
"""

from __future__ import annotations

from typing import Any, Iterable

import attrs
from dpicore import Verdict

from .base import MORE, Context, Heuristic


@attrs.define(slots=True)
class FlowState:
    #: Heuristics still plausible; None until the first payload packet.
    candidates: list[Heuristic] | None = None
    seen: list[int] = attrs.field(factory=lambda: [0, 0])


class Dispatcher:
    def __init__(self, heuristics: Iterable[Heuristic]) -> None:
        self.heuristics = sorted(heuristics, key=lambda h: (h.order, h.name))
        # (transport, first byte) -> candidates; (transport, None) -> those with no byte filter.
        self._table: dict[tuple[int, int], list[Heuristic]] = {}
        transports = {t for h in self.heuristics for t in h.transports}
        for t in transports:
            for byte in range(256):
                self._table[(t, byte)] = [
                    h for h in self.heuristics
                    if t in h.transports and (h.first_bytes is None or byte in h.first_bytes)]
        self.shared: dict[str, Any] = {}

    def candidates(self, transport: int, first: int) -> list[Heuristic]:
        return list(self._table.get((transport, first), ()))

    def classify(self, state: FlowState, ctx_args: tuple[Any, int, int, bytes]) -> Verdict | None | Any:
        """Run the candidates on one payload packet.

        Returns a verdict, :data:`MORE` while some candidate is still
        plausible, or None when none is left.
        """
        flow, transport, direction, payload = ctx_args
        if state.candidates is None:
            state.candidates = self.candidates(transport, payload[0])
        state.seen[direction] += 1
        ctx = Context(flow, transport, direction, payload, state.seen[direction], self.shared)
        survivors: list[Heuristic] = []
        best: Verdict | None = None
        for h in state.candidates:
            result = h.detect(ctx)
            if result is None:
                continue
            if result is MORE:
                survivors.append(h)
                continue
            if isinstance(result, Verdict):
                if best is None or result.confidence > best.confidence:
                    best = result
                if result.confidence >= 0.8:
                    break
        if best is not None:
            return best
        state.candidates = survivors
        return MORE if survivors else None
