"""capture(): every layer's internals, checked against the model's own outputs and re-runs."""
import numpy as np
import pytest
import torch

from ctxmix_lite.audio import AudioError
from ctxmix_lite.capture import capture, transcribe
from ctxmix_lite.models import AttentionImplementationError, load_model

ATOL = 1e-5


def assert_close(a, b, what=""):
    """float32 agreement: max |a - b| <= 1e-5 relative to the scale of b (at least 1e-5 absolute)."""
    err = float((a - b).abs().max())
    tol = ATOL * max(1.0, float(b.abs().max()))
    assert err <= tol, f"{what}: max abs diff {err:.2e} > {tol:.2e}"

SMALL = {
    "wav2vec2-base (post-LN)": ("facebook/wav2vec2-base", {"num_hidden_layers": 2}),
    "XLSR-53 (pre-LN, stable)": ("facebook/wav2vec2-large-xlsr-53", {"num_hidden_layers": 2}),
    "HuBERT base (post-LN)": ("facebook/hubert-base-ls960", {"num_hidden_layers": 2}),
    "Whisper-base random": ("openai/whisper-base", {"encoder_layers": 2, "decoder_layers": 2}),
}


@pytest.fixture(scope="module", params=list(SMALL))
def random_capture(request, french_clip):
    name, ov = SMALL[request.param]
    model, proc = load_model(name, pretrained=False, seed=0, config_overrides=ov)
    kw = {"transcription": "Elle a perdu les livres dans le train."} if "whisper" in name else {}
    return model, proc, capture(model, proc, french_clip, sampling_rate=16000, **kw)


@pytest.fixture(scope="module")
def trained_capture(whisper_base, french_clip):
    model, proc = whisper_base
    return model, proc, capture(model, proc, french_clip, sampling_rate=16000)


def _all_layers(cap):
    return [lc for layers in cap.components.values() for lc in layers]


def _check_layer_consistency(lc):
    H, Tq, Tk = lc.weights.shape
    assert lc.values.shape[:2] == (H, Tk)
    assert torch.allclose(lc.weights.sum(-1), torch.ones(H, Tq), atol=1e-5)
    # independent recomposition of the attention block: sum_h A_h V_h W_O^h + b_O == attn_out
    z = torch.einsum("hqk,hkd->qhd", lc.weights, lc.values).reshape(Tq, -1)
    recomposed = z @ lc.W_O.T + (lc.b_O if lc.b_O is not None else 0)
    assert (recomposed - lc.attn_out).abs().max() < 1e-4
    # post() reproduces the layer output, rerun() with nothing zeroed too
    assert_close(lc.post(lc.resid, lc.attn_out), lc.out, "post")
    assert_close(lc.rerun([]), lc.out, "rerun")
    # the feed-forward parts (factored fast value zeroing) compute the same rest of the layer;
    # every block except the decoder self-attention (a cross-attention follows it) has them
    assert (lc.ffn is None) == (lc.component == "decoder"), (lc.component, lc.layer)
    if lc.ffn is not None:
        with torch.no_grad():
            assert_close(lc.ffn(lc.resid, lc.attn_out), lc.out, "ffn parts")
    if lc.causal:
        assert torch.all(torch.triu(lc.weights, diagonal=1) == 0)


def _check_zeroing_identity(lc, js):
    pv = lc.projected_values()
    for j in js:
        delta = torch.einsum("hi,hd->id", lc.weights[:, :, j], pv[:, j])
        fast = lc.post(lc.resid, lc.attn_out - delta)
        ref = lc.rerun([j])
        assert_close(fast, ref, f"{lc.component} layer {lc.layer} zeroing {j}")
        assert (ref - lc.out).abs().max() > 1e-6  # zeroing really changed something


def test_random_models(random_capture):
    model, proc, cap = random_capture
    for lc in _all_layers(cap):
        _check_layer_consistency(lc)
        _check_zeroing_identity(lc, [0, 3])


def test_outputs_match_the_model_hidden_states(random_capture, french_clip):
    model, proc, cap = random_capture
    if cap.family != "wav2vec2":
        pytest.skip("checked for Whisper in test_whisper_outputs")
    fe = getattr(proc, "feature_extractor", proc)
    inp = fe(french_clip, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        out = model(**inp, output_hidden_states=True)
    hs = out.hidden_states
    enc = cap["encoder"]
    for lc in enc[:-1]:
        assert (lc.out - hs[lc.layer + 1][0]).abs().max() < ATOL
    assert (enc[-1].out - out.last_hidden_state[0]).abs().max() < ATOL
    assert enc[-1].final_norm_applied == bool(model.config.do_stable_layer_norm)


def test_whisper_outputs(trained_capture, french_clip):
    model, proc, cap = trained_capture
    feats = proc.feature_extractor(french_clip, sampling_rate=16000, return_tensors="pt").input_features
    ids = torch.tensor([cap.decoder_tokens])
    with torch.no_grad():
        out = model.model(input_features=feats, decoder_input_ids=ids, output_hidden_states=True, use_cache=False)
    for lc in cap["encoder"][:-1]:
        assert (lc.out - out.encoder_hidden_states[lc.layer + 1][0]).abs().max() < 1e-4
    assert (cap["encoder"][-1].out - out.encoder_last_hidden_state[0]).abs().max() < 1e-4
    assert (cap["decoder"][-1].out - out.last_hidden_state[0]).abs().max() < 1e-4
    assert (cap["cross"][-1].out - out.last_hidden_state[0]).abs().max() < 1e-4


def test_trained_whisper_all_components(trained_capture):
    model, proc, cap = trained_capture
    assert set(cap.components) == {"encoder", "decoder", "cross"}
    assert cap.n_frames == 1500 and cap.window == 30.0
    assert cap.prefix_length == 4
    assert cap.decoder_token_strings[:4] == ["<|startoftranscript|>", "<|fr|>", "<|transcribe|>", "<|notimestamps|>"]
    assert "livres" in cap.transcription.lower()  # the model's own transcription was used
    for lc in _all_layers(cap):
        _check_layer_consistency(lc)
    for comp in ("encoder", "decoder", "cross"):
        _check_zeroing_identity(cap[comp][-1], [5])


def test_teacher_forcing_on_given_text(whisper_base, french_clip):
    model, proc = whisper_base
    cap = capture(model, proc, french_clip, sampling_rate=16000, transcription="Il aime le train.", components=["decoder"])
    assert "".join(cap.decoder_token_strings[4:]).strip() == "Il aime le train."
    assert list(cap.components) == ["decoder"]


def test_transcribe(whisper_base, french_clip):
    text, ids = transcribe(*whisper_base, french_clip, sampling_rate=16000)
    assert "livres" in text.lower() and all(i < 50257 for i in ids)


def test_sdpa_is_refused(french_clip):
    m, p = load_model("facebook/wav2vec2-base", pretrained=False, config_overrides={"num_hidden_layers": 1})
    m.set_attn_implementation("sdpa")
    with pytest.raises(AttentionImplementationError):
        capture(m, p, french_clip, sampling_rate=16000)


def test_training_mode_is_refused(french_clip):
    m, p = load_model("facebook/wav2vec2-base", pretrained=False, config_overrides={"num_hidden_layers": 1})
    m.train()
    with pytest.raises(ValueError, match="training mode"):
        capture(m, p, french_clip, sampling_rate=16000)


def test_unknown_component(french_clip):
    m, p = load_model("facebook/wav2vec2-base", pretrained=False, config_overrides={"num_hidden_layers": 1})
    with pytest.raises(ValueError, match="unknown component"):
        capture(m, p, french_clip, sampling_rate=16000, components=["decoder"])


def test_whisper_refuses_long_clips(french_clip):
    m, p = load_model("openai/whisper-base", pretrained=False, config_overrides={"encoder_layers": 1, "decoder_layers": 1})
    long = np.tile(french_clip, int(31 * 16000 / len(french_clip)) + 1)
    with pytest.raises(AudioError, match="at most 30"):
        capture(m, p, long, sampling_rate=16000, components=["encoder"])


def test_wav2vec2_frames_follow_the_clip(random_capture, french_clip):
    model, proc, cap = random_capture
    if cap.family != "wav2vec2":
        pytest.skip("wav2vec2 only")
    assert cap.window == pytest.approx(len(french_clip) / 16000)
    assert cap.n_frames == cap["encoder"][0].weights.shape[-1]


def test_capture_options_object_equals_keywords(french_clip):
    """capture's settings (CaptureOptions) as an object, a dict or keywords: the same capture;
    an unknown keyword is a TypeError naming capture(), and settings are keyword-only."""
    from ctxmix_lite.capture import CaptureOptions

    model, proc = load_model("openai/whisper-base", pretrained=False, seed=0,
                             config_overrides={"encoder_layers": 1, "decoder_layers": 1})
    ids = [50258, 50265, 50359, 50363, 1, 2, 3]
    o = CaptureOptions(components=["encoder", "cross"], language="fr", sampling_rate=16000)
    caps = [capture(model, proc, french_clip, decoder_input_ids=ids, options=o),
            capture(model, proc, french_clip, decoder_input_ids=ids, options=dict(components=["encoder", "cross"],
                                                                                 sampling_rate=16000)),
            capture(model, proc, french_clip, decoder_input_ids=ids, components=["encoder", "cross"], language="fr",
                    sampling_rate=16000)]
    for cap in caps[1:]:
        assert sorted(cap.components) == ["cross", "encoder"] and cap.decoder_tokens == caps[0].decoder_tokens
        for comp in cap.components:
            for a, b in zip(caps[0][comp], cap[comp]):
                assert torch.equal(a.weights, b.weights) and torch.equal(a.out, b.out)
    # keywords override the object's fields
    enc = capture(model, proc, french_clip, options=o, components="encoder")
    assert list(enc.components) == ["encoder"]
    with pytest.raises(TypeError, match=r"capture\(\) got unexpected keyword.*'sample_rate'.*'sampling_rate'"):
        capture(model, proc, french_clip, sample_rate=16000)
    with pytest.raises(TypeError):
        capture(model, proc, french_clip, None, ids, ["encoder"])  # a setting given by position
    assert CaptureOptions() == CaptureOptions(components=None, language="fr", task="transcribe", sampling_rate=None)
