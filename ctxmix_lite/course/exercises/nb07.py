"""Notebook 07 (context mixing vs feature attribution): reference solution and check.

The learner pools a time series of attribution scores into words::

    word_attribution(scores, times, step, alignment) -> np.ndarray [W]

``scores[k]`` belongs to the interval ``[times[k], times[k] + step)`` seconds; an interval counts
for word ``w`` when its *centre* lies in ``[start_w, end_w)``; the word's score is the sum of its
intervals' scores (signed). Words are compared with the blank-out test word by word.
"""
from __future__ import annotations

import numpy as np

from ctxmix_lite.study.attribution import Attribution, word_scores
from ctxmix_lite.course.exercises import case, check_function

__all__ = ["word_attribution", "check_word_attribution"]


def word_attribution(scores, times, step, alignment) -> np.ndarray:
    """Reference solution: :func:`ctxmix_lite.study.attribution.word_scores`."""
    return word_scores(Attribution("x", np.asarray(scores, dtype=float), np.asarray(times, dtype=float), float(step), 1.0),
                       alignment)


def _by_start(scores, times, step, alignment):
    s, t = np.asarray(scores, dtype=float), np.asarray(times, dtype=float)
    return np.array([s[(t >= w["start"]) & (t < w["end"])].sum() for w in alignment])


def _absolute(scores, times, step, alignment):
    return word_attribution(np.abs(scores), times, step, alignment)


def _mean(scores, times, step, alignment):
    s, c = np.asarray(scores, dtype=float), np.asarray(times, dtype=float) + step / 2
    return np.array([s[(c >= w["start"]) & (c < w["end"])].mean() if ((c >= w["start"]) & (c < w["end"])).any() else 0.0
                     for w in alignment])


MISTAKES = [
    ("use the interval's *centre* (times + step / 2), not its start, to decide which word it belongs to.", _by_start),
    ("keep the sign: negative attribution means the interval speaks *against* the target.", _absolute),
    ("sum the word's intervals (a word's total), do not average them.", _mean),
]


def exercise_cases() -> list:
    al = [dict(start=0.0, end=0.31, word="les"), dict(start=0.31, end=0.72, word="livres"), dict(start=0.72, end=1.0, word="ici")]
    t10 = np.arange(100) * 0.01
    rng = np.random.default_rng(0)
    cases = [
        case(np.arange(10, dtype=float) - 3, np.arange(10) * 0.1, 0.1, al, label="10 intervals of 100 ms, signed"),
        case(rng.standard_normal(100), t10, 0.01, al, label="10 ms log-mel frames"),
        case(rng.random(25), np.arange(25) * 0.04, 0.04, al, label="40 ms chunks (value-zeroing rollout)"),
    ]
    for c in cases:
        c.reference = word_attribution
    return cases


def check_word_attribution(fn, strict=None) -> bool:
    """Compare the learner's ``word_attribution`` with the reference; name a typical mistake."""
    import copy

    cases = exercise_cases()
    hints = {"shape": "one value per aligned word: an array of shape [len(alignment)].",
             "value": "centre = times + step / 2; word w gets scores[(centre >= start_w) & (centre < end_w)].sum()."}
    for c in cases:
        try:
            out = np.asarray(fn(*copy.deepcopy(c.args)), dtype=float)
            ref = word_attribution(*c.args)
            if out.shape == ref.shape and not np.allclose(out, ref):
                for hint, wrong in MISTAKES:
                    if np.allclose(out, wrong(*c.args)):
                        hints["value"] = hint
                        break
                break
        except Exception:
            break
    return check_function(fn, word_attribution, cases, "word_attribution", atol=1e-9, rtol=1e-9, hints=hints, strict=strict)
