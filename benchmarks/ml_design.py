"""The measurements behind two dpi-ml design choices (docs/ml.md), reproducible.

    .venv/bin/python benchmarks/ml_design.py        # a few minutes on 2 cores

1. Calibration: the raw forest, scikit-learn's CalibratedClassifierCV (sigmoid,
   isotonic, temperature; calibration folds grouped by file) and what dpi-ml ships
   (isotonic on the top-class probability), compared on file-grouped out-of-fold
   predictions: expected calibration error (10 bins) and answers/wrong answers at 0.7.
2. Port numbers as features: macro-F1 (protocols >= 20 flows) with and without the
   server and client port appended to the feature vector.

Same data and selection as training (corpus + real-client captures, payload-less
flows and protocols under 3 flows left out of training); a plain forest with the
shipped parameters.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import GroupKFold, cross_val_predict

from dpicore import UNKNOWN
from dpicore.corpus import corpus_dir
from dpi_ml.dataset import collect
from dpi_ml.predict import observable
from dpi_ml.train import TrainParams, arrays_of, select

ROOT = Path(__file__).resolve().parent.parent
P = TrainParams()


def forest() -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=P.trees, max_depth=P.max_depth, class_weight="balanced_subsample",
                                  random_state=P.seed, n_jobs=-1)


def splits(y: np.ndarray, g: np.ndarray) -> list:
    return list(GroupKFold(5).split(np.zeros(len(y)), y, g))


def ece(conf: np.ndarray, right: np.ndarray) -> float:
    edges = np.linspace(0, 1, 11)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, 9)
    return float(sum(abs(right[which == b].mean() - conf[which == b].mean()) * (which == b).mean()
                     for b in range(10) if (which == b).any()))


def main() -> None:
    warnings.simplefilter("ignore")
    corpus = collect(sorted((corpus_dir() / "pcap").iterdir()))
    extra = collect(sorted((ROOT / "tests" / "captures" / "realclients").glob("*.pcap")))
    scored = [s for s in corpus if observable(s.summary)]
    X, y, g = arrays_of(scored)
    y, g = y.astype(str), g.astype(str)
    Xe, ye, _ = arrays_of(select(extra, P)[0])
    ye = ye.astype(str)
    big = sorted(c for c, n in Counter(y).items() if n >= 20 and c != UNKNOWN)

    def folds(fit_predict, X: np.ndarray = X, Xe: np.ndarray = Xe) -> tuple[np.ndarray, np.ndarray]:
        """File-grouped out-of-fold (answer, confidence) for every scored flow."""
        names = np.empty(len(y), dtype=object)
        conf = np.zeros(len(y))
        for tr, te in splits(y, g):
            keep = [i for i in tr if Counter(y[tr])[y[i]] >= P.min_flows]
            Xt, yt, gt = np.vstack([X[keep], Xe]), np.concatenate([y[keep], ye]), np.concatenate([g[keep], ye])
            names[te], conf[te] = fit_predict(Xt, yt, gt, X[te])
        return names, conf

    def raw(Xt, yt, gt, Xs):
        m = forest().fit(Xt, yt)
        p = m.predict_proba(Xs)
        return m.classes_[p.argmax(1)], p.max(1)

    def sklearn_cal(method):
        def run(Xt, yt, gt, Xs):
            m = CalibratedClassifierCV(forest(), method=method, ensemble=False, cv=splits(yt, gt)).fit(Xt, yt)
            p = m.predict_proba(Xs)
            return m.classes_[p.argmax(1)], p.max(1)
        return run

    def top_isotonic(Xt, yt, gt, Xs):
        oof = cross_val_predict(forest(), Xt, yt, cv=splits(yt, gt), method="predict_proba")
        classes = np.unique(yt)
        best = oof.argmax(1)
        ans = classes[best] != UNKNOWN
        iso = IsotonicRegression(y_min=0, y_max=1 - 1 / (ans.sum() + 2), out_of_bounds="clip").fit(
            oof.max(1)[ans], (classes[best] == yt)[ans])
        m = forest().fit(Xt, yt)
        p = m.predict_proba(Xs)
        return m.classes_[p.argmax(1)], iso.predict(p.max(1))

    print(f"{len(y)} corpus flows with payload scored, {len(ye)} real-client flows in every training fold\n")
    print("1. calibration (file-grouped out-of-fold)")
    print(f"   {'method':<34} {'ECE':>6} {'answered>=0.7':>14} {'wrong':>6}")
    for name, fp in [("raw forest probability", raw), ("CalibratedClassifierCV sigmoid", sklearn_cal("sigmoid")),
                     ("CalibratedClassifierCV isotonic", sklearn_cal("isotonic")),
                     ("CalibratedClassifierCV temperature", sklearn_cal("temperature")),
                     ("top-class isotonic (dpi-ml)", top_isotonic)]:
        names, conf = folds(fp)
        right = (names == y).astype(float)
        answered = (conf >= 0.7) & (names != UNKNOWN)
        print(f"   {name:<34} {ece(conf, right):>6.3f} {answered.sum():>14} {int((answered & (right == 0)).sum()):>6}")

    print("\n2. port numbers as features (macro-F1 top-1 over protocols with >= 20 flows)")
    ports = np.array([(s.summary.server_port, s.summary.client_port) for s in scored], dtype=float)
    eports = np.array([(s.summary.server_port, s.summary.client_port) for s in select(extra, P)[0]], dtype=float)
    for label, Xa, Xea in [("without ports (shipped)", X, Xe),
                           ("with server and client port", np.hstack([X, ports]), np.hstack([Xe, eports]))]:
        names, _ = folds(raw, Xa, Xea)
        f1 = f1_score(y, names.astype(str), labels=big, average=None)
        print(f"   {label:<30} {f1.mean():.3f}  " + " ".join(f"{c} {v:.2f}" for c, v in zip(big, f1)))


if __name__ == "__main__":
    main()
