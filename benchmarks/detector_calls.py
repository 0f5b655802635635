"""How many detector calls the heuristics layer makes per flow, and which of them say "not this".

    .venv/bin/python benchmarks/detector_calls.py [CAPTURE ...] [--top N]

Without a capture it reads the throughput benchmark's inputs (``make_inputs.py``'s cache).  A call
that returns None (a rejection) is the dispatcher's wasted work: each costs a Python call and the
detector's first checks, several thousand instructions (docs/performance-history.md, run BH), and a flow's
candidates run in their ``order`` until one decides (a watching detector's None, TLS's after the
ServerHello, counts as one too, though it is no waste).  This counts them, so a change of the order or
of a heuristic's first-byte filter can be judged by the calls it saves, not only by a noisy timing.
The detectors are wrapped for counting, so this run is slower than a plain one: it is not a timing.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
from dpi_heuristics.base import MORE, Heuristic
from dpi_heuristics.dispatch import Dispatcher

from dpicore import Classifier
from dpicore.output import flow_record

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_inputs import absent, cache_dir  # noqa: E402


def counted(h: Heuristic, outcomes: Counter[tuple[str, str]]) -> Heuristic:
    """``h`` with a detector that tallies what it returns under (name, "verdict" | "more" | "none")."""
    detect = h.detect

    def counting(ctx: Any) -> Any:
        result = detect(ctx)
        kind = "more" if result is MORE else "none" if result is None else "verdict"
        outcomes[(h.name, kind)] += 1
        return result

    return attrs.evolve(h, detect=counting)


def dispatcher_of(clf: Classifier) -> Dispatcher:
    for layer in clf.engine.layers:
        owner = getattr(layer.classify, "__self__", None)
        if isinstance(getattr(owner, "dispatcher", None), Dispatcher):
            return owner.dispatcher
    raise SystemExit("detector_calls: the heuristics layer is not loaded")


def count(path: Path) -> tuple[list[dict[str, Any]], Counter[tuple[str, str]]]:
    """The records of ``path`` classified by the heuristics layer alone, and its detectors' outcomes."""
    outcomes: Counter[tuple[str, str]] = Counter()
    with Classifier(layers=["heuristics"]) as clf:
        dispatcher = dispatcher_of(clf)
        dispatcher.heuristics = [counted(h, outcomes) for h in dispatcher.heuristics]
        dispatcher._table.clear()
        records = [flow_record(flow) for flow in clf.classify_pcap(path)]
    return records, outcomes


def report(path: Path, top: int) -> None:
    records, outcomes = count(path)
    flows = len(records)
    calls = sum(outcomes.values())
    rejections = Counter({name: n for (name, kind), n in outcomes.items() if kind == "none"})
    rejected = sum(rejections.values())
    print(f"{path.name}: {flows} flows, {calls} detector calls ({calls / max(flows, 1):.2f} per flow), "
          f"{rejected} rejections ({rejected / max(flows, 1):.2f} per flow)")
    for name, n in rejections.most_common(top):
        print(f"  {name:<12} {n:>8} rejections  {n / max(flows, 1):.2f} per flow")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("captures", nargs="*", type=Path, help="default: the throughput benchmark's inputs")
    ap.add_argument("--top", type=int, default=12, help="detectors listed per capture (default 12)")
    args = ap.parse_args(argv)
    paths = args.captures or [cache_dir() / f"{name}.pcap" for name in ("corpus_x10", "realclients_large")]
    if absent("detector_calls", paths):
        return 2
    for path in paths:
        report(path, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
