"""Record walks shared by the -j workers reading one pcap (dpicore/decode/walks.py): a cache that
may cost time, never a record.  Frames are compared with what one reader alone finds."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from dpicore.config import Config
from dpicore.decode import batch
from dpicore.decode import walks as walks_module
from dpicore.decode.walks import SharedWalks
from dpicore.parallel import classify_files
from tests.helpers.frames import eth, pcap_bytes, udp4

T0 = 1_600_000_000.0


@pytest.fixture
def capture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """300 frames of assorted sizes, read in 4 KB chunks (so a few dozen chunks, records across their
    edges)."""
    monkeypatch.setattr(batch, "CHUNK", 4096)
    frames = [(T0 + i * 0.01, eth(udp4(sport=1000 + i, payload=bytes([i % 251]) * (i * 7 % 400)))) for i in range(300)]
    path = tmp_path / "x.pcap"
    path.write_bytes(pcap_bytes(frames))
    return path


def _frames(path: Path, walks: SharedWalks | None = None) -> list[tuple[int, float, bytes]]:
    return [(b.first + i, float(b.ts[i]), b.frame(i)) for b in batch.batches(str(path), walks=walks)
            for i in range(len(b))]


def _count_walks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the walks made from here on (in Python, or in C when cwalk.pyx is built)."""
    calls: list[int] = []

    def counting(walk):  # type: ignore[no-untyped-def]
        def counted(*args):  # type: ignore[no-untyped-def]
            calls.append(1)
            return walk(*args)
        return counted

    for name in ("_walk", "walk_pcap"):
        if getattr(batch, name) is not None:
            monkeypatch.setattr(batch, name, counting(getattr(batch, name)))
    return calls


def test_a_second_reader_takes_every_chunk_the_first_walked(capture: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    alone = _frames(capture)
    directory = str(tmp_path / "walks")
    first = _frames(capture, SharedWalks(directory))
    walked = _count_walks(monkeypatch)
    second = _frames(capture, SharedWalks(directory))
    assert first == alone and second == alone and len(alone) == 300
    assert walked == []  # every chunk came from the directory


@pytest.mark.parametrize("damage", ["shifted", "cut", "garbage", "empty", "past the end"])
def test_a_wrong_walk_in_the_directory_costs_no_record(capture: Path, tmp_path: Path, damage: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """What another process left is checked against the bytes before it is used."""
    alone = _frames(capture)
    directory = tmp_path / "walks"
    _frames(capture, SharedWalks(str(directory)))
    files = sorted(directory.glob("*.starts"))
    assert len(files) > 10
    for f in files:
        starts = np.fromfile(f, dtype=np.int64)
        bad = {"shifted": starts + 1, "cut": starts[:-1], "garbage": np.arange(len(starts)) * 3,
               "empty": starts[:0], "past the end": np.append(starts, 1 << 40)}[damage]
        bad.astype(np.int64).tofile(f)
    walked = _count_walks(monkeypatch)
    assert _frames(capture, SharedWalks(str(directory))) == alone
    assert len(walked) >= len(files) - 1  # (an empty walk is right for a chunk that holds no whole record)


def test_a_claim_nobody_fulfils_is_waited_for_briefly(capture: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that claimed chunks and died: the others wait WAIT per chunk, then walk them."""
    monkeypatch.setattr(walks_module, "WAIT", 0.02)
    directory = tmp_path / "walks"
    directory.mkdir()
    for chunk in range(5):
        (directory / f"{chunk}.claim").touch()
    assert _frames(capture, SharedWalks(str(directory))) == _frames(capture)


def test_a_split_run_shares_walks_and_leaves_no_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """-j 2 on a split file: the records of one process, and the walk directory is gone afterwards."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the run makes its directory
    frames = [(T0 + i * 0.01, eth(udp4(src=f"10.0.{i % 50}.1", sport=1000 + i, payload=b"z" * 40)))
              for i in range(2000)]
    path = tmp_path / "big.pcap"
    path.write_bytes(pcap_bytes(frames))
    config = Config().with_layers(["heuristics"])
    run = classify_files([path], jobs=2, config=config, split_bytes=0)
    records = sorted(json_line for json_line in map(repr, run))
    assert len(records) == 2000 and not run.damaged
    assert not [p for p in os.listdir(tmp_path) if p.startswith("dpi-walks-")]


def test_without_a_writable_temporary_directory_each_worker_walks(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Sharing is an optimisation: a temporary directory that cannot be made must not stop -j."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing" / "dir"))
    frames = [(T0 + i * 0.01, eth(udp4(src=f"10.0.{i % 50}.1", sport=1000 + i, payload=b"z" * 40)))
              for i in range(500)]
    path = tmp_path / "big.pcap"
    path.write_bytes(pcap_bytes(frames))
    run = classify_files([path], jobs=2, config=Config().with_layers(["heuristics"]), split_bytes=0)
    assert len(list(run)) == 500 and not run.damaged
