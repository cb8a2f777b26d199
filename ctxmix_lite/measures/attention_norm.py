"""Attention-Norm (Kobayashi et al., 2020): how *big* is what token ``j`` sends to token ``i``?

With the notation of notebook 01, the attention block of one layer computes, for query ``i``::

    attn_out_i = sum_h sum_j  alpha_ij^h  v_j^h W_O^h  +  b_O            (1)
                 \\_______________________________/
                   f_i(x_j): the vector j sends to i

where ``v_j^h = x_j W_V^h + b_V^h`` is the value of key ``j`` in head ``h`` (value bias *included*)
and ``W_O^h`` the rows of the output projection that read head ``h``.  The output bias ``b_O`` does
not depend on ``j`` and is left out.  Attention-Norm scores the pair by the length of that vector::

    AN_ij   = || sum_h alpha_ij^h  v_j^h W_O^h ||          (head-summed, "summed norms")   (2)
    AN_ij^h = || alpha_ij^h  v_j^h W_O^h ||  = alpha_ij^h || v_j^h W_O^h ||   (per head)   (3)

(3) uses ``alpha >= 0``.  For (2) we never build the ``[R, Tk, D]`` tensor of vectors: with the
per-key Gram matrix ``G_j[h, g] = <v_j^h W_O^h, v_j^g W_O^g>`` (``[Tk, H, H]``)::

    AN_ij^2 = sum_{h,g} alpha_ij^h G_j[h, g] alpha_ij^g                                  (4)

which costs ``R * Tk * H^2`` (plus ``Tk * H^2 * D`` for ``G``) instead of ``R * Tk * H * D`` and
fits a 1,500-frame layer in ~100 MB.  (4) runs in float32 (``G`` itself in float64); its rounding
error is about 1e-7 times ``B_ij = (sum_h alpha_ij^h ||v_j^h W_O^h||)^2``, the value (4) would have
if no two heads cancelled, so cells where heads cancel strongly (``AN_ij^2 < 0.01 B_ij``) are
recomputed directly from the vectors in float64: every cell keeps a relative error below ~1e-5.

With few rows (``R < 4 H``, e.g. the study's target frames) building ``G`` in float64 costs more
than the vectors themselves, so (2) is computed as written: per key, one ``[R, H] @ [H, D]``
product in float32 (keys in chunks of bounded memory), the same float64 recomputation of the
cancelling cells after it.
"""
from __future__ import annotations

import torch

from ctxmix_lite.internals.capture_types import LayerCapture
from .utils import as_rows, as_spans, causal_keep_mask, sum_over_spans

__all__ = ["attention_norm", "projected_value_norms"]


def projected_value_norms(cap: LayerCapture) -> torch.Tensor:
    """``|| v_j^h W_O^h ||`` for every head and key: ``[H, Tk]``."""
    return cap.projected_values().norm(dim=-1)


#: memory of one key chunk of the direct form (``[keys, R, D]`` float32 vectors)
DIRECT_CHUNK_BYTES = 64 * 2**20


def _use_direct(n_rows: int, n_heads: int) -> bool:
    """The direct form costs ``R H D`` float32 per key, the Gram form ``H^2 D`` float64 per key."""
    return n_rows < 4 * n_heads


def _gram_squares(alpha: torch.Tensor, pv: torch.Tensor) -> torch.Tensor:
    """Eq. (4): ``AN_ij^2`` from the per-key Gram matrices (float64), ``[R, Tk]`` float32."""
    pv64 = pv.double()
    gram = torch.einsum("hkd,gkd->khg", pv64, pv64).float()  # G_j[h, g], [Tk, H, H]
    ak = alpha.permute(2, 0, 1).contiguous()  # [Tk, H, R]
    return (ak * torch.bmm(gram, ak)).sum(1).T  # sum_{h,g} alpha^h G_j[h, g] alpha^g


def _direct_squares(alpha: torch.Tensor, pv: torch.Tensor) -> torch.Tensor:
    """Eq. (2) squared, from the vectors themselves: ``[R, Tk]`` float32 (few rows)."""
    H, R, Tk = alpha.shape
    D = pv.shape[-1]
    ak = alpha.permute(2, 1, 0).contiguous()  # [Tk, R, H]
    pvk = pv.transpose(0, 1)  # [Tk, H, D]
    step = max(1, DIRECT_CHUNK_BYTES // (4 * R * D))
    sq = torch.empty(R, Tk)
    for s in range(0, Tk, step):
        f = torch.bmm(ak[s : s + step], pvk[s : s + step])  # [keys, R, D]: sum_h alpha_ij^h v_j^h W_O^h
        sq[:, s : s + step] = torch.linalg.vector_norm(f, dim=-1).square().T
    return sq


def attention_norm(cap: LayerCapture, per_head: bool = False, rows=None, spans=None) -> torch.Tensor:
    """Attention-Norm of one attention block.

    Args:
        cap: a :class:`LayerCapture` (weights ``[H, Tq, Tk]``, values ``[H, Tk, dh]``, ``W_O``).
        per_head: False -> eq. (2), ``[R, C]``; True -> eq. (3), ``[H, R, C]``.
        rows: None (every query) or query indices -> only those rows, in that order.
        spans: None (one column per key) or inclusive key spans -> column ``c`` is the *sum* of the
            scores over the frames of ``spans[c]`` (the mass the span sends; not the norm of the sum).

    Returns a float32 tensor of non-negative scores (not row-normalised).  Causal components
    (``cap.causal``): cells with key after query are exactly 0.
    """
    H, Tq, Tk = cap.weights.shape
    r = as_rows(rows, Tq)
    sp = as_spans(spans, Tk)
    alpha = cap.weights[:, r, :]  # [H, R, Tk]
    pv = cap.projected_values()  # [H, Tk, D]  v_j^h W_O^h, value bias in, output bias out
    if per_head:
        out = alpha * pv.norm(dim=-1)[:, None, :]  # eq. (3): alpha_ij^h ||v_j^h W_O^h||
    else:
        sq = (_direct_squares if _use_direct(r.numel(), H) else _gram_squares)(alpha, pv)  # [R, Tk]
        bound = (alpha * pv.norm(dim=-1)[:, None, :]).sum(0).pow(2)  # B_ij (no cancellation)
        bad = (sq < 1e-2 * bound).nonzero()  # heads cancel: recompute these cells directly
        sq = sq.double()
        for s in range(0, bad.shape[0], 4096):
            rr, kk = bad[s : s + 4096].unbind(1)
            f = torch.einsum("hn,hnd->nd", alpha[:, rr, kk].double(), pv[:, kk].double())  # sum_h alpha^h v^h W_O^h
            sq[rr, kk] = f.pow(2).sum(-1)
        out = sq.clamp_min(0).sqrt().to(torch.float32)
    out = sum_over_spans(out, sp)
    if cap.causal:
        keep = causal_keep_mask(r, Tk, sp)
        out = torch.where(keep, out, torch.zeros_like(out))
    return out
