"""The dpicore hooks of the libprotoident layer.

Configuration (``[layers.lpi]``)::

    library = "/usr/local/lib/libprotoident.so.2"  # default: DPI_LPI_LIBRARY, then the loader's search
    max_packets = 1000      # packets per flow before guessing with what was seen
    priority = 30           # (read by the core) order among the layers

The layer sees every packet of a flow it has not decided (``wants_empty``:
SYNs, pure ACKs and RSTs matter to the filling rules) and asks
libprotoident once: as soon as both directions have sent their first
payload, or when the flow ends.  ``dpi_configure`` raises when the library
is missing, so ``dpi plugins`` shows the layer as failed with the reason and
how to install it, and the other layers run as usual.
"""

from __future__ import annotations

from typing import Any, Iterable

from dpicore import LayerInfo, ProtocolSpec, Verdict, hookimpl
from dpicore.engine import REASON_DECIDED, REASON_ERROR, REASON_VERDICT

from . import runtime
from .binding import Library, LpiError
from .flowdata import LpiFlowData
from .names import LAYER_ID, LPI_PROTOCOLS, to_verdict

DEFAULT_PRIORITY = 30
DEFAULT_MAX_PACKETS = 1000
SETTINGS = ("library", "max_packets", "priority")

#: Libraries acquired by configure calls still open; the newest serves new flows.
_libraries: list[Library] = []
_max_packets = DEFAULT_MAX_PACKETS


def _settings(config: dict[str, Any]) -> int:
    unknown = sorted(set(config) - set(SETTINGS))
    if unknown:
        raise ValueError(f"layers.lpi: unknown setting(s) {', '.join(unknown)}; known: {', '.join(SETTINGS)}")
    value = config.get("max_packets", DEFAULT_MAX_PACKETS)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"layers.lpi.max_packets must be a positive integer, not {value!r}")
    return value


def library() -> Library:
    if not _libraries:
        raise LpiError("the lpi layer is not configured (dpi_configure was not called or failed)")
    return _libraries[-1]


@hookimpl
def dpi_configure(config: dict[str, Any]) -> None:
    global _max_packets
    max_packets = _settings(config)
    _libraries.append(runtime.acquire(config))
    _max_packets = max_packets


@hookimpl
def dpi_unconfigure() -> None:
    if _libraries:
        runtime.release(_libraries.pop())


@hookimpl
def dpi_layer_info() -> LayerInfo:
    where = _libraries[-1].path if _libraries else "not loaded"
    return LayerInfo(id=LAYER_ID, priority=DEFAULT_PRIORITY,
                     protocols=tuple(spec.name for spec in LPI_PROTOCOLS),
                     max_packets=_max_packets, wants_empty=True,
                     description=f"libprotoident 2.0.15 ({where})")


@hookimpl
def dpi_register_protocols() -> Iterable[ProtocolSpec]:
    return LPI_PROTOCOLS


@hookimpl
def dpi_flow_new() -> LpiFlowData:
    return LpiFlowData()


def guess(state: LpiFlowData) -> Verdict:
    return to_verdict(library().guess(state.to_struct()))


@hookimpl
def dpi_classify(packet: Any, direction: int, state: LpiFlowData) -> Verdict | None:
    state.update(packet, direction)
    if state.complete:
        return guess(state)
    return None


@hookimpl
def dpi_flow_end(state: LpiFlowData, reason: str) -> Verdict | None:
    """The flow ended or the packet budget ran out: libprotoident decides with what it has."""
    if reason in (REASON_VERDICT, REASON_DECIDED, REASON_ERROR) or state is None:
        return None
    return guess(state)
