"""dpicore: a small core that tracks flows and runs pluggable classifier layers.

The public surface is re-exported here; implementation modules stay small and
private-ish.  Plugins are discovered when a :class:`Classifier` (or
:func:`dpicore.plugins.discover`) is created, not at import, so importing the
core stays cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .api import Classifier, flow_from_packet, synthetic_packets
from .config import Config, ConfigError, load_config
from .engine import Engine
from .hookspecs import hookimpl
from .model import Flow, FlowKey, Packet, Verdict
from .plugins import LayerInfo, PluginError, PluginSet, discover
from .protocols import UNKNOWN, ProtocolSpec, canonical, registry

__all__ = [
    "Classifier", "Config", "ConfigError", "Engine", "Flow", "FlowKey", "LayerInfo", "Packet", "PluginError",
    "PluginSet", "ProtocolSpec", "UNKNOWN", "Verdict", "__version__", "canonical", "discover",
    "flow_from_packet", "hookimpl", "load_config", "registry", "synthetic_packets",
]
