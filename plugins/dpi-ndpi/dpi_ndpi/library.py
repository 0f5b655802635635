"""Finding libndpi, checking which release it is, and binding the matching ABI.

Lookup order:

1. the ``DPI_NDPI_LIBRARY`` environment variable (a path or a soname);
2. ``library = "..."`` in ``[layers.ndpi]`` of the configuration file;
3. the sonames of the releases this package supports (``libndpi.so.4.2``),
   then whatever ``ctypes.util.find_library("ndpi")`` finds.

An explicit choice (1 or 2) that fails is reported as such; falling back to
another copy would hide the user's mistake.  A library that loads but
reports an API version this package has no ABI module for is refused with a
clear message: nDPI changes struct layouts between releases, and guessing
one means corrupting memory.

The handle is a :class:`ctypes.PyDLL`: calls keep the GIL.  An nDPI module
holds per-packet scratch state, so two threads must never be inside one
module at once; holding the GIL guarantees that even if two engines in two
threads end up sharing a module, at no cost to a single-threaded pipeline.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any, Callable

from dpicore.native import library_candidates

from . import abi42

ENV_VAR = "DPI_NDPI_LIBRARY"
CONFIG_KEY = "library"

#: API version -> the ABI class for that release.  One entry per supported release.
SUPPORTED: dict[int, Callable[[ctypes.CDLL], Any]] = {abi42.API_VERSION: abi42.Ndpi42}
SONAMES: tuple[str, ...] = (abi42.SONAME,)

INSTALL_HINT = ("install it with `apt-get install libndpi4.2` (Debian 12 / Ubuntu; as root), "
                f"or point {ENV_VAR} or layers.ndpi.{CONFIG_KEY} at libndpi.so.4.2")


class NdpiError(RuntimeError):
    """Base class of this layer's errors."""


class NdpiUnavailable(NdpiError):
    """libndpi could not be found or loaded."""


class NdpiUnsupported(NdpiError):
    """libndpi loaded, but it is a release this package has no ABI description for."""


def candidates(config: dict[str, Any]) -> tuple[str | None, list[str]]:
    """(where an explicit choice came from, or None; paths/sonames to try in order)."""
    try:
        return library_candidates("ndpi", ENV_VAR, config, SONAMES, find_name="ndpi", key=CONFIG_KEY)
    except ValueError as exc:
        raise NdpiUnavailable(str(exc)) from None


def bind(path: str, lib: ctypes.CDLL) -> Any:
    """The ABI object for ``lib``, after checking its API version."""
    try:
        get_version = lib.ndpi_get_api_version
    except AttributeError:
        raise NdpiUnsupported(f"{path} has no ndpi_get_api_version(): not a libndpi this layer knows") from None
    get_version.restype = ctypes.c_uint16
    get_version.argtypes = []
    version = int(get_version())
    abi = SUPPORTED.get(version)
    if abi is None:
        known = ", ".join(f"{v} ({cls.release})" for v, cls in SUPPORTED.items())  # type: ignore[attr-defined]
        raise NdpiUnsupported(
            f"{path} reports nDPI API version {version}; this layer supports {known} only. nDPI changes "
            f"its structs between releases, so the layer refuses to guess; {INSTALL_HINT}")
    try:
        return abi(lib)
    except (AttributeError, RuntimeError) as exc:
        raise NdpiUnsupported(f"{path}: {exc}") from None


def load(config: dict[str, Any] | None = None) -> tuple[str, Any]:
    """(path or soname, bound ABI) of the first candidate that loads; raises :class:`NdpiError`."""
    origin, paths = candidates(config or {})
    errors: list[str] = []
    for path in paths:
        try:
            lib = ctypes.PyDLL(path)
        except OSError as exc:
            errors.append(str(exc))
            continue
        return path, bind(path, lib)
    if origin is not None:
        raise NdpiUnavailable(f"cannot load libndpi named by {origin} ({errors[0] if errors else paths[0]}); "
                              f"{INSTALL_HINT}")
    raise NdpiUnavailable(f"libndpi 4.2 is not installed (tried {', '.join(paths)}); {INSTALL_HINT}")
