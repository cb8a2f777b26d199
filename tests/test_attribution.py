"""Tests of ctxmix_lite.attribution: gradients against finite differences, integrated-gradients
completeness, the value-zeroing rollout's mass, word pooling, blank-out and decoder token
replacement (the real trained Whisper-base for the behavioural checks)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ctxmix_lite import attribution as A

TEXT = "Elle a perdu les livres dans le train."


@pytest.fixture(scope="module")
def item():
    from ctxmix_lite import synth

    try:
        s = synth.synthesize(TEXT, voice="mb-fr1", rate=130)
    except Exception as err:  # pragma: no cover
        pytest.skip(f"synthesiser unavailable: {err}")
    return s.audio, s.words


@pytest.fixture(scope="module")
def tiny():
    from ctxmix_lite.models import load_model

    return load_model("openai/whisper-tiny", pretrained=False, seed=0,
                      config_overrides=dict(encoder_layers=2, decoder_layers=2, d_model=64,
                                            encoder_attention_heads=2, decoder_attention_heads=2,
                                            encoder_ffn_dim=128, decoder_ffn_dim=128))


def _ids(proc, text=TEXT):
    from ctxmix_lite.capture import whisper_prefix_ids

    return whisper_prefix_ids(proc) + list(proc.tokenizer(" " + text, add_special_tokens=False).input_ids)


def test_target_positions_and_log_prob_match_a_manual_softmax(tiny, item):
    model, proc = tiny
    audio, al = item
    ids = _ids(proc)
    pos = A.target_positions(proc, ids, al, 4)
    assert proc.tokenizer.decode([ids[p] for p in pos]).strip() == "livres"
    x = A._features(proc, audio)
    with torch.no_grad():
        lp = A.target_log_prob(model, x, ids, pos)[0]
        logits = model(input_features=x, decoder_input_ids=torch.tensor([ids])).logits[0]
    manual = sum(torch.log_softmax(logits[p - 1], -1)[ids[p]] for p in pos)
    torch.testing.assert_close(lp, manual, atol=1e-4, rtol=1e-5)
    assert A.target_probability(model, proc, audio, ids, pos) == pytest.approx(float(manual.exp()), rel=1e-4)


def test_gradient_matches_finite_differences(tiny, item):
    """<grad f, v> against (f(x + h v) - f(x - h v)) / 2h for a random direction v."""
    model, proc = tiny
    audio, al = item
    ids = _ids(proc)
    pos = A.target_positions(proc, ids, al, 4)
    gx = A.gradient_x_input(model, proc, audio, ids, pos)
    x = A._features(proc, audio)
    grad = torch.as_tensor(gx.extra["per_mel"]) / x[0]  # per_mel = g * x
    v = torch.randn_like(x[0], generator=torch.Generator().manual_seed(0)) * (x[0].abs() > 1e-3)
    h = 1e-2
    with torch.no_grad():
        fp = A.target_log_prob(model, x + h * v, ids, pos).exp()[0]
        fm = A.target_log_prob(model, x - h * v, ids, pos).exp()[0]
    fd = float((fp - fm) / (2 * h))
    an = float((grad * v)[x[0].abs() > 1e-3].sum())
    assert an == pytest.approx(fd, rel=0.05, abs=1e-3 * abs(gx.value))
    assert gx.scores.shape == (3000,) and gx.times[1] == pytest.approx(0.01)


def test_integrated_gradients_completeness(tiny, item):
    model, proc = tiny
    audio, al = item
    ids = _ids(proc)
    pos = A.target_positions(proc, ids, al, 4)
    ig = A.integrated_gradients(model, proc, audio, ids, pos, steps=32, batch_size=8)
    total = ig.value - ig.extra["baseline_value"]
    assert abs(ig.extra["completeness_gap"]) < 0.05 * abs(total) + 1e-9
    np.testing.assert_allclose(ig.scores.sum(), total + ig.extra["completeness_gap"], rtol=1e-4)


def test_vz_rollout_is_a_distribution_over_the_clip(tiny, item):
    model, proc = tiny
    audio, al = item
    ids = _ids(proc)
    pos = A.target_positions(proc, ids, al, 4)
    vz = A.vz_rollout(model, proc, audio, ids, pos, chunk_frames=4)
    assert (vz.scores >= 0).all()
    assert vz.scores.sum() == pytest.approx(1.0, abs=1e-5)  # rolled-out rows and cross rows sum to 1
    assert vz.times[-1] < len(audio) / 16000 + 0.08  # speech frames only, no padding
    np.testing.assert_allclose(vz.extra["encoder_rollout"].sum(-1), 1.0, atol=1e-5)
    # the encoder part is the authors' value-zeroing rollout (res=False): a plain product of the
    # row-normalised layer matrices, written out here directly
    E = vz.extra["encoder_layers"].astype(np.float64)
    E = E / E.sum(-1, keepdims=True)
    R = E[0]
    for l in range(1, len(E)):
        R = E[l] @ R
    np.testing.assert_allclose(vz.extra["encoder_rollout"], R, atol=1e-5)
    np.testing.assert_allclose(vz.scores, vz.extra["cross"] @ vz.extra["encoder_rollout"], atol=1e-6)


def test_faithfulness_reports_how_many_words_each_correlation_uses():
    import pandas as pd

    dele = pd.DataFrame(dict(drop=[0.5, 0.1, 0.3, 0.9, 0.0]))
    f = A.faithfulness({"m": [5.0, 1.0, 3.0, 9.0, 0.0]}, dele, exclude=[3])
    assert int(f["n_words"].iloc[0]) == 4
    assert f["spearman"].iloc[0] == pytest.approx(1.0)
    assert bool(f["same_top_word"].iloc[0])


def test_word_scores_sum_over_spans():
    attr = A.Attribution("x", np.arange(10, dtype=float), np.arange(10) * 0.1, 0.1, 1.0)
    al = [dict(start=0.0, end=0.3, word="a"), dict(start=0.3, end=0.55, word="b"), dict(start=0.55, end=1.0, word="c")]
    np.testing.assert_allclose(A.word_scores(attr, al), [0 + 1 + 2, 3 + 4, 5 + 6 + 7 + 8 + 9])
    np.testing.assert_allclose(A.word_scores(A.Attribution("x", -np.ones(10), attr.times, 0.1, 1.0), al, absolute=True), [3, 2, 5])


def test_flip_number():
    assert A.flip_number("les") == "le" and A.flip_number("Les") == "Le"
    assert A.flip_number("elle") == "elles" and A.flip_number("ils") == "il"
    assert A.flip_number("les", partner="la") == "la"
    with pytest.raises(ValueError, match="cue"):
        A.flip_number("maison")


def test_replace_decoder_word(tiny, item):
    _, proc = tiny
    _, al = item
    ids = _ids(proc)
    new, pos = A.replace_decoder_word(proc, ids, al, 3, "le")
    assert proc.tokenizer.decode(new[4:]).strip() == "Elle a perdu le livres dans le train."
    assert proc.tokenizer.decode([new[p] for p in pos[4]]).strip() == "livres"
    with pytest.raises(ValueError, match="not in the transcript"):
        A.replace_decoder_word(proc, _ids(proc, "Elle a perdu"), al, 3, "le")


def test_blank_input_validation(item):
    audio, _ = item
    out = A.blank_spans(audio, [(0.1, 0.2)])
    assert np.all(out[1600:3200] == 0) and np.array_equal(out[:1600], audio[:1600])
    with pytest.raises(ValueError, match="no sample"):
        A.blank_spans(audio, [(5.0, 6.0)])


def test_wav2vec2_is_refused():
    from ctxmix_lite.models import load_model

    model, proc = load_model("facebook/wav2vec2-base", pretrained=False,
                             config_overrides=dict(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64))
    with pytest.raises(ValueError, match="decoder"):
        A.target_probability(model, proc, np.zeros(16000, dtype=np.float32), [1, 2], [1])


@pytest.mark.slow
def test_blank_out_and_token_replacement_change_the_probability(whisper_base, item):
    """Trained Whisper-base: silencing the target's own audio, or replacing the cue token in the
    teacher-forced transcript, lowers p(target); silencing nothing leaves it unchanged."""
    model, proc = whisper_base
    audio, al = item
    ids = _ids(proc)
    pos = A.target_positions(proc, ids, al, 4)
    tgt = A.blank_out(model, proc, audio, ids, pos, [(al[4]["start"], al[4]["end"])])
    assert tgt["p"] > 0.5  # the model is confident on the clean clip
    assert tgt["drop"] > 0.3
    same = A.target_probability(model, proc, audio, ids, pos)
    assert same == pytest.approx(tgt["p"], rel=1e-6)
    rep = A.cue_token_replacement(model, proc, audio, ids, al, cue_indices=[3], target_index=4, replacements=["le"])
    assert rep["text"].startswith("Elle a perdu le livres")
    assert rep["drop"] > 0.3  # the decoder reads number from the cue token
    # the options object is the same call as its fields; a missing target or a wrong keyword is refused
    assert A.cue_token_replacement(model, proc, audio, ids, al, options=A.CueReplacement([3], 4, ["le"])) == rep
    with pytest.raises(TypeError, match="needs target_index"):
        A.cue_token_replacement(model, proc, audio, ids, al, cue_indices=[3], replacements=["le"])
    with pytest.raises(ValueError, match="2 replacements for 1 cue"):
        A.cue_token_replacement(model, proc, audio, ids, al, cue_indices=[3], target_index=4, replacements=["le", "x"])
    with pytest.raises(TypeError, match=r"cue_token_replacement\(\) got unexpected keyword argument\(s\) \['cues'\]"):
        A.cue_token_replacement(model, proc, audio, ids, al, cues=[3])


def test_settings_objects_equal_keywords(tiny, item):
    """Issue 13: each attribution's settings object is the same call as its fields as keywords."""
    model, proc = tiny
    audio, al = item
    ids = _ids(proc)
    pos = A.target_positions(proc, ids, al, 4)
    a = A.integrated_gradients(model, proc, audio, ids, pos, steps=4, batch_size=4, baseline="zeros")
    b = A.integrated_gradients(model, proc, audio, ids, pos, options=A.IGSettings(steps=4, batch_size=4, baseline="zeros"))
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.extra["steps"] == 4 and a.value == b.value
    a = A.vz_rollout(model, proc, audio, ids, pos, chunk_frames=16, residual=0.5)
    b = A.vz_rollout(model, proc, audio, ids, pos, options=A.RolloutSettings(chunk_frames=16, residual=0.5))
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.extra["chunk_frames"] == 16 and a.extra["residual"] == 0.5
    a = A.word_deletion(model, proc, audio, al, ids, pos, fill="noise")
    b = A.word_deletion(model, proc, audio, al, ids, pos, options=A.DeletionSettings(fill="noise"))
    assert a.equals(b) and not a.equals(A.word_deletion(model, proc, audio, al, ids, pos))


@pytest.mark.parametrize("fn, bad", [("integrated_gradients", "step"), ("vz_rollout", "chunk"),
                                     ("word_deletion", "fil")])
def test_unknown_attribution_setting_is_a_type_error_naming_the_function(fn, bad):
    args = (None, None, np.zeros(1600, np.float32), [1], [0]) if fn != "word_deletion" else (
        None, None, np.zeros(1600, np.float32), [], [1], [0])
    with pytest.raises(TypeError, match=rf"{fn}\(\) got unexpected keyword argument\(s\) \['{bad}'\]"):
        getattr(A, fn)(*args, **{bad: 1})


def test_example_settings_objects_equal_keywords(tiny, item):
    """analyse_example / compute_examples (notebook 07): the settings object is the same call as its
    fields; compute_examples passes the per-example fields on; unknown keywords are refused."""
    from ctxmix_lite import attribution_examples as AE

    model, proc = tiny
    audio, al = item
    it = dict(item_id="a0", audio=dict(array=audio, sampling_rate=16000, path=""), transcription=TEXT, alignment=al,
              cue_index=3, target_index=4, target_index_2=-1, template="Det_Noun", label="plural")
    tids = _ids(proc)[4:]
    kw = dict(methods=("gxi", "ig"), ig_steps=2, with_deletion=False, with_interventions=False)
    a = AE.analyse_example(model, proc, it, 0, "k0", tids, **kw)
    b = AE.analyse_example(model, proc, it, 0, "k0", tids, options=AE.ExampleSettings(**kw))
    assert set(a) == set(b) and "vz" not in a and "deletion" not in a and a["ig"].extra["steps"] == 2
    np.testing.assert_array_equal(a["ig"].scores, b["ig"].scores)
    # compute_examples: the transcripts given (no transcription), the example settings passed on
    from ctxmix_lite.study import item_key

    tr = {item_key(it): {"text": TEXT, "ids": tids}}
    c = AE.compute_examples([it], model, proc, transcripts=tr, n_examples=1, progress=False, **kw)
    d = AE.compute_examples([it], model, proc, transcripts=tr,
                            options=AE.ExamplesSettings(n_examples=1, progress=False, **kw))
    assert len(c) == len(d) == 1 and c[0]["ig"].extra["steps"] == 2 and "deletion" not in c[0]
    np.testing.assert_array_equal(c[0]["ig"].scores, d[0]["ig"].scores)
    np.testing.assert_array_equal(c[0]["ig"].scores, a["ig"].scores)
    for fn, args in (("analyse_example", (model, proc, it, 0, "k0", tids)), ("compute_examples", ([it], model, proc))):
        with pytest.raises(TypeError, match=rf"{fn}\(\) got unexpected keyword argument\(s\) \['ig_step'\]"):
            getattr(AE, fn)(*args, ig_step=2)
