"""Value zeroing (Mohebbi et al., 2023): how much does token ``i``'s layer output change when the
layer may not read token ``j``?

For one layer (its *original* input, nothing propagated from earlier layers)::

    v_j^h      <- 0            for every head h (after the value projection, bias included)   (1)
    alpha^h    unchanged       (queries and keys are untouched)
    x~_i^{-j}  = rest of the layer run as the model does (residual, layer norms, feed-forward,
                 the model's final layer norm on the last layer where its last hidden state has it)
    C_ij       = 1 - cos(x~_i^{-j}, x~_i)                                                       (2)
    C_ij      <- C_ij / sum_k C_ik        (rows normalised; an all-zero row stays zero)          (3)

A *span* column zeroes every key of the span at once (a whole word).

Two implementations that must agree to float32 precision:

* ``method="reference"`` -- the obviously right loop: for every column re-run the model's own layer
  module with the values of the zeroed positions set to 0 (``LayerCapture.rerun``).  One full layer
  (projections, attention, feed-forward) per column.
* ``method="fast"`` -- the exact identity.  Attention weights are fixed, so zeroing ``v_j`` changes
  the attention-block output of query ``i`` by exactly::

      attn_out_i^{-j} = attn_out_i - delta_ij,   delta_ij = sum_h alpha_ij^h v_j^h W_O^h        (4)

  (the same vector whose norm is Attention-Norm; for a span, ``delta`` is summed over the span's
  keys).  Everything after the attention is position-wise, so ``x~_i^{-j} = post(resid_i,
  attn_out_i - delta_ij)`` for all ``(i, j)`` pairs at once: no attention is re-run, the pairs go
  through the model's own position-wise modules (``LayerCapture.post``) in batches of
  ``chunk_size`` pairs, which bounds memory.  ``rows=`` restricts the work to the query rows a
  study reads (e.g. the target word's frames) -- the reference loop cannot save anything there.

*Factored* fast path (``factor_ffn``; used when the capture exposes its feed-forward modules as
:class:`~ctxmix_lite.internals.capture_types.FeedForwardParts` and there are many rows).  Per pair the
generic fast path runs ``fc1`` and ``fc2``; the first is avoidable.  With ``h_ij = h_i - delta_ij``
(``h_i = resid_i + attn_out_i``), ``c(.)`` the centring of a layer norm with gain ``g``, bias ``b``
and ``rstd_ij = 1 / sqrt(mean(c(h_ij)^2) + eps)``::

    fc1(LN(h_ij)) = W1 (g * c(h_ij)) rstd_ij + (W1 b + b1)                                       (5)
    W1 (g * c(h_ij)) = Z_i - sum_h alpha_ij^h G_j^h,   Z_i = W1 (g * c(h_i)),
                                                      G_j^h = W1 (g * c(v_j^h W_O^h))

because centring and ``W1 diag(g)`` are linear and ``delta_ij = sum_h alpha_ij^h v_j^h W_O^h``.
``Z`` costs one ``fc1`` per row and ``G`` one per (head, key), instead of one per (row, key) pair;
``rstd_ij`` is computed from ``h_ij`` itself (exact, cheap).  The activation, ``fc2`` and the norms
after it still run per pair (nonlinear, or needed for the cosine).  With ``R`` rows, the factored
path pays off when ``R`` is several times the number of heads: it is chosen automatically for full
matrices, not for the study's few target rows.

Distances are computed in float64 from float32 layer outputs as ``||a/|a| - b/|b|||^2 / 2`` (equal
to ``1 - cos``; keeps the tiny distances of most cells accurate), clipped at 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ctxmix_lite.course.options import Options
from ctxmix_lite.internals.capture_types import LayerCapture
from .utils import as_rows, as_spans, causal_keep_mask, cosine_distance, normalize_rows

__all__ = ["value_zeroing", "ValueZeroingOptions", "auto_chunk_size", "zeroed_outputs", "CHUNK_BUDGET_BYTES"]

#: working-memory budget of one chunk of the fast path (the rest: the capture itself, ~100 MB for
#: a 1,500-frame Whisper-base layer).  Measured peak for that layer: see bench/README.md.
CHUNK_BUDGET_BYTES = 768 * 2**20

# float32 vectors of size D alive per pair inside a chunk: delta, residual copy, zeroed attention
# output, the post() intermediates (layer-norm output, an FFN of width 4D before and after the
# activation, the output) and two float64 copies for the distance -> about 24 D floats.
_FLOATS_PER_PAIR_PER_D = 24


def auto_chunk_size(d_model: int, budget_bytes: int = CHUNK_BUDGET_BYTES) -> int:
    """Number of ``(i, j)`` pairs per batch so that one chunk stays within ``budget_bytes``."""
    return max(1, int(budget_bytes // (4 * _FLOATS_PER_PAIR_PER_D * d_model)))


def _progress(it, total, enabled, desc):
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=desc, leave=False)


def _delta_block(alpha, pv, rows_blk, cols_blk, spans, start=None) -> torch.Tensor:
    """``start - delta`` of eq. (4) for a block: ``[cb, rb, D]`` (column-major so the pairs of one key
    are contiguous); ``start`` ``[rb, D]`` (the rows' attention outputs) or None (returns ``delta``).
    ``alpha`` ``[H, Tq, Tk]``, ``pv`` ``[H, Tk, D]``."""
    if spans is None:
        a = alpha[:, rows_blk][:, :, cols_blk]  # [H, rb, cb]
        p = pv[:, cols_blk]  # [H, cb, D]
        cb, rb, D = p.shape[1], a.shape[1], p.shape[2]
        if start is None:
            out, sign = torch.zeros(cb, rb, D, dtype=p.dtype), 1.0
        else:
            out, sign = start[None].expand(cb, rb, D).clone(), -1.0
        # delta_ij = sum_h alpha_ij^h (v_j^h W_O^h): one broadcast multiply-add per head (a batched
        # matmul with an inner size of H is several times slower on CPU)
        for h in range(a.shape[0]):
            out.addcmul_(a[h].T.unsqueeze(-1), p[h].unsqueeze(1), value=sign)
        return out
    rb = len(rows_blk)
    pvk = pv.transpose(0, 1)  # [Tk, H, D], contiguous for LayerCapture.projected_values()
    delta = torch.empty(len(cols_blk), rb, pv.shape[-1], dtype=pv.dtype)
    for c_i, c in enumerate(cols_blk.tolist()):
        f, l = spans[c]
        a = alpha[:, rows_blk, f : l + 1].permute(1, 2, 0).reshape(rb, -1)  # [rb, (key, head)]
        # one product sums over the span's keys and the heads: delta_iw = sum_{j in w} sum_h ...
        torch.mm(a, pvk[f : l + 1].reshape(-1, pvk.shape[-1]), out=delta[c_i])
    return delta if start is None else start[None] - delta


def zeroed_outputs(cap: LayerCapture, row: int, columns=None, spans=None) -> torch.Tensor:
    """Fast-path layer outputs ``x~_row^{-j}`` for the given key columns (or spans): ``[C, D]``.

    Exposed for teaching (notebook 04) and tests: it is eq. (4) followed by ``cap.post``.
    """
    H, Tq, Tk = cap.weights.shape
    sp = as_spans(spans, Tk)
    n_cols = Tk if sp is None else len(sp)
    cols = torch.arange(n_cols) if columns is None else torch.as_tensor(columns).long()
    with torch.no_grad():
        delta = _delta_block(cap.weights, cap.projected_values(), torch.tensor([row]), cols, sp)[:, 0]
        C = delta.shape[0]
        return cap.post(cap.resid[row].expand(C, -1), cap.attn_out[row][None] - delta)


def _fast(cap, r, sp, chunk_size, progress, factor_ffn=None):
    H, Tq, Tk = cap.weights.shape
    D = cap.out.shape[-1]
    C = Tk if sp is None else len(sp)
    R = r.numel()
    n = int(chunk_size) if chunk_size is not None else auto_chunk_size(D)
    if n < 1:
        raise ValueError(f"chunk_size must be a positive number of (i, j) pairs, got {chunk_size}")
    cb = min(C, n)  # columns per block
    rb = max(1, min(R, n // cb))  # rows per block
    pv = cap.projected_values()  # [H, Tk, D]
    alpha = cap.weights
    resid, attn, base = cap.resid[r], cap.attn_out[r], cap.out[r]  # [R, D]
    col_first = torch.arange(Tk) if sp is None else torch.tensor([f for f, _ in sp])
    if sp is not None and all(f == l for f, l in sp):  # one-frame spans: the position path on those keys
        alpha, pv, sp = alpha[:, :, col_first], pv[:, col_first], None
    if sp is None and not cap.causal and _factored_wins(cap, R, factor_ffn):
        return _fast_factored(cap, r, alpha, pv, n, progress)
    dist = torch.zeros(R, C, dtype=torch.float64)
    blocks = [(r0, c0) for r0 in range(0, R, rb) for c0 in range(0, C, cb)]
    for r0, c0 in _progress(blocks, len(blocks), progress, "value zeroing (fast)"):
        rows_blk = r[r0 : r0 + rb]
        cols_blk = torch.arange(c0, min(C, c0 + cb))
        if cap.causal and int(col_first[cols_blk].min()) > int(rows_blk.max()):
            continue  # the whole block lies above the diagonal: exactly zero
        att = _delta_block(alpha, pv, rows_blk, cols_blk, sp, start=attn[r0 : r0 + rb])  # eq. (4), [cb', rb', D]
        nc, nr = att.shape[:2]
        res = resid[r0 : r0 + nr].expand(nc, nr, D).reshape(-1, D)
        att = att.reshape(-1, D)
        new = cap.post(res, att).reshape(nc, nr, D)  # rest of the layer, position-wise
        d = cosine_distance(new, base[r0 : r0 + nr][None])  # eq. (2), [cb', rb']
        dist[r0 : r0 + nr, c0 : c0 + nc] = d.T
    return dist


def _factored_wins(cap, R, factor_ffn) -> bool:
    if factor_ffn is False or cap.ffn is None:
        return False
    if factor_ffn is True:
        return True
    return R >= 4 * cap.num_heads  # G: H fc1 products per key, saves R of them per key


def _centre(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(-1, keepdim=True)


def _fast_factored(cap, r, alpha, pv, n, progress):
    """The fast path with layer norm + fc1 factored out of the pairs, eq. (5). Position columns;
    ``n``: pairs per block (validated by :func:`_fast`)."""
    parts = cap.ffn
    H, _, C = alpha.shape
    D = cap.out.shape[-1]
    R = r.numel()
    rb = min(R, 256)  # rows per block: bmm of [rb, H] x [H, 4D] per key
    norm, fc1 = parts.norm, parts.fc1
    F = fc1.weight.shape[0]
    # columns per block: rb * cb pairs <= n, and the block's G (cb x H x F floats) within a quarter budget
    cb = max(1, min(C, n // rb, CHUNK_BUDGET_BYTES // (16 * H * F)))
    rb = min(rb, n)
    g = norm.weight if norm.weight is not None else torch.ones(D)
    b = norm.bias if norm.bias is not None else torch.zeros(D)
    W1g = fc1.weight * g  # W1 diag(g)  [F, D]
    b1 = fc1.weight @ b + (fc1.bias if fc1.bias is not None else 0.0)  # W1 b + b1  [F]
    start = cap.resid[r] + cap.attn_out[r]  # h_i  [R, D]
    Z = _centre(start) @ W1g.T  # W1 (g * c(h_i))  [R, F]
    base = cap.out[r]
    dist = torch.zeros(R, C, dtype=torch.float64)
    blocks = [(c0, r0) for c0 in range(0, C, cb) for r0 in range(0, R, rb)]
    G = Pv = None
    for c0, r0 in _progress(blocks, len(blocks), progress, "value zeroing (fast, factored)"):
        cols = torch.arange(c0, min(C, c0 + cb))
        if r0 == 0:  # a new column block: its G_j^h and v_j^h W_O^h, once
            U = pv[:, cols].transpose(0, 1)  # [cb, H, D]
            Pv = U.contiguous()
            G = _centre(U) @ W1g.T  # [cb, H, F]
        nr = min(rb, R - r0)
        a = alpha[:, r[r0 : r0 + nr]][:, :, cols].permute(2, 1, 0).contiguous()  # [cb, nr, H]
        h = torch.baddbmm(start[r0 : r0 + nr], a, Pv, alpha=-1.0)  # h_ij = h_i - delta_ij, eq. (4)
        var, mean = torch.var_mean(h, dim=-1, keepdim=True, correction=0)
        rstd = torch.rsqrt(var + norm.eps)  # the layer norm's 1/sigma of every pair  [cb, nr, 1]
        z = torch.addcmul(b1, Z[r0 : r0 + nr], rstd)  # Z_i rstd_ij + (W1 b + b1)
        z.baddbmm_(a * rstd, G, alpha=-1.0)  # - sum_h alpha_ij^h G_j^h rstd_ij: z = fc1(LN(h_ij)), eq. (5)
        out = parts.fc2(parts.act(z))
        del z
        if parts.post_ln:  # residual = the layer norm's output
            out += (h - mean) * rstd * g + b
        else:
            out += h
        for nrm in parts.out_norms:
            out = nrm(out)
        d = cosine_distance(out, base[r0 : r0 + nr][None])  # eq. (2), [cb', nr]
        dist[r0 : r0 + nr, c0 : c0 + len(cols)] = d.T
    return dist


def _reference(cap, r, sp, progress):
    H, Tq, Tk = cap.weights.shape
    C = Tk if sp is None else len(sp)
    base = cap.out[r]
    dist = torch.zeros(r.numel(), C, dtype=torch.float64)
    for c in _progress(range(C), C, progress, "value zeroing (reference)"):
        positions = [c] if sp is None else list(range(sp[c][0], sp[c][1] + 1))
        new = cap.rerun(positions)[r]  # the real layer module, values of `positions` zeroed
        dist[:, c] = cosine_distance(new, base)
    return dist


@dataclass(frozen=True)
class ValueZeroingOptions(Options):
    """How :func:`value_zeroing` computes its matrix (the paper's definition whatever the choice).

    method: ``"fast"`` (exact identity + batched position-wise rest of the layer) or
        ``"reference"`` (re-run the layer module once per column).
    chunk_size: pairs per batch in the fast path (default: :func:`auto_chunk_size`).
    normalize: divide each row by its sum (eq. 3).  Causal components: cells with the key
        (span start) after the query are exactly 0, before normalisation.
    progress: show a tqdm bar.
    factor_ffn: the fast path's factored variant, eq. (5), for position columns of non-causal
        blocks whose capture has ``ffn`` parts: None = when it pays (rows >= 4 x heads),
        True = whenever possible, False = never (the generic ``post`` per pair).
    """

    method: str = "fast"
    chunk_size: Optional[int] = None
    normalize: bool = True
    progress: bool = False
    factor_ffn: Optional[bool] = None

    def __post_init__(self):
        if self.method not in ("fast", "reference"):
            raise ValueError(f"method must be 'fast' or 'reference', got {self.method!r}")


def value_zeroing(
    cap: LayerCapture,
    rows=None,
    spans=None,
    options: Optional[ValueZeroingOptions] = None,
    **settings,
) -> torch.Tensor:
    """Value-zeroing matrix of one attention block: ``[R, C]`` float32.

    Args:
        cap: a :class:`LayerCapture` (its ``post`` and ``rerun`` run the model's own modules).
        rows: None (every query) or query indices -> only those rows, in that order.
        spans: None (zero one key at a time, one column per key) or inclusive key spans (the whole
            span zeroed at once, one column per span).
        options / settings: a :class:`ValueZeroingOptions` or its fields as keywords
            (``method``, ``chunk_size``, ``normalize``, ``progress``, ``factor_ffn``).
    """
    o = ValueZeroingOptions.resolve(options, settings, where="value_zeroing")
    method, chunk_size, normalize, progress, factor_ffn = o.method, o.chunk_size, o.normalize, o.progress, o.factor_ffn
    H, Tq, Tk = cap.weights.shape
    r = as_rows(rows, Tq)
    sp = as_spans(spans, Tk)
    with torch.no_grad():
        if method == "fast":
            dist = _fast(cap, r, sp, chunk_size, progress, factor_ffn)
        else:  # "reference" (ValueZeroingOptions checked the name)
            dist = _reference(cap, r, sp, progress)
    dist = dist.clamp_min(0.0)
    if cap.causal:
        dist = torch.where(causal_keep_mask(r, Tk, sp), dist, torch.zeros_like(dist))
    if normalize:
        dist = normalize_rows(dist)
    return dist.to(torch.float32)
