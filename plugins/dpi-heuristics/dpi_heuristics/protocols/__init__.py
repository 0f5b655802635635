"""One module per protocol; each exposes ``HEURISTICS: list[Heuristic]``.

Modules are found by walking this package, so adding a protocol is adding a
file.
"""

from __future__ import annotations

import importlib
import pkgutil

from ..base import Heuristic


def all_heuristics() -> list[Heuristic]:
    out: list[Heuristic] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        out.extend(getattr(module, "HEURISTICS", ()))
    return out
