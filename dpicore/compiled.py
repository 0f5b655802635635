"""Use the compiled copies of the hot modules when they match their sources.

``scripts/compile_core.py`` (run by ``scripts/install.sh`` when a C compiler
is there) compiles the modules that ``scripts/compile.txt`` and each
``plugins/*/compile.txt`` list with Cython, unchanged, into
``<venv>/dpicore-compiled/``, with a manifest of each source's SHA-256, size
and modification time.
The sources stay where they are and stay the code: the same files run, a
few percent faster (docs/performance-history.md, "The compiled modules").  The
one exception is a ``.pyx`` written for Cython (the pcap record walk,
``dpicore/decode/cwalk.pyx``): its module exists only compiled, and the
module importing it falls back to its Python twin when the import fails.

The compiled files live apart from the sources, so they never shadow an
edited ``.py`` by sitting next to it: the finder installed here hands out a
compiled module only while its source is the one it was built from, and
otherwise lets the normal import find the source (``status()`` names those;
``scripts/install.sh`` rebuilds them).  ``DPI_PURE_PYTHON=1`` turns the
compiled modules off.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

#: Where scripts/compile_core.py puts the compiled modules of the running environment.
DIRECTORY = Path(sys.prefix) / "dpicore-compiled"
MANIFEST = "manifest.json"
#: Set to a non-empty value other than 0: every module is imported from its source.
PURE_ENV = "DPI_PURE_PYTHON"


def pure_requested() -> bool:
    """Whether DPI_PURE_PYTHON asks for every module from its source."""
    return os.environ.get(PURE_ENV, "0") not in ("", "0")


def read_manifest(directory: Path) -> dict[str, dict[str, Any]] | None:
    """The modules of ``directory``'s manifest (None: no manifest, or one that cannot be read)."""
    try:
        modules = json.loads((directory / MANIFEST).read_text())["modules"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return modules if isinstance(modules, dict) else None


def source_digest(path: str | Path) -> str:
    """The SHA-256 a compiled module was built from (hex)."""
    import hashlib  # only with a compiled core: OpenSSL's bindings cost every start ~3 ms

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _unchanged(path: str, entry: dict[str, Any]) -> bool:
    """Whether the source at ``path`` is the one ``entry`` was built from: the same size and modification
    time (as CPython trusts a .pyc), else the same SHA-256 (a checkout that rewrote the same text)."""
    st = os.stat(path)
    if st.st_size == entry.get("size") and st.st_mtime_ns == entry.get("mtime_ns"):
        return True
    return source_digest(path) == entry.get("sha256")


class CompiledFinder:
    """A meta path finder for the modules of a manifest ``{module: {"file": name, "sha256": hex, "size": bytes,
    "mtime_ns": int}}`` (the source's at the build)."""

    def __init__(self, directory: Path, modules: dict[str, dict[str, str]]) -> None:
        self.directory = directory
        self.modules = modules
        #: Modules imported from their source because it changed since the build.
        self.stale: list[str] = []
        #: Modules imported from their compiled file.
        self.used: list[str] = []

    def find_spec(self, fullname: str, path: Sequence[str] | None = None, target: Any = None) -> Any:
        entry = self.modules.get(fullname)
        if entry is None:
            return None
        origin = _source(fullname, path)
        if origin is None:
            return None
        try:
            current = _unchanged(origin, entry)
        except OSError:
            return None
        if not current:
            self.stale.append(fullname)
            return None
        spec = importlib.util.spec_from_file_location(fullname, self.directory / entry["file"])
        if spec is None:
            return None
        self.used.append(fullname)
        return spec


def _source(fullname: str, path: Sequence[str] | None) -> str | None:
    """Where the source of ``fullname`` is: its ``.py`` as the normal import finds it, else a ``.pyx``
    beside where it would be (a module written for Cython, such as dpicore/decode/cwalk.pyx, whose
    importer falls back to Python when it cannot be imported compiled)."""
    spec = importlib.machinery.PathFinder.find_spec(fullname, path)
    if spec is not None:
        return spec.origin if spec.origin and spec.origin.endswith(".py") else None
    name = fullname.rpartition(".")[2] + ".pyx"
    for directory in path if path is not None else sys.path:
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate):
            return candidate
    return None


def _finder() -> CompiledFinder | None:
    return next((f for f in sys.meta_path if isinstance(f, CompiledFinder)), None)


def install(directory: Path = DIRECTORY) -> CompiledFinder | None:
    """Put the finder first on ``sys.meta_path`` when ``directory`` holds a manifest (once per process)."""
    existing = _finder()
    if existing is not None:
        return existing
    if pure_requested():
        return None
    modules = read_manifest(directory)
    if modules is None:
        return None  # no compiled core (no compiler at install), or a manifest we cannot read: the sources
    finder = CompiledFinder(directory, modules)
    sys.meta_path.insert(0, finder)
    return finder


def status() -> str:
    """One line for people: which modules run compiled in this process so far, and which do not."""
    finder = _finder()
    if finder is None or not finder.modules:
        why = f"{PURE_ENV} is set" if pure_requested() else f"none built in {DIRECTORY}"
        return f"compiled modules: none ({why})"
    text = f"compiled modules: {len(finder.used)} of {len(finder.modules)} imported compiled"
    if finder.stale:
        text += f"; from changed sources (rebuild with scripts/install.sh): {', '.join(sorted(finder.stale))}"
    return text
