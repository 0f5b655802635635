"""A self-contained HTML report of classified flows.

Charts are drawn by matplotlib as inline SVG: the file opens offline, has no
scripts, and can be mailed or archived as one file.  The report is built
from flow records (the JSONL schema), so it can be made from captures
(classified on the spot) or from the output of an earlier ``dpi classify``.

Traffic over time spreads each flow's bytes evenly over its lifetime,
because records keep per-flow totals, not per-packet times.
"""

from __future__ import annotations

import html
import io
import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from .output import printable

UNKNOWN = "Unknown"
TOP_PROTOCOLS = 12
TOP_TALKERS = 15
MAX_UNKNOWN_ROWS = 200


class ReportError(Exception):
    """The report cannot be made (e.g. matplotlib missing); the message says what to do."""


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ReportError("dpi report needs matplotlib: pip install 'dpicore[report]'") from exc
    return plt


def read_records(path: str | Path, skipped: list[str] | None = None) -> list[dict[str, Any]]:
    """Records from a JSONL file written by ``dpi classify --format jsonl``.

    A line that is not such a record (not UTF-8, not JSON, a field the report reads missing or odd)
    raises ReportError naming it; with ``skipped`` it is skipped and a line naming it is appended
    there instead, as `dpi classify` reports a damaged packet and goes on (the last line of a file
    whose writer was killed is cut short).  A file none of whose lines is a record raises either way:
    it is not a record file.
    """
    out = []
    bad: list[str] = []
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            problem = None
            try:
                line = raw.decode("utf-8").strip()
                if not line:
                    continue
                record = json.loads(line)
            except UnicodeDecodeError:
                problem = "is not UTF-8 text"
            except json.JSONDecodeError as exc:
                problem = f"is not JSON: {exc.msg}"
            except (ValueError, RecursionError) as exc:  # a number of 4,300+ digits; nesting too deep
                problem = f"is not JSON a record can be: {type(exc).__name__}"
            else:
                unfit = _unfit(record)
                if unfit is not None:
                    problem = f"is not a dpicore flow record ({unfit})"
            if problem is None:
                out.append(record)
                continue
            message = f"{path}: line {number} {problem}"
            if skipped is None:
                raise ReportError(message)
            bad.append(message)
    if bad and not out:
        raise ReportError(bad[0] if len(bad) == 1 else f"{bad[0]} (and {len(bad) - 1} more lines; no record)")
    if skipped is not None:
        skipped.extend(bad)
    return out


def _unfit(record: Any) -> str | None:
    """What in a JSONL line the report cannot use (None: nothing): the fields it reads, of the types
    `dpi classify` writes, times finite and in order."""
    if not isinstance(record, dict):
        return "not an object"
    for key, kinds in (("protocol", (str,)), ("transport", (str,)), ("src_ip", (str,)), ("dst_ip", (str,)),
                       ("bytes", (int,)), ("packets", (int,)), ("first_seen", (int, float)),
                       ("last_seen", (int, float))):
        value = record.get(key)
        if not isinstance(value, kinds) or isinstance(value, bool):
            return f"{key} is {_short(value)}"
    for key in ("src_port", "dst_port"):
        value = record.get(key, ())
        if not (value is None or type(value) is int):  # None: ICMP and other portless transports
            return f"{key} is {_short(value)}"
    if not all(0 <= record[k] < 2 ** 63 for k in ("bytes", "packets")) or not all(
            math.isfinite(record[k]) and abs(record[k]) < 1e12 for k in ("first_seen", "last_seen")):
        return "bytes, packets or times out of range"
    if record["last_seen"] < record["first_seen"]:
        return "last_seen before first_seen"
    if not isinstance(record.get("source"), (str, type(None))):
        return f"source is {record.get('source')!r}"
    verdicts = record.get("verdicts", [])
    if not isinstance(verdicts, list) or not all(
            isinstance(v, dict) and isinstance(v.get("source"), str) and isinstance(v.get("protocol"), str)
            for v in verdicts):
        return "verdicts is not a list of verdicts (source and protocol text)"
    return None


def _short(value: Any) -> str:
    """A field's value for a message: a 10**400 or a megabyte of text is not repeated whole."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10 ** 30 else "a number too large"
    return printable(text[:60] + ("..." if len(text) > 60 else ""))


def _utc(ts: float) -> str:
    """A capture time as UTC text; one no calendar holds (a pcapng stamp of 2**63 s) as seconds."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))
    except (OverflowError, OSError, ValueError):
        return f"{ts:.0f} s after 1970-01-01 00:00:00"


def _label(name: str) -> str:
    """A name (a protocol, an address) as a chart label: short, printable, and literal for matplotlib,
    which reads $...$ as math (a plugin's or a model's name "$x" failed to parse; a 1 MB one took
    minutes to lay out)."""
    return printable(name[:40]).replace("$", r"\$")


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    _pyplot().close(fig)
    text = buf.getvalue()
    return text[text.find("<svg"):]


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _top(counter: Counter[str], n: int) -> list[tuple[str, float]]:
    items = counter.most_common()
    head = items[:n]
    rest = sum(v for _, v in items[n:])
    if rest:
        head.append(("other", rest))
    return head


def _bar(items: list[tuple[str, float]], xlabel: str, fmt: Any = str) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.35 * max(len(items), 2) + 0.8))
    names = [_label(k) for k, _ in items][::-1]
    values = [v for _, v in items][::-1]
    bars = ax.barh(names, values, color="#3b7dd8")
    for bar, value in zip(bars, values):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, " " + fmt(value), va="center", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.spines[["top", "right"]].set_visible(False)
    ax.margins(x=0.15)
    return _svg(fig)


def _timeline(records: list[dict[str, Any]], protocols: list[str]) -> str:
    plt = _pyplot()
    start = min(r["first_seen"] for r in records)
    end = max(r["last_seen"] for r in records)
    span = max(end - start, 1e-3)
    bins = 60
    width = span / bins
    series: dict[str, list[float]] = {p: [0.0] * bins for p in protocols + ["other"]}
    for r in records:
        name = r["protocol"] if r["protocol"] in series else "other"
        a = int((r["first_seen"] - start) / width)
        b = int((r["last_seen"] - start) / width)
        a = min(a, bins - 1)
        b = max(min(b, bins - 1), a)
        share = r["bytes"] / (b - a + 1)
        row = series[name]
        for i in range(a, b + 1):
            row[i] += share
    series = {k: v for k, v in series.items() if any(v)}
    fig, ax = plt.subplots(figsize=(9, 3.6))
    xs = [i * width for i in range(bins)]
    ax.stackplot(xs, *[[v * 8 / width for v in s] for s in series.values()], labels=[_label(k) for k in series],
                 step="post")
    ax.set_xlabel(f"seconds since {_utc(start)} UTC")
    ax.set_ylabel("bits per second")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def _table(headers: list[str], rows: Iterable[Iterable[Any]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(f'<td class="{"num" if i in numeric else ""}">{html.escape(str(c))}</td>'
                        for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _layers_section(records: list[dict[str, Any]]) -> str:
    decided = Counter(r.get("source") or "none" for r in records if r["protocol"] != UNKNOWN)
    with_verdicts = [r for r in records if r.get("verdicts")]
    parts = ["<h2>Layers</h2>", "<p>Which layer decided each classified flow.</p>",
             _bar(decided.most_common(), "flows decided") if decided else "<p>No flow was classified.</p>"]
    if not with_verdicts:
        parts.append("<p>Per-layer agreement needs every layer's answer: classify with "
                     "<code>--all-layers</code>.</p>")
        return "\n".join(parts)
    layers = sorted({v["source"] for r in with_verdicts for v in r["verdicts"]})
    agree: Counter[tuple[str, str]] = Counter()
    both: Counter[tuple[str, str]] = Counter()
    disagreements: Counter[tuple[str, str, str, str]] = Counter()
    for r in with_verdicts:
        named = {}
        for v in r["verdicts"]:
            if v["protocol"] != UNKNOWN:
                named.setdefault(v["source"], v["protocol"])
        for a in layers:
            for b in layers:
                if a < b and a in named and b in named:
                    both[(a, b)] += 1
                    if named[a] == named[b]:
                        agree[(a, b)] += 1
                    else:
                        disagreements[(a, named[a], b, named[b])] += 1
    rows = [(a, b, n, agree[(a, b)], f"{100 * agree[(a, b)] / n:.1f}%") for (a, b), n in sorted(both.items())]
    parts.append("<h3>Agreement between layers (flows both named)</h3>")
    parts.append(_table(["layer", "layer", "both named", "same protocol", "agreement"], rows, {2, 3, 4})
                 if rows else "<p>No flow was named by two layers.</p>")
    if disagreements:
        parts.append("<h3>Where layers disagree</h3>")
        parts.append(_table(["layer", "says", "layer", "says", "flows"],
                            [(*k, n) for k, n in disagreements.most_common(50)], {4}))
    return "\n".join(parts)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;padding:0 1.5em;max-width:1100px;color:#222}
h1{margin-bottom:0}.sub{color:#666;margin-top:.2em}
.cards{display:flex;gap:1em;flex-wrap:wrap;margin:1.5em 0}
.card{background:#f4f6fa;border-radius:8px;padding:.8em 1.2em;min-width:9em}
.card b{display:block;font-size:1.6em}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:1em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0 1.5em}
th,td{border-bottom:1px solid #ddd;padding:.25em .6em;text-align:left}td.num{text-align:right}
svg{max-width:100%;height:auto}
"""


def render(records: list[dict[str, Any]], title: str = "dpicore report", sources: Iterable[str] = ()) -> str:
    """The report as one HTML document."""
    if not records:
        raise ReportError("no flows to report")
    flows_by_proto: Counter[str] = Counter(r["protocol"] for r in records)
    bytes_by_proto: Counter[str] = Counter()
    talkers: Counter[str] = Counter()
    talker_flows: Counter[str] = Counter()
    for r in records:
        bytes_by_proto[r["protocol"]] += r["bytes"]
        for ip in {r["src_ip"], r["dst_ip"]}:  # a loopback flow counts once for its one address
            talkers[ip] += r["bytes"]
            talker_flows[ip] += 1
    total_bytes = sum(r["bytes"] for r in records)
    total_packets = sum(r["packets"] for r in records)
    unknown = [r for r in records if r["protocol"] == UNKNOWN]
    start = min(r["first_seen"] for r in records)
    end = max(r["last_seen"] for r in records)
    top_names = [k for k, _ in bytes_by_proto.most_common(TOP_PROTOCOLS)]
    cards = [("flows", f"{len(records):,}"), ("packets", f"{total_packets:,}"), ("bytes", _human(total_bytes)),
             ("protocols", str(len(flows_by_proto))),
             ("classified", f"{100 * (len(records) - len(unknown)) / len(records):.1f}%"),
             ("duration", f"{end - start:,.1f} s")]
    unknown_rows = [(r["transport"], f"{r['src_ip']}:{r['src_port']}", f"{r['dst_ip']}:{r['dst_port']}",
                     r["packets"], r["bytes"])
                    for r in sorted(unknown, key=lambda r: -r["bytes"])[:MAX_UNKNOWN_ROWS]]
    talker_rows = [(ip, talker_flows[ip], _human(b)) for ip, b in talkers.most_common(TOP_TALKERS)]
    src_list = "".join(f"<li>{html.escape(s)}</li>" for s in sources)
    body = f"""
<h1>{html.escape(title)}</h1>
<p class="sub">{_utc(start)} to
{_utc(end)} UTC</p>
<div class="cards">{''.join(f'<div class="card"><b>{v}</b>{k}</div>' for k, v in cards)}</div>
<h2>Protocols</h2>
<div class="grid">
<div><h3>by flows</h3>{_bar(_top(flows_by_proto, TOP_PROTOCOLS), "flows", lambda v: f"{v:,.0f}")}</div>
<div><h3>by bytes</h3>{_bar(_top(bytes_by_proto, TOP_PROTOCOLS), "bytes", _human)}</div>
</div>
<h2>Traffic over time</h2>
{_timeline(records, top_names)}
<h2>Top talkers</h2>
<div class="grid">
<div>{_bar([(ip, b) for ip, b in talkers.most_common(TOP_TALKERS)], "bytes sent and received", _human)}</div>
<div>{_table(["address", "flows", "bytes"], talker_rows, {1, 2})}</div>
</div>
<h2>Unknown flows ({len(unknown):,})</h2>
{_table(["transport", "client", "server", "packets", "bytes"], unknown_rows, {3, 4})
 if unknown_rows else "<p>Every flow was classified.</p>"}
{f"<p>Showing the {MAX_UNKNOWN_ROWS} largest.</p>" if len(unknown) > MAX_UNKNOWN_ROWS else ""}
{_layers_section(records)}
<h2>Inputs</h2><ul>{src_list}</ul>
<p class="sub">Made by dpicore. Traffic over time spreads each flow's bytes evenly over its lifetime.</p>
"""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body>{body}</body></html>\n")


def write_report(records: list[dict[str, Any]], out: str | Path, title: str = "dpicore report",
                 sources: Iterable[str] = ()) -> None:
    # A lone surrogate (JSON's "\ud800", a title's undecodable byte) has no UTF-8: written as "?".
    Path(out).write_text(render(records, title, sources), encoding="utf-8", errors="replace")


__all__ = ["ReportError", "read_records", "render", "write_report"]
