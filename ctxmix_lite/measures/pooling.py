"""From frames to words: pool a frame-level context-mixing matrix over word alignments.

The study reads matrices at the word level, as the paper does::

    W[a, b] = agg_{i in word a, j in word b} M[i, j]          agg = mean (default), max or sum
    W[a, b] <- W[a, b] / sum_b' W[a, b']                       rows re-normalised over the
                                                               aligned words only

Frames outside every word (padding of Whisper's 30 s window, silences) take no part: they are
not in any span, so they never enter a mean nor the renormalisation.  Spans are inclusive frame
(or token) indices ``(first, last)``, e.g. from :func:`ctxmix_lite.corpus.audio.words_to_frame_spans`.
``row_spans=None`` keeps the rows as they are (e.g. decoder token rows of cross-attention),
``col_spans=None`` keeps the columns.
"""
from __future__ import annotations

import torch

from .utils import as_spans, normalize_rows

__all__ = ["word_level", "AGGREGATIONS"]

AGGREGATIONS = ("mean", "max", "sum")


def _pool(mat: torch.Tensor, spans, dim: int, agg: str) -> torch.Tensor:
    parts = []
    for f, l in spans:
        block = mat.narrow(dim, f, l - f + 1)
        if agg == "mean":
            parts.append(block.mean(dim))
        elif agg == "max":
            parts.append(block.amax(dim))
        else:
            parts.append(block.sum(dim))
    return torch.stack(parts, dim=dim if dim >= 0 else mat.dim() + dim)


def word_level(mat, row_spans, col_spans, agg: str = "mean", renormalize: bool = True) -> torch.Tensor:
    """``[..., Tq, Tk] -> [..., Wq, Wk]`` (see the module docstring).

    Args:
        mat: frame-level matrix (any leading dims, e.g. layers or heads).
        row_spans / col_spans: inclusive ``(first, last)`` spans over the rows / columns, or None.
        agg: "mean" (the paper), "max" or "sum" over the frames of the row word and column word.
        renormalize: divide each row by its sum over the aligned column words (all-zero rows stay 0).
    """
    if agg not in AGGREGATIONS:
        raise ValueError(f"agg must be one of {AGGREGATIONS}, got {agg!r}")
    m = torch.as_tensor(mat)
    if m.dim() < 2:
        raise ValueError(f"word_level needs a matrix [..., Tq, Tk], got shape {tuple(m.shape)}")
    if not m.is_floating_point():
        m = m.float()
    Tq, Tk = m.shape[-2:]
    rs = as_spans(row_spans, Tq)
    cs = as_spans(col_spans, Tk)
    if cs is not None:
        m = _pool(m, cs, -1, agg)
    if rs is not None:
        m = _pool(m, rs, -2, agg)
    if renormalize:
        if (m < 0).any():
            raise ValueError("renormalize=True needs non-negative scores (got negative values)")
        m = normalize_rows(m)
    return m
