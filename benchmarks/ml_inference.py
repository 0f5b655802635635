"""dpi-ml inference cost: model load time, and flows per second for the layer alone.

    .venv/bin/python benchmarks/ml_inference.py [--repeat 3] [--model PATH]

1. loading the model file (validation included), cold and cached;
2. per flow, the layer's prediction (feature vector + forest + calibration) on the corpus'
   flows, one flow at a time as the layer does it, split into features and model;
3. the same model on all flows as one batch (what ``dpi-ml evaluate`` does);
4. end to end through dpicore over the whole corpus: the ML layer alone versus a layer that
   collects the same per-packet summaries but never predicts, so the difference is the cost
   of prediction, and both include the packet-level cost of a layer that wants every packet.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from dpicore import Classifier
from dpicore.corpus import corpus_dir
from dpi_ml import plugin
from dpi_ml.dataset import COLLECTOR_ID, Collector, collect
from dpi_ml.features import matrix, vector
from dpi_ml.model import load
from dpi_ml.predict import observable


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--model", default=str(plugin.DEFAULT_MODEL))
    args = ap.parse_args()
    corpus = corpus_dir()
    if corpus is None:
        print("the shared corpus is absent (set DPI_CORPUS)", file=sys.stderr)
        return 2
    path = Path(args.model)
    t = time.perf_counter()
    forest = load(path)
    cold = time.perf_counter() - t
    warm = best(lambda: load(path), args.repeat)
    print(f"model {path.name}: {path.stat().st_size / 1024:.0f} KiB, {forest.header['trees']} trees, "
          f"{forest.left.size} nodes, {len(forest.classes)} classes")
    print(f"load + validate: {1000 * cold:.1f} ms first, {1000 * warm:.1f} ms best of {args.repeat}")

    pcaps = sorted((corpus / "pcap").iterdir())
    summaries = [s.summary for s in collect(pcaps)]
    seen = [s for s in summaries if observable(s)]
    n = len(seen)

    def features() -> None:
        for s in seen:
            vector(s)

    X = matrix(seen)

    def model_only() -> None:
        for i in range(n):
            forest.predict(X[i:i + 1])

    ml = plugin.MlLayer()
    ml.dpi_configure({"model": str(path)})

    def layer() -> None:
        for s in seen:
            s.done = False
            ml.answer(s)

    t_feat, t_model, t_layer = (best(f, args.repeat) for f in (features, model_only, layer))
    print(f"\none flow at a time ({n} corpus flows with payload):")
    print(f"  features      {1e6 * t_feat / n:8.1f} us/flow")
    print(f"  model         {1e6 * t_model / n:8.1f} us/flow")
    print(f"  layer answer  {1e6 * t_layer / n:8.1f} us/flow  = {n / t_layer:8.0f} flows/s")
    t_batch = best(lambda: forest.predict(X), args.repeat)
    print(f"batch of {n}: {1e6 * t_batch / n:.1f} us/flow = {n / t_batch:.0f} flows/s")

    def run(layers: list[str], extra: list[tuple[str, object]]) -> tuple[float, int, int]:
        flows = packets = 0
        t = time.perf_counter()
        with Classifier(layers=layers, extra_plugins=extra) as clf:
            for pcap in pcaps:
                for flow in clf.classify_pcap(pcap):
                    flows += 1
                    packets += flow.packets
        return time.perf_counter() - t, flows, packets

    t_ml, flows, packets = min((run(["ml"], []) for _ in range(args.repeat)), key=lambda r: r[0])
    t_col, _, _ = min((run([COLLECTOR_ID], [(COLLECTOR_ID, Collector())]) for _ in range(args.repeat)),
                      key=lambda r: r[0])
    print(f"\nthrough dpicore, whole corpus ({len(pcaps)} captures, {flows} flows, {packets} packets):")
    print(f"  ML layer alone          {t_ml:6.2f} s  = {flows / t_ml:7.0f} flows/s, {packets / t_ml:8.0f} packets/s")
    print(f"  collecting, no predict  {t_col:6.2f} s  = {flows / t_col:7.0f} flows/s")
    print(f"  prediction share        {100 * max(t_ml - t_col, 0) / t_ml:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
