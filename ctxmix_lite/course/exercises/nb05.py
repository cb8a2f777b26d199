"""Notebook 05 (the homophony study, cue contribution): reference solution and check.

The learner writes the study's read-out from a word-level context-mixing matrix::

    cue_contribution(word_matrix, cue, target) -> float (or [L] for a stack of layers)

``word_matrix[..., i, j]``: how much word ``j`` contributes to word ``i`` (non-negative; rows not
necessarily normalised). The cue contribution is the share of the target row's mass that falls on
the cue word(s)::

    cue_contribution = sum_{j in cue} M[target, j] / sum_j M[target, j]      (0 for an all-zero row)

``cue`` is a list of word indices (``Det_Noun_Verb``'s second use has two cue words: det + noun).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ctxmix_lite.course.exercises import case, check_function

__all__ = ["cue_contribution", "check_cue_contribution", "exercise_cases"]


def cue_contribution(word_matrix, cue: Sequence[int], target: int):
    """Reference solution (see the module docstring). ``word_matrix``: ``[W, W]`` or ``[L, W, W]``."""
    m = np.asarray(word_matrix, dtype=np.float64)
    if m.ndim < 2 or m.shape[-1] != m.shape[-2]:
        raise ValueError(f"word_matrix must be [..., W, W], got shape {m.shape}")
    row = m[..., target, :]  # what the target receives from every word
    total = row.sum(-1)
    on_cue = row[..., list(cue)].sum(-1)
    out = np.divide(on_cue, total, out=np.zeros_like(np.asarray(on_cue, dtype=np.float64)), where=np.asarray(total) > 0)
    return float(out) if np.ndim(out) == 0 else out


# wrong answers that a learner is likely to give, with what to say
def _column(word_matrix, cue, target):
    m = np.asarray(word_matrix, dtype=np.float64)
    col = m[..., :, target]
    t = col.sum(-1)
    out = np.divide(col[..., list(cue)].sum(-1), t, out=np.zeros_like(np.asarray(t)), where=t > 0)
    return float(out) if np.ndim(out) == 0 else out


def _unnormalised(word_matrix, cue, target):
    m = np.asarray(word_matrix, dtype=np.float64)
    out = m[..., target, list(cue)].sum(-1)
    return float(out) if np.ndim(out) == 0 else out


def _first_cue_only(word_matrix, cue, target):
    return cue_contribution(word_matrix, list(cue)[:1], target)


MISTAKES = [
    ("you read a column: rows are the *receiving* words, so the target's row is word_matrix[..., target, :].", _column),
    ("divide by the target row's total: the study reports a *share* of the row (rows may not sum to 1).", _unnormalised),
    ("`cue` can hold several words (det + noun for the verb of Det_Noun_Verb): sum over all of them.", _first_cue_only),
]


def _close(a, b) -> bool:
    try:
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return a.shape == b.shape and bool(np.allclose(a, b, atol=1e-8, rtol=1e-6))


def _diagnose(fn, cases) -> dict:
    """``{case index: hint}`` for the first case whose output matches a known mistake."""
    import copy

    for i, c in enumerate(cases):
        try:
            out = fn(*copy.deepcopy(c.args), **copy.deepcopy(c.kwargs))
        except Exception:
            return {}
        if _close(out, c.reference(*c.args, **c.kwargs)):
            continue
        for hint, wrong in MISTAKES:
            try:
                if _close(out, wrong(*c.args, **c.kwargs)):
                    return {i: hint}
            except Exception:
                continue
        return {}
    return {}


def exercise_cases(real_matrix=None, real_cue=None, real_target=None) -> list:
    """Hand-made cases (+ one real word-level matrix of the notebook when given)."""
    rng = np.random.default_rng(0)
    a = np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    b = rng.random((5, 5)) * 3.0  # rows not normalised
    stack = rng.random((4, 6, 6))
    zero = a.copy()
    zero[2] = 0.0
    cases = [
        case(a, [0], 1, label="3 words, normalised rows, cue 0 -> target 1"),
        case(b, [1], 3, label="rows that do not sum to 1"),
        case(b, [0, 1], 2, label="two cue words (Det_Noun_Verb: det + noun -> verb)"),
        case(stack, [2], 4, label="a stack of 4 layers [L, W, W] -> one value per layer"),
        case(zero, [1], 2, label="an all-zero target row -> 0"),
    ]
    if real_matrix is not None:
        cases.append(case(np.asarray(real_matrix), list(real_cue), int(real_target), label="the notebook's item"))
    for c in cases:
        c.reference = cue_contribution
    return cases


def check_cue_contribution(fn, real_matrix=None, real_cue=None, real_target=None, strict=None) -> bool:
    """Compare the learner's ``cue_contribution`` with the reference; say which mistake it looks like."""
    from ctxmix_lite.course.exercises import mistake_hints

    cases = exercise_cases(real_matrix, real_cue, real_target)
    found = _diagnose(fn, cases)
    generic = {
        "type": "return a float for one matrix and an array of shape [L] for a stack of layers.",
        "shape": "index the last two axes only (word_matrix[..., target, :]) so that a layer axis in front survives.",
        "value": "share = word_matrix[target, cue].sum() / word_matrix[target].sum().",
        "nan": "an all-zero row has no share to give: return 0 there instead of dividing by 0.",
    }
    return check_function(fn, cue_contribution, cases, "cue_contribution", atol=1e-8, rtol=1e-6,
                          hints=mistake_hints(found, generic), strict=strict)
