"""Training: scikit-learn fits the forest and its calibration; we export plain arrays.

The estimator is a ``RandomForestClassifier`` (class weights balanced per
bootstrap sample, since TLS alone is a third of the corpus) trained on every
flow, plus a calibration of its answers' confidence: an
``IsotonicRegression`` from the forest's top class probability to "the top
class is right", fitted on out-of-fold predictions (``cross_val_predict``).
Those folds are grouped by capture file, like every evaluation here: flows
of one capture share hosts, clients and timing, so flow-level folds would
calibrate the model to be sure of things it only memorised; and a held-out
file often holds protocols the other files lack, which is what real traffic
does to a model too.

Why top-label calibration rather than ``CalibratedClassifierCV``: we measured
both on the corpus (docs/ml.md).  Per-class sigmoid or isotonic maps,
renormalised over ~40 protocols, squeezed every answer below 0.8 and made
the threshold nearly useless; temperature scaling was worse.  The layer only
needs one number, how far to trust the answer it gives, and calibrating
exactly that number is what a threshold needs.

:func:`export` turns the fitted estimator into a :class:`dpi_ml.model.Forest`
(arrays only); :func:`cross_validate` re-runs the whole training per
file-grouped fold and predicts the held-out files with that exported model, so
the figures it reports are those of the code that ships.

scikit-learn is imported lazily: the layer itself needs numpy only.
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Any, Callable, Sequence

import attrs
import numpy as np

from dpicore import UNKNOWN

from . import __version__
from .dataset import Sample
from .features import GUARD_COLUMNS, feature_spec, matrix
from .model import FORMAT, FORMAT_VERSION, Forest
from .predict import observable, predict

#: Threshold stored in a new model unless told otherwise (see docs/ml.md for how it was chosen).
DEFAULT_THRESHOLD = 0.7


class TrainError(ValueError):
    """The data cannot train a model (too few flows or protocols)."""


@attrs.define(slots=True)
class TrainParams:
    trees: int = 100
    max_depth: int = 24
    min_samples_leaf: int = 1
    #: Protocols with fewer labelled flows are left out of training.
    min_flows: int = 3
    #: Learn "Unknown" as a class (the layer abstains when it wins) instead of dropping those flows.
    learn_unknown: bool = True
    calibration_folds: int = 5
    seed: int = 0
    jobs: int = -1

    def to_dict(self) -> dict[str, Any]:
        """What the model header records (``jobs`` changes speed, never the model)."""
        return {k: v for k, v in attrs.asdict(self).items() if k != "jobs"}


def select(samples: Sequence[Sample], params: TrainParams) -> tuple[list[Sample], Counter[str]]:
    """The samples training uses, and how many flows of each protocol were left out.

    Left out: flows the layer would not answer anyway (no payload seen, see
    :mod:`dpi_ml.predict`), protocols with fewer than ``min_flows`` flows, and
    ``Unknown`` flows unless ``learn_unknown``.
    """
    keep: list[Sample] = []
    dropped: Counter[str] = Counter()
    visible = []
    for s in samples:
        if observable(s.summary):
            visible.append(s)
        else:
            dropped["(no payload)"] += 1
    counts = Counter(s.label for s in visible)
    for s in visible:
        if counts[s.label] < params.min_flows or (s.label == UNKNOWN and not params.learn_unknown):
            dropped[s.label] += 1
        else:
            keep.append(s)
    return keep, dropped


def _group_splits(y: np.ndarray, groups: np.ndarray, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import GroupKFold

    n = min(folds, len(set(groups.tolist())))
    if n < 2:
        raise TrainError("calibration needs flows from at least two capture files")
    return list(GroupKFold(n_splits=n).split(np.zeros(len(y)), y, groups))


#: A leading byte is a protocol's invariant when its few common values (each on >= GUARD_COMMON of the
#: flows that have that byte) cover >= GUARD_COVER of them, there are at most GUARD_VALUES of them, and
#: at least GUARD_SUPPORT flows have the byte.
GUARD_COMMON, GUARD_COVER, GUARD_VALUES, GUARD_SUPPORT = 0.1, 0.9, 3, 3


def byte_guards(X: np.ndarray, y: np.ndarray, classes: Sequence[str]) -> dict[str, list[list[Any]]]:
    """Per protocol, the leading payload bytes that (nearly) always take the same few values in training.

    A forest names *something* for any input, and on a small corpus it can
    name a whole unfamiliar capture confidently wrong (whatsapp.pcap's
    ``ED\\0\\1`` handshakes as SOCKS, whose training flows all start with
    4 or 5).  The layer refuses an answer whose flow contradicts such an
    invariant of the protocol it would name (TLS records start 0x16 0x03,
    SOCKS 0x04/0x05, …); protocols whose first bytes vary (DNS transaction
    ids, encrypted payloads) get no guard on those bytes.
    """
    guards: dict[str, list[list[Any]]] = {}
    for name in classes:
        if name == UNKNOWN:
            continue
        rows = X[y == name]
        rules = []
        for col in GUARD_COLUMNS:
            v = rows[:, col]
            v = v[v >= 0]
            if v.size < GUARD_SUPPORT:
                continue
            values, counts = np.unique(v, return_counts=True)
            common = counts >= GUARD_COMMON * v.size
            if common.sum() <= GUARD_VALUES and counts[common].sum() >= GUARD_COVER * v.size:
                rules.append([int(col), [int(x) for x in values[common]]])
        if rules:
            guards[name] = rules
    return guards


@attrs.define(slots=True)
class Fitted:
    """The scikit-learn objects of one training run (kept only until exported), plus the byte guards."""

    forest: Any
    calibrator: Any
    classes: list[str]
    guards: dict[str, list[list[Any]]] = attrs.field(factory=dict)


def fit(X: np.ndarray, y: np.ndarray, groups: np.ndarray, params: TrainParams) -> Fitted:
    """Fit the forest on everything and its confidence calibration on file-grouped out-of-fold answers."""
    from sklearn.base import clone
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.isotonic import IsotonicRegression
    from sklearn.model_selection import cross_val_predict

    classes = sorted(set(y.tolist()))
    if len(classes) < 2:
        raise TrainError(f"need at least two protocols to learn, got {classes}")
    forest = RandomForestClassifier(n_estimators=params.trees, max_depth=params.max_depth,
                                    min_samples_leaf=params.min_samples_leaf, class_weight="balanced_subsample",
                                    random_state=params.seed, n_jobs=params.jobs)
    with warnings.catch_warnings():
        # Folds whose training files lack a protocol predict 0 for it: expected with file-grouped folds.
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        oof = cross_val_predict(clone(forest), X, y, cv=_group_splits(y, groups, params.calibration_folds),
                                method="predict_proba")
    best = oof.argmax(axis=1)
    answered = np.asarray([classes[i] != UNKNOWN for i in best])
    top = oof[np.arange(len(best)), best][answered]
    right = (np.asarray(classes, dtype=object)[best] == y)[answered].astype(np.float64)
    if top.size == 0:
        raise TrainError("no out-of-fold answer to calibrate on")
    # Never claim certainty: cap at Laplace's (n+1)/(n+2) for a bin where every answer was right.
    cap = 1.0 - 1.0 / (top.size + 2)
    calibrator = IsotonicRegression(y_min=0.0, y_max=cap, increasing=True, out_of_bounds="clip").fit(top, right)
    forest.fit(X, y)
    return Fitted(forest, calibrator, classes, byte_guards(X, y, classes))


def export(fitted: Fitted, header: dict[str, Any] | None = None) -> Forest:
    """The arrays of a fitted forest and calibrator as a :class:`Forest` (no scikit-learn objects kept)."""
    import sklearn

    forest = fitted.forest
    classes = [str(c) for c in forest.classes_]
    if classes != fitted.classes:
        raise TrainError("forest and calibration disagree on the classes")
    lefts, rights, features, thresholds, leaves, values, roots = [], [], [], [], [], [], []
    offset = leaf_offset = depth = 0
    for tree in forest.estimators_:
        t = tree.tree_
        n = t.node_count
        index = np.arange(n)
        is_leaf = t.children_left < 0
        left = np.where(is_leaf, index, t.children_left) + offset
        right = np.where(is_leaf, index, t.children_right) + offset
        leaf = np.full(n, -1)
        leaf[is_leaf] = np.arange(int(is_leaf.sum())) + leaf_offset
        value = t.value[is_leaf, 0, :].astype(np.float64)
        value /= np.maximum(value.sum(axis=1, keepdims=True), 1e-300)
        roots.append(offset)
        lefts.append(left)
        rights.append(right)
        features.append(np.where(is_leaf, 0, t.feature))
        thresholds.append(np.where(is_leaf, np.inf, t.threshold))
        leaves.append(leaf)
        values.append(value)
        offset += n
        leaf_offset += int(is_leaf.sum())
        depth = max(depth, int(t.max_depth))
    iso = fitted.calibrator
    cal = {"method": "isotonic-top", "x": [float(v) for v in iso.X_thresholds_],
           "y": [float(v) for v in iso.y_thresholds_]}
    head = {"format": FORMAT, "format_version": FORMAT_VERSION, "features": feature_spec(), "classes": classes,
            "calibration": cal, "guards": fitted.guards, "depth": depth, "trees": len(forest.estimators_), "threshold": DEFAULT_THRESHOLD,
            "dpi_ml": __version__, "sklearn": sklearn.__version__}
    head.update(header or {})
    arrays = {"left": np.concatenate(lefts).astype(np.int32), "right": np.concatenate(rights).astype(np.int32),
              "feature": np.concatenate(features).astype(np.int32),
              "threshold": np.concatenate(thresholds).astype(np.float64),
              "leaf": np.concatenate(leaves).astype(np.int32), "roots": np.asarray(roots, dtype=np.int32),
              "value": np.concatenate(values).astype(np.float32)}
    return Forest(head, arrays)


def arrays_of(samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, labels, capture groups) of samples."""
    X = matrix([s.summary for s in samples])
    y = np.asarray([s.label for s in samples], dtype=object)
    groups = np.asarray([s.capture for s in samples], dtype=object)
    return X, y, groups


def train(samples: Sequence[Sample], params: TrainParams | None = None, threshold: float = DEFAULT_THRESHOLD,
          labels: str = "") -> Forest:
    """Train a model on labelled samples (the whole pipeline ``dpi-ml train`` runs)."""
    params = params or TrainParams()
    kept, dropped = select(samples, params)
    if not kept:
        raise TrainError("no protocol has enough labelled flows to learn "
                         f"(min_flows={params.min_flows}; got {dict(Counter(s.label for s in samples))})")
    X, y, groups = arrays_of(kept)
    model = fit(X, y.astype(str), groups.astype(str), params)
    captures = sorted(set(groups.tolist()))
    return export(model, {
        "threshold": threshold,
        "trained": {"flows": len(kept), "captures": captures, "labels": labels, "params": params.to_dict(),
                    "flows_per_protocol": dict(sorted(Counter(y.tolist()).items())),
                    "left_out": dict(sorted(dropped.items()))},
    })


@attrs.define(slots=True)
class Predictions:
    """Out-of-fold (or a given model's) answers for labelled samples."""

    truth: list[str]
    predicted: list[str]
    probability: np.ndarray
    captures: list[str]


def predict_samples(forest: Forest, samples: Sequence[Sample]) -> tuple[list[str], np.ndarray]:
    """The layer's (answer, confidence) for each sample, before its threshold."""
    return predict(forest, [s.summary for s in samples])


def cross_validate(samples: Sequence[Sample], params: TrainParams | None = None, folds: int = 5,
                   on_fold: Callable[[int, int], None] | None = None, extra: Sequence[Sample] = (),
                   repeats: int = 1) -> list[Predictions]:
    """Train on all but one group of capture files, predict the held-out files; every flow once per repeat.

    Folds are ``GroupKFold`` over capture files, so no capture contributes
    flows to both sides.  Every labelled flow is predicted, including those of
    protocols training leaves out (too rare, or unseen in the training
    files): those count against the model, as they would in real use.
    ``extra`` samples (other captures) join every training fold and are
    never scored.

    Which files share a fold matters a lot on a small corpus (a big capture of
    a protocol no training file has can be named confidently wrong as a whole),
    so ``repeats`` runs the whole cross-validation again with other random
    assignments of files to folds (seeded by ``params.seed``); one
    :class:`Predictions` per repeat.
    """
    from sklearn.model_selection import GroupKFold

    params = params or TrainParams()
    samples = list(samples)
    groups = np.asarray([s.capture for s in samples])
    n = min(folds, len(set(groups.tolist())))
    if n < 2:
        raise TrainError("cross-validation needs at least two capture files")
    results = []
    for r in range(repeats):
        predicted: list[str] = [""] * len(samples)
        probability = np.zeros(len(samples))
        splitter = GroupKFold(n_splits=n, shuffle=True, random_state=params.seed + r)
        for k, (tr, te) in enumerate(splitter.split(np.zeros(len(samples)), groups=groups)):
            forest = train([samples[i] for i in tr] + list(extra), params)
            names, probs = predict_samples(forest, [samples[i] for i in te])
            for i, name, p in zip(te, names, probs):
                predicted[i] = name
                probability[i] = p
            if on_fold is not None:
                on_fold(r * n + k + 1, n * repeats)
        results.append(Predictions([s.label for s in samples], predicted, probability, groups.tolist()))
    return results
