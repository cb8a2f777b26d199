"""Whisper decoder tokens of the homophony items: the tokenizer, a sentence's text tokens and the
cue distance in tokens (``cue_token_distance``, :func:`token_distance`).

Part of :mod:`ctxmix_lite.corpus`; the public names are also importable from :mod:`.homophony`.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Dict, List, Sequence

from .items import norm_word

_TOKENIZER = {}


def decoder_tokenizer():
    """The Whisper tokenizer of the packaged weights (the multilingual vocabulary that Whisper
    base/small/medium share), or None when the weights' files are not installed."""
    if "tok" not in _TOKENIZER:
        try:
            from ctxmix_lite.models.whisper_offline import load_whisper_processor_offline

            _TOKENIZER["tok"] = load_whisper_processor_offline().tokenizer
        except Exception as err:  # WeightsNotInstalledError, ImportError...
            warnings.warn(f"no offline Whisper tokenizer ({type(err).__name__}: {err}): "
                          "cue_token_distance is -1", RuntimeWarning, stacklevel=2)
            _TOKENIZER["tok"] = None
    return _TOKENIZER["tok"]


def tokenizer_identity() -> str:
    """SHA-256 (16 hex) of the packaged tokenizer file, or "none" (part of the build key)."""
    try:
        from ctxmix_lite.models.whisper_offline import source_files

        return hashlib.sha256(Path(source_files()["tokenizer.json"]).read_bytes()).hexdigest()[:16]
    except Exception:
        return "none"


def _byte_level_decoder() -> Dict[str, int]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


_BYTES = _byte_level_decoder()


def text_token_ids(text: str, tokenizer) -> List[int]:
    """Whisper's text tokens of a reference transcription, as the decoder reads it after the
    prompt: ``tokenizer(" " + text.strip(), add_special_tokens=False)`` (Whisper's transcripts
    start with a space; the study tokenises reference text the same way)."""
    return list(tokenizer(" " + str(text).strip(), add_special_tokens=False).input_ids)


def token_distance(text: str, words: Sequence[str], cue_index: int, target_index: int,
                   tokenizer=None) -> int:
    """Cue distance in decoder tokens: ``first token of the target - last token of the cue``, on
    :func:`text_token_ids` of ``text`` (the prompt tokens cancel out).

    1 = the target's first token directly follows the cue's last token: the decoder position that
    *predicts* the target's first token is then the cue's own last token; ``d`` = ``d - 1`` tokens
    between them. A token belongs to every word whose characters (bytes) it carries; ``words`` are
    matched in order to the text's words (``synth.tokenize``). Returns -1 when it cannot be
    computed (no tokenizer; the words of ``text`` are not ``words``).
    """
    from .synth import tokenize

    tok = tokenizer if tokenizer is not None else decoder_tokenizer()
    if tok is None:
        return -1
    t = " " + str(text).strip()
    spans = [(m, m + len(w)) for w, m in ((w, p) for w, p in tokenize(t))]  # 1-based starts
    tw = [w for w, _ in tokenize(t)]
    if [norm_word(w) for w in tw] != [norm_word(w) for w in words]:
        return -1
    # byte span of each word in the utf-8 text
    def byte_span(a, b):  # char [a, b) 0-based -> bytes
        return len(t[:a].encode("utf-8")), len(t[:b].encode("utf-8"))
    cue = byte_span(spans[cue_index][0] - 1, spans[cue_index][1] - 1)
    tgt = byte_span(spans[target_index][0] - 1, spans[target_index][1] - 1)
    ids = text_token_ids(text, tok)
    pos, cue_tokens, tgt_tokens = 0, [], []
    for k, name in enumerate(tok.convert_ids_to_tokens(ids)):
        try:
            n = len(bytes(_BYTES[c] for c in name))
        except (KeyError, TypeError):
            n = len(tok.decode([ids[k]]).encode("utf-8"))
        a, b = pos, pos + n
        pos = b
        if a < cue[1] and b > cue[0]:
            cue_tokens.append(k)
        if a < tgt[1] and b > tgt[0]:
            tgt_tokens.append(k)
    if pos != len(t.encode("utf-8")) or not cue_tokens or not tgt_tokens:
        return -1
    return max(0, tgt_tokens[0] - cue_tokens[-1])


def token_bytes(tokenizer, ids: Sequence[int]) -> List[bytes]:
    """The raw bytes each token carries (Whisper's byte-level BPE); a token that is not
    byte-level reads as the UTF-8 of its decoded text."""
    out = []
    for i, tok in zip(ids, tokenizer.convert_ids_to_tokens(list(ids))):
        try:
            out.append(bytes(_BYTES[c] for c in tok))
        except (KeyError, TypeError):
            out.append(tokenizer.decode([i]).encode("utf-8"))
    return out


#: The functions of this module whose source is hashed into the data build key (in the order of
#: :func:`.pairs.generating_code`).
HASHED_CODE = (text_token_ids, token_distance, _byte_level_decoder)
