"""Notebook 03 (Attention-Norm): reference solution, check and helpers.

The learner writes ``attention_norm(weights, values, W_O, per_head=False)`` on plain tensors:

    weights [H, Tq, Tk]   softmax attention per head
    values  [H, Tk, d_h]  value vectors per head (value bias included)
    W_O     [D, H*d_h]    the output projection (out_proj.weight: [out, in])

    per_head=False -> [Tq, Tk]:    || sum_h alpha_ij^h v_j^h (W_O^h)^T ||
    per_head=True  -> [H, Tq, Tk]: || alpha_ij^h v_j^h (W_O^h)^T ||

with ``W_O^h = W_O[:, h*d_h:(h+1)*d_h]`` (the columns that read head h).  The readable solution
(the vectors themselves, then their norms) is in the notebook, in a collapsed cell tagged
``solution``. The reference of the check is :func:`ctxmix_lite.measures.attention_norm.attention_norm`,
an independent formulation (the squared norm expanded through a per-key Gram matrix, in float64);
:func:`check_attention_norm` runs both on real Whisper-base blocks (encoder, causal decoder,
cross-attention), tests the properties every correct answer has (scores >= 0, exactly 0 where no
head attends), compares within float32 tolerance and names classic mistakes.
"""
from __future__ import annotations


import torch

from ctxmix_lite.measures.attention_norm import attention_norm as _attention_norm
from ctxmix_lite.internals.capture_types import LayerCapture
from ctxmix_lite.course.exercises import case, check_function
from ctxmix_lite.viz.plotting import layer_label

__all__ = ["attention_norm", "as_capture", "exercise_cases", "check_attention_norm", "spearman", "default_capture"]


def _unavailable(*a, **k):
    raise RuntimeError("this LayerCapture only carries weights, values and W_O")


def as_capture(weights, values, W_O, causal: bool = False) -> LayerCapture:
    """A minimal :class:`LayerCapture` around plain tensors (what attention-norm reads)."""
    z = torch.zeros(0)
    return LayerCapture("encoder" if not causal else "decoder", 0, weights, values, W_O, None, z, z, z,
                        _unavailable, _unavailable, causal=causal)


def attention_norm(weights, values, W_O, per_head: bool = False) -> torch.Tensor:
    """Reference: Attention-Norm from plain tensors (see the module docstring)."""
    return _attention_norm(as_capture(weights, values, W_O), per_head=per_head)


# ----------------------------------------------------------------------------------------------
# classic mistakes, for a useful message
# ----------------------------------------------------------------------------------------------
def _pv(values, W_O, rows_of_WO=False):
    H, Tk, dh = values.shape
    if rows_of_WO:  # W_O[h*dh:(h+1)*dh, :] used as [dh, D]
        W = W_O.reshape(H, dh, -1)  # [H, dh, D]
        return torch.einsum("hkd,hde->hke", values, W)
    W = W_O.reshape(W_O.shape[0], H, dh)
    return torch.einsum("hkd,ehd->hke", values, W)


def _sum_of_norms(weights, values, W_O, per_head=False):
    pv = _pv(values, W_O)
    per = weights * pv.norm(dim=-1)[:, None, :]
    return per if per_head else per.sum(0)


def _rows_not_columns(weights, values, W_O, per_head=False):
    pv = _pv(values, W_O, rows_of_WO=True)
    if per_head:
        return weights * pv.norm(dim=-1)[:, None, :]
    return torch.einsum("hqk,hke->qke", weights, pv).norm(dim=-1)


def _no_W_O(weights, values, W_O, per_head=False):
    if per_head:
        return weights * values.norm(dim=-1)[:, None, :]
    return torch.einsum("hqk,hkd->qkd", weights, values).norm(dim=-1)


def _mean_over_heads(weights, values, W_O, per_head=False):
    if per_head:
        return None
    return attention_norm(weights, values, W_O) / weights.shape[0]


def _no_alpha(weights, values, W_O, per_head=False):
    pv = _pv(values, W_O).norm(dim=-1)  # [H, Tk]
    H, Tq, Tk = weights.shape
    return pv[:, None, :].expand(H, Tq, Tk).clone() if per_head else None


def _attention_only(weights, values, W_O, per_head=False):
    return weights.clone() if per_head else weights.mean(0)


MISTAKES = [
    ("that is the *sum of the per-head norms*; Attention-Norm is the norm of the *sum* over heads: "
     "add the vectors alpha_ij^h v_j^h (W_O^h)^T over h first, then take the norm.", _sum_of_norms),
    ("W_O^h is a block of *columns*: W_O[:, h*d_h:(h+1)*d_h] (torch stores [out, in], and the input "
     "of out_proj is the concatenation of the heads). You used a block of rows.", _rows_not_columns),
    ("the output projection is missing: the vector j sends is v_j^h (W_O^h)^T (in model space), not "
     "v_j^h itself.", _no_W_O),
    ("you averaged over heads; the heads' outputs are *added* (Concat(heads) W_O^T = sum_h ...).",
     _mean_over_heads),
    ("per head, the weight alpha_ij^h is missing: ||alpha_ij^h v_j^h (W_O^h)^T|| = alpha_ij^h ||...||.",
     _no_alpha),
    ("that is the attention weight itself; multiply by the size of what is moved.", _attention_only),
]


# ----------------------------------------------------------------------------------------------
def exercise_cases(capture, n_queries: int = 80, n_keys: int = 240, enc_layer: int = 1, dec_layer: int = 2) -> list:
    """Check cases from a Whisper capture (encoder, decoder and cross components): real weights,
    values and W_O, the encoder and cross keys cropped to the first ``n_keys`` frames."""
    e = capture["encoder"][enc_layer]
    d = capture["decoder"][dec_layer]
    x = capture["cross"][dec_layer]
    nq, nk = min(n_queries, e.weights.shape[1]), min(n_keys, e.weights.shape[2])
    cases = [
        case(e.weights[:, :nq, :nk].clone(), e.values[:, :nk].clone(), e.W_O.clone(),
             label=f"Whisper {layer_label(enc_layer, 'encoder')}: {nq} query x {nk} key frames"),
        case(e.weights[:, :nq, :nk].clone(), e.values[:, :nk].clone(), e.W_O.clone(), per_head=True,
             label="the same, per_head=True"),
        case(d.weights.clone(), d.values.clone(), d.W_O.clone(),
             label=f"Whisper decoder self-attention {layer_label(dec_layer)} (causal, {d.weights.shape[1]} tokens)"),
        case(x.weights[:, :, :nk].clone(), x.values[:, :nk].clone(), x.W_O.clone(),
             label=f"Whisper cross-attention {layer_label(dec_layer)}: tokens -> {nk} frames"),
        case(x.weights[:, :, :nk].clone(), x.values[:, :nk].clone(), x.W_O.clone(), per_head=True,
             label="cross-attention, per_head=True"),
    ]
    for c in cases:
        c.reference = attention_norm
    return cases


_DEFAULT: dict = {}


def default_capture():
    """Offline Whisper-base on notebook 01's sentence, all components (built once per session)."""
    if "cap" not in _DEFAULT:
        from ctxmix_lite.internals.capture import capture
        from ctxmix_lite.course.exercises.nb01 import SENTENCE, synthesize_clip
        from ctxmix_lite.models.loading import load_model

        audio, _ = synthesize_clip()
        m, p = load_model("openai/whisper-base")
        _DEFAULT["cap"] = capture(m, p, audio, transcription=SENTENCE, sampling_rate=16000)
    return _DEFAULT["cap"]


def _unattended(out, c):
    """Where no head attends (alpha = 0: above the diagonal of a causal block), nothing is sent."""
    w = c.args[0]
    per_head = c.kwargs.get("per_head", c.args[3] if len(c.args) > 3 else False)
    zero = (w == 0) if per_head else (w == 0).all(0)
    return out[zero]


INVARIANTS = [
    ("every score is a norm, so >= 0",
     lambda out, c: not bool(torch.isfinite(out).all()) or bool(out.min() >= 0)),
    ("where no head attends (alpha_ij^h = 0 for every h, e.g. j > i in the causal decoder) nothing is "
     "sent: the score is 0",
     lambda out, c: not bool(torch.isfinite(out).all()) or _unattended(out, c).numel() == 0
     or bool(_unattended(out, c).abs().max() <= 1e-6)),
]


def check_attention_norm(fn, capture=None, strict=None) -> bool:
    """``attention_norm(weights, values, W_O, per_head=False)`` on real Whisper-base blocks."""
    from ctxmix_lite.course.exercises import diagnose_mistakes, mistake_hints

    cases = exercise_cases(capture if capture is not None else default_capture())
    found = diagnose_mistakes(fn, cases, MISTAKES)
    generic = {
        "shape": "per_head=False -> [Tq, Tk] (one score per query and key); per_head=True -> [H, Tq, Tk].",
        "value": "f_ij = sum_h alpha_ij^h v_j^h (W_O^h)^T with W_O^h = W_O[:, h*d_h:(h+1)*d_h]; the score "
                 "is its Euclidean norm ||f_ij|| (torch.linalg.vector_norm over the model dimension).",
        "error": "check the shapes: weights [H, Tq, Tk], values [H, Tk, d_h], W_O [D, H*d_h]. "
                 "torch.einsum is the easiest way to write the sums.",
    }
    return check_function(fn, attention_norm, cases, "attention_norm", atol=1e-4, rtol=1e-4,
                          hints=mistake_hints(found, generic), strict=strict, properties=INVARIANTS)


# ----------------------------------------------------------------------------------------------
def spearman(a: torch.Tensor, b: torch.Tensor, causal: bool = False) -> float:
    """Spearman rank correlation of two equally shaped matrices (flattened; average ranks for ties).

    ``causal``: only the cells with ``j <= i`` (the defined ones; the exact zeros above the diagonal
    would otherwise tie and inflate the correlation)."""
    from scipy.stats import spearmanr

    a, b = a.detach().double(), b.detach().double()
    if causal:
        keep = torch.ones(a.shape[-2:], dtype=torch.bool).tril()
        a, b = a[..., keep], b[..., keep]
    return float(spearmanr(a.reshape(-1).numpy(), b.reshape(-1).numpy()).statistic)
