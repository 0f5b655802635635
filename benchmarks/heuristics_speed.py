"""How fast the heuristics layer decides, and what it costs, on the nDPI corpus.

    .venv/bin/python benchmarks/heuristics_speed.py [--rounds N] [--corpus DIR]

1. Per protocol: the median number of packets (all, and payload-carrying)
   a flow had when the heuristics layer named it, fed packet by packet
   through the engine.  A verdict given only when the flow ended (a guess)
   counts the flow's packets at its end and is listed separately.
2. The layer's cost: the whole corpus through ``Classifier.classify_pcap``
   with no layer, then with the heuristics layer alone (best of N rounds);
   flows per second for both, the extra microseconds per flow, and the
   layer's own rate (flows over the extra time).

Numbers are this machine's, one core; run it a few times.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

from dpicore import Classifier
from dpicore.corpus import corpus_dir
from dpicore.decode import CaptureSource
from dpicore.model import Flow, FlowKey


def packets_until_verdict(captures: list[Path]) -> tuple[dict[str, list[tuple[int, int]]], dict[str, int]]:
    """protocol -> [(packets, payload packets) when named], and protocol -> flows named only at their end."""
    decided: dict[str, list[tuple[int, int]]] = defaultdict(list)
    at_end: dict[str, int] = defaultdict(int)
    with Classifier(layers=["heuristics"]) as clf:
        engine = clf.engine
        for path in captures:
            payload_packets: dict[int, int] = defaultdict(int)
            seen: set[int] = set()

            def ended(flows: list[Flow]) -> None:
                for flow in flows:
                    if id(flow) not in seen and flow.verdict and flow.verdict.protocol != "Unknown":
                        at_end[flow.verdict.protocol] += 1
                    seen.discard(id(flow))
                    payload_packets.pop(id(flow), None)

            for pkt in CaptureSource(path):
                ended(engine.feed(pkt))
                flow = engine.table.flows.get(FlowKey.of(pkt))
                if flow is None:
                    continue
                if pkt.payload_len:
                    payload_packets[id(flow)] += 1
                if flow.verdict is not None and id(flow) not in seen and flow.verdict.protocol != "Unknown":
                    seen.add(id(flow))
                    decided[flow.verdict.protocol].append((flow.packets, payload_packets[id(flow)]))
            ended(engine.flush())
    return decided, at_end


def cost(captures: list[Path], layers: list[str], rounds: int) -> tuple[int, float]:
    """(flows, best wall-clock seconds) of classifying every capture with ``layers``."""
    best, flows = float("inf"), 0
    for _ in range(rounds):
        with Classifier(layers=layers) as clf:
            start = time.perf_counter()
            flows = sum(1 for path in captures for _ in clf.classify_pcap(path))
            best = min(best, time.perf_counter() - start)
    return flows, best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--corpus", type=Path, default=None)
    args = parser.parse_args()
    corpus = args.corpus or corpus_dir()
    if corpus is None:
        sys.exit("the nDPI corpus (../shared/corpus/ndpi) is absent: pass --corpus")
    captures = sorted((corpus / "pcap").iterdir())

    decided, at_end = packets_until_verdict(captures)
    print("packets until the heuristics verdict, per protocol (median over the corpus flows it named):")
    print(f"  {'protocol':<12} {'flows':>5} {'packets':>8} {'payload pkts':>13} {'max pkts':>9} {'named at end':>13}")
    for proto in sorted(set(decided) | set(at_end), key=str.lower):
        counts = decided.get(proto, [])
        if counts:
            med = statistics.median(c for c, _ in counts)
            med_payload = statistics.median(p for _, p in counts)
            line = f"{med:>8g} {med_payload:>13g} {max(c for c, _ in counts):>9}"
        else:
            line = f"{'-':>8} {'-':>13} {'-':>9}"
        print(f"  {proto:<12} {len(counts):>5} {line} {at_end.get(proto, 0):>13}")

    flows, t_none = cost(captures, [], args.rounds)
    _, t_heur = cost(captures, ["heuristics"], args.rounds)
    extra = t_heur - t_none
    print(f"\ncost over {len(captures)} captures, {flows} flows (best of {args.rounds} rounds):")
    print(f"  no layer:         {t_none:7.3f} s  {flows / t_none:10.0f} flows/s")
    print(f"  heuristics only:  {t_heur:7.3f} s  {flows / t_heur:10.0f} flows/s")
    print(f"  the layer itself: {extra:7.3f} s  {extra / flows * 1e6:8.1f} us/flow"
          f"  {flows / extra if extra > 0 else float('inf'):10.0f} flows/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
