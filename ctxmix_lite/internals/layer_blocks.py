"""The sub-layers of a Transformer layer from their equations: attention, layer norm, feed-forward.

Every function below computes one equation and writes that equation beside the line that computes
it (Annotated-Transformer style), in plain torch operations: no ``nn.MultiheadAttention``, no
``torch.nn.functional.scaled_dot_product_attention``. :mod:`ctxmix_lite.internals.layer` wires
them into whole layers (post-LN, pre-LN, Whisper's decoder) and reads a real layer's weights into
the parameter objects defined here (:class:`AttentionParams`, :class:`NormParams`,
:class:`FFNParams`); it re-exports every public name of this module.

Notation (one sequence; a leading batch dimension is allowed everywhere)::

    x        [T, D]      the layer input (the residual stream)
    H, d_h   heads, head size, D = H * d_h
    W_q, W_k, W_v, W_o   [D, D] weights stored as torch ``nn.Linear`` stores them: [out, in],
                         so a projection is  y = x W^T + b
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch

__all__ = [
    "AttentionParams",
    "NormParams",
    "FFNParams",
    "ACTIVATIONS",
    "activation_fn",
    "linear",
    "layer_norm",
    "split_heads",
    "merge_heads",
    "causal_mask",
    "attention_weights",
    "multi_head_attention",
    "per_head_outputs",
    "feed_forward",
]


# ----------------------------------------------------------------------------------------------
# Activations (feed-forward non-linearity)
# ----------------------------------------------------------------------------------------------


def _gelu_exact(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))  # GELU(x) = x Phi(x) = x/2 (1 + erf(x/sqrt2))


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    # GELU(x) ~ x/2 (1 + tanh( sqrt(2/pi) (x + 0.044715 x^3) ))   (Hendrycks & Gimpel's approximation)
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)  # GELU(x) ~ x sigma(1.702 x)


def _relu(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x, min=0)  # ReLU(x) = max(0, x)


def _silu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)  # SiLU(x) = x sigma(x)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": _gelu_exact,
    "gelu_tanh": _gelu_tanh,
    "gelu_new": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "quick_gelu": _quick_gelu,
    "relu": _relu,
    "silu": _silu,
    "swish": _silu,
}


def activation_fn(activation) -> Callable[[torch.Tensor], torch.Tensor]:
    """Name (``"gelu"`` exact, ``"gelu_tanh"``/``"gelu_new"`` approximate, ``"relu"``, ...) -> function.

    A callable is returned unchanged.
    """
    if callable(activation):
        return activation
    try:
        return ACTIVATIONS[activation]
    except KeyError:
        raise ValueError(
            f"unknown activation {activation!r}; known: {sorted(ACTIVATIONS)}"
        ) from None


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------


def linear(x: torch.Tensor, W: torch.Tensor, b: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Affine map with torch's weight layout ``W: [out, in]``:  ``y = x W^T + b``."""
    y = x @ W.transpose(-1, -2)  # y = x W^T
    if b is not None:
        y = y + b  # ... + b
    return y


def layer_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Layer normalisation over the last (feature) axis, per position.

    ``LN(x) = gamma * (x - mu) / sqrt(sigma^2 + eps) + beta`` with ``mu`` and the *biased*
    variance ``sigma^2`` taken over the ``D`` features of each position.
    """
    mu = x.mean(dim=-1, keepdim=True)  # mu = (1/D) sum_d x_d
    var = ((x - mu) ** 2).mean(dim=-1, keepdim=True)  # sigma^2 = (1/D) sum_d (x_d - mu)^2   (divide by D, not D-1)
    x_hat = (x - mu) / torch.sqrt(var + eps)  # x_hat = (x - mu) / sqrt(sigma^2 + eps)
    return x_hat * gamma + beta  # LN(x) = gamma * x_hat + beta


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``[..., T, D] -> [..., H, T, d_h]``: head h owns features ``h*d_h : (h+1)*d_h``."""
    *lead, T, D = x.shape
    if D % num_heads:
        raise ValueError(f"model dimension {D} is not divisible by num_heads={num_heads}")
    return x.reshape(*lead, T, num_heads, D // num_heads).transpose(-3, -2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``[..., H, T, d_h] -> [..., T, H*d_h]``: Concat(head_1, ..., head_H) along features."""
    *lead, H, T, dh = x.shape
    return x.transpose(-3, -2).reshape(*lead, T, H * dh)


def causal_mask(t_q: int, t_k: Optional[int] = None, device=None) -> torch.Tensor:
    """Boolean ``[Tq, Tk]``, True where query ``i`` may attend key ``j``: ``j <= i + (Tk - Tq)``.

    With ``Tq == Tk`` this is the lower triangle (``j <= i``): no position sees the future.
    """
    t_k = t_q if t_k is None else t_k
    i = torch.arange(t_q, device=device)[:, None]
    j = torch.arange(t_k, device=device)[None, :]
    return j <= i + (t_k - t_q)  # M_ij = [j <= i]


def _apply_mask(scores: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Boolean mask (True = keep) or additive float mask (0 = keep, very negative = drop)."""
    if mask is None:
        return scores
    if mask.dtype == torch.bool:
        # S_ij <- S_ij if M_ij else min_float   (same convention as transformers' eager masks:
        # a fully-masked row becomes uniform instead of NaN)
        return scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return scores + mask.to(scores.dtype)  # S <- S + M  (additive mask: 0 or -large)


def attention_weights(
    q: torch.Tensor,
    k: torch.Tensor,
    scale: Optional[float] = None,
    causal: bool = False,
    mask: Optional[torch.Tensor] = None,
    scale_queries: bool = False,
) -> torch.Tensor:
    """Scaled dot-product attention weights, one row per query.

    ``A = softmax( q k^T / sqrt(d_h) + M )``, softmax over the *key* axis (the last one), so each
    row of ``A`` sums to 1. ``q: [..., Tq, d_h]``, ``k: [..., Tk, d_h]`` -> ``[..., Tq, Tk]``.

    ``scale`` defaults to ``1/sqrt(d_h)``. ``scale_queries=True`` multiplies q before the product
    (Whisper's order), otherwise the scores after it (wav2vec2's order).
    """
    if scale is None:
        scale = q.shape[-1] ** -0.5  # 1/sqrt(d_h)
    if scale_queries:
        scores = (q * scale) @ k.transpose(-1, -2)  # S = (q / sqrt(d_h)) k^T
    else:
        scores = (q @ k.transpose(-1, -2)) * scale  # S = (q k^T) / sqrt(d_h)
    if causal:
        scores = _apply_mask(scores, causal_mask(q.shape[-2], k.shape[-2], device=q.device))  # S_ij = -inf for j > i
    scores = _apply_mask(scores, mask)  # S <- S + M  (padding / custom mask)
    scores = scores - scores.amax(dim=-1, keepdim=True)  # softmax is shift-invariant: subtract row max for stability
    e = torch.exp(scores)  # e_ij = exp(S_ij)
    return e / e.sum(dim=-1, keepdim=True)  # A_ij = e_ij / sum_j' e_ij'   (softmax over keys j)


def multi_head_attention(
    x_q: torch.Tensor,
    x_kv: torch.Tensor,
    p: AttentionParams,
    causal: bool = False,
    mask: Optional[torch.Tensor] = None,
    return_weights: bool = False,
):
    """Multi-head attention: queries from ``x_q`` ``[..., Tq, D]``, keys/values from ``x_kv`` ``[..., Tk, D]``,
    with the projections of ``p`` (:class:`AttentionParams`: ``W_q, b_q, ..., W_o, b_o``, ``num_heads``,
    and the block's ``scale`` / ``scale_queries`` conventions).

    Self-attention: ``x_kv is x_q``. Cross-attention (Whisper decoder): ``x_kv`` = encoder output.

        q = x_q W_q^T + b_q,   k = x_kv W_k^T + b_k,   v = x_kv W_v^T + b_v        (all [T, D])
        q^h, k^h, v^h = columns h*d_h:(h+1)*d_h of q, k, v                         (head h)
        A^h = softmax(q^h k^h^T / sqrt(d_h) + M)                                   [Tq, Tk]
        head_h = A^h v^h                                                           [Tq, d_h]
        MHA(x) = Concat(head_1, ..., head_H) W_o^T + b_o
               = sum_h head_h (W_o^h)^T + b_o,   W_o^h = W_o[:, h*d_h:(h+1)*d_h]   [D, d_h]

    ``mask``: boolean (True = may attend) or additive float, broadcastable to ``[..., H, Tq, Tk]``
    (a transformers 4-D mask ``[B, 1, Tq, Tk]`` works with batched input ``[B, T, D]``).
    Returns ``out [..., Tq, D]`` or ``(out, A [..., H, Tq, Tk])`` with ``return_weights=True``.
    """
    q = linear(x_q, p.W_q, p.b_q)  # q = x_q W_q^T + b_q
    k = linear(x_kv, p.W_k, p.b_k)  # k = x_kv W_k^T + b_k   (Whisper: b_k = None)
    v = linear(x_kv, p.W_v, p.b_v)  # v = x_kv W_v^T + b_v
    q, k, v = (split_heads(t, p.num_heads) for t in (q, k, v))  # [..., H, T, d_h]
    A = attention_weights(q, k, scale=p.scale, causal=causal, mask=mask, scale_queries=p.scale_queries)
    heads = A @ v  # head_h = A^h v^h
    out = linear(merge_heads(heads), p.W_o, p.b_o)  # MHA = Concat_h(head_h) W_o^T + b_o
    return (out, A) if return_weights else out


def per_head_outputs(heads: torch.Tensor, W_o: torch.Tensor) -> torch.Tensor:
    """Each head's own contribution to the output projection, bias left out.

    ``heads: [..., H, Tq, d_h]`` -> ``[..., H, Tq, D]`` with ``out_h = head_h (W_o^h)^T``, so that
    ``sum_h out_h + b_o == Concat_h(head_h) W_o^T + b_o`` (the identity notebooks 03/04 rely on).
    """
    H, dh = heads.shape[-3], heads.shape[-1]
    W_oh = W_o.reshape(W_o.shape[0], H, dh).permute(1, 0, 2)  # W_o^h = W_o[:, h*d_h:(h+1)*d_h]  -> [H, D, d_h]
    return heads @ W_oh.transpose(-1, -2)  # out_h = head_h (W_o^h)^T


def feed_forward(
    x: torch.Tensor,
    W1: torch.Tensor,
    b1: torch.Tensor,
    W2: torch.Tensor,
    b2: torch.Tensor,
    activation="gelu",
) -> torch.Tensor:
    """Position-wise feed-forward network: ``FFN(x) = act(x W1^T + b1) W2^T + b2``.

    ``W1: [D_ff, D]``, ``W2: [D, D_ff]``; ``activation`` is a name from :data:`ACTIVATIONS`
    (``"gelu"`` = exact erf GELU, what every supported model uses) or a callable.
    """
    h = activation_fn(activation)(linear(x, W1, b1))  # h = act(x W1^T + b1)      [T, D_ff]
    return linear(h, W2, b2)  # FFN(x) = h W2^T + b2   [T, D]


# ----------------------------------------------------------------------------------------------
# Parameters of a layer
# ----------------------------------------------------------------------------------------------


def _to(t, dtype):
    return t if (t is None or dtype is None) else t.to(dtype)


@dataclass
class AttentionParams:
    """One attention block, what :func:`multi_head_attention` computes with: the projections
    ``[out, in]`` (biases may be None: Whisper's ``b_k``), the number of heads, and the block's
    conventions (``scale`` of the scores, ``scale_queries``: applied to q before the product)."""

    W_q: torch.Tensor
    b_q: Optional[torch.Tensor]
    W_k: torch.Tensor
    b_k: Optional[torch.Tensor]
    W_v: torch.Tensor
    b_v: Optional[torch.Tensor]
    W_o: torch.Tensor
    b_o: Optional[torch.Tensor]
    num_heads: int
    scale: Optional[float] = None  # None: 1/sqrt(d_h); a real block's own factor (extract_weights)
    scale_queries: bool = False  # True: Whisper (q scaled before q k^T); False: wav2vec2/HuBERT

    @property
    def d_model(self) -> int:
        return self.W_o.shape[0]

    @property
    def head_dim(self) -> int:
        return self.W_q.shape[0] // self.num_heads

    def to(self, dtype) -> "AttentionParams":
        return replace(self, **{n: _to(getattr(self, n), dtype) for n in
                                ("W_q", "b_q", "W_k", "b_k", "W_v", "b_v", "W_o", "b_o")})


@dataclass
class NormParams:
    """One layer norm: ``gamma`` (weight), ``beta`` (bias), ``eps``."""

    gamma: torch.Tensor
    beta: torch.Tensor
    eps: float

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.gamma, self.beta, self.eps)

    def to(self, dtype) -> "NormParams":
        return replace(self, gamma=_to(self.gamma, dtype), beta=_to(self.beta, dtype))


@dataclass
class FFNParams:
    """The feed-forward block: ``W1 [D_ff, D]``, ``b1``, ``W2 [D, D_ff]``, ``b2``, activation name."""

    W1: torch.Tensor
    b1: torch.Tensor
    W2: torch.Tensor
    b2: torch.Tensor
    activation: str = "gelu"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return feed_forward(x, self.W1, self.b1, self.W2, self.b2, self.activation)

    def to(self, dtype) -> "FFNParams":
        return replace(self, W1=_to(self.W1, dtype), b1=_to(self.b1, dtype),
                       W2=_to(self.W2, dtype), b2=_to(self.b2, dtype))
