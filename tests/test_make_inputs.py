"""benchmarks/make_inputs.py: an input already made is used as it is, without what it was made from (the
memory rows of the throughput benchmark, on a clone without ../shared, read the real-client inputs only)."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_a_made_input_needs_no_corpus_and_a_half_made_one_is_made_again(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    make_all = runpy.run_path(str(ROOT / "benchmarks" / "make_inputs.py"))["make_all"]
    monkeypatch.setenv("DPI_CORPUS", str(tmp_path / "no-corpus-here"))
    cached = tmp_path / "corpus_x10.pcap"
    cached.write_bytes(b"a capture made earlier")
    cached.with_suffix(".json").write_text('{"packets": 1}\n')
    assert make_all(tmp_path, names=["corpus_x10"]) == {"corpus_x10": cached}
    cached.with_suffix(".json").unlink()  # cut short while being written: made again, from the corpus
    with pytest.raises(SystemExit, match="corpus"):
        make_all(tmp_path, names=["corpus_x10"])
