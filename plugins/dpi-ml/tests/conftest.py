"""Fixtures of the dpi-ml tests: real corpus flows, and a small model trained on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dpi_ml.dataset import Sample, collect

#: Captures with many protocols (DNS, TLS, HTTP, MDNS, SSDP, STUN, …) used to train a small model;
#: HELD_OUT is never trained on and serves for the equality checks on unseen data.
TRAIN_FILES = ("iphone.pcap", "wechat.pcap", "netflix.pcap")
HELD_OUT = "telegram.pcap"


@pytest.fixture(scope="session")
def train_samples(corpus: Path) -> list[Sample]:
    return collect([corpus / "pcap" / name for name in TRAIN_FILES])


@pytest.fixture(scope="session")
def held_out_samples(corpus: Path) -> list[Sample]:
    return collect([corpus / "pcap" / HELD_OUT])


@pytest.fixture(scope="session")
def fitted(train_samples: list[Sample]) -> Any:
    """(Fitted scikit-learn objects, exported Forest) of a small model (20 trees)."""
    pytest.importorskip("sklearn")
    from dpi_ml.train import TrainParams, arrays_of, export, fit, select

    params = TrainParams(trees=20, jobs=1)
    kept, _ = select(train_samples, params)
    X, y, groups = arrays_of(kept)
    result = fit(X, y.astype(str), groups.astype(str), params)
    return result, export(result)
