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


def _labelled_copy(corpus: Path, root: Path, name: str, label_text: str | None = None) -> Path:
    """``name`` of the corpus in a corpus-shaped directory of its own, its label file as given."""
    (root / "pcap").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    shutil.copy(corpus / "pcap" / name, root / "pcap" / name)
    text = (corpus / "labels" / f"{name}.json").read_text() if label_text is None else label_text
    (root / "labels" / f"{name}.json").write_text(text)
    return root / "pcap" / name


@pytest.mark.parametrize("label_text, message", [
    ('{"file": "iphone.pcap", "flows": [', "not an ndpiReader label file (JSONDecodeError"),
    ("{}", "not an ndpiReader label file (KeyError"),
    ("[1, 2, 3]", "not an ndpiReader label file (TypeError"),
], ids=["cut", "no-flows", "a-list"])
def test_a_bad_label_file_is_one_line(corpus: Path, tmp_path: Path, label_text: str, message: str) -> None:
    """Each was a traceback and exit 1 (a review helper's finding)."""
    pcap = _labelled_copy(corpus, tmp_path, FILES[0], label_text)
    code, out = run(["train", str(pcap), "--out", str(tmp_path / "m.npz")])
    assert code == 2 and message in out, out


def test_a_label_no_model_could_hold_is_refused_when_training(corpus: Path, tmp_path: Path) -> None:
    """A 70-character protocol name trained into a model that neither evaluate nor the layer could load."""
    name = FILES[0]
    data = json.loads((corpus / "labels" / f"{name}.json").read_text())
    for flow in data["flows"]:
        flow["proto"] = flow["master"] = "X" * 70
    pcap = _labelled_copy(corpus, tmp_path, name, json.dumps(data))
    code, out = run(["train", str(pcap), "--out", str(tmp_path / "m.npz")])
    assert code == 2 and "is not a printable name of 1-64 characters" in out and not (tmp_path / "m.npz").exists()


def test_train_also_may_not_name_a_scored_capture(corpus: Path, tmp_path: Path) -> None:
    """Its flows sat in every training fold and were scored too: macro-F1 0.21 became 0.96, no warning."""
    pcaps = [str(corpus / "pcap" / f) for f in FILES]
    code, out = run(["evaluate", *pcaps, "--cv", "3", "--train-also", pcaps[0], "-q", "--plot",
                     str(tmp_path / "p.png")])
    assert code == 2 and "--train-also names 1 of the scored captures" in out


def test_folds_said_are_folds_run_and_odd_options_are_usage_errors(corpus: Path, tmp_path: Path) -> None:
    """--cv 5 over 3 captures ran 3 folds and said "5-fold"; -j 0 and --seed -1 were tracebacks; a
    --plot that is not a .png failed only after the whole evaluation."""
    pcaps = [str(corpus / "pcap" / f) for f in FILES]
    figures = tmp_path / "f.json"
    code, out = run(["evaluate", *pcaps, "--cv", "5", "--trees", "5", "-j", "0", "-q", "--plot",
                     str(tmp_path / "p.png"), "--json", str(figures)])
    assert code == 0, out
    assert "3-fold cross-validation" in out and json.loads(figures.read_text())["evaluation"].startswith("3-fold")
    for bad, message in ((["--seed", "-1"], "--seed"), (["--plot", str(tmp_path / "p.txt")], "is a PNG file")):
        code, out = run(["evaluate", *pcaps, "--cv", "3", "-q", *bad])
        assert code == 2 and message in out, out


def test_figures_without_a_macro_f1_are_valid_json(corpus: Path, tmp_path: Path) -> None:
    """No protocol reached --min-support: the JSON said NaN, which JSON has not (JSON.parse rejects it)."""
    pcaps = [str(corpus / "pcap" / f) for f in FILES]
    figures = tmp_path / "f.json"
    code, out = run(["evaluate", *pcaps, "--cv", "3", "--trees", "5", "-j", "1", "-q", "--min-support", "100000",
                     "--plot", str(tmp_path / "p.png"), "--json", str(figures)])
    assert code == 0, out
    data = json.loads(figures.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert data["macro_f1"] is None and data["macro_f1_at_threshold"] is None


def test_a_capture_named_twice_is_read_once(corpus: Path, tmp_path: Path) -> None:
    """A directory and a file in it: the file's flows were counted twice (84 flows trained instead of 67)."""
    pcaps = corpus / "pcap"
    once = tmp_path / "once.npz"
    twice = tmp_path / "twice.npz"
    assert run(["train", str(pcaps / FILES[0]), str(pcaps / FILES[1]), "--trees", "5", "-q", "--out", str(once)])[0] == 0
    assert run(["train", str(pcaps / FILES[0]), str(pcaps / FILES[1]), str(pcaps / FILES[0]), "--trees", "5", "-q",
                "--out", str(twice)])[0] == 0
    assert load(once).header["trained"]["flows"] == load(twice).header["trained"]["flows"]
