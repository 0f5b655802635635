"""dpicore: a small core that tracks flows and runs pluggable classifier layers.

The public surface is re-exported here; implementation modules stay small and
private-ish.  Plugins are discovered when a :class:`Classifier` (or
:func:`dpicore.plugins.discover`) is created, not at import, so importing the
core stays cheap.

The re-exports are resolved on first use (PEP 562): importing a submodule
(``dpicore.hookspecs`` from a plugin, ``dpicore.cli`` from the ``dpi``
command) then runs this file without importing numpy, so the command can
still set numpy's threading before numpy loads (see :mod:`dpicore.cli`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the submodule that defines it.
_EXPORTS = {
    "Classifier": "api", "flow_from_packet": "api", "synthetic_packets": "api",
    "Config": "config", "ConfigError": "config", "load_config": "config",
    "Engine": "engine",
    "hookimpl": "hookspecs",
    "Flow": "model", "FlowKey": "model", "Packet": "model", "SharedVerdict": "model", "Verdict": "model",
    "LayerInfo": "plugins", "PluginError": "plugins", "PluginSet": "plugins", "discover": "plugins",
    "UNKNOWN": "protocols", "ProtocolSpec": "protocols", "canonical": "protocols", "registry": "protocols",
}

__all__ = sorted([*_EXPORTS, "__version__"])

# Before any submodule is imported: the compiled copies of the hot modules, when this environment has
# them and they match their sources (see dpicore.compiled).
from . import compiled as _compiled  # noqa: E402

_compiled.install()


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later reads skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:
    from .api import Classifier, flow_from_packet, synthetic_packets
    from .config import Config, ConfigError, load_config
    from .engine import Engine
    from .hookspecs import hookimpl
    from .model import Flow, FlowKey, Packet, SharedVerdict, Verdict
    from .plugins import LayerInfo, PluginError, PluginSet, discover
    from .protocols import UNKNOWN, ProtocolSpec, canonical, registry
