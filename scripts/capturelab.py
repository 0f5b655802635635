"""Run real servers and clients on loopback and record them with tcpdump.

The building blocks of scripts/make_captures.py: a :class:`Lab` owns a
temporary directory and every process it starts (and stops them all, by
pid, however the run ends); :func:`record` wraps a tcpdump that writes one
capture while a block of client commands runs.

Everything binds to 127.0.0.1 or ::1 and every client is pointed at those
addresses: no packet of a capture run leaves the machine.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Sequence

LOOPBACK = ("127.0.0.1", "::1")


class LabError(RuntimeError):
    """A server did not come up, a client failed, or a program is missing."""


def log(message: str) -> None:
    print(f"[make_captures] {message}", file=sys.stderr, flush=True)


def need(*programs: str) -> None:
    """Fail with the missing program names (scripts/install-capture-tools.sh installs them)."""
    missing = [p for p in programs if shutil.which(p) is None and not Path(p).is_file()]
    if missing:
        raise LabError(f"missing programs: {', '.join(missing)} (run: bash scripts/install-capture-tools.sh)")


def port_free(port: int, udp: bool = False, host: str = "127.0.0.1") -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as s:
        if not udp:  # TCP: ignore TIME_WAIT leftovers; UDP: reuse would hide a bound server
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """True when some socket LISTENs on TCP ``port`` of ``host``'s family (read from /proc: probing by
    connecting would put a stray connection, and a late server greeting to it, into the next capture)."""
    for table in ("/proc/net/tcp6",) if ":" in host else ("/proc/net/tcp",):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    return True
    return False


def wait_tcp(port: int, host: str = "127.0.0.1", timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until something listens on TCP ``port``, without sending a packet."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise LabError(f"server for port {port} exited with {proc.returncode}: {proc.args}")
        if listening(port, host):
            return
        time.sleep(0.05)
    raise LabError(f"nothing listens on tcp port {port} after {timeout:.0f} s")


def wait_udp_bound(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    """Wait until a UDP port is taken (a server bound it); sends nothing."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not port_free(port, udp=True, host=host):
            return
        time.sleep(0.05)
    raise LabError(f"nothing bound udp {host}:{port} after {timeout:.0f} s")


class Lab:
    """A temporary directory plus the server processes started in it.

    ``close`` stops each process it started (SIGTERM, then SIGKILL), by the
    process-group id it created, so servers that fork (sshd, dovecot,
    postgres) go away with their children.
    """

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dpicore-captures-"))
        os.chmod(self.dir, 0o755)  # servers that drop privileges (postgres, dovecot) must read it
        self.procs: list[subprocess.Popen] = []

    def path(self, name: str) -> Path:
        return self.dir / name

    def write(self, name: str, text: str | bytes, mode: int = 0o644) -> Path:
        p = self.dir / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            p.write_bytes(text)
        else:
            p.write_text(text)
        os.chmod(p, mode)
        return p

    def start(self, cmd: Sequence[str], name: str, stdin: int | None = subprocess.DEVNULL,
              env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen:
        """Start a server in its own process group; its output goes to a log file in the lab."""
        logf = open(self.dir / f"{name}.log", "ab")
        proc = subprocess.Popen(list(cmd), stdin=stdin, stdout=logf, stderr=subprocess.STDOUT, cwd=cwd or self.dir,
                                env=env, start_new_session=True)
        logf.close()
        self.procs.append(proc)
        return proc

    def server_log(self, name: str) -> str:
        p = self.dir / f"{name}.log"
        return p.read_text(errors="replace")[-2000:] if p.exists() else ""

    def stop(self, proc: subprocess.Popen, timeout: float = 5.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def close(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run(cmd: Sequence[str], input: bytes | str | None = None, timeout: float = 30.0, ok: Sequence[int] = (0,),
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run one client; its exit status must be in ``ok`` (a failed client means a useless capture)."""
    data = input.encode() if isinstance(input, str) else input
    try:
        res = subprocess.run(list(cmd), input=data, capture_output=True, timeout=timeout, env=env,
                             stdin=None if data is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"client timed out after {timeout:.0f} s: {' '.join(cmd)}") from exc
    if res.returncode not in ok:
        raise LabError(f"client exited {res.returncode}: {' '.join(cmd)}\n"
                       f"{res.stderr.decode(errors='replace')[-1500:]}")
    return res


@contextlib.contextmanager
def record(path: Path, bpf: str, interface: str = "lo", linktype: str | None = None) -> Iterator[None]:
    """tcpdump writes ``path`` while the block runs.

    The filter keeps only the ports the block uses, so other programs' loopback
    traffic stays out.  tcpdump is started before any client and stopped with
    SIGINT after a short pause so the closing FIN/ACKs are in the file.
    """
    need("tcpdump")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    # --immediate-mode: hand each packet over at once, so none is still in the kernel's ring at SIGINT.
    cmd = ["tcpdump", "-i", interface, "-n", "-U", "--immediate-mode", "-s", "0", "-w", str(tmp)]
    if linktype:
        cmd += ["-y", linktype]
    # -Z root: tcpdump would otherwise switch to the tcpdump user and not be allowed to write here.
    cmd += ["-Z", "root"] if os.geteuid() == 0 else []
    cmd.append(bpf)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    assert proc.stderr is not None
    started = b""
    end = time.monotonic() + 10
    while b"listening on" not in started:
        ready, _, _ = select.select([proc.stderr], [], [], max(0.0, end - time.monotonic()))
        chunk = os.read(proc.stderr.fileno(), 4096) if ready else b""
        if not chunk:
            proc.kill()
            proc.wait()
            raise LabError(f"tcpdump did not start: {started.decode(errors='replace')}")
        started += chunk
    try:
        yield
        time.sleep(1.0)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed run leaves the previous capture as it was
        raise
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
    if not tmp.exists() or tmp.stat().st_size <= 24:
        raise LabError(f"tcpdump wrote no packets to {tmp}: {err.decode(errors='replace')}")
    tmp.replace(path)
    counts = [line for line in err.decode(errors="replace").splitlines() if "captured" in line]
    log(f"wrote {path} ({path.stat().st_size} bytes, {counts[0] if counts else 'packet count unknown'})")
