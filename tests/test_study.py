"""Tests of the homophony study pipeline (ctxmix_lite.study).

Independent formulations: the rows-only Whisper pass is compared with the lead's full eager
capture; the study's word-level target rows are recomputed from *full* frame/token matrices with
``pooling.word_level`` and with value zeroing's *reference* loop (the real layer re-run per word);
the pipeline itself runs on a handful of synthetic items for every component and measure.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ctxmix_lite import study

SENTS = [  # text, cue, target, target_2, template, label
    ("Elle a perdu les livres dans le train.", 3, 4, -1, "Det_Noun", "plural"),
    ("Les enfants jouent dans le jardin.", 0, 1, 2, "Det_Noun_Verb", "plural"),
    ("Ils aiment la musique.", 0, 1, -1, "Pronoun_Verb", "plural"),
]


def _item(k, voice="mb-fr1", rate=130):
    from ctxmix_lite import synth

    text, c, t, t2, tpl, lab = SENTS[k]
    try:
        s = synth.synthesize(text, voice=voice, rate=rate)
    except Exception as err:  # pragma: no cover - depends on the machine
        pytest.skip(f"synthesiser unavailable: {err}")
    return dict(item_id=f"t{k}", audio=dict(array=s.audio, sampling_rate=s.sampling_rate, path=""),
                transcription=text, alignment=s.words, cue_index=c, target_index=t, target_index_2=t2,
                template=tpl, label=lab, voice=voice, pair_id=f"p{k}")


@pytest.fixture(scope="module")
def items():
    return [_item(k) for k in range(len(SENTS))]


@pytest.fixture(scope="module")
def tiny():
    """A randomly initialised Whisper-tiny (4 + 4 layers, d=384) with the offline processor."""
    from ctxmix_lite.models import load_model

    return load_model("openai/whisper-tiny", pretrained=False, seed=0)


def _dec_ids(processor, text):
    from ctxmix_lite.capture import whisper_prefix_ids

    return whisper_prefix_ids(processor) + list(processor.tokenizer(" " + text, add_special_tokens=False).input_ids)


# ---------------------------------------------------------------------------------------------
# items, uses, transcript mapping
# ---------------------------------------------------------------------------------------------
def test_det_noun_verb_items_are_used_twice():
    al = [dict(start=i * 0.2, end=i * 0.2 + 0.2, word=w) for i, w in enumerate("Les chats jouent ici".split())]
    uses = study.item_uses(dict(alignment=al, cue_index=0, target_index=1, target_index_2=2, template="Det_Noun_Verb"))
    assert uses == [study.Use("noun", (0,), 1), study.Use("verb", (0, 1), 2)]
    one = study.item_uses(dict(alignment=al, cue_index=0, target_index=1, target_index_2=-1, template="Det_Noun"))
    assert one == [study.Use("main", (0,), 1)]
    with pytest.raises(ValueError, match="precede"):
        study.item_uses(dict(alignment=al, cue_index=2, target_index=1, target_index_2=-1))


def test_normalize_and_map_transcript():
    assert study.normalize_word("Livres.") == "livres"
    assert study.normalize_word("L\u2019arbre,") == "l'arbre"
    assert study.normalize_word("...") == ""
    align = ["Elle", "a", "perdu", "les", "livres", "dans", "le", "train"]
    m = study.map_transcript(align, "Elle a perdu les livre dans le train.".split())
    assert 4 not in m and m[3] == 3 and m[7] == 7  # wrong number form: the target is not mapped
    m = study.map_transcript(align, "elle a perdu , les livres dans le train".split())
    assert m[3] == 4 and m[4] == 5  # a punctuation-only word is skipped


def test_whitespace_word_tokens_keep_multibyte_characters_together(whisper_base):
    _, proc = whisper_base
    text = " Elles achetaient des pâtés à côté de l'église."
    ids = proc.tokenizer(text, add_special_tokens=False).input_ids
    words = study.whitespace_word_tokens(ids, proc.tokenizer)
    assert [w for w, _ in words] == text.split()
    toks = [t for _, ts in words for t in ts]
    assert toks == sorted(toks) and set(toks) == set(range(len(ids)))  # every token in one word, in order
    pos = study.decoder_positions([dict(start=0, end=1, word=w) for w in ["elles", "achetaient", "des", "pâtés"]],
                                  ids, proc.tokenizer, prefix_length=4)
    assert pos[0] == [4 + t for t in words[0][1]] and pos[3] == [4 + t for t in words[3][1]]


def test_cue_contribution_sums_cue_words():
    d = np.array([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]])
    np.testing.assert_allclose(study.cue_contribution(d, (1,)), [0.2, 0.25])
    np.testing.assert_allclose(study.cue_contribution(d, (0, 1)), [0.3, 0.5])


def test_item_key_depends_on_content(items):
    a, b = items[0], dict(items[0])
    assert study.item_key(a) == study.item_key(b)
    b["cue_index"] = 2
    assert study.item_key(a) != study.item_key(b)


def test_model_run_validation():
    with pytest.raises(ValueError, match="init"):
        study.ModelRun("openai/whisper-base", "pretrained")
    with pytest.raises(ValueError, match="random"):
        study.ModelRun("openai/whisper-base", "trained", config_overrides=(("encoder_layers", 2),))
    r = study.ModelRun.make(("openai/whisper-base", "random"))
    assert r.init == "random" and "random" in r.slug


# ---------------------------------------------------------------------------------------------
# the rows-only pass against the full eager capture
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_rows_capture_matches_full_capture(tiny, items):
    from ctxmix_lite.attention_norm import attention_norm
    from ctxmix_lite.capture import capture
    from ctxmix_lite.value_zeroing import value_zeroing

    model, proc = tiny
    it = items[0]
    audio = study.audio_of(it)
    ids = _dec_ids(proc, it["transcription"])
    rows = list(range(30, 44))
    light = study.whisper_rows_capture(model, proc, audio, ids, rows)  # sdpa forward + eager rows
    full = capture(model, proc, audio, decoder_input_ids=ids, sampling_rate=16000)
    r = torch.tensor(rows)
    spans = [(10 * k, 10 * k + 9) for k in range(6)]
    for i, (a, b) in enumerate(zip(light["encoder"], full["encoder"])):
        torch.testing.assert_close(a.weights, b.weights[:, r], atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(a.out, b.out[r], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(a.resid, b.resid[r], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(value_zeroing(a, spans=spans, normalize=False),
                                   value_zeroing(b, rows=r, spans=spans, normalize=False), atol=1e-5, rtol=1e-3)
        torch.testing.assert_close(attention_norm(a, spans=spans), attention_norm(b, rows=r, spans=spans), atol=1e-4, rtol=1e-4)
    for comp in ("decoder", "cross"):
        for a, b in zip(light[comp], full[comp]):
            torch.testing.assert_close(a.weights, b.weights, atol=2e-5, rtol=1e-4)
            torch.testing.assert_close(a.out, b.out, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(a.resid, b.resid, atol=1e-4, rtol=1e-4)
            # the decoder's post (cross-attention from recorded keys/values) against the lead's
            n = a.resid.shape[0]
            torch.testing.assert_close(a.post(a.resid, a.attn_out), b.post(b.resid, b.attn_out), atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(value_zeroing(a, normalize=False), value_zeroing(b, normalize=False), atol=1e-5, rtol=1e-3)
    # hidden states for the probe: layer 0 = the encoder input of the rows, last = final-normed output
    assert light["encoder_hidden"].shape == (len(full["encoder"]) + 1, len(rows), model.config.d_model)
    torch.testing.assert_close(light["encoder_hidden"][-1], full["encoder"][-1].out[r], atol=1e-4, rtol=1e-4)
    assert model.config._attn_implementation == "eager"  # restored after the sdpa pass


def test_recomputed_weights_are_verified_against_the_kernel_output(tiny, items):
    """The rows pass runs sdpa and recomputes weights; each capture must rebuild the kernel's own
    attention output, and weights that are off (another temperature) are refused."""
    from ctxmix_lite.capture import CaptureError

    model, proc = tiny
    it = items[0]
    out = study.whisper_rows_capture(model, proc, study.audio_of(it), _dec_ids(proc, it["transcription"]),
                                     list(range(5, 25)))
    for comp in ("encoder", "decoder", "cross"):
        for lc in out[comp]:
            assert study.verify_recomputed_weights(lc) < 1e-5
    lc = out["encoder"][1]
    hot = torch.softmax(torch.log(lc.weights) * 1.2, dim=-1)  # still rows of probabilities, but not the kernel's
    with pytest.raises(CaptureError, match="recomputed"):
        study.verify_recomputed_weights(dataclasses.replace(lc, weights=hot))


def test_course_items_checked_only(monkeypatch):
    import datasets

    from ctxmix_lite import homophony

    rows = dict(item_id=[f"i{k}" for k in range(8)], label=["singular", "plural"] * 4,
                pair_id=[f"p{k // 2}" for k in range(8)],
                whisper_ok=[True, True, False, True, True, False, True, True])
    ds = datasets.Dataset.from_dict(rows)
    monkeypatch.setattr(homophony, "load_homophony", lambda *a, **k: ds)
    assert len(study.course_items("offline", None, progress=False)) == 8  # off by default
    out = study.course_items("offline", None, checked_only=True, progress=False)
    assert len(out) == 6 and all(out["whisper_ok"])
    out = study.course_items("offline", 4, checked_only=True, progress=False)  # balanced among the checked
    assert sorted(out["label"]) == ["plural", "plural", "singular", "singular"] and all(out["whisper_ok"])
    unchecked = datasets.Dataset.from_dict(dict(rows, whisper_ok=[None] * 8))
    monkeypatch.setattr(homophony, "load_homophony", lambda *a, **k: unchecked)
    assert len(study.course_items("offline", None, checked_only=True, progress=False)) == 8


def test_keys_upto_leaves_span_measures_unchanged(tiny, items):
    from ctxmix_lite.attention_norm import attention_norm
    from ctxmix_lite.value_zeroing import value_zeroing

    model, proc = tiny
    audio = study.audio_of(items[0])
    lc = study.whisper_rows_capture(model, proc, audio, None, list(range(20, 30)))["encoder"][1]
    spans = [(0, 9), (10, 30), (31, 60)]
    cut = study.keys_upto(lc, 61)
    assert cut.weights.shape[-1] == 61
    torch.testing.assert_close(attention_norm(cut, spans=spans), attention_norm(lc, spans=spans))
    torch.testing.assert_close(value_zeroing(cut, spans=spans, normalize=False), value_zeroing(lc, spans=spans, normalize=False))


# ---------------------------------------------------------------------------------------------
# word-level rows against full matrices + pooling.word_level + the reference value zeroing
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_item_distributions_match_full_matrices(tiny, items):
    from ctxmix_lite.attention_norm import attention_norm
    from ctxmix_lite.capture import capture
    from ctxmix_lite.pooling import word_level
    from ctxmix_lite.value_zeroing import value_zeroing

    model, proc = tiny
    it = items[0]
    audio = study.audio_of(it)
    ids = _dec_ids(proc, it["transcription"])
    res = study.item_distributions(model, proc, it, decoder_ids=ids, audio=audio)
    full = capture(model, proc, audio, decoder_input_ids=ids, sampling_rate=16000)
    spans = res["spans"]
    tgt = spans[4]
    W = len(spans)
    pos = res["positions"]
    assert all(p is not None for p in pos)
    pred = [p - 1 for p in pos[4]]
    for l, lc in enumerate(full["encoder"]):
        # attention: word-level per head (mean over rows and columns), renormalised, mean over heads
        att = word_level(lc.weights, [tgt], spans)[:, 0].mean(0)
        np.testing.assert_allclose(res["dist"][("main", "encoder", "attention")][l], att, atol=1e-5)
        an = word_level(attention_norm(lc), [tgt], spans)[0]
        np.testing.assert_allclose(res["dist"][("main", "encoder", "attention_norm")][l], an, atol=1e-5)
        vz_rows = value_zeroing(lc, rows=list(range(tgt[0], tgt[1] + 1)), spans=spans, method="reference", normalize=False)
        vz = vz_rows.double().mean(0)
        np.testing.assert_allclose(res["dist"][("main", "encoder", "value_zeroing")][l], (vz / vz.sum()).numpy(), atol=2e-4)
    tok_spans = [(p[0], p[-1]) for p in pos]
    for l, lc in enumerate(full["decoder"]):
        for meas in ("attention", "attention_norm", "value_zeroing"):
            if meas == "attention":
                m = lc.weights.mean(0)
            elif meas == "attention_norm":
                m = attention_norm(lc)
            else:
                m = value_zeroing(lc, method="reference", normalize=False)
            # the word-pooled variant: rows = positions predicting the target, columns = word
            # tokens summed, renormalised over the words (the paper's definition, the default
            # "decoder" rows, is checked against cue_alignment.py in tests/test_study_paper.py)
            w = word_level(m[pred], None, tok_spans, agg="sum").double().mean(0)
            # value zeroing of a random decoder: raw distances ~1e-6, so the last float32 bits of
            # the sdpa vs eager forward show at the 1e-3 relative level after normalisation
            tol = dict(rtol=1e-2, atol=1e-4) if meas == "value_zeroing" else dict(atol=2e-4)
            np.testing.assert_allclose(res["dist"][("main", "decoder[word_pooled]", meas)][l], w.numpy(), **tol)
    for l, lc in enumerate(full["cross"]):
        att = word_level(lc.weights[:, pred], None, spans).mean(0).mean(0)
        np.testing.assert_allclose(res["dist"][("main", "cross", "attention")][l], att, atol=1e-5)
        an = word_level(attention_norm(lc, rows=pred), None, spans).mean(0)
        np.testing.assert_allclose(res["dist"][("main", "cross", "attention_norm")][l], an, atol=1e-5)
        vz = value_zeroing(lc, rows=pred, spans=spans, method="reference", normalize=False).double()
        np.testing.assert_allclose(res["dist"][("main", "cross", "value_zeroing")][l],
                                   (vz / vz.sum(-1, keepdim=True)).mean(0).numpy(), atol=2e-4)
    assert res["probe"][("main", "encoder")].shape == (len(full["encoder"]) + 1, model.config.d_model)
    assert res["probe"][("main", "decoder")].shape == (len(full["decoder"]) + 1, model.config.d_model)


def test_wav2vec2_item_distributions(items):
    from ctxmix_lite.models import load_model

    model, proc = load_model("facebook/wav2vec2-large-xlsr-53", pretrained=False,
                             config_overrides=dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128))
    res = study.item_distributions(model, proc, items[1])
    assert set(res["dist"]) == {(u, "encoder", m) for u in ("noun", "verb") for m in study.MEASURES}
    for v in res["dist"].values():
        assert v.shape == (2, len(items[1]["alignment"]))
        np.testing.assert_allclose(v.sum(-1), 1.0, atol=1e-5)
    assert res["window"] == pytest.approx(len(study.audio_of(items[1])) / 16000)
    with pytest.raises(ValueError, match="only an encoder"):
        study.item_distributions(model, proc, items[1], components=["decoder"])


# ---------------------------------------------------------------------------------------------
# the whole pipeline
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_run_study_end_to_end_and_cache(items, tmp_path, monkeypatch, whisper_base):
    import pandas as pd

    monkeypatch.setenv("CTXMIX_CACHE", str(tmp_path / "cache"))
    bad = dict(items[2])  # an item whose reference the model cannot match: must be excluded
    bad["alignment"] = [dict(w) for w in items[2]["alignment"]]
    bad["alignment"][1]["word"] = "adorent"
    bad["item_id"] = "bad"
    data = list(items) + [bad]
    runs = [study.ModelRun("openai/whisper-base", "trained"), study.ModelRun("openai/whisper-base", "random")]
    loaded = {runs[0]: whisper_base}
    res = study.run_study(data, models=runs, progress=False, loaded=dict(loaded))
    t = res.all_table
    assert set(t["component"]) == {"encoder", "decoder", "cross"}
    assert set(t["measure"]) == set(study.MEASURES)
    assert t["score"].between(0, 1).all()
    assert set(t["layer"]) == set(range(1, 7))
    # Det_Noun_Verb used twice
    assert {"t1:noun", "t1:verb"} <= set(t["item"])
    # the exclusion rule: 'bad' is counted and dropped from every model and component
    assert "bad" in set(res.exclusions["item"])
    assert "bad" not in set(res.table["item"])
    assert res.n_excluded >= 1
    assert res.items.set_index("item").loc["bad", "excluded"]
    # every (item, model, component, measure) row of layers: one per layer
    counts = res.table.groupby(["item", "model_label", "component", "measure"]).size()
    assert (counts == 6).all()
    # the exclusion is counted with its reason; the decoder rows are the paper's definition
    counts = res.exclusion_counts().set_index(["reason_code", "scope"])["n"]
    assert counts.loc[("misrecognised", "all components")] == res.n_excluded
    assert res.options.decoder_definition == "paper"
    assert set(res.variants["definition"]) == set(study.DECODER_DEFINITIONS)
    paper = res.variants[res.variants["definition"] == "paper"].drop(columns="definition").reset_index(drop=True)
    pd.testing.assert_frame_equal(res.table[res.table["component"] == "decoder"].reset_index(drop=True), paper)
    assert (res.table["cue_distance"] == 1).all() and set(res.table["distance_group"]) == {"adjacent"}
    # prompt mass: four prompt positions, rows' shares in [0, 1]
    assert set(res.decoder_mass["position"]) == {0, 1, 2, 3}
    assert res.decoder_mass.groupby(["item", "model_label", "measure", "layer"])["mass"].sum().between(0, 1 + 1e-6).all()
    assert set(res.decoder_mass["token"]) == {"<|startoftranscript|>", "<|fr|>", "<|transcribe|>", "<|notimestamps|>"}
    # cached shards: encoder, cross and word-pooled decoder rows sum to 1 over the aligned words;
    # the paper's decoder rows sum to at most 1 (the rest is on the prompt and punctuation)
    shards = list((tmp_path / "cache").rglob("*.npz"))
    assert len(shards) == 2 * len(data)
    d, _ = study.core._load_shard(shards[0])
    for (u, c, m), v in d["dist"].items():
        if c in ("encoder", "cross", "decoder[word_pooled]"):
            np.testing.assert_allclose(v.sum(-1), 1.0, atol=1e-5)
        elif c != "decoder[prompt_mass]":
            assert (v.sum(-1) <= 1 + 1e-5).all() and (v >= 0).all()
    # a cache hit gives identical results and needs no model
    res2 = study.run_study(data, models=runs, progress=False)
    pd.testing.assert_frame_equal(res.table, res2.table)
    pd.testing.assert_frame_equal(res.exclusions, res2.exclusions)
    # another definition from the same shards: the word-pooled rows become the table's decoder rows
    res3 = study.run_study(data, models=runs, progress=False, options=study.StudyOptions("word_pooled"))
    pooled = res.variants[res.variants["definition"] == "word_pooled"].drop(columns="definition").reset_index(drop=True)
    pd.testing.assert_frame_equal(res3.table[res3.table["component"] == "decoder"].reset_index(drop=True), pooled)
    assert not np.allclose(pooled["score"], paper["score"])
    s = study.summarize(res.table)
    assert {"mean", "sem", "ci95", "n"} <= set(s.columns)
    # probe features: one per kept item, layers 0..6
    X = res.probe[("whisper-base (trained)", "encoder")]["X"]
    assert X.shape[0] == 7 and X.shape[1] == len(res.probe[("whisper-base (trained)", "encoder")]["y"])


def test_teacher_forcing_option_is_checked_and_keys_its_shards():
    """The smoke runs' ``teacher_forcing="reference"`` never shares shards with the paper's setting,
    whose shard key is unchanged; a misspelt value is refused before any work."""
    paper = study.core._settings_tag(None, study.MEASURES, "fr")
    assert study.core._settings_tag(None, study.MEASURES, "fr", "transcription") == paper
    assert study.core._settings_tag(None, study.MEASURES, "fr", "reference") != paper
    with pytest.raises(ValueError, match="teacher_forcing"):
        study.run_study([{"audio": None}], [], teacher_forcing="references")
