"""benchmarks/detector_calls.py counts every detector call without changing what the layer decides.

The script is how a change of the candidates' order or of a first-byte
filter is judged (docs/performance-history.md, run BH), so its counts must be the
dispatcher's: the same records as a plain run, and at least as many
verdicts counted as flows the layer named (a flow named from a standing
guess has none; these captures have such flows at most alongside others).
"""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any, Callable

import pytest
from dpicore import Classifier
from dpicore.output import flow_record

ROOT = Path(__file__).resolve().parents[3]
CAPTURES = sorted((ROOT / "tests" / "captures" / "realclients").glob("*.pcap"))


@pytest.fixture(scope="module")
def count() -> Callable[[Path], Any]:
    """The benchmark script's ``count`` (it is a script, not part of a package: run as one, not imported)."""
    return runpy.run_path(str(ROOT / "benchmarks" / "detector_calls.py"))["count"]


@pytest.mark.parametrize("path", CAPTURES, ids=[p.stem for p in CAPTURES])
def test_counting_changes_nothing_and_misses_no_verdict(count: Callable[[Path], Any], path: Path) -> None:
    records, outcomes = count(path)
    with Classifier(layers=["heuristics"]) as clf:
        plain = [flow_record(flow) for flow in clf.classify_pcap(path)]
    assert records == plain
    named = [r for r in plain if r["source"] == "heuristics" and r["protocol"] != "Unknown"]
    verdicts = sum(n for (_, kind), n in outcomes.items() if kind == "verdict")
    assert verdicts >= len(named) > 0
