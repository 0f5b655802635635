"""`dpi live` on loopback while real clients talk to real local servers.

Needs root (capture rights) and the client/server programs that
scripts/install.sh installs (curl, dig, dnsmasq, openssl); skips with the
reason otherwise.  Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.helpers.procs import killed_after, sigint_as_default

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root (CI runs as root)"),
]

DPI = [sys.executable, "-m", "dpicore.cli"]


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing programs {missing}: run scripts/install.sh")


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen | None = None) -> None:
    """Wait for the listener without connecting to it: a probe connection would use up
    `openssl s_server -naccept 1`'s only accept, and would add a stray flow to the capture."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    try:
        import capturelab
    finally:
        sys.path.pop(0)
    capturelab.wait_tcp(port, proc=proc)


class LiveRun:
    """`dpi live` in the background; records are timestamped as they arrive."""

    def __init__(self, bpf: str, duration: float) -> None:
        self.proc = subprocess.Popen(DPI + ["live", "-i", "lo", "--bpf", bpf, "--duration", str(duration),
                                            "-f", "jsonl", "--summary-every", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.records: list[tuple[float, dict]] = []
        self.ready = threading.Event()
        self.stderr: list[str] = []
        threading.Thread(target=self._read_out, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()
        if not self.ready.wait(15):
            self.proc.kill()
            raise RuntimeError("dpi live did not start: " + "".join(self.stderr))

    def _read_out(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.records.append((time.time(), json.loads(line)))

    def _read_err(self) -> None:
        assert self.proc.stderr
        for line in self.proc.stderr:
            self.stderr.append(line)
            if line.startswith("listening on"):
                self.ready.set()

    def finish(self) -> list[dict]:
        self.proc.wait(timeout=30)
        time.sleep(0.2)
        assert self.proc.returncode == 0, "".join(self.stderr)
        return [r for _, r in self.records]


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[int]:
    port = _free_port()
    (tmp_path / "index.html").write_text("hello\n")
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait()


def test_live_http_reported_within_a_second_of_close(http_server: int) -> None:
    _need("curl")
    run = LiveRun(f"tcp port {http_server}", duration=6)
    subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{http_server}/index.html"], check=True,
                   timeout=10)
    closed = time.time()
    deadline = closed + 1.0
    while time.time() < deadline and not run.records:
        time.sleep(0.02)
    assert run.records, "no flow record within 1 s of the connection closing"
    arrived, first = run.records[0]
    assert arrived - closed <= 1.0
    records = run.finish()
    http = [r for r in records if r["dst_port"] == http_server]
    assert len(http) == 1
    assert http[0]["protocol"] == "HTTP"
    assert http[0]["metadata"]["path"] == "/index.html"
    assert http[0]["c2s_packets"] > 0 and http[0]["s2c_packets"] > 0


def test_live_dns_and_tls(tmp_path: Path) -> None:
    _need("dig", "dnsmasq", "openssl")
    dns_port, tls_port = _free_port(socket.SOCK_DGRAM), _free_port()
    dnsmasq = subprocess.Popen(["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                                f"--port={dns_port}", "--listen-address=127.0.0.1", "--bind-interfaces",
                                "--address=/example.test/127.0.0.5"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=example.test"], check=True, capture_output=True)
    server = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{tls_port}", "-key", str(key), "-cert",
                               str(cert), "-quiet", "-naccept", "1"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(tls_port, server)
        run = LiveRun(f"port {dns_port} or port {tls_port}", duration=5)
        out = subprocess.run(["dig", "@127.0.0.1", "-p", str(dns_port), "example.test", "A", "+tries=1",
                              "+time=2"], capture_output=True, text=True, timeout=10)
        assert "127.0.0.5" in out.stdout
        subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{tls_port}", "-servername",
                        "example.test"], input="", capture_output=True, text=True, timeout=10)
        records = run.finish()
    finally:
        dnsmasq.terminate()
        server.terminate()
        dnsmasq.wait()
        server.wait()
    by_port = {r["dst_port"]: r for r in records}
    assert by_port[dns_port]["protocol"] == "DNS"
    assert by_port[dns_port]["metadata"]["query"] == "example.test"
    assert by_port[tls_port]["protocol"] == "TLS"
    assert by_port[tls_port]["metadata"].get("sni") == "example.test"


def test_live_write_pcap_keeps_the_frames(http_server: int, tmp_path: Path) -> None:
    _need("curl")
    pcap = tmp_path / "kept.pcap"
    proc = subprocess.Popen(DPI + ["live", "-i", "lo", "--bpf", f"tcp port {http_server}", "--duration", "3",
                                   "-q", "-f", "jsonl", "--write-pcap", str(pcap)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{http_server}/"], check=True, timeout=10)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    live = [json.loads(line) for line in out.splitlines()]
    offline = subprocess.run(DPI + ["classify", "-q", "-f", "jsonl", str(pcap)], capture_output=True, text=True,
                             timeout=60)
    assert offline.returncode == 0, offline.stderr
    again = [json.loads(line) for line in offline.stdout.splitlines()]
    assert [(r["src_port"], r["protocol"], r["packets"]) for r in live] == \
        [(r["src_port"], r["protocol"], r["packets"]) for r in again]


def test_live_unknown_interface_is_a_clear_error() -> None:
    proc = subprocess.run(DPI + ["live", "-i", "nope0", "--duration", "1"], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2
    assert "nope0: no such interface" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_live_bad_filter_is_a_clear_error() -> None:
    proc = subprocess.run(DPI + ["live", "-i", "lo", "--bpf", "tcp port nonsense((", "--duration", "1"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "invalid capture filter" in proc.stderr


def test_live_write_pcap_to_an_unwritable_place_is_a_clear_error(tmp_path: Path) -> None:
    """Once pcapy's PcapError as a traceback and exit 1."""
    target = tmp_path / "no-such-dir" / "x.pcap"
    proc = subprocess.run(DPI + ["live", "-i", "lo", "--duration", "1", "--write-pcap", str(target)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{target}: cannot write the capture" in proc.stderr


def test_live_o_and_write_pcap_naming_one_file_is_refused(tmp_path: Path) -> None:
    """-o and --write-pcap on one file (here through another spelling of its path) would write records
    and packets over each other: refused before the capture starts, the file left as it was."""
    target = tmp_path / "both.pcap"
    target.write_bytes(b"kept")
    other = tmp_path / "." / "both.pcap"
    proc = subprocess.run(DPI + ["live", "-i", "lo", "--duration", "1", "--write-pcap", str(target), "-o", str(other)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "-o and --write-pcap name the same file" in proc.stderr
    assert target.read_bytes() == b"kept"


def test_live_summary_comes_while_no_flow_ends() -> None:
    """--summary-every came only after a record was written: with flows that stay open (a flood,
    long connections) or none at all, nothing was printed until the end."""
    proc = subprocess.run(DPI + ["live", "-i", "lo", "--bpf", "udp port 9", "--duration", "3.5",
                                 "--summary-every", "1", "-o", os.devnull], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    periodic = [l for l in proc.stderr.splitlines() if re.match(r"\d\d:\d\d:\d\d: \d+ packets", l)]
    assert len(periodic) >= 2, proc.stderr


def test_live_counts_what_the_kernel_dropped() -> None:
    """A capture that reads too slowly loses frames in the kernel: the count must reach the user (the
    final summary line, LiveSource.dropped), as tcpdump's "packets dropped by kernel" does.  Here
    200,000 datagrams to a port nobody listens on are sent on loopback while nobody reads the capture
    (its ring buffer is a few MB), then the source is read."""
    from dpicore.live import LiveSource

    port = _free_port(socket.SOCK_DGRAM)
    source = LiveSource("lo", bpf=f"udp dst port {port}", duration=0.5)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(200_000):
                try:
                    s.sendto(b"x" * 64, ("127.0.0.1", port))
                except ConnectionRefusedError:  # the ICMP of the previous datagram
                    pass
        got = sum(1 for pkt in source if pkt is not None)
    finally:
        source.close()
    assert got < 200_000, "the premise: the ring buffer overflowed"
    # On loopback the kernel puts each frame in the ring twice (sent and received; libpcap discards
    # the outgoing copy), so the count can exceed what was sent: only "some were lost" is sure.
    assert source.dropped is not None and source.dropped > 0, (got, source.dropped)


def test_live_final_summary_says_what_the_kernel_dropped() -> None:
    proc = subprocess.run(DPI + ["live", "-i", "lo", "--bpf", "udp port 9", "--duration", "0.5",
                                 "-o", os.devnull], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^stopped: \d+ packets, 0 dropped by the kernel, ", proc.stderr, re.M), proc.stderr


def test_live_second_ctrl_c_says_what_was_not_written(tmp_path: Path) -> None:
    """The first Ctrl-C ends the capture and writes every open flow; a second one during that (which
    takes seconds for tens of thousands of flows) stopped with click's "Aborted!" and exit 1, not
    saying how many flows were lost."""
    import signal

    out = tmp_path / "flows.jsonl"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        proc = subprocess.Popen(DPI + ["live", "-i", "lo", "--bpf", f"udp and src port {port}", "-o", str(out),
                                       "--summary-every", "0.3"], stderr=subprocess.PIPE, text=True,
                                preexec_fn=sigint_as_default)
        assert proc.stderr is not None
        with killed_after(proc, 120):  # every read below ends, whatever dpi does
            lines: list[str] = []
            while not (line := proc.stderr.readline()).startswith("listening on"):  # after plugin warnings
                assert line, "dpi live ended before it listened"
            flows = 40_000
            for i in range(flows):  # one flow per destination port; nobody listens
                try:
                    s.sendto(b"q", ("127.0.0.1", 1024 + i))
                except ConnectionRefusedError:
                    pass
            seen, before = 0, -1
            deadline = time.time() + 30
            while (seen != before or seen < 10_000) and time.time() < deadline:  # until dpi has read what came
                line = proc.stderr.readline()
                lines.append(line)
                m = re.match(r"\d\d:\d\d:\d\d: (\d+) packets", line)
                if m:
                    seen, before = int(m.group(1)), seen
            proc.send_signal(signal.SIGINT)
            # The second Ctrl-C once dpi is writing the open flows: a fixed pause let a fast run write
            # all 40,000 (about half a second) and exit 0 before it came.
            deadline = time.time() + 20
            while not (out.exists() and out.stat().st_size) and time.time() < deadline:
                time.sleep(0.005)
            proc.send_signal(signal.SIGINT)
            rest = proc.stderr.read()
        proc.wait(timeout=30)
    assert proc.returncode == 130, lines + [rest]
    m = re.search(r"^interrupted: (\d+) open flows not written \((\d+) written\)$", rest, re.M)
    assert m and int(m.group(1)) > 0, rest
    written = len(out.read_text().splitlines())
    # One flow may be in hand, taken from the table but not yet written, when the second Ctrl-C comes.
    assert written == int(m.group(2)) and written + int(m.group(1)) >= seen - 1, (written, m.groups(), seen)


def test_live_first_ctrl_c_while_a_record_is_written_still_writes_the_open_flows(http_server: int) -> None:
    """With a slow reader dpi waits in the write of a record, outside the capture loop, and a first
    Ctrl-C there was taken for the second: the open flows were dropped ("interrupted: N open flows not
    written", exit 130) instead of written."""
    import signal

    proc = subprocess.Popen(DPI + ["live", "-i", "lo", "--bpf", f"tcp port {http_server}", "-f", "jsonl",
                                   "--summary-every", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_as_default)
    assert proc.stdout is not None and proc.stderr is not None
    with killed_after(proc, 120):  # every read below ends, whatever dpi does
        while not (line := proc.stderr.readline()).startswith("listening on"):
            assert line, "dpi live ended before it listened"
        held = []
        for i in range(400):  # ~0.2 MB of records: more than the pipe holds while nobody reads it
            s = socket.create_connection(("127.0.0.1", http_server))
            s.sendall(b"GET /%d HTTP/1.0\r\n\r\n" % i)
            if i % 40 == 0:
                held.append(s)  # stays open: written only when the capture ends
                continue
            while s.recv(65536):
                pass
            s.close()
        deadline = time.time() + 20
        wchan = Path(f"/proc/{proc.pid}/wchan")
        while "pipe" not in wchan.read_text() and time.time() < deadline:
            time.sleep(0.1)
        assert "pipe" in wchan.read_text(), "dpi waits in a write to the pipe"
        proc.send_signal(signal.SIGINT)
        records = [json.loads(l) for l in proc.stdout]
        err = proc.stderr.read()
    proc.wait(timeout=30)
    for s in held:
        s.close()
    assert proc.returncode == 0, err
    assert "not written" not in err and re.search(r"^stopped: ", err, re.M), err
    paths = {r["metadata"].get("path") for r in records}
    # Every connection's record, the held ones too; the one being written when the signal came may be
    # cut (CPython drops a flush's text that a signal interrupts).
    assert len({f"/{i}" for i in range(400)} - paths) <= 1, sorted({f"/{i}" for i in range(400)} - paths)[:5]


def test_live_sigterm_writes_the_open_flows_and_completes_the_pcap(http_server: int, tmp_path: Path) -> None:
    """SIGTERM (timeout, kill, systemd, docker stop) stops `dpi live` as Ctrl-C does.  It used to end
    the process at once: exit 143, no record of the open connection, and a 0-byte --write-pcap file
    (libpcap's buffer never flushed)."""
    import signal

    pcap = tmp_path / "kept.pcap"
    proc = subprocess.Popen(DPI + ["live", "-i", "lo", "--bpf", f"tcp port {http_server}", "-f", "jsonl",
                                   "--summary-every", "0", "--write-pcap", str(pcap)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    while not (line := proc.stderr.readline()).startswith("listening on"):
        assert line, "dpi live ended before it listened"
    with socket.create_connection(("127.0.0.1", http_server)) as s:  # stays open until dpi has stopped
        s.sendall(b"GET /open HTTP/1.1\r\nHost: x\r\n\r\n")
        s.recv(65536)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["metadata"].get("path") for r in records] == ["/open"], records
    assert re.search(r"^stopped: ", err, re.M), err
    offline = subprocess.run(DPI + ["classify", "-q", "-f", "jsonl", str(pcap)], capture_output=True, text=True,
                             timeout=60)
    assert offline.returncode == 0, offline.stderr
    assert [json.loads(line)["protocol"] for line in offline.stdout.splitlines()] == ["HTTP"]


@pytest.mark.parametrize("args", [["-i", "nope0"], ["-i", "lo", "--bpf", "tcp port"],
                                  ["-i", "lo", "--write-pcap", "/nonexistent-dir/x.pcap"]])
def test_a_live_usage_error_leaves_an_existing_output_file_alone(tmp_path: Path, args: list[str]) -> None:
    """The -o file was opened (emptied) before the interface: a mistyped interface or filter erased
    the records of an earlier run."""
    out = tmp_path / "earlier.jsonl"
    out.write_text('{"earlier": "records"}\n')
    proc = subprocess.run(DPI + ["live", *args, "--duration", "1", "-o", str(out)], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert out.read_text() == '{"earlier": "records"}\n'


def test_classify_live_leaves_the_capture_files_close_timeout_alone() -> None:
    """Its 0.5 s close timeout stayed on the Classifier's flow table: a capture classified afterwards
    split differently (webex.pcap: 63 flows instead of 57)."""
    from dpicore import Classifier

    with Classifier(layers="heuristics") as dpi:
        before = dpi.engine.table.close_timeout
        list(dpi.classify_live("lo", bpf="udp port 9", duration=0.2))
        assert dpi.engine.table.close_timeout == before
