"""benchmarks/detector_calls.py counts every detector call without changing what the layer decides.

The script is how a change of the candidates' order or of a first-byte
filter is judged (docs/performance.md, run BH), so its counts must be the
dispatcher's: the same records as a plain run, and at least as many
verdicts counted as flows the layer named (a flow named from a standing
guess has none; these captures have such flows at most alongside others).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from dpicore import Classifier
from dpicore.output import flow_record

ROOT = Path(__file__).resolve().parents[3]
CAPTURES = sorted((ROOT / "tests" / "captures" / "realclients").glob("*.pcap"))


@pytest.fixture(scope="module")
def detector_calls() -> Any:
    """The benchmark script loaded as a module (it is a script, not part of a package)."""
    spec = importlib.util.spec_from_file_location("detector_calls", ROOT / "benchmarks" / "detector_calls.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", CAPTURES, ids=[p.stem for p in CAPTURES])
def test_counting_changes_nothing_and_misses_no_verdict(detector_calls: Any, path: Path) -> None:
    records, outcomes = detector_calls.count(path)
    with Classifier(layers=["heuristics"]) as clf:
        plain = [flow_record(flow) for flow in clf.classify_pcap(path)]
    assert records == plain
    named = [r for r in plain if r["source"] == "heuristics" and r["protocol"] != "Unknown"]
    verdicts = sum(n for (_, kind), n in outcomes.items() if kind == "verdict")
    assert verdicts >= len(named) > 0
