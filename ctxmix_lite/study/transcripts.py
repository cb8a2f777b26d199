"""Transcripts and alignments: decoder tokens <-> aligned words, elisions split, exclusions.

Part of the homophony study (:mod:`ctxmix_lite.study`)."""
from __future__ import annotations

import difflib
import re
import unicodedata
from typing import Optional, Sequence

from ctxmix_lite.corpus.items import norm_word
from ctxmix_lite.corpus.tokens import token_bytes
from ctxmix_lite.corpus.whisper_check import transcript_word_starts
from ctxmix_lite.corpus.whisper_check import transcript_words as split_transcript

from .runs import Use


# ================================================================================================
# transcript <-> alignment
# ================================================================================================
_EDGE_PUNCT = re.compile(r"^[^\w']+|[^\w']+$")


def normalize_word(w: str) -> str:
    """The study's matching form of a word: :func:`ctxmix_lite.corpus.items.norm_word` (lower
    case, NFC, typographic apostrophe -> ``'``), then the modifier apostrophe ``ʼ`` read as ``'``
    and every punctuation mark and apostrophe stripped at both ends (``"Livres."`` -> ``"livres"``,
    ``"L'arbre"`` -> ``"l'arbre"``, ``"l'"`` -> ``"l"``)."""
    return _EDGE_PUNCT.sub("", norm_word(w).replace("\u02bc", "'")).strip("'")


def whitespace_word_tokens(token_ids: Sequence[int], tokenizer) -> list:
    """Split a Whisper transcript (text token ids) into whitespace-separated words as written
    (case and punctuation kept; not the check's word split, :func:`transcript_word_tokens`), each
    with the indices of the tokens that carry its characters: ``[(text, [token_index, ...]), ...]``.

    Works on the tokens' raw bytes, so a multi-byte character split over two tokens (é, è, ç...) is
    counted once, in the word it belongs to."""
    words = []
    cur, cur_toks = bytearray(), []
    for k, b in enumerate(token_bytes(tokenizer, token_ids)):
        for byte in b:
            if byte in b" \t\n\r":
                if cur:
                    words.append((bytes(cur), cur_toks))
                cur, cur_toks = bytearray(), []
            else:
                cur.append(byte)
                if not cur_toks or cur_toks[-1] != k:
                    cur_toks.append(k)
    if cur:
        words.append((bytes(cur), cur_toks))
    return [(w.decode("utf-8", errors="replace"), toks) for w, toks in words]


def transcript_word_tokens(token_ids: Sequence[int], tokenizer) -> list:
    """The words of a Whisper transcript split **exactly as the data's transcription check splits
    them** (:func:`ctxmix_lite.corpus.whisper_check.transcript_word_starts`, the one implementation
    of that split: lower case, punctuation dropped, elided prefixes split off, *d'un* -> *d'*, *un*),
    each with the indices of the tokens that carry its characters:
    ``[(word, [token_index, ...]), ...]``. This is the one tokenisation of transcripts of the
    study: its exclusion rule and its decoder columns both use it.

    Works on the tokens' raw bytes (a multi-byte character split over two tokens belongs to both
    tokens' word once); a token that carries characters of two words (``"'un"``) belongs to both."""
    import codecs

    bs = token_bytes(tokenizer, token_ids)
    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    chars, owners, pending = [], [], []
    for k, b in enumerate(bs):
        for byte in b:
            pending.append(k)
            out = dec.decode(bytes([byte]))
            for ch in out:
                if unicodedata.combining(ch) and chars:  # NFC: a combining mark joins its base
                    chars[-1] = unicodedata.normalize("NFC", chars[-1] + ch)
                    owners[-1] = sorted(set(owners[-1]) | set(pending))
                    continue
                chars.append(unicodedata.normalize("NFC", ch))
                owners.append(sorted(set(pending)))
            if out:
                pending = []
    # lower case per character (keeping each character's tokens), then the data check's word split
    text, own = [], []
    for ch, o in zip(chars, owners):
        for c in ch.lower():
            text.append(c)
            own.append(o)
    words = []
    for part, start in transcript_word_starts("".join(text)):
        toks = sorted({t for i in range(start, start + len(part)) for t in own[i]})
        words.append((part, toks))
    return words


def map_transcript(alignment_words: Sequence[str], transcript: Sequence[str]) -> dict:
    """Monotonic word matching (``difflib``) of normalised words: ``{alignment index: transcript
    index}`` for every aligned word that the transcript contains, in order."""
    a = [normalize_word(w) for w in alignment_words]
    b_idx = [k for k, w in enumerate(transcript) if normalize_word(w)]
    b = [normalize_word(transcript[k]) for k in b_idx]
    sm = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    out = {}
    for blk in sm.get_matching_blocks():
        for k in range(blk.size):
            out[blk.a + k] = b_idx[blk.b + k]
    return out


def decoder_positions(alignment: Sequence[dict], token_ids: Sequence[int], tokenizer, prefix_length: int) -> list:
    """For every aligned word, the decoder *input* positions of its tokens in the transcript
    (``prefix_length + token index``), or ``None`` when the transcript lacks the word. Words are
    split as the data's check splits them (:func:`transcript_word_tokens`)."""
    tw = transcript_word_tokens(token_ids, tokenizer)
    m = map_transcript([w["word"] for w in alignment], [t for t, _ in tw])
    out = []
    for w in range(len(alignment)):
        if w in m:
            out.append([prefix_length + k for k in tw[m[w]][1]])
        else:
            out.append(None)
    return out


def misrecognised_words(alignment_words: Sequence[str], transcript: str, use: Use) -> list:
    """The study's exclusion rule for one use: the indices of cue / target words that the
    transcript lacks (matched in order, :func:`map_transcript`), ``[]`` when it has them all. The
    transcript is split into words exactly as the data's ``whisper_ok`` check splits it
    (:func:`ctxmix_lite.corpus.homophony.transcript_words`: elisions split, *d'un* -> *d'*, *un*)."""
    m = map_transcript(list(alignment_words), split_transcript(transcript))
    return [i for i in (*use.cue, use.target) if i not in m]


def check_use(positions: Sequence, use: Use) -> Optional[str]:
    """None when cue and target of ``use`` were transcribed (present, in order), else the reason."""
    missing = [i for i in (*use.cue, use.target) if positions[i] is None]
    if missing:
        return "not transcribed: word(s) " + ", ".join(str(i) for i in missing)
    return None


