"""Finding and loading the libprotoident the user installed.

No package registry this project reaches ships libprotoident (Debian has
libtrace but not libprotoident; PyPI has neither), so the layer loads what
the user built.  Lookup order:

1. the ``DPI_LPI_LIBRARY`` environment variable (a path or a soname);
2. ``library = "..."`` in ``[layers.lpi]`` of the configuration file (``layers.lpi.library``);
3. the dynamic loader's usual search: ``ctypes.util.find_library("protoident")``
   (the ldconfig cache), then the sonames ``libprotoident.so.2`` /
   ``libprotoident.so``, then ``/usr/local/lib`` where ``make install`` puts
   it when ``ldconfig`` was not run afterwards.

An explicit choice (1 or 2) that fails is an error of its own: falling back
to some other copy would hide the user's mistake.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

from dpicore.native import library_candidates

from .binding import LpiError, open_library

ENV_VAR = "DPI_LPI_LIBRARY"
CONFIG_KEY = "library"
DOCS = "docs/lpi.md"
SONAMES = ("libprotoident.so.2", "libprotoident.so")
EXTRA_DIRS = ("/usr/local/lib", "/usr/local/lib64")

HOW_TO_GET = (
    "No package registry ships it: build release 2.0.15 from source (apt-get install build-essential "
    "autoconf automake libtool libtrace-dev; ./bootstrap.sh; ./configure --with-tools=no; make; "
    f"make install; ldconfig) or point {ENV_VAR} or layers.lpi.{CONFIG_KEY} at libprotoident.so.2. "
    f"See {DOCS}.")


class LpiUnavailable(LpiError):
    """libprotoident could not be found or loaded."""


def _hint(error: str) -> str:
    if "libtrace" in error:
        return " libprotoident needs libtrace at run time: apt-get install libtrace3."
    return ""


def candidates(config: dict[str, Any]) -> tuple[str | None, list[str]]:
    """(where an explicit choice came from or None, paths/sonames to try in order)."""
    try:
        origin, found = library_candidates("lpi", ENV_VAR, config, SONAMES, find_name="protoident",
                                           extra_dirs=EXTRA_DIRS, key=CONFIG_KEY)
    except ValueError as exc:
        raise LpiUnavailable(str(exc)) from None
    return origin, found


def load(config: dict[str, Any]) -> tuple[str, ctypes.CDLL]:
    """The first candidate that loads: (path or soname, handle); :class:`LpiUnavailable` otherwise."""
    origin, paths = candidates(config)
    errors: list[str] = []
    for path in paths:
        try:
            return path, open_library(path)
        except OSError as exc:
            errors.append(str(exc))
    if origin is not None:
        error = errors[0] if errors else "nothing to load"
        raise LpiUnavailable(f"cannot load libprotoident from {paths[0]!r} (set by {origin}): {error}."
                             f"{_hint(error)} See {DOCS}.")
    real = [e for e in errors if "No such file" not in e and "cannot open shared object file" not in e
            or "libtrace" in e]
    if real:
        raise LpiUnavailable(f"libprotoident was found but does not load: {real[0]}.{_hint(real[0])} "
                             f"See {DOCS}.")
    raise LpiUnavailable(f"libprotoident is not installed (no {SONAMES[0]} found by the dynamic loader "
                         f"nor in {', '.join(EXTRA_DIRS)}). {HOW_TO_GET}")
