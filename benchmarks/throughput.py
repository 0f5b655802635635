"""Throughput of `dpi classify` next to NFStream 6.6 and ndpiReader 4.2, in one run, alternating.

    .venv/bin/python benchmarks/throughput.py [--rounds 3] [--skip-memory] [--cache-dir DIR] [--pcapng]

Inputs (made by benchmarks/make_inputs.py in ~/.cache/dpicore-bench when
missing): the shared corpus x10 and ~1 M packets of real client traffic
(with ``--pcapng``: the same frames as pcapng files).
Each round runs, on each input and in turn:

* ``dpi classify FILE -l heuristics``          (one process)
* ``dpi classify FILE -l heuristics,ndpi``     (one process)
* ``dpi classify FILE -l heuristics -j 2``     (two worker processes)
* two ``dpi classify FILE -l heuristics`` at once: what the machine gives two
  independent processes at that moment, the ceiling of the -j 2 ratio
  (2 x one run's wall time / the pair's); with the fixed costs below it also
  gives the most any -j 2 could reach here (its fixed cost, then half the
  work, slowed down as the pair slows down, nothing repeated)
* NFStream 6.6 ``NFStreamer(source=FILE, n_dissections=20,
  statistical_analysis=False, n_meters=1)``, iterated to the end, from its
  own venv (~/.cache/dpicore-bench/nfstream-venv-VERSION-TAG, one per
  interpreter, made with the one running this script and
  ``pip install nfstream==6.6.*`` when missing: both tools run on the
  same Python, printed first, whose build moves the ratios)
* ``ndpiReader -q -i FILE``

dpi writes JSONL to a file (its flows are counted from it); NFStream only
iterates its flows; ndpiReader prints nothing (its flow count comes from one
extra, untimed run without ``-q``).  Every run is a fresh child of a small
measuring process that is a child subreaper: every descendant (forkserver,
workers, NFStream's meter) is reaped by it, so wall time ends with the last
process of the tree, CPU time is the whole tree's, and the peak RSS is the
largest single process of the tree (``RUSAGE_CHILDREN``); the sum over the
tree is sampled from /proc every 0.25 s.  The best (least wall) of the
rounds is printed, because other work on the machine only ever adds time;
CPU time is printed too, and so is each round's own ratio (two runs of one
round are close in time, so they share the machine's state; the best runs
of two tools can come from different rounds).  Each tool's fixed cost (interpreter, imports,
plugin and library setup) is measured on a one-packet capture and shown
apart, with packets/s "net" of it.

Then, unless --skip-memory: bytes per tracked flow (1 M flows fed to an
Engine, all live at once, RSS growth over N: UDP flows of one unrecognised
payload, bare TCP SYNs, and the real-client captures' conversations up to
their 8th packet or first FIN/RST, each from its own client address; each
without layers, with the heuristics layer, with heuristics and nDPI, and
with every shipped layer),
and peak RSS on a tenth of the
real-client input next to the whole input (output is streamed, so it should
not grow with the file).
"""

from __future__ import annotations

import argparse
import compileall
import ctypes
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_inputs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DPI = str(ROOT / ".venv" / "bin" / "dpi")
NFSTREAM_VERSION = "6.6.*"
NFSTREAM_SCRIPT = """
import sys
from nfstream import NFStreamer
n = 0
for flow in NFStreamer(source=sys.argv[1], n_dissections=20, statistical_analysis=False, n_meters=1):
    n += 1
open(sys.argv[2], "w").write(str(n))
"""
PR_SET_CHILD_SUBREAPER = 36


# -- measuring one command (runs in a fresh process: `throughput.py --measure RESULT -- CMD…`) ----------

def _tree_rss(root: int) -> int:
    """Summed RSS (bytes) of ``root``'s descendants, from /proc."""
    parent: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(entry)] = int(fields[1])
        rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    total, frontier, seen = 0, {root}, set()
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - seen
        seen |= frontier
        total += sum(rss[p] for p in frontier)
    return total


def measure(result: str, cmd: list[str]) -> int:
    """Run ``cmd``, reap its whole tree, write wall/CPU/RSS as JSON to ``result``."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    peak_tree = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_tree
        me = os.getpid()
        while not done.wait(0.25):
            peak_tree = max(peak_tree, _tree_rss(me))

    sampler = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    sampler.start()
    code = proc.wait()
    while True:  # orphaned grandchildren (forkserver, workers) were reparented to us
        try:
            os.wait()
        except ChildProcessError:
            break
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    Path(result).write_text(json.dumps({"wall": wall, "user": ru.ru_utime, "sys": ru.ru_stime,
                                        "maxrss": ru.ru_maxrss * 1024, "tree_rss": peak_tree, "code": code}))
    return 0


def run_measured(cmd: list[str]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
        subprocess.run([sys.executable, __file__, "--measure", tmp.name, "--", *cmd], check=True)
        out = json.loads(Path(tmp.name).read_text())
    if out["code"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {out['code']}")
    return out


# -- the tools -------------------------------------------------------------------------------------------

def _base_python() -> str:
    """The interpreter behind this venv's python (the binary the benchmark's venvs are made from)."""
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def interpreter() -> str:
    """The Python that runs dpi and NFStream here (the benchmark's own, the project venv's): its build
    moves the ratios.  On Debian's python3.11 (libpython linked into the binary) NFStream took 11-18%
    less time than on a pyenv build with a shared libpython, on the same machine, and dpi 4-8% less."""
    base = _base_python()
    with open("/proc/self/maps") as maps:
        shared = "libpython" in maps.read()
    return (f"{platform.python_implementation()} {platform.python_version()} ({base}, "
            f"{'libpython as a shared library' if shared else 'libpython linked into the binary'})")


def compiled_modules() -> str:
    """Whether dpi runs its hot modules compiled (scripts/compile_core.py's check of the project venv)."""
    from dpicore.compiled import PURE_ENV, pure_requested  # the project venv's dpicore, which runs this

    if pure_requested():
        return f"ignored ({PURE_ENV} is set)"
    check = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "scripts" / "compile_core.py"),
                            "--check"], capture_output=True, text=True)
    return (check.stdout or check.stderr).strip().removeprefix("compile_core: ")


def nfstream_python(cache: Path) -> str:
    """NFStream's venv, one per interpreter (named after the one running this script, which makes it):
    both tools then run on the same Python, whichever runs the benchmark."""
    base = _base_python()
    tag = hashlib.sha256(base.encode()).hexdigest()[:8]
    venv = cache / f"nfstream-venv-{platform.python_version()}-{tag}"
    py = venv / "bin" / "python"
    if not py.exists():
        print(f"creating {venv} ({base}) with nfstream {NFSTREAM_VERSION}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", f"nfstream=={NFSTREAM_VERSION}"], check=True)
    return str(py)


Tool = Callable[[Path, Path], list[str]]  # (capture, scratch file for the flow count) -> argv


def tools(nfpy: str) -> dict[str, Tool]:
    def dpi(*extra: str) -> Tool:
        return lambda cap, out: [DPI, "classify", str(cap), "-q", "-f", "jsonl", "-o", str(out), *extra]
    return {
        "dpi heuristics": dpi("-l", "heuristics"),
        "dpi heuristics+ndpi": dpi("-l", "heuristics,ndpi"),
        "dpi -j 2 heuristics": dpi("-l", "heuristics", "-j", "2"),
        PAIR: lambda cap, out: ["sh", "-c", PAIR_SCRIPT, "pair", str(out),
                                *_without_output(dpi("-l", "heuristics")(cap, out))],
        "NFStream 6.6": lambda cap, out: [nfpy, "-c", NFSTREAM_SCRIPT, str(cap), str(out)],
        "ndpiReader -q": lambda cap, out: ["ndpiReader", "-q", "-i", str(cap)],
    }


#: Two one-process runs of the same input at once: what this machine gives two independent processes
#: at that moment, the ceiling for -j 2 (2 x one run's time / the pair's time).
PAIR = "dpi heuristics, 2 at once"
#: sh -c PAIR_SCRIPT pair OUT DPI-ARGV...: the first copy writes OUT (its flows are counted), the second
#: a scratch file; fails when either fails.
PAIR_SCRIPT = ('out=$1; shift; other=$(mktemp); "$@" -o "$other" & "$@" -o "$out"; s=$?; '
               'wait $! || s=1; rm -f "$other"; exit $s')


def _without_output(argv: list[str]) -> list[str]:
    """``argv`` of a dpi run without its ``-o FILE`` (the pair's shell adds one per copy)."""
    i = argv.index("-o")
    return argv[:i] + argv[i + 2:]


def flows_of(name: str, cap: Path, out: Path) -> int:
    if name.startswith("dpi"):
        with out.open("rb") as fh:
            return sum(1 for _ in fh)
    if name.startswith("NFStream"):
        return int(out.read_text())
    text = subprocess.run(["ndpiReader", "-i", str(cap)], capture_output=True, text=True, check=True).stdout
    line = next(x for x in text.splitlines() if "Unique flows:" in x)
    return int(line.split(":")[1].split()[0])


def one_packet_capture(cache: Path, like: Path) -> Path:
    """The first packet of ``like``: what a tool costs with (almost) no traffic."""
    out = cache / "one_packet.pcap"
    if not out.exists():
        with like.open("rb") as fh:
            head = fh.read(24)
            rec = fh.read(16)
            caplen = int.from_bytes(rec[8:12], "little")
            out.write_bytes(head + rec + fh.read(caplen))
    return out


# -- the benchmark ---------------------------------------------------------------------------------------

def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def compile_sources() -> None:
    """Bytecode for dpicore and its plugins, as scripts/install.sh leaves it: a source edited since
    the install would otherwise be compiled again in every timed run (PYTHONDONTWRITEBYTECODE)."""
    root = Path(__file__).resolve().parent.parent
    for d in [root / "dpicore", *sorted(root.glob("plugins/*/dpi_*"))]:
        compileall.compile_dir(d, quiet=1)


def benchmark(rounds: int, cache: Path, pcapng: bool = False) -> dict[str, Any]:
    inputs = make_inputs.make_all(cache)
    compile_sources()
    bench_inputs = {k: inputs[k] for k in ("corpus_x10", "realclients_large")}
    todo = tools(nfstream_python(cache))
    tiny = one_packet_capture(cache, inputs["corpus_x10"])
    if pcapng:  # the same frames as pcapng files, fixed cost included (dpi reads pcapng's interfaces with dpkt)
        bench_inputs = {k: make_inputs.pcapng_of(v) for k, v in bench_inputs.items()}
        tiny = make_inputs.pcapng_of(tiny)
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    setup: dict[str, list[float]] = {}
    print(f"interpreter: {interpreter()}", flush=True)
    print(f"dpi's compiled modules: {compiled_modules()}", flush=True)
    print(f"load average before: {loadavg()} ({os.cpu_count()} cores)", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "out"
        for r in range(rounds):
            names = list(todo) if r % 2 == 0 else list(reversed(todo))  # alternate who runs first
            for name in names:
                setup.setdefault(name, []).append(run_measured(todo[name](tiny, out))["wall"])
            for label, cap in bench_inputs.items():
                for name in names:
                    m = run_measured(todo[name](cap, out))
                    m["flows"] = flows_of(name, cap, out) if r == 0 else None
                    results.setdefault((label, name), []).append(m)
                    print(f"round {r + 1} {label:18} {name:22} {m['wall']:7.2f} s wall "
                          f"{m['user'] + m['sys']:7.2f} s CPU", flush=True)
    print(f"load average after: {loadavg()}", flush=True)
    return {"inputs": bench_inputs, "results": results, "setup": setup}


def report(b: dict[str, Any]) -> None:
    setup = {name: min(v) for name, v in b["setup"].items()}
    print("\nfixed cost per run (one-packet capture, best): "
          + ", ".join(f"{n} {s:.2f} s" for n, s in setup.items()))
    for label, cap in b["inputs"].items():
        packets = make_inputs.packets_in(cap)
        print(f"\n{label}: {packets:,} packets, {cap.stat().st_size / 1e6:.0f} MB  (best of "
              f"{len(next(iter(b['results'].values())))} rounds by wall time)")
        print(f"{'tool':22} {'wall s':>7} {'CPU s':>7} {'pkts/s':>9} {'net pkts/s':>10} {'flows':>7} "
              f"{'flows/s':>8} {'max RSS MiB':>11} {'tree RSS MiB':>12}")
        rate: dict[str, float] = {}
        net: dict[str, float] = {}
        cpu_rate: dict[str, float] = {}
        for (lab, name), runs in b["results"].items():
            if lab != label or name == PAIR:
                continue
            best = min(runs, key=lambda m: m["wall"])
            flows = runs[0]["flows"]
            cpu = best["user"] + best["sys"]
            rate[name] = packets / best["wall"]
            net[name] = packets / max(1e-9, best["wall"] - setup[name])
            cpu_rate[name] = packets / cpu
            print(f"{name:22} {best['wall']:7.2f} {cpu:7.2f} {rate[name]:9,.0f} {net[name]:10,.0f} {flows:7,} "
                  f"{flows / best['wall']:8,.0f} {best['maxrss'] / 2**20:11.0f} {best['tree_rss'] / 2**20:12.0f}")
        nf = "NFStream 6.6"
        print("ratios (wall / net of fixed cost / CPU time):")
        for name in ("dpi heuristics", "dpi heuristics+ndpi"):
            print(f"  {name} / NFStream: {rate[name] / rate[nf]:.2f} / {net[name] / net[nf]:.2f} / "
                  f"{cpu_rate[name] / cpu_rate[nf]:.2f}")
        print(f"  -j 2 / -j 1 (heuristics): {rate['dpi -j 2 heuristics'] / rate['dpi heuristics']:.2f} / "
              f"{net['dpi -j 2 heuristics'] / net['dpi heuristics']:.2f}  (CPU time ratio "
              f"{cpu_rate['dpi -j 2 heuristics'] / cpu_rate['dpi heuristics']:.2f})")
        print(f"  dpi heuristics / ndpiReader: {rate['dpi heuristics'] / rate['ndpiReader -q']:.2f}")
        runs = {name: r for (lab, name), r in b["results"].items() if lab == label}
        one, pair = (min(m["wall"] for m in runs[name]) for name in ("dpi heuristics", PAIR))
        print(f"  this machine's ceiling for -j 2, two one-process runs at once (best {pair:.2f} s): "
              f"2 x {one:.2f} / {pair:.2f} = {2 * one / pair:.2f}")
        work, slowdown, best_j = _cap(setup, one, pair)
        print(f"  the most -j 2 could give here (its fixed cost {setup['dpi -j 2 heuristics']:.2f} s + half of "
              f"{work:.2f} s of work x {slowdown:.2f}, the pair's slowdown; no work repeated): "
              f"{one:.2f} / {best_j:.2f} = {one / best_j:.2f}")
        print("ratios per round (wall; the two runs of a round are minutes apart at most, so they share the "
              "machine's state; median last):")
        for slow, fast, what in ((nf, "dpi heuristics", "dpi heuristics / NFStream"),
                                 (nf, "dpi heuristics+ndpi", "dpi heuristics+ndpi / NFStream"),
                                 ("dpi heuristics", "dpi -j 2 heuristics", "-j 2 / -j 1 (heuristics)")):
            per_round = [s["wall"] / f["wall"] for s, f in zip(runs[slow], runs[fast])]
            print(f"  {what}: " + " ".join(f"{x:.2f}" for x in per_round)
                  + f"  -> {statistics.median(per_round):.2f}")
        ceiling = [2 * one["wall"] / two["wall"] for one, two in zip(runs["dpi heuristics"], runs[PAIR])]
        print("  ceiling for -j 2 (2 x one run / two runs at once): " + " ".join(f"{x:.2f}" for x in ceiling)
              + f"  -> {statistics.median(ceiling):.2f}")
        cap = [one["wall"] / _cap(setup, one["wall"], two["wall"])[2]
               for one, two in zip(runs["dpi heuristics"], runs[PAIR])]
        print("  the most -j 2 could give (as above, each round's runs): " + " ".join(f"{x:.2f}" for x in cap)
              + f"  -> {statistics.median(cap):.2f}")


def _cap(setup: dict[str, float], one: float, pair: float) -> tuple[float, float, float]:
    """(work, slowdown, wall time) of the best -j 2 conceivable here: its own fixed cost, then half of
    one run's work (its wall time less its fixed cost), slowed down as much as two one-process runs
    at once slow each other (the pair's time less its fixed cost, over one run's work)."""
    work = one - setup["dpi heuristics"]
    slowdown = (pair - setup[PAIR]) / work
    return work, slowdown, setup["dpi -j 2 heuristics"] + slowdown * work / 2


# -- memory ----------------------------------------------------------------------------------------------

def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


#: Flow shapes of the memory rows: an unrecognised UDP payload keeps every layer interested (its state
#: and the flow's payloads stay); a bare TCP SYN is a scan or a flood, the usual way to a million
#: concurrent flows, and its packet is held for the layers that want the handshake; "real" replays the
#: first packets of the real-client captures' conversations (see real_flows).
MEMORY_KINDS = ("payload", "syn", "real")
#: "real" flows: at most this many packets of each conversation, none from its first FIN or RST on
#: (the flow stays live, in the middle of its conversation).
REAL_PACKETS = 8
#: Layer sets of the memory rows: none, the heuristics alone, with nDPI, and every layer shipped
#: (what `dpi classify` runs by default when dpi-ml is installed too).
MEMORY_LAYERS = ("", "heuristics", "heuristics,ndpi", "heuristics,ndpi,ml")


def flow_memory(n: int, layers: str, kind: str = "payload") -> int:
    """Feed ``n`` flows of ``kind`` to an Engine, all live at once; print RSS growth per flow (runs in a
    fresh process).  Each packet is decoded from its own frame by the scalar decoder, so it carries its
    own slices of it as a captured packet does."""
    from dpicore import Classifier
    from dpicore.config import Config
    from dpicore.decode import Decoder
    from dpicore.decode.packets import DLT_RAW

    config = Config(max_flows=n + 1, enable=[x for x in layers.split(",") if x])
    clf = Classifier(config=config)
    feed = clf.engine.feed
    decode = Decoder().decode
    if kind == "real":
        conversations = real_flows()
        number = 0
        clock = 0.0
        base = _rss()
        for i in range(n):
            # Conversation i % len, from its own client address (100.64.0.0 + i): its own flow.  It
            # starts where the one before ended, as in a capture, whose clock does not go back: with
            # every conversation starting at 1 s, every flow sat in the flow table's queue for flows
            # the clock left behind (~130 bytes each that a capture does not cost).
            client = (0x64400000 + i).to_bytes(4, "big")
            start = clock
            for ts, ip, from_client in conversations[i % len(conversations)]:
                number += 1
                ip = ip[:12] + client + ip[16:] if from_client else ip[:16] + client + ip[20:]
                clock = start + ts
                pkt = decode(DLT_RAW, ip, clock, len(ip), number)
                assert pkt is not None
                feed(pkt, expire=False)
    else:
        payload = b"\x00\x01zz-not-a-known-protocol" if kind == "payload" else b""
        base = _rss()
        for i in range(n):
            # Its own addresses, port and (for a payload) bytes, as each captured packet has.
            data = payload + i.to_bytes(4, "big") if payload else b""
            frame = _frame(kind, (0x0A000000 | i).to_bytes(4, "big"), 1024 + i % 60000, data)
            pkt = decode(DLT_RAW, frame, 1.0, len(frame), i + 1)
            assert pkt is not None
            feed(pkt, expire=False)
    grown = _rss() - base
    assert len(clf.engine.table) == n
    print(json.dumps({"flows": n, "layers": layers, "kind": kind, "bytes": grown, "per_flow": grown / n,
                      "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
    return 0


def real_flows() -> list[list[tuple[float, bytes, bool]]]:
    """The IPv4 TCP and UDP conversations of the real-client captures (make_inputs.realclient_sources):
    per conversation its first REAL_PACKETS packets before any FIN or RST, as (time from 1.0, IP bytes,
    sent by the client), in capture order.  The client is the first packet's sender."""
    from dpicore.decode.source import CaptureSource
    from dpicore.model import FIN, RST, TCP, UDP, FlowKey, Packet

    out: list[list[tuple[float, bytes, bool]]] = []
    for path in make_inputs.realclient_sources():
        flows: dict[FlowKey, list[tuple[float, bytes, bool]]] = {}  # a capture's conversations are its own
        firsts: dict[FlowKey, Packet] = {}
        closed: set[FlowKey] = set()
        for pkt in CaptureSource(path):
            if pkt.ip_version != 4 or pkt.proto not in (TCP, UDP) or pkt.fragment or not pkt.ip:
                continue
            key = FlowKey.of(pkt)
            if key in closed:
                continue
            if pkt.proto == TCP and pkt.tcp_flags & (FIN | RST):
                closed.add(key)
                continue
            packets = flows.setdefault(key, [])
            if len(packets) < REAL_PACKETS:
                first = firsts.setdefault(key, pkt)
                ts = 1.0 + min(max(pkt.ts - first.ts, 0.0), 60.0)
                packets.append((ts, bytes(pkt.ip), (pkt.src, pkt.sport) == (first.src, first.sport)))
        out.extend(flows.values())
    return out


def _frame(kind: str, src: bytes, sport: int, payload: bytes) -> bytes:
    """An IPv4 frame from ``src``:``sport`` to 10.255.0.1: UDP to port 9999, or a TCP SYN to port 80."""
    import struct

    if kind == "syn":
        l4, proto = struct.pack("!HHIIBBHHH", sport, 80, 1, 0, 5 << 4, 0x02, 64240, 0, 0), 6
    else:
        l4, proto = struct.pack("!HHHH", sport, 9999, 8 + len(payload), 0) + payload, 17
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, 64, proto, 0, src, bytes([10, 255, 0, 1])) + l4


def memory_report(cache: Path) -> None:
    # The inputs of the last rows first: one that cannot be made stops the report before its long rows.
    inputs = make_inputs.make_all(cache, names=["realclients_small", "realclients_large"])
    n = 1_000_000
    print(f"\nbytes per tracked flow (RSS growth / flows; {n:,} flows, all live at once; payload: one "
          f"unrecognised UDP payload, syn: a bare TCP SYN, real: a real-client conversation up to its "
          f"{REAL_PACKETS}th packet or first FIN/RST):")
    for kind in MEMORY_KINDS:
        for layers in MEMORY_LAYERS:
            out = subprocess.run([sys.executable, __file__, "--flow-memory", str(n), "--layers", layers,
                                  "--kind", kind], capture_output=True, text=True, check=True).stdout
            m = json.loads(out.strip().splitlines()[-1])
            # MiB as before, and decimal GB: the unit the target (1 M flows < 1.5 GB) is read in.
            print(f"  {kind:7} layers [{layers or 'none'}]: {m['bytes'] / 2**20:,.0f} MiB = {m['bytes'] / 1e9:.3f} GB "
                  f"({m['per_flow']:,.0f} bytes/flow), process peak {m['maxrss'] / 2**20:,.0f} MiB = "
                  f"{m['maxrss'] / 1e9:.3f} GB")
    print("\npeak RSS of 'dpi classify -l heuristics' by input size (output streamed):")
    with tempfile.TemporaryDirectory() as scratch:
        for label in ("realclients_small", "realclients_large"):
            cap = inputs[label]
            runs = [run_measured([DPI, "classify", str(cap), "-q", "-f", "jsonl", "-o", str(Path(scratch) / "o"),
                                  "-l", "heuristics"]) for _ in range(2)]
            print(f"  {label:18} {make_inputs.packets_in(cap):>9,} packets: max RSS "
                  f"{statistics.median(r['maxrss'] for r in runs) / 2**20:.0f} MiB")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--measure"]:
        return measure(argv[1], argv[3:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--pcapng", action="store_true",
                    help="time every tool on the inputs' pcapng copies (made beside them) instead of the pcap files")
    ap.add_argument("--flow-memory", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--layers", default="", help=argparse.SUPPRESS)
    ap.add_argument("--kind", default="payload", choices=MEMORY_KINDS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.flow_memory is not None:
        return flow_memory(args.flow_memory, args.layers, args.kind)
    cache = make_inputs.cache_dir(args.cache_dir)
    if not args.skip_throughput:
        report(benchmark(args.rounds, cache, args.pcapng))
    if not args.skip_memory:
        memory_report(cache)
    return 0


if __name__ == "__main__":
    sys.exit(main())
