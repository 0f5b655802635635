"""How much of a run is the core's and how much its layers': the core timed with a layer that costs nothing.

    .venv/bin/python benchmarks/layer_cost.py [CAPTURE ...] [--layers heuristics] [--rounds 3]

Without a capture it reads the throughput benchmark's inputs (``make_inputs.py``'s cache).  Each round
classifies each capture twice in this one process, alternating, and takes the CPU time of each run (the
least of the rounds is kept): once with ``--layers``, and once with a single stand-in layer that names
every flow at its first payload packet with a fixed verdict and no metadata.  The stand-in's run is the
floor of any layer set: reading, decoding, the flow table, the engine's calls for each flow's first
payload packet, the records (JSONL, as ``dpi classify -f jsonl`` writes them).  What the real layers add
over it is theirs: their detectors, the packets they want after the first (a TLS ServerHello, an FTP
reply), their state and metadata.  A speed-up has to come from the larger of the two parts.

No start-up is counted (the classifiers are built before the clock starts) and nothing runs beside it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_inputs  # noqa: E402  (benchmarks/ is not a package)

from dpicore import LayerInfo, Verdict, hookimpl  # noqa: E402
from dpicore.api import Classifier  # noqa: E402
from dpicore.output import RecordWriter, flow_record  # noqa: E402

STAND_IN = "first-payload"
_NAMED = Verdict("HTTP", STAND_IN, 1.0)


class FirstPayloadLayer:
    """Names every flow HTTP at its first payload packet: no state, no detector, no metadata."""

    @hookimpl
    def dpi_layer_info(self) -> LayerInfo:
        return LayerInfo(id=STAND_IN, priority=1, protocols=("HTTP",), reads_payloads=False,
                         description="benchmark stand-in: the flow's first payload packet decides")

    @hookimpl
    def dpi_classify(self, flow: Any, packet: Any, direction: int, state: Any) -> Verdict:
        return _NAMED


def cpu_of(clf: Classifier, path: str) -> tuple[float, int]:
    """CPU seconds to classify ``path`` and write its records as JSONL (to the null device), and the flows."""
    with open(os.devnull, "w") as out:
        writer = RecordWriter(out, "jsonl", clf.config.all_layers)
        start = time.process_time()
        for flow in clf.classify_pcap(path):
            writer.write(flow_record(flow))
        writer.close()
        return time.process_time() - start, writer.count


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("captures", nargs="*", help="default: the throughput benchmark's inputs")
    ap.add_argument("--layers", default="heuristics", help="the layers measured against the stand-in")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if args.captures:
        paths = [str(p) for p in args.captures]
    else:
        made = make_inputs.make_all(make_inputs.cache_dir(None), names=["corpus_x10", "realclients_large"])
        paths = [str(made["corpus_x10"]), str(made["realclients_large"])]
    layers = Classifier(layers=args.layers.split(","))
    floor = Classifier(layers=[STAND_IN], extra_plugins=[(STAND_IN, FirstPayloadLayer())])
    for path in paths:
        best: dict[str, float] = {}
        flows: dict[str, int] = {}
        for _ in range(args.rounds):
            for name, clf in (("stand-in", floor), ("layers", layers)):
                cpu, n = cpu_of(clf, path)
                best[name] = min(best.get(name, cpu), cpu)
                flows[name] = n
        core, full = best["stand-in"], best["layers"]
        n = flows["layers"]
        print(f"{Path(path).name}: {n:,} flows, best of {args.rounds} rounds, CPU seconds in one process")
        print(f"  core, with a layer naming each flow at its first payload  {core:6.2f}  "
              f"({core / max(flows['stand-in'], 1) * 1e6:5.1f} us per flow)")
        print(f"  core and {args.layers:<43}       {full:6.2f}  ({full / max(n, 1) * 1e6:5.1f} us per flow)")
        print(f"  the layers' share of the run: {(full - core) / full:.0%}  "
              f"({(full - core) / max(n, 1) * 1e6:.1f} us per flow)")
    layers.close()
    floor.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
