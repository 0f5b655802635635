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

The entry point names :class:`LpiLayer`: the core makes one per plugin
manager, so every classifier has its own settings.
"""

from __future__ import annotations

from typing import Any, Iterable

from dpicore import LayerInfo, ProtocolSpec, Verdict, hookimpl
from dpicore.engine import REASON_DECIDED, REASON_ERROR, REASON_VERDICT
from dpicore.plugins import check_settings

from . import runtime
from .binding import Library, LpiError
from .flowdata import LpiFlowData
from .names import LAYER_ID, LPI_PROTOCOLS, to_verdict

DEFAULT_PRIORITY = 30
DEFAULT_MAX_PACKETS = 1000
SETTINGS = ("library", "max_packets", "priority")


def _settings(config: dict[str, Any]) -> int:
    check_settings(LAYER_ID, config, SETTINGS)
    value = config.get("max_packets", DEFAULT_MAX_PACKETS)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"layers.lpi.max_packets must be a positive integer, not {value!r}")
    return value


class LpiLayer:
    """The layer as one object per plugin manager (the entry point names this class).

    Each :class:`dpicore.Classifier` gets its own instance with its own
    settings and its own hold on the library (:mod:`.runtime` counts the
    holders, since libprotoident's tables are process-wide C globals).
    """

    def __init__(self) -> None:
        self._library: Library | None = None
        self.max_packets = DEFAULT_MAX_PACKETS

    @property
    def library(self) -> Library:
        if self._library is None:
            raise LpiError("the lpi layer is not configured (dpi_configure was not called or failed)")
        return self._library

    @hookimpl
    def dpi_configure(self, config: dict[str, Any]) -> None:
        max_packets = _settings(config)
        library = runtime.acquire(config)
        if self._library is not None:  # configured twice: give the first hold back
            runtime.release(self._library)
        self._library, self.max_packets = library, max_packets

    @hookimpl
    def dpi_unconfigure(self) -> None:
        if self._library is not None:
            runtime.release(self._library)
            self._library = None

    @hookimpl
    def dpi_layer_info(self) -> LayerInfo:
        where = self._library.path if self._library is not None else "not loaded"
        return LayerInfo(id=LAYER_ID, priority=DEFAULT_PRIORITY,
                         protocols=tuple(spec.name for spec in LPI_PROTOCOLS),
                         max_packets=self.max_packets, wants_empty=True, reads_payloads=False,
                         description=f"libprotoident 2.0.15 ({where})")

    @hookimpl
    def dpi_register_protocols(self) -> Iterable[ProtocolSpec]:
        return LPI_PROTOCOLS

    @hookimpl
    def dpi_flow_new(self) -> LpiFlowData:
        return LpiFlowData()

    def guess(self, state: LpiFlowData) -> Verdict:
        return to_verdict(self.library.guess(state.to_struct()))

    @hookimpl
    def dpi_classify(self, packet: Any, direction: int, state: LpiFlowData) -> Verdict | None:
        state.update(packet, direction)
        if state.complete:
            return self.guess(state)
        return None

    @hookimpl
    def dpi_flow_end(self, state: LpiFlowData, reason: str) -> Verdict | None:
        """The flow ended or the packet budget ran out: libprotoident decides with what it has."""
        if reason in (REASON_VERDICT, REASON_DECIDED, REASON_ERROR) or state is None:
            return None
        return self.guess(state)
