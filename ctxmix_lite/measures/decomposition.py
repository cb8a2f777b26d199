"""ALTI (Ferrando et al., 2022): a residual- and layer-norm-aware decomposition of the attention block.

Attention-Norm looks at ``sum_h alpha_ij^h v_j^h W_O^h`` only; the block also adds the residual
stream (token ``i`` itself) and, in post-LN layers, a layer norm.  ALTI splits the *output of the
attention block* exactly into one vector per input token and scores each by how close it is to
the whole.

Contribution vectors ``z_ij`` (``[Tq, Tk, D]``; the same ``v_j^h W_O^h`` as Attention-Norm)::

    z_ij = sum_h alpha_ij^h v_j^h W_O^h  +  [i == j] resid_i                                  (1)
    u_i  = sum_j z_ij + b_O              = resid_i + attn_out_i                              (2)

**Pre-LN layers** (Whisper, XLSR "stable layer norm"): ``x -> x + Attn(LN(x))``.  The layer norm
sits *inside* the values (``v_j = LN(x_j) W_V + b_V`` depends on ``x_j`` alone) and the residual
bypasses it, so the block output is already the sum (2)::

    y_i = u_i,     T_i(x_j) = z_ij,     bias_i = b_O                                            (3)

**Post-LN layers** (wav2vec2-base, HuBERT): ``x -> LN(x + Attn(x))``.  For a fixed query the layer
norm is affine in its input once its standard deviation ``s_i`` (of ``u_i``) is fixed, so it
distributes over the sum (``c(v) = v - mean(v)`` centres a vector)::

    y_i = LN(u_i) = gamma * c(u_i) / s_i + beta,    s_i = sqrt(var(u_i) + eps)
    T_i(x_j) = gamma * c(z_ij) / s_i,               bias_i = gamma * c(b_O) / s_i + beta       (4)

In both cases ``sum_j T_i(x_j) + bias_i = y_i`` exactly (tests reconstruct the block output of the
real modules).  The ALTI score (L1 "proximity" of each part to the whole), rows normalised::

    c_ij = max(0, ||y_i||_1 - ||y_i - T_i(x_j)||_1),     c_ij <- c_ij / sum_k c_ik             (5)

``score="norm"`` gives ``||T_i(x_j)||_2`` instead (the GlobEnc-style norm of the same
residual/LN-aware vectors, first layer norm only).  The feed-forward after the block is
position-wise and is not decomposed (as in ALTI); the rollout of ALTI over layers uses
``residual=0`` because the residual is already inside (1).  Self-attention blocks only (the
residual of cross-attention is not an encoder frame).
"""
from __future__ import annotations

import torch

from ctxmix_lite.internals.capture_types import LayerCapture
from .utils import as_rows, normalize_rows

__all__ = ["alti_vectors", "block_output", "alti", "block_layer_norm", "component_alti"]

_CHUNK_BYTES = 256 * 2**20


def _check_self(cap: LayerCapture):
    H, Tq, Tk = cap.weights.shape
    if cap.component == "cross" or Tq != Tk:
        raise ValueError(
            f"ALTI decomposes self-attention blocks (the residual is one of the keys); got "
            f"component {cap.component!r} with {Tq} queries and {Tk} keys"
        )


def _ln_params(layer_norm):
    if layer_norm is None:
        return None
    try:
        return layer_norm.weight.detach(), layer_norm.bias.detach(), float(layer_norm.eps)
    except AttributeError:
        raise ValueError("layer_norm must be an nn.LayerNorm (weight, bias, eps) or None") from None


def block_output(cap: LayerCapture, layer_norm=None) -> torch.Tensor:
    """Output of the attention block ``[Tq, D]``: ``resid + attn_out`` (pre-LN) or its LN (post-LN)."""
    u = cap.resid + cap.attn_out  # eq. (2)
    p = _ln_params(layer_norm)
    if p is None:
        return u
    g, b, eps = p
    return torch.nn.functional.layer_norm(u, (u.shape[-1],), g, b, eps)


def alti_vectors(cap: LayerCapture, layer_norm=None, rows=None, keys=None, _pv=None):
    """``(T [R, K, D], bias [R, D])`` of eqs. (3)/(4) for the selected query rows and keys (float32).

    ``layer_norm``: None for a pre-LN block, the block's ``nn.LayerNorm`` for a post-LN block
    (``layer.layer_norm`` of a wav2vec2/HuBERT post-LN layer; see :func:`block_layer_norm`).
    ``keys``: None (all ``Tk``) or key indices; only with all keys do the vectors sum to the output.
    """
    _check_self(cap)
    H, Tq, Tk = cap.weights.shape
    r = as_rows(rows, Tq)
    k = as_rows(keys, Tk)
    pv = (cap.projected_values() if _pv is None else _pv)[:, k]  # [H, K, D]
    a = cap.weights[:, r][:, :, k]  # [H, R, K]
    z = torch.zeros(r.numel(), k.numel(), pv.shape[-1], dtype=pv.dtype)
    for h in range(H):  # z_ij = sum_h alpha_ij^h v_j^h W_O^h (one broadcast multiply-add per head)
        z.addcmul_(a[h].unsqueeze(-1), pv[h].unsqueeze(0))
    pos = torch.full((Tk,), -1, dtype=torch.long)
    pos[k] = torch.arange(k.numel())
    hit = pos[r] >= 0  # rows whose own position is among the keys
    z[torch.arange(r.numel())[hit], pos[r][hit]] += cap.resid[r][hit]  # + [i == j] resid_i, eq. (1)
    b_O = cap.b_O if cap.b_O is not None else torch.zeros(z.shape[-1])
    p = _ln_params(layer_norm)
    if p is None:
        return z, b_O.expand(r.numel(), -1).clone()  # eq. (3)
    g, beta, eps = p
    u = cap.resid[r] + cap.attn_out[r]
    s = (u.var(-1, unbiased=False, keepdim=True) + eps).sqrt()  # s_i, [R, 1]
    T = g * (z - z.mean(-1, keepdim=True)) / s[:, None, :]  # eq. (4)
    bias = g * (b_O - b_O.mean()) / s + beta
    return T, bias


def alti(cap: LayerCapture, layer_norm=None, rows=None, score: str = "alti", normalize: bool = True,
         keys=None) -> torch.Tensor:
    """ALTI contributions ``[R, K]`` of one self-attention block (eq. 5), in row chunks.

    ``keys``: None (all) or the key indices to score (e.g. the frames of speech); ``y_i`` is always
    the whole block output, rows are normalised over the scored keys."""
    _check_self(cap)
    if score not in ("alti", "norm"):
        raise ValueError(f"score must be 'alti' or 'norm', got {score!r}")
    H, Tq, Tk = cap.weights.shape
    r = as_rows(rows, Tq)
    kk = as_rows(keys, Tk)
    D = cap.out.shape[-1]
    step = max(1, _CHUNK_BYTES // (4 * 3 * kk.numel() * D))
    y_all = block_output(cap, layer_norm)
    pv = cap.projected_values()
    out = []
    for k in range(0, r.numel(), step):
        rr = r[k : k + step]
        T, bias = alti_vectors(cap, layer_norm, rows=rr, keys=kk, _pv=pv)
        if score == "norm":
            out.append(T.norm(dim=-1))
            continue
        y = y_all[rr]  # [r, D]
        c = y.abs().sum(-1, keepdim=True) - (y[:, None, :] - T).abs().sum(-1)  # eq. (5)
        out.append(c.clamp_min(0))
    m = torch.cat(out)
    if cap.causal:
        m = torch.where(kk[None, :] <= r[:, None], m, torch.zeros_like(m))
    return normalize_rows(m) if normalize else m


# ----------------------------------------------------------------------------------------------
def _layers(model, component):
    """``(layers, post_ln)`` of a self-attention component, from the architecture table."""
    from ctxmix_lite.models.architectures import layer_stack, post_ln

    if component == "cross":
        raise ValueError("ALTI is defined for self-attention components ('encoder', 'decoder'), not 'cross'")
    return layer_stack(model, component).layers, post_ln(model)


def block_layer_norm(model, component: str, layer: int):
    """The layer norm that closes the attention block of ``layer`` (post-LN models), else None."""
    layers, post_ln = _layers(model, component)
    return layers[layer].layer_norm if post_ln else None


def component_alti(model, capture, component: str, rows=None, score: str = "alti") -> torch.Tensor:
    """ALTI for every layer of a self-attention component -> ``[L, R, T]``."""
    layers, post_ln = _layers(model, component)
    caps = capture[component]
    return torch.stack(
        [alti(c, layers[c.layer].layer_norm if post_ln else None, rows=rows, score=score) for c in caps]
    )
