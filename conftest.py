"""Fixtures shared by the core's and every plugin's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpicore.corpus import corpus_dir


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The nDPI-labelled corpus (../shared/corpus/ndpi); skips when it is absent."""
    path = corpus_dir()
    if path is None:
        pytest.skip("../shared/corpus/ndpi is absent (set DPI_CORPUS to point at it)")
    return path
