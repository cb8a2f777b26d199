"""The study's decoder / cross-attention cue contribution against the paper's own formula.

The reference here is written from the authors' code (``hmohebbi/ContextMixingASR``), not from
``ctxmix_lite``: ``evaluating/cue_alignment.py`` (rows = target token indices in the generated
ids, cue columns = cue indices + 1 for the start token, a binary cue vector, dot product, mean
over the target's rows; ``--SKIP_SPECIAL_TOKENS``: ``score_maps[:, 3:, 3:]``, indices - 3,
renormalise), ``scoring/attentions.py`` (decoder maps normalised over all positions; cross maps
averaged over each word's frames, ``ceil(F t / T)`` boundaries, normalised over words per head)
and ``scoring/valueZeroing.py`` (one decoder token zeroed at a time, ``vz[l, t:, t]``; a whole
word's frames zeroed for cross-attention; rows normalised).
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ctxmix_lite import study


# ---------------------------------------------------------------------------------------------
# the paper's formula, written directly from evaluating/cue_alignment.py
# ---------------------------------------------------------------------------------------------
def paper_cue_alignment(score_map, target_indices, cue_indices, component, skip_special_tokens=False):
    """One layer of ``cue_alignment.py``: ``score_map`` is ``[T, T]`` (decoder) or ``[T, W]``
    (cross), already row-normalised as ``scoring/*.py`` saves it; ``target_indices`` = the target
    tokens' indices in the generated ids (bos not counted); ``cue_indices`` = the cue tokens'
    indices in the generated ids (decoder) or the cue words' alignment indices (cross)."""
    s = np.array(score_map, dtype=np.float64)
    t = np.array(target_indices)
    c = np.array(cue_indices) + (1 if component == "decoder" else 0)  # bos in the decoder input
    if skip_special_tokens:
        if component == "cross":
            s = s[3:]
            t = t - 3
        else:
            s = s[3:, 3:]
            t, c = t - 3, c - 3
        s = s / np.sum(s, axis=-1, keepdims=True)
    cue_vector = np.zeros(s.shape[-1])
    cue_vector[c] = 1
    return float(np.mean([np.dot(s[i], cue_vector) for i in t]))


def _row_normalise(m):
    m = np.asarray(m, dtype=np.float64)
    sums = m.sum(-1, keepdims=True)
    return np.divide(m, sums, out=np.zeros_like(m), where=sums != 0)


# ---------------------------------------------------------------------------------------------
# (a) a decoder score matrix built by hand
# ---------------------------------------------------------------------------------------------
# decoder input: 4 prompt positions, then the transcript's tokens:
#   4 "Elle" | 5-6 "les" (2 tokens) | 7-8 "livres" (2 tokens) | 9 "dans" | 10 "." (unaligned) | 11 "le"
WORD_TOKENS = [[4], [5, 6], [7, 8], [9], [11]]
T = 12


def _hand_matrix(seed=0):
    """Raw non-negative causal scores ``[T, T]`` (zero above the diagonal), rows not normalised,
    with much of the mass on the prompt (as Whisper's decoder does)."""
    rng = np.random.default_rng(seed)
    m = rng.uniform(0.05, 1.0, size=(T, T))
    m[:, :4] *= 3.0
    return np.tril(m)


@pytest.mark.parametrize("skip", [False, True])
def test_paper_decoder_definition_on_a_hand_matrix(skip):
    m = _hand_matrix()
    # the paper: rows normalised over all positions; target "livres" = input positions 7, 8 ->
    # generated indices 6, 7 (the rows that predict them); cue "les" = input 5, 6 -> generated 4, 5
    ref_map = _row_normalise(m)
    cases = [((1,), [7, 8]), ((1, 2), [9])]  # det -> noun; det + noun -> next word (the verb use)
    rows = sorted({p - 1 for _, tgt in cases for p in tgt})
    groups = [[rows.index(p - 1) for p in tgt] for _, tgt in cases]
    per_word, prompt = study.paper_decoder_rows(m[rows], groups, WORD_TOKENS, skip_special_tokens=skip)
    for (cue_words, tgt), pw, pm in zip(cases, per_word, prompt):
        target_gen = [p - 1 for p in tgt]
        cue_gen = [p - 1 for w in cue_words for p in WORD_TOKENS[w]]
        expected = paper_cue_alignment(ref_map, target_gen, cue_gen, "decoder", skip_special_tokens=skip)
        ours = float(study.cue_contribution(pw[None], cue_words)[0])
        assert ours == pytest.approx(expected, abs=1e-12)
        # the prompt mass is what the paper's rows put on positions 0..3 (0 where skipped)
        ref_rows = ref_map[target_gen]
        if skip:
            ref_rows = np.concatenate([np.zeros((len(target_gen), 3)), _row_normalise(ref_rows[:, 3:])], axis=1)
        np.testing.assert_allclose(pm, ref_rows[:, :4].mean(0), atol=1e-12)
    # per-word entries of the paper's definition do not sum to 1: the prompt and "." keep theirs
    assert per_word[0].sum() < 0.9


def test_word_pooled_variant_differs_from_the_paper_on_a_hand_matrix():
    """Mutation check: the word-pooled definition (prompt and punctuation dropped, rows renormalised
    over words) is not the paper's; the reference formula must tell them apart."""
    m = _hand_matrix()
    rows, groups = [6, 7], [[0, 1]]
    lc = SimpleNamespace(weights=torch.tensor(m[None] / m.sum(-1, keepdims=True)[None], dtype=torch.float32))
    raw = study.scoring._decoder_token_scores(lc, rows, "attention")  # head mean of softmax rows
    pooled = study.scoring._decoder_rows(lc, rows, groups, WORD_TOKENS, "attention", m=raw)[0]
    paper = study.paper_decoder_rows(raw, groups, WORD_TOKENS)[0][0]
    expected = paper_cue_alignment(_row_normalise(m), [6, 7], [4, 5], "decoder")
    assert float(paper[1]) == pytest.approx(expected, abs=1e-6)
    assert abs(float(pooled[1]) - expected) > 0.05
    np.testing.assert_allclose(pooled.sum(), 1.0, atol=1e-9)


def test_study_options():
    assert study.StudyOptions().decoder_definition == "paper"
    assert study.StudyOptions(skip_special_tokens=True).decoder_definition == "paper+skip_special_tokens"
    assert study.StudyOptions.make("word_pooled").decoder_scoring == "word_pooled"
    assert study.StudyOptions.make({"skip_special_tokens": True}).skip_special_tokens
    with pytest.raises(ValueError, match="decoder_scoring"):
        study.StudyOptions("pooled")
    with pytest.raises(ValueError, match="skip_special_tokens"):
        study.StudyOptions("word_pooled", skip_special_tokens=True)
    with pytest.raises(ValueError, match="unknown decoder definition"):
        study.StudyOptions.make("paper+skip")
    # the shard key carries the definitions a shard holds: shards of the old scoring are not read
    tag = study.core._settings_tag(None, study.MEASURES, "fr")
    assert study.SCORING_SCHEMA and tag != __import__("hashlib").sha1(b"x").hexdigest()[:8]
    old = __import__("json").dumps(dict(c=None, m=list(study.MEASURES), lang="fr"), sort_keys=True)
    assert tag != __import__("hashlib").sha1(old.encode()).hexdigest()[:8]


def test_cue_distance_of_uses():
    al = [dict(start=i * 0.2, end=i * 0.2 + 0.2, word=w) for i, w in enumerate("le petit chat joue".split())]
    it = dict(alignment=al, cue_index=0, target_index=2, target_index_2=3)
    noun, verb = study.item_uses(it)
    assert study.use_cue_distance(it, noun) == 2 and study.distance_group(2) == "non-adjacent (>= 2)"
    assert study.use_cue_distance(it, verb) == 1 and study.distance_group(1) == "adjacent"
    assert study.use_cue_distance(dict(it, cue_distance=2), noun) == 2
    with pytest.raises(ValueError, match="disagrees"):
        study.use_cue_distance(dict(it, cue_distance=1), noun)
    assert study.runs.use_token_distance([[4], [5], [6], [7]], noun) == 2  # "le petit chat": 2 tokens on
    assert study.runs.use_token_distance([[4], [5, 6], [7], [8]], verb) == 1  # the noun's last token predicts the verb
    assert study.runs.use_token_distance(None, noun) is None


# ---------------------------------------------------------------------------------------------
# one tokenisation of transcripts: the study's exclusion rule and the data's whisper_ok
# ---------------------------------------------------------------------------------------------
def test_exclusion_rule_splits_elisions_like_the_data_check():
    from ctxmix_lite import homophony

    words = ["Elle", "a", "vu", "un", "livre"]
    use = study.Use("main", (3,), 4)
    text = "Elle a vu d'un livre."  # Whisper wrote an elision the reference does not have
    item = dict(cue_word="un", target_word="livre", target_word_2="")
    assert homophony.whisper_item_ok(text, item)  # the data marks the item ok ...
    assert study.misrecognised_words(words, text, use) == []  # ... and the study keeps it
    assert 3 not in study.map_transcript(words, text.split())  # a whitespace split would drop it
    assert study.misrecognised_words(words, "Elle a vu des livres.", use) == [3, 4]
    assert study.misrecognised_words(["L'", "arbre", "les", "chats"], "L'arbre, les chats", study.Use("main", (2,), 3)) == []


@pytest.mark.parametrize("text", [
    " Elle parle d'un ami.", " L'élève aime l'église, jusqu'à demain !", " Ils en mangent... « peut-être » aujourd'hui",
    " Qu'il vienne ; C'EST ÇA.", " Les  chats—jouent.", " Lorsqu'ils aiment l’été",
])
def test_transcript_word_tokens_split_as_the_data_check(whisper_base, text):
    from ctxmix_lite import homophony

    _, proc = whisper_base
    ids = proc.tokenizer(text, add_special_tokens=False).input_ids
    words = study.transcript_word_tokens(ids, proc.tokenizer)
    assert [w for w, _ in words] == homophony.transcript_words(proc.tokenizer.decode(ids))
    for w, toks in words:  # each word's tokens spell it (apostrophe / space aside)
        spelled = proc.tokenizer.decode([ids[t] for t in toks]).lower().replace("’", "'")
        assert w in spelled


def test_decoder_positions_of_an_elided_cue(whisper_base):
    _, proc = whisper_base
    text = " Elle a vu d'un livre."
    ids = proc.tokenizer(text, add_special_tokens=False).input_ids
    al = [dict(start=0.2 * i, end=0.2 * i + 0.2, word=w) for i, w in enumerate(["Elle", "a", "vu", "un", "livre"])]
    pos = study.decoder_positions(al, ids, proc.tokenizer, prefix_length=4)
    assert all(p is not None for p in pos)
    assert proc.tokenizer.decode([ids[p - 4] for p in pos[3]]).strip(" '") == "un"
    assert proc.tokenizer.decode([ids[p - 4] for p in pos[4]]).strip() == "livre"


# ---------------------------------------------------------------------------------------------
# (b) real Whisper-base, teacher-forced on its own transcription: study == the paper's formula
# ---------------------------------------------------------------------------------------------
REAL = [  # text, cue, target, target_2
    ("Elle a perdu les livres dans le train.", 3, 4, -1),
    ("Les enfants jouent dans le jardin.", 0, 1, 2),
]


def _token_span(tokenizer, ids, word, start=0):
    """Indices of the transcript tokens that spell `` word`` (found by decoding, independently of
    the study's word mapping)."""
    for a in range(start, len(ids)):
        if not tokenizer.decode([ids[a]]).startswith(" "):
            continue
        for b in range(a + 1, min(a + 6, len(ids)) + 1):
            if tokenizer.decode(ids[a:b]).strip().lower().strip(".,") == word.lower():
                return list(range(a, b))
    raise AssertionError(f"{word!r} not in {tokenizer.decode(ids)!r}")


def _paper_frames(start, end, n_frames=1500, total=30.0):
    """utils.get_encoder_word_boundaries of the paper's code."""
    return int(math.ceil(n_frames * start / total)), int(math.ceil(n_frames * end / total))


@pytest.mark.slow
def test_study_equals_paper_formula_on_real_whisper_base(whisper_base):
    from ctxmix_lite import synth
    from ctxmix_lite.attention_norm import attention_norm
    from ctxmix_lite.capture import capture, transcribe, whisper_prefix_ids
    from ctxmix_lite.value_zeroing import value_zeroing

    model, proc = whisper_base
    checked = 0
    for text, ci, ti, t2 in REAL:
        try:
            s = synth.synthesize(text, voice="mb-fr1", rate=130)
        except Exception as err:  # pragma: no cover - depends on the machine
            pytest.skip(f"synthesiser unavailable: {err}")
        item = dict(item_id="r", audio=dict(array=s.audio, sampling_rate=s.sampling_rate, path=""), transcription=text,
                    alignment=s.words, cue_index=ci, target_index=ti, target_index_2=t2)
        audio = s.audio
        hyp, tids = transcribe(model, proc, audio, language="fr", sampling_rate=16000)
        tids = list(tids)
        dec_ids = whisper_prefix_ids(proc) + tids  # = [bos] + generated ids[:-1], as scoring/*.py
        words = [w["word"] for w in s.words]
        uses = study.item_uses(item)
        res = study.item_distributions(model, proc, item, uses, decoder_ids=dec_ids, components=("decoder", "cross"),
                                       audio=audio)
        full = capture(model, proc, audio, decoder_input_ids=dec_ids, sampling_rate=16000)
        gen = lambda k: 3 + k  # transcript token k -> index in the generated ids (<|fr|> is 0)
        spans = [_paper_frames(w["start"], w["end"]) for w in s.words]
        for u in uses:
            tgt = _token_span(proc.tokenizer, tids, words[u.target])
            cue_toks = []
            for c in u.cue:
                cue_toks += _token_span(proc.tokenizer, tids, words[c])
            target_gen, cue_gen = [gen(k) for k in tgt], [gen(k) for k in cue_toks]
            for l, (dlc, clc) in enumerate(zip(full["decoder"], full["cross"])):
                Td = dlc.weights.shape[-1]
                # decoder maps as scoring/*.py saves them (rows over all positions)
                maps = {
                    "attention": _row_normalise(dlc.weights.double().numpy()).mean(0),
                    "attention_norm": _row_normalise(attention_norm(dlc).double().numpy()),
                    "value_zeroing": _row_normalise(np.tril(value_zeroing(dlc, method="reference", normalize=False).double().numpy())),
                }
                # cross maps: mean over each word's frames [start, end], normalised over words
                a = clc.weights.double().numpy()  # [H, T, 1500]
                an = attention_norm(clc).double().numpy()  # [T, 1500]
                cross = {
                    "attention": _row_normalise(np.stack([a[..., f:e + 1].mean(-1) for f, e in spans], -1)).mean(0),
                    "attention_norm": _row_normalise(np.stack([an[..., f:e + 1].mean(-1) for f, e in spans], -1)),
                    "value_zeroing": _row_normalise(value_zeroing(clc, spans=spans, method="reference",
                                                                  normalize=False).double().numpy()),
                }
                assert maps["attention"].shape == (Td, Td)
                for meas in study.MEASURES:
                    tol = 2e-4 if meas == "value_zeroing" else 2e-5
                    for skip, comp in ((False, "decoder"), (True, "decoder[skip_special_tokens]")):
                        exp = paper_cue_alignment(maps[meas], target_gen, cue_gen, "decoder", skip)
                        got = float(study.cue_contribution(res["dist"][(u.name, comp, meas)][l], u.cue))
                        assert got == pytest.approx(exp, abs=tol), (u.name, comp, meas, l + 1)
                    exp = paper_cue_alignment(cross[meas], target_gen, list(u.cue), "cross")
                    got = float(study.cue_contribution(res["dist"][(u.name, "cross", meas)][l], u.cue))
                    assert got == pytest.approx(exp, abs=tol), (u.name, "cross", meas, l + 1)
            # (c) mutation check: the word-pooled variant is not the paper's number
            vz = _row_normalise(np.tril(value_zeroing(full["decoder"][-1], method="reference", normalize=False).double().numpy()))
            pooled = float(study.cue_contribution(res["dist"][(u.name, "decoder[word_pooled]", "value_zeroing")][-1], u.cue))
            assert abs(pooled - paper_cue_alignment(vz, target_gen, cue_gen, "decoder")) > 0.05
            checked += 1
    assert checked >= 2
