"""How much slower a detector is inside a run than in a loop over the same payloads: the run's cold caches.

    .venv/bin/python benchmarks/detector_warmth.py [CAPTURE ...] [--keep N] [--rounds R]

Without a capture it reads the throughput benchmark's real-client input (``make_inputs.py``'s cache).
The heuristics layer classifies the capture once, with each detector timed where it runs ("in the
run"); the last ``--keep`` first payloads each heuristic named are kept (late in the capture, so
lazily built tables and caches are warm).  Then each heuristic's detector is run again on its kept
payloads, one after the other, in a loop ("warm"): the same code on the same bytes, with nothing
else in between.  The loop's time is net of building the detector's Context (timed alone, as the
dispatcher builds it before it calls the detector).  A payload whose replay is no verdict (a detector
that read its flow's earlier packets or another flow's notes) is left out of both figures.

What the two figures say: the instructions are the same, so the ratio is the cost of running each
flow's detection between other work (decoding, the flow table, other flows' detectors, the records)
that pushed the detector's code and data out of the processor's caches.  A speed-up by fewer
instructions is worth that much less in a real run; one by running like work together
(detection batched by detector) would be worth up to that much more.  Timings of a shared machine:
compare the ratios, not the microseconds, across runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, NamedTuple

import attrs
from dpi_heuristics.base import MORE, Context, Heuristic

from dpicore import Classifier, Verdict

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detector_calls import dispatcher_of  # noqa: E402
from make_inputs import absent, cache_dir  # noqa: E402


class Sample(NamedTuple):
    """A first payload a detector named, as it ran in the capture."""

    ns: int  # the detector's time in the run
    flow: Any
    transport: int
    direction: int
    payload: bytes


class Warmth(NamedTuple):
    name: str
    samples: int
    in_run_us: float
    warm_us: float
    #: The samples timed: those whose replay is a verdict.
    replayed: list[Sample]


def _context(s: Sample) -> Context:
    """A fresh Context of ``s``'s first payload, as the dispatcher builds one (no memo, no shared notes)."""
    return Context(s.flow, s.transport, s.direction, s.payload, 1, {}, {})


def timed(h: Heuristic, kept: dict[str, deque[Sample]], keep: int) -> Heuristic:
    """``h`` with a detector that times each call and keeps its first-payload verdicts' contexts."""
    detect = h.detect
    clock = time.perf_counter_ns
    samples = kept.setdefault(h.name, deque(maxlen=keep))

    def timing(ctx: Any) -> Any:
        start = clock()
        result = detect(ctx)
        ns = clock() - start
        if ctx.index == 1 and result is not None and result is not MORE:
            samples.append(Sample(ns, ctx.flow, ctx.transport, ctx.direction, bytes(ctx.payload)))
        return result

    return attrs.evolve(h, detect=timing)


def record(path: Path, keep: int) -> tuple[dict[str, Heuristic], dict[str, deque[Sample]]]:
    """Classify ``path`` with the heuristics layer alone: its heuristics (untimed) and the kept samples."""
    kept: dict[str, deque[Sample]] = {}
    with Classifier(layers=["heuristics"]) as clf:
        dispatcher = dispatcher_of(clf)
        plain = {h.name: h for h in dispatcher.heuristics}
        dispatcher.heuristics = [timed(h, kept, keep) for h in dispatcher.heuristics]
        dispatcher._table.clear()  # its entries hold the untimed heuristics
        for _ in clf.classify_pcap(path):
            pass
    return plain, kept


def _loop_ns(samples: list[Sample], call: Callable[[Context], Any]) -> int:
    start = time.perf_counter_ns()
    for s in samples:
        call(_context(s))
    return time.perf_counter_ns() - start


def warmth(h: Heuristic, samples: list[Sample], rounds: int) -> Warmth | None:
    """The in-run and warm per-call times of ``h`` on ``samples`` (those that replay to a verdict)."""
    replayed = [s for s in samples if isinstance(h.detect(_context(s)), Verdict)]
    if not replayed:
        return None
    best = min(_loop_ns(replayed, h.detect) - _loop_ns(replayed, lambda ctx: None) for _ in range(rounds))
    in_run = sum(s.ns for s in replayed) / len(replayed)
    return Warmth(h.name, len(replayed), in_run / 1e3, max(best, 0) / len(replayed) / 1e3, replayed)


def mixed(plain: dict[str, Heuristic], kept: dict[str, list[Sample]], rounds: int) -> tuple[float, float, float]:
    """Every kept payload's detector time per call: in the run, replayed in the capture's order (the
    detectors interleaved as the flows came, nothing else in between) and replayed detector by detector."""
    calls = sorted(((s.flow.number, plain[name].detect, s) for name, samples in kept.items() for s in samples),
                   key=lambda c: c[0])
    if not calls:
        return 0.0, 0.0, 0.0

    def loop(order: list[tuple[int, Callable[[Context], Any], Sample]], idle: bool) -> int:
        start = time.perf_counter_ns()
        for _, detect, s in order:
            ctx = _context(s)
            if not idle:
                detect(ctx)
        return time.perf_counter_ns() - start

    by_detector = sorted(calls, key=lambda c: id(c[1]))
    in_order = min(loop(calls, False) - loop(calls, True) for _ in range(rounds))
    grouped = min(loop(by_detector, False) - loop(by_detector, True) for _ in range(rounds))
    n = len(calls)
    return sum(c[2].ns for c in calls) / n / 1e3, in_order / n / 1e3, grouped / n / 1e3


def report(path: Path, keep: int, rounds: int, least: int) -> list[Warmth]:
    plain, kept = record(path, keep)
    rows = [w for name, samples in kept.items() if len(samples) >= least
            if (w := warmth(plain[name], list(samples), rounds)) is not None]
    rows.sort(key=lambda w: -w.samples * w.in_run_us)
    print(f"{path.name}: first-payload verdicts, the last {keep} per detector (at least {least}), "
          f"µs per call, warm loop best of {rounds}")
    print(f"  {'detector':<12} {'payloads':>8} {'in the run':>11} {'warm':>7} {'ratio':>6}")
    for w in rows:
        ratio = f"{w.in_run_us / w.warm_us:5.2f}x" if w.warm_us > 0 else "    -"
        print(f"  {w.name:<12} {w.samples:>8} {w.in_run_us:>11.2f} {w.warm_us:>7.2f} {ratio}")
    in_run, in_order, grouped = mixed(plain, {w.name: w.replayed for w in rows}, rounds)
    print(f"  all of them: {in_run:.2f} in the run; replayed in the capture's order {in_order:.2f}, "
          f"detector by detector {grouped:.2f}")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("captures", nargs="*", type=Path, help="default: the throughput benchmark's real-client input")
    ap.add_argument("--keep", type=int, default=3000, help="first payloads kept per detector (default 3000)")
    ap.add_argument("--least", type=int, default=100, help="fewer kept payloads and a detector is left out")
    ap.add_argument("--rounds", type=int, default=5, help="warm loops per detector, the fastest kept (default 5)")
    args = ap.parse_args(argv)
    paths = args.captures or [cache_dir() / "realclients_large.pcap"]
    if absent("detector_warmth", paths):
        return 2
    for path in paths:
        report(path, args.keep, args.rounds, args.least)
    return 0


if __name__ == "__main__":
    sys.exit(main())
