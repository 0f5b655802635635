"""Flow records and the writers that print them (JSONL, CSV, table).

The JSONL record is a stable contract (DESIGN.md): exactly these fields,
``src_*`` is the client, unknown flows say ``"protocol": "Unknown"``, and
``--all-layers`` adds a ``verdicts`` list.
"""

from __future__ import annotations

import csv
import json
import math
import re
from typing import IO, Any, Callable, Iterable

import orjson

from .model import Flow, format_ip, rounded, transport_name
from .protocols import UNKNOWN

RECORD_FIELDS: tuple[str, ...] = (
    "transport", "src_ip", "src_port", "dst_ip", "dst_port", "vlan", "first_seen", "last_seen",
    "packets", "bytes", "c2s_packets", "s2c_packets", "c2s_bytes", "s2c_bytes",
    "protocol", "source", "confidence", "category", "metadata",
)

FORMATS = ("table", "jsonl", "csv")

#: First characters that make a spreadsheet read a CSV cell as a formula (OWASP's list).  Only a
#: plugin's names can start so (protocol, source, category: traffic's own text is in the metadata
#: column, which is JSON and starts with "{"), and a formula runs when the analyst opens the file.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


#: Values JSON takes as they are (exact types: a str subclass or an IntEnum goes through _clean, and
#: so does a float, which may be NaN).
_PLAIN = frozenset((str, int, bool, type(None)))


#: Metadata nested deeper than this is written as text (a layer's structure that refers to itself
#: would otherwise recurse without end).
MAX_DEPTH = 64


def _clean(value: Any, depth: int = 0) -> Any:
    """JSON-safe metadata: bytes as hex, sets as sorted lists, NaN and infinities as None, everything
    else as text."""
    if type(value) is dict and depth < MAX_DEPTH:
        for k, v in value.items():
            if type(k) is not str or type(v) not in _PLAIN:
                break
        else:  # text keys, plain values: a verdict's usual metadata, copied as it is (half the time)
            return value.copy()
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= MAX_DEPTH:
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {k if type(k) is str else str(k): v if type(v) in _PLAIN else _clean(v, depth + 1)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v, depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [_clean(v, depth + 1) for v in value]
        try:
            return sorted(items)
        except TypeError:  # of several types: in the order of their JSON text
            return sorted(items, key=json.dumps)
    return str(value)


def printable(text: str) -> str:
    """``text`` with every character that is not printable written as a Python escape (\\x1b): what
    traffic or a file name puts on a terminal must not drive it."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


#: What only orjson writes: exponents of one digit (1e-7; json writes 1e-07) and 1e-5..1e-4 in
#: decimal (0.00002; json writes 2e-05).  Floats of 1e-9..1e-4 only; a string that happens to
#: contain these bytes just takes the json path too.  Looked for as substrings first: bytes' own
#: search skips a record in a fraction of what the regular expression engine spends stepping
#: through it (callgrind: ~2,600 instructions per record and pattern), and the exponent's "e-"
#: is rare in a record, whose floats are times, confidences and the odd metadata value.
_ORJSON_ONLY_EXPONENT = re.compile(rb"e-[1-9](?![0-9])")
_ORJSON_ONLY_DECIMAL = b"0.0000"


def jsonl_line(record: Any) -> str:
    """``record`` as one line of JSON, as ``json.dumps(record, separators=(",", ":"))`` writes it.

    orjson takes a quarter of json's time (the record and its JSON were a
    tenth of a run on short flows), but it writes non-ASCII text and DEL
    as they are, where json escapes them, and a few small floats in another
    notation; such records (rare: a banner with such bytes, a timestamp
    near the epoch) and integers beyond 64 bits go through json, so the
    output stays ASCII and identical to what json writes.  One difference
    is kept: NaN and infinities (a layer's broken confidence) become
    ``null``, valid JSON, where json wrote ``NaN``.
    """
    try:
        data = orjson.dumps(record)
    except TypeError:  # orjson.JSONEncodeError: an integer beyond 64 bits
        return json.dumps(record, separators=(",", ":"))
    # find(), not ``in``: a bytes ``in`` first tries its operand as an integer (a byte value), and
    # CPython 3.11 builds and drops a TypeError with its message each time it is not one.
    if (data.isascii() and data.find(b"\x7f") < 0 and data.find(_ORJSON_ONLY_DECIMAL) < 0
            and (data.find(b"e-") < 0 or _ORJSON_ONLY_EXPONENT.search(data) is None)):
        return data.decode("ascii")
    return json.dumps(record, separators=(",", ":"))


def flow_record(flow: Flow, all_layers: bool = False) -> dict[str, Any]:
    v = flow.verdict
    metadata: dict[str, Any] = _clean(v.metadata) if v is not None else {}
    if v is not None and v.app and v.app != v.protocol:
        metadata.setdefault("app", v.app)
    rare = flow._rare  # the field: reading Flow.errors would make an empty list
    if type(rare) is not int and rare._errors:
        metadata["errors"] = _clean(rare._errors)
    client, client_port, server, server_port = flow.ends()
    record: dict[str, Any] = {
        "transport": transport_name(flow.key.proto),  # Flow.proto and .vlan are properties reading the key
        "src_ip": format_ip(client),
        "src_port": client_port,
        "dst_ip": format_ip(server),
        "dst_port": server_port,
        "vlan": flow.key.vlan,
        "first_seen": rounded(flow.first_seen, 6),
        "last_seen": rounded(flow.last_seen, 6),
        "packets": flow.c2s_packets + flow.s2c_packets,
        "bytes": flow.c2s_bytes + flow.s2c_bytes,
        "c2s_packets": flow.c2s_packets,
        "s2c_packets": flow.s2c_packets,
        "c2s_bytes": flow.c2s_bytes,
        "s2c_bytes": flow.s2c_bytes,
        "protocol": v.protocol if v is not None and v.protocol else UNKNOWN,
        "source": v.source if v is not None else None,
        "confidence": rounded(v.confidence, 4) if v is not None else 0.0,
        "category": v.category if v is not None else None,
        "metadata": metadata,
    }
    if all_layers:
        record["verdicts"] = [_clean(x.to_dict()) for x in flow.verdicts]
    return record


def _cell(value: Any) -> Any:
    """A CSV cell that a spreadsheet shows as text: a leading quote before what would start a formula."""
    if type(value) is str and value.startswith(_FORMULA_START):
        return "'" + value
    return value


#: The most characters RecordWriter hands its output at once (see RecordWriter._put): 4 KB even in
#: UTF-8, a pipe's smallest buffer and the most it writes whole (PIPE_BUF).
PIECE = 1024
#: The same for text known to be ASCII (JSONL, which ``jsonl_line`` keeps ASCII): 4 KB.
ASCII_PIECE = 4096


class _Lines:
    """The file the csv module writes a row to: RecordWriter._put."""

    def __init__(self, put: Callable[[str], None]) -> None:
        self.write = put


class RecordWriter:
    """Streams records to ``out`` in one of :data:`FORMATS`.

    JSONL and CSV are written as flows end, so memory does not grow with the
    capture; the table is laid out at :meth:`close` (it is meant for people,
    and column widths need every row).
    """

    def __init__(self, out: IO[str], fmt: str = "jsonl", all_layers: bool = False) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
        self.out = out
        self.fmt = fmt
        self.all_layers = all_layers
        self.count = 0
        self._rows: list[dict[str, Any]] = []
        self._csv: Any = None
        #: Lines a Ctrl-C or SIGTERM stopped the output from taking (see _put).
        self._held = ""

    def write(self, record: dict[str, Any]) -> None:
        if self.fmt == "jsonl":
            line = jsonl_line(record) + "\n"
            # Counted once its line is made, as _put takes it: a Ctrl-C while the line was made (the
            # longest step) counted a record that was never written.
            self.count += 1
            self._put(line)
            return
        self.count += 1
        if self.fmt == "csv":
            if self._csv is None:
                fields = list(RECORD_FIELDS) + (["verdicts"] if self.all_layers else [])
                self._csv = csv.DictWriter(_Lines(self._put), fieldnames=fields, extrasaction="ignore")
                self._csv.writeheader()
            row = {k: _cell(v) for k, v in record.items()}
            row["metadata"] = jsonl_line(record["metadata"])
            if "verdicts" in row:
                row["verdicts"] = jsonl_line(record["verdicts"])
            self._csv.writerow(row)
        else:
            self._rows.append(record)

    def write_all(self, records: Iterable[dict[str, Any]]) -> None:
        for r in records:
            self.write(r)

    def write_lines(self, lines: str) -> None:
        """Whole lines of JSONL the caller made with :func:`jsonl_line` (``-j``: the workers' records), as
        :meth:`write` puts them; ASCII, so in pieces of ASCII_PIECE characters, a quarter of the write
        calls (a `-j 2` run's parent made 32,000 of them to a pipe on the real-client benchmark input)."""
        self._put(lines, ASCII_PIECE)

    def _put(self, lines: str, piece: int = PIECE) -> None:
        """Hand whole lines to the output, after any it did not take before.

        A Ctrl-C or SIGTERM while the output blocks (a slow reader on a pipe) raises inside the write.
        An output that passes each write on at once (``write_through``, as the CLI sets up) has then
        taken none of that write (its buffer keeps what it had), if the write fits in its buffer: the
        lines go in pieces of at most ``piece`` characters (PIECE: 4 KB even in UTF-8, at most PIPE_BUF),
        and those not taken are kept (``_held``, from the first statement on: the signal's exception
        can come at any call here) for the next write or :meth:`close`.  So what is written stays
        whole lines, none lost but the one a caller had in hand.  Left: a signal that comes while a
        write that does not block is under way raises once that write has returned, and its piece is
        written again; pieces end after a line (but for a line longer than a piece), so that repeats
        whole lines.  Exact bookkeeping would need the signal handlers to wait for the write.
        """
        if self._held:
            lines = self._held + lines
        self._held = lines
        start = 0
        try:
            end = len(lines)
            while start < end:
                stop = start + piece
                if stop < end:  # cut after a line, so that a piece written twice (below) is whole lines
                    cut = lines.rfind("\n", start, stop)
                    if cut >= start:
                        stop = cut + 1
                self.out.write(lines[start:stop])
                start = stop
        except KeyboardInterrupt:
            self._held = lines[start:]
            raise
        self._held = ""

    def close(self) -> None:
        if self.fmt == "table":
            self._table()
        if self._held:
            self._put("")
        self.out.flush()

    def _table(self) -> None:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        def cell(value: str) -> Text:
            # Traffic writes these (a Host header, an SNI): as plain Text, not rich markup ("[/x]" in a
            # Host header raised MarkupError), and with control characters shown escaped, not sent to
            # the terminal (ESC sequences in a Host header cleared the screen).
            return Text(printable(value))

        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        for col in ("transport", "client", "server", "pkts", "bytes", "protocol", "source", "conf", "detail"):
            table.add_column(col, justify="right" if col in ("pkts", "bytes", "conf") else "left")
        for r in self._rows:
            md = r["metadata"]
            detail = next((str(md[k]) for k in ("host", "sni", "query", "banner", "app") if md.get(k)), "")
            table.add_row(*map(cell, (r["transport"], f"{r['src_ip']}:{r['src_port']}", f"{r['dst_ip']}:{r['dst_port']}",
                          str(r["packets"]), str(r["bytes"]), r["protocol"], r["source"] or "-",
                          f"{r['confidence']:.2f}", detail[:40])))
        Console(file=self.out, width=200, no_color=not self.out.isatty()).print(table)
