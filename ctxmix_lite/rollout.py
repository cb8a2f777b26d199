"""Rollout (Abnar & Zuidema, 2020): follow context mixing through the layers.

A layer's row-normalised mixing matrix ``A_l`` says how much query ``i`` takes from each ``j``
*in that layer*.  The residual connection carries token ``i`` itself forward, so each layer is
first mixed with the identity and rows renormalised::

    A~_l = normalize_rows( (1 - r) A_l + r I )          r = residual (0.5 in the original)   (1)
    R_0  = A~_0
    R_l  = A~_l R_{l-1}                                  (mixing after layers 0..l)           (2)

``R_l[i, j]`` is then the share of input token ``j`` in token ``i`` after layer ``l``.  Any
row-normalised measure works (attention, Attention-Norm after row normalisation, value zeroing);
measures that already account for the residual stream (ALTI, see :mod:`decomposition`) use
``residual=0``.  Only square (self-attention) matrices can be rolled out: cross-attention maps
decoder tokens to encoder frames, no chain exists.
"""
from __future__ import annotations

import torch

from .measure_utils import normalize_rows

__all__ = ["rollout"]


def rollout(mats, residual: float = 0.5, normalize: bool = True) -> torch.Tensor:
    """``mats`` ``[L, T, T]`` (layer 0 first) -> ``[L, T, T]`` with ``R_l`` of eq. (2) at index l.

    normalize: row-normalise each ``A_l`` first (rows summing to 0 stay 0 before the identity is
    added).  ``residual`` in [0, 1].  Computed in float64, returned float32.
    """
    m = torch.as_tensor(mats)
    if m.dim() != 3 or m.shape[-1] != m.shape[-2]:
        raise ValueError(
            f"rollout needs square per-layer matrices [L, T, T], got shape {tuple(m.shape)} "
            "(cross-attention cannot be rolled out)"
        )
    if not 0.0 <= float(residual) <= 1.0:
        raise ValueError(f"residual must lie in [0, 1], got {residual}")
    if (m < 0).any():
        raise ValueError("rollout needs non-negative mixing scores")
    m = m.double()
    if normalize:
        m = normalize_rows(m)
    eye = torch.eye(m.shape[-1], dtype=m.dtype)
    out = []
    acc = None
    for a in m:
        a = normalize_rows((1.0 - residual) * a + residual * eye)  # eq. (1)
        acc = a if acc is None else a @ acc  # eq. (2)
        out.append(acc)
    return torch.stack(out).float()
