"""The dpicore hooks of the nDPI layer.

Configuration (``[layers.ndpi]``)::

    library = "/usr/lib/x86_64-linux-gnu/libndpi.so.4.2"  # default: DPI_NDPI_LIBRARY, then the soname
    tcp_packets = 80      # give up on a TCP flow after this many packets (ndpiReader -T)
    udp_packets = 24      # ... on a UDP flow (ndpiReader -U)
    guess = true          # let nDPI guess by port/IP when it gives up (ndpiReader without -d)
    max_packets = 256     # hard cap on packets per flow for any transport
    priority = 20         # (read by the core) order among the layers

The entry point names :class:`NdpiLayer`; the core makes one instance per
plugin manager (per :class:`dpicore.Classifier`), whose ``dpi_configure``
opens that classifier's own nDPI detection module and whose
``dpi_unconfigure`` closes it.  ``dpi_configure`` raises when libndpi is
missing or is not release 4.2, so ``dpi plugins`` shows the layer as failed
with the reason and the install command, and the other layers run as usual.
"""

from __future__ import annotations

from typing import Any, Iterable

from dpicore import LayerInfo, ProtocolSpec, Verdict, hookimpl
from dpicore.engine import REASON_DECIDED, REASON_ERROR, REASON_VERDICT
from dpicore.plugins import check_settings

from . import library
from .detector import TCP_PACKETS, UDP_PACKETS, Detector, NdpiFlow
from .verdicts import LAYER_ID, protocol_specs, to_verdict

DEFAULT_PRIORITY = 20
DEFAULT_MAX_PACKETS = 256
SETTINGS = ("library", "tcp_packets", "udp_packets", "guess", "max_packets", "priority")


def _positive(config: dict[str, Any], key: str, default: int) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"layers.ndpi.{key} must be an integer from 1 to 65535, not {value!r}")
    return value


def _settings(config: dict[str, Any]) -> tuple[int, int, bool, int]:
    check_settings(LAYER_ID, config, SETTINGS)
    guess = config.get("guess", True)
    if not isinstance(guess, bool):
        raise ValueError(f"layers.ndpi.guess must be true or false, not {guess!r}")
    tcp = _positive(config, "tcp_packets", TCP_PACKETS)
    udp = _positive(config, "udp_packets", UDP_PACKETS)
    # The engine's own cap must not cut a flow before nDPI's per-transport budget does.
    cap = _positive(config, "max_packets", max(DEFAULT_MAX_PACKETS, tcp + 1, udp + 1))
    return tcp, udp, guess, cap


class NdpiLayer:
    """The layer as one object per plugin manager (the entry point names this class).

    Each :class:`dpicore.Classifier` gets its own instance and so its own
    nDPI detection module and settings; closing one classifier frees only its
    module, the others keep classifying.
    """

    def __init__(self) -> None:
        self._detector: Detector | None = None
        self.where = "not loaded"
        self.max_packets = DEFAULT_MAX_PACKETS
        #: Payload-less packets the engine may hold back (LayerInfo.hold_empty): nDPI names no flow from
        #: them before its give-up budget, so the smaller budget is safe.
        self.hold_empty = min(TCP_PACKETS, UDP_PACKETS)

    @property
    def detector(self) -> Detector:
        """This instance's open nDPI module."""
        if self._detector is None:
            raise library.NdpiError("the ndpi layer is not configured (dpi_configure was not called or failed)")
        return self._detector

    @hookimpl
    def dpi_configure(self, config: dict[str, Any]) -> None:
        tcp, udp, guess, cap = _settings(config)
        where, abi = library.load(config)
        if self._detector is not None:  # configured twice: the first module is not leaked
            self._detector.close()
        self._detector = Detector(abi, tcp, udp, guess)
        self.where = f"{abi.release} ({abi.revision}, {where})"
        self.max_packets = cap
        self.hold_empty = min(tcp, udp)

    @hookimpl
    def dpi_unconfigure(self) -> None:
        """Close the module: freed now, or when the last flow it still tracks is released."""
        if self._detector is not None:
            self._detector.close()
            self._detector = None

    def _names(self) -> list[str]:
        return self._detector.names if self._detector is not None else []

    @hookimpl
    def dpi_layer_info(self) -> LayerInfo:
        return LayerInfo(id=LAYER_ID, priority=DEFAULT_PRIORITY, protocols=tuple(self._names()[1:]),
                         max_packets=self.max_packets, wants_empty=True, hold_empty=self.hold_empty,
                         reads_payloads=False,
                         description=f"nDPI deep packet inspection: {self.where}")

    @hookimpl
    def dpi_register_protocols(self) -> Iterable[ProtocolSpec | str]:
        return protocol_specs(self._names())

    # The hooks below take the specs' full argument lists: the engine then calls them directly,
    # without the adapter it puts around an implementation that takes a subset (once per packet).

    @hookimpl
    def dpi_flow_new(self, flow: Any, packet: Any) -> NdpiFlow:
        return self.detector.new_flow(flow.proto)

    @hookimpl
    def dpi_classify(self, flow: Any, packet: Any, direction: int, state: NdpiFlow) -> Verdict | None:
        result = state.feed(packet)
        return None if result is None else to_verdict(result)

    @hookimpl
    def dpi_flow_end(self, flow: Any, state: NdpiFlow | None, reason: str) -> Verdict | None:
        """Release the flow's nDPI memory; a flow cut short first gets nDPI's give-up answer."""
        if state is None:
            return None
        try:
            if state.done or reason in (REASON_VERDICT, REASON_DECIDED, REASON_ERROR) or state.packets == 0:
                return None
            return to_verdict(state.giveup())
        finally:
            state.release()
