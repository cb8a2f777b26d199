"""Attention-Norm equals an explicit loop over heads, keys and queries (no Gram-matrix trick)."""
import dataclasses

import pytest
import torch

from _hand_captures import all_tiny_captures, real_capture
from ctxmix_lite.attention_norm import attention_norm


@pytest.fixture(scope="module")
def tiny():
    return all_tiny_captures(seed=1, final=False)


@pytest.fixture(params=["gram", "direct"])
def form(request, monkeypatch):
    """Both ways of computing eq. (2) -- Gram matrices (many rows) and the vectors (few rows) --
    forced in turn, whatever the number of rows."""
    from ctxmix_lite import attention_norm as an

    monkeypatch.setattr(an, "_use_direct", lambda n_rows, n_heads: request.param == "direct")
    return request.param


def explicit(cap, rows=None):
    """||sum_h alpha_ij^h v_j^h W_O^h|| with one vector per (i, j), heads added one by one."""
    H, Tq, Tk = cap.weights.shape
    dh = cap.values.shape[-1]
    rows = range(Tq) if rows is None else rows
    summed = torch.zeros(len(rows), Tk)
    per_head = torch.zeros(H, len(rows), Tk)
    for r, i in enumerate(rows):
        acc = torch.zeros(Tk, cap.W_O.shape[0], dtype=torch.float64)
        for h in range(H):
            W_h = cap.W_O[:, h * dh:(h + 1) * dh].double()  # the columns of out_proj reading head h
            f = cap.weights[h, i, :, None].double() * (cap.values[h].double() @ W_h.T)  # [Tk, D]
            per_head[h, r] = f.norm(dim=-1).float()
            acc += f
        summed[r] = acc.norm(dim=-1).float()
    return summed, per_head


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("name", ["whisper_encoder", "whisper_decoder", "whisper_cross", "w2v_postln", "w2v_stable"])
def test_matches_explicit_loop(tiny, name, form):
    cap = tiny[name]
    s, ph = explicit(cap)
    assert rel(attention_norm(cap), s) <= 1e-5
    assert rel(attention_norm(cap, per_head=True), ph) <= 1e-5
    rows = [3, 0, 7]
    assert rel(attention_norm(cap, rows=rows), s[rows]) <= 1e-5
    spans = [(0, 2), (3, 3), (5, 12)]
    got = attention_norm(cap, rows=rows, spans=spans)
    want = torch.stack([s[rows][:, f:l + 1].sum(-1) for f, l in spans], -1)  # mass over span frames
    assert rel(got, want) <= 1e-5


def test_output_bias_left_out_value_bias_in(tiny):
    cap = tiny["w2v_stable"]
    base = attention_norm(cap)
    # changing b_O does not change the measure
    moved = dataclasses.replace(cap, b_O=cap.b_O + 5.0)
    assert torch.equal(attention_norm(moved), base)
    # removing the value bias (a shift of every value vector) does
    shifted = dataclasses.replace(cap, values=cap.values - cap.values.mean(1, keepdim=True))
    assert rel(attention_norm(shifted), base) > 1e-2


def test_equal_value_norms_reduce_to_attention(tiny):
    """One head, every projected value of norm 1 -> Attention-Norm == attention weights."""
    cap = tiny["whisper_encoder"]
    H, Tq, Tk = cap.weights.shape
    dh = cap.values.shape[-1]
    one = dataclasses.replace(cap, weights=cap.weights[:1], values=cap.values[:1], W_O=cap.W_O[:, :dh])
    pv = one.projected_values()
    one = dataclasses.replace(one, values=one.values / pv.norm(dim=-1, keepdim=True))
    assert torch.allclose(attention_norm(one), one.weights[0], atol=1e-6)


def test_causal_exact_zero(tiny, form):
    cap = tiny["whisper_decoder"]
    m = attention_norm(cap)
    assert torch.all(torch.triu(m, 1) == 0) and torch.all(torch.diagonal(m) > 0)
    assert torch.all(torch.triu(attention_norm(cap, per_head=True), 1) == 0)


@pytest.mark.slow
@pytest.mark.parametrize("key", ["whisper-base trained", "XLSR-53 random (pre-LN)", "wav2vec2-base random (post-LN)"])
def test_real_models(key, french_clip, form):
    cap = real_capture(key, french_clip)
    for comp, layers in cap.components.items():
        for lc in (layers[0], layers[-1]):
            Tq = lc.weights.shape[1]
            rows = sorted({0, Tq // 3, Tq - 1})
            s, ph = explicit(lc, rows)
            assert rel(attention_norm(lc, rows=rows), s) <= 1e-5, (comp, lc.layer)
            assert rel(attention_norm(lc, rows=rows, per_head=True), ph) <= 1e-5
            if lc.causal:
                assert torch.all(torch.triu(attention_norm(lc), 1) == 0)


def test_cancelling_heads_recomputed_exactly(form):
    """Two heads sending (almost) opposite vectors: the float32 Gram form would lose the small
    remainder; such cells are recomputed from the vectors."""
    g = torch.Generator().manual_seed(0)
    H, T, dh, D = 2, 6, 4, 4
    W_O = torch.eye(D).repeat(1, H)  # [D, H*dh]: both heads write into the same space
    v0 = torch.randn(T, dh, generator=g) * 1e3
    values = torch.stack([v0, -v0 + 1e-2 * torch.randn(T, dh, generator=g)])
    weights = torch.full((H, T, T), 1.0 / T)
    cap = LayerCaptureLike(weights, values, W_O)
    s, ph = explicit(cap)
    got = attention_norm(cap)
    assert float(((got - s).abs() / s).max()) < 1e-5
    assert float(s.max()) < 1e-2 * float(ph.sum(0).max())  # the case really cancels


def LayerCaptureLike(weights, values, W_O):
    from ctxmix_lite.exercises.nb03 import as_capture

    return as_capture(weights, values, W_O)


def test_direct_form_key_chunks_and_choice(tiny, monkeypatch):
    """The direct form gives the same scores one key per chunk; few rows take it, many rows do not."""
    from ctxmix_lite import attention_norm as an

    cap = tiny["w2v_stable"]
    H, Tq, _ = cap.weights.shape
    rows = [3, 0, 7]
    s, _ = explicit(cap, rows)
    whole = attention_norm(cap, rows=rows)
    monkeypatch.setattr(an, "DIRECT_CHUNK_BYTES", 1)  # one key per chunk
    assert rel(attention_norm(cap, rows=rows), s) <= 1e-5
    assert torch.allclose(attention_norm(cap, rows=rows), whole, rtol=1e-6, atol=0)
    calls = []
    monkeypatch.setattr(an, "_direct_squares", lambda *a: calls.append("direct") or an._gram_squares(*a))
    attention_norm(cap, rows=rows)
    assert calls == ["direct"] and an._use_direct(len(rows), H) and not an._use_direct(4 * H, H)
