"""Record walks of one pcap file, shared by the processes that each read all of it (``-j N``).

Under ``-j N`` every worker reads the whole of a split file and keeps its
shard's flows (see :mod:`dpicore.parallel`).  Finding where each record
starts is a Python loop, one length per record (about a fifth of a
microsecond each).  The walk of a chunk is a function of the chunk's bytes
alone, and every worker reads the same bytes in the same chunks, so the
first worker to reach a chunk walks it and leaves the record starts in a
directory for the others: with N workers each walks about 1/N of the file.

It is a cache and nothing more: a chunk whose walk is not there in time
(its walker is slow or died, or it was already deleted) is walked again,
and a walk taken from the directory is checked against the bytes before it
is used (:func:`dpicore.decode.batch.checked_walk`), so a wrong file there
can cost time but never a record.
"""

from __future__ import annotations

import os
import time

import numpy as np

#: How long a worker waits for another one's walk of a chunk before walking it itself (seconds).  A
#: walk takes a few milliseconds; the wait only covers a walker that lost its core for a while.
WAIT = 0.5
#: Walks this many chunks behind the newest one are deleted: the directory stays small, and a worker
#: that far behind walks for itself.
KEEP = 64


class SharedWalks:
    """The walks of one file's chunks in ``directory`` (made by whoever comes first).

    :meth:`take` gives a chunk's record starts if another process walked
    it, else None: then the caller walks it and offers the result to
    :meth:`give` (kept only if this process claimed the chunk).
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._claimed: set[int] = set()
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError:
            pass  # take() then finds no directory, and every chunk is walked here

    def _path(self, chunk: int, what: str) -> str:
        return os.path.join(self.directory, f"{chunk}.{what}")

    def take(self, chunk: int) -> np.ndarray | None:
        """The record starts (int64) of ``chunk`` if another process walked it (waiting up to
        :data:`WAIT` for one that is walking it), else None: the caller walks it."""
        try:
            os.close(os.open(self._path(chunk, "claim"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            pass
        except OSError:  # the directory is gone or full: walk here
            return None
        else:
            self._claimed.add(chunk)
            return None
        deadline = time.monotonic() + WAIT
        pause = 0.0002
        while True:
            try:
                return np.fromfile(self._path(chunk, "starts"), dtype=np.int64)
            except FileNotFoundError:
                # Not walked yet, or walked and deleted already (this process is far behind).
                if time.monotonic() >= deadline or not os.path.exists(self._path(chunk, "claim")):
                    return None
                time.sleep(pause)
                pause = min(pause * 2, 0.005)
            except (OSError, ValueError):
                return None

    def give(self, chunk: int, starts: list[int]) -> None:
        """Leave this process's walk of ``chunk`` for the others (if it claimed the chunk)."""
        if chunk not in self._claimed:
            return
        self._claimed.discard(chunk)
        try:
            partial = self._path(chunk, f"{os.getpid()}.part")
            np.array(starts, dtype=np.int64).tofile(partial)
            os.replace(partial, self._path(chunk, "starts"))  # whole or not at all, for a reader
        except OSError:
            pass
        if chunk >= KEEP:  # the claim first: a process that far behind then walks, not waits
            for what in ("claim", "starts"):
                try:
                    os.unlink(self._path(chunk - KEEP, what))
                except OSError:
                    pass
