"""``dpi-ml train`` and ``dpi-ml evaluate`` (also mounted as ``dpi ml`` through ``dpicore.commands``).

Exit codes follow ``dpi``: 0 success, 1 some capture was damaged (every flow
that could be read was used), 2 usage error (bad option, unlabelled capture,
unusable model, missing training dependencies).
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from dpicore.cli import EXIT_DAMAGED, EXIT_OK, expand_paths
from dpicore import PluginError
from dpicore.config import Config, ConfigError, load_config

from .dataset import LabelError, Sample, collect
from .model import ModelError, load


def _config(path: str | None) -> Config | None:
    try:
        return load_config(path) if path else None
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def _need_training_deps(plots: bool = True) -> None:
    try:
        importlib.import_module("sklearn")
        if plots:
            importlib.import_module("matplotlib")
    except ImportError as exc:
        raise click.UsageError(f"{exc.name} is not installed; training and evaluation need "
                               "'pip install dpi-ml[train]' (scikit-learn, matplotlib)") from None


class _Damage:
    """Collects the capture readers' damage reports while samples are gathered."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.damaged = False

    def __call__(self, pcap: Path, samples: int, problems: list[str]) -> None:
        for line in problems:
            click.echo(line, err=True)
        self.damaged |= bool(problems)
        if not self.quiet:
            click.echo(f"  {pcap.name}: {samples} labelled flows", err=True)


def _samples(paths: tuple[str, ...], labels_from: str | None, config_path: str | None,
             quiet: bool) -> tuple[list[Sample], _Damage]:
    files = expand_paths(paths)
    damage = _Damage(quiet)
    try:
        samples = collect(files, labels_from=labels_from, config=_config(config_path), on_file=damage)
    except LabelError as exc:
        raise click.UsageError(str(exc)) from None
    except PluginError as exc:  # the layer named by --labels-from is not available
        raise click.UsageError(f"{exc}. Run 'dpi plugins' to see what is installed.") from None
    if not samples:
        raise click.UsageError("no labelled flow in the given captures")
    return samples, damage


_train_options = [
    click.option("--labels-from", metavar="LAYER", default=None,
                 help="Label flows with this layer's verdicts (e.g. ndpi) instead of label files."),
    click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False), default=None,
                 help="dpicore TOML configuration (timeouts, the labelling layer's settings)."),
    click.option("--trees", default=100, show_default=True, type=click.IntRange(1, 5000)),
    click.option("--min-flows", default=3, show_default=True, type=click.IntRange(1),
                 help="Leave out protocols with fewer labelled flows."),
    click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**31 - 1)),
    click.option("--jobs", "-j", default=-1, show_default=True, type=click.IntRange(min=-1),
                 help="CPU cores for training (0 or -1: all)."),
    click.option("--quiet", "-q", is_flag=True, help="No per-file progress on standard error."),
]


def _with_train_options(fn: Any) -> Any:
    for opt in reversed(_train_options):
        fn = opt(fn)
    return fn


def _params(trees: int, min_flows: int, seed: int, jobs: int) -> Any:
    from .train import TrainParams

    return TrainParams(trees=trees, min_flows=min_flows, seed=seed, jobs=jobs or -1)  # 0: all, as dpi classify -j 0


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Train and evaluate dpi-ml's flow classifier.

    Captures are labelled by ndpiReader label files (the corpus layout:
    pcap/NAME next to labels/NAME.json), by an expected.json next to them, or
    by another layer (--labels-from ndpi).
    """


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False),
              help="Where to write the model (.npz); point [layers.ml] model at it.")
@click.option("--threshold", default=None, type=click.FloatRange(0, 1),
              help="Confidence below which the layer abstains, stored in the model.  [default: 0.7]")
@_with_train_options
def train(paths: tuple[str, ...], out: str, threshold: float | None, labels_from: str | None,
          config_path: str | None, trees: int, min_flows: int, seed: int, jobs: int, quiet: bool) -> None:
    """Train a model on the flows of PATHS (capture files or directories)."""
    _need_training_deps(plots=False)
    from .train import DEFAULT_THRESHOLD, TrainError
    from .train import train as run_train

    start = time.monotonic()
    samples, damage = _samples(paths, labels_from, config_path, quiet)
    try:
        forest = run_train(samples, _params(trees, min_flows, seed, jobs),
                           threshold=DEFAULT_THRESHOLD if threshold is None else threshold,
                           labels=f"layer:{labels_from}" if labels_from else "files")
    except TrainError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        forest.save(out)
    except OSError as exc:
        raise click.UsageError(f"{out}: cannot write: {exc.strerror or exc}") from None
    info = forest.header["trained"]
    left_out = info["left_out"]
    click.echo(f"trained on {info['flows']} flows of {len(info['captures'])} captures, "
               f"{len(forest.classes)} classes, {forest.header['trees']} trees, "
               f"in {time.monotonic() - start:.1f} s -> {out} ({Path(out).stat().st_size // 1024} KiB)")
    if left_out:
        click.echo("left out (too few flows): " + ", ".join(f"{k} {v}" for k, v in left_out.items()))
    sys.exit(EXIT_DAMAGED if damage.damaged else EXIT_OK)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--model", "-m", "model_path", type=click.Path(dir_okay=False), default=None,
              help="Model to evaluate [default: the shipped model].")
@click.option("--cv", "folds", type=click.IntRange(2), default=None,
              help="Instead of a model: K-fold cross-validation grouped by capture file (trains K models).")
@click.option("--repeats", default=1, show_default=True, type=click.IntRange(1),
              help="With --cv: repeat with other random assignments of files to folds; the table shows "
                   "the first, a summary line each.")
@click.option("--train-also", "train_also", multiple=True, type=click.Path(),
              help="With --cv: captures (or directories) added to every training fold, never scored.")
@click.option("--threshold", default=None, type=click.FloatRange(0, 1),
              help="Confidence for the 'as the layer answers' figures [default: the model's].")
@click.option("--min-support", default=20, show_default=True, type=click.IntRange(1),
              help="Macro-F1 is averaged over protocols with at least this many flows.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default="ml-evaluation.png",
              show_default=True, help="PNG with the confusion matrix and per-protocol F1.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the figures as JSON.")
@_with_train_options
def evaluate(paths: tuple[str, ...], model_path: str | None, folds: int | None, repeats: int,
             train_also: tuple[str, ...],
             threshold: float | None,
             min_support: int, plot_path: str, json_path: str | None, labels_from: str | None,
             config_path: str | None, trees: int, min_flows: int, seed: int, jobs: int, quiet: bool) -> None:
    """Score a model (or file-grouped cross-validation) on the labelled flows of PATHS.

    Prints per-protocol precision, recall and F1, the macro-F1, how the
    layer would answer at its threshold, and a confusion matrix; writes the
    same as a PNG plot.
    """
    _need_training_deps()
    from .metrics import format_repeats, format_text, plot, score
    from .train import DEFAULT_THRESHOLD, TrainError, cross_validate, predict_samples

    if folds is not None and model_path is not None:
        raise click.UsageError("--cv trains its own models; give --cv or --model, not both")
    if (train_also or repeats > 1) and folds is None:
        raise click.UsageError("--train-also and --repeats only make sense with --cv")
    if Path(plot_path).suffix.lower() != ".png":  # refused now, not after the whole evaluation
        raise click.UsageError(f"--plot {plot_path}: the plot is a PNG file (name it .png)")
    start = time.monotonic()
    samples, damage = _samples(paths, labels_from, config_path, quiet)
    if folds is not None:
        extra: list[Sample] = []
        if train_also:
            extra, more_damage = _samples(train_also, labels_from, config_path, quiet)
            damage.damaged |= more_damage.damaged
            both = {s.capture for s in extra} & {s.capture for s in samples}
            if both:  # their flows would be in every training fold and scored: the figures a leak
                raise click.UsageError(f"--train-also names {len(both)} of the scored captures (e.g. "
                                       f"{sorted(both)[0]}); a capture is scored or trained on, not both")
        try:
            runs = cross_validate(samples, _params(trees, min_flows, seed, jobs), folds=folds, extra=extra,
                                  repeats=repeats,
                                  on_fold=None if quiet else lambda k, n: click.echo(f"  fold {k}/{n} done", err=True))
        except TrainError as exc:
            raise click.UsageError(str(exc)) from None
        truth, names, conf = runs[0].truth, runs[0].predicted, runs[0].probability
        th = DEFAULT_THRESHOLD if threshold is None else threshold
        repeat_reports = [score(r.truth, r.predicted, r.probability, th, min_support) for r in runs]
        used = min(folds, len({s.capture for s in samples}))  # as cross_validate: no more folds than files
        what = f"{used}-fold cross-validation grouped by capture file" + (
            f" (+{len(extra)} flows always in training)" if extra else "")
    else:
        from .plugin import DEFAULT_MODEL

        path = Path(model_path) if model_path else DEFAULT_MODEL
        try:
            forest = load(path)
        except ModelError as exc:
            raise click.UsageError(str(exc)) from None
        seen = set(forest.header.get("trained", {}).get("captures", [])) & {s.capture for s in samples}
        if seen:
            click.echo(f"warning: {len(seen)} of these captures were used to train {path.name} "
                       f"(e.g. {sorted(seen)[0]}); these figures are not a fair test: use --cv", err=True)
        truth = [s.label for s in samples]
        names, conf = predict_samples(forest, samples)
        th = forest.threshold_default if threshold is None else threshold
        what = f"model {path}"
        repeat_reports = []
    report = score(truth, names, conf, th, min_support)
    click.echo(f"{what}: {len(samples)} labelled flows from {len({s.capture for s in samples})} captures "
               f"({time.monotonic() - start:.1f} s)\n")
    click.echo(format_text(report))
    if len(repeat_reports) > 1:
        click.echo(f"\n{len(repeat_reports)} assignments of files to folds (the table above is the first):")
        click.echo(format_repeats(repeat_reports))
    try:
        plot(report, plot_path, title=what)
        if json_path:
            data = {"evaluation": what, **report.to_dict()}
            if len(repeat_reports) > 1:
                data["repeats"] = [r.summary() for r in repeat_reports]
            Path(json_path).write_text(json.dumps(data, indent=1) + "\n")
    except OSError as exc:
        raise click.UsageError(f"cannot write: {exc}") from None
    click.echo(f"\nplot: {plot_path}" + (f", figures: {json_path}" if json_path else ""))
    sys.exit(EXIT_DAMAGED if damage.damaged else EXIT_OK)
