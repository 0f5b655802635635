"""Classify capture files on a Dask distributed cluster (``dpi classify --cluster ADDRESS``).

::

    from dpicore.cluster import classify_on_cluster

    with classify_on_cluster(["/shared/caps/"], "tcp://scheduler:8786") as run:
        for record in run:      # JSONL records (dicts), task by task as tasks complete
            ...
    run.damaged

The work is the same tasks as ``-j N`` (:mod:`dpicore.parallel`): a small
file is one task, a large one is split by address pair into one shard per
:data:`SHARD_BYTES` of file, so a flow always lives in one task.  Each task
runs a :class:`~dpicore.api.Classifier` on the worker (one per worker thread
and configuration, kept for the next task) and returns its records; the
client writes them as tasks complete (``distributed.as_completed``), so the
output streams per task and the records of one run equal the local run's.

Workers open the files themselves, by the absolute path the client was
given: the captures must be at the same path on every worker (a shared
filesystem, or the same copy everywhere), and dpicore with the same layers
must be installed there.  See docs/cluster.md.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .api import Classifier
from .config import Config
from .parallel import Batch, FileReport, Tally, Task, TaskSummary, plan, run_task
from .plugins import FAILED

#: A file gets one shard (task) per this many bytes.
SHARD_BYTES = 50 << 20
#: Seconds to wait for the scheduler when connecting.
CONNECT_TIMEOUT = 10.0


class ClusterError(RuntimeError):
    """The cluster cannot be used (not installed, unreachable) or a task failed there."""


def shards_for(size: int, shard_bytes: int = SHARD_BYTES) -> int:
    """Shards for a file of ``size`` bytes: one per ``shard_bytes``, at least one."""
    return max(1, -(-size // shard_bytes))


class ClusterRun:
    """Records of ``paths`` classified on the Dask cluster at ``address`` (or an existing
    ``distributed.Client``); iterate once.  Connects when created, so an unreachable
    scheduler raises :class:`ClusterError` before anything is written.

    ``on_file`` is called with each file's :class:`~dpicore.parallel.FileReport`
    when the file's last task is done; :attr:`tally` holds the totals.
    With ``jsonl=True`` the workers serialise the records and the iteration
    yields JSONL text (one chunk per task) instead of record dicts.
    """

    def __init__(self, paths: Iterable[str | Path], address: Any, config: Config | None = None,
                 shard_bytes: int = SHARD_BYTES, on_file: Callable[[FileReport], None] | None = None,
                 jsonl: bool = False) -> None:
        try:
            import distributed
        except ImportError:
            raise ClusterError("the cluster needs Dask distributed: pip install 'dpicore[cluster]'") from None
        self.config = config or Config()
        self.tasks = plan(paths, lambda size: shards_for(size, shard_bytes), absolute=True)
        self.tally = Tally(self.tasks)
        self.on_file = on_file
        self.jsonl = jsonl
        if isinstance(address, distributed.Client):
            self.client, self._own = address, False
        else:
            if isinstance(address, str):
                # Dask's own parser first: a Client that fails on the address in its constructor
                # leaves a half-built object whose finaliser waits 20 s and prints a traceback.
                from distributed.comm import get_address_host_port

                try:
                    get_address_host_port(address)
                except (ValueError, NotImplementedError) as exc:
                    raise ClusterError(f"not a Dask scheduler address: {address} ({exc})") from None
                if address.startswith("tls://"):  # without certificates the Client fails as above
                    from distributed.security import Security

                    if Security().get_connection_args("client").get("ssl_context") is None:
                        raise ClusterError(f"{address}: a tls:// scheduler needs Dask's TLS settings "
                                           "(distributed.comm.tls.ca-file, .client.cert and .client.key "
                                           "in the Dask configuration); none are set")
            try:
                self.client = distributed.Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
            except (OSError, TimeoutError, ValueError) as exc:
                raise ClusterError(f"cannot connect to the Dask scheduler at {address}: {exc}") from None
            self._own = True
        self._used = False

    @property
    def damaged(self) -> bool:
        return self.tally.damaged

    def workers(self) -> int:
        """How many workers the scheduler has now (0: the tasks will wait for the first)."""
        return len(self.client.scheduler_info().get("workers", {}))

    def __iter__(self) -> Iterator[Any]:
        if self._used:
            raise RuntimeError("a ClusterRun is iterated once")
        self._used = True
        return self._run()

    def _run(self) -> Iterator[Any]:
        from distributed import as_completed

        task_of: dict[Any, Task] = {}
        futures = []
        for i, task in enumerate(self.tasks):
            # Earlier files first (higher priority), so records come roughly in file order.
            fut = self.client.submit(_cluster_task, self.config, task, self.jsonl, pure=False, priority=-i)
            task_of[fut.key] = task
            futures.append(fut)
        try:
            for fut in as_completed(futures, loop=self.client.loop):
                task = task_of[fut.key]
                try:
                    (count, data), summary = fut.result()
                except Exception as exc:
                    raise ClusterError(f"{task.path} (shard {task.shard}/{task.shards}) failed on the "
                                       f"cluster: {type(exc).__name__}: {exc}") from exc
                fut.release()
                self.tally.records += count
                if self.jsonl:
                    yield data
                else:
                    yield from data
                rep = self.tally.add(task, summary)
                if rep is not None and self.on_file is not None:
                    self.on_file(rep)
        finally:
            self.client.cancel([f for f in futures if not f.done()])

    def close(self) -> None:
        if self._own:
            self.client.close()

    def __enter__(self) -> "ClusterRun":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def classify_on_cluster(paths: Iterable[str | Path], address: Any, config: Config | None = None,
                        shard_bytes: int = SHARD_BYTES, on_file: Callable[[FileReport], None] | None = None,
                        jsonl: bool = False) -> ClusterRun:
    """Classify capture files on the Dask cluster at ``address`` (``tcp://host:8786``) or with a
    ``distributed.Client``; iterate the result for records (``jsonl``: JSONL text), close it
    (or use ``with``) after."""
    return ClusterRun(paths, address, config, shard_bytes, on_file, jsonl)


# -- on the worker -----------------------------------------------------------------------------------------

_local = threading.local()


def _classifier(config: Config) -> Classifier:
    """This worker thread's Classifier for ``config`` (plugins are loaded once, not per task)."""
    cache: dict[str, Classifier] = getattr(_local, "classifiers", None) or {}
    _local.classifiers = cache
    key = repr(config)
    clf = cache.get(key)
    if clf is None:
        clf = cache[key] = Classifier(config=config)
    return clf


def _cluster_task(config: Config, task: Task, jsonl: bool = False
                  ) -> tuple[tuple[int, list[dict[str, Any]] | str], TaskSummary]:
    """Run one task on a worker; returns (record count, records or JSONL text) and the summary."""
    if not os.path.exists(task.path):
        # Reported like a local missing file, but naming the worker: the usual cause is a path
        # that exists on the client only.
        line = (f"{task.path}: no such file on worker {socket.gethostname()} (workers read captures "
                "from the same path as the client: use a shared filesystem)")
        return Batch(jsonl, config.all_layers).take(), TaskSummary([line], True, 0, False, 0, 0, 0, 0, {})
    batch = Batch(jsonl, config.all_layers)
    clf = _classifier(config)
    summary = run_task(clf, task, batch.add)
    failed = [st for st in clf.plugins.statuses.values() if st.status == FAILED]
    if failed:  # the client loaded these layers; without a word their verdicts would just be missing
        host = socket.gethostname()
        summary.unavailable = {st.id: f"on worker {host}: {st.reason}" for st in failed}
    return batch.take(), summary
