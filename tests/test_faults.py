"""Faults: every cache read back is checked, every bad input gets a clear error or a documented
conversion (issue 12).

Cache tests corrupt one file of a clean cache in each way a disk, a copy or an interrupted run can
(missing array, another item's file, truncated, empty, flipped bytes, unwritable folder) and check
that the file is reported by path and that the recomputed result equals the clean run.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ctxmix_lite import audio as A
from ctxmix_lite import study, study_cache
from ctxmix_lite.audio import AlignmentError, AudioError
from ctxmix_lite.study_cache import CacheWarning

SENTS = [  # text, cue, target, target_2, template, label
    ("Les enfants jouent dans le jardin.", 0, 1, 2, "Det_Noun_Verb", "plural"),
    ("Il aime la musique.", 0, 1, -1, "Pronoun_Verb", "singular"),
]


def _item(k):
    from ctxmix_lite import synth

    text, c, t, t2, tpl, lab = SENTS[k]
    try:
        s = synth.synthesize(text, voice="mb-fr1", rate=130)
    except Exception as err:  # pragma: no cover - depends on the machine
        pytest.skip(f"synthesiser unavailable: {err}")
    return dict(item_id=f"f{k}", audio=dict(array=s.audio, sampling_rate=s.sampling_rate, path=""),
                transcription=text, alignment=s.words, cue_index=c, target_index=t, target_index_2=t2,
                template=tpl, label=lab, voice="mb-fr1", pair_id=f"p{k}")


@pytest.fixture(scope="module")
def items():
    return [_item(k) for k in range(len(SENTS))]


TINY = study.ModelRun("openai/whisper-tiny", "random", config_overrides=(("decoder_layers", 1), ("encoder_layers", 1)))


@pytest.fixture(scope="module")
def tiny():
    """Whisper-tiny's architecture, randomly initialised, one encoder and one decoder layer."""
    return TINY.load()


def _run(items, tiny, cache_root, monkeypatch):
    monkeypatch.setenv("CTXMIX_CACHE", str(cache_root))
    return study.run_study(items, models=[TINY], progress=False, loaded={TINY: tiny})


@pytest.fixture(scope="module")
def clean(items, tiny, tmp_path_factory):
    """A clean run and its cache (copied by each test before it breaks something)."""
    root = tmp_path_factory.mktemp("clean") / "cache"
    mp = pytest.MonkeyPatch()
    try:
        res = _run(items, tiny, root, mp)
    finally:
        mp.undo()
    shards = sorted(root.rglob("*.npz"))
    assert len(shards) == len(items)
    return dict(root=root, table=res.table, probe=res.probe)


def _copy_cache(clean, tmp_path) -> Path:
    root = tmp_path / "cache"
    shutil.copytree(clean["root"], root)
    return root


def _shard_of(root: Path, items, k: int) -> Path:
    key = study.item_key(items[k])
    (p,) = list(root.rglob(f"{key}.s{study_cache.SHARD_FORMAT}.npz"))
    return p


def _assert_same_result(res, clean):
    import pandas as pd

    pd.testing.assert_frame_equal(res.table, clean["table"])
    assert res.probe.keys() == clean["probe"].keys()
    for k in res.probe:
        np.testing.assert_array_equal(res.probe[k]["X"], clean["probe"][k]["X"])


def _rewrite_npz(path: Path, drop=None, replace=None):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k != drop}
    arrays.update(replace or {})
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _flip(path: Path, where: float, n: int = 64):
    b = bytearray(path.read_bytes())
    i = int(len(b) * where)
    for j in range(i, min(i + n, len(b))):
        b[j] ^= 0xFF
    path.write_bytes(bytes(b))


def _corruptions():
    def missing_array(p, other):
        with np.load(p) as z:
            name = next(k for k in z.files if k.startswith("dist|"))
        _rewrite_npz(p, drop=name)

    def foreign_key(p, other):
        shutil.copyfile(other, p)

    def truncated(p, other):
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])

    def empty(p, other):
        p.write_bytes(b"")

    def flipped_start(p, other):
        _flip(p, 0.0)

    def flipped_middle(p, other):
        _flip(p, 0.5)

    def flipped_end(p, other):
        _flip(p, 0.97)

    def changed_score(p, other):  # a valid zip whose array differs from what was written
        with np.load(p) as z:
            name = next(k for k in z.files if k.startswith("dist|"))
            a = z[name].copy()
        a[0, 0] += 0.25
        _rewrite_npz(p, replace={name: a})

    def older_format(p, other):
        with np.load(p) as z:
            meta = json.loads(bytes(z["meta"]).decode())
        meta["format"] = 1
        _rewrite_npz(p, replace={"meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)})

    return [missing_array, foreign_key, truncated, empty, flipped_start, flipped_middle, flipped_end,
            changed_score, older_format]


@pytest.mark.parametrize("corrupt", _corruptions(), ids=lambda f: f.__name__)
def test_bad_shard_is_reported_and_recomputed(corrupt, items, tiny, clean, tmp_path, monkeypatch):
    root = _copy_cache(clean, tmp_path)
    bad, other = _shard_of(root, items, 0), _shard_of(root, items, 1)
    corrupt(bad, other)
    with pytest.warns(CacheWarning, match=str(bad).replace(".", r"\.")) as rec:
        res = _run(items, tiny, root, monkeypatch)
    assert len([w for w in rec if issubclass(w.category, CacheWarning)]) == 1
    _assert_same_result(res, clean)
    # the shard was rewritten and now passes every check
    study.core._load_shard(bad, key=study.item_key(items[0]), run=TINY.slug)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        _assert_same_result(_run(items, tiny, root, monkeypatch), clean)


def test_clean_cache_is_used_without_the_model(items, clean, tmp_path, monkeypatch):
    root = _copy_cache(clean, tmp_path)
    def load(self):
        if self.init == "trained":  # the trained twin, asked for transcriptions: offline, as in the clean run
            raise OSError("no trained whisper-tiny offline")
        pytest.fail("a valid cache was recomputed")

    monkeypatch.setattr(study.ModelRun, "load", load)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        monkeypatch.setenv("CTXMIX_CACHE", str(root))
        res = study.run_study(items, models=[TINY], progress=False)
    _assert_same_result(res, clean)


def test_shard_checks_name_what_is_wrong(items, clean, tmp_path):
    root = _copy_cache(clean, tmp_path)
    p, other = _shard_of(root, items, 0), _shard_of(root, items, 1)
    key = study.item_key(items[0])
    res, meta = study.core._load_shard(p, key=key, run=TINY.slug)
    assert meta["key"] == key and meta["format"] == study_cache.SHARD_FORMAT
    with pytest.raises(study_cache.CacheEntryError, match="holds key"):
        study.core._load_shard(other, key=key)
    with pytest.raises(study_cache.CacheEntryError, match="holds run"):
        study.core._load_shard(p, key=key, run="someone_else")
    with pytest.raises(study_cache.CacheEntryError, match=r"\[layers, 99\]"):
        study.core._load_shard(p, expect=dict(n_words=99))
    with pytest.raises(study_cache.CacheEntryError, match="encoder rows missing"):
        study.core._load_shard(p, expect=dict(uses=["noun", "verb"], measures=["nonexistent"], encoder=True))


def test_shards_and_transcripts_are_group_readable(clean):
    mode = study_cache.file_mode()
    assert mode & 0o044 == 0o044 or os.umask(os.umask(0)) & 0o044  # readable by group/others unless umask says no
    for p in clean["root"].rglob("*.npz"):
        assert p.stat().st_mode & 0o777 == mode, (p, oct(p.stat().st_mode))


def test_read_only_cache_computes_in_memory_with_one_warning(items, tiny, clean, tmp_path, monkeypatch):
    root = tmp_path / "cache"
    study_dir = root / "study"
    study_dir.mkdir(parents=True)
    os.chmod(study_dir, 0o555)
    if os.geteuid() == 0:  # root ignores the mode bits: make every write fail as it would
        def denied(folder, suffix):
            raise PermissionError(13, "Permission denied", str(folder))

        monkeypatch.setattr(study_cache, "_mkstemp", denied)
    monkeypatch.setattr(study_cache, "_UNWRITABLE", set())
    try:
        with pytest.warns(CacheWarning, match="cannot be written") as rec:
            res = _run(items, tiny, root, monkeypatch)
    finally:
        os.chmod(study_dir, 0o755)
    assert len([w for w in rec if issubclass(w.category, CacheWarning)]) == 1
    _assert_same_result(res, clean)
    assert not list(root.rglob("*.npz"))


# ---------------------------------------------------------------------------------------------
# transcripts
# ---------------------------------------------------------------------------------------------
@pytest.fixture()
def fake_transcribe(monkeypatch):
    """Counts transcriptions; returns the reference text with made-up ids (the cache is under test)."""
    from ctxmix_lite import capture

    calls = []

    def transcribe(model, processor, audio, language="fr", task="transcribe", sampling_rate=None):
        calls.append(len(audio))
        return f"texte {len(audio)}", [100 + len(calls), 200]

    monkeypatch.setattr(capture, "transcribe", transcribe)
    return calls


def _truncate_json(p, other):
    p.write_text(p.read_text()[:-7])


def _foreign_json(p, other):
    shutil.copyfile(other, p)


def _edited_json(p, other):
    rec = json.loads(p.read_text())
    rec["text"] = "autre chose"
    p.write_text(json.dumps(rec))


def _empty_json(p, other):
    p.write_text("")


@pytest.mark.parametrize("corrupt", [_truncate_json, _foreign_json, _edited_json, _empty_json],
                         ids=lambda f: f.__name__.strip("_"))
def test_bad_transcript_is_reported_and_redone(corrupt, items, tiny, fake_transcribe, tmp_path, monkeypatch):
    monkeypatch.setenv("CTXMIX_CACHE", str(tmp_path / "cache"))
    run = study.ModelRun("openai/whisper-tiny", "trained")
    keys = [study.item_key(it) for it in items]
    model, proc = tiny
    first = study.get_transcriptions(run, items, keys, model, proc, progress=False)
    assert len(fake_transcribe) == 2
    files = sorted((tmp_path / "cache").rglob("*.json"))
    assert len(files) == 2 and all(f.stat().st_mode & 0o777 == study_cache.file_mode() for f in files)
    p = study_cache.transcript_path(files[0].parent, keys[0])
    corrupt(p, study_cache.transcript_path(files[0].parent, keys[1]))
    with pytest.warns(CacheWarning, match=str(p).replace(".", r"\.")):
        again = study.get_transcriptions(run, items, keys, model, proc, progress=False)
    assert len(fake_transcribe) == 3  # only the bad one
    assert again[keys[0]]["text"] == first[keys[0]]["text"] and again[keys[1]] == first[keys[1]]
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        study.get_transcriptions(run, items, keys, model, proc, progress=False)
    assert len(fake_transcribe) == 3


# ---------------------------------------------------------------------------------------------
# the converted Whisper-base cache
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wb_cache(whisper_base):
    from ctxmix_lite import whisper_offline as W

    target = W.default_cache_dir()
    assert W.cache_problem(target, W.source_files()) is None
    return target


@pytest.fixture()
def wb_copy(wb_cache, whisper_base, tmp_path, monkeypatch):
    from ctxmix_lite import whisper_offline as W

    target = tmp_path / "wb"
    shutil.copytree(wb_cache, target)
    calls = []

    def build(progress=True):
        calls.append(1)
        return whisper_base

    monkeypatch.setattr(W, "build_whisper_base_offline", build)
    return target, calls


def _flip_weights(target):
    p = target / "model.safetensors"
    with open(p, "r+b") as f:  # 64 bytes inside the tensor data (past the JSON header)
        f.seek(p.stat().st_size // 2)
        b = bytearray(f.read(64))
        f.seek(p.stat().st_size // 2)
        f.write(bytes(x ^ 0x55 for x in b))
    return p


def _edit_activation(target):
    p = target / "config.json"
    cfg = json.loads(p.read_text())
    cfg["activation_function"] = "relu"
    p.write_text(json.dumps(cfg, indent=2))
    return p


def _break_generation_config(target):
    p = target / "generation_config.json"
    p.write_text(p.read_text()[:40])
    return p


def _edit_tokenizer(target):
    p = target / "tokenizer_config.json"
    cfg = json.loads(p.read_text())
    cfg["model_max_length"] = 7
    p.write_text(json.dumps(cfg))
    return p


@pytest.mark.slow
@pytest.mark.parametrize("corrupt", [_flip_weights, _edit_activation, _break_generation_config, _edit_tokenizer],
                         ids=lambda f: f.__name__.strip("_"))
def test_whisper_cache_checksums(corrupt, wb_copy, wb_cache, whisper_base, caplog):
    from ctxmix_lite import whisper_offline as W

    target, calls = wb_copy
    bad = corrupt(target)
    assert "mismatch" in W.cache_problem(target, W.source_files()) and str(bad) in W.cache_problem(target, W.source_files())
    with caplog.at_level(logging.WARNING, logger=W.__name__):
        model, processor = W.load_whisper_base_offline(cache_dir=target, progress=False)
    assert calls == [1]  # re-converted once
    assert any(str(bad) in r.getMessage() and "re-converting" in r.getMessage() for r in caplog.records)
    assert W.cache_problem(target, W.source_files()) is None
    if bad.name == "tokenizer_config.json":  # re-saved from a loaded processor: same content, other layout
        assert json.loads(bad.read_text())["model_max_length"] != 7
    else:
        assert bad.read_bytes() == (wb_cache / bad.name).read_bytes()
    assert model.config.activation_function == "gelu"
    a, b = model.state_dict(), whisper_base[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_whisper_cache_hashes_each_file_once_per_process(wb_cache):
    from ctxmix_lite import whisper_offline as W
    from ctxmix_lite.models import whisper_cache

    files = W.source_files()
    assert W.cache_problem(wb_cache, files) is None
    n = len(whisper_cache._DIGESTS)
    assert W.cache_problem(wb_cache, files) is None
    assert len(whisper_cache._DIGESTS) == n  # nothing re-hashed
    marker = json.loads((wb_cache / W.MARKER_NAME).read_text())
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= set(marker["files"])
    mode = study_cache.file_mode()
    assert all((wb_cache / f).stat().st_mode & 0o777 == mode for f in marker["files"])


@pytest.mark.slow
def test_whisper_processor_cache_is_checked(wb_copy, caplog):
    from ctxmix_lite import whisper_offline as W

    target, calls = wb_copy
    p = _edit_tokenizer(target)
    (target.parent / f".{target.name}.lock").touch()
    with caplog.at_level(logging.WARNING, logger=W.__name__):
        proc = W.load_whisper_processor_offline(cache_dir=target)
    assert any(str(p) in r.getMessage() for r in caplog.records)
    assert proc.tokenizer.model_max_length != 7 and calls == []


# ---------------------------------------------------------------------------------------------
# audio inputs
# ---------------------------------------------------------------------------------------------
def _tone(sr=16000, seconds=0.5, amp=0.3):
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)


@pytest.mark.parametrize("dtype, bits", [(np.uint8, 8), (np.uint16, 16), (np.uint32, 32)])
def test_unsigned_pcm_is_centred(dtype, bits):
    x = _tone()
    half = 2 ** (bits - 1)
    pcm = np.round(x.astype(np.float64) * half + half).astype(dtype)
    y = A.load_audio(pcm, sampling_rate=16000)
    np.testing.assert_allclose(y, x, atol=1.0 / half)
    assert abs(float(y.mean())) < 2.0 / half  # centred, not in [0, 1]


def test_all_128_uint8_is_silence():
    with pytest.raises(AudioError, match="silent"):
        A.load_audio(np.full(16000, 128, np.uint8), sampling_rate=16000)


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_int64_pcm_is_refused_clearly(dtype):
    with pytest.raises(AudioError, match="64-bit integers have no PCM scale.*astype\\(np.int16\\)"):
        A.load_audio((_tone() * 30000).astype(dtype), sampling_rate=16000)


def test_int8_and_int32_pcm_are_scaled():
    x = _tone()
    np.testing.assert_allclose(A.load_audio((x * 127).astype(np.int8), sampling_rate=16000), x, atol=1 / 64)
    np.testing.assert_allclose(A.load_audio((x * 2**31).astype(np.int32), sampling_rate=16000), x, atol=1e-6)


def test_audio_dict_with_only_a_path(tmp_path):
    import soundfile as sf

    p = tmp_path / "clip.wav"
    sf.write(p, _tone(sr=8000), 8000)
    ref = A.load_audio(p)
    np.testing.assert_array_equal(A.load_audio({"path": str(p)}), ref)
    np.testing.assert_array_equal(A.load_audio({"path": str(p), "array": None, "sampling_rate": None}), ref)
    np.testing.assert_array_equal(A.load_audio({"bytes": p.read_bytes(), "path": "clip.wav"}), ref)
    item = {"audio": {"path": str(p)}}
    np.testing.assert_array_equal(study.audio_of(item), ref)
    from ctxmix_lite.homophony import item_audio

    np.testing.assert_array_equal(item_audio(item), ref)
    with pytest.raises(AudioError, match="none of 'array', 'path' or 'bytes'"):
        A.load_audio({"sampling_rate": 16000})
    with pytest.raises(AudioError, match="not found"):
        A.load_audio({"path": str(tmp_path / "missing.wav")})


def test_sampling_rate_none_in_a_dict_keeps_the_argument():
    x = _tone(sr=8000)
    y = A.load_audio({"array": x, "sampling_rate": None}, sampling_rate=8000)
    assert abs(len(y) - 2 * len(x)) <= 2  # resampled from 8 kHz
    y2 = A.load_audio({"array": x}, sampling_rate=8000)
    np.testing.assert_array_equal(y, y2)
    with pytest.raises(AudioError, match="sampling_rate=8000 but sampling_rate=16000"):
        A.load_audio({"array": x, "sampling_rate": 8000}, sampling_rate=16000)
    with pytest.raises(AudioError, match="without its sampling_rate"):
        A.load_audio({"array": x, "sampling_rate": None})


@pytest.fixture(scope="module")
def w2v():
    from ctxmix_lite.models import load_model

    return load_model("facebook/wav2vec2-base", pretrained=False, config_overrides={"num_hidden_layers": 1})


def test_clip_shorter_than_the_receptive_field_is_refused_before_the_forward_pass(w2v, monkeypatch):
    from ctxmix_lite.capture import capture

    model, proc = w2v
    c = model.config
    assert A.wav2vec2_min_samples(c.conv_kernel, c.conv_stride) == 400
    monkeypatch.setattr(type(model), "forward", lambda *a, **k: pytest.fail("the forward pass ran"))
    short = _tone(seconds=399 / 16000)
    with pytest.raises(AudioError, match=r"at least 400 samples = 0\.025 s"):
        capture(model, proc, short, sampling_rate=16000)
    with pytest.raises(AudioError, match=r"0\.025 s"):
        study.core._ctc_transcribe(model, proc, short)


def test_clip_of_one_receptive_field_works(w2v):
    from ctxmix_lite.capture import capture

    cap = capture(*w2v, _tone(seconds=400 / 16000), sampling_rate=16000)
    assert cap.n_frames == 1


# ---------------------------------------------------------------------------------------------
# alignments
# ---------------------------------------------------------------------------------------------
AL = [{"start": 0.1, "end": 0.3, "word": "le"}, {"start": 0.3, "end": 0.8, "word": "livre"}]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_word_times_are_refused(bad):
    al = [dict(AL[0]), dict(AL[1], end=bad)]
    with pytest.raises(AlignmentError, match=r"item 'x7': word 1 'livre' has a non-finite time"):
        A.check_alignment(al, 1.0, item="x7")
    with pytest.raises(AlignmentError, match="'livre' has a non-finite time"):
        A.words_to_frame_spans(al, 1500, 30.0)
    with pytest.raises(AlignmentError, match="not a finite number"):
        A.time_to_frame(bad, 1500, 30.0)


@pytest.mark.parametrize("duration", [None, 1.0], ids=["no_duration", "duration"])
@pytest.mark.parametrize("alignment, match", [
    ([dict(AL[0], start=0.35)] + AL[1:], "ends before it starts"),  # reversed
    (list(reversed(AL)), "starts .* before the previous word 'livre'"),  # out of order
    ([dict(AL[0], start=0.5, end=0.9), dict(AL[1], start=0.3)], "not in order"),  # overlapping, out of order
    ([dict(AL[0], start=-0.5)] + AL[1:], "outside"),  # negative
])
def test_spans_are_validated_with_or_without_a_duration(alignment, match, duration):
    with pytest.raises(AlignmentError, match=match):
        A.words_to_frame_spans(alignment, 1500, 30.0, audio_duration=duration)


def test_spans_without_a_duration_stay_inside_the_window():
    assert A.words_to_frame_spans(AL, 1500, 30.0) == [(5, 15), (15, 40)]
    with pytest.raises(AlignmentError, match=r"outside the clip \[0, 30\.000\]"):
        A.words_to_frame_spans([dict(AL[0], end=31.0)], 1500, 30.0)
    # the one documented clamp: the window's very end is its last frame
    assert A.words_to_frame_spans([dict(AL[0], end=30.0)], 1500, 30.0) == [(5, 1499)]


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------
def test_misspelt_config_overrides_are_refused():
    from ctxmix_lite.models import load_model

    with pytest.raises(ValueError, match=r"'num_hiden_layers' \(did you mean 'num_hidden_layers'"):
        load_model("facebook/wav2vec2-base", pretrained=False, config_overrides={"num_hiden_layers": 2})
    with pytest.raises(ValueError, match=r"'encoder_layer' \(did you mean 'encoder_layers'"):
        study.ModelRun("openai/whisper-tiny", "random", config_overrides=(("encoder_layer", 2),))
    m, _ = load_model("facebook/wav2vec2-base", pretrained=False, config_overrides={"num_hidden_layers": 2})
    assert len(m.encoder.layers) == 2


def test_a_submodule_in_training_mode_is_refused(tiny, items):
    from ctxmix_lite.capture import capture

    model = copy.deepcopy(tiny[0])
    assert not model.training
    model.model.encoder.layers[0].train()
    with pytest.raises(ValueError, match=r"training mode.*model\.encoder\.layers\.0"):
        capture(model, tiny[1], items[0]["audio"])
    audio = study.audio_of(items[0])
    with pytest.raises(ValueError, match="training mode"):
        study.whisper_rows_capture(model, tiny[1], audio, None, [0, 1])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_models_are_refused_or_converted_with_a_message(dtype, w2v, capsys):
    from ctxmix_lite.capture import capture
    from ctxmix_lite.models import prepare_model

    model = copy.deepcopy(w2v[0]).to(dtype)
    name = str(dtype).replace("torch.", "")
    with pytest.raises(ValueError, match=f"weights are {name}.*model.float\\(\\)"):
        capture(model, w2v[1], _tone(), sampling_rate=16000)
    model, _ = prepare_model(model, w2v[1])
    assert f"converting the model's {name} weights to float32" in capsys.readouterr().out
    assert all(p.dtype == torch.float32 for p in model.parameters())
    capture(model, w2v[1], _tone(), sampling_rate=16000)


# ---------------------------------------------------------------------------------------------
# the study's command line and item counts
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["-1", "0", "abc", "2.5"])
def test_n_items_must_be_positive_or_all(value, capsys):
    with pytest.raises(SystemExit) as e:
        study.main(["--n-items", value])
    assert e.value.code == 2
    assert "--n-items" in capsys.readouterr().err


def test_n_items_values():
    assert study.runs.n_items_arg("all") is None and study.runs.n_items_arg("ALL") is None
    assert study.runs.n_items_arg("3") == 3
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="n_items must be a whole number >= 1"):
            study.run_study([{}], n_items=bad)
        with pytest.raises(ValueError, match="n_items must be a whole number >= 1"):
            study.course_items(n_items=bad)


# ---------------------------------------------------------------------------------------------
# options objects (issue 13): the object and its fields as keywords are the same call
# ---------------------------------------------------------------------------------------------
def test_run_study_settings_object_equals_keywords(items, tiny):
    import pandas as pd

    kw = dict(components=("encoder",), measures=("attention", "value_zeroing"), n_items=1, cache=False,
              progress=False, exclude_misrecognised=False, teacher_forcing="reference")
    a = study.run_study(items, [TINY], loaded={TINY: tiny}, **kw)
    b = study.run_study(items, [TINY], loaded={TINY: tiny}, run_settings=study.RunSettings(**kw))
    pd.testing.assert_frame_equal(a.all_table, b.all_table)
    assert set(a.all_table["measure"]) == {"attention", "value_zeroing"} and set(a.all_table["item"]) == {"f0:noun", "f0:verb"}
    # options= is still the recorded StudyOptions (the decoder definition), beside the run settings
    c = study.run_study(items, [TINY], loaded={TINY: tiny}, options=study.StudyOptions("word_pooled"), **kw)
    assert c.options.decoder_definition == "word_pooled"
    pd.testing.assert_frame_equal(a.all_table, c.all_table)  # encoder only: the definition does not apply
    with pytest.raises(TypeError, match=r"run_study\(\) got unexpected keyword argument\(s\) \['n_item'\]"):
        study.run_study(items, [TINY], n_item=1)


def test_item_distributions_settings_object_equals_keywords(items, tiny):
    model, proc = tiny
    kw = dict(components=("encoder",), measures=("attention_norm",))
    a = study.item_distributions(model, proc, items[0], **kw)
    b = study.item_distributions(model, proc, items[0], options=study.ScoringSettings(**kw))
    # items[0] is a Det_Noun_Verb item: two uses
    assert a["dist"].keys() == b["dist"].keys() == {(u, "encoder", "attention_norm") for u in ("noun", "verb")}
    for k in a["dist"]:
        np.testing.assert_array_equal(a["dist"][k], b["dist"][k])
    with pytest.raises(TypeError, match=r"item_distributions\(\) got unexpected keyword argument\(s\) \['measure'\]"):
        study.item_distributions(model, proc, items[0], measure=("attention",))


def test_get_transcriptions_settings_object_equals_keywords(items, tiny, fake_transcribe, tmp_path, monkeypatch):
    monkeypatch.setenv("CTXMIX_CACHE", str(tmp_path / "cache"))
    run = study.ModelRun("openai/whisper-tiny", "trained")
    keys = [study.item_key(it) for it in items]
    model, proc = tiny
    a = study.get_transcriptions(run, items, keys, model, proc, cache=False, progress=False)
    b = study.get_transcriptions(run, items, keys, model, proc,
                                 options=study.TranscriptionSettings(cache=False, progress=False))
    assert [a[k]["text"] for k in keys] == [b[k]["text"] for k in keys] and len(fake_transcribe) == 4
    assert not list((tmp_path / "cache").rglob("*.json"))  # cache=False reached the function both ways
    with pytest.raises(TypeError, match=r"get_transcriptions\(\) got unexpected keyword argument\(s\) \['lang'\]"):
        study.get_transcriptions(run, items, keys, model, proc, lang="fr")
