"""The JSONL record's text: orjson writes it, and it must stay what ``json.dumps`` wrote before.

Consumers may compare output files byte for byte across versions (and
``-j``/``--cluster`` runs against one-process runs), so the serialiser
swap must not change a byte: ASCII only, DEL escaped, any integer size.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpicore.model import Flow, FlowKey, Verdict, parse_ip
from dpicore.output import RecordWriter, _clean, flow_record, jsonl_line


def reference(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


# JSON values as flow_record produces them (after _clean): str keys, plain scalars, lists, dicts.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_jsonl_line_is_json_dumps(value: object) -> None:
    assert jsonl_line(value) == reference(value)


def test_the_cases_orjson_writes_differently() -> None:
    for value in ({"banner": "caf\u00e9"}, {"ua": "a\x7fb"}, {"n": 2**64}, {"s": "\u2028"},
                  {"ctl": "".join(map(chr, range(32)))}, {"ts": 1e-06, "c": 2.4e-05, "d": -3.5e-9},
                  [1e-4, 1e-10, 1e16, 1.5e300, 0.1]):
        line = jsonl_line(value)
        assert line == reference(value)
        assert line.isascii()


def _flow(metadata: dict) -> Flow:
    client, server = parse_ip("2001:db8::10"), parse_ip("2001:db8::1")
    flow = Flow(key=FlowKey(6, 0, server, 443, client, 40000), client=client, client_port=40000, server=server,
                server_port=443, first_seen=1.5, last_seen=2.25)
    flow.verdict = Verdict("TLS", "heuristics", 0.9, app="Google", metadata=metadata)
    flow.errors.append("x: boom")
    return flow


def test_flow_record_cleans_metadata_and_keeps_key_order() -> None:
    flow = _flow({"sni": "example.org", "raw": b"\x01\xff", "alpn": {"h2", "http/1.1"}, 7: ("a", b"b")})
    record = flow_record(flow)
    assert list(record["metadata"]) == ["sni", "raw", "alpn", "7", "app", "errors"]
    assert record["metadata"] == {"sni": "example.org", "raw": "01ff", "alpn": ["h2", "http/1.1"],
                                  "7": ["a", "62"], "app": "Google", "errors": ["x: boom"]}
    assert (record["src_ip"], record["dst_ip"]) == ("2001:db8::10", "2001:db8::1")
    out = io.StringIO()
    writer = RecordWriter(out, "jsonl")
    writer.write(record)
    assert json.loads(out.getvalue()) == record
    assert out.getvalue() == reference(record) + "\n"


def test_plain_metadata_is_copied_into_the_record() -> None:
    """Metadata of text keys and plain values (the usual verdict's) goes into the record as it is, but
    as a copy: a caller changing the record must not change the flow's verdict."""
    metadata = {"sni": "example.org", "port": 443, "resumed": False, "alpn": None}
    flow = _flow(metadata)
    record = flow_record(flow)
    assert record["metadata"] == {**metadata, "app": "Google", "errors": ["x: boom"]}
    record["metadata"]["sni"] = "changed"
    assert flow.verdict.metadata["sni"] == "example.org"
    assert _clean(metadata) == metadata and _clean(metadata) is not metadata
    assert _clean({"n": {"k": "v"}})["n"] == {"k": "v"}


def test_rounded_is_round() -> None:
    """model.rounded must give round()'s float (and sign of zero) for every input: capture times of
    microsecond and nanosecond captures, confidences, random bit patterns, ties, the edges."""
    import math
    import random
    import struct

    from dpicore.model import rounded

    rnd = random.Random(11)
    values = [0.0, -0.0, 0.5e-6, 1.5e-6, 2.5e-6, 0.12345, 0.00005, 1e-7, -1e-7, 2.0 ** 51 / 1e6, 2.0 ** 60,
              float("inf"), float("-inf"), 1.0000005, 1600000000.0000005, 0.95, 0.3333333333]
    for _ in range(200_000):
        values.append(rnd.randrange(2 ** 31) + rnd.randrange(10 ** 6) * 1e-6)
        values.append(rnd.randrange(2 ** 31) + rnd.randrange(10 ** 9) * 1e-9)
        values.append(rnd.random())
        bits = struct.unpack("d", struct.pack("Q", rnd.getrandbits(64)))[0]
        values.append(bits)
    for x in values:
        for digits in (4, 6):
            got, want = rounded(x, digits), round(x, digits)
            if math.isnan(want):
                assert math.isnan(got), x
            else:
                assert got == want and math.copysign(1, got) == math.copysign(1, want), (x, digits, got, want)


def _strict(line: str) -> object:
    """JSON as the standard has it: NaN and Infinity are not JSON."""
    def refuse(constant: str) -> object:
        raise ValueError(f"{constant} is not JSON")
    return json.loads(line, parse_constant=refuse)


def test_metadata_nan_sets_of_mixed_types_and_cycles_are_written_as_json() -> None:
    """What a third-party layer may put in its metadata: NaN and infinities (once written raw as NaN
    when the record took json's path: non-ASCII text, an integer beyond 64 bits), a set of mixed
    types (sorting it raised), a dict that contains itself (recursed without end)."""
    looped: dict = {"name": "loop"}
    looped["self"] = looped
    metadata = {"ratio": float("nan"), "top": float("inf"), "deep": [float("-inf"), 0.5], "mixed": {1, "a"},
                "looped": looped, "banner": "caf\u00e9", "big": 2**70}
    record = flow_record(_flow(metadata))
    meta = _strict(jsonl_line(record))["metadata"]  # type: ignore[index]
    assert meta["ratio"] is None and meta["top"] is None and meta["deep"] == [None, 0.5]
    assert meta["mixed"] == ["a", 1] and meta["banner"] == "caf\u00e9" and meta["big"] == 2**70
    depth, node = 0, meta["looped"]
    while isinstance(node, dict):
        depth, node = depth + 1, node["self"]
    assert isinstance(node, str) and depth < 100, "cut to text at a bounded depth"


def test_the_table_shows_what_traffic_wrote_as_text() -> None:
    """A Host header is the sender's text: "[/x]" is not rich markup (it raised MarkupError, a traceback
    instead of the table), and escape sequences are shown escaped, not sent to the terminal."""
    out = io.StringIO()
    writer = RecordWriter(out, "table")
    for host in ("[/x][bold]b", "evil\x1b[2J\x1b[31mRED\x07"):
        flow = _flow({"host": host})
        writer.write(flow_record(flow))
    writer.close()
    text = out.getvalue()
    assert "[/x][bold]b" in text and "evil\\x1b[2J\\x1b[31mRED\\x07" in text
    assert "\x1b" not in text and "\x07" not in text


def test_csv_cells_never_start_a_formula() -> None:
    """A third-party layer's protocol or category name that starts like a formula ("=HYPERLINK(...)")
    would run in the spreadsheet that opens the CSV: such cells start with a quote; the metadata
    column (JSON) and the JSONL record are as the layer wrote them."""
    import csv

    out = io.StringIO()
    writer = RecordWriter(out, "csv")
    names = ("=HYPERLINK(\"http://x\")", "+1", "-2", "@SUM(A1)", "\tTab", "HTTP")
    for name in names:
        flow = _flow({"host": "=1+1"})
        flow.verdict = Verdict(name, "@layer", 0.9, category="-cat", metadata={"host": "=1+1"})
        writer.write(flow_record(flow))
        assert flow_record(flow)["protocol"] == name
    writer.close()
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["protocol"] for r in rows] == ["'" + n for n in names[:-1]] + ["HTTP"]
    assert {r["source"] for r in rows} == {"'@layer"} and {r["category"] for r in rows} == {"'-cat"}
    assert {json.loads(r["metadata"])["host"] for r in rows} == {"=1+1"}


class _Interrupted(io.RawIOBase):
    """A pipe whose writer a signal interrupts once while it blocks (the handler raises): a test double
    for our own error path, RecordWriter's, not for an integration."""

    def __init__(self, cap: int = 1 << 30) -> None:
        self.data = bytearray()
        self.interrupt = False
        #: Bytes a call takes at most, as a pipe takes what fits: a write can be partly done.
        self.cap = cap
        self.calls = 0
        #: The call that raises (counted from the first), as a signal does in a write that waits.
        self.fail_at = 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.calls += 1
        if self.interrupt or self.calls == self.fail_at:
            self.interrupt = False
            raise KeyboardInterrupt
        n = min(len(b), self.cap)
        self.data += bytes(b[:n])
        return n


def _interrupted_writes(write: Callable[[Any], None], items: list[Any],
                        arm: Callable[[int], None] = lambda i: None) -> int:
    """``write`` each item (``arm(i)`` first: it may set the pipe to interrupt that write), as a caller
    goes on after a Ctrl-C it caught; how many writes the interruption raised out of."""
    interrupted = 0
    for i, item in enumerate(items):
        arm(i)
        try:
            write(item)
        except KeyboardInterrupt:
            interrupted += 1
    return interrupted


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_write_ctrl_c_interrupts_loses_no_record_and_cuts_no_line(fmt: str) -> None:
    """Ctrl-C or SIGTERM while stdout blocks raised inside the write, and the text layer's buffer lost
    the lines it held: `dpi classify` then left half a record.  Now the output passes each write on
    (write_through, as the CLI opens it) and the writer keeps a line it did not take for the next write
    or its close: every record is written once, whole."""
    raw = _Interrupted()
    # A buffer smaller than a line: every write reaches the pipe, so each chosen one is interrupted.
    out = io.TextIOWrapper(io.BufferedWriter(raw, buffer_size=64), encoding="utf-8", newline="",
                           write_through=True)
    writer = RecordWriter(out, fmt)
    records = [{"transport": "tcp", "src_port": i, "metadata": {"pad": "x" * 40}} for i in range(40)]

    def arm(i: int) -> None:
        raw.interrupt = i in (5, 17, 39)

    assert _interrupted_writes(writer.write, records, arm) == 3
    writer.close()
    text = raw.data.decode()
    if fmt == "jsonl":
        got = sorted(json.loads(line)["src_port"] for line in text.splitlines())
    else:
        got = sorted(int(row["src_port"]) for row in csv.DictReader(io.StringIO(text)))
    assert got == list(range(40))


@pytest.mark.parametrize("fail_at", [1, 2, 3, 7, 15, 22])
def test_jsonl_chunks_from_workers_interrupted_lose_no_record_and_cut_no_line(fail_at: int) -> None:
    """The -j parent's write_lines: chunks of many JSONL lines (ASCII), handed over in pieces of
    ASCII_PIECE characters, each of which fits a pipe's 4 KB buffer (the smallest Python gives a pipe);
    an interrupted write takes none of its piece, which is written with the next chunk or at close."""
    from dpicore.output import ASCII_PIECE, jsonl_line

    raw = _Interrupted(cap=4096)  # a full pipe takes 4 KB at a time: a larger write can be cut
    raw.fail_at = fail_at
    out = io.TextIOWrapper(io.BufferedWriter(raw, buffer_size=4096), encoding="utf-8", newline="",
                           write_through=True)
    writer = RecordWriter(out, "jsonl")
    chunks = ["".join(jsonl_line({"src_port": c * 1000 + i, "pad": "y" * (i % 300)}) + "\n" for i in range(200))
              for c in range(4)]
    assert _interrupted_writes(writer.write_lines, chunks) == 1
    writer.close()
    got = [json.loads(line)["src_port"] for line in raw.data.decode().splitlines()]
    assert sorted(got) == sorted(c * 1000 + i for c in range(4) for i in range(200))
    assert raw.calls > len(raw.data) // ASCII_PIECE >= 20  # pieces, not whole chunks


@pytest.mark.parametrize("after", range(1, 12))
def test_a_line_longer_than_the_output_buffer_is_not_written_twice(after: int) -> None:
    """A write larger than the output's buffer goes to the pipe in parts, so a signal could come after
    some were taken: the writer hands over pieces that fit the buffer and keeps only those not taken."""
    raw = _Interrupted(cap=1000)
    out = io.TextIOWrapper(io.BufferedWriter(raw, buffer_size=4096), encoding="utf-8", newline="",
                           write_through=True)
    writer = RecordWriter(out, "jsonl")
    records = [{"src_port": i, "metadata": {"pad": "é" * (3000 + 1000 * i)}} for i in range(6)]
    for i, record in enumerate(records):
        if i % 2:
            raw.fail_at = raw.calls + after  # some parts of the line may have gone out
        try:
            writer.write(record)
        except KeyboardInterrupt:
            pass
    writer.write_lines('{"src_port":6}\n')
    writer.close()
    lines = raw.data.decode().splitlines()
    assert [json.loads(line)["src_port"] for line in lines] == list(range(7))
    assert [len(json.loads(line)["metadata"]["pad"]) for line in lines[:6]] == [3000 + 1000 * i for i in range(6)]


def test_the_cli_output_passes_each_write_on_where_a_write_can_wait(tmp_path: Path) -> None:
    """A pipe's writes can wait for the reader (and a signal then raises inside one): written through.
    A file's cannot: it keeps its buffer."""
    import os

    from dpicore.cli import _open_writer, _pass_writes_on

    out, _ = _open_writer(str(tmp_path / "records.jsonl"), "jsonl", False)
    try:
        assert not out.write_through  # type: ignore[attr-defined]
    finally:
        out.close()
    r, w = os.pipe()
    with open(w, "w", encoding="utf-8") as pipe_out, open(r, "rb"):
        assert not pipe_out.write_through
        _pass_writes_on(pipe_out)
        assert pipe_out.write_through
    # Python run unbuffered (PYTHONUNBUFFERED, -u) writes standard output through: a file's is buffered again.
    with open(tmp_path / "stdout", "wb", buffering=0) as raw, io.TextIOWrapper(raw, write_through=True) as unbuffered:
        _pass_writes_on(unbuffered)
        assert not unbuffered.write_through


def test_records_to_a_file_from_unbuffered_python_are_written_in_blocks(tmp_path: Path) -> None:
    """PYTHONUNBUFFERED made `dpi classify > file` one write system call per record (counted by the kernel:
    /proc/self/io's syscw at exit); the records stay the same."""
    import os
    import subprocess
    import sys

    from tests.helpers.frames import eth, udp4, write_pcap

    try:
        with open("/proc/self/io") as io_stats:
            assert "syscw:" in io_stats.read()
    except (OSError, AssertionError):
        pytest.skip("this kernel does not count a process's write calls (/proc/self/io, task I/O accounting)")
    capture = tmp_path / "dns.pcap"
    write_pcap(capture, [eth(udp4(sport=20000 + i, payload=bytes(12))) for i in range(400)])
    probe = ("import sys\nfrom dpicore.cli import main\ntry:\n    main(sys.argv[1:])\nfinally:\n"
             "    sys.stdout.flush()\n    print(open('/proc/self/io').read(), file=sys.stderr)\n")
    records, writes = [], []
    for unbuffered in (True, False):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
        if unbuffered:
            env["PYTHONUNBUFFERED"] = "1"
        out = tmp_path / f"records-{unbuffered}.jsonl"
        with open(out, "wb") as fh:
            proc = subprocess.run([sys.executable, "-c", probe, "classify", "-q", "-f", "jsonl", "-l", "heuristics",
                                   str(capture)], stdout=fh, stderr=subprocess.PIPE, env=env, text=True)
        assert proc.returncode == 0, proc.stderr
        records.append(out.read_bytes())
        writes.append(int(proc.stderr.split("syscw:")[1].split()[0]))
    assert records[0] == records[1] and records[0].count(b"\n") == 400
    assert writes[0] < 40, writes  # 400 records: one call each before
    assert abs(writes[0] - writes[1]) <= 5, writes


def test_format_ip_is_the_same_text_from_its_table_and_for_any_bytes_like() -> None:
    """format_ip keeps the texts it made (addresses recur across records); a repeat, a bytearray or a
    memoryview of the same address, and a table that filled up and was cleared all give the same text."""
    from dpicore import model
    from dpicore.model import format_ip

    v4, v6 = parse_ip("192.0.2.77"), parse_ip("2001:db8::1:0:0:7")
    for _ in range(2):
        assert format_ip(v4) == "192.0.2.77" and format_ip(v6) == "2001:db8::1:0:0:7"
    assert format_ip(bytearray(v4)) == "192.0.2.77" and format_ip(memoryview(v6)) == "2001:db8::1:0:0:7"
    for i in range(model.ADDRESS_TEXTS + 10):  # fills the table: it is cleared, not grown
        format_ip(i.to_bytes(4, "big"))
    assert len(model._ADDRESS_TEXT) <= model.ADDRESS_TEXTS
    assert format_ip(v4) == "192.0.2.77" and format_ip((7).to_bytes(4, "big")) == "0.0.0.7"


def test_a_flow_reads_transport_vlan_and_ip_version_from_its_key_and_format_ip_wants_bytes() -> None:
    """proto, vlan and ip_version are no fields of Flow any more but read from its key and addresses, and
    cannot be given; format_ip refuses an int, which bytes() would have made into zero bytes."""
    from dpicore.model import format_ip

    client, server = parse_ip("192.0.2.1"), parse_ip("192.0.2.2")
    key = FlowKey(17, 3, client, 5353, server, 53)
    with pytest.raises(TypeError):
        Flow(key=key, proto=17, client=client, client_port=5353, server=server, server_port=53,  # type: ignore[call-arg]
             first_seen=1.0, last_seen=2.0)
    flow = Flow(key=key, client=client, client_port=5353, server=server, server_port=53, first_seen=1.0,
                last_seen=2.0)
    assert (flow.proto, flow.vlan, flow.ip_version) == (17, 3, 4)
    assert flow_record(flow)["transport"] == "UDP" and flow_record(flow)["vlan"] == 3
    with pytest.raises(TypeError):
        format_ip(4)  # type: ignore[arg-type]
