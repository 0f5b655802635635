"""The model file: a calibrated forest of decision trees as plain arrays, and its inference.

Why not pickle/joblib: loading a pickle runs whatever code the file names,
so a model shared between users would be an executable.  A model here is an
``.npz`` archive read with ``allow_pickle=False`` (numpy then refuses object
arrays outright) holding

* ``header``: UTF-8 JSON (format name and version, the feature layout, the
  class names, the calibration, the recommended threshold, where it was
  trained and how);
* every tree's nodes concatenated: ``left``, ``right`` (children, a leaf
  points to itself), ``feature``, ``threshold`` and ``leaf`` (row of ``value``
  for leaves, -1 otherwise), ``roots`` (first node of each tree), and
  ``value``: each leaf's class distribution.

Everything is checked on load (shapes, dtypes, index ranges, children after
their parent so no walk can loop) and any problem is a :class:`ModelError`
naming the file; a file from another format version or feature layout is
refused with a message saying so.

Inference walks all trees at once with numpy: one gather and one comparison
per tree level for every (flow, tree) pair; the forest's mean class
distribution is what scikit-learn's ``RandomForestClassifier.predict_proba``
returns.  The answer is its most likely class; the answer's *confidence* is
calibrated: an isotonic map from the forest's top probability to the
probability that the top answer is right, fitted on predictions for capture
files the forest had not seen (see :mod:`dpi_ml.train`).  That is the number
the layer's threshold is compared with.  Finally an answer is refused
(``Unknown``) when the flow contradicts one of the named protocol's *byte
guards*: leading payload bytes that were (nearly) constant for that protocol
in training (see :func:`dpi_ml.train.byte_guards`).
"""

from __future__ import annotations

import io
import json
import stat
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from dpicore import UNKNOWN

from .features import N_FEATURES, feature_spec

FORMAT = "dpi-ml-forest"
FORMAT_VERSION = 1
_ARRAYS = {"left": np.int32, "right": np.int32, "feature": np.int32, "threshold": np.float64,
           "leaf": np.int32, "roots": np.int32, "value": np.float32}


class ModelError(ValueError):
    """A model file cannot be used: unreadable, corrupt, or made for another version."""


#: Limits checked before anything is unpacked or built, so a crafted file (a zip bomb, /dev/zero, a
#: header declaring 40,000 classes) is refused instead of taking gigabytes or minutes.  The shipped
#: model is 0.2 MB packed and 2 MB unpacked, with a few dozen classes.
MAX_FILE_BYTES = 64 << 20
MAX_UNPACKED_BYTES = 512 << 20
MAX_CLASSES = 1024
MAX_CLASS_NAME = 64
#: Leaf distributions the forest expands to one row per node (nodes x classes float64).
MAX_NODE_CLASS_CELLS = 32 << 20


def is_class_name(name: str) -> bool:
    """A class name a model may hold: it ends up in records and on terminals, so 1 to MAX_CLASS_NAME
    printable characters (no escape sequence, no control character)."""
    return 0 < len(name) <= MAX_CLASS_NAME and name.isprintable()


class Forest:
    """A calibrated random forest ready for inference (numpy only)."""

    def __init__(self, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.header = header
        self.arrays = arrays
        self.classes: list[str] = list(header["classes"])
        self.threshold_default = float(header["threshold"])
        #: class index -> (feature columns, allowed values per column)
        index = {name: i for i, name in enumerate(self.classes)}
        self.guards: dict[int, list[tuple[int, frozenset[int]]]] = {
            index[name]: [(int(col), frozenset(int(v) for v in values)) for col, values in rules]
            for name, rules in header["guards"].items()}
        cal = header["calibration"]
        self.cal_x = np.asarray(cal["x"], dtype=np.float64)
        self.cal_y = np.asarray(cal["y"], dtype=np.float64)
        # Native index width: numpy converts int32 indices on every gather otherwise.
        self.left = arrays["left"].astype(np.intp)
        self.right = arrays["right"].astype(np.intp)
        self.feature = arrays["feature"].astype(np.intp)
        self.threshold = arrays["threshold"]
        self.roots = arrays["roots"].astype(np.intp)
        self.depth = int(header["depth"])
        # Leaf distributions as stored (float32), a row of zeros after them: a node's leaf number picks its
        # row, and an inner node's -1 the zeros.  A float64 row per node was 10 MB of a 62 MB process
        # before its first flow; the rows are widened after the gather, to the same float64 values.
        stored = arrays["value"]
        self.value = np.concatenate([stored, np.zeros((1, stored.shape[1]), dtype=stored.dtype)])
        arrays["value"] = self.value[:-1]  # the file's rows (save), not a second copy
        self.leaf = arrays["leaf"].astype(np.intp)

    # -- inference -----------------------------------------------------------
    def forest_proba(self, X: np.ndarray) -> np.ndarray:
        """Uncalibrated class distribution: the mean over trees of each reached leaf's distribution."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != N_FEATURES:
            raise ValueError(f"expected an (n, {N_FEATURES}) feature matrix, got shape {X.shape}")
        # scikit-learn compares float32 features with float64 thresholds; do the same.
        X = X.astype(np.float32).astype(np.float64)
        if X.shape[0] == 1:
            idx = self._walk_one(X[0])[None, :]
        else:
            idx = self._walk_many(X)
        return np.take(self.value, np.take(self.leaf, idx), axis=0).astype(np.float64).mean(axis=1)

    def _walk_one(self, x: np.ndarray) -> np.ndarray:
        """Leaf reached in every tree by one flow (the layer's case).

        Deciding every node's branch for this flow at once costs a few
        vector operations over all nodes; the walk is then one gather per
        level, instead of several small numpy calls per level.
        """
        step = np.where(x[self.feature] <= self.threshold, self.left, self.right)
        idx = self.roots
        for _ in range(self.depth):
            idx = step[idx]
        return idx

    def _walk_many(self, X: np.ndarray) -> np.ndarray:
        """Leaves reached by many flows: all (flow, tree) walks advance one level per step."""
        flat = X.ravel()
        base = (np.arange(X.shape[0]) * N_FEATURES)[:, None]
        idx = np.tile(self.roots, (X.shape[0], 1))
        left, right, feature, threshold = self.left, self.right, self.feature, self.threshold
        take = np.take
        for level in range(self.depth):
            go_left = take(flat, base + take(feature, idx)) <= take(threshold, idx)
            idx = np.where(go_left, take(left, idx), take(right, idx))
            # Most trees are shallower than the deepest one: stop once every walk is at a leaf.
            if level & 3 == 3 and np.array_equal(take(left, idx), idx):
                break
        return idx

    def calibrate(self, top: np.ndarray) -> np.ndarray:
        """Probability that an answer is right given the forest's top probability (isotonic, clipped)."""
        top = np.asarray(top, dtype=np.float64)
        if self.cal_x.size == 1:
            return np.full(top.shape, self.cal_y[0])
        return np.interp(np.clip(top, self.cal_x[0], self.cal_x[-1]), self.cal_x, self.cal_y)

    def predict(self, X: np.ndarray) -> tuple[list[str], np.ndarray]:
        """(most likely class per row, calibrated confidence of that answer).

        A row that contradicts its best class's byte guards gets ``Unknown``
        with confidence 0.
        """
        X = np.asarray(X, dtype=np.float64)
        proba = self.forest_proba(X)
        best = proba.argmax(axis=1)
        confidence = self.calibrate(proba[np.arange(len(best)), best])
        names = [self.classes[i] for i in best]
        for row, cls in enumerate(best.tolist()):
            if self.violates(X[row], cls):
                names[row] = UNKNOWN
                confidence[row] = 0.0
        return names, confidence

    def violates(self, x: np.ndarray, cls: int) -> bool:
        """True when a present leading byte of ``x`` is not among the values class ``cls`` allows there."""
        for col, allowed in self.guards.get(cls, ()):
            value = x[col]
            if value >= 0 and int(value) not in allowed:
                return True
        return False

    # -- files ---------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the model as a compressed ``.npz`` (no pickled objects anywhere)."""
        header = json.dumps(self.header, sort_keys=True).encode()
        buf = io.BytesIO()
        np.savez_compressed(buf, header=np.frombuffer(header, dtype=np.uint8),
                            **{k: np.ascontiguousarray(self.arrays[k], dtype=t) for k, t in _ARRAYS.items()})
        Path(path).write_bytes(buf.getvalue())


def load(path: str | Path) -> Forest:
    """Read and validate a model file; :class:`ModelError` for anything unusable."""
    p = Path(path)
    try:
        st = p.stat()
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block, /dev/zero never end
            raise ModelError(f"{p}: not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise ModelError(f"{p}: {st.st_size:,} bytes, more than a model file has ({MAX_FILE_BYTES:,} at most)")
        with open(p, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ModelError(f"{p}: cannot read model: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ModelError(f"{p}: more than a model file has ({MAX_FILE_BYTES:,} bytes at most)")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
        unpacked = sum(m.file_size for m in members)
        if len(members) > 4 * len(_ARRAYS) or unpacked > MAX_UNPACKED_BYTES:
            raise ModelError(f"{p}: {len(members)} members of {unpacked:,} bytes unpacked, more than a model has")
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            files = set(npz.files)
            missing = ({"header"} | set(_ARRAYS)) - files
            if missing:
                raise ModelError(f"{p}: not a dpi-ml model (missing {', '.join(sorted(missing))})")
            header_bytes = npz["header"]
            arrays = {k: npz[k] for k in _ARRAYS}
        if not all(isinstance(a, np.ndarray) for a in [header_bytes, *arrays.values()]):
            raise ModelError(f"{p}: corrupt model (a member is not an array)")
    except ModelError:
        raise
    except zipfile.BadZipFile:
        raise ModelError(f"{p}: not a dpi-ml model file (not an .npz archive)") from None
    except (ValueError, OSError, EOFError, KeyError, TypeError, AttributeError, zlib.error, MemoryError,
            RecursionError) as exc:
        raise ModelError(f"{p}: not a dpi-ml model file (corrupt or another format: {type(exc).__name__})") from None
    header = _header(p, header_bytes)
    _check_arrays(p, header, arrays)
    return Forest(header, arrays)


def _header(p: Path, raw: np.ndarray) -> dict[str, Any]:
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ModelError(f"{p}: corrupt model header")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, a 5,000-digit number, deep nesting
        raise ModelError(f"{p}: corrupt model header: {type(exc).__name__}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelError(f"{p}: not a dpi-ml model (format {header.get('format') if isinstance(header, dict) else '?'!r})")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelError(f"{p}: model format version {version!r}, this dpi-ml reads version {FORMAT_VERSION}; "
                         "retrain it with 'dpi-ml train' or install the dpi-ml that wrote it")
    spec = feature_spec()
    theirs = header.get("features", {})
    if not isinstance(theirs, dict) or theirs.get("version") != spec["version"] or theirs.get("names") != spec["names"]:
        raise ModelError(f"{p}: model was trained on feature layout {theirs.get('version') if isinstance(theirs, dict) else '?'!r} "
                         f"({len(theirs.get('names', [])) if isinstance(theirs, dict) else '?'} features), this dpi-ml "
                         f"extracts layout {spec['version']} ({N_FEATURES} features); retrain with 'dpi-ml train'")
    classes = header.get("classes")
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise ModelError(f"{p}: model header lists no classes")
    known = set(classes)
    if len(classes) > MAX_CLASSES or len(known) != len(classes) or not all(map(is_class_name, classes)):
        raise ModelError(f"{p}: model classes must be up to {MAX_CLASSES} distinct printable names of "
                         f"1-{MAX_CLASS_NAME} characters")
    trained = header.get("trained", {})
    if not isinstance(trained, dict) or not isinstance(trained.get("captures", []), list) or not all(
            isinstance(c, str) for c in trained.get("captures", [])):
        raise ModelError(f"{p}: corrupt training record in the header")
    cal = header.get("calibration")
    if not isinstance(cal, dict) or cal.get("method") != "isotonic-top":
        raise ModelError(f"{p}: unknown calibration {cal.get('method') if isinstance(cal, dict) else cal!r}")
    x, y = cal.get("x"), cal.get("y")
    if not (isinstance(x, list) and isinstance(y, list) and 1 <= len(x) == len(y)
            and all(isinstance(v, (int, float)) for v in x + y)
            and all(a <= b for a, b in zip(x, x[1:])) and all(0.0 <= v <= 1.0 for v in y)):
        raise ModelError(f"{p}: calibration must be two equally long lists, x increasing, y within 0..1")
    threshold = header.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ModelError(f"{p}: threshold must be a number between 0 and 1, not {threshold!r}")
    guards = header.get("guards")
    if not isinstance(guards, dict) or not all(
            name in known and isinstance(rules, list) and all(
                isinstance(r, list) and len(r) == 2 and isinstance(r[0], int) and 0 <= r[0] < N_FEATURES
                and isinstance(r[1], list) and all(isinstance(v, int) and 0 <= v <= 255 for v in r[1])
                for r in rules)
            for name, rules in guards.items()):
        raise ModelError(f"{p}: corrupt byte guards")
    if not isinstance(header.get("depth"), int) or not 0 <= header["depth"] <= 4096:
        raise ModelError(f"{p}: bad tree depth {header.get('depth')!r}")
    return header


def _check_arrays(p: Path, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Reject anything that could index out of bounds or make a tree walk loop."""
    for name, dtype in _ARRAYS.items():
        a = arrays[name]
        if a.dtype != dtype:
            raise ModelError(f"{p}: array {name} has dtype {a.dtype}, expected {np.dtype(dtype)}")
    nodes = arrays["left"].size
    if nodes * len(header["classes"]) > MAX_NODE_CLASS_CELLS:
        raise ModelError(f"{p}: {nodes:,} nodes x {len(header['classes'])} classes, more than a model has")
    for name in ("left", "right", "feature", "threshold", "leaf"):
        if arrays[name].shape != (nodes,):
            raise ModelError(f"{p}: array {name} has shape {arrays[name].shape}, expected ({nodes},)")
    left, right, feature, leaf, roots = (arrays[k] for k in ("left", "right", "feature", "leaf", "roots"))
    index = np.arange(nodes)
    is_leaf = left == index
    if nodes == 0 or roots.ndim != 1 or roots.size == 0 or np.any((roots < 0) | (roots >= nodes)):
        raise ModelError(f"{p}: corrupt tree roots")
    inner = ~is_leaf
    if np.any((left[inner] <= index[inner]) | (left[inner] >= nodes) | (right[inner] <= index[inner])
              | (right[inner] >= nodes)) or np.any(right[is_leaf] != index[is_leaf]):
        raise ModelError(f"{p}: corrupt tree structure (children must follow their parent)")
    if np.any((feature < 0) | (feature >= N_FEATURES)):
        raise ModelError(f"{p}: tree refers to a feature outside 0..{N_FEATURES - 1}")
    n_leaves = int(is_leaf.sum())
    value = arrays["value"]
    if value.shape != (n_leaves, len(header["classes"])):
        raise ModelError(f"{p}: leaf values have shape {value.shape}, expected ({n_leaves}, {len(header['classes'])})")
    if np.any(leaf[inner] != -1) or not np.array_equal(np.sort(leaf[is_leaf]), np.arange(n_leaves)):
        raise ModelError(f"{p}: corrupt leaf index")
    if not np.all(np.isfinite(value)) or not np.all(np.isfinite(arrays["threshold"][inner])):
        raise ModelError(f"{p}: non-finite numbers in the model")
    if _max_depth(left, right, roots, header["depth"]) > header["depth"]:
        raise ModelError(f"{p}: trees are deeper than the header's depth {header['depth']}")


def _max_depth(left: np.ndarray, right: np.ndarray, roots: np.ndarray, limit: int) -> int:
    """Depth of the deepest leaf, walking level by level; stops past ``limit``.

    Children always have larger indices than their parent (checked before),
    so walks end; ``np.unique`` keeps a level no larger than the node count
    even if a crafted file shares children between parents.
    """
    frontier = np.unique(roots)
    depth = 0
    while True:
        inner = frontier[left[frontier] != frontier]
        if inner.size == 0 or depth > limit:
            return depth
        frontier = np.unique(np.concatenate([left[inner], right[inner]]))
        depth += 1
