"""The homophony data: offline build (checks, balance, determinism, cache), schema, hub mapping."""
from __future__ import annotations

import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from ctxmix_lite import homophony as H
from ctxmix_lite.corpus import build as B
from ctxmix_lite.corpus import whisper_check as WC
from ctxmix_lite import synth

ROOT = Path(__file__).resolve().parents[1]


def _need_mbrola():
    try:
        synth.find_library()
    except synth.SynthesizerUnavailable as err:
        pytest.skip(str(err))
    if not synth.available_voices():
        pytest.skip(f"no MBROLA French voice: {synth.INSTALL_COMMAND}")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    _need_mbrola()
    out = tmp_path_factory.mktemp("homophony") / "smoke"
    return H.build_offline(smoke=True, out_dir=out, progress=False)


@pytest.fixture(scope="module")
def larger(tmp_path_factory):
    """60 items: enough pairs of every template for the balance and phone checks."""
    _need_mbrola()
    return H.build_offline(n_items=60, out_dir=tmp_path_factory.mktemp("homophony") / "n60",
                           progress=False, seed=3)


# ---------------------------------------------------------------------------------------------
# the built set
# ---------------------------------------------------------------------------------------------
def test_schema(smoke):
    H.check_schema(smoke)
    assert list(smoke.features) == list(H.FIELDS)
    assert len(smoke) == H.SMOKE_ITEMS
    row = smoke[0]
    assert row["audio"]["sampling_rate"] == 16000 and Path(row["audio"]["path"]).is_file()
    assert row["whisper_ok"] is None  # unchecked until transcription_check
    audio = H.item_audio(row)
    assert audio.dtype == np.float32 and audio.ndim == 1
    import soundfile as sf

    wav, sr = sf.read(row["audio"]["path"], dtype="float32")
    assert sr == 16000 and np.max(np.abs(wav - audio)) < 1e-4  # the 16-bit copy of the array


def test_word_times_inside_clip_in_order_and_cue_before_target(larger):
    for row in larger:
        H.check_item(row)  # raises on any violation
        al = H.item_alignment(row)
        dur = len(row["audio"]["array"]) / 16000
        assert all(0 <= w["start"] <= w["end"] <= dur for w in al)
        assert all(a["end"] <= b["start"] + 1e-9 for a, b in zip(al, al[1:]))
        assert row["cue_index"] < row["target_index"]
        assert al[row["cue_index"]]["word"] == row["cue_word"]
        assert al[row["target_index"]]["word"] == row["target_word"]
        if row["template"] == "Det_Noun_Verb":
            assert row["target_index"] < row["target_index_2"]
            assert al[row["target_index_2"]]["word"] == row["target_word_2"]
        else:
            assert row["target_index_2"] == -1 and row["target_word_2"] == ""
        assert [w["word"] for w in al] == [t for t, _ in synth.tokenize(row["transcription"])]
        # the word after the target (or the second target) starts with a consonant: no liaison
        last = max(row["target_index"], row["target_index_2"])
        if last + 1 < len(al):
            assert H.consonant_initial(al[last + 1]["word"])


def test_labels_balanced_and_templates_present(larger):
    assert Counter(larger["label"]) == {"singular": 30, "plural": 30}
    per = Counter(zip(larger["template"], larger["label"]))
    for t in H.TEMPLATES:
        assert per[(t, "singular")] == per[(t, "plural")] > 0
    q = H.template_quotas(30)
    assert {t: per[(t, "plural")] for t in H.TEMPLATES} == q


def test_minimal_pairs_have_identical_target_phones_and_an_audible_cue(larger):
    pairs = defaultdict(dict)
    for row in larger:
        pairs[row["pair_id"]][row["label"]] = row
    assert len(pairs) == 30
    for pid, p in pairs.items():
        sg, pl = p["singular"], p["plural"]
        assert sg["voice"] == pl["voice"] and sg["template"] == pl["template"]

        def ph(r, k):
            return [x["phone"] for x in r["phones"] if x["word_index"] == k]

        n = len(sg["alignment"])
        assert n == len(pl["alignment"])
        for k in range(n):  # every word but the cue sounds the same in both members
            if k != sg["cue_index"]:
                assert ph(sg, k) == ph(pl, k), (pid, k)
        assert ph(sg, sg["cue_index"]) != ph(pl, pl["cue_index"])
        assert sg["target_word"] != pl["target_word"]  # spelled differently, sound alike
        if sg["template"] == "Pronoun_Verb":  # liaison /z/ only in the plural
            assert ph(pl, pl["cue_index"])[-1] == "z" and ph(sg, sg["cue_index"])[-1] != "z"
            assert pl["cue_word"].lower() == sg["cue_word"].lower() + "s"


def test_lexicon_confirms_every_target(larger):
    from ctxmix_lite import lexicon

    for row in larger:
        assert lexicon.known(row["target_word"])
    pairs = defaultdict(dict)
    for row in larger:
        pairs[row["pair_id"]][row["label"]] = row
    for p in pairs.values():
        assert lexicon.homophones(p["singular"]["target_word"], p["plural"]["target_word"])
        if p["singular"]["target_word_2"]:
            assert lexicon.homophones(p["singular"]["target_word_2"],
                                      p["plural"]["target_word_2"])


def test_report(smoke):
    rep = H.build_report(smoke)
    assert rep["n_items"] == len(smoke) and rep["n_pairs"] == len(smoke) // 2
    assert rep["counts"]["label"] == {"plural": 12, "singular": 12}
    assert sum(rep["counts"]["voice"].values()) == len(smoke)
    assert rep["checks"]["pairs_with_identical_target_phones"] == rep["n_pairs"]
    assert "Lexique 3.82" in rep["lexicon"]["attribution"]
    assert rep["candidates_examined"] and sum(rep["candidates_examined"].values()) == (
        rep["n_pairs"] + sum(rep["excluded"].values()))
    text = H.format_report(rep)
    assert "minimal pairs" in text and "by voice" in text


def test_cache_reuses_and_inputs_change_the_key(smoke, tmp_path):
    out = Path(smoke._ctxmix_build_dir)
    stamp = (out / "report.json").stat().st_mtime_ns
    again = H.build_offline(smoke=True, out_dir=out, progress=False)
    assert (out / "report.json").stat().st_mtime_ns == stamp  # loaded, not rebuilt
    assert again["item_id"] == smoke["item_id"]
    lists = H.load_word_lists()
    k0, _ = B._build_key(24, 0, ["mb-fr1"], H.DEFAULT_MIX, lists)
    k1, _ = B._build_key(24, 1, ["mb-fr1"], H.DEFAULT_MIX, lists)
    k2, _ = B._build_key(24, 0, ["mb-fr1", "mb-fr2"], H.DEFAULT_MIX, lists)
    lists.sources["lexicon/nouns.txt"] += "\nlapin lapins m animal"
    k3, _ = B._build_key(24, 0, ["mb-fr1"], H.DEFAULT_MIX, lists)
    assert len({k0, k1, k2, k3}) == 4


def _strip_paths(ds):
    rows = ds.to_list()
    for r in rows:
        r["audio"] = (np.asarray(r["audio"]["array"], np.float32), r["audio"]["sampling_rate"])
    return rows


def _same(a, b):
    ra, rb = _strip_paths(a), _strip_paths(b)
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb):
        assert np.array_equal(x.pop("audio")[0], y.pop("audio")[0])
        assert x == y


def test_build_is_deterministic(tmp_path):
    _need_mbrola()
    a = H.build_offline(n_items=8, out_dir=tmp_path / "a", progress=False, seed=5)
    b = H.build_offline(n_items=8, out_dir=tmp_path / "b", progress=False, seed=5)
    _same(a, b)
    c = H.build_offline(n_items=8, out_dir=tmp_path / "c", progress=False, seed=6)
    assert c["transcription"] != a["transcription"]  # the seed matters


@pytest.mark.slow
def test_build_with_a_process_pool_is_identical(smoke, tmp_path):
    par = H.build_offline(smoke=True, out_dir=tmp_path / "pool", force=True, workers=2,
                          progress=False)
    _same(smoke, par)


def test_bad_input_is_excluded_and_counted(tmp_path, monkeypatch):
    """A non-homophone (cheval/chevaux), a word Lexique lacks and a sentence the synthesiser fails
    on are all excluded and counted, never silently dropped."""
    _need_mbrola()
    data = tmp_path / "data"
    shutil.copytree(ROOT / "data" / "lexicon", data / "lexicon")
    shutil.copytree(ROOT / "data" / "frames", data / "frames")
    (data / "lexicon" / "nouns.txt").write_text(
        "# test list\ncheval chevaux m animal\nblorf blorfs m chose\nlivre livres m chose\n"
        "lapin lapins m animal\nvache vaches f animal\nstylo stylos m chose\n"
        "voisin voisins m personne\npomme pommes f aliment\n", encoding="utf-8")
    monkeypatch.setenv("CTXMIX_WORDLISTS", str(data))
    real = synth._safe

    def flaky(job):
        if "lapins" in job["text"]:
            return synth.SynthesisError("simulated failure")
        return real(job)

    monkeypatch.setattr(synth, "_safe", flaky)
    ds = H.build_offline(n_items=12, out_dir=tmp_path / "b", progress=False,
                         mix={"Det_Noun": 1.0})
    rep = H.build_report(ds)
    assert rep["excluded"].get("lexicon_not_homophone", 0) >= 1
    assert rep["excluded"].get("lexicon_unknown", 0) >= 1
    assert rep["excluded"].get("synthesis_error", 0) >= 1
    assert rep["checks"]["lexicon_failures"]["cheval/chevaux"] == "lexicon_not_homophone"
    targets = set(ds["target_word"])
    assert not targets & {"cheval", "chevaux", "blorf", "blorfs", "lapin", "lapins"}
    assert len(ds) == 12
    assert sum(rep["candidates_examined"].values()) == 6 + sum(rep["excluded"].values())


def test_missing_synthesiser_is_a_clear_error(monkeypatch, tmp_path):
    def no_lib():
        raise synth.SynthesizerUnavailable("libespeak-ng was not found. Install it with: "
                                           + synth.INSTALL_COMMAND)

    monkeypatch.setattr(synth, "find_library", no_lib)
    with pytest.raises(synth.SynthesizerUnavailable, match="apt-get install"):
        H.build_offline(smoke=True, out_dir=tmp_path / "x", progress=False)


@pytest.mark.parametrize("bad,msg", [
    ("voisin voisins x personne", "gender must be m or f"),
    ("avion avions m chose", "must start with a consonant"),
    ("souris souris f animal", "invariant"),
    ("livre livres m chose extra", "expected 'singular plural gender category'"),
    ("lapin lapins m vaisseau", "has no frame"),
])
def test_word_list_errors_name_file_and_line(tmp_path, monkeypatch, bad, msg):
    data = tmp_path / "data"
    shutil.copytree(ROOT / "data" / "lexicon", data / "lexicon")
    shutil.copytree(ROOT / "data" / "frames", data / "frames")
    with (data / "lexicon" / "nouns.txt").open("a", encoding="utf-8") as fh:
        fh.write("\n" + bad + "\n")
    n = len((data / "lexicon" / "nouns.txt").read_text(encoding="utf-8").splitlines())
    with pytest.raises(H.WordListError, match=f"data/lexicon/nouns.txt:{n}: .*{msg}"):
        H.load_word_lists(data)


def test_frame_and_verb_errors(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(ROOT / "data" / "lexicon", data / "lexicon")
    shutil.copytree(ROOT / "data" / "frames", data / "frames")
    with (data / "lexicon" / "verbs_pronoun.txt").open("a", encoding="utf-8") as fh:
        fh.write("aime aiment present | une chanson\n")
    with pytest.raises(H.WordListError, match="liaison trap"):
        H.load_word_lists(data)
    shutil.copy(ROOT / "data" / "lexicon" / "verbs_pronoun.txt",
                data / "lexicon" / "verbs_pronoun.txt")
    with (data / "frames" / "det_noun.txt").open("a", encoding="utf-8") as fh:
        fh.write("chose | Elle a vu {NP} au marché.\n")
    with pytest.raises(H.WordListError, match="must start with a consonant"):
        H.load_word_lists(data)


def test_pair_checks_catch_phone_differences():
    spec = H.PairSpec("Pronoun_Verb", ("Il aime la mer.", "Ils aiment la mer."), ("Il", "Ils"),
                      ("aime", "aiment"), ("", ""), 0, 1, -1, "mb-fr1", 160, 50, 50)

    def fake(text, phones):
        words = [{"start": 0.1 * k, "end": 0.1 * k + 0.1, "word": w}
                 for k, (w, _) in enumerate(synth.tokenize(text))]
        ph = [{"phone": p, "start": 0.0, "end": 0.0, "word_index": k}
              for k, ps in enumerate(phones) for p in ps]
        return synth.Synthesis(text, "mb-fr1", np.zeros(16000, np.float32), 16000, 16000, words,
                               ph)

    good = (fake(spec.texts[0], [["i", "l"], ["ɛ", "m"], ["l", "a"], ["m", "ɛ", "ʁ"]]),
            fake(spec.texts[1], [["i", "l", "z"], ["ɛ", "m"], ["l", "a"], ["m", "ɛ", "ʁ"]]))
    assert H.check_pair_synthesis(spec, *good) is None
    no_z = fake(spec.texts[1], [["i", "l", "s"], ["ɛ", "m"], ["l", "a"], ["m", "ɛ", "ʁ"]])
    assert H.check_pair_synthesis(spec, good[0], no_z) == "cue_liaison_missing"
    t = fake(spec.texts[1], [["i", "l", "z"], ["ɛ", "m", "t"], ["l", "a"], ["m", "ɛ", "ʁ"]])
    assert H.check_pair_synthesis(spec, good[0], t) == "synth_target_phones_differ"
    same = fake(spec.texts[1], [["i", "l"], ["ɛ", "m"], ["l", "a"], ["m", "ɛ", "ʁ"]])
    assert H.check_pair_synthesis(spec, good[0], same) == "cue_not_audible"
    ctx = fake(spec.texts[1], [["i", "l", "z"], ["ɛ", "m"], ["l", "ə"], ["m", "ɛ", "ʁ"]])
    assert H.check_pair_synthesis(spec, good[0], ctx) == "context_phones_differ"


# ---------------------------------------------------------------------------------------------
# indices, transcripts
# ---------------------------------------------------------------------------------------------
def test_find_cue_target_follows_the_study():
    w = "Le matin les chats et les chiens jouent".split()
    assert H.find_cue_target(w, "les", "chiens") == (5, 6, -1)  # nearest cue before the target
    assert H.find_cue_target(w, "Les", "Chats") == (2, 3, -1)
    assert H.find_cue_target(w, "les", "chiens", "jouent") == (5, 6, 7)
    with pytest.raises(H.HomophonyDataError, match="comes after"):
        H.find_cue_target("les chats ils".split(), "ils", "chats")
    with pytest.raises(H.HomophonyDataError, match="not in the alignment"):
        H.find_cue_target(w, "des", "chats")


def test_transcript_matching():
    item = {"cue_word": "Ils", "target_word": "aiment", "target_word_2": ""}
    assert H.whisper_item_ok("Ils aiment la mer.", item)
    assert not H.whisper_item_ok("Il aime la mer.", item)
    assert not H.whisper_item_ok("Aiment-ils la mer ?", item)
    assert H.transcript_words("L'élève, qu'il aime!") == ["l'", "élève", "qu'", "il", "aime"]
    item2 = {"cue_word": "les", "target_word": "chats", "target_word_2": "jouent"}
    assert H.whisper_item_ok("Souvent, les chats jouent dans le jardin.", item2)
    assert not H.whisper_item_ok("Souvent, les chats joue dans le jardin.", item2)


class _StubProcessor:
    """Feature extractor + batch_decode stand-ins: 'transcribes' by a table keyed on length."""

    def __init__(self, table):
        self.table = table
        self.feature_extractor = self

    def __call__(self, audios, sampling_rate, return_tensors):
        import torch

        class F:
            pass

        f = F()
        f.input_features = torch.tensor([[float(len(a))] for a in audios])
        return f

    def batch_decode(self, seqs, skip_special_tokens=True):
        return [self.table[int(s[0])] for s in seqs]


class _StubModel:
    import torch as _t
    device, dtype = _t.device("cpu"), _t.float32

    def eval(self):
        return self

    def generate(self, feats, **kw):
        return feats.long()


def test_transcription_check_marks_whisper_ok(smoke):
    sub = smoke.select([0, 2, 4, 6])  # four pairs (the stub tells clips apart by their length)
    assert len({len(a["array"]) for a in sub["audio"]}) == 4
    table = {}
    for k, r in enumerate(sub):
        text = r["transcription"] if k % 2 == 0 else r["transcription"].replace(
            r["target_word"], "xyz")
        table[len(r["audio"]["array"])] = text
    out = H.transcription_check(sub, _StubModel(), _StubProcessor(table), cache=False,
                                progress=False)
    H.check_schema(out)
    assert out["whisper_ok"] == [True, False, True, False]
    assert out._ctxmix_transcripts[sub[1]["item_id"]].count("xyz") == 1


def test_committed_check_fills_whisper_ok_when_the_audio_matches(smoke, tmp_path, monkeypatch):
    monkeypatch.setattr(WC, "_seed_check_path", lambda name: tmp_path / "checks" / f"{name}.tsv")
    build = Path(smoke._ctxmix_build_dir)
    assert not (build / "whisper_check.json").exists()
    seed = tmp_path / "checks" / "whisper-base-test.tsv"
    seed.parent.mkdir()
    lines = ["# test seed"]
    for k, r in enumerate(smoke):
        text = r["transcription"] if k % 3 else "rien du tout"
        lines.append(f"{WC._audio_key(H.item_audio(r))}\t{r['item_id']}\t{text}")
    seed.write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")  # one item missing
    assert set(B._load_build(build)["whisper_ok"]) == {None}  # all items or none
    seed.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ds = B._load_build(build)
    assert ds["whisper_ok"] == [bool(k % 3) for k in range(len(smoke))]


@pytest.mark.slow
def test_transcription_check_with_the_real_whisper_base(smoke, whisper_base):
    model, processor = whisper_base
    sub = smoke.select([0, 1])
    out = H.transcription_check(sub, model, processor, cache=False, progress=False)
    assert all(isinstance(v, bool) for v in out["whisper_ok"])
    texts = out._ctxmix_transcripts
    assert all(len(t) > 5 for t in texts.values())
    for r in out:
        assert r["whisper_ok"] == H.whisper_item_ok(texts[r["item_id"]], r)


# ---------------------------------------------------------------------------------------------
# hub layout -> common schema
# ---------------------------------------------------------------------------------------------
def _hub_like_rows(smoke, n=6):
    """Rows as the study's released data set plausibly stores them: text, label_number,
    template 'det_noun', alignment {'total_start','total_end','intervals':[...]}, audio dict."""
    rows = []
    for r in smoke.select(range(n)):
        rows.append({
            "audio": {"array": np.asarray(r["audio"]["array"], np.float32).tolist(),
                      "sampling_rate": 16000, "path": f"{r['item_id']}.wav"},
            "text": r["transcription"],
            "cue_word": r["cue_word"], "target_word": r["target_word"],
            "target_word_2": r["target_word_2"] or None,
            "alignment": {"total_start": 0.0,
                          "total_end": len(r["audio"]["array"]) / 16000,
                          "intervals": r["alignment"]},
            "template": r["template"].lower(),
            "label_number": "Number_Plur" if r["label"] == "plural" else "Number_Sing",
            "org_id": len(rows),
        })
    return rows


def test_hub_layout_maps_onto_the_schema(smoke, tmp_path):
    from datasets import Dataset

    rows = _hub_like_rows(smoke)
    # bad rows: cue after target, alignment outside the clip, no alignment at all
    bad = dict(rows[0])
    first = rows[0]["alignment"]["intervals"][0]["word"]  # a word only before the cue word
    assert [w["word"] for w in rows[0]["alignment"]["intervals"]].count(first) == 1
    bad["cue_word"], bad["target_word"] = rows[0]["target_word"], first
    rows.append(bad)
    far = dict(rows[1])
    far["alignment"] = {"intervals": [dict(w, start=w["start"] + 60, end=w["end"] + 60)
                                      for w in rows[1]["alignment"]["intervals"]]}
    rows.append(far)
    none = dict(rows[2])
    none["alignment"] = None
    rows.append(none)
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "hub"))
    with pytest.warns(RuntimeWarning, match="3 of 9 rows skipped"):
        ds = H.load_homophony(str(tmp_path / "hub"), progress=False)
    H.check_schema(ds)
    rep = ds._ctxmix_report
    assert rep["rows_in"] == 9 and rep["rows_out"] == 6 and sum(rep["skipped"].values()) == 3
    assert any("after" in e for e in rep["skipped_examples"].values())
    assert any("outside" in e for e in rep["skipped_examples"].values())
    for a, b in zip(ds, smoke.select(range(6))):
        for k in ("transcription", "cue_word", "target_word", "target_word_2", "template",
                  "label", "cue_index", "target_index", "target_index_2", "cue_distance",
                  "cue_token_distance"):
            assert a[k] == b[k], k  # the distances are recomputed from text and alignment
        assert H.item_alignment(a) == H.item_alignment(b)
        assert np.allclose(a["audio"]["array"], b["audio"]["array"])


def test_hub_layout_variants(smoke, tmp_path):
    """Parquet file; alignment stored as a dict of parallel lists under another name; labels as
    spaCy lists; no template column (inferred)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for r in _hub_like_rows(smoke, 4):
        iv = r["alignment"]["intervals"]
        rows.append({"audio": r["audio"], "sentence": r["text"], "cue_word": r["cue_word"],
                     "target_word": r["target_word"], "target_word_2": r["target_word_2"] or "",
                     "word_alignment": {"start": [w["start"] for w in iv],
                                        "end": [w["end"] for w in iv],
                                        "word": [w["word"] for w in iv]},
                     "number": [r["label_number"].split("_")[1]]})
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "part-0.parquet")
    ds = H.load_homophony(str(tmp_path / "part-0.parquet"), progress=False)
    H.check_schema(ds)
    assert ds["label"] == smoke.select(range(4))["label"]
    assert ds["template"] == smoke.select(range(4))["template"]


def test_our_own_saved_set_loads_by_path(smoke):
    ds = H.load_homophony(str(Path(smoke._ctxmix_build_dir) / "dataset"), progress=False)
    H.check_schema(ds)
    assert ds["item_id"] == smoke["item_id"]
    sub = H.load_homophony(str(Path(smoke._ctxmix_build_dir) / "dataset"), n=8, progress=False)
    assert Counter(sub["label"]) == {"singular": 4, "plural": 4}
    assert len(set(sub["pair_id"])) == 4


def test_hub_needs_the_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(H.HubDataUnavailable, match="offline"):
        H.load_homophony("hub")


def test_alignment_readers():
    iv = [{"start": 0.0, "end": 0.5, "word": "les"}, {"start": 0.5, "end": 0.9, "word": "chats"}]
    assert H.as_interval_list(iv) == iv
    assert H.as_interval_list({"intervals": iv}) == iv
    assert H.as_interval_list({"start": [0.0, 0.5], "end": [0.5, 0.9],
                                "word": ["les", "chats"]}) == iv
    assert H.as_interval_list([{"xmin": 0, "xmax": 0.5, "text": "les"},
                                {"xmin": 0.5, "xmax": 0.7, "text": ""},
                                {"xmin": 0.7, "xmax": 0.9, "text": "chats"}])[1]["word"] == "chats"
    with pytest.raises(H.HomophonyDataError):
        H.as_interval_list([{"begin": 0}])
    with pytest.raises(H.HomophonyDataError):
        H.as_interval_list("les chats")


# ---------------------------------------------------------------------------------------------
# non-adjacent items, cue distances, edge silence
# ---------------------------------------------------------------------------------------------
def test_default_quotas_give_at_least_30_percent_non_adjacent():
    for n_pairs in (H.DEFAULT_ITEMS // 2, 250, 1000):
        q = H.variant_quotas(n_pairs)
        assert sum(q.values()) == n_pairs
        per_t = Counter()
        for (t, v), k in q.items():
            per_t[t] += k
            assert v in H.VARIANTS[t]
        assert dict(per_t) == H.template_quotas(n_pairs)
        assert H.far_share(q) >= 0.30, (n_pairs, q)  # 2-4 words between cue and target
    q = H.variant_quotas(H.DEFAULT_ITEMS // 2)
    assert H.far_share(q) == pytest.approx(0.35, abs=0.005)
    assert q[("Pronoun_Verb", "clitic")] > 0 and q[("Det_Noun", "adv_adj_adj")] > 0
    smoke_q = H.variant_quotas(H.SMOKE_ITEMS // 2)  # CI's build has non-adjacent items too
    assert H.far_share(smoke_q) > 0 and smoke_q[("Det_Noun", "adjacent")] > 0
    assert H.far_share({("Det_Noun", "adjacent"): 3, ("Det_Noun", "adj"): 1}) == 0
    with pytest.raises(ValueError, match="unknown variants"):
        H.variant_quotas(10, variant_mix={"Det_Noun": {"clitic": 1.0}})


def _pairs(ds):
    pairs = defaultdict(dict)
    for row in ds:
        pairs[row["pair_id"]][row["label"]] = row
    return pairs


def test_distances_and_intervening_words(larger, smoke):
    from ctxmix_lite import lexicon

    for ds in (smoke, larger):
        dist = Counter(ds["cue_distance"])
        assert dist[1] > 0 and sum(v for d, v in dist.items() if 3 <= d <= 5) > 0
        assert set(dist) <= {1, 2, 3, 4}
        for row in ds:
            assert row["cue_distance"] == row["target_index"] - row["cue_index"]
            assert row["cue_token_distance"] >= row["cue_distance"] >= 1
        for p in _pairs(ds).values():
            sg, pl = p["singular"], p["plural"]
            assert sg["cue_distance"] == pl["cue_distance"]
            for k in range(sg["cue_index"] + 1, sg["target_index"]):  # the words between
                a, b = sg["alignment"][k]["word"], pl["alignment"][k]["word"]
                assert lexicon.known(a) and lexicon.homophones(a, b), (a, b)
                ph = [[x["phone"] for x in r["phones"] if x["word_index"] == k] for r in (sg, pl)]
                assert ph[0] == ph[1] and ph[0], (a, b)
    rep = H.build_report(larger)
    assert rep["checks"]["intervening_lexicon_pairs_checked"] > 0
    assert rep["checks"]["items_without_token_distance"] == 0
    assert sum(rep["counts"]["template_distance_label"].values()) == len(larger)
    assert "by cue_distance" in H.format_report(rep)


def test_token_distance_against_prefix_tokenisation(smoke):
    """cue_token_distance = first target token - last cue token, checked against an independent
    count: the tokens of the text up to the cue's end and up to the target's start (Whisper's
    pre-tokeniser splits at spaces, so prefixes tokenise as in the whole text)."""
    tok = H.decoder_tokenizer()
    if tok is None:
        pytest.skip("no offline Whisper tokenizer")

    def n_tokens(t):
        return len(tok(" " + t, add_special_tokens=False).input_ids)

    for row in smoke:
        text = row["transcription"]
        spans = [(p - 1, p - 1 + len(w)) for w, p in synth.tokenize(text)]
        ci, ti = row["cue_index"], row["target_index"]
        last_cue = n_tokens(text[: spans[ci][1]]) - 1
        first_target = n_tokens(text[: spans[ti][0]].rstrip())
        assert row["cue_token_distance"] == first_target - last_cue, row["transcription"]
    assert H.token_distance("Il a vu les chats.", ["Il", "a", "vu", "les", "chats"], 3, 4, tok) == 1
    assert H.token_distance("Il a vu les chats.", ["il", "a", "vu", "des", "chats"], 3, 4, tok) == -1
    far = H.token_distance("Il a vu les très jolis petits chats.",
                           "Il a vu les très jolis petits chats".split(), 3, 7, tok)
    assert far >= 4


def test_intervening_words_are_checked():
    """Real failures: a pre-nominal adjective whose plural differs (principal/principaux, bel/
    beaux, vieil/vieux) is refused by Lexique; one that makes a liaison before a vowel (grand/
    grands + ami: /t/ vs /z/) is refused by the synthesiser's phones, while an invariant one
    (gros: /z/ in both) passes; an unknown invariant word is refused."""
    from ctxmix_lite import lexicon

    for a, b in (("principal", "principaux"), ("bel", "beaux"), ("vieil", "vieux")):
        assert lexicon.check_pair(a, b).startswith("lexicon_not_homophone")
    assert lexicon.check_pair("blorf", "blorf").startswith("lexicon_unknown")
    for a, b in (("petit", "petits"), ("belles", "belle"), ("gros", "gros"), ("en", "en"),
                 ("très", "très")):
        assert lexicon.check_pair(a, b) is None
    _need_mbrola()

    def spec(sg, pl):
        return H.PairSpec("Det_Noun", (sg, pl), ("le", "les"), ("ami", "amis"), ("", ""), 3, 5,
                          -1, "mb-fr1", 160, 50, 50, variant="adj")

    def run(sg, pl):
        s = spec(sg, pl)
        return H.check_pair_synthesis(s, synth.synthesize(sg, "mb-fr1"),
                                      synth.synthesize(pl, "mb-fr1"))

    assert run("Il a vu le grand ami.", "Il a vu les grands amis.") == \
        "synth_intervening_phones_differ"
    assert run("Il a vu le petit ami.", "Il a vu les petits amis.") == \
        "synth_intervening_phones_differ"
    assert run("Il a vu le gros ami.", "Il a vu les gros amis.") is None


def test_lexicon_failure_of_an_intervening_word_is_excluded_and_counted(tmp_path, monkeypatch):
    _need_mbrola()
    data = tmp_path / "data"
    shutil.copytree(ROOT / "data" / "lexicon", data / "lexicon")
    shutil.copytree(ROOT / "data" / "frames", data / "frames")
    (data / "lexicon" / "nouns.txt").write_text(  # masculine nouns: principal/principaux
        "livre livres m chose\nlapin lapins m animal\nvoisin voisins m personne\n"
        "gâteau gâteaux m aliment\nstylo stylos m chose\n", encoding="utf-8")
    (data / "lexicon" / "adjectives.txt").write_text(
        "principal principaux principale principales chose,aliment,animal,personne -\n"
        "petit petits petite petites chose,aliment,animal,personne -\n", encoding="utf-8")
    monkeypatch.setenv("CTXMIX_WORDLISTS", str(data))
    ds = H.build_offline(n_items=8, out_dir=tmp_path / "b", progress=False, seed=1,
                         mix={"Det_Noun": 1.0}, variant_mix={"Det_Noun": {"adj": 1.0}})
    rep = H.build_report(ds)
    words = {r["alignment"][r["cue_index"] + 1]["word"] for r in ds}
    assert not words & {"principal", "principaux"}
    assert set(ds["cue_distance"]) == {2}
    # principale/principales (feminine) are homophones and may be used; the masculine pair is not
    assert rep["excluded"].get("intervening_lexicon_not_homophone", 0) >= 1
    assert rep["checks"]["intervening_lexicon_failures"] == {
        "principal/principaux": "lexicon_not_homophone"}
    assert sum(rep["candidates_examined"].values()) == 4 + sum(rep["excluded"].values())


def test_pair_check_catches_an_intervening_word():
    spec = H.PairSpec("Det_Noun", ("Il voit le petit chat.", "Il voit les petits chats."),
                      ("le", "les"), ("chat", "chats"), ("", ""), 2, 4, -1, "mb-fr1", 160, 50,
                      50, variant="adj", between=(("petit", "petits"),))

    def fake(text, phones):
        words = [{"start": 0.1 * k, "end": 0.1 * k + 0.1, "word": w}
                 for k, (w, _) in enumerate(synth.tokenize(text))]
        ph = [{"phone": p, "start": 0.0, "end": 0.0, "word_index": k}
              for k, ps in enumerate(phones) for p in ps]
        return synth.Synthesis(text, "mb-fr1", np.zeros(16000, np.float32), 16000, 16000, words,
                               ph)

    ctx = [["i", "l"], ["v", "w", "a"]]
    sg = fake(spec.texts[0], ctx + [["l", "ə"], ["p", "ə", "t", "i"], ["ʃ", "a"]])
    pl = fake(spec.texts[1], ctx + [["l", "e"], ["p", "ə", "t", "i"], ["ʃ", "a"]])
    assert H.check_pair_synthesis(spec, sg, pl) is None
    pl_z = fake(spec.texts[1], ctx + [["l", "e"], ["p", "ə", "t", "i", "z"], ["ʃ", "a"]])
    assert H.check_pair_synthesis(spec, sg, pl_z) == "synth_intervening_phones_differ"


def test_edge_silence_shifts_times_and_is_shared_by_the_pair(smoke):
    _need_mbrola()
    s = synth.synthesize("Il a vu les chats.", "mb-fr1")
    p = H.pad_edges(s, 4000, 6400)
    assert len(p.audio) == len(s.audio) + 10400 and np.array_equal(p.audio[4000:-6400], s.audio)
    assert not p.audio[:4000].any() and not p.audio[-6400:].any()
    for a, b in zip(p.words + p.phones, s.words + s.phones):
        assert a["start"] == pytest.approx(b["start"] + 0.25, abs=1e-12)
        assert a["end"] == pytest.approx(b["end"] + 0.25, abs=1e-12)
    assert p.duration == pytest.approx(s.duration + 0.65)
    with pytest.raises(ValueError):
        H.pad_edges(s, -1, 0)
    edges = H.build_report(smoke)["edge_silence_samples"]
    lo, hi = (round(x * 16000) for x in H.EDGE_SILENCE)
    assert set(edges) == set(smoke["pair_id"])
    assert len({tuple(v) for v in edges.values()}) > 1  # drawn per pair
    for pid, p in _pairs(smoke).items():
        lead, tail = edges[pid]
        assert lo <= lead <= hi and lo <= tail <= hi
        for r in p.values():  # both members: the same pause, times after it
            a = np.asarray(r["audio"]["array"])
            assert not a[:lead].any() and not a[len(a) - tail:].any()
            assert r["alignment"][0]["start"] >= lead / 16000
            assert r["alignment"][-1]["end"] <= (len(a) - tail) / 16000 + 1e-9
            assert min(x["start"] for x in r["phones"]) >= lead / 16000


# ---------------------------------------------------------------------------------------------
# build_offline's options object; the one word split of transcripts
# ---------------------------------------------------------------------------------------------
def test_build_offline_options_object_equals_keywords(smoke):
    out = Path(smoke._ctxmix_build_dir)
    stamp = (out / "report.json").stat().st_mtime_ns
    kw = dict(smoke=True, out_dir=out, progress=False)
    assert H.BuildOptions.resolve(None, kw, where="t") == H.BuildOptions(**kw)
    by_object = H.build_offline(options=H.BuildOptions(**kw))
    by_dict = H.build_offline(options=kw)
    assert by_object["item_id"] == by_dict["item_id"] == smoke["item_id"]
    assert (out / "report.json").stat().st_mtime_ns == stamp  # the same key: loaded, not rebuilt
    with pytest.raises(TypeError, match=r"build_offline\(\).*'n_item'.*did you mean 'n_items'"):
        H.build_offline(n_item=4, out_dir=out, progress=False)
    with pytest.raises(TypeError, match="build_offline"):
        H.build_offline(24)  # settings are keywords (or an options object)


def test_transcript_word_starts_index_the_lower_case_text():
    low = "« l'élève » qu'il aime, -t-il... jusqu'à l’été—peut-être"
    ws = WC.transcript_word_starts(low)
    assert [w for w, _ in ws] == H.transcript_words(low) == [
        "l'", "élève", "qu'", "il", "aime", "t-il", "jusqu'", "à", "l'", "été", "peut-être"]
    for w, a in ws:
        assert low[a: a + len(w)].replace("’", "'") == w


def test_study_word_form_is_norm_word_then_edges_stripped():
    from ctxmix_lite.study.transcripts import normalize_word

    assert H.norm_word("L’") == "l'" and normalize_word("L’") == "l"
    assert normalize_word("Livres.") == "livres" and normalize_word("«L'arbre»") == "l'arbre"
    assert normalize_word("ʼlesʼ") == "les" and normalize_word("...") == normalize_word("'") == ""
    assert normalize_word("-t-il") == "t-il"  # norm_word keeps the hyphen; the study's form strips it


def test_the_generating_code_hash_is_the_one_of_the_shipped_builds():
    """The data-generating functions (source text and order) and synth.py / lexicon.py hash to the
    key part of the builds the shipped results were made from (offline builds 00befd2d23b22a15,
    smoke, and f7a4fb137294e342, default). A refactor that changes it rebuilds the data: change
    this constant only on purpose, with new shipped results."""
    _, ident = B._build_key(24, 0, ["mb-fr1"], H.DEFAULT_MIX, H.load_word_lists())
    assert ident["code_sha256"] == "2bc49f662572b6aa"
    assert [f.__name__ for f in B._generating_code()] == [
        "load_word_lists", "_dets_for", "_fill", "_word_at", "_Prosody", "_noun_phrase",
        "candidate_pairs", "template_quotas", "_largest_remainder", "variant_quotas",
        "check_pair_synthesis", "pad_edges", "text_token_ids", "token_distance",
        "_byte_level_decoder", "_build_rows", "to_dataset", "features"]
