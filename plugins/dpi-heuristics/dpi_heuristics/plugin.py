"""The dpicore hooks of the heuristics layer.

Configuration (``[layers.heuristics]``)::

    enable = ["HTTP", "TLS"]   # only these protocols' heuristics (default: all)
    block = ["RTP"]            # never run these
    max_packets = 8            # payload packets per flow before giving up

The entry point names :class:`HeuristicsLayer`: the core makes one per
plugin manager, so every classifier has its own selection and budget.
"""

from __future__ import annotations

from typing import Any

from dpicore import LayerInfo, Verdict, hookimpl
from dpicore.protocols import UNKNOWN

from .base import LAYER_ID, MORE, Heuristic
from .dispatch import Dispatcher, FlowState
from .protocols import all_heuristics

DEFAULT_PRIORITY = 10
DEFAULT_MAX_PACKETS = 8


def select(heuristics: list[Heuristic], config: dict[str, Any]) -> list[Heuristic]:
    """Apply the layer's enable/block lists; unknown names are a configuration error."""
    names = {h.name.lower() for h in heuristics}
    enable = config.get("enable")
    block = config.get("block", [])
    for key, value in (("enable", enable or []), ("block", block)):
        unknown = [n for n in value if n.lower() not in names]
        if unknown:
            raise ValueError(f"layers.heuristics.{key}: unknown protocol(s) {', '.join(unknown)}; known: "
                             + ", ".join(sorted({h.name for h in heuristics})))
    blocked = {n.lower() for n in block}
    wanted = None if enable is None else {n.lower() for n in enable}
    return [h for h in heuristics
            if h.name.lower() not in blocked and (wanted is None or h.name.lower() in wanted)]


def protocol_names() -> tuple[str, ...]:
    return tuple(sorted({n for h in all_heuristics() for n in (h.name, *h.also)}))


class HeuristicsLayer:
    """The layer as one object per plugin manager (the entry point names this class).

    Each :class:`dpicore.Classifier` gets its own instance, so one that
    blocks a protocol and one that does not can run side by side; the
    dispatcher also holds the cross-flow notes the heuristics share
    (``Context.shared``), which belong to one classifier's traffic.
    """

    def __init__(self) -> None:
        #: Built by :meth:`dpi_configure` (the core configures a layer before its first flow).
        self.dispatcher: Dispatcher | None = None
        self.max_packets = DEFAULT_MAX_PACKETS

    @hookimpl
    def dpi_layer_info(self) -> LayerInfo:
        return LayerInfo(id=LAYER_ID, priority=DEFAULT_PRIORITY, protocols=protocol_names(),
                         max_packets=self.max_packets,
                         description="port-independent payload heuristics")

    @hookimpl
    def dpi_configure(self, config: dict[str, Any]) -> None:
        self.max_packets = int(config.get("max_packets", DEFAULT_MAX_PACKETS))
        self.dispatcher = Dispatcher(select(all_heuristics(), config))

    @hookimpl
    def dpi_unconfigure(self) -> None:
        self.dispatcher = None

    @hookimpl
    def dpi_flow_new(self, flow: Any, packet: Any) -> FlowState:
        return FlowState()

    @hookimpl
    def dpi_classify(self, flow: Any, packet: Any, direction: int, state: FlowState) -> Verdict | None:
        watching = state.decided is not None
        if self.dispatcher is None:
            raise RuntimeError("the heuristics layer is not configured (dpi_configure was not called)")
        result = self.dispatcher.classify(state, (flow, packet.proto, direction, packet.payload))
        if isinstance(result, Verdict):
            return result
        if watching or result is MORE:
            return None
        # No candidate left: the best guess a detector offered, else "not ours".
        return state.guess or Verdict(UNKNOWN, LAYER_ID, 0.0)

    @hookimpl
    def dpi_flow_end(self, flow: Any, state: FlowState, reason: str) -> Verdict | None:
        """The flow ended (or the packet budget ran out) while candidates still hoped: their best guess."""
        if state is None or state.decided is not None:
            return None
        return state.guess
