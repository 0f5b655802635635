"""Bad input through the real CLI (a subprocess per case): one clear line
naming the file (and packet number), every flow before the damage still
written, exit codes 0/1/2, and never a traceback.

Lines the installed environment adds on its own ("warning: plugin X
unavailable" for a plugin whose library is missing) are not about the input
and are left out before counting lines.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from dpicore.decode import CaptureSource
from tests.helpers.frames import PSH, ACK, eth, gzip_bytes, pcap_bytes, pcapng_bytes, tcp4, udp4

DPI = [sys.executable, "-m", "dpicore.cli"]
T0 = 1_600_000_000.0


def dpi(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(DPI + list(args), cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    return proc


def problems(proc: subprocess.CompletedProcess) -> list[str]:
    """stderr lines about the input (without the environment's plugin warnings)."""
    return [line for line in proc.stderr.splitlines()
            if line.strip() and not line.startswith(("warning: plugin ", "warning: no classifier layer"))]


def records(proc: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.splitlines()]


def flows(n: int, t0: float = T0) -> list[tuple[float, bytes]]:
    """n one-packet UDP flows (distinct source ports) as pcap records."""
    return [(t0 + i, eth(udp4(sport=20000 + i, payload=b"q%d" % i))) for i in range(n)]


def test_missing_file(tmp_path: Path) -> None:
    proc = dpi("classify", "nope.pcap", "-f", "jsonl", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = problems(proc)
    assert "nope.pcap" in line and "no such file" in line


def test_missing_file_among_good_ones_is_reported_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "good.pcap").write_bytes(pcap_bytes(flows(2)))
    proc = dpi("classify", "good.pcap", "missing.pcapng", "-f", "jsonl", cwd=tmp_path)
    assert proc.returncode == 2
    (line,) = problems(proc)
    assert "missing.pcapng" in line


def test_directory_without_captures(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no captures here\n")
    proc = dpi("classify", "empty", "-f", "jsonl", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = problems(proc)
    assert "empty" in line and "no capture files" in line


@pytest.mark.parametrize("name, content, message", [
    ("random.pcap", bytes(range(7, 250)) * 3, "not a pcap or pcapng"),
    ("text.pcap", b"GET / HTTP/1.1\r\nHost: example\r\n\r\n" * 10, "not a pcap or pcapng"),
    ("empty.pcap", b"", "empty file"),
    ("fake.pcap.gz", b"\x1f\x8b\x08" + b"\x00" * 40, "cannot read"),
])
def test_not_a_capture(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    (tmp_path / name).write_bytes(content)
    proc = dpi("classify", name, "-f", "jsonl", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stdout == ""
    (line,) = problems(proc)
    assert name in line and message in line


def test_not_a_capture_next_to_a_good_one(tmp_path: Path) -> None:
    (tmp_path / "a_good.pcap").write_bytes(pcap_bytes(flows(3)))
    (tmp_path / "b_bad.pcap").write_bytes(b"\x00" * 100)
    proc = dpi("classify", str(tmp_path), "-f", "jsonl", cwd=tmp_path)
    assert proc.returncode == 1
    assert len(records(proc)) == 3
    (line,) = problems(proc)
    assert "b_bad.pcap" in line


@pytest.mark.parametrize("fmt", ["pcap", "pcapng", "pcap.gz"])
def test_capture_cut_mid_record(tmp_path: Path, fmt: str) -> None:
    good = flows(12)
    if fmt == "pcapng":
        data = pcapng_bytes([([(1, None)], [(0, ts, f) for ts, f in good])])
    else:
        data = pcap_bytes(good)
    data = data[:-7]                                   # the 12th record loses its last bytes
    if fmt.endswith(".gz"):
        data = gzip_bytes(data)
    (tmp_path / f"cut.{fmt}").write_bytes(data)
    proc = dpi("classify", f"cut.{fmt}", "-f", "jsonl", cwd=tmp_path)
    assert proc.returncode == 1
    recs = records(proc)
    assert len(recs) == 11, "every flow before the damage is written"
    assert sorted(r["src_port"] for r in recs) == list(range(20000, 20011))
    (line,) = problems(proc)
    assert f"cut.{fmt}" in line and "packet 12" in line and "cut short" in line


def test_unknown_link_type(tmp_path: Path) -> None:
    (tmp_path / "lt.pcap").write_bytes(pcap_bytes(flows(3), linktype=147))
    proc = dpi("classify", "lt.pcap", "-f", "jsonl", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stdout == ""
    (line,) = problems(proc)
    assert "lt.pcap" in line and "link type 147" in line


def test_unknown_link_type_on_one_pcapng_interface(tmp_path: Path) -> None:
    good = flows(4)
    data = pcapng_bytes([([(1, None), (147, None)], [(i % 2, ts, f) for i, (ts, f) in enumerate(good)])])
    (tmp_path / "mixed.pcapng").write_bytes(data)
    proc = dpi("classify", "mixed.pcapng", "-f", "jsonl", cwd=tmp_path)
    assert len(records(proc)) == 2
    (line,) = problems(proc)
    assert "mixed.pcapng" in line and "2 packets with unsupported link type 147" in line


def test_garbage_packets_inside_a_valid_capture(tmp_path: Path) -> None:
    recs = flows(5)
    recs.insert(2, (T0 + 2.5, eth(b"\x45\x00\x00\x10" + b"\x00" * 30)))        # IPv4 total length < header
    recs.insert(4, (T0 + 3.5, b"\x01\x02\x03"))                               # shorter than Ethernet
    (tmp_path / "garbage.pcap").write_bytes(pcap_bytes(recs))
    proc = dpi("classify", "garbage.pcap", "-f", "jsonl", cwd=tmp_path)
    assert proc.returncode == 1
    assert len(records(proc)) == 5
    lines = problems(proc)
    assert len(lines) == 2
    assert lines[0].startswith("garbage.pcap: packet 3: cannot decode")
    assert lines[1].startswith("garbage.pcap: packet 5: cannot decode")


@pytest.mark.parametrize("v6", [False, True], ids=["ip-in-ip", "ipv6-in-ipv6"])
def test_a_thousand_nested_tunnels_cost_one_packet(tmp_path: Path, v6: bool) -> None:
    """A frame of 1,000 nested IP headers once ended the run with a RecursionError and no record."""
    inner = udp4(payload=b"inner")
    for _ in range(1000):
        if v6:
            inner = struct.pack("!IHBB", 0x60000000, len(inner), 41, 64) + b"\x20" * 32 + inner
        else:
            inner = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(inner), 1, 0, 64, 4, 0, b"\xc0\0\2\1",
                                b"\xc0\0\2\2") + inner
    recs = flows(3)
    recs.insert(1, (T0 + 0.5, eth(inner, 0x86DD if v6 else 0x0800)))
    (tmp_path / "nested.pcap").write_bytes(pcap_bytes(recs))
    proc = dpi("classify", "nested.pcap", "-f", "jsonl", cwd=tmp_path)
    assert proc.returncode == 1 and len(records(proc)) == 3
    (line,) = problems(proc)
    assert line.startswith("nested.pcap: packet 2: cannot decode") and "nested IP headers" in line


@pytest.mark.parametrize("cut", [8, 12, 5000], ids=["trailer", "trailer and last bytes", "mid-stream"])
def test_gzip_stream_cut_short_keeps_every_record_before_the_break(tmp_path: Path, cut: int) -> None:
    """A .pcap.gz whose compressed stream breaks off: every packet decompressed before the break is
    classified, as the frame-by-frame reader gives them (the batched reader once lost the whole
    4 MB read the break fell in: no record at all for a small file)."""
    data = gzip_bytes(pcap_bytes(flows(3000)))
    (tmp_path / "cut.pcap.gz").write_bytes(data[:-cut])
    readable = len(list(CaptureSource(tmp_path / "cut.pcap.gz")))
    assert readable > (2900 if cut < 100 else 1000)
    proc = dpi("classify", "cut.pcap.gz", "-f", "jsonl", cwd=tmp_path)
    assert proc.returncode == 1
    assert len(records(proc)) == readable, "one record per one-packet flow read before the break"
    (line,) = problems(proc)
    assert f"packet {readable + 1}" in line and "unreadable data" in line


def test_many_garbage_packets_are_summarised(tmp_path: Path) -> None:
    recs = flows(3) + [(T0 + 10 + i, b"\xff" * 8) for i in range(50)]
    (tmp_path / "many.pcap").write_bytes(pcap_bytes(recs))
    proc = dpi("classify", "many.pcap", "-f", "jsonl", cwd=tmp_path)
    assert proc.returncode == 1 and len(records(proc)) == 3
    lines = problems(proc)
    assert len(lines) == 4 and "50 packets could not be decoded" in lines[-1]


def test_good_capture_exits_zero(tmp_path: Path) -> None:
    (tmp_path / "good.pcap").write_bytes(pcap_bytes(flows(4)))
    proc = dpi("classify", "good.pcap", "-f", "jsonl", cwd=tmp_path)
    assert proc.returncode == 0 and len(records(proc)) == 4 and problems(proc) == []


@pytest.mark.parametrize("content, message", [
    ("[engine\nidle_timeout = 1\n", "not valid TOML"),
    ("[engine]\nidle_timeout = 'soon'\n", "engine.idle_timeout must be a float"),
    ("[engine]\nflow_cap = 5\n", "unknown key engine.flow_cap"),
    ("[engine]\nmax_flows = 0\n", "must be positive"),
    ("[layers]\nenable = 'heuristics'\n", "must be a list of layer ids"),
    ("[layers]\nrequire = ['no-such-layer']\n", "no-such-layer: not installed"),
    ("[engine]\nidle_timeout = nan\n", "the timeouts must be positive"),       # once split flows at random
    ("[engine]\nmax_payloads = 0\n", "engine.max_payloads and the timeouts must be positive"),
    ("[engine]\nmax_flows = 2.7\n", "engine.max_flows must be an integer"),    # once read as 2
    ("[layers.heuristics]\npriority = true\n", "layers.heuristics.priority must be an integer"),
    ("[engnie]\nmax_flows = 10\n", "unknown table [engnie]"),             # once silently the defaults
    ("[layer]\nenable = ['ml']\n", "unknown table [layer]"),              # once every layer ran
    ("max_flows = 10\n", "unknown key max_flows"),
])
def test_bad_config_file(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "good.pcap").write_bytes(pcap_bytes(flows(1)))
    (tmp_path / "dpi.toml").write_text(content)
    proc = dpi("classify", "good.pcap", "--config", "dpi.toml", "-f", "jsonl", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = problems(proc)
    assert message in line
    if "not installed" not in message:
        assert "dpi.toml" in line


def test_missing_config_file(tmp_path: Path) -> None:
    (tmp_path / "good.pcap").write_bytes(pcap_bytes(flows(1)))
    proc = dpi("classify", "good.pcap", "--config", "absent.toml", cwd=tmp_path)
    assert proc.returncode == 2
    (line,) = problems(proc)
    assert "absent.toml" in line


def test_required_layer_missing_via_option(tmp_path: Path) -> None:
    (tmp_path / "good.pcap").write_bytes(pcap_bytes(flows(1)))
    proc = dpi("classify", "good.pcap", "--layers", "nonexistent", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = problems(proc)
    assert "nonexistent: not installed" in line


def test_unknown_format(tmp_path: Path) -> None:
    (tmp_path / "good.pcap").write_bytes(pcap_bytes(flows(1)))
    proc = dpi("classify", "good.pcap", "--format", "xml", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "'xml' is not one of" in proc.stderr


def test_unwritable_output(tmp_path: Path) -> None:
    (tmp_path / "good.pcap").write_bytes(pcap_bytes(flows(1)))
    proc = dpi("classify", "good.pcap", "-o", str(tmp_path / "no" / "such" / "dir.jsonl"), cwd=tmp_path)
    assert proc.returncode == 2
    (line,) = problems(proc)
    assert "dir.jsonl" in line


def test_truncated_tcp_session_still_classified(tmp_path: Path) -> None:
    """Damage after a complete request: the flow is written with what was seen."""
    req = eth(tcp4(flags=PSH | ACK, payload=b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
    data = pcap_bytes([(T0, req), (T0 + 1, req)])
    data = data[:-3]
    (tmp_path / "t.pcap").write_bytes(data)
    proc = dpi("classify", "t.pcap", "-f", "jsonl", cwd=tmp_path)
    (rec,) = records(proc)
    assert proc.returncode == 1 and rec["packets"] == 1 and rec["dst_port"] == 80


def test_pcap_header_claims_nonsense_record_length(tmp_path: Path) -> None:
    data = bytearray(pcap_bytes(flows(3)))
    struct.pack_into("<I", data, 24 + 16 + len(flows(1)[0][1]) + 8, 10**9)   # 2nd record's captured length
    (tmp_path / "corrupt.pcap").write_bytes(bytes(data))
    proc = dpi("classify", "corrupt.pcap", "-f", "jsonl", cwd=tmp_path)
    assert proc.returncode == 1 and len(records(proc)) == 1
    (line,) = problems(proc)
    assert "corrupt.pcap" in line and "packet 2" in line


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a device whose writes fail)")
@pytest.mark.parametrize("jobs", ["1", "2"])
@pytest.mark.parametrize("to_file", [True, False], ids=["-o", "stdout"])
def test_records_that_cannot_be_written_are_one_error_line(tmp_path: Path, jobs: str, to_file: bool) -> None:
    """A full disk (here /dev/full) while writing the records: one line and exit code 2, as an
    unwritable -o at the start, not a traceback."""
    (tmp_path / "good.pcap").write_bytes(pcap_bytes(flows(300)))
    args = ["classify", "good.pcap", "-f", "jsonl", "-j", jobs]
    if to_file:
        proc = dpi(*args, "-o", "/dev/full", cwd=tmp_path)
    else:
        with open("/dev/full", "w") as full:
            proc = subprocess.run(DPI + args, cwd=tmp_path, stdout=full, stderr=subprocess.PIPE, text=True,
                                  timeout=120)
        assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    assert proc.returncode == 2
    (line,) = problems(proc)
    where = "/dev/full" if to_file else "standard output"
    assert f"{where}: cannot write: No space left on device" in line


@pytest.mark.parametrize("address, reason", [("xyz://127.0.0.1:1", "unknown address scheme"),
                                             ("127.0.0.1", "missing port number")])
def test_a_cluster_address_dask_cannot_parse_is_refused_at_once(tmp_path: Path, address: str, reason: str) -> None:
    """No connection is tried (nothing leaves the machine), and no half-made Dask client lingers for
    20 s at exit printing a traceback."""
    pytest.importorskip("distributed", reason="the cluster needs Dask distributed (dpicore[cluster])")
    (tmp_path / "good.pcap").write_bytes(pcap_bytes(flows(2)))
    proc = dpi("classify", "good.pcap", "--cluster", address, "-f", "jsonl", cwd=tmp_path)
    assert proc.returncode == 2 and "Exception ignored" not in proc.stderr
    (line,) = problems(proc)
    assert f"not a Dask scheduler address: {address}" in line and reason in line


def test_a_file_name_s_control_characters_do_not_reach_the_terminal(tmp_path: Path) -> None:
    """Problem lines and errors name the file: an OSC sequence in its name set the terminal's title
    (even through a pipe, which click only cleans of CSI sequences)."""
    name = "bad\x1b]0;PWNED\x07.pcap"
    (tmp_path / name).write_bytes(pcap_bytes(flows(3))[:-5])
    proc = dpi("classify", name, "-f", "jsonl", cwd=tmp_path)
    missing = dpi("classify", name + ".absent", "-f", "jsonl", cwd=tmp_path)
    for p in (proc, missing):
        assert "\x1b" not in p.stderr and "\x07" not in p.stderr
        assert "bad\\x1b]0;PWNED\\x07.pcap" in p.stderr
    assert proc.returncode == 1 and missing.returncode == 2


@pytest.mark.parametrize("content", ["[layers]\nenable = ['heuristcs', 'heuristics']\n",
                                     "[layers.heuristcs]\npriority = 99\n",
                                     "[layers]\nblock = ['heuristcs']\n"])
def test_a_misspelt_layer_id_in_the_config_is_named(tmp_path: Path, content: str) -> None:
    """A layer id no installed plugin has was silently ignored (or showed only as every flow Unknown)."""
    (tmp_path / "good.pcap").write_bytes(pcap_bytes(flows(1)))
    (tmp_path / "dpi.toml").write_text(content)
    proc = dpi("classify", "good.pcap", "--config", "dpi.toml", "-f", "jsonl", cwd=tmp_path)
    assert proc.returncode == 0 and len(records(proc)) == 1
    assert "layer 'heuristcs', which is not installed (installed: " in proc.stderr
