"""Fixtures of the dpi-lpi tests: the C test double (built with gcc) and classifiers over it."""

from __future__ import annotations

import runpy
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator

import pytest

from dpicore import Classifier
from dpicore.config import config_from_dict

HERE = Path(__file__).resolve().parent
FAKE_SOURCE = HERE / "fake_lpi.c"

Builder = Callable[..., Path]


def _parse_dump(name: str) -> dict[str, str]:
    """The fields the test double printed as its module name (``key=value`` pairs)."""
    return dict(item.split("=", 1) for item in name.split())


@pytest.fixture(scope="session")
def parse_dump() -> Callable[[str], dict[str, str]]:
    return _parse_dump


@pytest.fixture(scope="session")
def build_fake(tmp_path_factory: pytest.TempPathFactory) -> Builder:
    """Compile a variant of tests/fake_lpi.c into a shared object; returns its path."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: the libprotoident test double cannot be built")
    out = tmp_path_factory.mktemp("fake_lpi")
    built: dict[tuple[str, ...], Path] = {}

    def build(*defines: str, extra: tuple[str, ...] = (), name: str | None = None) -> Path:
        key = (*defines, *extra)
        if key in built:
            return built[key]
        target = out / (name or f"libfakelpi{len(built)}.so")
        cmd = [gcc, "-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o", str(target), str(FAKE_SOURCE),
               *[f"-D{d}" for d in defines], *extra]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"building the test double failed: {' '.join(cmd)}\n{done.stderr}")
        built[key] = target
        return target

    return build


@pytest.fixture(scope="session")
def fake_lpi(build_fake: Builder) -> Path:
    """The default test double: reports every lpi_data_t field it receives."""
    return build_fake()


@pytest.fixture(autouse=True)
def _no_library_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's DPI_LPI_LIBRARY must not change what the tests load."""
    monkeypatch.delenv("DPI_LPI_LIBRARY", raising=False)


@contextmanager
def _lpi_classifier(library: Path | str, layers: tuple[str, ...] = ("lpi",), **settings: Any
                   ) -> Iterator[Classifier]:
    """A real dpicore Classifier running only ``layers``, with the lpi layer loading ``library``."""
    config = config_from_dict({"layers": {"lpi": {"library": str(library), **settings}}})
    with Classifier(config=config, layers=list(layers)) as clf:
        yield clf


@pytest.fixture
def lpi_classifier() -> Callable[..., Any]:
    """``with lpi_classifier(library, **settings) as clf:`` (see :func:`_lpi_classifier`)."""
    return _lpi_classifier


@pytest.fixture(scope="session")
def agreement() -> Any:
    """benchmarks/agreement.py's names (it is a script, not part of the package)."""
    return SimpleNamespace(**runpy.run_path(str(HERE.parent / "benchmarks" / "agreement.py")))
