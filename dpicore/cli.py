"""The ``dpi`` command.

Exit codes scripts can rely on: 0 success; 1 some input was damaged or
unreadable (every flow that could be read was still written); 2 usage error
(bad option, bad configuration, a required layer missing, a path that does
not exist).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import stat
import sys
import time
from collections import Counter
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterator, NoReturn

import click

# numpy's OpenBLAS starts a thread for every other core when numpy is imported (by .api, below): ~0.08 s of CPU
# per `dpi` run, on the core a `-j` worker wants, and nothing here multiplies matrices big enough to
# use it.  One thread, unless the user asked otherwise.  Set before numpy loads, so before .api.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from . import __version__  # noqa: E402
from .api import Classifier, freeze_startup  # noqa: E402
from .config import Config, ConfigError, load_config  # noqa: E402
from .output import FORMATS, RecordWriter, flow_record, printable  # noqa: E402
from .plugins import FAILED, LOADED, PluginError, PluginSet, discover  # noqa: E402

if TYPE_CHECKING:  # imported where -j needs it: most runs are one process
    from .parallel import FileReport

EXIT_OK = 0
EXIT_DAMAGED = 1
EXIT_USAGE = 2
#: As a shell reports a program ended by SIGINT / by SIGTERM.
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcap.gz", ".pcapng.gz", ".cap.gz")


class InputError(click.ClickException):
    """A usage error about a path, the configuration or a layer: one ``Error: …`` line and exit
    code 2, without click's usage text (which would bury the line that names the file)."""

    exit_code = EXIT_USAGE

    def format_message(self) -> str:
        return printable(self.message)  # it often names a file: its name must not drive the terminal


def _err(message: str) -> None:
    """One line on standard error; file and interface names, plugin reasons and anything traffic wrote
    in it have their control characters escaped (an OSC sequence in a file name set the terminal's
    title, even through a pipe)."""
    click.echo(printable(message), err=True)


def expand_paths(paths: tuple[str, ...], jsonl: bool = False) -> list[Path]:
    """Files as given; directories become the capture (and, if asked, JSONL) files inside them, sorted."""
    suffixes = CAPTURE_SUFFIXES + ((".jsonl",) if jsonl else ())
    out: list[Path] = []
    seen: set[str] = set()

    def add(f: Path) -> None:
        # A file named twice (a directory and a file in it; a glob and the same name) is read once: its
        # flows counted twice would be records the capture does not hold (and dpi-ml's training data).
        if f.is_file():
            real = os.path.realpath(f)
            if real in seen:
                return
            seen.add(real)
        out.append(f)

    for text in paths:
        p = Path(text)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.name.lower().endswith(suffixes))
            if not found:
                raise InputError(f"{p}: directory holds no capture files ({', '.join(CAPTURE_SUFFIXES)})")
            for f in found:
                add(f)
        elif not p.exists():
            raise InputError(f"{p}: no such file or directory")
        else:
            add(p)
    return out


def _config(config_path: str | None, layers: str | None, all_layers: bool) -> Config:
    """The configuration file with the command line's overrides applied."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise InputError(str(exc)) from None
    if layers:
        config = config.with_layers([x.strip() for x in layers.split(",") if x.strip()])
    if all_layers:
        config.all_layers = True
    return config


def _load(config_path: str | None, layers: str | None, all_layers: bool) -> tuple[Config, PluginSet]:
    config = _config(config_path, layers, all_layers)
    try:
        plugins = discover(config)
    except PluginError as exc:
        raise InputError(f"{exc}. Run 'dpi plugins' to see what is installed.") from None
    _warn_unknown_layers(config, plugins)
    return config, plugins


def _warn_unknown_layers(config: Config, plugins: PluginSet) -> None:
    """A layer id the configuration names that no installed plugin has: a typo (`heuristcs`) otherwise
    only showed as layers that did not run.  A warning, not an error: one configuration may serve
    machines with different plugins installed (`require` is for the layers a run cannot do without)."""
    named = {*(config.enable or ()), *config.block, *config.layer_settings}
    for layer_id in sorted(named - set(plugins.statuses)):
        _err(f"warning: the configuration names layer {layer_id!r}, which is not installed "
             f"(installed: {', '.join(sorted(plugins.statuses)) or 'none'})")


COMMANDS_GROUP = "dpicore.commands"


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, ``kill``, systemd, ``docker stop``), raised as Ctrl-C is: every command stops
    the way it stops on Ctrl-C (``dpi live`` still writes its open flows and completes its pcap; temporary
    files are removed), but the exit code is 143."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def _stopped(exc: BaseException) -> tuple[str, int]:
    """(message, exit code) for an interruption."""
    return ("terminated", EXIT_TERMINATED) if isinstance(exc, Terminated) else ("interrupted", EXIT_INTERRUPTED)


def _interruption(exc: BaseException) -> BaseException | None:
    """The KeyboardInterrupt (or the exit 130/143 it led to) that ``exc`` was raised while handling, if any."""
    seen = set()
    e = exc.__context__
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, KeyboardInterrupt) or (
                isinstance(e, SystemExit) and e.code in (EXIT_INTERRUPTED, EXIT_TERMINATED)):
            return e
        e = e.__context__
    return None


class PluginCommands(click.Group):
    """Built-in commands plus those plugins add through the ``dpicore.commands``
    entry-point group (e.g. ``dpi ml`` from dpi-ml), loaded only when used."""

    def invoke(self, ctx: click.Context) -> Any:
        # Ctrl-C is exit code 130, as the shell reports a program SIGINT ended; click's own "Aborted!"
        # exit 1 would read as "an input was damaged" to a script.  What was written stays written.
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            message, code = _stopped(exc)
            _err(message)
            sys.exit(code)
        except OSError as exc:
            # Ctrl-C reaches the whole pipeline: the reader (| jq) may be gone when a finally flushes the
            # records still buffered, and that EPIPE replaced the KeyboardInterrupt (click: exit 1).
            cause = _interruption(exc)
            if cause is None:
                if isinstance(exc, BrokenPipeError) and _stdout_reader_gone():
                    # The reader left (| head) and a finally's flush found it gone: as a write in the run
                    # does, exit 0 (click's exit 1 read as "an input was damaged").
                    _silence_stdout()
                    sys.exit(EXIT_OK)
                raise
            _silence_stdout()  # nobody reads it
            if isinstance(cause, KeyboardInterrupt):  # a SystemExit(130/143) has said so already
                message, code = _stopped(cause)
                _err(message)
                sys.exit(code)
            assert isinstance(cause, SystemExit)
            sys.exit(cause.code)

    def _entry_points(self) -> dict[str, object]:
        from importlib.metadata import entry_points

        return {ep.name: ep for ep in entry_points(group=COMMANDS_GROUP)}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._entry_points()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is not None:
            return cmd
        ep = self._entry_points().get(name)
        if ep is None:
            return None
        try:
            loaded = ep.load()  # type: ignore[attr-defined]
        except Exception as exc:  # a broken plugin must not break 'dpi --help'
            # Bind exc now: Python unbinds the 'as' name when the except block ends.
            return click.Command(name, help=f"(unavailable: {type(exc).__name__}: {exc})",
                                 callback=lambda error=exc: _fail_command(name, error))
        return loaded if isinstance(loaded, click.Command) else None


def _fail_command(name: str, exc: Exception) -> None:
    raise click.UsageError(f"command {name!r} is unavailable: {type(exc).__name__}: {exc}")


@click.group(cls=PluginCommands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dpi")
def main() -> None:
    """dpicore: name the application protocol of every network flow.

    Layers (heuristics, nDPI, libprotoident, ML, third-party plugins) are
    installed as separate packages and run in priority order; see
    'dpi plugins'.  Plugins may add commands (entry-point group
    dpicore.commands), such as 'dpi ml' from dpi-ml.
    """
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s: %(message)s")
    signal.signal(signal.SIGTERM, _terminate)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--format", "-f", "fmt", type=click.Choice(FORMATS), default=None,
              help="Output format [default: table on a terminal, jsonl otherwise].")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write records to FILE instead of standard output.")
@click.option("--layers", "-l", default=None, metavar="A,B",
              help="Run only these layers (comma-separated ids); each must be available.")
@click.option("--all-layers", is_flag=True, help="Ask every layer and add a 'verdicts' list to each record.")
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False), default=None,
              help="TOML configuration: layers, priorities, threshold, timeouts, flow cap.")
@click.option("--quiet", "-q", is_flag=True,
              help="No progress bar, protocol counts or summary on standard error.")
@click.option("--jobs", "-j", type=click.IntRange(min=0), default=1, show_default=True, metavar="N",
              help="Worker processes (0: one per core); large files are split over them by address pair "
                   "(docs/cluster.md). Same records as -j 1, in another order.")
@click.option("--cluster", "cluster", default=None, metavar="ADDRESS",
              help="Run on the Dask cluster whose scheduler is at ADDRESS (tcp://host:8786); the workers "
                   "read the captures from the same paths (see docs/cluster.md).")
def classify(paths: tuple[str, ...], fmt: str | None, output: str | None, layers: str | None, all_layers: bool,
             config_path: str | None, quiet: bool, jobs: int, cluster: str | None) -> None:
    """Classify every flow of the capture files (or directories of them) in PATHS.

    pcap and pcapng, optionally gzip-compressed; a path may be a pipe
    (tcpdump -w - | dpi classify /dev/stdin), read as it arrives.  Records
    are written as flows end; each file's flows end with the file.  With -j N or --cluster the
    records are the same, their order is not (they are written as the
    workers send them; see docs/cluster.md).
    """
    files = expand_paths(paths)
    if output is not None:
        _refuse_to_overwrite(output, files)
    if cluster and jobs != 1:
        raise InputError("--cluster and -j exclude each other (the cluster's workers are the parallelism)")
    if cluster:
        for f in files:
            if not f.is_file():  # a worker would open its own /dev/stdin, or a FIFO nobody writes
                raise InputError(f"{f}: --cluster needs regular files the workers can open; this is a "
                                 "pipe or device (save it to a file on shared storage, or run without --cluster)")
    config, plugins = _load(config_path, layers, all_layers)
    _warn_failed(plugins)
    if cluster or jobs != 1:
        _classify_distributed(files, config, plugins, fmt, output, quiet, jobs, cluster)
    clf = Classifier(config=config, plugins=plugins)
    if not clf.layers:
        _warn_no_layers()
    freeze_startup()
    out, writer = _open_writer(output, fmt, config.all_layers)
    damaged = False
    show = not quiet and sys.stderr.isatty()
    with _writing(output):
        try:
            for path, flows in _progress(clf, files, show):
                for flow in flows:
                    writer.write(flow_record(flow, config.all_layers))
                src = clf.last_source
                if src is not None:
                    for line in src.problems:
                        _err(line)
                    damaged |= src.damaged
        except BrokenPipeError:
            sys.stderr.close()  # reader went away (| head): not an error of ours
            sys.exit(EXIT_OK)
        finally:
            try:
                writer.close()
                if output:
                    out.close()
            finally:
                clf.close()
    if not quiet:
        _warn_totals(clf.engine.stats.layer_errors,
                     {l.id: l.last_error for l in clf.engine.layers if l.errors},
                     clf.engine.stats.evicted, config.max_flows)
    sys.exit(EXIT_DAMAGED if damaged else EXIT_OK)


def _warn_no_layers() -> None:
    _err("warning: no classifier layer is installed or enabled; every flow will be Unknown "
         "(install dpi-heuristics, dpi-ndpi, … and see 'dpi plugins')")


def _warn_totals(errors: int, last_errors: dict[str, str], evicted: int, max_flows: int) -> None:
    """The end-of-run notes of 'dpi classify': layer errors and flows cut by the flow cap."""
    if errors:
        _err(f"warning: layers raised {errors} errors (see the 'errors' metadata of the flows; "
             + "; ".join(f"{layer}: {message}" for layer, message in last_errors.items()) + ")")
    if evicted:
        _err(f"note: {evicted} flows were evicted early by the flow cap "
             f"({max_flows}); a later packet of an evicted flow started a new record "
             "(raise engine.max_flows in --config to keep flows whole)")


def _report_file(rep: FileReport) -> None:
    for line in rep.problems:  # once per file, however many shards read it
        _err(line)


def _classify_distributed(files: list[Path], config: Config, plugins: PluginSet, fmt: str | None,
                          output: str | None, quiet: bool, jobs: int, cluster: str | None) -> NoReturn:
    """'dpi classify -j N' and '--cluster': the same records, classified elsewhere.

    The plugins were loaded here to check the configuration (required
    layers, usage errors) before any worker starts; each worker loads its
    own.  A ``-j`` worker is forked after they are closed: what it copies
    is what their modules built once per process (the heuristics' tables
    and patterns, ~20 ms of a worker's start-up otherwise), not a layer's
    native state.
    """
    if not plugins.layers:
        _warn_no_layers()
    plugins.close()
    from .parallel import WorkerError, classify_files

    work: Any = None
    failures: tuple[type[Exception], ...] = (WorkerError,)
    jsonl = _format(fmt, output) == "jsonl"
    if not cluster:
        # The output first: -j workers write JSONL to a regular file themselves (ParallelRun's fd).
        out, writer = _open_writer(output, fmt, config.all_layers)
        try:
            work = classify_files(files, jobs, config, on_file=_report_file, jsonl=jsonl,
                                  fd=_descriptor(out) if jsonl else None)
            # This process only writes what the workers send from now on: its start-up objects are
            # frozen (before the fork, so the workers' collections skip them too), and its exit does
            # not walk them.
            freeze_startup()
            work.start()
        except BaseException:
            if work is not None:
                work.close()
            if output:
                out.close()
            raise
    else:
        from .cluster import ClusterError, classify_on_cluster

        try:  # the scheduler first: a run that cannot connect leaves an existing -o FILE as it was
            work = classify_on_cluster(files, cluster, config, on_file=_report_file, jsonl=jsonl)
        except ClusterError as exc:
            raise InputError(str(exc)) from None
        failures = (ClusterError,)
        if not work.workers():  # the tasks would wait, silently, until one joins
            _err(f"warning: the scheduler at {cluster} has no workers yet; the tasks wait for one "
                 "(start 'dask worker' on a host that sees the captures; Ctrl-C stops)")
        try:
            out, writer = _open_writer(output, fmt, config.all_layers)
        except BaseException:
            work.close()
            raise
    with _writing(output):
        try:
            # JSONL comes as text the workers wrote (whole lines); other formats as records.
            put = writer.write_lines if work.jsonl else writer.write
            for item in _records_progress(work, len(files), not quiet and sys.stderr.isatty()):
                put(item)
        except BrokenPipeError:
            sys.stderr.close()  # reader went away (| head): not an error of ours
            sys.exit(EXIT_OK)
        except failures as exc:
            _err(f"error: {exc}")
            sys.exit(EXIT_DAMAGED)
        finally:
            work.close()  # first: stops the workers even if the output below blocks (Ctrl-C on a full pipe)
            writer.close()
            if output:
                out.close()
    for layer_id, reason in sorted(work.tally.unavailable.items()):  # as _warn_failed, quiet or not
        if layer_id in plugins.statuses and plugins.statuses[layer_id].status == FAILED:
            continue  # unavailable here too: said already
        _err(f"warning: plugin {layer_id} unavailable {reason}; its verdicts are missing from that "
             "worker's flows")
    if not quiet:
        t = work.tally
        _warn_totals(t.layer_errors, t.last_errors, t.evicted, config.max_flows)
        for rep in t.files.values():
            if rep.lopsided:
                _err(f"note: {rep.path}: one worker had {rep.largest / rep.packets:.0%} of its packets: "
                     "a large file is split by host pair, and this one has too few to spread (docs/cluster.md)")
    sys.exit(EXIT_DAMAGED if work.damaged else EXIT_OK)


def _records_progress(run: Any, files: int, show: bool) -> Iterator[Any]:
    """The run's items (records or JSONL text); on a terminal, a progress bar of files done and flows."""
    if not show:
        yield from run
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("classifying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[flows]:,} flows"), console=Console(stderr=True), transient=True)
    with bar:
        task = bar.add_task("files", total=files, flows=0)
        last = 0.0
        for item in run:
            yield item
            now = time.monotonic()
            if now - last >= 0.25:
                last = now
                bar.update(task, completed=sum(r.complete for r in run.tally.files.values()),
                           flows=run.tally.records)


def _format(fmt: str | None, output: str | None) -> str:
    """The output format: as asked, else a table on a terminal and JSONL otherwise."""
    if fmt is None:
        return "table" if output is None and _stdout().isatty() else "jsonl"
    return fmt


def _stdout() -> IO[str]:
    """Standard output, for the records; a clear error where the process was started without one
    (``dpi classify x.pcap >&-``: Python then has no ``sys.stdout``)."""
    if sys.stdout is None:
        raise InputError("standard output is closed: write the records to a file with -o FILE")
    return sys.stdout


def _stdout_reader_gone() -> bool:
    """Whether standard output is a pipe whose reader has closed it (poll says POLLERR): an EPIPE that
    came from elsewhere (a pipe of a plugin's own) is not the user's ``| head``."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, ValueError, OSError):
        return False


def _silence_stdout() -> None:
    """Point standard output at /dev/null once writing to it failed: what is left in its buffer must
    not fail again (and print a traceback) when the interpreter flushes it at exit."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@contextlib.contextmanager
def _writing(output: str | None) -> Iterator[None]:
    """Turn a failed write of the records (a full disk, /dev/full, a network file system gone) into
    one line and exit code 2, as an unwritable -o is at the start, instead of a traceback."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        if not output:
            _silence_stdout()
        raise InputError(f"{output or 'standard output'}: cannot write: {exc.strerror or exc}") from None


def _open_writer(output: str | None, fmt: str | None, all_layers: bool) -> tuple[IO[str], RecordWriter]:
    """Standard output or FILE; table on a terminal, JSONL otherwise unless ``fmt`` says."""
    fmt = _format(fmt, output)
    out: IO[str]
    if output:
        try:
            out = open(output, "w", encoding="utf-8", newline="")
        except OSError as exc:
            raise InputError(f"{output}: cannot write: {exc.strerror}") from None
    else:
        out = _stdout()
    _pass_writes_on(out)
    return out, RecordWriter(out, fmt, all_layers)


def _refuse_to_overwrite(output: str, files: list[Path]) -> None:
    """-o naming one of the captures (a slip of tab completion) emptied that capture before it was read:
    the user lost it, and got "empty file, not a capture".  Refused before anything is opened (also by
    `dpi report`, which would replace its input with the report)."""
    try:
        target = os.stat(output)
    except OSError:
        return  # not there yet (or not reachable: opening it says why)
    if not stat.S_ISREG(target.st_mode):
        return
    for f in files:
        try:
            st = os.stat(f)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            raise InputError(f"{output}: is one of the inputs ({f}); writing there would overwrite it: choose "
                             "another -o FILE")


def _descriptor(out: IO[str]) -> int | None:
    """``out``'s file descriptor, its text layer emptied first (None: it has none, as a test's
    StringIO standard output)."""
    try:
        fd = out.fileno()
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
        return None
    out.flush()
    return fd


def _pass_writes_on(out: IO[str]) -> None:
    """Make a pipe's, a socket's or a terminal's text output hand each write on (``write_through``), and
    a file's keep its text layer's buffer.

    A write to a pipe can wait for the reader, and a Ctrl-C or SIGTERM then raises inside it: the text
    layer's own buffer lost what it held, where written through a write is taken whole or not at all
    and RecordWriter keeps what was not.  A file's or /dev/null's writes do not wait that way, and
    keep the buffer (a call per record fewer: 0.3% of a run's instructions) even when Python runs
    unbuffered (``PYTHONUNBUFFERED=1`` or ``-u``, as many container images set): standard output
    redirected to a file then made a write system call per record (77,040 on the real-client
    benchmark input, 2-3% of its run).  Records to a file are then buffered as ``-o FILE`` writes them
    (``dpi live`` still flushes each one).
    """
    with contextlib.suppress(AttributeError, ValueError, OSError, io.UnsupportedOperation):
        mode = os.fstat(out.fileno()).st_mode
        passes_on = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or out.isatty()
        out.reconfigure(write_through=passes_on)  # type: ignore[attr-defined]


def _warn_failed(plugins: PluginSet) -> None:
    for st in plugins.statuses.values():
        if st.status == FAILED:
            _err(f"warning: plugin {st.id} unavailable: {st.reason}")


def _progress(clf: Classifier, files: list[Path], show: bool) -> Iterator[tuple[Path, Iterator]]:
    """Yield (path, flows) per file; on a terminal, a progress bar with live protocol counts under it."""
    if not show:
        for path in files:
            yield path, clf.classify_pcap(path)
        return
    from rich.console import Console, Group
    from rich.live import Live
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table
    from rich.text import Text

    counts: Counter[str] = Counter()
    bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[packets]:,} packets, {task.fields[flows]:,} flows"))
    task = bar.add_task("classifying", total=len(files), packets=0, flows=0)
    # File names and protocol names are shown as plain text, never as rich markup ("[/x]" in a name
    # would raise) nor with their control characters.

    def table() -> Table:
        t = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
        t.add_column("protocol")
        t.add_column("flows", justify="right")
        for name, n in counts.most_common(10):
            t.add_row(Text(printable(name)), f"{n:,}")
        return t

    with Live(Group(bar, table()), console=Console(stderr=True), transient=True, refresh_per_second=4) as live:
        for path in files:
            bar.update(task, description=printable(path.name[:40]))

            def counted(flows: Iterator, path: Path = path) -> Iterator:
                for flow in flows:
                    counts[flow.verdict.protocol if flow.verdict else "Unknown"] += 1
                    if counts.total() % 64 == 0:
                        bar.update(task, packets=clf.engine.stats.packets, flows=counts.total())
                        live.update(Group(bar, table()))
                    yield flow

            yield path, counted(clf.classify_pcap(path))
            bar.update(task, advance=1, packets=clf.engine.stats.packets, flows=counts.total())
            live.update(Group(bar, table()))


@main.command()
@click.option("--interface", "-i", required=True, help="Interface to capture on (e.g. eth0, lo, any).")
@click.option("--bpf", default=None, metavar="FILTER", help="libpcap capture filter, e.g. 'tcp port 80'.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None, metavar="S",
              help="Stop after S seconds (default: until Ctrl-C).")
@click.option("--format", "-f", "fmt", type=click.Choice(FORMATS), default=None,
              help="Output format [default: table on a terminal, jsonl otherwise].")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write records to FILE instead of standard output.")
@click.option("--write-pcap", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Also keep every captured frame in this pcap file.")
@click.option("--layers", "-l", default=None, metavar="A,B", help="Run only these layers.")
@click.option("--all-layers", is_flag=True, help="Ask every layer and add a 'verdicts' list to each record.")
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False), default=None,
              help="TOML configuration: layers, priorities, threshold, timeouts, flow cap.")
@click.option("--summary-every", type=click.FloatRange(min=0), default=10.0, metavar="S",
              help="Print a summary line on standard error every S seconds (0: never).")
@click.option("--quiet", "-q", is_flag=True, help="No summary lines on standard error.")
def live(interface: str, bpf: str | None, duration: float | None, fmt: str | None, output: str | None,
         write_pcap: str | None, layers: str | None, all_layers: bool, config_path: str | None,
         summary_every: float, quiet: bool) -> None:
    """Classify traffic on a network interface as it arrives.

    A flow's record is written when the flow ends (FIN/RST, idle timeout);
    Ctrl-C or --duration ends and writes every open flow.  Capturing needs
    root or CAP_NET_RAW.
    """
    from .live import LiveCaptureError

    if output is not None and write_pcap is not None and os.path.realpath(output) == os.path.realpath(write_pcap):
        raise InputError(f"{output}: -o and --write-pcap name the same file; the records and the packets "
                         "would overwrite each other")
    config, plugins = _load(config_path, layers, all_layers)
    _warn_failed(plugins)
    clf = Classifier(config=config, plugins=plugins)
    # The output is opened once the interface is (on_ready): a usage error (no such interface, a bad
    # filter, an unwritable --write-pcap) must not have emptied an existing -o file first.
    out: IO[str] | None = None
    writer: RecordWriter | None = None
    counts: Counter[str] = Counter()
    last_summary = time.time()

    def summarise() -> None:
        # After a record and at every clock tick: flows that stay open (a flood, long connections)
        # write no record for minutes, and the summary is for exactly those times.
        nonlocal last_summary
        now = time.time()
        if not quiet and summary_every and now - last_summary >= summary_every:
            last_summary = now
            _live_summary(clf, counts)

    def ready(src: Any) -> None:
        nonlocal out, writer
        out, writer = _open_writer(output, fmt, config.all_layers)
        if writer.fmt == "table":
            writer = RecordWriter(out, "jsonl", config.all_layers)  # a table cannot stream; live output must
        if not quiet:
            _err(f"listening on {src.interface}, link type {src.linktype}")

    try:
        flows = clf.classify_live(interface, bpf=bpf, duration=duration, write_pcap=write_pcap,
                                  on_ready=ready, on_tick=summarise)
        while True:
            try:
                for flow in flows:
                    assert out is not None and writer is not None  # ready() came first
                    record = flow_record(flow, config.all_layers)
                    counts[record["protocol"]] += 1  # first: a write a signal catches is completed at close
                    writer.write(record)
                    out.flush()
                    summarise()
                break
            except KeyboardInterrupt:
                # The first Ctrl-C can come while a record is written here (a slow reader: the
                # write blocks), outside classify_live, which then never sees it: stop the capture
                # the same way and go on, so the open flows are still written.
                src = clf.last_live
                if src is None or src.interrupted or src.closed:  # closed: the open flows are being written
                    raise
                src.interrupted = True
                src.stop()
    except LiveCaptureError as exc:
        _err(f"error: {exc}")
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt as exc:  # a second Ctrl-C (or SIGTERM), while the open flows were being written
        message, code = _stopped(exc)
        # The writer's count: a record the signal caught in its write is written at close (see _put).
        _err(f"{message}: {len(clf.engine.table)} open flows not written "
             f"({writer.count if writer is not None else 0} written)")
        sys.exit(code)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(EXIT_OK)
    finally:
        if writer is not None:
            writer.close()
        if output and out is not None:
            out.close()
        clf.close()
    if not quiet:
        _live_summary(clf, counts, final=True)
    sys.exit(EXIT_OK)


def _live_summary(clf: Classifier, counts: "Counter[str]", final: bool = False) -> None:
    src = clf.last_live
    top = ", ".join(f"{name} {n}" for name, n in counts.most_common(5)) or "none yet"
    head = "stopped" if final else time.strftime("%H:%M:%S")
    dropped = src.dropped if src else 0
    lost = f", {dropped} dropped by the kernel" if dropped or (final and dropped is not None) else ""
    _err(f"{head}: {src.packets if src else 0} packets{lost}, {sum(counts.values())} flows written, "
         f"{len(clf.engine.table)} open; top: {top}")


#: Lines of a JSONL file that `dpi report` skipped, named one by one; past that only counted.
SKIPPED_NAMED = 5


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default="report.html",
              show_default=True, help="The HTML file to write.")
@click.option("--title", default="dpicore report", show_default=True, help="Heading of the report.")
@click.option("--layers", "-l", default=None, metavar="A,B", help="Run only these layers (captures only).")
@click.option("--all-layers", is_flag=True, help="Ask every layer, so the report can show where layers agree.")
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False), default=None,
              help="TOML configuration (captures only).")
def report(paths: tuple[str, ...], output: str, title: str, layers: str | None, all_layers: bool,
           config_path: str | None) -> None:
    """Write a self-contained HTML report for captures or JSONL record files.

    PATHS may be capture files (classified now), directories of them, or
    JSONL files written by 'dpi classify --format jsonl'.  The report shows
    totals, protocols by flows and bytes, traffic over time, top talkers,
    the flows that stayed Unknown and, with --all-layers, where layers agree.
    """
    from .decode import is_capture
    from .report import ReportError, read_records, write_report

    records: list[dict] = []
    damaged = False
    clf: Classifier | None = None
    files = expand_paths(paths, jsonl=True)
    _refuse_to_overwrite(output, files)  # the report would replace the capture (or JSONL) it was made from
    try:
        for given in files:
            with contextlib.ExitStack() as stack:
                # Sniffing reads the start of the file, and it is then read again from the start: a pipe
                # or FIFO (/dev/stdin, <(zcat ...)) cannot be, so it is read into a temporary file first.
                path = str(given)
                if not os.path.isfile(path):
                    import shutil
                    import tempfile

                    spool = stack.enter_context(tempfile.NamedTemporaryFile(prefix="dpi-report-"))
                    with open(path, "rb") as fh:
                        shutil.copyfileobj(fh, spool)
                    spool.flush()
                    path = spool.name

                def named(text: str) -> str:
                    return text.replace(path, str(given)) if path != str(given) else text

                with open(path, "rb") as fh:
                    head = fh.read(4)
                if not head:
                    _err(f"{given}: empty file, not a capture")
                    damaged = True
                    continue
                if not is_capture(head):
                    skipped: list[str] = []
                    try:
                        records.extend(read_records(path, skipped))
                    except ReportError as exc:
                        raise ReportError(named(str(exc))) from None
                    for line in skipped[:SKIPPED_NAMED]:
                        _err(named(line) + ": skipped")
                    if len(skipped) > SKIPPED_NAMED:
                        _err(f"{given}: {len(skipped) - SKIPPED_NAMED} more lines skipped")
                    damaged |= bool(skipped)
                    continue
                if clf is None:
                    config, plugins = _load(config_path, layers, all_layers)
                    _warn_failed(plugins)
                    clf = Classifier(config=config, plugins=plugins)
                records.extend(flow_record(f, clf.config.all_layers) for f in clf.classify_pcap(path))
                src = clf.last_source
                if src is not None:
                    for line in src.problems:
                        _err(named(line))
                    damaged |= src.damaged
        with _writing(output):
            write_report(records, output, title, [str(p) for p in files])
    except ReportError as exc:
        _err(f"error: {exc}")
        sys.exit(EXIT_DAMAGED if records or damaged else EXIT_USAGE)
    finally:
        if clf is not None:
            clf.close()
    _err(f"wrote {output}: {len(records)} flows")
    sys.exit(EXIT_DAMAGED if damaged else EXIT_OK)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Apply this configuration (enabled/blocked layers, priorities).")
def plugins(as_json: bool, config_path: str | None) -> None:
    """List installed plugins: id, distribution, version, priority, status."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise InputError(str(exc)) from None
    config.require = []  # listing must work even when a required layer is missing
    ps = discover(config)
    rows = sorted(ps.statuses.values(), key=lambda s: (s.status != LOADED, s.priority or 0, s.id))
    ps.close()
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    if not rows:
        click.echo("no plugins installed (install dpi-heuristics, dpi-ndpi, dpi-lpi or dpi-ml)")
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("id", "distribution", "version", "priority", "status", "detail"):
        table.add_column(col)
    for r in rows:
        detail = r.reason if r.status != LOADED else r.description
        table.add_row(*(escape(printable(x)) for x in (r.id, r.distribution or "-", r.version or "-",
                                                       "-" if r.priority is None else str(r.priority), r.status,
                                                       detail)))
    Console(width=160).print(table)


if __name__ == "__main__":  # pragma: no cover
    main()
