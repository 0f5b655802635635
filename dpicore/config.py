"""Engine configuration, from defaults, a TOML file and command-line overrides.

The file format (all keys optional)::

    [engine]
    threshold = 0.5          # a verdict at or above this makes the flow final
    all_layers = false       # ask every layer, report every verdict
    idle_timeout = 600.0     # seconds without a packet before a flow ends
    active_timeout = 1800.0  # seconds after which a long flow is cut
    max_flows = 1000000      # live-flow cap; idle flows are evicted first
    max_payloads = 8         # payload packets kept per flow for the layers

    [layers]
    enable = ["heuristics", "ndpi"]  # only these run (default: all installed)
    block = ["ml"]                   # never load these
    require = ["ndpi"]               # fail loudly when one of these is missing

    [layers.ndpi]                    # passed to that layer's dpi_configure
    priority = 20

Other tables and keys are errors: a misspelt ``[engine]`` would otherwise run
on the defaults unnoticed.  A layer id is checked against the installed
plugins by the command (a warning: one file may serve several machines).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs


class ConfigError(ValueError):
    """The configuration is unusable; the message says which key and why."""


@attrs.define(slots=True)
class Config:
    threshold: float = 0.5
    all_layers: bool = False
    idle_timeout: float = 600.0
    active_timeout: float = 1800.0
    max_flows: int = 1_000_000
    max_payloads: int = 8
    #: None means every installed layer; otherwise only these ids.
    enable: list[str] | None = None
    block: list[str] = attrs.field(factory=list)
    require: list[str] = attrs.field(factory=list)
    #: Per-layer tables (``[layers.<id>]``), including ``priority``.
    layer_settings: dict[str, dict[str, Any]] = attrs.field(factory=dict)

    def priority_override(self, layer_id: str) -> int | None:
        value = self.layer_settings.get(layer_id, {}).get("priority")
        return None if value is None else int(value)

    def allows(self, layer_id: str) -> bool:
        if layer_id in self.block:
            return False
        return self.enable is None or layer_id in self.enable

    def with_layers(self, layers: list[str]) -> "Config":
        """A copy that runs exactly ``layers`` and requires them."""
        return attrs.evolve(self, enable=list(layers), require=sorted(set(self.require) | set(layers)))


_ENGINE_KEYS: dict[str, type] = {
    "threshold": float, "all_layers": bool, "idle_timeout": float,
    "active_timeout": float, "max_flows": int, "max_payloads": int,
}


def _string_list(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"[layers] {key} must be a list of layer ids")
    return list(value)


def config_from_dict(data: dict[str, Any]) -> Config:
    cfg = Config()
    for key in data:
        if key not in ("engine", "layers"):  # a misspelt [engine] was silently the defaults
            raise ConfigError(f"unknown {'table [' + key + ']' if isinstance(data[key], dict) else 'key ' + key}"
                              " (known: [engine], [layers] and [layers.<id>])")
    engine = data.get("engine", {})
    if not isinstance(engine, dict):
        raise ConfigError("[engine] must be a table")
    for key, value in engine.items():
        kind = _ENGINE_KEYS.get(key)
        if kind is None:
            raise ConfigError(f"unknown key engine.{key} (known: {', '.join(sorted(_ENGINE_KEYS))})")
        # An int key takes an integer only (2.7 flows is a typo, not 2); a float key an int too.
        allowed = (bool,) if kind is bool else (int,) if kind is int else (int, float)
        if not isinstance(value, allowed) or kind is not bool and isinstance(value, bool):
            raise ConfigError(f"engine.{key} must be a{'n' if kind is int else ''} "
                              f"{'integer' if kind is int else kind.__name__}")
        setattr(cfg, key, kind(value))
    if not 0.0 <= cfg.threshold <= 1.0:
        raise ConfigError("engine.threshold must be between 0 and 1")
    # "not > 0" rather than "<= 0": TOML's nan is neither, and a nan timeout ends flows at random.
    if not (cfg.max_flows >= 1 and cfg.max_payloads >= 1 and cfg.idle_timeout > 0 and cfg.active_timeout > 0):
        raise ConfigError("engine.max_flows, engine.max_payloads and the timeouts must be positive")
    layers = data.get("layers", {})
    if not isinstance(layers, dict):
        raise ConfigError("[layers] must be a table")
    for key, value in layers.items():
        if key == "enable":
            cfg.enable = _string_list(value, key)
        elif key == "block":
            cfg.block = _string_list(value, key)
        elif key == "require":
            cfg.require = _string_list(value, key)
        elif isinstance(value, dict):
            if "priority" in value and (not isinstance(value["priority"], int) or isinstance(value["priority"], bool)):
                raise ConfigError(f"layers.{key}.priority must be an integer")
            cfg.layer_settings[key] = dict(value)
        else:
            raise ConfigError(f"layers.{key} must be a table ([layers.{key}]) or one of enable/block/require")
    return cfg


def load_config(path: str | Path | None) -> Config:
    """Read a TOML configuration file; None gives the defaults."""
    if path is None:
        return Config()
    import tomllib  # only with a file to read (its parser is a fortieth of the start-up)

    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such configuration file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None
