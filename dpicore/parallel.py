"""Classify capture files with several processes on one machine (``dpi classify -j N``).

::

    from dpicore.parallel import classify_files

    run = classify_files(["big.pcap", "other.pcapng"], jobs=4)   # files (dpi classify expands directories)
    for record in run:          # JSONL records (dicts), as workers send them
        ...
    run.damaged                 # some file was damaged (as `dpi classify` exits 1)

    # or the JSONL text itself, serialised by the workers (what `dpi classify -f jsonl` writes):
    for chunk in classify_files(["big.pcap"], jobs=4, jsonl=True):
        sys.stdout.write(chunk)   # whole lines

    # or the workers write that text to a regular file themselves (the chunks are then empty):
    with open("records.jsonl", "wb") as f:
        for _ in classify_files(["big.pcap"], jobs=4, jsonl=True, fd=f.fileno()):
            pass

Work is cut into *tasks* ``(file, shard i of n)``.  A large file is split
by a hash of each flow's address pair: every worker reads the whole file
but keeps only the flows whose key hashes to its shard
(:func:`dpicore.fastpath.shard_of`; numpy drops the other shards' packets
right after decoding their headers, so a worker groups and accounts only
its own share), so each flow lives in exactly one process and is
classified as it would be in one process.  A small file is one task
(reading it N times would cost more than it saves).  Each worker builds
its own :class:`~dpicore.api.Classifier` from the same
:class:`~dpicore.config.Config` — plugins such as nDPI hold native state
that cannot cross a fork — and streams its records back in small batches
through a bounded queue, so memory stays flat however large the output.
The records are those of one process; their order is not.

JSONL for a regular file is written by the workers themselves (``fd``),
each in whole-line chunks: on Linux a write to a regular file through an
open file description that processes share is atomic with respect to
the file offset, so the chunks never overlap.  Passing the text through
the parent cost the workers the pipe and the parent the copies: on the
real-client benchmark input the parent's ~0.1 s of CPU ran on the
workers' two cores, and `-j 2` took 2.17-2.28 s against 2.10-2.15 s
(docs/performance-history.md, run BQ).

Flows between the same two hosts share a shard, so the state one flow
leaves for another (an FTP control connection announcing its data
connection) is in the right process.  What differs from one process by
design: the flow cap (``engine.max_flows``) applies per worker; see
docs/cluster.md.

The task planning, the per-task run and the per-file damage report are
shared with :mod:`dpicore.cluster`, which runs the same tasks on Dask.
"""

from __future__ import annotations

import io
import logging
import multiprocessing as mp
import os
import queue
import shutil
import signal
import stat
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Generator, Iterable, Iterator

import attrs

from .api import Classifier, freeze_startup
from .config import Config
from .decode.walks import SharedWalks
from .output import RecordWriter, flow_record

#: Files at least this large are split over every worker by address pair (``-j N``).
SPLIT_BYTES = 8 << 20
#: A split file whose largest shard had more than this share of its packets is reported as lopsided.
LOPSIDED = 0.75
#: Records per message from a worker; a batch is also sent once it is this old (seconds).
BATCH_RECORDS = 512
BATCH_SECONDS = 0.2
#: Record batches in flight per worker before a worker waits for the parent (backpressure).
QUEUE_PER_WORKER = 16


@attrs.frozen
class Task:
    """Shard ``shard`` of ``shards`` of one file (``shards == 1``: the whole file)."""

    path: str
    shard: int = 0
    shards: int = 1
    #: Directory where the processes reading this file share their record walks (None: not shared).
    walks: str | None = None

    def split(self) -> tuple[int, int] | None:
        return (self.shard, self.shards) if self.shards > 1 else None


@attrs.define
class TaskSummary:
    """What a task reports besides its records: the capture's damage and the engine's counters."""

    problems: list[str]
    #: The file could not be read to its end (or at all).
    fatal: bool
    undecodable: int
    unsupported: bool
    #: Packets of this shard (the shards' packets add up to the file's).
    packets: int
    flows: int
    evicted: int
    layer_errors: int
    #: Last error message per layer that raised during this task.
    last_errors: dict[str, str]
    #: Layers that failed to load where the task ran, with why (a Dask worker without a library the
    #: client has); -j workers load what the parent checked.
    unavailable: dict[str, str] = attrs.field(factory=dict)


def jobs_count(jobs: int) -> int:
    """``jobs``, with 0 meaning the cores this process may use."""
    if jobs < 0:
        raise ValueError("jobs must be >= 0")
    if jobs:
        return jobs
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def plan(paths: Iterable[str | Path], shards_for: Callable[[int], int], absolute: bool = False) -> list[Task]:
    """Tasks for ``paths``: ``shards_for(size in bytes)`` shards per file (1 for a missing file).

    ``absolute`` makes the paths absolute, for workers whose working
    directory differs (Dask workers); otherwise damage reports name the
    file as given, as a one-process run does.
    """
    tasks: list[Task] = []
    for p in paths:
        path = os.path.abspath(p) if absolute else str(p)
        try:
            n = max(1, shards_for(os.path.getsize(path)))
        except OSError:
            n = 1  # the task reports the file as unreadable, once
        tasks.extend(Task(path, i, n) for i in range(n))
    return tasks


class Batch:
    """A task's records on their way back: dicts, or JSONL text written by the worker.

    Serialising in the workers keeps the parent (which also has to write
    everything) from becoming the bottleneck: it then only copies text.
    """

    def __init__(self, jsonl: bool, all_layers: bool) -> None:
        self.count = 0
        self._records: list[dict[str, Any]] = []
        self._text: io.StringIO | None = io.StringIO() if jsonl else None
        self._writer = RecordWriter(self._text, "jsonl", all_layers) if self._text is not None else None

    def add(self, record: dict[str, Any]) -> None:
        self.count += 1
        if self._writer is not None:
            self._writer.write(record)
        else:
            self._records.append(record)

    def take(self) -> tuple[int, list[dict[str, Any]] | str]:
        """(records, the records or their JSONL text), emptying the batch."""
        count, self.count = self.count, 0
        if self._text is None:
            records, self._records = self._records, []
            return count, records
        text = self._text.getvalue()
        self._text.seek(0)
        self._text.truncate()
        return count, text


def run_task(clf: Classifier, task: Task, emit: Callable[[dict[str, Any]], None]) -> TaskSummary:
    """Classify one task with ``clf``, passing each flow's record to ``emit``."""
    engine = clf.engine
    before = (engine.stats.packets, engine.stats.flows, engine.stats.evicted, engine.stats.layer_errors)
    layer_errors = {layer.id: layer.errors for layer in engine.layers}
    all_layers = clf.config.all_layers
    walks = SharedWalks(task.walks) if task.walks is not None else None
    for flow in clf.classify_pcap(task.path, shard=task.split(), walks=walks):
        emit(flow_record(flow, all_layers))
    src = clf.last_source
    assert src is not None
    stats = engine.stats
    return TaskSummary(
        problems=list(src.problems), fatal=src.fatal is not None, undecodable=src.undecodable,
        unsupported=bool(src.unsupported), packets=src.packets, flows=stats.flows - before[1],
        evicted=stats.evicted - before[2], layer_errors=stats.layer_errors - before[3],
        last_errors={layer.id: layer.last_error for layer in engine.layers
                     if layer.errors > layer_errors.get(layer.id, 0)})


@attrs.define
class FileReport:
    """One file's damage report, merged from its shards.

    Every shard reads the whole file, so each sees the same damage; the
    report keeps shard 0's lines, so they are printed once per file.
    """

    path: str
    shards: int
    done: int = 0
    problems: list[str] = attrs.field(factory=list)
    fatal: bool = False
    undecodable: int = 0
    unsupported: bool = False
    packets: int = 0
    #: Packets of the shard that had the most.
    largest: int = 0

    @property
    def complete(self) -> bool:
        return self.done == self.shards

    @property
    def lopsided(self) -> bool:
        """Split, but one shard had most of the packets: a shard is an address pair, and a capture
        of few host pairs (one recording between two hosts) cannot be spread."""
        return self.shards > 1 and self.largest > LOPSIDED * self.packets

    @property
    def damaged(self) -> bool:
        """As :attr:`CaptureSource.damaged` of a one-process run of the whole file."""
        return self.fatal or self.undecodable > 0 or (self.unsupported and self.packets == 0)


class Tally:
    """Merges task summaries into per-file reports and run-wide counters."""

    def __init__(self, tasks: list[Task]) -> None:
        self.files: dict[str, FileReport] = {}
        for t in tasks:
            self.files.setdefault(t.path, FileReport(t.path, t.shards))
        self.packets = 0
        self.flows = 0
        self.records = 0
        self.evicted = 0
        self.layer_errors = 0
        self.last_errors: dict[str, str] = {}
        self.unavailable: dict[str, str] = {}

    def add(self, task: Task, s: TaskSummary) -> FileReport | None:
        """Account one finished task; returns the file's report when it was the file's last task."""
        rep = self.files[task.path]
        rep.done += 1
        if task.shard == 0:
            rep.problems = s.problems
            rep.fatal, rep.undecodable, rep.unsupported = s.fatal, s.undecodable, s.unsupported
        rep.packets += s.packets
        rep.largest = max(rep.largest, s.packets)
        self.packets += s.packets
        self.flows += s.flows
        self.evicted += s.evicted
        self.layer_errors += s.layer_errors
        self.last_errors.update(s.last_errors)
        self.unavailable.update(s.unavailable)
        return rep if rep.complete else None

    @property
    def damaged(self) -> bool:
        return any(r.damaged for r in self.files.values())


class WorkerError(RuntimeError):
    """A worker failed outside the capture (a bug, a plugin that cannot start); carries its traceback."""


class ParallelRun:
    """Records of ``paths`` classified by ``jobs`` processes; iterate once.

    ``on_file`` is called with each file's :class:`FileReport` as soon as
    the file's last task is done.  After the iteration, :attr:`tally` holds
    the totals and :attr:`damaged` says whether any file was damaged.
    With ``jsonl=True`` the iteration yields JSONL text (whole lines, many
    records per chunk) instead of record dicts; with ``fd`` too, the file
    descriptor of a regular file, the workers write that text to it
    themselves where they can (:attr:`direct`, see :func:`_shares_offsets`)
    and the chunks yielded are empty (one per batch written: progress);
    flush what the caller wrote to that file before :meth:`start`, or its
    buffered text lands after theirs.
    """

    def __init__(self, paths: Iterable[str | Path], jobs: int = 0, config: Config | None = None,
                 split_bytes: int = SPLIT_BYTES, on_file: Callable[[FileReport], None] | None = None,
                 jsonl: bool = False, fd: int | None = None) -> None:
        self.jobs = jobs_count(jobs)
        self.config = config or Config()
        n = self.jobs
        self.tasks = plan(paths, lambda size: n if size >= split_bytes else 1)
        self.tally = Tally(self.tasks)
        self.on_file = on_file
        self.jsonl = jsonl
        self.fd = fd
        #: The workers write the JSONL to ``fd`` (set by :meth:`start`).
        self.direct = False
        self._gen: Generator[dict[str, Any], None, None] | None = None
        self._procs: list[Any] = []
        self._todo: Any = None
        self._results: Any = None
        self._walks: str | None = None

    @property
    def damaged(self) -> bool:
        return self.tally.damaged

    def __iter__(self) -> Iterator[Any]:
        if self._gen is not None:
            raise RuntimeError("a ParallelRun is iterated once")
        self._gen = self._run()
        return self._gen

    def start(self) -> None:
        """Start the workers now (iterating starts them otherwise): their start-up — imports,
        loading the layers — then overlaps whatever the caller does meanwhile."""
        if self._procs or not self.tasks:
            return
        ctx = _context()
        workers = min(self.jobs, len(self.tasks))
        self._todo = ctx.Queue()
        self._results = ctx.Queue(maxsize=QUEUE_PER_WORKER * workers)
        level = logging.getLogger().getEffectiveLevel()
        # A forked worker has the descriptor; one from a forkserver or spawned has not.
        self.direct = (self.jsonl and self.fd is not None and ctx.get_start_method() == "fork"
                       and _shares_offsets(self.fd))
        fd = self.fd if self.direct else None
        self._procs = [ctx.Process(target=_worker, args=(self.config, self._todo, self._results, n, level, self.jsonl,
                                                         fd), daemon=True, name=f"dpi-worker-{n}")
                       for n in range(workers)]
        # Workers first, tasks after: the first put starts the queue's feeder thread, and a fork
        # must not copy a process with a second thread (one may hold a lock the child then needs).
        for p in self._procs:
            p.start()
        if any(task.shards > 1 for task in self.tasks):
            try:  # a split file's shards share its record walks (removed at _shutdown)
                self._walks = tempfile.mkdtemp(prefix="dpi-walks-")
            except OSError:  # no writable temporary directory: every worker walks for itself
                self._walks = None
        for i, task in enumerate(self.tasks):
            if task.shards > 1 and self._walks is not None:
                task = attrs.evolve(task, walks=os.path.join(self._walks, str(i - task.shard)))
            self._todo.put((i, task))
        for _ in range(workers):
            self._todo.put(None)

    def close(self) -> None:
        """Stop the workers now (they are also stopped when the iteration ends or is abandoned)."""
        if self._gen is not None:
            self._gen.close()
        self._shutdown()

    def __enter__(self) -> "ParallelRun":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _shutdown(self) -> None:
        _stop(self._procs)
        for q in (self._todo, self._results):
            if q is not None:
                q.cancel_join_thread()
                q.close()
        self._todo = self._results = None
        if self._walks is not None:
            shutil.rmtree(self._walks, ignore_errors=True)
            self._walks = None

    def _run(self) -> Generator[dict[str, Any], None, None]:
        if not self.tasks:
            return
        try:
            self.start()
            results, procs = self._results, self._procs
            live = len(procs)
            while live:
                try:
                    kind, n, payload = results.get(timeout=1.0)
                except queue.Empty:
                    dead = [p for p in procs if p.exitcode not in (None, 0)]
                    if dead:
                        raise WorkerError(f"{dead[0].name} died (exit code {dead[0].exitcode})") from None
                    continue
                if kind == "records":
                    count, data = payload
                    self.tally.records += count
                    if self.jsonl:
                        yield data
                    else:
                        yield from data
                elif kind == "done":
                    rep = self.tally.add(self.tasks[n], payload)
                    if rep is not None and self.on_file is not None:
                        self.on_file(rep)
                elif kind == "bye":
                    live -= 1
                elif kind == "unwritable":  # a worker's write to fd failed: as the parent's own would
                    raise OSError(*payload)
                else:  # "error"
                    raise WorkerError(f"worker {n} failed:\n{payload}")
        finally:
            self._shutdown()


def classify_files(paths: Iterable[str | Path], jobs: int = 0, config: Config | None = None,
                   split_bytes: int = SPLIT_BYTES, on_file: Callable[[FileReport], None] | None = None,
                   jsonl: bool = False, fd: int | None = None) -> ParallelRun:
    """Classify capture files with ``jobs`` processes (0: one per core); iterate the result for
    records (or, with ``jsonl``, for chunks of JSONL text; with ``fd`` as well, the workers write
    them to that regular file where they can, see :class:`ParallelRun`)."""
    return ParallelRun(paths, jobs, config, split_bytes, on_file, jsonl, fd)


def _shares_offsets(fd: int) -> bool:
    """Whether processes writing whole chunks to ``fd`` at once leave them whole and apart: a regular
    file on Linux, where write() holds the shared file offset for its whole length (since 3.14;
    POSIX asks it of regular files, not every system does it), or /dev/null (``-o /dev/null``, to time
    a run), which takes every write whole.  A pipe, a terminal or a socket goes through the parent: a
    write there can be cut short, or wait for a reader."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        st = os.fstat(fd)
        if stat.S_ISCHR(st.st_mode):
            return st.st_rdev == os.stat(os.devnull).st_rdev
        return stat.S_ISREG(st.st_mode)
    except OSError:
        return False


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (a regular file writes it whole but at its end or limit)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _context(threads: int | None = None) -> Any:
    """How to start the workers, for a process running ``threads`` threads (default: this one's).

    fork, when this process has a single thread: a worker then starts with
    everything already imported here (dpicore, numpy), which saves the
    ~0.4 s a forkserver spends importing them again before the first worker
    (a third of a `-j 2` run's fixed cost).  `dpi classify` starts its
    workers after it has closed the plugins it loaded to check the
    configuration, so no layer's native state is copied; a program that
    forks us with nDPI loaded only gives the workers a copy they never
    touch (each builds its own Classifier).
    With other threads running (a fork would copy locks they may hold)
    forkserver, and spawn where neither exists.
    """
    methods = mp.get_all_start_methods()
    if threads is None:
        threads = threading.active_count()
    if "fork" in methods and threads == 1:
        return mp.get_context("fork")
    if "forkserver" in methods:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["dpicore.parallel"])
        return ctx
    return mp.get_context("spawn")


class _Unwritable(OSError):
    """A worker's write of records to the output failed (the parent reports it as its own write's)."""


def _terminated(signum: int, frame: Any) -> None:
    """A worker's SIGTERM handler: exit now, as the default action does, without the cleanup a
    normal exit runs (the parent is stopping us)."""
    os._exit(128 + signum)


def _stop(procs: list[Any]) -> None:
    """End every worker: normally they have exited; on Ctrl-C or an error they are terminated."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + 5.0
    for p in procs:
        if p.pid is None:
            continue
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()


def _worker(config: Config, todo: Any, results: Any, number: int, log_level: int, jsonl: bool,
            fd: int | None = None) -> None:
    """A worker process: one Classifier, tasks from ``todo`` until the sentinel, records to ``results``
    (or, with ``fd``, their JSONL text to that file and their count to ``results``)."""
    # The parent's logging level: a plugin that fails to load was reported there already.
    logging.basicConfig(level=log_level, format="%(levelname)s: %(message)s")
    # Ctrl-C reaches the whole process group; the parent alone handles it and terminates us.  SIGTERM
    # (the parent's terminate()) ends us as soon as the call under way returns, whatever handler `dpi`
    # gave the process we forked from: a write of records to a file (fd) is not cut inside a line, as
    # the default action would cut it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _terminated)
    parent = os.getppid()

    def put(item: tuple[str, int, Any]) -> None:
        while True:
            try:
                results.put(item, timeout=1.0)
                return
            except queue.Full:
                if os.getppid() != parent:  # the parent is gone: nobody will read
                    os._exit(1)

    try:
        clf = Classifier(config=config)
    except BaseException:
        put(("error", number, traceback.format_exc()))
        put(("bye", number, None))
        return
    freeze_startup()
    with clf:
        while True:
            item = todo.get()
            if item is None:
                break
            index, task = item
            batch = Batch(jsonl, config.all_layers)
            started = time.monotonic()

            def send() -> None:
                count, data = batch.take()
                if fd is not None and isinstance(data, str):  # JSONL text (fd comes with jsonl only)
                    try:
                        _write_all(fd, data.encode())
                    except OSError as exc:
                        raise _Unwritable(exc.errno, exc.strerror) from exc
                    data = ""
                put(("records", number, (count, data)))

            def emit(record: dict[str, Any]) -> None:
                nonlocal started
                batch.add(record)
                if batch.count >= BATCH_RECORDS or time.monotonic() - started >= BATCH_SECONDS:
                    send()
                    started = time.monotonic()

            try:
                summary = run_task(clf, task, emit)
                if batch.count:
                    send()
            except _Unwritable as exc:
                put(("unwritable", number, (exc.errno, exc.strerror)))
                break
            except BaseException:
                put(("error", number, f"{task.path} (shard {task.shard}/{task.shards}):\n"
                     + traceback.format_exc()))
                break
            put(("done", index, summary))
    put(("bye", number, None))
    results.close()
    results.join_thread()
