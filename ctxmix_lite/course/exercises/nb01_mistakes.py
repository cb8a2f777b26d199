"""Notebook 01's catalogue of classic mistakes: what a wrong answer computes, with its hint.

Each entry is ``(hint, wrong_fn)``: ``wrong_fn`` takes the exercise's arguments and computes the
answer with one deliberate mistake (softmax over the wrong axis, no ``1/sqrt(d_h)``, value bias
forgotten, pre-/post-LN order swapped, ...), or ``None`` where the mistake does not apply to a
case. The checks of :mod:`ctxmix_lite.course.exercises.nb01` match a failing learner's output
against them (:func:`ctxmix_lite.course.exercises.diagnose_mistakes`) so that the message names
the mistake instead of only "values differ". ``*_PROPERTIES`` / ``ATTENTION_INVARIANTS``: what a
(wrong / every correct) answer does or does not satisfy, ``(hint, predicate(out, case))``.
"""
from __future__ import annotations

import torch

from ctxmix_lite.internals import layer as L

__all__ = ["ATTENTION_MISTAKES", "ATTENTION_PROPERTIES", "ATTENTION_INVARIANTS", "MHA_MISTAKES",
           "LN_MISTAKES", "ADD_NORM_MISTAKES", "FFN_MISTAKES", "LAYER_MISTAKES"]


def _softmax(S, dim=-1):
    return torch.softmax(S, dim=dim)


def _scores(q, k):
    return q @ k.transpose(-1, -2)


def _causal_fill(S, causal, upper=False):
    if not causal:
        return S
    Tq, Tk = S.shape[-2:]
    keep = L.causal_mask(Tq, Tk)
    if upper:
        keep = keep.T if Tq == Tk else keep
    return S.masked_fill(~keep, float("-inf"))

# ----------------------------------------------------------------------------------------------
# Attention weights (exercise 1.1)
# ----------------------------------------------------------------------------------------------

ATTENTION_MISTAKES = [
    ("the scores are not scaled: divide q k^T by sqrt(d_h) (d_h = 64 here, so by 8) before the "
     "softmax — 'forgot the 1/sqrt(d_h) scaling'.",
     lambda q, k, causal=False: _softmax(_causal_fill(_scores(q, k), causal))),
    ("you divided by d_h; the scaling is 1/sqrt(d_h) (the square root of the head size).",
     lambda q, k, causal=False: _softmax(_causal_fill(_scores(q, k) / q.shape[-1], causal))),
    ("you multiplied by sqrt(d_h): the scores must be *divided* by sqrt(d_h).",
     lambda q, k, causal=False: _softmax(_causal_fill(_scores(q, k) * q.shape[-1] ** 0.5, causal))),
    ("rows of your attention weights don't sum to 1: softmax over the wrong axis. Each query i gets "
     "a distribution over the keys j: softmax over the LAST axis (dim=-1).",
     lambda q, k, causal=False: _softmax(_causal_fill(_scores(q, k) / q.shape[-1] ** 0.5, causal), dim=-2)),
    ("the causal mask is missing: with causal=True, query i may only attend keys j <= i (set the "
     "scores with j > i to -inf before the softmax).",
     lambda q, k, causal=False: _softmax(_scores(q, k) / q.shape[-1] ** 0.5) if causal else None),
    ("the causal mask is the wrong way round: keep j <= i (lower triangle, torch.tril), mask j > i.",
     lambda q, k, causal=False: _softmax(_causal_fill(_scores(q, k) / q.shape[-1] ** 0.5, causal, upper=True))
     if causal else None),
    ("the mask was applied after the softmax: mask the *scores* (-inf), then softmax, so that the "
     "rows still sum to 1.",
     lambda q, k, causal=False: torch.tril(_softmax(_scores(q, k) / q.shape[-1] ** 0.5)) if causal else None),
]

ATTENTION_PROPERTIES = [
    ("rows of your attention weights don't sum to 1: softmax over the wrong axis (it must run over "
     "the keys j, the last axis).",
     lambda out, c: bool((out.sum(-1) - 1).abs().max() > 1e-3)),
    ("some weights are negative: did you forget the exponential (softmax)?",
     lambda out, c: bool(out.min() < 0)),
]


def _finite(out) -> bool:
    return bool(torch.isfinite(out).all())


def _future(out):
    return torch.ones(out.shape[-2:], dtype=torch.bool, device=out.device).triu(1)


# what every correct answer satisfies (tested before the comparison; check_function(properties=))
ATTENTION_INVARIANTS = [
    ("every row of A sums to 1 over the keys (sum_j A[h, i, j] = 1: the softmax runs over the last axis)",
     lambda out, c: not _finite(out) or bool((out.sum(-1) - 1).abs().max() <= 1e-4)),
    ("no attention weight is negative (a softmax gives weights in [0, 1])",
     lambda out, c: not _finite(out) or bool(out.min() >= 0)),
    ("with causal=True no query attends a later key (A[h, i, j] = 0 for j > i)",
     lambda out, c: not c.kwargs.get("causal") or not _finite(out)
     or bool(out[..., _future(out)].abs().max() <= 1e-6)),
]

# ----------------------------------------------------------------------------------------------
# Multi-head attention (exercise 1.2)
# ----------------------------------------------------------------------------------------------

def _mha_variant(**change):
    """multi_head_attention with one deliberate change (for the mistake catalogue)."""

    def wrong(x_q, x_kv, p, causal=False):
        H = p.num_heads
        b_v = None if change.get("no_value_bias") else p.b_v
        b_o = None if change.get("no_out_bias") else p.b_o
        q, k, v = L.linear(x_q, p.W_q, p.b_q), L.linear(x_kv, p.W_k, p.b_k), L.linear(x_kv, p.W_v, b_v)
        if change.get("bad_split"):  # [T, D] -> [T, d_h, H]: heads interleaved
            T, D = q.shape[-2:]
            sp = (lambda t: t.reshape(*t.shape[:-1], D // H, H).transpose(-1, -2).transpose(-3, -2))
            q, k, v = sp(q), sp(k), sp(v)
        else:
            q, k, v = (L.split_heads(t, H) for t in (q, k, v))
        dh = q.shape[-1]
        S = _scores(q, k) / (1.0 if change.get("no_scale") else dh ** 0.5)
        S = _causal_fill(S, causal and not change.get("no_causal"))
        A = _softmax(S, dim=-2 if change.get("axis") else -1)
        heads = A @ v  # [H, Tq, d_h]
        if change.get("bad_split"):  # the matching wrong merge: [T, d_h, H] -> [T, D]
            heads = heads.transpose(-3, -2).transpose(-1, -2).reshape(*heads.shape[:-3], heads.shape[-2], -1)
        else:
            heads = L.merge_heads(heads)  # Concat(head_1, ..., head_H)
        if change.get("no_out_proj"):
            return heads
        return L.linear(heads, p.W_o, b_o)

    return wrong

MHA_MISTAKES = [
    ("forgot the 1/sqrt(d_h) scaling of the scores.", _mha_variant(no_scale=True)),
    ("value bias missing: v = x W_v^T + b_v (the values carry a bias in Whisper and wav2vec2).",
     _mha_variant(no_value_bias=True)),
    ("output-projection bias missing: MHA = Concat(heads) W_o^T + b_o.", _mha_variant(no_out_bias=True)),
    ("the output projection W_o is missing: MHA = Concat(head_1..head_H) W_o^T + b_o.",
     _mha_variant(no_out_proj=True)),
    ("softmax over the wrong axis: normalise over the keys (last axis).", _mha_variant(axis=True)),
    ("the causal mask is missing (causal=True: query i attends keys j <= i only).", _mha_variant(no_causal=True)),
    ("the heads are split the wrong way: head h owns features h*d_h ... (h+1)*d_h - 1, i.e. "
     "reshape [T, D] -> [T, H, d_h] then transpose to [H, T, d_h] (not [T, d_h, H]).",
     _mha_variant(bad_split=True)),
]

# ----------------------------------------------------------------------------------------------
# Layer norm, Add & Norm, feed-forward (exercises 1.3-1.5)
# ----------------------------------------------------------------------------------------------

LN_MISTAKES = [
    ("the variance must be the *biased* one (divide by D, not D - 1): x.var(-1, unbiased=False) or "
     "((x - mu)**2).mean(-1).",
     lambda x, g, b, eps=1e-5: (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + eps) * g + b),
    ("eps goes inside the square root: sqrt(sigma^2 + eps), not sqrt(sigma^2) + eps.",
     lambda x, g, b, eps=1e-5: (x - x.mean(-1, keepdim=True)) / (x.var(-1, keepdim=True, unbiased=False).sqrt() + eps) * g + b),
    ("eps is missing (it matters when a position's variance is small).",
     lambda x, g, b, eps=1e-5: (x - x.mean(-1, keepdim=True)) / x.var(-1, keepdim=True, unbiased=False).sqrt() * g + b),
    ("normalise each position over its features (the LAST axis), not over time.",
     lambda x, g, b, eps=1e-5: (x - x.mean(-2, keepdim=True)) / torch.sqrt(x.var(-2, keepdim=True, unbiased=False) + eps) * g + b),
    ("gamma and beta are missing: LN(x) = gamma * x_hat + beta.",
     lambda x, g, b, eps=1e-5: (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + eps)),
    ("gamma and beta are swapped: gamma multiplies, beta is added.",
     lambda x, g, b, eps=1e-5: L.layer_norm(x, b, g, eps)),
]


ADD_NORM_MISTAKES = [
    ("the residual is missing: normalise x + sublayer_out, not sublayer_out alone.",
     lambda x, s, g, b, eps=1e-5: L.layer_norm(s, g, b, eps)),
    ("that is the pre-LN order (x + LN(sublayer_out)): post-LN normalises the *sum*, LN(x + sublayer_out).",
     lambda x, s, g, b, eps=1e-5: x + L.layer_norm(s, g, b, eps)),
    ("the sum is not normalised: Add & Norm = LN(x + sublayer_out).",
     lambda x, s, g, b, eps=1e-5: x + s),
]


FFN_MISTAKES = [
    ("that is the tanh approximation of GELU; these models use the exact one: "
     "0.5 * x * (1 + erf(x / sqrt(2))) (torch.erf), as torch.nn.functional.gelu does by default.",
     lambda x, W1, b1, W2, b2: L.feed_forward(x, W1, b1, W2, b2, "gelu_tanh")),
    ("ReLU instead of GELU: use GELU(x) = 0.5 * x * (1 + erf(x / sqrt(2))).",
     lambda x, W1, b1, W2, b2: L.feed_forward(x, W1, b1, W2, b2, "relu")),
    ("the activation is missing between the two linear maps.",
     lambda x, W1, b1, W2, b2: L.linear(L.linear(x, W1, b1), W2, b2)),
    ("a bias is missing: FFN(x) = GELU(x W1^T + b1) W2^T + b2.",
     lambda x, W1, b1, W2, b2: L.feed_forward(x, W1, None, W2, b2)),
    ("a bias is missing: FFN(x) = GELU(x W1^T + b1) W2^T + b2.",
     lambda x, W1, b1, W2, b2: L.feed_forward(x, W1, b1, W2, None)),
]

# ----------------------------------------------------------------------------------------------
# Whole layers (exercises 1.6, 1.7)
# ----------------------------------------------------------------------------------------------

def _no_residual_post(x, w):
    h = w.norm_attn(L.multi_head_attention(x, x, w.self_attn))
    return w.norm_ffn(w.ffn(h))


def _ln_only_at_end(x, w):
    h = x + L.multi_head_attention(x, x, w.self_attn)
    return w.norm_ffn(h + w.ffn(h))


def _pre_ln_norm_on_stream(x, w):
    z = w.norm_attn(x)
    h = z + L.multi_head_attention(z, z, w.self_attn)
    z2 = w.norm_ffn(h)
    return z2 + w.ffn(z2)


LAYER_MISTAKES = [
    ("post-LN vs pre-LN order: you computed the pre-LN layer (x + MHA(LN(x))). Post-LN normalises "
     "*after* each residual sum: h = LN_1(x + MHA(x)), y = LN_2(h + FFN(h)).",
     lambda x, w: L.pre_ln_layer(x, w) if w.kind == "post_ln" else None),
    ("post-LN vs pre-LN order: you computed the post-LN layer. Pre-LN normalises the *input* of each "
     "sub-layer and leaves the residual stream alone: h = x + MHA(LN_1(x)), y = h + FFN(LN_2(h)).",
     lambda x, w: L.post_ln_layer(x, w) if w.kind == "pre_ln" else None),
    ("the residual connections are missing (x + ... before each layer norm).",
     lambda x, w: _no_residual_post(x, w) if w.kind == "post_ln" else None),
    ("the first Add & Norm is missing its norm: h = LN_1(x + MHA(x)).",
     lambda x, w: _ln_only_at_end(x, w) if w.kind == "post_ln" else None),
    ("in pre-LN the residual adds the *un-normalised* x: h = x + MHA(LN_1(x)), not LN_1(x) + MHA(LN_1(x)).",
     lambda x, w: _pre_ln_norm_on_stream(x, w) if w.kind == "pre_ln" else None),
]
