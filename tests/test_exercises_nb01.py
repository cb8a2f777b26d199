"""Notebook 01's checks: they pass the reference and independent correct implementations, and fail
(with the right hint) on typical wrong ones. Real inputs: the trained Whisper-base (offline) and a
random-init wav2vec2-base layer on a French MBROLA sentence."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ctxmix_lite import layer as L
from ctxmix_lite.exercises import nb01


@pytest.fixture(scope="module")
def data(whisper_base, french_clip):
    from ctxmix_lite.models import load_model

    wm, wp = whisper_base
    vm, _ = load_model("facebook/wav2vec2-base", pretrained=False, seed=0,
                       config_overrides={"num_hidden_layers": 1})
    return nb01.exercise_data(nb01.whisper_layer_io(wm, wp, french_clip), nb01.wav2vec2_layer_io(vm, french_clip))


# ----------------------------------------------------------------------------------------------
# Independent, learner-style implementations (torch.nn.functional where it exists)
# ----------------------------------------------------------------------------------------------


def my_attention(q, k, causal=False, scale=True, dim=-1, mask_after=False):
    S = q @ k.transpose(-1, -2)
    if scale:
        S = S / math.sqrt(q.shape[-1])
    if causal and not mask_after:
        S = S.masked_fill(torch.ones(S.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    A = torch.softmax(S, dim=dim)
    if causal and mask_after:
        A = A.tril()
    return A


def my_mha(x_q, x_kv, p, causal=False, value_bias=True, scale=True, dim=-1):
    q = F.linear(x_q, p.W_q, p.b_q)
    k = F.linear(x_kv, p.W_k, p.b_k)
    v = F.linear(x_kv, p.W_v, p.b_v if value_bias else None)
    Tq, D = q.shape
    dh = D // p.num_heads
    q, k, v = (t.view(t.shape[0], p.num_heads, dh).transpose(0, 1) for t in (q, k, v))
    A = my_attention(q, k, causal=causal, scale=scale, dim=dim)
    out = (A @ v).transpose(0, 1).reshape(Tq, D)
    return F.linear(out, p.W_o, p.b_o)


def my_layer_norm(x, gamma, beta, eps=1e-5, unbiased=False):
    if unbiased:
        return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + eps) * gamma + beta
    return F.layer_norm(x, x.shape[-1:], gamma, beta, eps)


def my_ffn(x, W1, b1, W2, b2, approximate="none"):
    return F.linear(F.gelu(F.linear(x, W1, b1), approximate=approximate), W2, b2)


def _mha(x, w):
    return my_mha(x, x, w.self_attn)


def my_post_ln(x, w):
    h = my_layer_norm(x + _mha(x, w), w.norm_attn.gamma, w.norm_attn.beta, w.norm_attn.eps)
    f = w.ffn
    return my_layer_norm(h + my_ffn(h, f.W1, f.b1, f.W2, f.b2), w.norm_ffn.gamma, w.norm_ffn.beta, w.norm_ffn.eps)


def my_pre_ln(x, w):
    h = x + _mha(my_layer_norm(x, w.norm_attn.gamma, w.norm_attn.beta, w.norm_attn.eps), w)
    f = w.ffn
    return h + my_ffn(my_layer_norm(h, w.norm_ffn.gamma, w.norm_ffn.beta, w.norm_ffn.eps), f.W1, f.b1, f.W2, f.b2)


# ----------------------------------------------------------------------------------------------


def test_exercise_data_is_real(data):
    assert data.x_enc.shape == (300, 512) and data.enc_out.shape == (300, 512)
    assert data.w_enc.source == "WhisperEncoderLayer" and data.w_dec.kind == "decoder"
    assert data.w_post.source == "Wav2Vec2EncoderLayer" and data.w_post.kind == "post_ln"
    assert data.x_dec.shape[0] > 4 and data.x_post.shape[1] == 768
    # trained Whisper: non-trivial value biases; the wav2vec2 copy got perturbed biases
    assert data.w_enc.self_attn.b_v.abs().max() > 0.01 and data.w_post.self_attn.b_v.abs().max() > 0.01


def test_references_pass(data):
    for name in ("attention_weights", "multi_head_attention", "layer_norm", "add_and_norm", "feed_forward",
                 "post_ln_layer", "pre_ln_layer"):
        assert getattr(nb01, f"check_{name}")(getattr(nb01, name), data, strict=True), name


def test_independent_correct_implementations_pass(data):
    assert nb01.check_attention_weights(my_attention, data, strict=True)
    assert nb01.check_multi_head_attention(my_mha, data, strict=True)
    assert nb01.check_layer_norm(my_layer_norm, data, strict=True)
    assert nb01.check_feed_forward(my_ffn, data, strict=True)
    assert nb01.check_post_ln_layer(my_post_ln, data, strict=True)
    assert nb01.check_pre_ln_layer(my_pre_ln, data, strict=True)
    assert nb01.check_add_and_norm(lambda x, s, g, b, eps=1e-5: my_layer_norm(x + s, g, b, eps), data, strict=True)


WRONG = [
    # (check, wrong implementation, a phrase the hint must contain)
    ("attention_weights", lambda q, k, causal=False: my_attention(q, k, causal, scale=False), "1/sqrt(d_h)"),
    ("attention_weights", lambda q, k, causal=False: my_attention(q, k, causal, dim=-2), "wrong axis"),
    ("attention_weights", lambda q, k, causal=False: my_attention(q, k, False), "causal mask is missing"),
    ("attention_weights", lambda q, k, causal=False: my_attention(q, k, causal, mask_after=True), "after the softmax"),
    ("multi_head_attention", lambda *a, causal=False: my_mha(*a, causal=causal, scale=False), "1/sqrt(d_h)"),
    ("multi_head_attention", lambda *a, causal=False: my_mha(*a, causal=causal, value_bias=False), "value bias missing"),
    ("multi_head_attention", lambda *a, causal=False: my_mha(*a, causal=causal, dim=-2), "wrong axis"),
    ("multi_head_attention", lambda *a, causal=False: my_mha(*a, causal=False), "causal mask is missing"),
    ("layer_norm", lambda x, g, b, eps=1e-5: my_layer_norm(x, g, b, eps, unbiased=True), "biased"),
    ("layer_norm", lambda x, g, b, eps=1e-5: my_layer_norm(x, g, b, 0.0), "eps is missing"),
    ("layer_norm", lambda x, g, b, eps=1e-5: my_layer_norm(x, b, g, eps), "swapped"),
    ("feed_forward", lambda x, W1, b1, W2, b2: my_ffn(x, W1, b1, W2, b2, "tanh"), "tanh approximation"),
    ("feed_forward", lambda x, W1, b1, W2, b2: F.linear(torch.relu(F.linear(x, W1, b1)), W2, b2), "ReLU"),
    ("add_and_norm", lambda x, s, g, b, eps=1e-5: x + my_layer_norm(s, g, b, eps), "pre-LN order"),
    ("post_ln_layer", my_pre_ln, "post-LN vs pre-LN"),
    ("pre_ln_layer", my_post_ln, "post-LN vs pre-LN"),
]


@pytest.mark.parametrize("check,wrong,phrase", WRONG, ids=[f"{c}-{p}" for c, _, p in WRONG])
def test_wrong_implementations_fail_with_hint(data, capsys, check, wrong, phrase):
    fn = getattr(nb01, f"check_{check}")
    assert fn(wrong, data, strict=False) is False
    out = capsys.readouterr().out
    assert "\u2718" in out and phrase in out, out
    with pytest.raises(AssertionError):
        fn(wrong, data, strict=True)


def test_not_implemented_and_errors(data, capsys):
    def todo(*a, **k):
        raise NotImplementedError

    assert nb01.check_multi_head_attention(todo, data, strict=False) is False
    assert "not implemented" in capsys.readouterr().out

    def no_none_bias(x_q, x_kv, p, causal=False):
        k = x_kv @ p.W_k.T + p.b_k  # fails when b_k is None (Whisper)
        return k

    assert nb01.check_multi_head_attention(no_none_bias, data, strict=False) is False
    assert "b_k can be None" in capsys.readouterr().out


def test_per_head_identity_on_real_weights(data):
    """Concat(heads) W_o^T + b_o == sum_h head_h (W_o^h)^T + b_o on Whisper's real weights."""
    a = data.w_enc.self_attn
    z = data.w_enc.norm_attn(data.x_enc)
    out, A = L.multi_head_attention(z, z, a, return_weights=True)
    heads = A @ L.split_heads(L.linear(z, a.W_v, a.b_v), a.num_heads)
    per_head = L.per_head_outputs(heads, a.W_o)
    assert per_head.shape == (a.num_heads, z.shape[0], a.d_model)
    assert (per_head.sum(0) + a.b_o - out).abs().max() < 1e-5


# ---- the notebook's own (readable) solutions --------------------------------------------------
NAMES = ("attention_weights", "multi_head_attention", "layer_norm", "add_and_norm", "feed_forward",
         "post_ln_layer", "pre_ln_layer")


def test_notebook_solutions_pass_the_checks(data):
    """The collapsed solution cells of notebook 01, executed as the notebook does (after its
    imports of math and torch), pass every check strictly."""
    from _solutions import load_solutions

    ns = load_solutions("01", {"math": math, "torch": torch})
    for name in NAMES:
        assert getattr(nb01, f"check_{name}")(ns[f"{name}_solution"], data, strict=True), name


def test_notebook_solutions_are_written_from_the_equations():
    """No call into the library functions the exercises ask to rebuild (ctxmix_lite.layer,
    the check module's references, torch.nn.functional's ready-made layer norm / GELU / attention)."""
    from _solutions import solution_sources

    src = "\n".join(solution_sources("01"))
    assert len(solution_sources("01")) == len(NAMES)
    for banned in ("layer.", "nb01.", "L.", "F.", "functional", "scaled_dot_product", "nn."):
        assert banned not in src, banned
    assert src.count("# ") >= 2 * len(NAMES)  # the equations sit beside the lines


def test_checks_reject_a_wrong_notebook_solution(data, capsys):
    """The notebook's solutions with one deliberate bug each are rejected (a check that cannot
    fail is a defect)."""
    from _solutions import load_solutions

    ns = load_solutions("01", {"math": math, "torch": torch})
    # the transposed causal mask: rows still sum to 1, but queries see the future
    wrong_mask = lambda q, k, causal=False: (torch.softmax((q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(  # noqa: E731
        torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril(-1), float("-inf")), -1) if causal
        else ns["attention_weights_solution"](q, k))
    with pytest.raises(AssertionError, match="breaks a property"):
        nb01.check_attention_weights(wrong_mask, data, strict=True)
    # the unbiased variance in the notebook's layer norm
    ns["layer_norm_solution"] = lambda x, g, b, eps=1e-5: my_layer_norm(x, g, b, eps, unbiased=True)
    with pytest.raises(AssertionError, match="layer_norm"):
        nb01.check_layer_norm(ns["layer_norm_solution"], data, strict=True)
    # ... and the layers built on it inherit the bug (the solution cells look the name up at call time)
    with pytest.raises(AssertionError, match="pre_ln_layer"):
        nb01.check_pre_ln_layer(ns["pre_ln_layer_solution"], data, strict=True)


def test_attention_properties_admit_legitimate_variants(data):
    """Scaling q before the product (Whisper's code) instead of the scores, or masking with a large
    negative number instead of -inf: different float32 bits, both correct, both pass."""
    def q_scaled(q, k, causal=False):
        S = (q / math.sqrt(q.shape[-1])) @ k.transpose(-1, -2)
        if causal:
            S = S.masked_fill(torch.ones(S.shape[-2:], dtype=torch.bool).triu(1), torch.finfo(S.dtype).min)
        return torch.softmax(S, -1)

    assert nb01.check_attention_weights(q_scaled, data, strict=True)
