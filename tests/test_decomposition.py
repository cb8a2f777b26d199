"""ALTI: the per-token vectors reconstruct the attention-block output of the real modules."""
import pytest
import torch

from _hand_captures import all_tiny_captures, real_capture, real_model
from ctxmix_lite.decomposition import _layers, alti, alti_vectors, block_layer_norm, component_alti


def block_output_of_module(layer, lc):
    """The attention-block output recorded from the real layer (re-run with nothing zeroed).

    post-LN wav2vec2/HuBERT: output of ``layer.layer_norm`` = LN(x + Attn(x));
    pre-LN encoders: input of ``layer.final_layer_norm`` = x + Attn(LN(x));
    Whisper decoder self-attention: input of ``layer.encoder_attn_layer_norm``.
    """
    rec = {}
    if lc.component == "decoder":
        h = layer.encoder_attn_layer_norm.register_forward_pre_hook(lambda m, a: rec.setdefault("y", a[0]))
    elif hasattr(layer, "feed_forward") and "StableLayerNorm" not in type(layer).__name__:
        h = layer.layer_norm.register_forward_hook(lambda m, a, o: rec.setdefault("y", o))
    else:
        h = layer.final_layer_norm.register_forward_pre_hook(lambda m, a: rec.setdefault("y", a[0]))
    try:
        lc.rerun([])
    finally:
        h.remove()
    return rec["y"][0]


def post_ln(layer):
    return layer.layer_norm if (hasattr(layer, "feed_forward") and "StableLayerNorm" not in type(layer).__name__) else None


def check_reconstruction(lc, layer, rows=None):
    ln = post_ln(layer)
    T, bias = alti_vectors(lc, ln, rows=rows)
    y = block_output_of_module(layer, lc)
    y = y if rows is None else y[rows]
    rec = T.sum(1) + bias  # sum_j T_i(x_j) + bias_i
    err = float((rec - y).abs().max())
    assert err <= 1e-5 * max(1.0, float(y.abs().max())), err
    return T


@pytest.fixture(scope="module")
def tiny():
    return all_tiny_captures(seed=2, with_modules=True)


@pytest.mark.parametrize("name", ["whisper_encoder", "whisper_decoder", "w2v_postln", "w2v_stable"])
def test_reconstructs_block_output(tiny, name):
    caps, mods = tiny
    lc, layer = caps[name], mods[name]
    T = check_reconstruction(lc, layer)
    if lc.causal:
        assert torch.all(T.norm(dim=-1).triu(1) == 0)
    m = alti(lc, post_ln(layer))
    assert torch.allclose(m.sum(-1), torch.ones(m.shape[0]), atol=1e-5) and (m >= 0).all()
    if lc.causal:
        assert torch.all(m.triu(1) == 0)
    # the residual makes the diagonal (token itself) prominent
    assert float(torch.diagonal(m).mean()) > float(m.mean())
    rows = [2, 0, 5]
    assert torch.allclose(alti(lc, post_ln(layer), rows=rows), m[rows], atol=1e-6)
    nrm = alti(lc, post_ln(layer), score="norm", normalize=False)
    assert torch.allclose(nrm, alti_vectors(lc, post_ln(layer))[0].norm(dim=-1), atol=1e-6)


def test_wrong_layer_norm_breaks_reconstruction(tiny):
    """Mutation check: treating a post-LN block as pre-LN must fail the reconstruction."""
    caps, mods = tiny
    lc, layer = caps["w2v_postln"], mods["w2v_postln"]
    T, bias = alti_vectors(lc, None)
    y = block_output_of_module(layer, lc)
    assert float((T.sum(1) + bias - y).abs().max()) > 1e-2


def test_cross_attention_refused(tiny):
    caps, _ = tiny
    with pytest.raises(ValueError, match="self-attention"):
        alti(caps["whisper_cross"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "key", ["whisper-base trained", "wav2vec2-base random (post-LN)", "XLSR-53 random (pre-LN)", "HuBERT-base random (post-LN)"]
)
def test_real_models_reconstruct(key, french_clip):
    cap = real_capture(key, french_clip)
    model, _ = real_model(key)
    for comp in [c for c in ("encoder", "decoder") if c in cap.components]:
        layers, is_post = _layers(model, comp)
        assert is_post == (key.endswith("(post-LN)"))
        for lc in cap[comp]:
            rows = None if lc.weights.shape[1] <= 300 else [0, 40, 100, 1499]
            check_reconstruction(lc, layers[lc.layer], rows=rows)
            assert (block_layer_norm(model, comp, lc.layer) is not None) == is_post
        if comp == "decoder":
            m = component_alti(model, cap, comp)
            assert m.shape[0] == len(cap[comp]) and torch.all(m.triu(1) == 0)


def test_key_subset_equals_columns_of_the_full_matrix(tiny):
    caps, mods = tiny
    for name in ("whisper_encoder", "w2v_postln", "whisper_decoder"):
        lc, layer = caps[name], mods[name]
        full = alti(lc, post_ln(layer), normalize=False)
        keys = [0, 3, 4, 9, 15]
        sub = alti(lc, post_ln(layer), keys=keys, normalize=False)
        assert torch.allclose(sub, full[:, keys], atol=1e-6)
        rows = [4, 9]
        assert torch.allclose(alti(lc, post_ln(layer), rows=rows, keys=keys), 
                              full[rows][:, keys] / full[rows][:, keys].sum(-1, keepdim=True), atol=1e-6)
