"""benchmarks/layer_cost.py's stand-in layer is the floor it claims: the same flows as a real run, each
named at its first payload packet and by nothing else.

The script splits a run's time into the core's and the layers' by timing the core with this stand-in; if
the stand-in saw other flows, or packets counted differently, the split would compare two different runs.
"""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import pytest
from dpicore import Classifier
from dpicore.output import RECORD_FIELDS, flow_record

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "sample.pcap"
#: The record's fields before the verdict's: the flow's ends and counters, which no layer changes.
_COUNTERS = RECORD_FIELDS[:RECORD_FIELDS.index("protocol")]


@pytest.fixture(scope="module")
def script() -> dict[str, Any]:
    """The benchmark script's names (a script, not part of a package: run as one, not imported)."""
    return runpy.run_path(str(ROOT / "benchmarks" / "layer_cost.py"))


def test_the_stand_in_names_every_flow_with_payload_and_counts_as_a_real_run(script: dict[str, Any]) -> None:
    name = script["STAND_IN"]
    with Classifier(layers=[name], extra_plugins=[(name, script["FirstPayloadLayer"]())]) as clf:
        floor = [flow_record(f) for f in clf.classify_pcap(SAMPLE)]
        cpu, flows = script["cpu_of"](clf, str(SAMPLE))
    with Classifier(layers=["heuristics"]) as clf:
        real = [flow_record(f) for f in clf.classify_pcap(SAMPLE)]
    key = lambda r: tuple(r[k] for k in _COUNTERS)  # noqa: E731
    assert sorted(map(key, floor)) == sorted(map(key, real))
    assert flows == len(real) > 0 and cpu > 0
    named = [r for r in floor if r["protocol"] == "HTTP"]
    assert named and all(r["source"] == name and r["metadata"] == {} for r in named)
    assert {r["protocol"] for r in floor} <= {"HTTP", "Unknown"}
    # Every flow the heuristics named carried a payload, so the stand-in named it too.
    floor_named = {key(r) for r in named}
    assert all(key(r) in floor_named for r in real if r["protocol"] != "Unknown")
