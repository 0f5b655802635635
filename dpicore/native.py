"""Finding a native library a layer wraps (libndpi, libprotoident, …).

Every wrapper layer offers the same three ways to choose the library, in
this order: an environment variable, the ``library`` key of its
configuration table, then the loader's usual search.  An explicit choice is
returned alone: falling back to another copy would hide the user's mistake.
"""

from __future__ import annotations

import ctypes.util
import os
from typing import Any, Iterable


def library_candidates(layer: str, env_var: str, config: dict[str, Any], sonames: Iterable[str],
                       find_name: str | None = None, extra_dirs: Iterable[str] = (),
                       key: str = "library") -> tuple[str | None, list[str]]:
    """(where an explicit choice came from or None, paths/sonames to try in order).

    Raises ValueError when the configuration's value is not a usable path.
    """
    env = os.environ.get(env_var, "").strip()
    if env:
        return f"the {env_var} environment variable", [env]
    configured = config.get(key)
    if configured is not None:
        if not isinstance(configured, str) or not configured.strip():
            raise ValueError(f"layers.{layer}.{key} must be a path to the library, not {configured!r}")
        return f"layers.{layer}.{key}", [os.path.expanduser(configured.strip())]
    names = list(sonames)
    found: list[str] = list(names)
    if find_name:
        name = ctypes.util.find_library(find_name)
        if name:
            found.append(name)
    found.extend(os.path.join(d, s) for d in extra_dirs for s in names)
    return None, list(dict.fromkeys(found))
