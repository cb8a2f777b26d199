"""One entry point for the three context-mixing measures, per layer and per component.

=================  ==================================================================  ==========
measure            cell ``[i, j]`` (query ``i``, key ``j``)                            module
=================  ==================================================================  ==========
attention          ``mean_h alpha_ij^h`` (or per head)                                 here
attention_norm     ``|| sum_h alpha_ij^h v_j^h W_O^h ||`` (or per head)                attention_norm.py
value_zeroing      ``1 - cos(x~_i^{-j}, x~_i)``, rows normalised                       value_zeroing.py
=================  ==================================================================  ==========

``rows`` restricts the query rows; ``spans`` replaces key columns by inclusive key spans
(attention, attention_norm: the column is the mass summed over the span frames; value zeroing:
the whole span zeroed at once).  Causal components: cells with the key after the query are 0.
Attention and Attention-Norm are returned raw (attention rows sum to 1 already); value zeroing
rows are normalised (``normalize=False`` for raw distances).  Word-level matrices:
:func:`ctxmix_lite.pooling.word_level`.
"""
from __future__ import annotations

import torch

from .attention_norm import attention_norm
from .capture_types import Capture, LayerCapture
from .measure_utils import as_rows, as_spans, causal_keep_mask, sum_over_spans
from .value_zeroing import value_zeroing

MEASURES = ("attention", "attention_norm", "value_zeroing")
#: labels for figures
MEASURE_LABELS = {"attention": "Attention", "attention_norm": "Attention-Norm", "value_zeroing": "Value Zeroing"}

__all__ = ["MEASURES", "MEASURE_LABELS", "attention", "layer_measure", "component_measure"]


def attention(cap: LayerCapture, per_head: bool = False, rows=None, spans=None) -> torch.Tensor:
    """Softmax attention weights: head-averaged ``[R, C]`` or per head ``[H, R, C]``."""
    H, Tq, Tk = cap.weights.shape
    r = as_rows(rows, Tq)
    sp = as_spans(spans, Tk)
    w = cap.weights[:, r, :]  # [H, R, Tk]
    out = w if per_head else w.mean(0)  # mean_h alpha_ij^h
    out = sum_over_spans(out, sp)
    if cap.causal:
        out = torch.where(causal_keep_mask(r, Tk, sp), out, torch.zeros_like(out))
    return out.float()


def _check_measure(measure):
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; choose one of {MEASURES}")


def layer_measure(cap: LayerCapture, measure: str, rows=None, spans=None, per_head: bool = False, **kw) -> torch.Tensor:
    """Measure ``measure`` on one attention block -> ``[R, C]`` (``[H, R, C]`` with ``per_head``).

    Extra keywords go to :func:`~ctxmix_lite.value_zeroing.value_zeroing` (``method``,
    ``chunk_size``, ``normalize``, ``progress``).
    """
    _check_measure(measure)
    if measure == "attention":
        if kw:
            raise ValueError(f"attention takes no extra options, got {sorted(kw)}")
        return attention(cap, per_head=per_head, rows=rows, spans=spans)
    if measure == "attention_norm":
        if kw:
            raise ValueError(f"attention_norm takes no extra options, got {sorted(kw)}")
        return attention_norm(cap, per_head=per_head, rows=rows, spans=spans)
    if per_head:
        raise ValueError(
            "value_zeroing has no per-head variant here: the values of a key are zeroed in all "
            "heads at once (Mohebbi et al. 2023); use per_head=False"
        )
    return value_zeroing(cap, rows=rows, spans=spans, **kw)


def component_measure(
    capture: Capture,
    component: str,
    measure: str,
    rows=None,
    spans=None,
    progress: bool = False,
    layers=None,
    per_head: bool = False,
    **kw,
) -> torch.Tensor:
    """Stack :func:`layer_measure` over the layers of one component -> ``[L, R, C]``.

    ``layers``: None (all) or a list of layer indices (the stack follows that order).
    """
    _check_measure(measure)
    caps = capture[component]
    idx = range(len(caps)) if layers is None else list(layers)
    it = idx
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(idx, desc=f"{measure} {component}", leave=False)
    mats = []
    for l in it:
        if not 0 <= l < len(caps):
            raise ValueError(f"layer {l} out of range: {component} has {len(caps)} layers")
        mats.append(layer_measure(caps[l], measure, rows=rows, spans=spans, per_head=per_head, **kw))
    return torch.stack(mats)
