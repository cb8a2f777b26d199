"""Notebook 06 (number probe): reference solution and check.

The learner writes the probe's scoring loop::

    cv_accuracy(X, y, n_splits=3, seed=0) -> float

exactly as the study does it: shuffle the items with ``np.random.default_rng(seed).permutation``,
split the shuffled items with ``StratifiedKFold(n_splits)`` (no further shuffling), and for each
fold fit ``StandardScaler`` + ``LogisticRegression(max_iter=2000)`` on the training part (L2,
default ``C``) and score the accuracy on the held-out part; return the mean over folds.
"""
from __future__ import annotations

import numpy as np

from ctxmix_lite.exercises import case, check_function
from ctxmix_lite.probe import cross_validate_probe, planted_signal

__all__ = ["cv_accuracy", "check_cv_accuracy", "exercise_cases"]


def cv_accuracy(X, y, n_splits: int = 3, seed: int = 0) -> float:
    """Reference solution: :func:`ctxmix_lite.probe.cross_validate_probe`'s mean accuracy."""
    return cross_validate_probe(X, y, n_splits=n_splits, seed=seed)["accuracy"]


def _train_accuracy(X, y, n_splits=3, seed=0):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    m = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    return float(np.mean(m.predict(X) == y))


MISTAKES = [
    ("that is the *training* accuracy: fit on the training folds, score on the held-out fold only.", _train_accuracy),
]


def exercise_cases() -> list:
    X1, y1 = planted_signal(n=90, d=8, strength=1.0, seed=1)
    X2, y2 = planted_signal(n=60, d=40, strength=0.3, seed=2)
    X3, y3 = planted_signal(n=99, d=5, strength=2.0, seed=3)
    cases = [
        case(X1, y1, label="90 items, 8 features, a planted direction"),
        case(X2, y2, seed=5, label="60 items, 40 features, weak signal (overfitting is easy), seed 5"),
        case(X3, y3, n_splits=3, seed=1, label="99 items, strong signal"),
    ]
    for c in cases:
        c.reference = cv_accuracy
    return cases


def check_cv_accuracy(fn, strict=None) -> bool:
    """Compare the learner's ``cv_accuracy`` with the reference on planted-signal data."""
    import copy

    cases = exercise_cases()
    hints = {
        "type": "return one float: the mean accuracy over the folds.",
        "value": "perm = np.random.default_rng(seed).permutation(len(y)); folds = StratifiedKFold(n_splits)"
                 ".split(X[perm], y[perm]); map fold indices back through perm (or index X[perm], y[perm]); "
                 "StandardScaler + LogisticRegression(max_iter=2000) fitted on the training part only.",
    }
    for i, c in enumerate(cases):  # a systematic mistake: say it
        try:
            out = fn(*copy.deepcopy(c.args), **copy.deepcopy(c.kwargs))
            if abs(out - c.reference(*c.args, **c.kwargs)) > 1e-9:
                for hint, wrong in MISTAKES:
                    if abs(out - wrong(*c.args, **c.kwargs)) < 1e-9:
                        hints["value"] = hint
                break
        except Exception:
            break
    return check_function(fn, cv_accuracy, cases, "cv_accuracy", atol=1e-9, rtol=0, hints=hints, strict=strict)
