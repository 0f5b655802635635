"""Flow counts on the nDPI corpus against ndpiReader 4.2's flow lists.

`dpi classify DIR --format jsonl` runs once over ../shared/corpus/ndpi/pcap
(the directory run equals the per-file runs, see test_cli.py) and every line
must be one valid record with exactly the DESIGN.md fields.  The records are
attributed to their files by re-running the same flow table in-process per
file (layers do not change flow boundaries) and checking both agree flow by
flow.

Each file's count must be within 2% of ndpiReader's, or every difference
must be explained:

- with the default configuration (idle timeout 600 s), an extra flow is a
  *split*: an earlier flow with the same key ended by idle timeout, FIN or
  RST, where ndpiReader kept one flow;
- with a configuration that mirrors ndpiReader (idle and active timeouts
  longer than any capture), only FIN/RST splits may remain.

A flow of ndpiReader's that we do not report is never explained away.
Run with ``-s`` to see the per-file table.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from dpicore.cli import CAPTURE_SUFFIXES
from dpicore.config import Config
from dpicore.corpus import LabelKey, LabelledFlow, captures, flow_key, match, record_key
from dpicore.decode import CaptureSource
from dpicore.engine import Engine
from dpicore.model import TRANSPORT_NAMES, TCP, UDP, ICMP, ICMPV6, IGMP, Flow
from dpicore.output import RECORD_FIELDS
from dpicore.plugins import PluginSet
from dpicore.protocols import ProtocolRegistry

pytestmark = pytest.mark.corpus

#: ndpiReader names these transports and writes the number of every other one ("51" for AH).
NDPI_L4 = {name: str(num) for num, name in TRANSPORT_NAMES.items() if num not in (TCP, UDP, ICMP, ICMPV6, IGMP)}

DPI = [sys.executable, "-m", "dpicore.cli"]
TOLERANCE = 0.02
FIELD_TYPES = {
    "transport": str, "src_ip": str, "src_port": int, "dst_ip": str, "dst_port": int, "vlan": int,
    "first_seen": (int, float), "last_seen": (int, float), "packets": int, "bytes": int, "c2s_packets": int,
    "s2c_packets": int, "c2s_bytes": int, "s2c_bytes": int, "protocol": str, "source": (str, type(None)),
    "confidence": (int, float), "category": (str, type(None)), "metadata": dict,
}


def flows_of(path: Path, config: Config) -> tuple[list[Flow], CaptureSource]:
    """The flows of one capture through a fresh flow table with no layers."""
    engine = Engine(PluginSet(config, registry=ProtocolRegistry()), config)
    source = CaptureSource(path)
    return list(engine.run(source)), source


def _key(flow: Flow) -> LabelKey:
    """flow_key with the transport as ndpiReader writes it: a number for those it does not name (AH)."""
    key = flow_key(flow)
    return (NDPI_L4.get(key[0], key[0]),) + key[1:]


def explain(ours: list[Flow], theirs: list[LabelledFlow]) -> tuple[Counter, list[Flow], list[LabelledFlow]]:
    """(splits by the end reason of the earlier flow, unexplained extra flows, missing flows).

    "Earlier" is in file order (the number of the packet that opened the flow), not in time:
    some corpus captures are concatenations whose timestamps jump backwards.
    """
    ours = sorted(ours, key=lambda f: f.number)
    _, only_ours, only_theirs = match([(_key(f), f) for f in ours], theirs)
    by_key: dict[LabelKey, list[Flow]] = defaultdict(list)
    for f in ours:
        by_key[_key(f)].append(f)
    splits: Counter = Counter()
    unexplained = []
    for f in only_ours:
        earlier = [g for g in by_key[_key(f)] if g.number < f.number]
        if earlier:
            splits[earlier[-1].end_reason] += 1
        else:
            unexplained.append(f)
    return splits, unexplained, only_theirs


def within(ours: int, theirs: int) -> bool:
    return abs(ours - theirs) <= TOLERANCE * theirs


@pytest.fixture(scope="module")
def corpus_files(corpus: Path) -> list[tuple[Path, list[LabelledFlow]]]:
    files = list(captures(corpus))
    assert len(files) >= 100 and all(p.exists() for p, _ in files)
    return files


@pytest.fixture(scope="module")
def cli_records(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("corpus") / "all.jsonl"
    proc = subprocess.run(DPI + ["classify", str(corpus / "pcap"), "--format", "jsonl", "--output", str(out)],
                          cwd=out.parent, capture_output=True, text=True, timeout=600)
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 0, proc.stderr
    records = []
    for n, line in enumerate(out.read_text().splitlines(), 1):
        rec = json.loads(line)
        assert tuple(rec) == RECORD_FIELDS, f"line {n}: fields {list(rec)}"
        for name, kind in FIELD_TYPES.items():
            assert isinstance(rec[name], kind), f"line {n}: {name}={rec[name]!r}"
        assert rec["packets"] == rec["c2s_packets"] + rec["s2c_packets"] > 0
        assert rec["bytes"] == rec["c2s_bytes"] + rec["s2c_bytes"]
        assert rec["first_seen"] <= rec["last_seen"] and 0 <= rec["confidence"] <= 1
        records.append(rec)
    return records


def test_cli_writes_one_valid_record_per_flow_of_each_file(corpus: Path, cli_records: list[dict]) -> None:
    """The directory run's records, split by the per-file flow counts, are each file's flows.

    The in-process reference feeds packet by packet (Engine.run); the CLI may take another path
    (batches), which may end flows in another order within a file but must give the same flows.
    """
    files = sorted(f for f in (corpus / "pcap").iterdir() if f.name.lower().endswith(CAPTURE_SUFFIXES))
    pos = 0
    for path in files:
        flows, source = flows_of(path, Config())
        assert not source.damaged, source.problems
        chunk = cli_records[pos:pos + len(flows)]
        got = sorted((record_key(r), r["first_seen"], r["packets"], r["bytes"]) for r in chunk)
        want = sorted((flow_key(f), round(f.first_seen, 6), f.packets, f.bytes) for f in flows)
        assert got == want, f"{path.name}: the CLI's flows differ from the packet-by-packet reference"
        pos += len(flows)
    assert pos == len(cli_records)


def _report(title: str, rows: list[tuple]) -> None:
    print(f"\n{title}\n{'file':40} {'ours':>5} {'ndpi':>5}  explanation")
    for name, ours, theirs, splits, unexplained, missing in rows:
        why = ", ".join(f"{n} {reason} split(s)" for reason, n in sorted(splits.items()))
        if unexplained:
            why += f", {len(unexplained)} UNEXPLAINED"
        if missing:
            why += f", {len(missing)} MISSING"
        print(f"{name:40} {ours:5} {theirs:5}  {why}{'' if within(ours, theirs) else '  (outside 2%)'}")


def _compare(files: list[tuple[Path, list[LabelledFlow]]], config: Config) -> tuple[list[tuple], Counter]:
    rows = []
    totals: Counter = Counter()
    for path, labels in files:
        flows, _ = flows_of(path, config)
        splits, unexplained, missing = explain(flows, labels)
        totals["ours"] += len(flows)
        totals["ndpi"] += len(labels)
        totals.update({f"split:{k}": v for k, v in splits.items()})
        totals["missing"] += len(missing)
        totals["unexplained"] += len(unexplained)
        if missing or unexplained or len(flows) != len(labels):
            rows.append((path.name, len(flows), len(labels), splits, unexplained, missing))
        if not within(len(flows), len(labels)):
            totals["files_outside_2pct"] += 1
    return rows, totals


def test_flow_counts_default_config(corpus_files: list, cli_records: list[dict]) -> None:
    rows, totals = _compare(corpus_files, Config())
    assert totals["ours"] == len(cli_records), "the in-process count is the CLI's"
    _report(f"default configuration (idle 600 s): {dict(totals)}", rows)
    for name, ours, theirs, splits, unexplained, missing in rows:
        assert not missing, f"{name}: ndpiReader flows we do not report: {[m.key for m in missing]}"
        assert not unexplained, f"{name}: extra flows that are not splits: {[flow_key(f) for f in unexplained]}"
        assert set(splits) <= {"idle", "fin", "rst", "active"}, (name, splits)
        assert ours - theirs == sum(splits.values()), name


def test_flow_counts_ndpireader_like_config(corpus_files: list) -> None:
    """With timeouts longer than any capture, what is left are FIN/RST splits, and few of them."""
    config = Config(idle_timeout=1e9, active_timeout=1e9)
    rows, totals = _compare(corpus_files, config)
    _report(f"ndpiReader-like configuration (no idle or active timeout): {dict(totals)}", rows)
    for name, ours, theirs, splits, unexplained, missing in rows:
        assert not missing and not unexplained, name
        assert set(splits) <= {"fin", "rst"}, (name, splits)
        assert ours - theirs == sum(splits.values()), name
    assert totals["files_outside_2pct"] <= 5
    assert abs(totals["ours"] - totals["ndpi"]) <= TOLERANCE * totals["ndpi"]
