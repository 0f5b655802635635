"""Fixtures of the dpi-ndpi tests: the real libndpi 4.2 the machine has installed."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from dpi_ndpi.detector import Detector
from dpi_ndpi.library import NdpiUnavailable, load


@pytest.fixture(scope="session")
def abi() -> Any:
    """The bound libndpi (skips where it is not installed: apt-get install libndpi4.2)."""
    try:
        return load()[1]
    except NdpiUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def detector(abi: Any) -> Iterator[Detector]:
    det = Detector(abi)
    yield det
    det.close()
