"""Notebook 06 (number probe): the library's answer, and a check of properties.

The learner writes the probe's scoring loop::

    cv_accuracy(X, y, n_splits=3, seed=0) -> float

stratified ``n_splits``-fold cross-validation of ``StandardScaler`` + ``LogisticRegression(max_iter=2000)``
(fitted on the training part only), returning the mean held-out accuracy. The study shuffles with
``np.random.default_rng(seed).permutation`` and splits with ``StratifiedKFold(n_splits)``; any
other correct cross-validation -- ``StratifiedKFold(shuffle=True, random_state=seed)``, another
seed, a hand-written split -- gives a slightly different number and is just as right. So the check
tests properties, not equality with one split:

* the result is one number in [0, 1], and the same seed gives the same number (deterministic);
* on data with a planted linear signal it lies within ``TOLERANCE`` of the range that valid
  cross-validations give (the reference procedure and ``StratifiedKFold(shuffle=True)`` over
  ``N_SPLITS_DRAWN`` seeds each);
* on data with no signal (pure noise, or a weak signal in many dimensions, where a probe that
  sees its test items scores 0.8-1.0) it stays in that range too: a training accuracy, or
  scoring items the probe was fitted on, is rejected and named.
"""
from __future__ import annotations

import numpy as np

from ctxmix_lite.course.exercises import case
from ctxmix_lite.study.probe import cross_validate_probe, planted_signal

__all__ = ["cv_accuracy", "check_cv_accuracy", "exercise_cases", "valid_range", "TOLERANCE"]


def cv_accuracy(X, y, n_splits: int = 3, seed: int = 0) -> float:
    """Reference solution: :func:`ctxmix_lite.study.probe.cross_validate_probe`'s mean accuracy."""
    return cross_validate_probe(X, y, n_splits=n_splits, seed=seed)["accuracy"]


def _train_accuracy(X, y, n_splits=3, seed=0):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    m = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    return float(np.mean(m.predict(X) == y))


def _scored_on_everything(X, y, n_splits=3, seed=0):
    """Fitted on the training folds but scored on all items (its training items included)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = np.asarray(X), np.asarray(y)
    accs = []
    for tr, _ in StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(X, y):
        m = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X[tr], y[tr])
        accs.append(np.mean(m.predict(X) == y))
    return float(np.mean(accs))


def _sklearn_shuffled(X, y, n_splits=3, seed=0):
    """A correct variant: ``StratifiedKFold(shuffle=True, random_state=seed)``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(n_splits, shuffle=True, random_state=seed)
    return float(cross_val_score(model, np.asarray(X), np.asarray(y), cv=cv).mean())


MISTAKES = [
    ("that is the *training* accuracy: fit on the training folds, score on the held-out fold only.", _train_accuracy),
    ("the probe is scored on items it was fitted on: score each fold's model on that fold's held-out "
     "items only (an item must never be in its own training part).", _scored_on_everything),
]

TOLERANCE = 0.08       # beyond the range of valid cross-validations (a few points: other splits)
N_SPLITS_DRAWN = 20    # seeds per valid procedure that span the range


def exercise_cases() -> list:
    X1, y1 = planted_signal(n=90, d=8, strength=1.0, seed=1)
    X2, y2 = planted_signal(n=60, d=40, strength=0.3, seed=2)
    X3, y3 = planted_signal(n=99, d=5, strength=2.0, seed=3)
    Xn = np.random.default_rng(4).standard_normal((60, 40))
    yn = np.where(np.arange(60) % 2 == 1, "plural", "singular")
    cases = [
        case(X1, y1, label="90 items, 8 features, a planted direction"),
        case(X2, y2, seed=5, label="60 items, 40 features, weak signal (overfitting is easy), seed 5"),
        case(X3, y3, n_splits=3, seed=1, label="99 items, strong signal"),
        case(Xn, yn, seed=2, label="60 items, 40 features of pure noise: chance, unless test items leak into training"),
    ]
    for c in cases:
        c.reference = cv_accuracy
    return cases


def valid_range(c) -> tuple:
    """(lowest, highest) mean accuracy that correct cross-validations give on case ``c``: the
    reference procedure and ``StratifiedKFold(shuffle=True)``, ``N_SPLITS_DRAWN`` seeds each."""
    X, y = c.args
    k = c.kwargs.get("n_splits", 3)
    accs = [cv_accuracy(X, y, n_splits=k, seed=s) for s in range(N_SPLITS_DRAWN)]
    accs += [_sklearn_shuffled(X, y, n_splits=k, seed=s) for s in range(N_SPLITS_DRAWN)]
    return min(accs), max(accs)


_RANGES: dict = {}


def _range(i, c):
    if i not in _RANGES:
        _RANGES[i] = valid_range(c)
    return _RANGES[i]


def check_cv_accuracy(fn, strict=None) -> bool:
    """Check the properties of the learner's ``cv_accuracy`` (see the module docstring): any
    correct cross-validation passes, a wrong one is rejected with what is wrong."""
    import copy
    import numbers

    from ctxmix_lite.course.exercises import FAIL, PASS, report_result, short_traceback

    name = "cv_accuracy"
    cases = exercise_cases()
    n = len(cases)
    for i, c in enumerate(cases):
        where = f"case {i + 1} of {n} ({c.label})"
        outs = []
        for _ in range(2):  # twice: the same seed must give the same number
            try:
                outs.append(fn(*copy.deepcopy(c.args), **copy.deepcopy(c.kwargs)))
            except NotImplementedError:
                return report_result(False, f"{FAIL} {name}: not implemented yet.\n  Hint: replace `raise "
                                      f"NotImplementedError` with your code (or set SOLUTIONS = True).", strict)
            except Exception as err:
                return report_result(False, f"{FAIL} {name}: your function raised an error on {where}:\n"
                                      f"  {short_traceback(err)}\n  Hint: X is [N, D] (numpy), y holds "
                                      f"strings ('singular' / 'plural').", strict)
        out = outs[0]
        if isinstance(out, (bool, np.bool_)) or not isinstance(out, numbers.Real):
            return report_result(False, f"{FAIL} {name}: {where}: returned {type(out).__name__}, expected one "
                                  f"number.\n  Hint: return the mean of the fold accuracies as a float.", strict)
        out = float(out)
        if not 0.0 <= out <= 1.0:
            return report_result(False, f"{FAIL} {name}: {where}: {out:.4g} is not an accuracy (a share in [0, 1]).\n"
                                  f"  Hint: accuracy = mean(prediction == label) on the held-out items.", strict)
        if float(outs[1]) != out:
            return report_result(False, f"{FAIL} {name}: {where}: two calls with the same seed gave {out:.4f} and "
                                  f"{float(outs[1]):.4f}.\n  Hint: derive every random choice from `seed` "
                                  f"(np.random.default_rng(seed), or random_state=seed).", strict)
        lo, hi = _range(i, c)
        if not lo - TOLERANCE <= out <= hi + TOLERANCE:
            hint = ("the held-out accuracy is far above what the data allow: the model has seen the items it is "
                    "scored on." if out > hi else "the accuracy is below what any correct split gives: check that "
                    "features and labels stay aligned (index X and y with the same indices).")
            for h, wrong in MISTAKES:
                try:
                    if abs(out - wrong(*copy.deepcopy(c.args), **copy.deepcopy(c.kwargs))) < 1e-9:
                        hint = h
                        break
                except Exception:
                    continue
            return report_result(False, f"{FAIL} {name}: {where}: {out:.3f}, but correct cross-validations give "
                                  f"{lo:.3f}-{hi:.3f} (accepted: {max(0, lo - TOLERANCE):.3f}-"
                                  f"{min(1, hi + TOLERANCE):.3f}).\n  Hint: {hint}", strict)
    return report_result(True, f"{PASS} {name}: all {n} cases are within the range of correct cross-validations "
                         f"(±{TOLERANCE:g}), on signal and on noise, and deterministic under the seed.", strict)
