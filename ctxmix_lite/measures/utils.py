"""Small shared helpers of the context-mixing measures: row / span selection, causal masks,
row normalisation and a numerically careful cosine distance.

Every measure returns a matrix ``M[r, c]``: row ``r`` is the query position ``rows[r]`` (a frame of
the encoder or a token of the decoder), column ``c`` is either a key position ``c`` (``spans=None``)
or a key span ``spans[c] = (first, last)`` (inclusive).
"""
from __future__ import annotations

from typing import Optional

import torch

__all__ = [
    "as_rows",
    "as_spans",
    "causal_keep_mask",
    "normalize_rows",
    "cosine_distance",
    "sum_over_spans",
    "span_membership",
]


def as_rows(rows, n_queries: int) -> torch.Tensor:
    """Validate ``rows`` (None, an int, a list or a 1-D tensor of query indices) -> LongTensor [R]."""
    if rows is None:
        return torch.arange(n_queries)
    if isinstance(rows, int):
        rows = [rows]
    r = torch.as_tensor(rows)
    if r.ndim != 1:
        raise ValueError(f"rows must be a 1-D list of query indices, got shape {tuple(r.shape)}")
    if r.numel() == 0:
        raise ValueError("rows is empty: give at least one query index (or None for all rows)")
    if r.dtype.is_floating_point or r.dtype == torch.bool:
        raise ValueError(f"rows must hold integer indices, got dtype {r.dtype}")
    r = r.long()
    if int(r.min()) < 0 or int(r.max()) >= n_queries:
        raise ValueError(
            f"rows must lie in [0, {n_queries - 1}] (there are {n_queries} query positions), "
            f"got min {int(r.min())}, max {int(r.max())}"
        )
    return r


def as_spans(spans, n_keys: int) -> Optional[list]:
    """Validate inclusive key spans ``[(first, last), ...]``; ``None`` stays ``None`` (one column per key)."""
    if spans is None:
        return None
    out = []
    for k, s in enumerate(spans):
        try:
            first, last = (int(s[0]), int(s[1]))
        except (TypeError, IndexError, ValueError):
            raise ValueError(f"span {k} must be an inclusive (first, last) pair of ints, got {s!r}") from None
        if len(s) != 2:
            raise ValueError(f"span {k} must have exactly two entries (first, last), got {s!r}")
        if not (0 <= first <= last < n_keys):
            raise ValueError(
                f"span {k} = ({first}, {last}) is not an inclusive span inside [0, {n_keys - 1}] "
                f"(needs 0 <= first <= last < {n_keys})"
            )
        out.append((first, last))
    if not out:
        raise ValueError("spans is empty: give at least one (first, last) span (or None)")
    return out


def causal_keep_mask(rows: torch.Tensor, n_keys: int, spans=None) -> torch.Tensor:
    """Boolean ``[R, C]``: True where a causal cell is defined.

    Position columns: ``j <= i``.  Span columns: the span starts at or before the query
    (``first <= i``); a span that starts after the query is exactly zero.
    """
    if spans is None:
        cols = torch.arange(n_keys)
    else:
        cols = torch.tensor([f for f, _ in spans])
    return cols[None, :] <= rows[:, None]


def normalize_rows(m: torch.Tensor) -> torch.Tensor:
    """``m[..., r, :] / sum_c m[..., r, c]``; rows summing to 0 stay all zero (no NaN)."""
    s = m.sum(-1, keepdim=True)
    safe = torch.where(s > 0, s, torch.ones_like(s))
    return torch.where(s > 0, m / safe, torch.zeros_like(m))


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1 - cos(a, b)`` along the last axis, computed as ``||a/|a| - b/|b| ||^2 / 2`` in float64.

    The two are equal algebraically; the second keeps full *relative* precision for the tiny
    distances that most cells of a value-zeroing matrix have (``1 - dot`` in float32 would carry an
    absolute error of ~1e-7 into every cell).  Result is float64, in [0, 2].
    """
    an = a.to(torch.float64, copy=True)  # one float64 working copy, normalised and differenced in place
    b = b.double()
    an /= torch.linalg.vector_norm(an, dim=-1, keepdim=True).clamp_min(1e-30)
    an -= b / torch.linalg.vector_norm(b, dim=-1, keepdim=True).clamp_min(1e-30)
    return 0.5 * torch.linalg.vector_norm(an, dim=-1).square()


def sum_over_spans(m: torch.Tensor, spans) -> torch.Tensor:
    """``[..., Tk] -> [..., C]``: column ``c`` is the sum of ``m`` over the frames of ``spans[c]``."""
    if spans is None:
        return m
    member = span_membership(spans, m.shape[-1], dtype=m.dtype)  # [Tk, C], 1 where frame k is in span c
    return m @ member


def span_membership(spans, n_keys: int, dtype=torch.float32) -> torch.Tensor:
    """0/1 matrix ``[Tk, C]`` with ``M[k, c] = 1`` iff ``first_c <= k <= last_c``."""
    k = torch.arange(n_keys)[:, None]
    first = torch.tensor([f for f, _ in spans])[None, :]
    last = torch.tensor([l for _, l in spans])[None, :]
    return ((k >= first) & (k <= last)).to(dtype)
