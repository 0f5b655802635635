"""`dpi report`: one self-contained HTML file, rendered for real in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dpicore.report import ReportError, read_records, render

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/install.sh)")
DPI = [sys.executable, "-m", "dpicore.cli"]

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]


def chromium(page: Path, tmp: Path, *args: str) -> tuple[str, list[str]]:
    """Run Chromium on a local page; returns (stdout, console messages)."""
    assert CHROMIUM
    proc = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}", *args,
                           page.as_uri()], capture_output=True, text=True, timeout=120)
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    failed_loads = [line for line in proc.stderr.splitlines() if "net::ERR_" in line]
    return proc.stdout, console + failed_loads


def _make_report(corpus: Path, tmp_path: Path, *extra: str) -> Path:
    out = tmp_path / "report.html"
    pcaps = [corpus / "pcap" / n for n in ("dns-google-nsid.pcapng", "ftp.pcap", "sites.pcapng")]
    proc = subprocess.run(DPI + ["report", *map(str, pcaps), "-o", str(out), *extra], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


def test_report_is_self_contained(corpus: Path, tmp_path: Path) -> None:
    page = _make_report(corpus, tmp_path).read_text()
    assert "<script" not in page
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page), "report fetches from the network"
    assert "@import" not in page and "url(http" not in page
    for heading in ("Protocols", "Traffic over time", "Top talkers", "Unknown flows", "Layers"):
        assert f"<h2>{heading}" in page


@needs_chromium
def test_report_renders_in_chromium_with_charts_and_no_console_errors(corpus: Path, tmp_path: Path) -> None:
    report = _make_report(corpus, tmp_path, "--all-layers")
    dom, console = chromium(report, tmp_path, "--dump-dom")
    assert console == [], console
    svgs = re.findall(r"<svg.*?</svg>", dom, flags=re.S)
    assert len(svgs) >= 4
    for svg in svgs:
        assert len(re.findall(r"<path", svg)) > 5, "a chart drew nothing"
    png = tmp_path / "shot.png"
    chromium(report, tmp_path, "--window-size=1200,2400", f"--screenshot={png}")
    import matplotlib.image

    pixels = matplotlib.image.imread(png)
    assert pixels.shape[0] >= 2000 and pixels.std() > 0.05, "the screenshot is blank"


@needs_chromium
def test_console_check_catches_script_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><script>throw new Error("kaput")</script></body></html>')
    _, console = chromium(bad, tmp_path, "--dump-dom")
    assert any("kaput" in line for line in console)


def test_report_from_jsonl_shows_layer_agreement(tmp_path: Path) -> None:
    base = {"transport": "TCP", "src_ip": "192.0.2.1", "dst_ip": "198.51.100.1", "vlan": 0, "first_seen": 10.0,
            "last_seen": 12.0, "packets": 10, "bytes": 1000, "c2s_packets": 5, "s2c_packets": 5,
            "c2s_bytes": 400, "s2c_bytes": 600, "category": None, "metadata": {}}
    records = [
        dict(base, src_port=1000, dst_port=80, protocol="HTTP", source="heuristics", confidence=0.95,
             verdicts=[{"protocol": "HTTP", "source": "heuristics"}, {"protocol": "HTTP", "source": "ndpi"}]),
        dict(base, src_port=1001, dst_port=443, protocol="TLS", source="heuristics", confidence=0.95,
             verdicts=[{"protocol": "TLS", "source": "heuristics"}, {"protocol": "QUIC", "source": "ndpi"}]),
        dict(base, src_port=1002, dst_port=9, protocol="Unknown", source=None, confidence=0.0, verdicts=[]),
    ]
    path = tmp_path / "flows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    page = render(read_records(path))
    assert "50.0%" in page  # heuristics and ndpi agree on one of the two flows both named
    assert "QUIC" in page and "Where layers disagree" in page
    assert "198.51.100.1:9" in page  # the unknown flow is listed


def test_report_rejects_files_that_are_not_records(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"hello": 1}\n')
    with pytest.raises(ReportError, match="line 1"):
        read_records(path)
    proc = subprocess.run(DPI + ["report", str(path), "-o", str(tmp_path / "r.html")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "not a dpicore flow record" in proc.stderr and "Traceback" not in proc.stderr


_BASE = {"transport": "TCP", "src_ip": "192.0.2.1", "src_port": 1000, "dst_ip": "198.51.100.1", "dst_port": 80,
         "vlan": 0, "first_seen": 10.0, "last_seen": 12.0, "packets": 10, "bytes": 1000, "protocol": "HTTP",
         "source": "heuristics", "confidence": 0.9, "category": None, "metadata": {}}


@pytest.mark.parametrize("change, problem", [
    ({"bytes": "10"}, "bytes is '10'"), ({"bytes": None}, "bytes is None"), ({"protocol": None}, "protocol is None"),
    ({"first_seen": float("nan")}, "out of range"), ({"last_seen": 1e300}, "out of range"),
    ({"last_seen": 5.0}, "last_seen before first_seen"), ({"verdicts": ["x"]}, "list of verdicts"),
], ids=lambda x: str(x)[:24])
def test_a_record_the_report_cannot_use_names_its_line(tmp_path: Path, change: dict, problem: str) -> None:
    """Odd JSONL records (found by fuzzing: each was a KeyError, TypeError, OverflowError or
    ZeroDivisionError traceback) are one error naming the file and the line."""
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps(_BASE) + "\n" + json.dumps(dict(_BASE, **change)) + "\n")
    with pytest.raises(ReportError, match=f"line 2 is not a dpicore flow record.*{re.escape(problem)}"):
        read_records(path)


def test_names_and_times_that_charts_and_calendars_cannot_hold_are_drawn_as_text() -> None:
    """A protocol name with $...$ (matplotlib's math; a plugin's or a model's name) failed to parse or
    drew math, a 1 MB one took minutes; a capture time of 2**63 s raised OverflowError."""
    records = [dict(_BASE, protocol="a$b$c"), dict(_BASE, protocol="$\\frac{", src_port=1001),
               dict(_BASE, protocol="x" * 1_000_000, src_port=1002),
               dict(_BASE, first_seen=2.0 ** 63, last_seen=2.0 ** 63, src_port=1003)]
    page = render(records)
    assert "s after 1970-01-01" in page and "a$b$c" in page


@pytest.mark.parametrize("line, problem", [
    (b"\xff\xfe{}", "not UTF-8"), (b"[" * 100_000, "RecursionError"),
    (json.dumps({k: v for k, v in _BASE.items() if k != "transport"}).encode(), "transport is None"),
    (json.dumps(dict(_BASE, bytes=10 ** 400)).encode(), "out of range"),
    (json.dumps(dict(_BASE, src_port="80")).encode(), "src_port is '80'"),
], ids=["latin", "deep", "no-transport", "huge-bytes", "str-port"])
def test_lines_that_were_tracebacks_name_their_line(tmp_path: Path, line: bytes, problem: str) -> None:
    """Each was a traceback (UnicodeDecodeError, RecursionError, KeyError, OverflowError) found by a
    review helper."""
    path = tmp_path / "x.jsonl"
    path.write_bytes(json.dumps(_BASE).encode() + b"\n" + line + b"\n")
    with pytest.raises(ReportError, match=f"line 2 .*{re.escape(problem)}"):
        read_records(path)
    skipped: list[str] = []
    assert len(read_records(path, skipped)) == 1 and len(skipped) == 1 and problem in skipped[0]


def test_a_cut_last_line_costs_that_line_not_the_report(tmp_path: Path) -> None:
    """A killed `dpi classify` leaves its last line cut: the report skipped nothing and was not written
    (exit 1 with another file, 2 alone).  Now the line is named and skipped, the report written, exit
    1 as for a damaged capture; an empty file is damaged input too (it was silently ignored)."""
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps(dict(_BASE, src_port=1000 + i)) + "\n" for i in range(3)))
    cut = tmp_path / "cut.jsonl"
    cut.write_text(good.read_text()[:-40])
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    out = tmp_path / "r.html"
    proc = subprocess.run(DPI + ["report", str(good), str(cut), str(empty), "-o", str(out)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{cut}: line 3 is not JSON" in proc.stderr and f"{empty}: empty file" in proc.stderr
    assert "wrote" in proc.stderr and "5 flows" in proc.stderr and out.exists()


@pytest.mark.parametrize("target", ["/dev/full", "no-such-dir/r.html"])
def test_a_report_that_cannot_be_written_is_one_line(tmp_path: Path, target: str) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(_BASE) + "\n")
    proc = subprocess.run(DPI + ["report", str(good), "-o", target], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith(
        "No space left on device" if target == "/dev/full" else "No such file or directory")


def test_a_report_over_its_own_input_is_refused_and_the_input_kept(tmp_path: Path) -> None:
    """`dpi report records.jsonl -o records.jsonl` replaced the records with their report."""
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(_BASE) + "\n")
    before = good.read_bytes()
    proc = subprocess.run(DPI + ["report", str(good), "-o", str(good)], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{good}: is one of the inputs" in proc.stderr
    assert good.read_bytes() == before


def test_text_with_no_utf_8_is_written_not_a_traceback(tmp_path: Path) -> None:
    """A lone surrogate (the valid JSON escape \\ud800 in an address, an undecodable byte in --title)
    ended the report with a UnicodeEncodeError and left -o emptied (regression fuzzing)."""
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps(dict(_BASE, src_ip="\ud800")) + "\n")
    out = tmp_path / "r.html"
    proc = subprocess.run(DPI + ["report", str(path), "-o", str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    out.read_text(encoding="utf-8")  # valid UTF-8, the surrogate written as "?"
