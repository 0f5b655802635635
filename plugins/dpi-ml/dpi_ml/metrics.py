"""Scoring predictions against labels: per-protocol table, confusion matrix, the PNG plot.

Two views of the same predictions:

* *top-1*: every flow gets the model's most likely class (a predicted
  ``Unknown`` is no answer).  Per-protocol precision, recall and F1, and the
  macro-F1 over protocols with at least ``min_support`` labelled flows.
  Flows the labeller left ``Unknown`` get no row, but a protocol the model
  names for them counts against that protocol's precision: nobody confirmed
  the answer.
* *as the layer answers*: only answers at or above the threshold count (a
  flow below it is unanswered, like a predicted ``Unknown``): the same
  per-protocol figures, coverage (answered / all), and the share of wrong
  answers among them.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import attrs
import numpy as np

from dpicore import UNKNOWN


@attrs.define(slots=True)
class Row:
    protocol: str
    flows: int
    precision: float
    recall: float
    f1: float
    #: The same at the threshold.
    precision_at: float
    recall_at: float
    f1_at: float


@attrs.define(slots=True)
class Report:
    rows: list[Row]
    min_support: int
    macro_f1: float
    macro_f1_at: float
    macro_protocols: list[str]
    flows: int
    threshold: float
    answered: int
    answered_right: int
    answered_wrong: int
    labels: list[str]
    confusion: np.ndarray

    @property
    def wrong_rate(self) -> float:
        return self.answered_wrong / self.answered if self.answered else 0.0

    def summary(self) -> dict[str, Any]:
        """The headline figures (one line per cross-validation repeat)."""
        return {"macro_f1": _figure(self.macro_f1), "macro_f1_at_threshold": _figure(self.macro_f1_at),
                "answered": self.answered, "answered_wrong": self.answered_wrong,
                "wrong_rate": round(self.wrong_rate, 4)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "flows": self.flows, "min_support": self.min_support, "macro_f1": _figure(self.macro_f1),
            "macro_f1_at_threshold": _figure(self.macro_f1_at),
            "macro_protocols": self.macro_protocols, "threshold": self.threshold, "answered": self.answered,
            "answered_right": self.answered_right, "answered_wrong": self.answered_wrong,
            "wrong_rate": round(self.wrong_rate, 4),
            "protocols": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in attrs.asdict(r).items()}
                          for r in self.rows],
            "confusion": {"labels": self.labels, "matrix": self.confusion.tolist()},
        }


def _figure(x: float) -> float | None:
    """A figure for the JSON report: NaN (no protocol reached min_support, so no macro-F1) is null,
    which JSON has; NaN it has not (json.dumps writes it, and other readers reject the file)."""
    return None if math.isnan(x) else round(x, 4)


def score(truth: Sequence[str], predicted: Sequence[str], confidence: np.ndarray, threshold: float,
          min_support: int = 20) -> Report:
    """Score predictions (see the module docstring for what counts)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y = np.asarray(truth, dtype=object)
    p = np.asarray(predicted, dtype=object)
    answered = (np.asarray(confidence) >= threshold) & (p != UNKNOWN)
    p_at = np.where(answered, p, UNKNOWN)
    support = Counter(t for t in truth if t != UNKNOWN)
    protocols = sorted(support, key=lambda k: (-support[k], k))
    rows: list[Row] = []
    if protocols:
        top1 = precision_recall_fscore_support(y, p, labels=protocols, zero_division=0)[:3]
        at = precision_recall_fscore_support(y, p_at, labels=protocols, zero_division=0)[:3]
        rows = [Row(name, support[name], *(float(m[i]) for m in top1), *(float(m[i]) for m in at))
                for i, name in enumerate(protocols)]
    big = [r for r in rows if r.flows >= min_support]
    macro = float(np.mean([r.f1 for r in big])) if big else float("nan")
    macro_at = float(np.mean([r.f1_at for r in big])) if big else float("nan")
    right = int((answered & (p == y)).sum())
    labels = protocols + sorted({*p.tolist()} - set(protocols) - {UNKNOWN}) + [UNKNOWN]
    matrix = confusion_matrix(y, p, labels=labels) if len(y) else np.zeros((len(labels), len(labels)), int)
    return Report(rows, min_support, macro, macro_at, [r.protocol for r in big], len(y), threshold,
                  int(answered.sum()), right, int(answered.sum()) - right, labels, matrix)


def format_text(report: Report, confusion_rows: int = 15) -> str:
    """The table ``dpi-ml evaluate`` prints."""
    th = f">={report.threshold:g}"
    lines = [f"{'':<16} {'':>6} {'top-1':^22}   {'answers ' + th:^22}",
             f"{'protocol':<16} {'flows':>6} {'prec':>6} {'recall':>7} {'F1':>6}   {'prec':>6} {'recall':>7} {'F1':>6}"]
    for r in report.rows:
        mark = "*" if r.protocol in report.macro_protocols else " "
        lines.append(f"{r.protocol[:15]:<15}{mark} {r.flows:>6} {r.precision:>6.3f} {r.recall:>7.3f} {r.f1:>6.3f}"
                     f"   {r.precision_at:>6.3f} {r.recall_at:>7.3f} {r.f1_at:>6.3f}")
    lines.append("")
    lines.append(f"macro-F1 over the {len(report.macro_protocols)} protocols with >= {report.min_support} flows (*): "
                 f"top-1 {report.macro_f1:.3f}, answers {th} {report.macro_f1_at:.3f}")
    lines.append(f"as the layer answers (confidence {th}): {report.answered} of {report.flows} "
                 f"flows answered, {report.answered_right} right, {report.answered_wrong} wrong "
                 f"({100 * report.wrong_rate:.1f}% of answers)")
    lines.append("")
    n = min(confusion_rows, len(report.rows))
    shown = report.labels[:n]
    cols = shown + ["other", UNKNOWN]
    idx = {name: i for i, name in enumerate(report.labels)}
    lines.append(f"confusion matrix (rows: label, columns: top-1 prediction; {n} largest protocols)")
    width = 7
    lines.append(" " * 16 + " ".join(f"{c[:width]:>{width}}" for c in cols))
    unknown_col = idx[UNKNOWN]
    for name in shown:
        row = report.confusion[idx[name]]
        main = [int(row[idx[c]]) for c in shown]
        other = int(row.sum()) - sum(main) - int(row[unknown_col])
        cells = main + [other, int(row[unknown_col])]
        lines.append(f"{name[:15]:<16}" + " ".join(f"{v:>{width}}" for v in cells))
    return "\n".join(lines)


def format_repeats(reports: Sequence[Report]) -> str:
    """One line per repeat, then mean and range, of the headline figures."""
    lines = [f"  {'repeat':>6} {'macro-F1':>9} {'at thr.':>8} {'answered':>9} {'wrong':>6} {'wrong %':>8}"]
    for i, r in enumerate(reports, 1):
        lines.append(f"  {i:>6} {r.macro_f1:>9.3f} {r.macro_f1_at:>8.3f} {r.answered:>9} {r.answered_wrong:>6} "
                     f"{100 * r.wrong_rate:>7.1f}%")
    for name, fn in (("mean", np.mean), ("min", np.min), ("max", np.max)):
        lines.append(f"  {name:>6} {fn([r.macro_f1 for r in reports]):>9.3f} "
                     f"{fn([r.macro_f1_at for r in reports]):>8.3f} {fn([r.answered for r in reports]):>9.0f} "
                     f"{fn([r.answered_wrong for r in reports]):>6.0f} {100 * fn([r.wrong_rate for r in reports]):>7.1f}%")
    return "\n".join(lines)


def plot(report: Report, path: str | Path, title: str = "dpi-ml evaluation") -> None:
    """Write the confusion matrix (row-normalised) and per-protocol F1 as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = report.labels
    m = report.confusion.astype(float)
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    size = max(6.0, 0.28 * len(labels) + 3)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(size + 6, size), gridspec_kw={"width_ratios": [size, 6]})
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("predicted (top-1)")
    ax.set_ylabel("label")
    ax.set_title("confusion matrix (share of each label's flows)")
    fig.colorbar(im, ax=ax, fraction=0.03)
    rows = report.rows[::-1]
    colors = ["tab:blue" if r.protocol in report.macro_protocols else "tab:gray" for r in rows]
    bx.barh([f"{r.protocol} ({r.flows})" for r in rows], [r.f1 for r in rows], color=colors)
    bx.set_xlim(0, 1)
    bx.tick_params(axis="y", labelsize=7)
    bx.set_xlabel("F1")
    bx.set_title(f"macro-F1 (blue, >= {report.min_support} flows): {report.macro_f1:.3f}")
    fig.suptitle(f"{title}: {report.answered}/{report.flows} answered at >= {report.threshold:g}, "
                 f"{100 * report.wrong_rate:.1f}% of answers wrong")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
