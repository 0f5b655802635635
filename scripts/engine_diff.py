"""Run the engine of this tree and of another git revision over the same random scenarios and compare.

A refactor of the pipeline (dpicore/engine.py, the flow table, the batch path) must not change what any
layer sees or what any record says.  The corpus and the benchmark captures exercise the shipped layers;
this drives the engine with layers that do everything the hook contract allows, at random: 1-4 layers
of random priority, packet budget, ``wants_empty`` / ``hold_empty`` and ``reads_payloads``, answering
at random packets with random protocols, confidences, ``watch`` and ``watch_for``, raising now and
then, naming the flow in ``dpi_flow_end``; over random TCP and UDP flows with empty packets,
retransmissions, FIN/RST and idle timeouts; in first-verdict and all-layers mode.  Every hook call
(layer, flow, packet, direction, payload length, reason) and every record is printed per scenario,
so two trees agree only if the layers were driven identically.  Each scenario runs twice: packet by
packet (``Engine.run``) and as a raw-IP pcap through the batch path (``Classifier.classify_pcap``, which
counts packets inline and hands the engine only what a layer may see).

::

    .venv/bin/python scripts/engine_diff.py HEAD~3            # 2,000 scenarios; exit 1 on a difference
    .venv/bin/python scripts/engine_diff.py 1ab8a78 --scenarios 5000

The other revision is checked out into a temporary git worktree, and this file runs in both trees
(each tree's own ``dpicore`` and ``tests/helpers/frames.py`` first on the path).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROTOCOLS = ("HTTP", "TLS", "DNS", "SSH", "FTP", "Unknown")


def scenario(seed: int) -> dict[str, Any]:
    """One random scenario through the engine importable from here: its hook calls and records."""
    from dpicore import Classifier, LayerInfo, Verdict, hookimpl
    from dpicore.config import Config
    from dpicore.engine import Engine
    from dpicore.output import flow_record
    from dpicore.plugins import PluginSet
    from dpicore.protocols import ProtocolRegistry
    from dpicore.decode.packets import DLT_RAW
    from tests.helpers.frames import ACK, FIN, PSH, RST, SYN, packet, pcap_bytes

    class Layer:
        """A layer whose every answer is a function of the scenario, the flow and the call: both trees
        get the same answers for the same calls."""

        def __init__(self, layer_id: str, rng: random.Random, log: list[Any]) -> None:
            self.id = layer_id
            self.seed = rng.random()
            wants = rng.random() < 0.6
            self.info = LayerInfo(id=layer_id, priority=rng.randint(1, 50), max_packets=rng.randint(1, 12),
                                  wants_empty=wants, hold_empty=rng.choice([0, 0, 1, 3, 7]) if wants else 0,
                                  reads_payloads=rng.random() < 0.5)
            self.log = log
            self.answers = rng.choice([0.05, 0.2, 0.5])
            self.raises = rng.choice([0.0, 0.0, 0.02])
            self.names_at_end = rng.choice([0.0, 0.3])

        def _rng(self, *key: Any) -> random.Random:
            return random.Random(f"{self.seed}|{key}")

        @hookimpl
        def dpi_layer_info(self) -> Any:
            return self.info

        @hookimpl
        def dpi_flow_new(self, flow: Any, packet: Any) -> dict[str, int]:
            self.log.append((self.id, "new", flow.client_port, packet.number))
            return {"calls": 0}

        @hookimpl
        def dpi_classify(self, flow: Any, packet: Any, direction: int, state: dict[str, int]) -> Any:
            state["calls"] += 1
            self.log.append((self.id, "classify", flow.client_port, packet.number, direction, len(packet.payload),
                             state["calls"]))
            r = self._rng(flow.client_port, packet.number, state["calls"])
            if r.random() < self.raises:
                raise ValueError("a layer's bug")
            if r.random() < self.answers:
                watch = r.choice([0, 0, 1, 2, 4])
                watch_for = re.compile(rb"p0[0-4]") if watch and r.random() < 0.4 else None
                return Verdict(r.choice(PROTOCOLS), confidence=r.choice([0.3, 0.9, 1.0]), watch=watch,
                               watch_for=watch_for, metadata={"at": packet.number, "layer": self.id})
            return None

        @hookimpl
        def dpi_flow_end(self, flow: Any, state: dict[str, int], reason: str) -> Any:
            self.log.append((self.id, "end", flow.client_port, reason, state["calls"]))
            r = self._rng(flow.client_port, "end")
            if r.random() < self.names_at_end:
                return Verdict(r.choice(PROTOCOLS), confidence=r.choice([0.3, 0.9]), metadata={"end": self.id})
            return None

    def traffic(rng: random.Random) -> list[Any]:
        packets = []
        number = 0
        for f in range(rng.randint(1, 6)):
            t = 100.0 + rng.random() * 5
            port = 40000 + f
            udp = rng.random() < 0.3
            seq = [1000, 9000]
            for i in range(rng.randint(1, 14)):
                number += 1
                from_client = rng.random() < 0.6
                payload = rng.choice([b"", b"", b"p%03d" % rng.randint(0, 9), b"q%03d" % i])
                ends = ("10.0.0.1", port, "10.0.0.2", 80) if from_client else ("10.0.0.2", 80, "10.0.0.1", port)
                if udp:
                    packets.append(packet(t, *ends, payload=payload or b"u%02d" % i, proto="udp", number=number))
                else:
                    flags = SYN if i == 0 else PSH | ACK if payload else ACK
                    if i > 3 and rng.random() < 0.07:
                        flags = rng.choice([FIN | ACK, RST | ACK])
                    d = 0 if from_client else 1
                    s = seq[d] - 4 if rng.random() < 0.1 else seq[d]  # a retransmission now and then
                    packets.append(packet(t, *ends, flags=flags, payload=payload, seq=s, number=number))
                    seq[d] = s + len(payload)
                t += rng.choice([0.01, 0.5, 3.0])
        packets.sort(key=lambda p: (p.ts, p.number))
        return packets

    rng = random.Random(seed)
    n_layers = rng.randint(1, 4)
    layer_seed = rng.random()
    settings = {"all_layers": rng.random() < 0.4, "idle_timeout": rng.choice([2.0, 120.0])}
    packets = traffic(rng)

    def layers(log: list[Any]) -> list[Layer]:
        r = random.Random(layer_seed)
        return [Layer(f"l{i}", r, log) for i in range(n_layers)]

    one_by_one: list[Any] = []
    config = Config(**settings)
    plugins = PluginSet(config, registry=ProtocolRegistry())
    for layer in layers(one_by_one):
        if not plugins.add(layer.id, layer):
            raise RuntimeError(plugins.statuses[layer.id].reason)
    engine = Engine(plugins, config)
    records = [flow_record(flow, all_layers=True) for flow in engine.run(packets)]

    batched: list[Any] = []
    mine = layers(batched)
    with tempfile.TemporaryDirectory() as scratch:
        capture = Path(scratch) / "scenario.pcap"
        capture.write_bytes(pcap_bytes([(p.ts, bytes(p.ip)) for p in packets], linktype=DLT_RAW))
        clf = Classifier(config=Config(enable=[layer.id for layer in mine], **settings),
                         extra_plugins=[(layer.id, layer) for layer in mine])
        batch_records = [flow_record(flow, all_layers=True) for flow in clf.classify_pcap(capture)]
        clf.close()
    return {"seed": seed, "calls": one_by_one, "records": records, "layer_errors": engine.stats.layer_errors,
            "batch_calls": batched, "batch_records": batch_records}


def emit(start: int, count: int) -> None:
    for seed in range(start, start + count):
        print(json.dumps(scenario(seed), default=str, sort_keys=True))


def run_in(tree: Path, start: int, count: int) -> list[str]:
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONHASHSEED="0")
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--emit", str(start), str(count)],
                         cwd=tree, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"the scenarios failed in {tree}:\n{out.stderr[-2000:]}")
    return out.stdout.splitlines()


def difference(old: dict[str, Any], new: dict[str, Any], revision: str) -> str:
    """Where one scenario's two runs part: the first hook call or record that differs."""
    seed = old["seed"]
    head = f"scenario {seed} differs (rerun it: --start {seed} --scenarios 1)"
    for field in ("calls", "records", "batch_calls", "batch_records"):
        a, b = old[field], new[field]
        for i in range(max(len(a), len(b))):
            x, y = (a[i] if i < len(a) else None), (b[i] if i < len(b) else None)
            if x != y:
                return (f"{head}: {field} item {i}\n  {revision}: {json.dumps(x)}\n  this tree: {json.dumps(y)}\n"
                        f"  before it: {json.dumps(a[max(0, i - 3):i])}")
    return f"{head}: layer errors {old['layer_errors']} against {new['layer_errors']}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("revision", nargs="?", help="the git revision to compare this tree's engine with")
    ap.add_argument("--scenarios", type=int, default=2000)
    ap.add_argument("--start", type=int, default=0, help="the first scenario's seed")
    ap.add_argument("--emit", nargs=2, type=int, metavar=("START", "COUNT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.emit:
        emit(*args.emit)
        return 0
    if not args.revision:
        ap.error("name a git revision to compare with")
    with tempfile.TemporaryDirectory() as scratch:
        other = Path(scratch) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(other), args.revision],
                       check=True)
        try:
            theirs = run_in(other, args.start, args.scenarios)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)], check=True)
    ours = run_in(ROOT, args.start, args.scenarios)
    for mine, old in zip(ours, theirs):
        if mine != old:
            print(difference(json.loads(old), json.loads(mine), args.revision))
            return 1
    if len(ours) != len(theirs):
        print(f"{len(theirs)} scenarios from {args.revision}, {len(ours)} here")
        return 1
    print(f"{len(ours)} scenarios: every hook call and record identical to {args.revision}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
