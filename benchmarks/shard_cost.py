"""What one `-j N` worker costs next to the whole file, in one process, without start-up or contention.

    .venv/bin/python benchmarks/shard_cost.py [FILE] [--shards 2] [--rounds 3] [--layers heuristics]

FILE defaults to the throughput benchmark's real-client input
(``~/.cache/dpicore-bench/realclients_large.pcap``, made by
benchmarks/make_inputs.py when missing).  Each round classifies the whole
file, then each shard of it (:func:`dpicore.parallel.run_task`, the code a
`-j` worker runs, JSONL records serialised as a worker does), in this one
process, and takes the CPU time of each; the least of the rounds is kept.

Why: a `-j N` worker reads and decodes every frame of the file before it
drops the other shards' (see docs/performance.md), so a shard costs more
than 1/N of the whole.  With ``whole = R + W`` (R: reading and decoding
every frame, which each worker repeats; W: the rest, split between the
workers) and ``shard = R + W / N``, the script prints

    R = (sum of the shards - whole) / (N - 1)

and the best `-j N` can reach on N idle cores before start-up and
contention, ``whole / largest shard``.  The workers spend
``whole + (N - 1) * R`` CPU seconds in all: that excess is what a design
reading the file once for all workers would save.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_inputs  # noqa: E402  (benchmarks/ is not a package)

from dpicore.api import Classifier  # noqa: E402
from dpicore.config import Config  # noqa: E402
from dpicore.parallel import BATCH_RECORDS, Batch, Task, run_task  # noqa: E402


def cpu_of(clf: Classifier, task: Task) -> float:
    """CPU seconds of one task, its records serialised to JSONL in batches as a worker sends them."""
    batch = Batch(True, False)

    def emit(record: dict) -> None:
        batch.add(record)
        if batch.count >= BATCH_RECORDS:
            batch.take()

    start = time.process_time()
    run_task(clf, task, emit)
    return time.process_time() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", nargs="?", default=None)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--layers", default="heuristics")
    args = ap.parse_args(argv)
    path = args.file or str(make_inputs.make_all(make_inputs.cache_dir(None), names=["realclients_large"])
                                ["realclients_large"])
    n = args.shards
    clf = Classifier(config=Config().with_layers(args.layers.split(",")))
    whole = shards = None
    for _ in range(args.rounds):
        w = cpu_of(clf, Task(path))
        s = [cpu_of(clf, Task(path, i, n)) for i in range(n)]
        whole = w if whole is None else min(whole, w)
        shards = s if shards is None else [min(a, b) for a, b in zip(shards, s)]
    assert whole is not None and shards is not None
    repeated = (sum(shards) - whole) / (n - 1) if n > 1 else 0.0
    print(f"{path}: layers {args.layers}, best of {args.rounds} rounds, CPU seconds in one process")
    print(f"  whole file        {whole:6.2f}")
    for i, s in enumerate(shards):
        print(f"  shard {i} of {n}       {s:6.2f}  ({s / whole:.3f} of the whole)")
    print(f"  R, the work every worker repeats ((sum of the shards - whole) / (N - 1)): {repeated:.2f} s "
          f"({repeated / whole:.1%} of the whole)")
    print(f"  -j {n} on {n} idle cores, before start-up and contention: at most {whole / max(shards):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
