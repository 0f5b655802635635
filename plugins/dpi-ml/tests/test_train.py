"""Training data selection and leak-free cross-validation."""

from __future__ import annotations

from collections import Counter

import attrs
import pytest

from dpicore import UNKNOWN
from dpi_ml.dataset import Sample
from dpi_ml.predict import observable

pytest.importorskip("sklearn")

from dpi_ml.train import TrainError, TrainParams, cross_validate, select, train  # noqa: E402


def test_cross_validation_never_scores_a_file_it_trained_on(train_samples: list[Sample],
                                                            held_out_samples: list[Sample]) -> None:
    """Label every flow with its capture's name: only a leak could ever predict it right."""
    samples = [attrs.evolve(s, label=s.capture) for s in train_samples + held_out_samples if observable(s.summary)]
    assert len({s.capture for s in samples}) == 4
    runs = cross_validate(samples, TrainParams(trees=5, jobs=1, min_flows=1), folds=4, repeats=2)
    assert len(runs) == 2
    for run in runs:
        assert len(run.predicted) == len(samples)
        assert all(p != t for p, t in zip(run.predicted, run.truth))
    # The same data split by flow instead does name captures: the check above can fail.
    leaky = [attrs.evolve(s, capture=f"{s.capture}#{i}") for i, s in enumerate(samples)]
    (run,) = cross_validate(leaky, TrainParams(trees=5, jobs=1, min_flows=1), folds=4)
    assert sum(p == s.label for p, s in zip(run.predicted, leaky)) > len(leaky) / 2


def test_selection_leaves_out_payloadless_and_rare(train_samples: list[Sample]) -> None:
    params = TrainParams(min_flows=5)
    kept, dropped = select(train_samples, params)
    assert all(observable(s.summary) for s in kept)
    counts = Counter(s.label for s in kept)
    assert min(counts.values()) >= 5
    assert all(Counter(s.label for s in train_samples if observable(s.summary))[name] < 5
               for name in dropped if name != "(no payload)")
    assert dropped["(no payload)"] == sum(not observable(s.summary) for s in train_samples) > 0
    assert sum(dropped.values()) + len(kept) == len(train_samples)
    # "Unknown" is a class to learn unless told otherwise.
    assert UNKNOWN in {s.label for s in select(train_samples, TrainParams(min_flows=1))[0]}
    assert UNKNOWN not in {s.label for s in select(train_samples, TrainParams(min_flows=1, learn_unknown=False))[0]}


def test_too_little_to_learn_is_a_clear_error(train_samples: list[Sample]) -> None:
    one_protocol = [s for s in train_samples if s.label == "DNS" and observable(s.summary)]
    with pytest.raises(TrainError, match="at least two protocols"):
        train(one_protocol, TrainParams(trees=3, jobs=1))
    one_file = [s for s in train_samples if s.capture == "iphone.pcap"]
    with pytest.raises(TrainError, match="two capture files"):
        train(one_file, TrainParams(trees=3, jobs=1))
    with pytest.raises(TrainError, match="no protocol has enough"):
        train(train_samples[:3], TrainParams(trees=3, jobs=1, min_flows=50))
