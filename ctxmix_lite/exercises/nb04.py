"""Notebook 04 (value zeroing): reference solution, check and helpers.

The learner writes the slow, obviously right version::

    value_zeroing_slow(cap, spans=None, rows=None) -> [R, C]

for one :class:`~ctxmix_lite.capture_types.LayerCapture` ``cap``: for every column (a key position,
or a span of keys when ``spans`` is given) call ``cap.rerun(positions)`` -- the model's own layer
re-run with those value vectors zeroed in every head -- and score each kept query row ``i`` by the
cosine distance (in float64) between the new output and ``cap.out[i]``; in a causal layer set the
cells with ``j > i`` to 0; then normalise each row to sum 1.

The reference solution is :func:`ctxmix_lite.value_zeroing.value_zeroing` with
``method="reference"``; the check compares with the exact fast path (equal to 1e-5, see the
package tests) to stay quick, on real Whisper-base blocks: the causal decoder (every token), the
encoder (the target word's frames x one column per word) and the cross-attention (tokens x words).
"""
from __future__ import annotations

import time
from typing import Optional, Sequence

import torch

from ctxmix_lite.exercises import case, check_function
from ctxmix_lite.plotting import layer_label
from ctxmix_lite.measure_utils import normalize_rows
from ctxmix_lite.value_zeroing import value_zeroing

__all__ = ["value_zeroing_slow", "exercise_cases", "check_value_zeroing_slow", "identity_check", "time_methods"]


def value_zeroing_slow(cap, spans=None, rows=None) -> torch.Tensor:
    """Reference solution: one layer re-run per column (see the module docstring)."""
    return value_zeroing(cap, rows=rows, spans=spans, method="reference")


def _expected(cap, spans=None, rows=None):
    return value_zeroing(cap, rows=rows, spans=spans, method="fast")


def _no_normalisation(cap, spans=None, rows=None):
    return value_zeroing(cap, rows=rows, spans=spans, normalize=False)


def _similarity(cap, spans=None, rows=None):
    raw = value_zeroing(cap, rows=rows, spans=spans, normalize=False)
    return normalize_rows(1.0 - raw)


def _all_rows(cap, spans=None, rows=None):
    return value_zeroing(cap, spans=spans) if rows is not None else None


def _causal_violated(out, c):
    cap = c.args[0]
    return bool(cap.causal and out.dim() == 2 and out.shape[0] == out.shape[1] and (out.triu(1) != 0).any())


PROPERTIES = [
    ("in a causal layer (cap.causal) only j <= i is defined: set the cells with j > i to exactly 0 "
     "(zeroing a later token cannot change position i; what you see there is float rounding).",
     _causal_violated),
]

MISTAKES = [
    ("the rows are not normalised: divide each row by its sum (rows that sum to 0 stay 0).", _no_normalisation),
    ("that is the cosine *similarity*; value zeroing scores the change: 1 - cos(new, original).", _similarity),
    ("only the query rows in `rows` are wanted (in that order): index the outputs with rows.", _all_rows),
]


def exercise_cases(capture, spans: Sequence, target_rows: Sequence, enc_layer: int = 1, dec_layer: int = 2,
                   max_spans: int = 4) -> list:
    """Cases from a Whisper capture: ``spans`` are the clip's word frame spans (encoder frames),
    ``target_rows`` the target word's frames.  The encoder case keeps at most ``max_spans`` words
    around the target (each costs one 1,500-frame layer re-run)."""
    d = capture["decoder"][dec_layer]
    e = capture["encoder"][enc_layer]
    x = capture["cross"][dec_layer]
    sp = list(spans)
    if len(sp) > max_spans:  # the words nearest the target
        centre = min(range(len(sp)), key=lambda k: abs(sp[k][0] - target_rows[0]))
        lo = max(0, min(centre - max_spans // 2, len(sp) - max_spans))
        sp = sp[lo: lo + max_spans]
    cases = [
        case(d, label=f"Whisper decoder self-attention {layer_label(dec_layer)}: every token (causal)"),
        case(e, spans=sp, rows=list(target_rows),
             label=f"Whisper {layer_label(enc_layer, 'encoder')}: {len(target_rows)} target frames x {len(sp)} word spans"),
        case(x, spans=sp, label=f"Whisper cross-attention {layer_label(dec_layer)}: tokens x {len(sp)} word spans"),
    ]
    for c in cases:
        c.reference = _expected
    return cases


def check_value_zeroing_slow(fn, capture, spans, target_rows, strict=None) -> bool:
    """``value_zeroing_slow(cap, spans=None, rows=None)`` on real Whisper-base layers."""
    from ctxmix_lite.exercises.nb01 import _diagnose, _hints

    cases = exercise_cases(capture, spans, target_rows)
    # diagnosing re-runs the learner's (slow) function on every case: not for the reference itself
    found = {} if fn is value_zeroing_slow else _diagnose(fn, cases, MISTAKES, PROPERTIES)
    generic = {
        "shape": "one row per kept query (len(rows), or all Tq) and one column per key position "
                 "(Tk) or per span (len(spans)).",
        "value": "for each column: new = cap.rerun(positions); d = 1 - cos(new[rows], cap.out[rows]) "
                 "computed in float64 (.double(): most distances are tiny, float32 rounding is ~1e-7), "
                 "cells with j > i set to 0 when cap.causal; then rows / row sums.",
        "error": "cap.rerun takes a list of key positions (all the frames of the span, inclusive "
                 "of `last`) and returns the layer output [Tq, D].",
    }
    # float32 cosine distances carry ~1e-7 absolute error per cell: the tolerance allows for it
    return check_function(fn, _expected, cases, "value_zeroing_slow", atol=2e-5, rtol=1e-3,
                          hints=_hints(found, generic), strict=strict)


# ----------------------------------------------------------------------------------------------
def identity_check(lc, rows: Sequence[int], columns: Sequence[int]) -> dict:
    """The fast identity on one layer: for each key ``j``,
    ``post(resid_i, attn_out_i - sum_h alpha_ij^h v_j^h W_O^h)`` vs the real re-run ``rerun([j])[i]``.

    Returns the max abs difference over the given rows and columns, the size of the change
    zeroing produced (so that "equal" is not "both unchanged") and the largest output entry (the
    scale float32 rounding is relative to)."""
    pv = lc.projected_values()  # [H, Tk, D]
    r = torch.as_tensor(list(rows))
    diff, change = 0.0, 0.0
    with torch.no_grad():
        for j in columns:
            delta = torch.einsum("hi,hd->id", lc.weights[:, r, j], pv[:, j])  # sum_h alpha_ij^h v_j^h W_O^h
            fast = lc.post(lc.resid[r], lc.attn_out[r] - delta)
            ref = lc.rerun([j])[r]
            diff = max(diff, float((fast - ref).abs().max()))
            change = max(change, float((ref - lc.out[r]).abs().max()))
    return {"max_abs_diff": diff, "max_change": change, "max_output": float(lc.out[r].abs().max())}


def time_methods(lc, rows=None, spans=None, repeat: int = 1) -> dict:
    """Wall time of the reference loop and the fast path on the same block, and their max difference."""
    t0 = time.perf_counter()
    for _ in range(repeat):
        ref = value_zeroing(lc, rows=rows, spans=spans, method="reference")
    t1 = time.perf_counter()
    for _ in range(repeat):
        fast = value_zeroing(lc, rows=rows, spans=spans, method="fast")
    t2 = time.perf_counter()
    return {"reference_s": (t1 - t0) / repeat, "fast_s": (t2 - t1) / repeat,
            "speedup": (t1 - t0) / max(t2 - t1, 1e-9), "max_abs_diff": float((fast - ref).abs().max())}
