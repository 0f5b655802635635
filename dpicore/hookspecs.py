"""Hook specifications: the whole contract between the core and a plugin.

Every hook is prefixed ``dpi_`` and is called with keyword arguments only, so
a spec can grow a parameter without breaking old plugins: an implementation
may accept any subset of the parameters listed here.

Hooks the engine calls once per plugin or once per flow go through pluggy.
``dpi_classify`` runs on the hot path, so the pipeline takes the ordered
implementations once (``get_hookimpls``) and calls them in a plain loop,
catching each layer's exceptions itself; pluggy's own ``firstresult`` would let
one broken layer end the run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

import pluggy

if TYPE_CHECKING:
    from .model import Flow, Packet, Verdict
    from .plugins import LayerInfo
    from .protocols import ProtocolSpec

PROJECT = "dpicore"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def dpi_layer_info() -> "LayerInfo":
    """Describe the layer this plugin provides.

    Called once per plugin at load time, never on the hot path.

    :return: a :class:`dpicore.plugins.LayerInfo` (id, default priority,
        protocols the layer can name, how many packets per flow it wants).
        A plugin that only registers protocols may omit this hook.
    """


@hookspec
def dpi_configure(config: dict[str, Any]) -> None:
    """Initialise the layer before the first flow: open libraries, load models.

    :param config: the layer's table from the configuration file
        (``[layers.<id>]``), empty when there is none.

    Raising here marks the plugin as failed with the exception's message; the
    other layers keep running unless the configuration requires this one.
    """


@hookspec
def dpi_unconfigure() -> None:
    """Release everything ``dpi_configure`` acquired.  Called once at shutdown."""


@hookspec
def dpi_register_protocols() -> "Iterable[ProtocolSpec | str]":
    """Add protocol names (and aliases) to the canonical registry.

    :return: names or :class:`dpicore.protocols.ProtocolSpec` objects.  The core
        owns the registry: an alias already owned by another protocol keeps
        its first owner.
    """


@hookspec
def dpi_flow_new(flow: "Flow", packet: "Packet") -> Any:
    """A new flow starts; return the layer's per-flow state (or None).

    Called before the layer's first packet of the flow.  When the flow's
    first packets carry no payload and every layer that wants such packets
    holds them (``LayerInfo.hold_empty``), the engine starts the layers only
    with the first packet it cannot hold (one with payload, the one past the
    hold) or at the flow's end: a scan's or a flood's flows then cost no
    layer state while they wait.

    :param flow: the new flow (no packets counted yet, or the held ones).
    :param packet: the packet that opened it.
    :return: any object; the pipeline passes it back as ``state`` to
        ``dpi_classify`` and ``dpi_flow_end`` for this flow and this layer.
    """


@hookspec
def dpi_classify(flow: "Flow", packet: "Packet", direction: int, state: Any) -> "Verdict | None":
    """Look at one more packet of a flow the layer has not decided yet.

    Called in priority order, only for packets the layer asked for (payload
    packets, or all packets when ``LayerInfo.wants_empty`` is set; with
    ``LayerInfo.hold_empty`` the payload-less ones among its first packets
    may come late, in order, just before the next packet not held back or
    the flow's end), and at
    most ``LayerInfo.max_packets`` times per flow.  Never called again for a
    flow after the layer returned a verdict.

    :param flow: the flow, counters already updated for this packet.
    :param packet: the packet.
    :param direction: 0 client-to-server, 1 server-to-client.
    :param state: what ``dpi_flow_new`` returned.
    :return: a :class:`dpicore.model.Verdict`, or None to see more packets.
        A verdict with protocol ``Unknown`` means "done, no answer".
    """


@hookspec
def dpi_flow_end(flow: "Flow", state: Any, reason: str) -> "Verdict | None":
    """The layer will see no more of this flow: free its per-flow state.

    Called exactly once per layer and flow that got a ``dpi_flow_new`` call,
    when the layer answered, ran out of packet budget, lost to a confident
    layer before it, or the flow ended.

    :param reason: ``verdict``, ``budget``, ``decided`` (another layer
        decided), or the flow's end reason (``fin``, ``rst``, ``idle``,
        ``active``, ``evicted``, ``eof``).
    :return: a last verdict (e.g. nDPI's give-up guess) or None.
    """
