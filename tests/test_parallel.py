"""`dpi classify -j N`: the records of one process, damage reported once per file, no orphans.

Runs the real CLI (worker processes, the installed plugins, nDPI) on the
shared corpus and on captures the test builds large enough to be split over
the workers by address pair.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from dpicore import Classifier
from dpicore.config import Config
from dpicore.output import flow_record
from dpicore.parallel import SPLIT_BYTES, classify_files, jobs_count
from tests.helpers.frames import eth, pcap_bytes, udp4
from tests.helpers.procs import sigint_as_default

DPI = [sys.executable, "-m", "dpicore.cli"]
T0 = 1_600_000_000.0


def dpi(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(DPI + list(args), cwd=cwd, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def multiset(lines: str | list[dict]) -> Counter[str]:
    """Records as a multiset of canonical JSON texts (order-free comparison)."""
    recs = [json.loads(x) for x in lines.splitlines()] if isinstance(lines, str) else lines
    return Counter(json.dumps(r, sort_keys=True) for r in recs)


def problems(stderr: str, name: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(name)]


def udp_flows_frames(count: int, payload: bytes, t0: float = T0) -> list[tuple[float, bytes]]:
    """``count`` one-packet UDP flows from distinct source addresses (so -j spreads them over its
    shards, which are address pairs): a fast, valid template."""
    frame = bytearray(eth(udp4("10.1.0.0", 1024, "10.2.0.1", 5000, payload)))
    out = []
    for i in range(count):
        struct.pack_into("!H", frame, 14 + 12 + 2, i % 60000)  # low half of the source address
        struct.pack_into("!H", frame, 14 + 20, 1024 + i // 60000)
        out.append((t0 + i * 1e-4, bytes(frame)))
    return out


@pytest.fixture(scope="module")
def damaged_big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A capture larger than SPLIT_BYTES (so -j 2 splits it) with undecodable frames and a cut end."""
    big = b"x" * 1400
    recs = udp_flows_frames(40, big)
    for i in range(SPLIT_BYTES // 1450 + 100):  # bulk: a few flows, many large packets
        recs.append((T0 + 1 + i * 1e-3, eth(udp4(f"10.3.0.{i % 7}", 4000 + i % 7, "10.4.0.1", 6000, big))))
    recs.insert(5, (T0 + 0.0005, eth(b"\x45\x00\x00\x10" + b"\x00" * 30)))  # IPv4 total length < header
    recs += [(T0 + 100 + i, b"\xff" * 8) for i in range(10)]  # shorter than Ethernet
    d = tmp_path_factory.mktemp("parallel")
    path = d / "damaged_big.pcap"
    path.write_bytes(pcap_bytes(recs)[:-7])  # the last record loses its end
    assert path.stat().st_size > SPLIT_BYTES
    return path


def test_jobs_zero_means_every_usable_core() -> None:
    assert jobs_count(0) == len(os.sched_getaffinity(0))
    assert jobs_count(3) == 3


def test_cli_j2_equals_j1_on_the_corpus(corpus: Path, tmp_path: Path) -> None:
    pcaps = str(corpus / "pcap")
    one = dpi("classify", pcaps, "-f", "jsonl", "-q", cwd=tmp_path)
    two = dpi("classify", pcaps, "-f", "jsonl", "-q", "-j", "2", cwd=tmp_path)
    assert two.returncode == one.returncode
    assert len(one.stdout.splitlines()) > 900
    assert multiset(two.stdout) == multiset(one.stdout)


@pytest.mark.parametrize("all_layers", [False, True], ids=["first-verdict", "all-layers"])
def test_split_files_keep_every_record(corpus: Path, all_layers: bool) -> None:
    """Every corpus file split over 2 and 3 processes: the same records, labels included.

    Some labels depend on another flow's state (an FTP data connection announced on its control
    connection; nDPI's caches keyed by address), so this holds because a shard is an address pair.
    """
    files = sorted((corpus / "pcap").iterdir())
    config = Config(all_layers=all_layers)
    with Classifier(config=config) as clf:
        one = [flow_record(f, all_layers) for path in files for f in clf.classify_pcap(path)]
    for jobs in (2, 3):
        run = classify_files(files, jobs=jobs, config=config, split_bytes=0)
        split = list(run)
        assert all(rep.shards == jobs and rep.complete for rep in run.tally.files.values())
        assert multiset(split) == multiset(one), f"-j {jobs}"
        assert not run.damaged


def test_split_file_damage_reported_once_with_the_same_exit_code(damaged_big: Path) -> None:
    name = damaged_big.name
    one = dpi("classify", name, "-f", "jsonl", "-l", "heuristics", cwd=damaged_big.parent)
    two = dpi("classify", name, "-f", "jsonl", "-l", "heuristics", "-j", "2", cwd=damaged_big.parent)
    assert one.returncode == two.returncode == 1
    lines = problems(one.stderr, name)
    assert len(lines) == 5  # three described, the cut end, the count of the undecodable ones
    assert any("cut short" in x for x in lines) and "10 packets could not be decoded" in lines[-1]
    assert problems(two.stderr, name) == lines
    assert "one worker had" not in two.stderr  # its bulk: seven host pairs, spread
    assert multiset(two.stdout) == multiset(one.stdout)
    assert len(one.stdout.splitlines()) == 40 + 7


def test_a_capture_between_two_hosts_is_one_shard_and_said_so(tmp_path: Path) -> None:
    """A shard is an address pair: fifty flows between two hosts all go to one worker (the same
    records), and the run says why -j did not spread the file."""
    big = b"y" * 1400
    recs = [(T0 + i * 1e-3, eth(udp4("10.5.0.1", 4000 + i % 50, "10.6.0.1", 7000, big)))
            for i in range(SPLIT_BYTES // 1450 + 100)]
    (tmp_path / "two_hosts.pcap").write_bytes(pcap_bytes(recs))
    one = dpi("classify", "two_hosts.pcap", "-f", "jsonl", "-l", "heuristics", cwd=tmp_path)
    two = dpi("classify", "two_hosts.pcap", "-f", "jsonl", "-l", "heuristics", "-j", "2", cwd=tmp_path)
    assert one.returncode == two.returncode == 0
    assert len(one.stdout.splitlines()) == 50
    assert multiset(two.stdout) == multiset(one.stdout)
    assert "note: two_hosts.pcap: one worker had 100% of its packets" in two.stderr
    assert "one worker had" not in one.stderr


def _descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _assert_gone(workers: set[int]) -> None:
    """Every one of ``workers`` has exited within 10 s (after a Ctrl-C)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_running(p) for p in workers):
        time.sleep(0.1)
    assert not [p for p in workers if _running(p)], "processes left behind after Ctrl-C"


def test_ctrl_c_leaves_no_worker_behind(tmp_path: Path) -> None:
    """Workers blocked on a full output pipe (nobody reads it), then Ctrl-C to the process group."""
    path = tmp_path / "many_flows.pcap"
    path.write_bytes(pcap_bytes(udp_flows_frames(150_000, b"q" * 20)))
    assert path.stat().st_size > SPLIT_BYTES
    proc = subprocess.Popen(DPI + ["classify", str(path), "-f", "jsonl", "-q", "-l", "heuristics", "-j", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=sigint_as_default)
    try:
        workers: set[int] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(workers) < 2:  # two workers (forked: no forkserver)
            time.sleep(0.2)
            workers = _descendants(proc.pid)
        assert len(workers) >= 2, "the workers did not start"
        time.sleep(1.0)  # let them fill the pipe and the queue
        assert proc.poll() is None, "the run must still be blocked on its output"
        os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=60)  # reading the pipe lets the parent finish its last write
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    _assert_gone(workers)


def test_cli_j2_csv_equals_j1() -> None:
    """Formats other than JSONL take the records themselves from the workers (one CSV header)."""
    captures = Path(__file__).resolve().parent / "captures" / "realclients"
    one = dpi("classify", str(captures), "-f", "csv", "-q", cwd=captures)
    two = dpi("classify", str(captures), "-f", "csv", "-q", "-j", "2", cwd=captures)
    assert two.returncode == one.returncode == 0
    assert two.stdout.splitlines()[0] == one.stdout.splitlines()[0]  # the header, first and once
    assert Counter(two.stdout.splitlines()) == Counter(one.stdout.splitlines())
    assert len(one.stdout.splitlines()) > 60


def test_workers_forked_alone_and_from_a_forkserver_beside_threads() -> None:
    """A single-threaded caller (`dpi classify`) forks its workers, which start with its imports;
    one with other threads running gets a forkserver (a fork would copy locks those threads may
    hold), and the same records.  The CLI tests above run the forked path."""
    import threading

    from dpicore.parallel import _context

    assert _context(threads=1).get_start_method() == "fork"
    assert _context(threads=2).get_start_method() == "forkserver"
    captures = sorted((Path(__file__).resolve().parent / "captures" / "realclients").glob("*.pcap"))
    config = Config().with_layers(["heuristics"])
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert _context().get_start_method() == "forkserver"
        served = list(classify_files(captures, jobs=2, config=config))  # small files: one task each
    finally:
        stop.set()
        other.join()
    with Classifier(config=Config().with_layers(["heuristics"])) as clf:
        one = [flow_record(f) for p in captures for f in clf.classify_pcap(p)]
    assert len(one) > 60
    assert multiset(served) == multiset(one)


def test_a_capture_whose_clock_jumps_back_splits_as_one_process_reads_it(tmp_path: Path) -> None:
    """Flow B at t=100000, then the clock goes back: flow A at t=1000, B at 100500 (an idle scan), A
    at 1001.  One process kept A past the scan (B, in front of it in the table, stopped the scan) and
    A's second packet joined it; the worker holding A without B ended A at the scan.  A's two packets
    were one record with -j 1, two with -j 2 (as on corpus captures concatenated in shuffled order,
    where 1,207 records became 1,234; found by differential fuzzing)."""
    from dpicore.fastpath import shard_of
    from dpicore.model import FlowKey
    from tests.helpers.frames import packet

    def shard(src: str, dst: str) -> int:
        return shard_of(FlowKey.of(packet(1.0, src, 1, dst, 2, proto="udp")), 2)

    b_dst = next(f"10.0.1.{i}" for i in range(1, 255) if shard("10.0.0.3", f"10.0.1.{i}") != shard("10.0.0.1", "10.0.0.2"))
    b = eth(udp4("10.0.0.3", 40000, b_dst, 40001, b"b" * 20))
    a = eth(udp4("10.0.0.1", 50000, "10.0.0.2", 50001, b"a" * 20))
    capture = tmp_path / "clock_back.pcap"
    capture.write_bytes(pcap_bytes([(100000.0, b), (1000.0, a), (100500.0, b), (1001.0, a)]))
    config = Config(enable=["heuristics"])
    with Classifier(config=config) as clf:
        one = [flow_record(f) for f in clf.classify_pcap(capture)]
    assert sorted(r["packets"] for r in one if r["src_port"] == 50000) == [1, 1]  # A idle at the scan
    run = classify_files([capture], jobs=2, config=config, split_bytes=0)
    split = list(run)
    assert next(iter(run.tally.files.values())).shards == 2
    assert multiset(split) == multiset(one)


def _whole_lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), "the file ends inside a record"
    return [json.loads(line) for line in data.splitlines()]


def test_workers_write_a_regular_file_themselves_with_the_records_of_one_process(tmp_path: Path) -> None:
    """JSONL for a regular file: forked workers write it (the parent is handed empty chunks), split
    files included, and the file holds the records one process gives, as whole lines.  Run in a
    process of its own: threads another test left in this one would make the workers come from a
    forkserver, which does not hand them the descriptor."""
    captures = sorted((Path(__file__).resolve().parent / "captures" / "realclients").glob("*.pcap"))
    config = Config().with_layers(["heuristics"])
    with Classifier(config=config) as clf:
        one = [flow_record(f) for p in captures for f in clf.classify_pcap(p)]
    assert len(one) > 60
    out = tmp_path / "records.jsonl"
    code = ("import json, os, sys\n"
            "from dpicore.config import Config\n"
            "from dpicore.parallel import classify_files\n"
            "paths, out = sys.argv[1:-1], sys.argv[-1]\n"
            "fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)\n"
            "run = classify_files(paths, jobs=2, config=Config().with_layers(['heuristics']), split_bytes=0,\n"
            "                     jsonl=True, fd=fd)\n"
            "chunks = list(run)\n"
            "r, w = os.pipe()  # a pipe is no regular file: the text comes through the parent\n"
            "piped = classify_files(paths[:1], jobs=2, jsonl=True, fd=w)\n"
            "text = ''.join(piped)\n"
            "print(json.dumps([run.direct, len(chunks), any(chunks), run.tally.records, piped.direct, len(text)]))\n")
    proc = subprocess.run([sys.executable, "-c", code, *map(str, captures), str(out)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    direct, chunks, text_in_chunks, records, piped_direct, piped_text = json.loads(proc.stdout)
    assert direct and chunks and not text_in_chunks
    assert records == len(one)
    assert multiset(_whole_lines(out)) == multiset(one)
    assert not piped_direct and piped_text


def test_cli_j2_to_a_file_equals_j1(tmp_path: Path) -> None:
    """-o FILE and standard output redirected to a file (both written by the workers) hold the
    records of -j 1."""
    captures = Path(__file__).resolve().parent / "captures" / "realclients"
    one = dpi("classify", str(captures), "-f", "jsonl", "-q", cwd=tmp_path)
    two = dpi("classify", str(captures), "-q", "-j", "2", "-o", str(tmp_path / "two.jsonl"), cwd=tmp_path)
    with open(tmp_path / "redirected.jsonl", "wb") as f:
        three = subprocess.run(DPI + ["classify", str(captures), "-q", "-j", "2"], cwd=tmp_path, stdout=f,
                               stderr=subprocess.PIPE, text=True, timeout=120)
    assert one.returncode == two.returncode == three.returncode == 0, three.stderr
    assert len(one.stdout.splitlines()) > 60
    assert multiset(_whole_lines(tmp_path / "two.jsonl")) == multiset(one.stdout)
    assert multiset(_whole_lines(tmp_path / "redirected.jsonl")) == multiset(one.stdout)


def test_a_worker_that_cannot_write_the_file_fails_the_run_as_the_parent_would(tmp_path: Path) -> None:
    """A file size limit (as a full disk) stops a worker's write: one error line naming the file,
    exit code 2, no traceback; the same as one process says."""
    import resource

    captures = Path(__file__).resolve().parent / "captures" / "realclients"

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    runs = {}
    for jobs in ("1", "2"):
        out = tmp_path / f"j{jobs}.jsonl"
        runs[jobs] = subprocess.run(DPI + ["classify", str(captures), "-q", "-l", "heuristics", "-j", jobs,
                                           "-o", str(out)], cwd=tmp_path, capture_output=True, text=True,
                                    timeout=120, preexec_fn=limited)
    assert runs["2"].returncode == runs["1"].returncode == 2
    assert runs["2"].stderr.replace("j2", "j1") == runs["1"].stderr
    assert runs["2"].stderr.strip().endswith("j2.jsonl: cannot write: File too large"), runs["2"].stderr


def test_ctrl_c_while_workers_write_a_file_leaves_whole_lines(tmp_path: Path) -> None:
    """Ctrl-C once the workers write the file: they stop after the write under way (SIGTERM's default
    action would cut a write inside a line), exit code 130, nobody left behind."""
    path = tmp_path / "many_flows.pcap"
    path.write_bytes(pcap_bytes(udp_flows_frames(150_000, b"q" * 20)))
    out = tmp_path / "records.jsonl"
    proc = subprocess.Popen(DPI + ["classify", str(path), "-q", "-l", "heuristics", "-j", "2", "-o", str(out)],
                            stderr=subprocess.PIPE, start_new_session=True, preexec_fn=sigint_as_default)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (out.exists() and out.stat().st_size):
            time.sleep(0.002)
        workers = _descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, "the run ended before the Ctrl-C: make the capture larger"
    assert 0 < len(_whole_lines(out)) < 150_000
    _assert_gone(workers)


def test_a_terminated_worker_finishes_the_write_under_way(tmp_path: Path) -> None:
    """The workers' SIGTERM handler: a process writing 128 MB to a file in one call, terminated in
    the middle of it, exits 143 with all of it written (the default action stops at a page).
    A termination that came before the first write began (a busy machine can hold the writer back
    past the pause) proves nothing either way, so that run is made again."""
    chunk = 128 << 20
    out = tmp_path / "written"
    code = ("import os, signal, sys\n"
            "from dpicore.parallel import _terminated, _write_all\n"
            "signal.signal(signal.SIGTERM, _terminated)\n"
            f"data = b'x' * {chunk}\n"
            f"fd = os.open({str(out)!r}, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)\n"
            "sys.stdout.write('writing\\n'); sys.stdout.flush()\n"
            "for _ in range(4):\n"
            "    _write_all(fd, data)\n")
    sizes = []
    while len(sizes) < 5 and not any(sizes):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "writing\n"
            time.sleep(0.01)
            proc.terminate()
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 128 + signal.SIGTERM
        sizes.append(out.stat().st_size)
        assert sizes[-1] % chunk == 0 and sizes[-1] < 4 * chunk, sizes
    assert any(sizes), "every termination came before the first write"


def test_which_outputs_the_workers_write_themselves(tmp_path: Path) -> None:
    """A regular file and /dev/null (every write taken whole); not a pipe, nor another character device."""
    from dpicore.parallel import _shares_offsets

    r, w = os.pipe()
    fds = {"file": os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT), "null": os.open(os.devnull, os.O_WRONLY),
           "zero": os.open("/dev/zero", os.O_WRONLY), "pipe": w}
    try:
        assert {name: _shares_offsets(fd) for name, fd in fds.items()} == {
            "file": True, "null": True, "zero": False, "pipe": False}
    finally:
        for fd in (*fds.values(), r):
            os.close(fd)
