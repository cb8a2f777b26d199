"""Raw attention weights as a context-mixing matrix (notebook 02): ``A_ij = mean_h alpha_ij^h``.

The weakest of the measures (notebook 03 shows why: a large weight on a small value vector moves
nothing), and the one every other measure is compared with.
"""
from __future__ import annotations

import torch

from ctxmix_lite.internals.capture_types import LayerCapture

from .utils import as_rows, as_spans, causal_keep_mask, sum_over_spans

__all__ = ["attention"]


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
