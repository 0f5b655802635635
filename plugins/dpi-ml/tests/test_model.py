"""The model file: equality with scikit-learn, round trip, and refusing bad files."""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from dpi_ml.dataset import Sample
from dpi_ml.features import FEATURE_NAMES, first, matrix
from dpi_ml.model import FORMAT_VERSION, Forest, ModelError, load
from dpi_ml.plugin import DEFAULT_MODEL


def test_inference_equals_scikit_learn_on_held_out_flows(fitted: Any, held_out_samples: list[Sample],
                                                         tmp_path: Path) -> None:
    result, forest = fitted
    X = matrix([s.summary for s in held_out_samples])
    assert len(X) > 20
    path = tmp_path / "m.npz"
    forest.save(path)
    loaded = load(path)
    want = result.forest.predict_proba(X)
    for model in (forest, loaded):
        got = model.forest_proba(X)
        assert np.allclose(got, want, rtol=0, atol=1e-6)  # leaf values are stored as float32
        names, conf = model.predict(X)
        best = want.argmax(axis=1)
        guarded = np.array([model.violates(X[i], c) for i, c in enumerate(best)])
        expect_conf = np.where(guarded, 0.0, result.calibrator.predict(want.max(axis=1)))
        assert names == ["Unknown" if g else result.classes[c] for g, c in zip(guarded, best)]
        assert np.allclose(conf, expect_conf, atol=1e-6)
    # One flow at a time (the layer's path) walks the trees differently: same answers.
    single = np.vstack([loaded.forest_proba(X[i:i + 1]) for i in range(len(X))])
    assert np.allclose(single, loaded.forest_proba(X), rtol=0, atol=1e-12)
    assert loaded.header == json.loads(json.dumps(forest.header))


def test_byte_guards_refuse_answers_that_contradict_a_protocols_first_bytes(fitted: Any,
                                                                            train_samples: list[Sample]) -> None:
    _, forest = fitted
    tls = [s for s in train_samples if s.label == "TLS" and first(s.summary, 0)]
    assert tls and forest.guards
    x = matrix([tls[0].summary])
    names, conf = forest.predict(x)
    assert names == ["TLS"] and conf[0] > 0
    # The same flow, its first client byte changed from 0x16 (a TLS handshake record) to 'E'.
    cls = forest.classes.index("TLS")
    column = FEATURE_NAMES.index("c2s_b0")
    assert any(col == column and 0x16 in allowed for col, allowed in forest.guards[cls])
    x[0, column] = ord("E")
    assert forest.forest_proba(x).argmax() == cls  # the forest alone would still say TLS
    names, conf = forest.predict(x)
    assert names == ["Unknown"] and conf[0] == 0.0


def test_the_model_learnt_something(fitted: Any, held_out_samples: list[Sample]) -> None:
    """Not an accuracy claim (docs/ml.md has those): a sanity floor on one unseen capture."""
    _, forest = fitted
    labelled = [s for s in held_out_samples if s.label in forest.classes and s.label != "Unknown"]
    names, _ = forest.predict(matrix([s.summary for s in labelled]))
    right = sum(n == s.label for n, s in zip(names, labelled))
    assert right / len(labelled) > 0.5


def test_shipped_model_loads_and_matches_this_feature_layout() -> None:
    forest = load(DEFAULT_MODEL)
    assert forest.header["features"]["names"] == list(FEATURE_NAMES)
    assert {"TLS", "DNS", "HTTP"} <= set(forest.classes)
    assert 0 < forest.threshold_default < 1
    assert "iphone.pcap" in forest.header["trained"]["captures"]


# -- bad files -----------------------------------------------------------------------------------

def _parts(forest: Forest) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    return json.loads(json.dumps(forest.header)), {k: v.copy() for k, v in forest.arrays.items()}


def _write(path: Path, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays)
    return path


def _first_inner(arrays: dict[str, np.ndarray]) -> int:
    return int(np.flatnonzero(arrays["leaf"] < 0)[0])


def _edit_header(key: str, value: Any) -> Callable[[dict[str, Any], dict[str, np.ndarray]], None]:
    def edit(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        header[key] = value
    return edit


def _loop(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    i = int(arrays["roots"][1])  # the second tree's root: an inner node after node 0
    arrays["left"][i] = 0  # a child before its parent: a crafted walk could go round forever


def _bad_feature(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    arrays["feature"][_first_inner(arrays)] = len(FEATURE_NAMES) + 5


def _out_of_range(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    arrays["right"][_first_inner(arrays)] = arrays["left"].size + 100


def _short(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    arrays["threshold"] = arrays["threshold"][:-1]


def _dtype(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    arrays["left"] = arrays["left"].astype(np.float64)


def _nan(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    arrays["value"][0, 0] = np.nan


def _missing(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    del arrays["roots"]


def _shallow(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    header["depth"] = 1


def _calibration(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    header["calibration"] = {"method": "isotonic-top", "x": [0.5, 0.1], "y": [0.2, 0.3]}


@pytest.mark.parametrize("edit, message", [
    (_edit_header("format_version", FORMAT_VERSION + 1), "format version"),
    (_edit_header("format", "something-else"), "not a dpi-ml model"),
    (_edit_header("features", {"version": 0, "names": ["a", "b"]}), "feature layout"),
    (_edit_header("classes", ["only-one"]), "classes"),
    (_loop, "children must follow their parent"),
    (_bad_feature, "feature outside"),
    (_out_of_range, "children must follow their parent"),
    (_short, "shape"),
    (_dtype, "dtype"),
    (_nan, "non-finite"),
    (_missing, "missing roots"),
    (_shallow, "deeper than"),
    (_calibration, "calibration"),
    (_edit_header("threshold", "high"), "threshold"),
    (_edit_header("guards", {"NoSuchProtocol": [[48, [22]]]}), "byte guards"),
    (_edit_header("guards", {"TLS": [[48, [999]]]}), "byte guards"),
    # Class names reach records and terminals: an escape sequence or a control character is refused.
    (_edit_header("classes", ["TLS", "\x1b[31mHTTP"]), "printable names"),
    (_edit_header("classes", ["TLS", "TLS"]), "distinct"),
    (_edit_header("classes", [f"c{i}" for i in range(2000)]), "up to 1024"),
    (_edit_header("trained", "x"), "training record"),
    (_edit_header("depth", [[[[[[[[[[1]]]]]]]]]]), "depth"),
], ids=lambda x: getattr(x, "__name__", str(x))[:20])
def test_inconsistent_model_is_refused(fitted: Any, tmp_path: Path, edit: Callable[..., None],
                                       message: str) -> None:
    header, arrays = _parts(fitted[1])
    edit(header, arrays)
    path = _write(tmp_path / "bad.npz", header, arrays)
    with pytest.raises(ModelError, match=message) as info:
        load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [b"", b"not a model at all", b"PK\x03\x04" + bytes(100)])
def test_garbage_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.npz"
    path.write_bytes(content)
    with pytest.raises(ModelError, match="not a dpi-ml model"):
        load(path)


def test_truncated_model_is_refused(tmp_path: Path) -> None:
    data = DEFAULT_MODEL.read_bytes()
    path = tmp_path / "cut.npz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError):
        load(path)


def test_text_is_refused_without_numpy_s_hint_to_unpickle(tmp_path: Path) -> None:
    path = tmp_path / "text.npz"
    path.write_text("hello, I am not a model\n" * 10)
    with pytest.raises(ModelError, match="not an .npz archive") as info:
        load(path)
    assert "pickle" not in str(info.value)


def test_a_deeply_nested_header_is_a_model_error(fitted: Any, tmp_path: Path) -> None:
    header, arrays = _parts(fitted[1])
    path = tmp_path / "deep.npz"
    np.savez(path, header=np.frombuffer(b"[" * 100_000 + b"]" * 100_000, dtype=np.uint8), **arrays)
    with pytest.raises(ModelError, match="corrupt model header"):
        load(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_only_a_regular_file_is_read(tmp_path: Path) -> None:
    """A FIFO blocked the loader forever, /dev/zero filled memory: neither is a model file."""
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        if path.exists():
            with pytest.raises(ModelError, match="not a regular file"):
                load(path)


def test_what_would_unpack_past_the_limit_is_refused_before_unpacking(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A zip bomb (1-2 MB that unpack to gigabytes) is refused from the archive's directory; here the
    shipped model against a limit below its own unpacked size."""
    import dpi_ml.model as model

    monkeypatch.setattr(model, "MAX_UNPACKED_BYTES", 1000)
    with pytest.raises(ModelError, match="more than a model has"):
        load(DEFAULT_MODEL)
    monkeypatch.setattr(model, "MAX_UNPACKED_BYTES", 512 << 20)
    monkeypatch.setattr(model, "MAX_FILE_BYTES", 1000)
    with pytest.raises(ModelError, match="more than a model file has"):
        load(DEFAULT_MODEL)


def test_missing_file_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot read"):
        load(tmp_path / "absent.npz")


class _Exploit:
    """Unpickling this would create a file: proof that a model file never runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "code ran"))


def test_pickled_objects_are_never_loaded(fitted: Any, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    header, arrays = _parts(fitted[1])
    payload = np.empty(1, dtype=object)
    payload[0] = _Exploit(marker)
    arrays["value"] = payload  # an object array: numpy stores it as a pickle
    path = _write(tmp_path / "evil.npz", header, arrays)
    with zipfile.ZipFile(path) as z:  # the archive really holds a pickle that would run
        assert b"write_text" in z.read("value.npy")
    with pytest.raises(ModelError):
        load(path)
    assert not marker.exists()
    # A bare pickle file is not a model either, and is not unpickled.
    raw = tmp_path / "model.pkl"
    raw.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(ModelError):
        load(raw)
    assert not marker.exists()


def test_saved_model_holds_plain_arrays_only(fitted: Any, tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    fitted[1].save(path)
    for model in (path, DEFAULT_MODEL):
        with np.load(model, allow_pickle=False) as npz:
            assert {npz[name].dtype.kind for name in npz.files} <= {"i", "u", "f"}
