"""benchmarks/detector_warmth.py replays what it says: the first payloads each detector named in the run,
to the same verdicts, and leaves out those a replay would not name (a detector that needed the flow's
earlier packets or another flow's notes), so both of its figures time the same work."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import attrs
import pytest

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = ROOT / "tests" / "captures" / "realclients"


@pytest.fixture(scope="module")
def script() -> dict[str, Any]:
    """The benchmark script's names (a script, not part of a package: run as one, not imported)."""
    return runpy.run_path(str(ROOT / "benchmarks" / "detector_warmth.py"))


@pytest.fixture(scope="module")
def dns(script: dict[str, Any]) -> tuple[Any, list[Any]]:
    plain, kept = script["record"](CAPTURES / "dns_udp_tcp.pcap", 50)
    return plain["DNS"], list(kept["DNS"])


def test_the_kept_payloads_are_first_payloads_the_detector_named(script: dict[str, Any], dns: Any) -> None:
    heuristic, samples = dns
    assert samples and all(s.ns > 0 and s.payload for s in samples)
    # Both transports of the capture are kept: a TCP query keeps its two-byte length in front.
    assert {s.transport for s in samples} == {6, 17}
    row = script["warmth"](heuristic, samples, 1)
    assert row.name == "DNS" and row.samples == len(samples) and row.in_run_us > 0 and row.warm_us >= 0


def test_a_payload_whose_replay_names_nothing_is_left_out(script: dict[str, Any], dns: Any) -> None:
    heuristic, samples = dns
    silent = attrs.evolve(heuristic, detect=lambda ctx: None)
    assert script["warmth"](silent, samples, 1) is None


def test_the_report_lists_each_detector_with_enough_payloads(script: dict[str, Any],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    rows = script["report"](CAPTURES / "https_curl_sni.pcap", 20, 1, 1)
    out = capsys.readouterr().out
    assert [r.name for r in rows] == ["TLS"]
    assert "TLS" in out and "all of them:" in out
