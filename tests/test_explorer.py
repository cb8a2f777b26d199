"""Tests of notebook 05's explorer (ctxmix_lite.explorer): every option renders headlessly, the word
view's target row is the study's target row, the widget builds on the installed ipywidgets."""
from __future__ import annotations

import numpy as np
import pytest

from ctxmix_lite import study
from ctxmix_lite.explorer import Explorer

SENTS = [("Elle a perdu les livres dans le train.", 3, 4, -1, "Det_Noun", "plural"),
         ("Les enfants jouent dans le jardin.", 0, 1, 2, "Det_Noun_Verb", "plural")]


@pytest.fixture(scope="module")
def items():
    from ctxmix_lite import synth

    out = []
    for k, (text, c, t, t2, tpl, lab) in enumerate(SENTS):
        try:
            s = synth.synthesize(text, voice="mb-fr1", rate=140)
        except Exception as err:  # pragma: no cover
            pytest.skip(f"synthesiser unavailable: {err}")
        out.append(dict(item_id=f"e{k}", audio=dict(array=s.audio, sampling_rate=s.sampling_rate, path=""),
                        transcription=text, alignment=s.words, cue_index=c, target_index=t, target_index_2=t2,
                        template=tpl, label=lab, voice="mb-fr1", pair_id=f"p{k}"))
    return out


@pytest.fixture(scope="module")
def models():
    from ctxmix_lite.models import load_model

    small = dict(encoder_layers=2, decoder_layers=2, d_model=64, encoder_attention_heads=2,
                 decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128)
    w = load_model("openai/whisper-tiny", pretrained=False, seed=0, config_overrides=small)
    x = load_model("facebook/wav2vec2-large-xlsr-53", pretrained=False, seed=0,
                   config_overrides=dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128))
    return {"whisper-tiny (random)": w, "xlsr-53 (random)": x}


def _explorer(items, models, **kw):
    from ctxmix_lite.capture import whisper_prefix_ids

    proc = models["whisper-tiny (random)"][1]
    ids = {k: whisper_prefix_ids(proc) + list(proc.tokenizer(" " + it["transcription"], add_special_tokens=False).input_ids)
           for k, it in enumerate(items)}
    return Explorer(items, models, transcripts={"whisper-tiny (random)": ids}, **kw)


def test_every_option_renders_headlessly(items, models):
    ex = _explorer(items, models)
    n = ex.run_all(mode="each")
    # base + each other value of every control: items, models, components, layers, measures
    assert n == 1 + (len(items) - 1) + (len(models) - 1) + 2 + 1 + 2


@pytest.mark.slow
def test_all_combinations_for_one_item(items, models):
    ex = _explorer(items, models)
    import matplotlib.pyplot as plt

    for model in models:
        for comp in ex.components(model):
            for layer in range(ex.n_layers(model)):
                for m in study.MEASURES:
                    fig = ex.show(item=1, model=model, component=comp, layer=layer, measure=m, audio=False)
                    assert fig.axes
                    plt.close(fig)
                    v = ex.view(1, model, comp, layer, m)
                    s = v.word.sum(-1)
                    if comp == "decoder":  # the paper's rows: a share of all decoder positions
                        assert np.all(s <= 1 + 1e-6)
                    else:
                        assert np.all((np.abs(s - 1) < 1e-5) | (s == 0))
                    assert np.all(v.word >= 0) and np.all(v.frame >= -1e-12)
                    fs = v.frame.sum(-1)
                    assert np.all((np.abs(fs - 1) < 1e-5) | (fs == 0))


@pytest.mark.parametrize("decoder", ["paper", "word_pooled", "paper+skip_special_tokens"])
def test_word_view_target_row_is_the_study_row(items, models, decoder):
    """The explorer's word view is the study's scoring: its target row equals item_distributions'
    row for every component, measure and decoder definition, and its cue cell the cue contribution."""
    ex = _explorer(items, models, decoder=decoder)
    model, proc = models["whisper-tiny (random)"]
    it = items[0]
    res = study.item_distributions(model, proc, it, decoder_ids=ex.decoder_ids("whisper-tiny (random)", 0))
    for comp in ("encoder", "decoder", "cross"):
        key = study.DECODER_COMPONENTS[decoder] if comp == "decoder" else comp
        for m in study.MEASURES:
            for layer in range(2):
                v = ex.view(0, "whisper-tiny (random)", comp, layer, m)
                np.testing.assert_allclose(v.word[4], res["dist"][("main", key, m)][layer], atol=2e-5,
                                           err_msg=f"{comp} {m} layer {layer}")
                assert v.cue_contribution == pytest.approx(float(res["dist"][("main", key, m)][layer][3]), abs=2e-5)
    if decoder == "paper":  # the paper's rows share mass with the prompt: not the word-pooled rows
        other = res["dist"][("main", study.DECODER_COMPONENTS["word_pooled"], "attention")][1]
        assert not np.allclose(ex.view(0, "whisper-tiny (random)", "decoder", 1, "attention").word[4], other, atol=1e-3)


def test_view_options_are_checked(items, models):
    from ctxmix_lite.explorer import ViewOptions, layer_view

    with pytest.raises(ValueError, match="unknown decoder definition"):
        ViewOptions(decoder="pooled")
    with pytest.raises(ValueError, match="vz_chunk"):
        Explorer(items, models, vz_chunk=0)
    ex = _explorer(items, models)
    caps = ex.captures("whisper-tiny (random)", 0)
    with pytest.raises(TypeError, match=r"layer_view\(\) got unexpected keyword"):
        layer_view(caps, items[0], "encoder", 0, "attention", vz_chunks=3)
    a = layer_view(caps, items[0], "encoder", 0, "value_zeroing", vz_chunk=3)
    b = layer_view(caps, items[0], "encoder", 0, "value_zeroing", options=ViewOptions(vz_chunk=3))
    assert np.array_equal(a.frame, b.frame) and a.frame.shape[1] < ex.view(0, "whisper-tiny (random)", "encoder", 0,
                                                                           "value_zeroing").frame.shape[1]


def test_widget_builds_and_redraws(items, models):
    pytest.importorskip("ipywidgets")
    ex = _explorer(items, models)
    w = ex.widget(draw=False)
    assert set(w.controls) == {"item", "model", "component", "layer", "measure"}
    w.controls["measure"].value = "attention"  # an observe() callback redraws into the Output
    w.controls["component"].value = "cross"
    assert w.values()["component"] == "cross"


def test_bad_requests_raise(items, models):
    ex = _explorer(items, models)
    with pytest.raises(ValueError, match="component"):
        ex.view(0, "xlsr-53 (random)", "decoder", 0, "attention")
    with pytest.raises(ValueError, match="layer"):
        ex.view(0, "whisper-tiny (random)", "encoder", 5, "attention")
    with pytest.raises(ValueError, match="measure"):
        ex.view(0, "whisper-tiny (random)", "encoder", 0, "rollout")
    with pytest.raises(ValueError, match="at least one"):
        Explorer([], models)


def test_a_transcript_without_the_cue_shows_a_message_not_a_traceback(items, models):
    """The decoder reads the model's transcription; when it lacks the cue or the target, the view
    raises (no numbers for it) and the drawn explorer says why instead of failing."""
    import matplotlib.pyplot as plt

    from ctxmix_lite.capture import whisper_prefix_ids

    proc = models["whisper-tiny (random)"][1]
    wrong = "Elle a perdu un chat dans le train."  # neither "les" nor "livres"
    ids = {0: whisper_prefix_ids(proc) + list(proc.tokenizer(" " + wrong, add_special_tokens=False).input_ids)}
    ex = Explorer(items[:1], models, transcripts={"whisper-tiny (random)": ids})
    with pytest.raises(ValueError, match="cue or target"):
        ex.view(0, "whisper-tiny (random)", "decoder", 0, "attention")
    fig = ex.show(0, "whisper-tiny (random)", "decoder", 0, "attention", audio=False)
    texts = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert "No decoder view for this item" in texts and "cue or target" in texts
    plt.close(fig)
    fig = ex.show(0, "whisper-tiny (random)", "encoder", 0, "attention", audio=False)  # the encoder still works
    assert len(fig.axes) >= 3
    plt.close(fig)
