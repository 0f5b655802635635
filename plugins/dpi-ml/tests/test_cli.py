"""``dpi-ml train`` / ``evaluate`` (and the same mounted as ``dpi ml``) on real captures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from dpicore.cli import main as dpi
from dpi_ml.cli import main
from dpi_ml.model import load

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

FILES = ("iphone.pcap", "netflix.pcap", "wechat.pcap")
PNG = b"\x89PNG\r\n\x1a\n"


def run(args: list[str], cli=main) -> tuple[int, str]:
    result = CliRunner().invoke(cli, args)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_train_then_evaluate(corpus: Path, tmp_path: Path) -> None:
    pcaps = [str(corpus / "pcap" / f) for f in FILES]
    model = tmp_path / "model.npz"
    code, out = run(["train", *pcaps, "--out", str(model), "--trees", "10", "-j", "1", "-q", "--threshold", "0.8"])
    assert code == 0, out
    assert "trained on" in out and model.is_file()
    forest = load(model)
    assert forest.threshold_default == 0.8 and sorted(forest.header["trained"]["captures"]) == sorted(FILES)

    plot, figures = tmp_path / "eval.png", tmp_path / "eval.json"
    code, out = run(["evaluate", str(corpus / "pcap" / "telegram.pcap"), "--model", str(model), "-q",
                     "--plot", str(plot), "--json", str(figures), "--min-support", "3"])
    assert code == 0, out
    assert "prec" in out and "recall" in out and "confusion matrix" in out and "macro-F1" in out
    assert plot.read_bytes().startswith(PNG)
    data = json.loads(figures.read_text())
    assert data["flows"] > 20 and data["protocols"] and data["confusion"]["labels"]
    dns = next(r for r in data["protocols"] if r["protocol"] == "DNS")
    assert 0 <= dns["f1"] <= 1

    # Scoring on training captures is flagged as unfair.
    result = CliRunner().invoke(main, ["evaluate", pcaps[0], "--model", str(model), "-q", "--plot",
                                       str(tmp_path / "x.png")])
    assert result.exit_code == 0 and "not a fair test" in result.output


def test_cross_validation_via_dpi_ml(corpus: Path, tmp_path: Path) -> None:
    pcaps = [str(corpus / "pcap" / f) for f in FILES]
    code, out = run(["ml", "evaluate", *pcaps, "--cv", "3", "--repeats", "2", "--trees", "5", "-j", "1", "-q",
                     "--plot", str(tmp_path / "cv.png")], cli=dpi)
    assert code == 0, out
    assert "3-fold cross-validation grouped by capture file" in out
    assert "2 assignments of files to folds" in out and "mean" in out
    assert (tmp_path / "cv.png").read_bytes().startswith(PNG)


def test_labels_from_another_layer(corpus: Path, tmp_path: Path) -> None:
    # Copies outside the corpus layout have no label files: the heuristics layer labels them.
    for f in FILES[:2]:
        shutil.copy(corpus / "pcap" / f, tmp_path / f)
    model = tmp_path / "m.npz"
    code, out = run(["train", str(tmp_path / FILES[0]), str(tmp_path / FILES[1]), "--labels-from", "heuristics",
                     "--out", str(model), "--trees", "5", "-j", "1", "-q"])
    assert code == 0, out
    assert load(model).header["trained"]["labels"] == "layer:heuristics"


def test_usage_errors(corpus: Path, tmp_path: Path) -> None:
    unlabelled = tmp_path / "copy.pcap"
    shutil.copy(corpus / "pcap" / FILES[0], unlabelled)
    code, out = run(["train", str(unlabelled), "--out", str(tmp_path / "m.npz")])
    assert code == 2 and "no labels" in out and "--labels-from" in out

    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"junk")
    code, out = run(["evaluate", str(corpus / "pcap" / FILES[0]), "--model", str(bad)])
    assert code == 2 and "not a dpi-ml model" in out

    code, out = run(["train", str(unlabelled), "--labels-from", "no-such-layer", "--out", str(tmp_path / "m.npz")])
    assert code == 2 and "no-such-layer" in out

    code, out = run(["evaluate", str(tmp_path / "absent.pcap")])
    assert code == 2 and "no such file" in out

    code, out = run(["evaluate", str(corpus / "pcap" / FILES[0]), "--cv", "2", "--model", str(bad)])
    assert code == 2 and "not both" in out


@pytest.mark.parametrize("expected, message", [
    ("{not json", "not an expected.json"),
    ('{"captures": {"copy": ["not", "an", "object"]}}', "must map capture names to objects"),
    ('{"captures": {"copy": {"flows": [{"transport": "TCP", "protocol": "HTTP"}]}}}', "port (or ports)"),
    ('{"captures": {"copy": {"flows": [{"transport": "TCP", "port": 80, "protocol": "\\u001b[31mX"}]}}}',
     "not a printable name"),
])
def test_a_bad_expected_json_is_a_usage_error(corpus: Path, tmp_path: Path, expected: str, message: str) -> None:
    """An expected.json next to the captures that cannot be read (once a traceback and exit 1, as
    for a damaged capture): one line naming it, exit 2."""
    shutil.copy(corpus / "pcap" / FILES[0], tmp_path / "copy.pcap")
    (tmp_path / "expected.json").write_text(expected)
    code, out = run(["train", str(tmp_path / "copy.pcap"), "--out", str(tmp_path / "m.npz")])
    assert code == 2 and "expected.json" in out and message in out
