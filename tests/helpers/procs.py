"""Child processes the tests interrupt as a terminal would, and never wait for without end."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
from typing import Iterator


def sigint_as_default() -> None:
    """``Popen(preexec_fn=sigint_as_default)``: SIGINT back to its default in the child.

    A suite run in the background (``cmd &`` from a shell without job control, as a CI runner may
    start it) has SIGINT ignored; every child inherits that, and Python then never turns SIGINT into
    KeyboardInterrupt, so a test that sends it to ``dpi`` would wait for an exit that never comes.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def killed_after(proc: subprocess.Popen, seconds: float) -> Iterator[None]:  # type: ignore[type-arg]
    """Kill ``proc`` if the block has not ended within ``seconds``: a read of its output to the end then
    ends (and the test fails on what it got) instead of hanging the suite."""
    timer = threading.Timer(seconds, proc.kill)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
