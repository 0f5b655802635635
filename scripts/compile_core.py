"""Compile the hot modules with Cython, unchanged, for this environment (see dpicore/compiled.py).

    .venv/bin/python scripts/compile_core.py [--check] [--quiet]

The modules are those scripts/compile.txt and plugins/*/compile.txt list
(a source path per line, relative to the list's repository or plugin root).
Each ``.py`` is compiled with Python's semantics kept
(``annotation_typing=False``: type hints stay hints), each ``.pyx`` (written
for Cython, with a Python fallback where it is imported) as it says, into
``<venv>/dpicore-compiled/``, and the manifest there records each source's
SHA-256, size and modification time; only what changed since the last build
is compiled again.  ``scripts/install.sh`` runs this; without a C compiler
or Python's headers nothing is built and dpicore runs every module from
source, as it does for any module whose source changed since its build.

Exit status: 0 every listed module is compiled and current (``--check``:
nothing to do), 1 a build was needed and failed or could not start
(``--check``: something to build), 2 a list names a file that does not exist.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import sys
import sysconfig
import tempfile
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from dpicore.compiled import DIRECTORY, MANIFEST, read_manifest, source_digest  # noqa: E402

DIRECTIVES = {"language_level": 3, "annotation_typing": False, "binding": True}


def listed() -> dict[str, Path]:
    """Module name -> source path, from every compile.txt."""
    lists = [ROOT / "scripts" / "compile.txt", *sorted(ROOT.glob("plugins/*/compile.txt"))]
    out: dict[str, Path] = {}
    for lst in lists:
        if not lst.is_file():
            continue
        base = ROOT if lst.parent.name == "scripts" else lst.parent
        for line in lst.read_text().splitlines():
            entry = line.split("#", 1)[0].strip()
            if not entry:
                continue
            path = base / entry
            if not path.is_file():
                raise FileNotFoundError(f"{lst.relative_to(ROOT)} lists {entry}, which does not exist")
            out[".".join(Path(entry).with_suffix("").parts)] = path
    return out


def missing_toolchain() -> str | None:
    """Why nothing can be compiled here (None: a C compiler and Python's headers are there)."""
    compiler = os.environ.get("CC", "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler}; Debian: apt-get install gcc)"
    header = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not header.is_file():
        return f"no {header} (Debian: apt-get install python3-dev)"
    if importlib.util.find_spec("Cython") is None:
        return "Cython is not installed in this environment (pip install -r scripts/requirements-build.txt)"
    return None


@contextlib.contextmanager
def _output_to(path: str) -> Iterator[None]:
    """Send this process's stdout and stderr, and its children's (the C compiler's), to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "wb") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def build(todo: dict[str, Path]) -> dict[str, str]:
    """Compile ``todo`` into DIRECTORY; returns module -> file name there.  The compiler's output (pages of
    warnings about CPython's own headers) goes to a log that is shown only when the build fails."""
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension

    jobs = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="dpicore-compile-") as tmp:
        log = os.path.join(tmp, "build.log")
        try:
            with _output_to(log):
                extensions = cythonize([Extension(name, [str(path)]) for name, path in todo.items()],
                                       build_dir=os.path.join(tmp, "c"), compiler_directives=DIRECTIVES,
                                       quiet=True, nthreads=jobs)
                command = Distribution({"ext_modules": extensions}).get_command_obj("build_ext")
                command.build_lib = os.path.join(tmp, "lib")
                command.build_temp = os.path.join(tmp, "tmp")
                command.parallel = jobs
                command.ensure_finalized()
                command.run()
        except (Exception, SystemExit):  # setuptools ends a failed compile with SystemExit
            sys.stderr.write(Path(log).read_text(errors="replace")[-4000:])
            raise
        DIRECTORY.mkdir(exist_ok=True)
        files = {}
        for ext in extensions:
            name = f"{ext.name}{EXTENSION_SUFFIXES[0]}"
            shutil.copyfile(command.get_ext_fullpath(ext.name), DIRECTORY / f"{name}.new")
            os.replace(DIRECTORY / f"{name}.new", DIRECTORY / name)  # a running process keeps its mapping
            files[ext.name] = name
        return files


def write_manifest(modules: dict[str, dict[str, str]]) -> None:
    """Write the manifest, and delete the compiled files it no longer names (a module no list names)."""
    DIRECTORY.mkdir(exist_ok=True)
    tmp = DIRECTORY / f"{MANIFEST}.new"
    tmp.write_text(json.dumps({"modules": modules}, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, DIRECTORY / MANIFEST)
    named = {entry["file"] for entry in modules.values()}
    for path in DIRECTORY.glob(f"*{EXTENSION_SUFFIXES[0]}"):
        if path.name not in named:
            path.unlink()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only say whether something needs building")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    try:
        wanted = listed()
    except FileNotFoundError as exc:
        print(f"compile_core: {exc}", file=sys.stderr)
        return 2
    built = read_manifest(DIRECTORY) or {}
    # Each source's size and modification time before its hash (the finder trusts them as CPython trusts a
    # .pyc's): a source written after the stat no longer matches them, and is hashed at import.
    stats = {name: path.stat() for name, path in wanted.items()}
    digests = {name: source_digest(path) for name, path in wanted.items()}
    todo = {name: path for name, path in wanted.items()
            if built.get(name, {}).get("sha256") != digests[name]
            or not (DIRECTORY / built[name].get("file", "")).is_file()}
    kept = {name: {**entry, "size": stats[name].st_size, "mtime_ns": stats[name].st_mtime_ns}
            for name, entry in built.items() if name in wanted and name not in todo}
    if not todo:
        if kept != built and not args.check:
            write_manifest(kept)  # sources rewritten with the same text, or a module no list names any more
        if not args.quiet:
            print(f"compile_core: {len(kept)} modules compiled and current ({DIRECTORY})")
        return 0
    if args.check:
        print(f"compile_core: to build: {', '.join(sorted(todo))}")
        return 1
    why = missing_toolchain()
    if why is not None:
        print(f"compile_core: not compiling {len(todo)} modules: {why}; they run from source", file=sys.stderr)
        write_manifest(kept)
        return 1
    try:
        files = build(todo)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a compiler's failure costs speed, not the install
        print(f"compile_core: building {', '.join(sorted(todo))} failed ({type(exc).__name__}: {exc}); "
              "they run from source", file=sys.stderr)
        write_manifest(kept)
        return 1
    for name, file in files.items():
        kept[name] = {"file": file, "sha256": digests[name], "size": stats[name].st_size,
                      "mtime_ns": stats[name].st_mtime_ns}
    write_manifest(kept)
    if not args.quiet:
        print(f"compile_core: compiled {len(files)} modules into {DIRECTORY}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
