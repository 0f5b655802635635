"""`dpi classify` output: table, JSONL and CSV hold the same flows; --output
writes the file; a directory run equals the per-file runs; `dpi plugins`.

Runs the real CLI in a subprocess on captures the test builds, with the
plugins installed in this environment.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dpicore.output import RECORD_FIELDS
from tests.helpers.frames import eth, pcap_bytes, pcapng_bytes, tcp_session, udp4
from tests.helpers.procs import sigint_as_default

DPI = [sys.executable, "-m", "dpicore.cli"]
T0 = 1_600_000_000.0


def dpi(*args: str, cwd: Path, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    proc = subprocess.run(DPI + list(args), cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in ok, proc.stderr
    return proc


def _session_frames(t0: float, cport: int) -> list[tuple[float, bytes]]:
    frames = []
    for pkt in tcp_session(t0=t0, client=("10.0.0.1", cport), server=("10.0.0.2", 80)):
        frames.append((pkt.ts, eth(pkt.ip)))
    return frames


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two HTTP sessions, a DNS-like UDP exchange, and one IPv6 flow."""
    d = tmp_path_factory.mktemp("cli")
    recs = _session_frames(T0, 40001) + _session_frames(T0 + 1, 40002)
    dns_q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"
    recs.append((T0 + 2, eth(udp4("10.0.0.5", 5353, "10.0.0.53", 53, dns_q))))
    recs.sort(key=lambda r: r[0])
    (d / "mixed.pcap").write_bytes(pcap_bytes(recs))
    return d / "mixed.pcap"


@pytest.fixture(scope="module")
def printed(capture: Path) -> dict[str, str]:
    """What `dpi classify CAPTURE -f FMT` prints to standard output, per format."""
    return {fmt: dpi("classify", str(capture), "-f", fmt, cwd=capture.parent).stdout
            for fmt in ("jsonl", "csv", "table")}


def test_jsonl_records_have_exactly_the_design_fields(printed: dict[str, str]) -> None:
    recs = [json.loads(line) for line in printed["jsonl"].splitlines()]
    assert len(recs) == 3
    for r in recs:
        assert tuple(r) == RECORD_FIELDS
        assert r["packets"] == r["c2s_packets"] + r["s2c_packets"]
        assert r["bytes"] == r["c2s_bytes"] + r["s2c_bytes"]
        assert isinstance(r["metadata"], dict) and isinstance(r["protocol"], str)
    tcp_recs = [r for r in recs if r["transport"] == "TCP"]
    assert sorted(r["src_port"] for r in tcp_recs) == [40001, 40002]
    assert all(r["dst_port"] == 80 and r["packets"] == 8 and r["c2s_packets"] == 5 for r in tcp_recs)
    (udp_rec,) = [r for r in recs if r["transport"] == "UDP"]
    assert (udp_rec["src_ip"], udp_rec["dst_port"]) == ("10.0.0.5", 53)


def test_all_layers_adds_verdicts(capture: Path, tmp_path: Path) -> None:
    proc = dpi("classify", str(capture), "--format", "jsonl", "--all-layers", cwd=tmp_path)
    for line in proc.stdout.splitlines():
        r = json.loads(line)
        assert tuple(r) == RECORD_FIELDS + ("verdicts",) and isinstance(r["verdicts"], list)


def test_formats_agree(printed: dict[str, str]) -> None:
    jsonl = [json.loads(x) for x in printed["jsonl"].splitlines()]
    rows = list(csv.DictReader(io.StringIO(printed["csv"])))
    assert len(rows) == len(jsonl)
    assert list(rows[0]) == list(RECORD_FIELDS)
    for row, rec in zip(rows, jsonl):
        assert row["src_ip"] == rec["src_ip"] and int(row["src_port"]) == rec["src_port"]
        assert int(row["bytes"]) == rec["bytes"] and row["protocol"] == rec["protocol"]
        assert json.loads(row["metadata"]) == rec["metadata"]
    table = printed["table"]
    lines = [line for line in table.splitlines() if line.strip()]
    assert "protocol" in lines[0] and "client" in lines[0]
    assert len(lines) == 1 + len(jsonl)
    for rec in jsonl:
        assert any(f"{rec['src_ip']}:{rec['src_port']}" in line and rec["protocol"] in line for line in lines)
    assert "\x1b[" not in table, "no colour codes when not on a terminal"


def test_default_format_off_a_terminal_is_jsonl(capture: Path, tmp_path: Path) -> None:
    out = dpi("classify", str(capture), cwd=tmp_path).stdout
    assert len([json.loads(x) for x in out.splitlines()]) == 3


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "table"])
def test_output_file(capture: Path, printed: dict[str, str], tmp_path: Path, fmt: str) -> None:
    target = tmp_path / f"out.{fmt}"
    proc = dpi("classify", str(capture), "-f", fmt, "--output", str(target), cwd=tmp_path)
    assert proc.stdout == ""
    assert target.read_text() == printed[fmt]


def test_output_file_defaults_to_jsonl(capture: Path, tmp_path: Path) -> None:
    dpi("classify", str(capture), "-o", "records", cwd=tmp_path)
    assert len([json.loads(x) for x in (tmp_path / "records").read_text().splitlines()]) == 3


def test_directory_run_equals_per_file_runs(tmp_path: Path) -> None:
    """Files of a directory are independent even when a later file is older (idle expiry restarts)."""
    d = tmp_path / "caps"
    d.mkdir()
    (tmp_path / "idle.toml").write_text("[engine]\nidle_timeout = 5.0\n")

    def udp_flows(t0: float, ports: list[tuple[float, int]]) -> bytes:
        return pcap_bytes([(t0 + dt, eth(udp4(sport=p, payload=b"x"))) for dt, p in ports])

    # file a is newer than file b; in b, flow 1 idles out while flow 2 is still active
    (d / "a.pcap").write_bytes(udp_flows(T0 + 10_000, [(0, 1), (1, 2)]))
    (d / "b.pcap").write_bytes(udp_flows(T0, [(0, 1), (0.5, 2), (3, 2), (7, 2), (9, 2), (9.5, 3), (20, 1)]))
    per_file = []
    for name in ("a.pcap", "b.pcap"):
        out = dpi("classify", str(d / name), "-f", "jsonl", "-c", "idle.toml", cwd=tmp_path).stdout
        per_file += [json.loads(x) for x in out.splitlines()]
    together = [json.loads(x) for x in dpi("classify", str(d), "-f", "jsonl", "-c", "idle.toml",
                                           cwd=tmp_path).stdout.splitlines()]
    assert together == per_file
    b_order = [(r["src_port"], r["packets"]) for r in per_file[2:]]
    assert b_order[0] == (1, 1), "flow 1 of b.pcap ended by idle timeout before the others"


def test_flow_cap_note(tmp_path: Path) -> None:
    (tmp_path / "many.pcap").write_bytes(pcap_bytes([(T0 + i * 0.001, eth(udp4(sport=1000 + i)))
                                                     for i in range(50)]))
    (tmp_path / "cap.toml").write_text("[engine]\nmax_flows = 10\n")
    proc = dpi("classify", "many.pcap", "-f", "jsonl", "-c", "cap.toml", cwd=tmp_path)
    assert len(proc.stdout.splitlines()) == 50
    assert "40 flows were evicted" in proc.stderr


def test_quiet_suppresses_notes(tmp_path: Path) -> None:
    (tmp_path / "many.pcap").write_bytes(pcap_bytes([(T0 + i, eth(udp4(sport=1000 + i))) for i in range(5)]))
    (tmp_path / "cap.toml").write_text("[engine]\nmax_flows = 2\n")
    proc = dpi("classify", "many.pcap", "-q", "-c", "cap.toml", cwd=tmp_path)
    assert "evicted" not in proc.stderr


def test_plugins_json(tmp_path: Path) -> None:
    rows = json.loads(dpi("plugins", "--json", cwd=tmp_path).stdout)
    assert isinstance(rows, list)
    for row in rows:
        assert {"id", "distribution", "version", "priority", "status", "reason"} <= set(row)
        assert row["status"] in ("loaded", "disabled", "failed")
        if row["status"] == "failed":
            assert row["reason"]


def test_plugins_json_applies_config(tmp_path: Path) -> None:
    rows = json.loads(dpi("plugins", "--json", cwd=tmp_path).stdout)
    ids = [r["id"] for r in rows]
    if not ids:
        pytest.skip("no plugin installed in this environment")
    (tmp_path / "block.toml").write_text(f"[layers]\nblock = [{json.dumps(ids[0])}]\n")
    rows = json.loads(dpi("plugins", "--json", "-c", "block.toml", cwd=tmp_path).stdout)
    assert next(r for r in rows if r["id"] == ids[0])["status"] == "disabled"


def test_broken_plugin_command_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dpicore.commands entry point that fails to import: 'dpi --help' works, the command says why."""
    from importlib.metadata import EntryPoint

    from click.testing import CliRunner

    from dpicore import cli

    broken = EntryPoint("broken", "no_such_module_for_dpi:command", cli.COMMANDS_GROUP)
    monkeypatch.setattr(cli.PluginCommands, "_entry_points", lambda self: {"broken": broken})
    runner = CliRunner()
    listing = runner.invoke(cli.main, ["--help"])
    assert listing.exit_code == 0 and "broken" in listing.output
    result = runner.invoke(cli.main, ["broken"])
    assert result.exit_code == 2, result.exception
    assert "command 'broken' is unavailable: ModuleNotFoundError" in result.output


def test_ctrl_c_is_exit_130_with_one_line(tmp_path: Path) -> None:
    """Ctrl-C was click's "Aborted!" and exit code 1, which a script reads as "an input was damaged".
    The capture is a FIFO that never ends, so the run is surely still reading when SIGINT comes."""
    import signal

    fifo = tmp_path / "endless.pcap"
    os.mkfifo(fifo)
    proc = subprocess.Popen(DPI + ["classify", str(fifo), "-q", "-f", "jsonl"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_as_default)
    with open(fifo, "wb") as writer:  # opens once the reader has: dpi is then inside the read
        writer.write(bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000"))
        writer.flush()
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err and "Abort" not in err, err


@pytest.mark.parametrize("kind", ["pcap", "pcap.gz", "pcapng", "pcapng.gz"])
def test_a_capture_from_a_pipe(capture: Path, printed: dict[str, str], tmp_path: Path, kind: str) -> None:
    """`tcpdump -w - | dpi classify /dev/stdin`: a pipe cannot seek back after the format is read
    (it failed as "standard output: cannot write: File or stream is not seekable")."""
    from dpicore.decode import read_frames
    from tests.helpers.frames import gzip_bytes, pcapng_bytes

    data = capture.read_bytes()
    if kind.startswith("pcapng"):
        data = pcapng_bytes([([(1, None)], [(0, f.ts, f.data) for f in read_frames(str(capture))])])
    if kind.endswith(".gz"):
        data = gzip_bytes(data)
    proc = subprocess.run(DPI + ["classify", "/dev/stdin", "-f", "jsonl"], input=data,
                          cwd=tmp_path, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.decode().splitlines()) == sorted(printed["jsonl"].splitlines())


@pytest.mark.parametrize("kind", ["capture", "jsonl"])
def test_report_reads_a_pipe(capture: Path, tmp_path: Path, kind: str) -> None:
    """`... | dpi report /dev/stdin`: the sniff of the first bytes consumed them, and the capture (or
    JSONL) was then read again from a pipe that had moved on ("unknown magic", "line 1 is not JSON")."""
    data = capture.read_bytes()
    if kind == "jsonl":
        data = subprocess.run(DPI + ["classify", "-q", "-f", "jsonl", str(capture)], capture_output=True,
                              check=True).stdout
    out = tmp_path / "r.html"
    proc = subprocess.run(DPI + ["report", "-o", str(out), "/dev/stdin"], input=data, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert out.exists() and b"flows" in proc.stderr.splitlines()[-1]


def _expiring_flows(n: int, pcapng: bool = False) -> bytes:
    """A pcap (or pcapng) of ``n`` UDP flows, then one packet 700 s later: the scan it triggers ends
    the ``n`` flows (idle timeout 600 s), so their records are written before the capture ends."""
    recs = [(T0 + i * 0.001, eth(udp4("10.1.0.1", 20000 + i, "10.2.0.1", 9999, b"x" * 40))) for i in range(n)]
    recs.append((T0 + 700, eth(udp4("10.1.0.2", 30000, "10.2.0.1", 9999, b"late"))))
    if pcapng:
        return pcapng_bytes([([(1, None)], [(0, ts, data) for ts, data in recs])])
    return pcap_bytes(recs)


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_a_pipe_is_classified_as_it_arrives(tmp_path: Path, kind: str) -> None:
    """From a pipe a batch is what has arrived: the first flows' records came only once 4 MB (pcap)
    or 8,192 frames (pcapng, what dumpcap and tshark write) had, or at the end: a slow
    `tcpdump -w - | dpi classify /dev/stdin` printed nothing for minutes."""
    fifo = tmp_path / "live.pcap"
    os.mkfifo(fifo)
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(DPI + ["classify", str(fifo), "-q", "-f", "jsonl", "-l", "heuristics", "-o", str(out)],
                            cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        with open(fifo, "wb") as writer:
            writer.write(_expiring_flows(100, pcapng=kind == "pcapng"))
            writer.flush()
            deadline = time.time() + 20
            while time.time() < deadline and len(out.read_bytes() if out.exists() else b"") < 8192:
                time.sleep(0.1)  # the writer's buffer (8 KB) reaches the file while the pipe is still open
            assert out.exists() and out.read_bytes().count(b"\n") >= 10, "records before the capture ended"
            assert proc.poll() is None
    finally:
        proc.wait(timeout=20)
    assert proc.returncode == 0 and len(out.read_text().splitlines()) == 101


def test_ctrl_c_of_a_pipeline_whose_reader_is_gone_is_still_130(tmp_path: Path) -> None:
    """Ctrl-C reaches a whole pipeline (dpi ... | jq): when the reader is gone first, writing the
    records still buffered failed with EPIPE, which replaced the interruption: exit 1 ("damaged
    input") and no message.  Standard output is block-buffered here, as it is without the
    PYTHONUNBUFFERED that test environments may set."""
    import signal

    fifo = tmp_path / "endless.pcap"
    os.mkfifo(fifo)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen(DPI + ["classify", str(fifo), "-q", "-f", "jsonl", "-l", "heuristics"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, preexec_fn=sigint_as_default)
    assert proc.stdout is not None and proc.stderr is not None
    with open(fifo, "wb") as writer:
        writer.write(_expiring_flows(100))
        writer.flush()
        first = proc.stdout.read(100)  # records came: some are still in dpi's buffer
        assert first.startswith(b"{")
        time.sleep(1.0)  # every record written (the last ones to the buffer); dpi waits for more input
        proc.stdout.close()  # the reader goes
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
        err = proc.stderr.read().decode()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err, err


_NUMPY_PROBE = """
import os, sys
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "numpy":
            print("at numpy import:", os.environ.get("OPENBLAS_NUM_THREADS"))
        return None
sys.meta_path.insert(0, Watch())
import dpicore.cli
print("threads:", len(os.listdir("/proc/self/task")))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in Linux's /proc")
@pytest.mark.parametrize("asked", [None, "3"])
def test_dpi_sets_one_blas_thread_before_numpy_loads(tmp_path: Path, asked: str | None) -> None:
    """numpy's OpenBLAS spins up a thread per extra core at import, which cost every `dpi` run ~0.08 s
    of CPU on the core a -j worker needs.  The setting only works if made before numpy is imported,
    which `import dpicore` used to do at once; a user's own setting is kept."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if asked is not None:
        env["OPENBLAS_NUM_THREADS"] = asked
    proc = subprocess.run([sys.executable, "-c", _NUMPY_PROBE], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"at numpy import: {asked or '1'}" in proc.stdout.splitlines()
    if asked is None:
        assert "threads: 1" in proc.stdout.splitlines()


def test_sigterm_stops_classify_as_ctrl_c_does_with_143(tmp_path: Path) -> None:
    """SIGTERM (timeout, kill, systemd) ends `dpi classify` as Ctrl-C does: the records written so
    far are whole lines, one line says so, and the exit code is 143, what a shell reports for it."""
    import signal

    fifo = tmp_path / "endless.pcap"
    os.mkfifo(fifo)
    proc = subprocess.Popen(DPI + ["classify", str(fifo), "-q", "-f", "jsonl", "-l", "heuristics"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    with open(fifo, "wb") as writer:
        writer.write(_expiring_flows(100))
        writer.flush()
        first = proc.stdout.readline()  # records came; dpi waits for more input
        proc.send_signal(signal.SIGTERM)
        # Not communicate(): it reads the pipe itself and skips what readline() left in proc.stdout's
        # buffer (up to 8 KB, cut mid-line), which read as dpi cutting a record.  The 100 records fit
        # in the pipe, so dpi ends without anyone reading.
        proc.wait(timeout=20)
        out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 143, err
    assert err.decode().strip().splitlines()[-1] == "terminated", err
    lines = (first + out).decode().splitlines()
    assert lines and all(json.loads(line)["transport"] for line in lines)


def test_a_file_named_twice_is_read_once(tmp_path: Path) -> None:
    """Its records came twice, and with -j its damage lines once where one process printed them twice."""
    (tmp_path / "a.pcap").write_bytes(pcap_bytes([(T0, eth(udp4(payload=b"\x00" * 12)))]))
    proc = dpi("classify", "a.pcap", str(tmp_path / "a.pcap"), ".", "-q", "-f", "jsonl", cwd=tmp_path)
    assert len(proc.stdout.splitlines()) == 1


def test_classify_leaves_the_start_up_out_of_garbage_collection(capture: Path, tmp_path: Path) -> None:
    """Once its layers are loaded, `dpi classify` freezes what start-up made (modules, numpy, the plugins'
    tables), so the collections a run's allocations trigger no longer walk it (api.freeze_startup)."""
    code = ("import gc, sys\nfrom dpicore import cli\ntry:\n    cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(gc.get_freeze_count(), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, "classify", str(capture), "-o", str(tmp_path / "out.jsonl")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and (tmp_path / "out.jsonl").read_text().count("\n") == 3, proc.stderr
    assert int(proc.stderr.split()[-1]) > 10_000, proc.stderr


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_closed_standard_output_is_one_error_line_and_o_file_still_works(tmp_path: Path, jobs: str) -> None:
    """Started with standard output closed (``>&-``), Python has no sys.stdout: the records' default
    destination was an AttributeError traceback.  Now one line says to use -o, exit code 2; with -o
    the run needs no standard output."""
    capture = Path(__file__).resolve().parent / "captures" / "realclients" / "dns_high_port.pcap"

    def closed() -> None:
        os.close(1)

    base = DPI + ["classify", str(capture), "-q", "-l", "heuristics", "-j", jobs]
    proc = subprocess.run(base, cwd=tmp_path, stderr=subprocess.PIPE, text=True, timeout=120, preexec_fn=closed)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "Error: standard output is closed: write the records to a file with -o FILE"
    out = tmp_path / "records.jsonl"
    proc = subprocess.run(base + ["-o", str(out)], cwd=tmp_path, stderr=subprocess.PIPE, text=True, timeout=120,
                          preexec_fn=closed)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["protocol"] for line in out.read_text().splitlines()]


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_o_naming_one_of_the_captures_is_refused_and_the_capture_kept(tmp_path: Path, jobs: str) -> None:
    """-o opened (and emptied) its file before the captures were read: `dpi classify cap.pcap -o cap.pcap`
    destroyed the capture and then said "empty file, not a capture".  Now it is refused first, exit
    code 2, also when the capture comes from a directory or through another name (a hard link)."""
    source = Path(__file__).resolve().parent / "captures" / "realclients" / "dns_high_port.pcap"
    (tmp_path / "caps").mkdir()
    capture = tmp_path / "caps" / "cap.pcap"
    capture.write_bytes(source.read_bytes())
    os.link(capture, tmp_path / "other_name.pcap")
    cases = (([capture], capture), ([tmp_path / "caps"], capture), ([capture], tmp_path / "other_name.pcap"))
    for paths, output in cases:
        args = ["classify", *map(str, paths), "-q", "-l", "heuristics", "-j", jobs, "-o", str(output)]
        proc = subprocess.run(DPI + args, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert f"{output}: is one of the inputs" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert capture.read_bytes() == source.read_bytes()


@pytest.mark.parametrize("args", [["-l", "heuristics"], ["-l", "heuristics,ndpi"], ["-l", "heuristics", "-j", "2"]],
                         ids=["heuristics", "with-ndpi", "j2"])
def test_a_reader_gone_before_the_records_is_exit_0_not_damaged(args: list[str]) -> None:
    """`dpi classify x.pcap | true`: the reader had left before the first record.  The write that found
    it gone exited 0 ("not an error of ours"), but the flush of the records still buffered, in a
    finally, met the same EPIPE, and click turned it into exit 1, "an input was damaged", silently."""
    capture = Path(__file__).resolve().parent / "captures" / "realclients" / "dns_high_port.pcap"
    r, w = os.pipe()
    os.close(r)
    try:
        proc = subprocess.run(DPI + ["classify", str(capture), "-q", *args], stdout=w, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    finally:
        os.close(w)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
