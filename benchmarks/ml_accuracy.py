"""dpi-ml accuracy on the shared corpus, without leaks: every figure comes from models that
never saw the capture file they are scored on (5-fold cross-validation grouped by file).

Prints
1. the per-protocol table and macro-F1 over protocols with >= 20 flows (issue 6, first
   acceptance figure), plus the same restricted to protocols present in >= 2 capture files
   (a protocol seen in one file only cannot be learnt when that file is held out);
   Files are assigned to folds at random, several times (--repeats): on a corpus this small
   the assignment alone moves the figures, so every assignment's headline is printed;
2. the layer's contribution behind the heuristics layer (second acceptance figure): of the
   flows the heuristics layer leaves Unknown but nDPI (ndpiReader 4.2's corpus labels) names,
   how many the ML layer names correctly, and how many of its answers are wrong.

The real-client captures (tests/captures/realclients) join every training fold and are never
scored, exactly as they join the shipped model's training.

    .venv/bin/python benchmarks/ml_accuracy.py [--folds 5] [--threshold T] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import attrs
import numpy as np

from dpicore import UNKNOWN
from dpicore.corpus import corpus_dir
from dpi_ml.dataset import collect, layer_verdict
from dpi_ml.metrics import format_repeats, format_text, score
from dpi_ml.train import DEFAULT_THRESHOLD, TrainParams, cross_validate

ROOT = Path(__file__).resolve().parent.parent
REALCLIENTS = ROOT / "tests" / "captures" / "realclients"


def heuristics_gap(samples: list, predicted: list[str], probability: list[float], threshold: float
                   ) -> dict[str, int]:
    """How the ML layer does on the flows the heuristics layer leaves Unknown (prints, returns counts)."""
    gap = right = wrong = 0
    answered_all = wrong_all = unverified = 0
    missed: Counter[str] = Counter()
    for s, name, conf in zip(samples, predicted, probability):
        if layer_verdict(s.flow, "heuristics") != UNKNOWN:
            continue
        answers = name != UNKNOWN and conf >= threshold
        if answers:
            answered_all += 1
            if s.label == UNKNOWN:
                unverified += 1
            elif name != s.label:
                wrong_all += 1
        if s.label == UNKNOWN:
            continue
        gap += 1
        if answers and name == s.label:
            right += 1
        elif answers:
            wrong += 1
        else:
            missed[s.label] += 1
    print(f"flows the heuristics layer leaves Unknown but nDPI names: {gap}")
    print(f"  ML (confidence >= {threshold:g}) names {right} correctly ({100 * right / max(gap, 1):.1f}%), "
          f"{wrong} wrongly, abstains on {gap - right - wrong}")
    print(f"  ML answers on all flows the heuristics layer leaves Unknown: {answered_all}, "
          f"of which wrong {wrong_all} ({100 * wrong_all / max(answered_all, 1):.1f}%), "
          f"unverifiable (nDPI says Unknown too) {unverified}")
    print(f"  most missed: {', '.join(f'{k} {v}' for k, v in missed.most_common(8))}")
    return {"flows": gap, "right": right, "wrong": wrong, "answered": answered_all, "answered_wrong": wrong_all,
            "unverifiable": unverified}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3, help="random assignments of files to folds")
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    ap.add_argument("--jobs", type=int, default=-1)
    ap.add_argument("--json", default=None, help="write the figures here too")
    ap.add_argument("--leaky-flow-split", action="store_true",
                    help="for contrast only: also split by flow instead of by file (leaks; not a result)")
    args = ap.parse_args()
    corpus = corpus_dir()
    if corpus is None:
        print("the shared corpus is absent (set DPI_CORPUS)", file=sys.stderr)
        return 2
    start = time.monotonic()
    samples = collect(sorted((corpus / "pcap").iterdir()), also=["heuristics"])
    extra = collect(sorted(REALCLIENTS.glob("*.pcap"))) if REALCLIENTS.is_dir() else []
    runs = cross_validate(samples, TrainParams(jobs=args.jobs), folds=args.folds, extra=extra,
                          repeats=args.repeats)
    pred = runs[0]
    elapsed = time.monotonic() - start
    print(f"{args.folds}-fold CV grouped by capture file, {args.repeats} random assignments of files to folds: "
          f"{len(samples)} corpus flows scored, {len(extra)} real-client flows in every training fold "
          f"({elapsed:.0f} s)\n")
    report = score(pred.truth, pred.predicted, pred.probability, args.threshold)
    print("first assignment:")
    print(format_text(report, confusion_rows=12))
    reports = [score(r.truth, r.predicted, r.probability, args.threshold) for r in runs]
    print(f"\nevery assignment (macro-F1 over protocols with >= 20 flows; answers at >= {args.threshold:g}):")
    print(format_repeats(reports))

    print("\nthreshold sweep, every assignment pooled: threshold, answered, wrong, wrong share of answers")
    truth = [t for r in runs for t in r.truth]
    names = [n for r in runs for n in r.predicted]
    conf = np.concatenate([r.probability for r in runs])
    for th in (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95):
        r = score(truth, names, conf, th)
        print(f"  {th:<5g} {r.answered:>5} {r.answered_wrong:>5} {100 * r.wrong_rate:>6.1f}%")

    files: dict[str, set[str]] = defaultdict(set)
    for s in samples:
        files[s.label].add(s.capture)
    multi = [p for p in report.macro_protocols if len(files[p]) >= 2]
    multi_f1 = []
    for r in reports:
        rows = {row.protocol: row for row in r.rows}
        multi_f1.append((np.mean([rows[p].f1 for p in multi]), np.mean([rows[p].f1_at for p in multi])))
    macro_multi, macro_multi_at = (float(np.mean(v)) for v in zip(*multi_f1))
    print(f"\nprotocols with >= 20 flows found in >= 2 capture files ({', '.join(multi)}): "
          f"macro-F1 top-1 {macro_multi:.3f}, answers >= {args.threshold:g} {macro_multi_at:.3f} "
          f"(mean of the assignments)")
    single = [p for p in report.macro_protocols if len(files[p]) < 2]
    print(f"protocols with >= 20 flows from one capture only (cannot be learnt when it is held out): "
          f"{', '.join(single) or 'none'}")

    gaps = []
    for i, r in enumerate(runs, 1):
        print(f"\nassignment {i}: ", end="")
        gaps.append(heuristics_gap(samples, r.predicted, r.probability, args.threshold))
    if args.leaky_flow_split:
        # Every flow its own group: flows of one capture land on both sides of the split.
        leaky = [attrs.evolve(s, capture=f"{s.capture}#{i}") for i, s in enumerate(samples)]
        (lp,) = cross_validate(leaky, TrainParams(jobs=args.jobs), folds=args.folds, extra=extra)
        lr = score(lp.truth, lp.predicted, lp.probability, args.threshold)
        print(f"\nLEAKY contrast, folds by flow (not by file): macro-F1 top-1 {lr.macro_f1:.3f}, "
              f"answers >= {args.threshold:g} {lr.macro_f1_at:.3f}; "
              + ", ".join(f"{r.protocol} {r.f1:.2f}" for r in lr.rows if r.protocol in lr.macro_protocols))
        print("LEAKY contrast, behind the heuristics layer:")
        heuristics_gap(samples, lp.predicted, lp.probability, args.threshold)
    if args.json:
        out = report.to_dict()
        out.update({"macro_f1_multi_file": macro_multi, "macro_f1_multi_file_at_threshold": macro_multi_at,
                    "repeats": [r.summary() for r in reports], "heuristics_gap": gaps,
                    "seconds": elapsed})
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
