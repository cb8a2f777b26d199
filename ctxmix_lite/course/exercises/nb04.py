"""Notebook 04 (value zeroing): checks, library references and helpers of its three exercises.

4.1 ``zeroed_output(cap, positions) -> [Tq, D]``: zero the value vectors of ``positions`` in every
    head *yourself*, from the captured pieces of one :class:`~ctxmix_lite.internals.capture_types.LayerCapture`
    (weights fixed, then the output projection and ``cap.post``).  Checked against the model's own
    layer re-run ``cap.rerun(positions)`` (independent: the transformers module with a hook on
    ``v_proj``).
4.2 ``value_zeroing_slow(cap, spans=None, rows=None) -> [R, C]``: one zeroed re-run per column,
    cosine distance to ``cap.out`` (float64), causal cells ``j > i`` set to 0, rows normalised.
    Checked against the library's exact fast path (equal to the re-run loop to 1e-5, see the
    package tests), on the causal decoder, the encoder (target frames x words) and cross-attention.
4.3 ``fast_zeroed_output(cap, positions, rows=None) -> [R, D]``: the exact identity
    ``x~_i^{not j} = post(x_i, a_i - delta_ij)``, ``delta_ij = sum_{j in positions} sum_h
    alpha^h_ij v^h_j (W_O^h)^T``, without re-running attention.  Checked against the re-runs.

The notebook's collapsed cells hold the readable solutions written from the equations; the
functions here named after the exercises are the library's answers (``value_zeroing_slow`` is
``value_zeroing(method="reference")``), used when a script wants a reference.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from ctxmix_lite.course.exercises import case, check_function
from ctxmix_lite.course.options import Options
from ctxmix_lite.viz.plotting import layer_label
from ctxmix_lite.measures.utils import normalize_rows
from ctxmix_lite.measures.value_zeroing import value_zeroing

__all__ = ["zeroed_output", "check_zeroed_output", "value_zeroing_slow", "exercise_cases", "check_value_zeroing_slow",
           "fast_zeroed_output", "check_fast_zeroed_output", "input_vs_value_zeroing", "InputZeroingOptions", "identity_check", "time_methods"]

# ---------------------------------------------------------------------------------------------- 4.1
def zeroed_output(cap, positions) -> torch.Tensor:
    """Library answer of 4.1: the attention block recomputed from the captured weights and values
    with ``v^h_j = 0`` for ``j`` in ``positions`` (every head), then ``cap.post``.  (The check
    compares with ``cap.rerun``, the transformers module itself.)"""
    with torch.no_grad():
        return cap.post(cap.resid, _attn_out_with(cap, _zero_v(cap, positions)))


def _attn_out_with(cap, V, weights=None, bias=True):
    """``concat_h(weights^h @ V^h) W_O^T (+ b_O)`` -- the attention block's output for values ``V``."""
    A = cap.weights if weights is None else weights
    Z = torch.einsum("hij,hjd->ihd", A, V).reshape(A.shape[1], -1)
    a = Z @ cap.W_O.T
    return a + cap.b_O if (bias and cap.b_O is not None) else a


def _zero_v(cap, positions, heads=None):
    V = cap.values.clone()
    for h in (range(V.shape[0]) if heads is None else heads):
        V[h, list(positions)] = 0.0
    return V


def _forgot_out_bias(cap, positions):
    with torch.no_grad():
        return cap.post(cap.resid, _attn_out_with(cap, _zero_v(cap, positions), bias=False))


def _renormalised(cap, positions):  # the key removed: column set to 0, rows renormalised
    with torch.no_grad():
        A = cap.weights.clone()
        A[:, :, list(positions)] = 0.0
        A = A / A.sum(-1, keepdim=True).clamp_min(1e-30)
        return cap.post(cap.resid, _attn_out_with(cap, cap.values, weights=A))


def _first_head_only(cap, positions):
    with torch.no_grad():
        return cap.post(cap.resid, _attn_out_with(cap, _zero_v(cap, positions, heads=[0])))


def _no_post(cap, positions):
    with torch.no_grad():
        return cap.resid + _attn_out_with(cap, _zero_v(cap, positions))


MISTAKES_41 = [
    ("add the output projection's bias b_O (cap.b_O, when not None): a_i = concat_h(z_i^h) W_O^T + b_O.",
     _forgot_out_bias),
    ("that removes the *key* (the column dropped, the rows renormalised): value zeroing keeps every "
     "attention weight alpha^h_ij as it was and sets v^h_j = 0.", _renormalised),
    ("zero the values of the positions in *every* head: V[:, positions] = 0 (V is [H, Tk, dh]).",
     _first_head_only),
    ("the attention output is not the layer output: run the rest of the layer, cap.post(cap.resid, a).",
     _no_post),
]


def _rerun_case(cap, positions):
    return cap.rerun(list(positions))


def zeroed_output_cases(capture, spans: Sequence, enc_layer: int = 1, dec_layer: int = 2) -> list:
    """Real Whisper blocks: the causal decoder (one token, two tokens), the encoder and the
    cross-attention (a word's frames), and no position at all (the output must be ``cap.out``)."""
    d, e, x = capture["decoder"][dec_layer], capture["encoder"][enc_layer], capture["cross"][dec_layer]
    T = d.weights.shape[-1]
    f, l = spans[len(spans) // 2]
    word = list(range(f, l + 1))
    cases = [
        case(d, [min(3, T - 1)], label=f"Whisper decoder self-attention {layer_label(dec_layer)}: token {min(3, T - 1)} zeroed"),
        case(d, [0, T - 1], label=f"decoder {layer_label(dec_layer)}: the first and the last token zeroed"),
        case(e, word, label=f"Whisper {layer_label(enc_layer, 'encoder')}: the frames {f}..{l} of one word zeroed"),
        case(x, word, label=f"cross-attention {layer_label(dec_layer)}: the encoder frames {f}..{l} zeroed"),
        case(d, [], label="nothing zeroed: the original output cap.out"),
    ]
    for c in cases:
        c.reference = _rerun_case
    return cases


def check_zeroed_output(fn, capture, spans, strict=None) -> bool:
    """``zeroed_output(cap, positions)`` against the model's own re-run, ``cap.rerun(positions)``."""
    from ctxmix_lite.course.exercises import diagnose_mistakes, mistake_hints

    cases = zeroed_output_cases(capture, spans)
    found = {} if fn is zeroed_output else diagnose_mistakes(fn, cases, MISTAKES_41)
    generic = {
        "type": "return a torch tensor: the layer output [Tq, D] (cap.post returns one).",
        "shape": "one row per query (cap.out.shape): post(cap.resid, a) with a of shape [Tq, D].",
        "dtype": "keep float32 (the capture's dtype): no .double() in this one.",
        "value": "V = cap.values.clone(); V[:, positions] = 0; z = cap.weights @ V  ([H, Tq, dh]); "
                 "a = concat_h z (z.transpose(0, 1).reshape(Tq, -1)) @ cap.W_O.T + cap.b_O; "
                 "return cap.post(cap.resid, a).",
        "error": "cap.values is [H, Tk, dh], cap.weights [H, Tq, Tk], cap.W_O [D, H*dh]; "
                 "cap.post(resid_rows, attn_out_rows) maps [N, D] x [N, D] -> [N, D].",
    }
    if _uses_rerun(fn, cases[0]):
        from ctxmix_lite.course.exercises import FAIL, report_result

        return report_result(False, f"{FAIL} zeroed_output: your function calls cap.rerun -- that is the model doing "
                              f"it for you (and what the check compares with). Zero the values yourself.\n"
                              f"  Hint: {generic['value']}", strict)
    # float32: the eager attention and an einsum sum in a different order (outputs up to ~1e2)
    return check_function(fn, _rerun_case, cases, "zeroed_output", atol=2e-3, rtol=1e-4,
                          hints=mistake_hints(found, generic), strict=strict)


# ---------------------------------------------------------------------------------------------- 4.2

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


def _once_per_case(fn):
    """``fn`` remembering its result per (block, spans, rows): a slow function runs once per case."""
    import functools

    seen = {}

    @functools.wraps(fn)
    def wrapped(cap, spans=None, rows=None):
        key = (cap.component, cap.layer, repr(spans), repr(rows))
        if key not in seen:
            seen[key] = fn(cap, spans=spans, rows=rows)
        out = seen[key]
        return out.clone() if isinstance(out, torch.Tensor) else out

    return wrapped


def check_value_zeroing_slow(fn, capture, spans, target_rows, strict=None) -> bool:
    """``value_zeroing_slow(cap, spans=None, rows=None)`` on real Whisper-base layers."""
    from ctxmix_lite.course.exercises import diagnose_mistakes, mistake_hints

    cases = exercise_cases(capture, spans, target_rows)
    # the learner's (slow) function runs once per case: the diagnosis and the comparison share it
    fn = fn if fn is value_zeroing_slow else _once_per_case(fn)
    found = {} if fn is value_zeroing_slow else diagnose_mistakes(fn, cases, MISTAKES, PROPERTIES)
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
                          hints=mistake_hints(found, generic), strict=strict)


# ---------------------------------------------------------------------------------------------- 4.3
def fast_zeroed_output(cap, positions, rows=None) -> torch.Tensor:
    """Library answer of 4.3: ``post(x_i, a_i - delta_ij)`` with ``delta_ij`` from
    :meth:`LayerCapture.projected_values` (``v_j^h W_O^h`` per head and key)."""
    r = list(range(cap.out.shape[0])) if rows is None else list(rows)
    pos = list(positions)
    with torch.no_grad():
        pv = cap.projected_values()[:, pos]  # [H, P, D]
        delta = torch.einsum("hip,hpd->id", cap.weights[:, r][:, :, pos], pv)
        return cap.post(cap.resid[r], cap.attn_out[r] - delta)


def _delta(cap, r, pos, weights=True):
    pv = cap.projected_values()[:, pos]
    if not weights:
        return pv.sum((0, 1)).expand(len(r), -1)
    return torch.einsum("hip,hpd->id", cap.weights[:, r][:, :, pos], pv)


def _fast_plus(cap, positions, rows=None):
    r = list(range(cap.out.shape[0])) if rows is None else list(rows)
    with torch.no_grad():
        return cap.post(cap.resid[r], cap.attn_out[r] + _delta(cap, r, list(positions)))


def _fast_no_weights(cap, positions, rows=None):
    r = list(range(cap.out.shape[0])) if rows is None else list(rows)
    with torch.no_grad():
        return cap.post(cap.resid[r], cap.attn_out[r] - _delta(cap, r, list(positions), weights=False))


def _fast_with_bias(cap, positions, rows=None):
    r = list(range(cap.out.shape[0])) if rows is None else list(rows)
    b = cap.b_O if cap.b_O is not None else 0.0
    with torch.no_grad():
        return cap.post(cap.resid[r], cap.attn_out[r] - _delta(cap, r, list(positions)) - b)


def _fast_no_post(cap, positions, rows=None):
    r = list(range(cap.out.shape[0])) if rows is None else list(rows)
    with torch.no_grad():
        return cap.resid[r] + cap.attn_out[r] - _delta(cap, r, list(positions))


MISTAKES_43 = [
    ("zeroing v_j *removes* its term: a_i - delta_ij, not a_i + delta_ij.", _fast_plus),
    ("delta_ij is weighted by how much i reads j in each head: sum_h alpha^h_ij v^h_j (W_O^h)^T "
     "(cap.weights[h, i, j]).", _fast_no_weights),
    ("b_O is not j's contribution: it stays in a_i (delta_ij has no bias term).", _fast_with_bias),
    ("a_i - delta_ij is the new attention output; the layer output is post(x_i, a_i - delta_ij) "
     "(cap.post(cap.resid[rows], ...)).", _fast_no_post),
]


def _rerun_rows(cap, positions, rows=None):
    out = cap.rerun(list(positions))
    return out if rows is None else out[list(rows)]


def fast_zeroed_output_cases(capture, spans: Sequence, target_rows: Sequence, enc_layer: int = 1,
                             dec_layer: int = 2) -> list:
    """Real Whisper blocks: decoder (one token; a span of two), encoder (the target's frames as
    rows, one frame or one word zeroed), cross-attention (all tokens, a word's frames zeroed)."""
    d, e, x = capture["decoder"][dec_layer], capture["encoder"][enc_layer], capture["cross"][dec_layer]
    T = d.weights.shape[-1]
    f, l = spans[len(spans) // 2]
    word = list(range(f, l + 1))
    rows = list(target_rows)
    cases = [
        case(d, [min(2, T - 1)], label=f"Whisper decoder self-attention {layer_label(dec_layer)}: token {min(2, T - 1)}, every row"),
        case(d, [1, 2], rows=list(range(T - 1, -1, -1)), label=f"decoder {layer_label(dec_layer)}: tokens 1-2, rows in reverse order"),
        case(e, [rows[0]], rows=rows, label=f"Whisper {layer_label(enc_layer, 'encoder')}: frame {rows[0]}, the target's {len(rows)} frames as rows"),
        case(e, word, rows=rows, label=f"{layer_label(enc_layer, 'encoder')}: the frames {f}..{l} of one word, the target's rows"),
        case(x, word, label=f"cross-attention {layer_label(dec_layer)}: the encoder frames {f}..{l}, every token"),
    ]
    for c in cases:
        c.reference = _rerun_rows
    return cases


def check_fast_zeroed_output(fn, capture, spans, target_rows, strict=None) -> bool:
    """``fast_zeroed_output(cap, positions, rows=None)`` against the real re-runs, and it must not
    re-run the layer (the point of the identity)."""
    from ctxmix_lite.course.exercises import FAIL, report_result
    from ctxmix_lite.course.exercises import diagnose_mistakes, mistake_hints

    cases = fast_zeroed_output_cases(capture, spans, target_rows)
    found = {} if fn is fast_zeroed_output else diagnose_mistakes(fn, cases, MISTAKES_43)
    generic = {
        "shape": "one row per kept query: [len(rows), D] (every query when rows is None).",
        "value": "delta = torch.einsum('hij,hjd->id', cap.weights[:, rows][:, :, positions], "
                 "cap.projected_values()[:, positions]); return cap.post(cap.resid[rows], cap.attn_out[rows] - delta).",
        "error": "cap.projected_values() is [H, Tk, D] (v^h_j (W_O^h)^T for every head and key); "
                 "cap.weights[h, i, j] is alpha^h_ij.",
    }
    if _uses_rerun(fn, cases[2]):
        return report_result(False, f"{FAIL} fast_zeroed_output: your function calls cap.rerun: the identity needs "
                              f"no re-run of attention -- only cap.post on a_i - delta_ij.\n"
                              f"  Hint: {generic['value']}", strict)
    return check_function(fn, _rerun_rows, cases, "fast_zeroed_output", atol=2e-3, rtol=1e-4,
                          hints=mistake_hints(found, generic), strict=strict)


def _uses_rerun(fn, c) -> bool:
    """True when ``fn`` calls ``cap.rerun`` on case ``c`` (a copy of the capture whose rerun is
    replaced by a recorder; any other error is left to the check)."""
    import copy as _copy

    cap = _copy.copy(c.args[0])
    called = []

    def spy(positions):
        called.append(list(positions))
        return c.args[0].rerun(positions)

    cap.rerun = spy
    try:
        fn(cap, *c.args[1:], **c.kwargs)
    except Exception:
        return False
    return bool(called)


# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InputZeroingOptions(Options):
    """The settings of :func:`input_vs_value_zeroing`."""

    cap: Any = None  # a capture of the model on ``audio`` to reuse (None: capture it here)
    sampling_rate: int = 16000


def input_vs_value_zeroing(model, processor, audio, layer: int, j: int, rows: Sequence[int],
                           options: Optional[InputZeroingOptions] = None, **settings) -> dict:
    """Zero the *input* ``x_j`` of Whisper encoder layer ``layer`` (a forward pre-hook on that
    layer), capture the layer again, and compare with zeroing the *values* of ``j``.

    settings: the fields of :class:`InputZeroingOptions` (``cap``, ``sampling_rate``), as keywords
    or ``options=``.

    Returns, for the input-zeroed layer: the largest change of an attention weight *outside*
    column ``j`` (value zeroing: 0, the weights are kept), the number of query rows whose weights
    changed by more than 1e-3, and for both kinds of zeroing the relative change of the output at
    ``j`` itself and the mean relative change over ``rows``."""
    from ctxmix_lite.internals.capture import capture as run_capture

    o = InputZeroingOptions.resolve(options, settings, where="input_vs_value_zeroing")
    cap, sampling_rate = o.cap, o.sampling_rate
    if getattr(model.config, "model_type", "") != "whisper":
        raise ValueError("input_vs_value_zeroing takes a Whisper model (its encoder layers)")
    enc_layer = model.model.encoder.layers[layer]

    def zero_input(module, args, kwargs):
        if args:
            h = args[0].clone()
            h[:, j] = 0.0
            return (h,) + tuple(args[1:]), kwargs
        h = kwargs["hidden_states"].clone()
        h[:, j] = 0.0
        return args, {**kwargs, "hidden_states": h}

    if cap is None:
        cap = run_capture(model, processor, audio, components=["encoder"], sampling_rate=sampling_rate)
    lc = cap["encoder"][layer]
    handle = enc_layer.register_forward_pre_hook(zero_input, with_kwargs=True)
    try:
        zin = run_capture(model, processor, audio, components=["encoder"], sampling_rate=sampling_rate)["encoder"][layer]
    finally:
        handle.remove()
    assert float(zin.resid[j].abs().max()) == 0.0, "the pre-hook did not zero the layer input"
    keep = torch.ones(lc.weights.shape[-1], dtype=torch.bool)
    keep[j] = False
    dw = (zin.weights - lc.weights).abs()[:, :, keep]
    zval = lc.rerun([j])
    r = list(rows)

    def rel(new, i):
        return float((new[i] - lc.out[i]).norm(dim=-1).mean() / lc.out[i].norm(dim=-1).mean())

    return {"max_weight_change_other_columns": float(dw.max()),
            "rows_with_changed_weights": int((dw.amax(dim=(0, 2)) > 1e-3).sum()),
            "n_rows": int(lc.weights.shape[1]),
            "change_at_j": {"input": rel(zin.out, [j]), "values": rel(zval, [j])},
            "change_on_rows": {"input": rel(zin.out, r), "values": rel(zval, r)}}


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
