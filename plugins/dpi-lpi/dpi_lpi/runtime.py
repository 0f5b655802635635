"""One initialised libprotoident per library file, shared by every classifier in the process.

libprotoident keeps its module tables in globals: ``lpi_init_library`` fills
them and ``lpi_free_library`` empties them, after which every guess returns
NULL.  Two :class:`dpicore.Classifier` objects in one process (tests, a
server with a classifier per worker) configure the layer twice and close
it at different times, so the library is reference-counted: initialised by
the first user, freed when the last one lets go.
"""

from __future__ import annotations

import threading
from typing import Any

from . import locate
from .binding import Library

_lock = threading.Lock()
_open: dict[str, tuple[Library, int]] = {}


def acquire(config: dict[str, Any]) -> Library:
    """Find, load, size-check and initialise libprotoident (or share the one already open)."""
    path, cdll = locate.load(config)
    with _lock:
        entry = _open.get(path)
        if entry is not None:
            library, users = entry
            _open[path] = (library, users + 1)
            return library
        library = Library(path, cdll)
        library.check_data_size()
        library.initialise()
        _open[path] = (library, 1)
        return library


def release(library: Library) -> None:
    with _lock:
        entry = _open.get(library.path)
        if entry is None or entry[0] is not library:
            return
        users = entry[1] - 1
        if users > 0:
            _open[library.path] = (library, users)
            return
        del _open[library.path]
        library.free()
