"""The homophony study (Mohebbi et al., EMNLP 2023), end to end: cue contribution per layer.

French nouns and verbs whose singular and plural sound the same (*livre / livres*, *trouve /
trouvent*) can only be transcribed right by reading an earlier *cue* word that marks number audibly
(*le / les*, *il / ils* before a vowel). For every item, every model (trained and randomly
initialised), every component and every context-mixing measure, the study asks: how much of what
the target word reads in a layer comes from the cue?

Pipeline, per item and per model (one forward pass each)::

    capture once  ->  rows of the target only  ->  word-level target row  ->  share of the cue

* **Encoder** (Whisper encoder, wav2vec2 / XLSR). Rows = the target word's frames, columns = the
  aligned words (frames of word ``w`` = ``span_to_frames(start_w, end_w)``, ``ceil(F t / T)`` with
  T = 30 s for Whisper and the clip duration for wav2vec2; padding and silence are never columns)::

      S[w]   = mean_{i in target frames} mean_{j in frames(w)} M_ij      (Attention, Attention-Norm)
      S[w]   = mean_{i in target frames} VZ_i(zero all of w's frames at once)       (Value Zeroing)
      s[w]   = S[w] / sum_{w'} S[w']                 (rows re-normalised over aligned words only)

  (Attention is pooled and normalised per head, then averaged over heads, in the encoder and the
  cross-attention; in the decoder it is averaged over heads first, as in the paper's code.)
* **Decoder** (Whisper, teacher-forced on the trained model's own greedy transcription after
  ``<|startoftranscript|><|fr|><|transcribe|><|notimestamps|>``), **the paper's definition by
  default** (``ContextMixingASR``: ``scoring/attentions.py``, ``scoring/valueZeroing.py``,
  ``evaluating/cue_alignment.py``). Rows = the positions that *predict* the target's subword tokens
  (the position before each target token = the token's index in the generated ids); columns =
  **every** decoder input position (prompt tokens and punctuation included); value zeroing zeroes
  one token at a time; each row is normalised over all positions; the cue's columns are its tokens::

      p_r[j] = M_rj / sum_{j'} M_rj'  (all T positions),   cue contribution = mean_r sum_{j in cue tokens} p_r[j]

  Options (:class:`StudyOptions`): ``skip_special_tokens`` (the paper's ``--SKIP_SPECIAL_TOKENS``:
  the first 3 positions dropped, rows renormalised) and ``decoder_scoring="word_pooled"`` (the
  course's earlier definition: columns = the aligned words' tokens, prompt and unaligned tokens
  dropped, ``s_r[w] = sum_{j in w} M_rj / sum_{w'} sum_{j in w'} M_rj``). Every definition comes
  from the same pass and is kept (``StudyResult.variants``), with the mass the target rows put on
  each prompt token (``StudyResult.decoder_mass``).
* **Cross-attention**: the same decoder rows, columns = the aligned words' encoder frames (mean
  over frames for Attention / Attention-Norm, whole word zeroed for Value Zeroing), per-row
  normalisation over aligned words, mean over rows.

**Cue contribution** of a layer = ``sum_{w in cue} s[w]``; figures average it over items.
``Det_Noun_Verb`` items are used twice (cue = det -> target = noun; cue = det + noun -> target =
verb). Items that a trained ASR model of the run did not transcribe with cue and target right and
in order are excluded from every model and component (the paper's rule), and counted.

Speed (the point of ``rows``): a Whisper encoder has 1,500 frames but the study reads only the ~10-40
rows of the target word. The Whisper pass here (:func:`whisper_rows_capture`) runs the model's
forward once with its default attention kernel and hooks on the projections; the attention weights
of the rows the study reads are recomputed from the recorded queries and keys with the eager
formula ``softmax(q_i K^T / sqrt(d_h))`` (tested equal to :func:`ctxmix_lite.capture.capture`), and
checked on every layer of every item: they must rebuild the kernel's own attention output (relative
error ~5e-7 on Whisper-base; a ``CaptureError`` above 1e-4). So no weight is read from sdpa, and
every weight used is verified to be the one the forward pass applied.
Value zeroing runs in the fast rows-only mode of :mod:`ctxmix_lite.value_zeroing` with one column
per aligned word. See ``bench/bench_study.py`` for the cost against a plain forward pass.

Results: one tidy ``pandas.DataFrame`` (item, template, label, model, init, component, measure,
layer, score, ...), cached per (model, init, seed, settings, item) under
``cache_dir()/study/`` (one ``.npz`` shard per item, written atomically: an interrupted run
resumes), transcriptions cached once per trained model and item. Every shard and transcript is
checked when read back (key, format, arrays and shapes, SHA-256) and recomputed, with a warning
naming its path, when it fails: see :mod:`ctxmix_lite.study_cache`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import math
import json
import re
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import torch

from ctxmix_lite.internals.capture_types import LayerCapture
from ctxmix_lite.measures.registry import MEASURE_LABELS, MEASURES, layer_measure

__all__ = [
    "STUDY_VERSION",
    "MEASURES",
    "MEASURE_LABELS",
    "COMPONENT_LABELS",
    "ModelRun",
    "Use",
    "StudyResult",
    "StudyOptions",
    "DECODER_DEFINITIONS",
    "DISTANCE_GROUPS",
    "use_cue_distance",
    "distance_group",
    "transcript_word_tokens",
    "paper_decoder_rows",
    "misrecognised_words",
    "summarize_by_distance",
    "prompt_mass_summary",
    "plot_by_distance",
    "plot_decoder_definitions",
    "default_model_runs",
    "item_uses",
    "item_key",
    "dataset_fingerprint",
    "normalize_word",
    "transcript_words",
    "map_transcript",
    "decoder_positions",
    "whisper_rows_capture",
    "attention_implementation",
    "get_transcriptions",
    "item_distributions",
    "cue_contribution",
    "run_study",
    "summarize",
    "study_cache_dir",
    "audio_of",
    "alignment_of",
    "item_id_of",
    "sum_normalize",
    "NOTEBOOK_DEFAULTS",
]

#: The default parameters of notebooks 05-07 (their ``parameters`` cells repeat them as literals,
#: which papermill needs; tests/test_shipped.py checks they agree): the run the shipped results in
#: ``data/results/`` hold (:mod:`ctxmix_lite.shipped`).
NOTEBOOK_DEFAULTS = dict(model="openai/whisper-base", data="offline", n_items=200, checked_only=True, seed=0,
                         n_examples=3, ig_steps=16, vz_chunk=2)

#: bump when the scores a cached shard holds would change
STUDY_VERSION = 1
# MEASURES, MEASURE_LABELS: the registry's (ctxmix_lite.measures.registry), imported above
COMPONENT_LABELS = {"encoder": "encoder", "decoder": "decoder", "cross": "cross-attention"}
INITS = ("trained", "random")

#: the decoder self-attention definitions the study computes in every pass (one shard holds all)
DECODER_DEFINITIONS = ("paper", "paper+skip_special_tokens", "word_pooled")
#: shard component name of each decoder definition (``"decoder"`` is the paper's)
DECODER_COMPONENTS = {"paper": "decoder", "paper+skip_special_tokens": "decoder[skip_special_tokens]",
                      "word_pooled": "decoder[word_pooled]"}
#: shard component holding the mass the paper-normalised target rows put on each prompt position
PROMPT_MASS = "decoder[prompt_mass]"
#: its columns: <|startoftranscript|><|fr|><|transcribe|><|notimestamps|>
N_PROMPT = 4
#: decoder positions the paper's ``--SKIP_SPECIAL_TOKENS`` drops (evaluating/cue_alignment.py):
#: ``<|startoftranscript|><|fr|><|transcribe|>``; ``<|notimestamps|>`` stays
PAPER_SKIPPED_POSITIONS = 3
#: what a shard holds beyond the encoder / cross rows; part of the shard key (``_settings_tag``)
SCORING_SCHEMA = "decoder:" + ",".join(DECODER_DEFINITIONS) + "+prompt_mass;v2"


@dataclass(frozen=True)
class StudyOptions:
    """How the study scores the Whisper decoder's self-attention (encoder and cross-attention have
    one definition, the paper's).

    decoder_scoring:
        ``"paper"`` (default): the paper's own code (``ContextMixingASR``,
        ``scoring/attentions.py``, ``scoring/valueZeroing.py``, ``evaluating/cue_alignment.py``):
        token level; rows = the decoder positions that *predict* the target's tokens; each row
        normalised over **all** decoder input positions, the prompt
        ``<|startoftranscript|><|fr|><|transcribe|><|notimestamps|>`` and punctuation included;
        cue contribution = the row's mass on the cue's token columns, averaged over the target's
        rows. ``"word_pooled"``: the course's earlier definition: columns = the aligned words'
        tokens (summed), prompt and unaligned tokens dropped, each row renormalised over the words.
    skip_special_tokens:
        the paper's ``--SKIP_SPECIAL_TOKENS`` (``"paper"`` only): drop the first 3 decoder positions
        (``<|startoftranscript|><|fr|><|transcribe|>``) and renormalise each row over the rest.
        It leaves cross-attention unchanged (its rows are normalised over the encoder's words).
    """

    decoder_scoring: str = "paper"
    skip_special_tokens: bool = False

    def __post_init__(self):
        if self.decoder_scoring not in ("paper", "word_pooled"):
            raise ValueError(f"decoder_scoring must be 'paper' or 'word_pooled', got {self.decoder_scoring!r}")
        if self.skip_special_tokens and self.decoder_scoring != "paper":
            raise ValueError("skip_special_tokens is an option of the paper's decoder scoring; 'word_pooled' "
                             "already drops every prompt token")

    @property
    def decoder_definition(self) -> str:
        """One of :data:`DECODER_DEFINITIONS`: the definition of the study's ``decoder`` rows."""
        if self.decoder_scoring == "word_pooled":
            return "word_pooled"
        return "paper+skip_special_tokens" if self.skip_special_tokens else "paper"

    @classmethod
    def make(cls, spec) -> "StudyOptions":
        """``None`` (defaults), a ``StudyOptions``, a dict of its fields, or a definition name of
        :data:`DECODER_DEFINITIONS`."""
        if spec is None:
            return cls()
        if isinstance(spec, StudyOptions):
            return spec
        if isinstance(spec, dict):
            return cls(**spec)
        if isinstance(spec, str):
            if spec not in DECODER_DEFINITIONS:
                raise ValueError(f"unknown decoder definition {spec!r}; choose from {DECODER_DEFINITIONS}")
            return cls("word_pooled") if spec == "word_pooled" else cls("paper", spec.endswith("skip_special_tokens"))
        raise ValueError(f"cannot read study options from {spec!r}")


# ================================================================================================
# model runs
# ================================================================================================
@dataclass(frozen=True)
class ModelRun:
    """One model of the study: a known name (see :data:`ctxmix_lite.models.KNOWN_MODELS`), trained
    weights or a random initialisation (``seed``), optional config overrides (random only, e.g. a
    4-layer XLSR for smoke runs)."""

    name: str
    init: str = "trained"
    seed: int = 0
    config_overrides: tuple = ()  # sorted (key, value) pairs

    def __post_init__(self):
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.config_overrides and self.init != "random":
            raise ValueError("config_overrides only apply to randomly initialised models")
        if self.config_overrides:
            from ctxmix_lite.models.loading import check_config_overrides

            check_config_overrides(self.name, dict(self.config_overrides))

    @classmethod
    def make(cls, spec) -> "ModelRun":
        """``ModelRun``, ``"name"`` (trained), ``("name", "random")`` or a dict of the fields."""
        if isinstance(spec, ModelRun):
            return spec
        if isinstance(spec, str):
            return cls(spec)
        if isinstance(spec, dict):
            d = dict(spec)
            co = d.pop("config_overrides", None) or {}
            return cls(config_overrides=tuple(sorted(dict(co).items())), **d)
        if isinstance(spec, (tuple, list)):
            return cls(*spec)
        raise ValueError(f"cannot read a model run from {spec!r}")

    @property
    def label(self) -> str:
        short = self.name.split("/")[-1]
        extra = "" if not self.config_overrides else "[" + ",".join(f"{k}={v}" for k, v in self.config_overrides) + "]"
        return f"{short}{extra} ({self.init})"

    @property
    def slug(self) -> str:
        s = re.sub(r"[^A-Za-z0-9._-]+", "_", self.name)
        tail = f"{self.init}-seed{self.seed}" if self.init == "random" else "trained"
        if self.config_overrides:
            tail += "-" + hashlib.sha1(repr(self.config_overrides).encode()).hexdigest()[:8]
        return f"{s}__{tail}"

    def load(self, device: str = "cpu"):
        from ctxmix_lite.models.loading import load_model

        if self.init == "trained":
            return load_model(self.name, pretrained=True, device=device)
        return load_model(self.name, pretrained=False, seed=self.seed, device=device,
                          config_overrides=dict(self.config_overrides) or None)


def default_model_runs(hub: bool = False, smoke: bool = False, whisper: str = "openai/whisper-base") -> list:
    """The study's models. Offline: Whisper-base trained (packaged weights) + random, and the XLSR-53
    architecture randomly initialised. ``hub=True`` adds the trained French XLSR checkpoint
    (``jonatasgrosman/wav2vec2-large-xlsr-53-french``). ``smoke=True`` shrinks the random XLSR to 4
    layers (same layer type) so that a CI run stays within its budget."""
    runs = [ModelRun(whisper, "trained"), ModelRun(whisper, "random")]
    xlsr_random = ModelRun(
        "jonatasgrosman/wav2vec2-large-xlsr-53-french" if hub else "facebook/wav2vec2-large-xlsr-53",
        "random",
        config_overrides=(("num_hidden_layers", 4),) if smoke else (),
    )
    if hub:
        runs.append(ModelRun("jonatasgrosman/wav2vec2-large-xlsr-53-french", "trained"))
    runs.append(xlsr_random)
    return runs


# ================================================================================================
# items
# ================================================================================================
@dataclass(frozen=True)
class Use:
    """One analysis of an item: the cue words and the target word (alignment indices)."""

    name: str  # "main" | "noun" | "verb"
    cue: tuple
    target: int


def _opt_int(v) -> Optional[int]:
    if v is None:
        return None
    try:
        v = int(v)
    except (TypeError, ValueError):
        return None
    return v if v >= 0 else None


def item_uses(item) -> list:
    """The analyses of an item. ``Det_Noun_Verb`` items give two, as in the paper: cue = det ->
    target = noun, and cue = det + noun -> target = verb. Others give one (``"main"``)."""
    n = len(item["alignment"])
    ci, ti = _opt_int(item.get("cue_index")), _opt_int(item.get("target_index"))
    if ci is None or ti is None:
        raise ValueError(f"item lacks cue_index/target_index: {item.get('transcription')!r}")
    if not (0 <= ci < ti < n):
        raise ValueError(f"cue_index={ci} must precede target_index={ti} inside the {n} aligned words")
    t2 = _opt_int(item.get("target_index_2"))
    if t2 is not None:  # Det_Noun_Verb: det -> noun, then det + noun -> verb
        if not (ti < t2 < n):
            raise ValueError(f"target_index_2={t2} must follow target_index={ti} inside the {n} aligned words")
        return [Use("noun", (ci,), ti), Use("verb", (ci, ti), t2)]
    return [Use("main", (ci,), ti)]


def use_cue_distance(item, use: Use) -> int:
    """Cue distance of a use in words: ``target_index - (last cue index)`` (1 = adjacent, *le
    livre*; 2 = one word between, *le petit livre*). Computed from the indices; where the item
    carries a ``cue_distance`` field for its first use (``main`` / ``noun``), it must agree."""
    d = int(use.target) - int(max(use.cue))
    f = item.get("cue_distance") if hasattr(item, "get") else None
    if use.name in ("main", "noun") and _opt_int(f) is not None and int(f) != d:
        raise ValueError(f"item {item.get('item_id')!r}: its cue_distance field ({f}) disagrees with its indices "
                         f"(target_index - cue_index = {d})")
    return d


def distance_group(d) -> str:
    """``"adjacent"`` (distance 1) or ``"non-adjacent (>= 2)"``."""
    return "adjacent" if int(d) <= 1 else "non-adjacent (>= 2)"


DISTANCE_GROUPS = ("adjacent", "non-adjacent (>= 2)")


def _token_distance(positions, use: Use) -> Optional[int]:
    """Decoder tokens from the cue's last token to the target's first (1 = the position that
    predicts the target *is* the cue's last token), or None without decoder positions."""
    if not positions:
        return None
    try:
        return int(positions[use.target][0]) - int(max(p for c in use.cue for p in positions[c]))
    except (TypeError, IndexError):
        return None


def audio_of(item) -> np.ndarray:
    """An item's waveform (float32, 16 kHz), whatever the data's audio column holds."""
    from ctxmix_lite.corpus.audio import load_audio

    a = item["audio"]
    if isinstance(a, dict):  # array + sampling_rate, else path or bytes (ctxmix_lite.audio.load_audio)
        return load_audio(a)
    return load_audio(a, 16000)


def alignment_of(item) -> list:
    """An item's word alignment as a list of ``{"start", "end", "word"}`` (seconds), whatever the
    data's alignment column holds (a list of dicts, columnar lists or ``{"intervals": [...]}``)."""
    al = item["alignment"]
    if isinstance(al, dict):  # columnar {start: [...], end: [...], word: [...]} or {"intervals": [...]}
        if "intervals" in al:
            al = al["intervals"]
        else:
            al = [dict(start=s, end=e, word=w) for s, e, w in zip(al["start"], al["end"], al["word"])]
    return [dict(start=float(w["start"]), end=float(w["end"]), word=str(w["word"])) for w in al]


def item_key(item, audio: Optional[np.ndarray] = None) -> str:
    """Content hash of an item (audio samples, transcription, alignment, cue/target indices): the
    cache key, stable across subsets and orderings of a dataset."""
    audio = audio_of(item) if audio is None else audio
    h = hashlib.sha1()
    meta = dict(
        transcription=item.get("transcription"),
        alignment=alignment_of(item),
        cue=item.get("cue_index"),
        target=item.get("target_index"),
        target2=item.get("target_index_2"),
        template=item.get("template"),
    )
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    h.update(np.ascontiguousarray(audio, dtype=np.float32).tobytes())
    return h.hexdigest()[:16]


def dataset_fingerprint(keys: Iterable[str]) -> str:
    """Fingerprint of a set of items: hash of their sorted content keys."""
    return hashlib.sha1("\n".join(sorted(keys)).encode()).hexdigest()[:16]


def item_id_of(item, index: int) -> str:
    """An item's identifier (its ``id``, ``item_id`` or ``uid`` field), else its zero-padded index."""
    for k in ("id", "item_id", "uid"):
        if item.get(k) is not None:
            return str(item[k])
    return f"{index:04d}"


# ================================================================================================
# transcript <-> alignment
# ================================================================================================
_EDGE_PUNCT = re.compile(r"^[^\w']+|[^\w']+$")


def normalize_word(w: str) -> str:
    """Lower case, NFC, typographic apostrophe -> ``'``, punctuation stripped at both ends
    (``"Livres."`` -> ``"livres"``, ``"L'arbre"`` -> ``"l'arbre"``)."""
    w = unicodedata.normalize("NFC", str(w)).lower().replace("\u2019", "'").replace("\u02bc", "'")
    return _EDGE_PUNCT.sub("", w).strip("'") if w.strip("'") else ""


def _bytes_to_unicode() -> dict:
    """GPT-2 byte-level BPE table: byte -> printable character (the inverse decodes tokens)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


_BYTE_DECODER = {c: b for b, c in _bytes_to_unicode().items()}


def _token_bytes(tokenizer, ids: Sequence[int]) -> list:
    out = []
    for i, tok in zip(ids, tokenizer.convert_ids_to_tokens(list(ids))):
        try:
            out.append(bytes(_BYTE_DECODER[c] for c in tok))
        except (KeyError, TypeError):  # not a byte-level token: fall back to its decoded text
            out.append(tokenizer.decode([i]).encode("utf-8"))
    return out


def transcript_words(token_ids: Sequence[int], tokenizer) -> list:
    """Split a Whisper transcript (text token ids) into whitespace-separated words, each with the
    indices of the tokens that carry its characters: ``[(text, [token_index, ...]), ...]``.

    Works on the tokens' raw bytes, so a multi-byte character split over two tokens (é, è, ç...) is
    counted once, in the word it belongs to."""
    words = []
    cur, cur_toks = bytearray(), []
    for k, b in enumerate(_token_bytes(tokenizer, token_ids)):
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


_KEEP_CHAR = re.compile(r"[\w'\- ]")
_ELIDED = re.compile(r"^((?:[a-z]|qu|jusqu|lorsqu|puisqu)')(.+)$")


def transcript_word_tokens(token_ids: Sequence[int], tokenizer) -> list:
    """The words of a Whisper transcript split **exactly as the data's transcription check splits
    them** (:func:`ctxmix_lite.homophony.transcript_words`: lower case, punctuation dropped, elided
    prefixes split off, *d'un* -> *d'*, *un*), each with the indices of the tokens that carry its
    characters: ``[(word, [token_index, ...]), ...]``. This is the one tokenisation of transcripts
    of the study: its exclusion rule and its decoder columns both use it.

    Works on the tokens' raw bytes (a multi-byte character split over two tokens belongs to both
    tokens' word once); a token that carries characters of two words (``"'un"``) belongs to both."""
    import codecs

    bs = _token_bytes(tokenizer, token_ids)
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
    # per character, the steps of homophony.transcript_words: lower case, ' for the typographic
    # apostrophe, everything but word characters, ' - and space -> space
    text, own = [], []
    for ch, o in zip(chars, owners):
        for c in ch.lower().replace("\u2019", "'"):
            text.append(c if _KEEP_CHAR.match(c) else " ")
            own.append(o)
    words = []
    for m in re.finditer(r"\S+", "".join(text)):
        w, a = m.group(0), m.start()
        e = _ELIDED.match(w)
        if e:
            parts = [(e.group(1), a), (e.group(2), a + len(e.group(1)))]
        else:
            core = w.strip("-'")
            parts = [(core, a + (len(w) - len(w.lstrip("-'"))))] if core else []
        for part, start in parts:
            if part:
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
    (:func:`ctxmix_lite.homophony.transcript_words`: elisions split, *d'un* -> *d'*, *un*)."""
    from ctxmix_lite.corpus.homophony import transcript_words as split_transcript

    m = map_transcript(list(alignment_words), split_transcript(transcript))
    return [i for i in (*use.cue, use.target) if i not in m]


def check_use(positions: Sequence, use: Use) -> Optional[str]:
    """None when cue and target of ``use`` were transcribed (present, in order), else the reason."""
    missing = [i for i in (*use.cue, use.target) if positions[i] is None]
    if missing:
        return "not transcribed: word(s) " + ", ".join(str(i) for i in missing)
    return None


# ================================================================================================
# attention implementation switch and the rows-only Whisper capture
# ================================================================================================
@contextlib.contextmanager
def attention_implementation(model, impl: str):
    """Temporarily run ``model`` with another attention kernel (e.g. ``"sdpa"`` for a plain forward
    or generation, where no weights are read), restoring the previous one afterwards."""
    old = getattr(model.config, "_attn_implementation", None) or "eager"
    if old == impl:
        yield model
        return
    model.set_attn_implementation(impl)
    try:
        yield model
    finally:
        model.set_attn_implementation(old)


def _heads(x: torch.Tensor, H: int) -> torch.Tensor:
    """``[T, H*dh]`` -> ``[H, T, dh]``."""
    T, D = x.shape
    return x.reshape(T, H, D // H).permute(1, 0, 2).contiguous()


def _no_rerun(positions):
    raise NotImplementedError(
        "a rows-only capture has no reference re-run; use ctxmix_lite.capture.capture() for "
        "method='reference'"
    )


def _eager_rows(q_rows: torch.Tensor, k: torch.Tensor, scaling: float, H: int, query_pos=None) -> torch.Tensor:
    """Eager attention weights of some query rows: ``softmax((q_i * s) K^T)`` per head ``[H, R, Tk]``
    (Whisper scales the query projection before the product, as transformers does). ``query_pos``:
    the rows' positions for a causal mask (keys after the query get probability 0)."""
    q = _heads(q_rows * scaling, H)
    kk = _heads(k, H)
    scores = torch.matmul(q, kk.transpose(1, 2))  # [H, R, Tk]
    if query_pos is not None:
        qp = torch.as_tensor(query_pos)[:, None]
        future = torch.arange(k.shape[0])[None, :] > qp  # j > i
        scores = scores.masked_fill(future[None], float("-inf"))
    return torch.softmax(scores, dim=-1)


def _decoder_self_post(layer, k_enc: torch.Tensor, v_enc: torch.Tensor, final_norm):
    """The position-wise rest of a Whisper decoder layer after its self-attention, for fixed
    encoder states: ``h1 = x + SelfAttn``; ``h2 = h1 + CrossAttn(LN2(h1))``; ``out = h2 + FFN(LN3(h2))``
    (+ final norm). The cross-attention reuses the keys / values recorded in the forward pass
    (``k_enc``, ``v_enc`` ``[Tk, D]``) instead of projecting 1,500 encoder states again per call;
    same numbers as :func:`ctxmix_lite.capture._post_whisper_decoder_self` (tested)."""
    ca = layer.encoder_attn
    H = ca.num_heads
    kh, vh = _heads(k_enc, H), _heads(v_enc, H)  # [H, Tk, dh]

    def post(resid, attn_out):
        h = resid + attn_out  # [N, D]
        N = h.shape[0]
        q = _heads(ca.q_proj(layer.encoder_attn_layer_norm(h)) * ca.scaling, H)  # [H, N, dh]
        a = torch.softmax(torch.matmul(q, kh.transpose(1, 2)), dim=-1)  # [H, N, Tk]
        cross = ca.out_proj(torch.matmul(a, vh).permute(1, 0, 2).reshape(N, -1))
        h = h + cross
        out = h + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(h))))
        return out if final_norm is None else final_norm(out)

    return post


def whisper_rows_capture(model, processor, audio: np.ndarray, decoder_ids: Optional[Sequence[int]],
                         encoder_rows: Sequence[int], attn_implementation: str = "sdpa"):
    """One forward pass of a Whisper model (its default attention kernel) with hooks; returns
    ``{"encoder": [LayerCapture], "decoder": [...], "cross": [...], "encoder_hidden": [L+1, R, D],
    "decoder_hidden": [L+1, T, D]}``.

    Encoder captures hold only the query rows ``encoder_rows`` (``weights [H, R, 1500]``, ``resid``,
    ``attn_out``, ``out`` ``[R, D]``); values, ``W_O`` and ``post`` are those of the full layer, so
    :func:`~ctxmix_lite.attention_norm.attention_norm` and the fast
    :func:`~ctxmix_lite.value_zeroing.value_zeroing` give exactly the rows of the full matrices.
    Decoder and cross-attention captures hold every decoder position (a few dozen). Weights are
    recomputed from the recorded queries and keys with the eager formula; ``rerun`` is not
    available (use :func:`ctxmix_lite.capture.capture` for the reference loop).

    ``attn_implementation``: the kernel the forward pass runs with (default ``"sdpa"``, the
    transformers default; no weights are read from it), restored afterwards. Every capture is
    then verified (:func:`verify_recomputed_weights`): the weights recomputed from q and k must
    rebuild the kernel's own attention output row by row, else a ``CaptureError`` is raised -- the
    weights the measures read are provably the ones the forward pass applied.
    """
    from ctxmix_lite.internals.capture import (
        post_whisper_cross,
        post_whisper_encoder,
        whisper_parts,
        model_device,
        on_device,
        whisper_features,
        whisper_ffn_parts,
    )

    from ctxmix_lite.models.loading import check_analysis_state

    check_analysis_state(model)  # eval mode everywhere, float32
    encoder, decoder = whisper_parts(model)
    rows = torch.as_tensor(list(encoder_rows), dtype=torch.long)
    if rows.numel() == 0:
        raise ValueError("encoder_rows is empty")
    dev = model_device(model)  # the model runs there; the captures are returned on the CPU
    feats = whisper_features(processor, audio).to(dev)
    store: dict = {}
    handles = []

    def put(key, name, value):
        store.setdefault(key, {})[name] = value

    def reg_layer(key, layer):
        def pre(m, args, kwargs):
            put(key, "in", (args[0] if args else kwargs["hidden_states"])[0].detach())

        def post(m, args, kwargs, out):
            put(key, "out", (out[0] if isinstance(out, tuple) else out)[0].detach())

        handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(layer.register_forward_hook(post, with_kwargs=True))

    def reg_attn(key, attn, q_rows=None):
        def out_hook(m, args, kwargs, out):
            put(key, "attn_out", (out[0] if isinstance(out, tuple) else out)[0].detach())

        handles.append(attn.register_forward_hook(out_hook, with_kwargs=True))
        handles.append(attn.q_proj.register_forward_hook(
            lambda m, a, o: put(key, "q", (o[0] if q_rows is None else o[0, q_rows]).detach())))
        handles.append(attn.k_proj.register_forward_hook(lambda m, a, o: put(key, "k", o[0].detach())))
        handles.append(attn.v_proj.register_forward_hook(lambda m, a, o: put(key, "v", o[0].detach())))

    for i, layer in enumerate(encoder.layers):
        reg_layer(("encoder", i), layer)
        reg_attn(("encoder", i), layer.self_attn, rows)
    need_dec = decoder_ids is not None
    if need_dec:
        for i, layer in enumerate(decoder.layers):
            reg_layer(("decoder", i), layer)
            reg_attn(("decoder", i), layer.self_attn)
            reg_attn(("cross", i), layer.encoder_attn)
    try:
        with torch.no_grad(), attention_implementation(model, attn_implementation):
            enc = encoder(feats).last_hidden_state
            if need_dec:
                decoder(input_ids=torch.tensor([list(decoder_ids)], device=dev), encoder_hidden_states=enc, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    on_model = store  # as recorded, on the model's device (the cross-attention keys / values for post)
    if dev.type != "cpu":
        store = {k: {n: v.cpu() for n, v in d.items()} for k, d in store.items()}

    out: dict = {}
    n_enc, n_dec = len(encoder.layers), len(decoder.layers)
    caps, hidden = [], []
    with torch.no_grad():
        for i, layer in enumerate(encoder.layers):
            s = store[("encoder", i)]
            attn = layer.self_attn
            fn = encoder.layer_norm if i == n_enc - 1 else None
            lo = s["out"][rows]
            if fn is not None:
                lo = on_device(fn, dev)(lo)
            if i == 0:
                hidden.append(s["in"][rows])
            hidden.append(lo)
            caps.append(LayerCapture(
                component="encoder", layer=i,
                weights=_eager_rows(s["q"], s["k"], attn.scaling, attn.num_heads),
                values=_heads(s["v"], attn.num_heads),
                W_O=attn.out_proj.weight.detach().cpu(),
                b_O=None if attn.out_proj.bias is None else attn.out_proj.bias.detach().cpu(),
                resid=s["in"][rows], attn_out=s["attn_out"][rows], out=lo,
                post=on_device(post_whisper_encoder(layer, fn), dev), rerun=_no_rerun,
                causal=False, final_norm_applied=fn is not None, ffn=whisper_ffn_parts(layer, fn) if dev.type == "cpu" else None,
            ))
        out["encoder"] = caps
        out["encoder_hidden"] = torch.stack(hidden)
        if need_dec:
            dcaps, ccaps, dhidden = [], [], []
            T = len(decoder_ids)
            for i, layer in enumerate(decoder.layers):
                sd, sc = store[("decoder", i)], store[("cross", i)]
                fn = decoder.layer_norm if i == n_dec - 1 else None
                lo = sd["out"] if fn is None else on_device(fn, dev)(sd["out"])
                if i == 0:
                    dhidden.append(sd["in"])
                dhidden.append(lo)
                sa, ca = layer.self_attn, layer.encoder_attn
                dcaps.append(LayerCapture(
                    component="decoder", layer=i,
                    weights=_eager_rows(sd["q"], sd["k"], sa.scaling, sa.num_heads, query_pos=torch.arange(T)),
                    values=_heads(sd["v"], sa.num_heads), W_O=sa.out_proj.weight.detach().cpu(),
                    b_O=None if sa.out_proj.bias is None else sa.out_proj.bias.detach().cpu(),
                    resid=sd["in"], attn_out=sd["attn_out"], out=lo,
                    post=on_device(_decoder_self_post(layer, on_model[("cross", i)]["k"],
                                                      on_model[("cross", i)]["v"], fn), dev), rerun=_no_rerun,
                    causal=True, final_norm_applied=fn is not None,
                ))
                ccaps.append(LayerCapture(
                    component="cross", layer=i,
                    weights=_eager_rows(sc["q"], sc["k"], ca.scaling, ca.num_heads),
                    values=_heads(sc["v"], ca.num_heads), W_O=ca.out_proj.weight.detach().cpu(),
                    b_O=None if ca.out_proj.bias is None else ca.out_proj.bias.detach().cpu(),
                    resid=sd["in"] + sd["attn_out"],  # x + SelfAttn(LN1(x)) enters the cross block
                    attn_out=sc["attn_out"], out=lo,
                    post=on_device(post_whisper_cross(layer, fn), dev), rerun=_no_rerun,
                    causal=False, final_norm_applied=fn is not None, ffn=whisper_ffn_parts(layer, fn) if dev.type == "cpu" else None,
                ))
            out["decoder"], out["cross"] = dcaps, ccaps
            out["decoder_hidden"] = torch.stack(dhidden)
        for comp in ("encoder", "decoder", "cross"):
            for lc in out.get(comp, []):
                verify_recomputed_weights(lc, attn_implementation)
    return out


#: how far the attention output rebuilt from the recomputed weights may be from the kernel's own
#: output, relative to that output's largest entry (float32 kernels differ by ~1e-6)
RECOMPUTE_RTOL = 1e-4


def verify_recomputed_weights(lc: LayerCapture, kernel: str = "sdpa") -> float:
    """Check that the weights recomputed with the eager formula are the ones the attention kernel
    applied: ``(sum_j alpha_ij^h v_j^h) W_O + b_O`` must give back the block output the forward
    pass produced, for every captured row. Returns the relative error; raises
    :class:`ctxmix_lite.capture.CaptureError` when it exceeds :data:`RECOMPUTE_RTOL` (a kernel that
    masks, scales or mixes differently: run the reference :func:`ctxmix_lite.capture.capture`,
    which reads the weights from the eager path)."""
    from ctxmix_lite.internals.capture import CaptureError

    from ctxmix_lite.internals.layer import merge_heads

    rebuilt = merge_heads(torch.matmul(lc.weights, lc.values)) @ lc.W_O.T  # Concat_h(A^h V^h) W_O^T
    if lc.b_O is not None:
        rebuilt = rebuilt + lc.b_O
    scale = float(lc.attn_out.abs().max().clamp_min(1e-12))
    err = float((rebuilt - lc.attn_out).abs().max()) / scale
    if not err <= RECOMPUTE_RTOL:
        raise CaptureError(
            f"{lc.component} layer {lc.layer}: the attention weights recomputed from q and k do not "
            f"reproduce the {kernel} kernel's attention output (relative error {err:.1e} > "
            f"{RECOMPUTE_RTOL:.0e}); use ctxmix_lite.capture.capture (eager attention) for this model")
    return err


# ================================================================================================
# word-level target rows
# ================================================================================================
def sum_normalize(x: np.ndarray) -> np.ndarray:
    """Divide the last axis by its sum; an all-zero vector stays zero."""
    s = x.sum(-1, keepdims=True)
    return np.divide(x, s, out=np.zeros_like(x), where=s > 0)


def _span_mean_matrix(spans, n_keys: int) -> torch.Tensor:
    """``[Tk, W]`` with ``1/len(w)`` on the frames of word ``w``: ``M @ A`` = mean over each span."""
    m = torch.zeros(n_keys, len(spans))
    for w, (f, l) in enumerate(spans):
        m[f : l + 1, w] = 1.0 / (l - f + 1)
    return m


def keys_upto(lc: LayerCapture, n_keys: int) -> LayerCapture:
    """A view of ``lc`` with only its first ``n_keys`` keys (weights and values). Row-selected
    Attention, Attention-Norm and fast value zeroing of span columns inside ``[0, n_keys)`` are
    unchanged (``attn_out`` keeps the full attention; ``delta`` only reads the span's keys), and
    the ``v_j W_O`` products shrink from 1,500 Whisper frames to the speech part of the clip."""
    if n_keys >= lc.weights.shape[-1]:
        return lc
    return dataclasses.replace(lc, weights=lc.weights[..., :n_keys], values=lc.values[:, :n_keys])


def _with_cached_pv(lc: LayerCapture) -> LayerCapture:
    """Compute ``v_j^h W_O^h`` once per layer for all the measures and uses that read it."""
    pv = lc.projected_values()
    lc.projected_values = lambda: pv  # an instance attribute shadows the method
    return lc


def _encoder_rows(lc: LayerCapture, rows, groups, spans, measure: str) -> list:
    """Encoder (frame-keyed, rows pooled): one ``s[w]`` over aligned words per group of rows.

    ``rows``: query rows of ``lc`` (the union of every use's target frames); ``groups``: for each
    use, positions in ``rows`` of its target's frames. Scores are computed once for all rows::

        attention:       S_h[w] = mean_{i in target} mean_{j in w} alpha^h_ij, normalised per head, mean over h
        attention_norm:  S[w]   = mean_{i in target} mean_{j in w} AN_ij,      normalised
        value_zeroing:   S[w]   = mean_{i in target} VZ_i(w zeroed at once),   normalised
    """
    Tk = lc.weights.shape[-1]
    r = torch.as_tensor(rows, dtype=torch.long)
    if measure == "attention":
        a = (lc.weights[:, r, :] @ _span_mean_matrix(spans, Tk)).double().numpy()  # [H, R, W]
        return [sum_normalize(a[:, g].mean(1)).mean(0) for g in groups]  # rows pooled, per-head norm, head mean
    m = _raw_span_scores(lc, r, spans, measure)
    return [sum_normalize(m[g].mean(0)) for g in groups]


def _raw_span_scores(lc: LayerCapture, r: torch.Tensor, spans, measure: str) -> np.ndarray:
    """``[R, W]`` raw scores of a registry measure over word spans: Attention-Norm as span *means*
    (the registry's span sums / span length), value zeroing with the whole word zeroed at once."""
    _check_study_measure(measure)
    if measure == "attention_norm":
        lens = torch.tensor([l - f + 1 for f, l in spans], dtype=torch.float32)
        return (layer_measure(lc, measure, rows=r, spans=spans) / lens).double().numpy()  # span sums -> means
    return layer_measure(lc, measure, rows=r, spans=spans, method="fast", normalize=False).double().numpy()


def _check_study_measure(measure: str) -> None:
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; choose from {MEASURES}")


def _per_row_words(m: np.ndarray, word_cols) -> np.ndarray:
    """``[..., R, Tk]`` token scores -> ``[..., R, W]`` summed over each word's columns."""
    out = np.zeros(m.shape[:-1] + (len(word_cols),))
    for w, cols in enumerate(word_cols):
        if cols:
            out[..., w] = m[..., cols].sum(-1)
    return out


def _decoder_rows(lc: LayerCapture, rows, groups, word_tokens, measure: str, m: Optional[np.ndarray] = None) -> list:
    """Decoder self-attention, the course's **word-pooled** variant (option
    ``decoder_scoring="word_pooled"``; not the paper's): rows = positions predicting the target
    tokens, columns = the aligned words' tokens (summed; prompt and unaligned tokens dropped), each
    row renormalised over the words, then the mean over a use's rows. ``m``: the raw ``[R, T]``
    scores if already computed (:func:`_decoder_token_scores`)."""
    cols = [list(t) if t else [] for t in word_tokens]
    if m is None:
        m = _decoder_token_scores(lc, rows, measure)
    words = sum_normalize(_per_row_words(m, cols))  # [R, W]
    return [words[g].mean(0) for g in groups]


def _decoder_token_scores(lc: LayerCapture, rows, measure: str) -> np.ndarray:
    """``[R, T]`` raw decoder scores of some query rows over every decoder input position, as the
    paper builds them: attention averaged over heads (softmax rows over all positions),
    Attention-Norm (``summedNorms``), value zeroing one token at a time (the paper fills only the
    columns ``j <= i``: ``vz_dec_matrix[l, t:, t]``; later columns are 0)."""
    _check_study_measure(measure)
    r = torch.as_tensor(rows, dtype=torch.long)
    if measure == "attention":
        m = lc.weights[:, r, :].mean(0).double().numpy()
    elif measure == "attention_norm":
        m = layer_measure(lc, measure, rows=r).double().numpy()
    else:
        m = layer_measure(lc, measure, rows=r, method="fast", normalize=False).double().numpy()
        m = np.where(np.arange(m.shape[-1])[None, :] > r.numpy()[:, None], 0.0, m)  # causal, as the paper
    return m


def paper_decoder_rows(m: np.ndarray, groups, word_tokens, skip_special_tokens: bool = False,
                       n_prompt: int = N_PROMPT) -> tuple:
    """The paper's decoder definition on raw token scores ``m`` ``[R, T]`` (rows = the positions
    predicting the target tokens): each row normalised over **all** ``T`` input positions (with
    ``skip_special_tokens``: the first :data:`PAPER_SKIPPED_POSITIONS` dropped first); returns
    ``(per_word, prompt)``: for each group of rows (a use's target tokens), ``[W]`` the mean over
    its rows of the row's mass on each aligned word's tokens -- the cue contribution is the sum over
    the cue words, ``mean_r sum_{j in cue tokens} m_rj``, i.e. ``cue_alignment.py``'s dot product
    with the binary cue vector -- and ``[n_prompt]`` the mean mass on each prompt position."""
    m = np.array(m, dtype=np.float64, copy=True)
    if skip_special_tokens:
        m[:, :PAPER_SKIPPED_POSITIONS] = 0.0
    p = sum_normalize(m)  # over all positions
    words = _per_row_words(p, [list(t) if t else [] for t in word_tokens])
    per_word = [words[g].mean(0) for g in groups]
    prompt = [p[g][:, :n_prompt].mean(0) for g in groups]
    return per_word, prompt


def _cross_rows(lc: LayerCapture, rows, groups, spans, measure: str) -> list:
    """Cross-attention: decoder rows, aligned words' encoder frames as columns (mean over frames;
    value zeroing: the word zeroed at once), each row normalised, mean over a use's rows."""
    Tk = lc.weights.shape[-1]
    r = torch.as_tensor(rows, dtype=torch.long)
    if measure == "attention":
        a = sum_normalize((lc.weights[:, r, :] @ _span_mean_matrix(spans, Tk)).double().numpy())  # [H, R, W]
        return [a[:, g].mean(0).mean(0) for g in groups]
    m = sum_normalize(_raw_span_scores(lc, r, spans, measure))
    return [m[g].mean(0) for g in groups]


def _frame_spans(alignment, n_frames: int, window: float, duration: float) -> list:
    from ctxmix_lite.corpus.audio import words_to_frame_spans

    return words_to_frame_spans(alignment, n_frames, window, duration)


def item_distributions(
    model,
    processor,
    item,
    uses: Optional[Sequence[Use]] = None,
    decoder_ids: Optional[Sequence[int]] = None,
    prefix_length: int = 4,
    components: Optional[Sequence[str]] = None,
    measures: Sequence[str] = MEASURES,
    audio: Optional[np.ndarray] = None,
) -> dict:
    """Everything the study keeps about one item and one model, from one forward pass.

    Returns ``{"dist": {(use, component, measure): [L, W] target-row scores per aligned word},
    "probe": {(use, component): [L+1, D] mean hidden state of the target (encoder)
    or of the positions predicting it (decoder)}, "positions": decoder positions per word,
    "n_frames": ..., "window": ...}``. ``decoder_ids``: full decoder input (prefix + transcript
    tokens) for Whisper's decoder and cross-attention; None -> encoder only.

    Components of ``dist``: ``"encoder"`` and ``"cross"`` (rows normalised over the aligned words);
    ``"decoder"`` (the paper's definition: each row normalised over *all* decoder positions, so a
    word's entry is its share of the whole row and the entries do not sum to 1),
    ``"decoder[skip_special_tokens]"``, ``"decoder[word_pooled]"`` (see :class:`StudyOptions`) and
    ``"decoder[prompt_mass]"`` (``[L, prefix_length]``: the paper-normalised mass on each prompt
    position).
    """
    from ctxmix_lite.models.loading import model_family

    family = model_family(model)
    audio = audio_of(item) if audio is None else audio
    alignment = alignment_of(item)
    uses = item_uses(item) if uses is None else list(uses)
    dur = len(audio) / 16000
    bad = [m for m in measures if m not in MEASURES]
    if bad:
        raise ValueError(f"unknown measure(s) {bad}; choose from {MEASURES}")
    if family == "whisper":
        comps = list(components or ("encoder", "decoder", "cross"))
        n_frames, window = 1500, 30.0
    else:
        comps = list(components or ("encoder",))
        if any(c != "encoder" for c in comps):
            raise ValueError(f"{family} models have only an encoder; asked for {comps}")
        from ctxmix_lite.internals.capture import encoder_frames

        n_frames, window = encoder_frames(model, audio)
    spans = _frame_spans(alignment, n_frames, window, dur)
    result = {"dist": {}, "probe": {}, "n_frames": n_frames, "window": window, "spans": spans}

    # rows of every use's target, once
    enc_rows = sorted({f for u in uses for f in range(spans[u.target][0], spans[u.target][1] + 1)})
    local = {f: k for k, f in enumerate(enc_rows)}
    want_dec = family == "whisper" and decoder_ids is not None and any(c in comps for c in ("decoder", "cross"))
    positions = None
    if want_dec:
        text_ids = list(decoder_ids)[prefix_length:]
        positions = decoder_positions(alignment, text_ids, processor.tokenizer, prefix_length)
    result["positions"] = positions

    if family == "whisper":
        caps = whisper_rows_capture(model, processor, audio, list(decoder_ids) if want_dec else None, enc_rows)
        enc_caps, enc_hidden = caps["encoder"], caps["encoder_hidden"]
        row_of = local
    else:
        from ctxmix_lite.internals.capture import capture

        cap = capture(model, processor, audio, sampling_rate=16000)
        enc_caps = cap["encoder"]
        r = torch.tensor(enc_rows)
        enc_hidden = torch.stack([enc_caps[0].resid[r]] + [lc.out[r] for lc in enc_caps])
        row_of = {f: f for f in enc_rows}

    K = max(l for _, l in spans) + 1  # keys past the last aligned word are never read
    with torch.no_grad():
        if "encoder" in comps:
            frames = {u.name: list(range(spans[u.target][0], spans[u.target][1] + 1)) for u in uses}
            pos_in = {f: k for k, f in enumerate(enc_rows)}
            groups = [[pos_in[f] for f in frames[u.name]] for u in uses]
            lrows = [row_of[f] for f in enc_rows]
            per = {m: [] for m in measures}
            for lc in enc_caps:
                lc = _with_cached_pv(keys_upto(lc, K))
                for m in measures:
                    per[m].append(_encoder_rows(lc, lrows, groups, spans, m))
            for gi, u in enumerate(uses):
                for m in measures:
                    result["dist"][(u.name, "encoder", m)] = np.stack([x[gi] for x in per[m]]).astype(np.float32)
                hr = [local[f] for f in frames[u.name]]
                result["probe"][(u.name, "encoder")] = enc_hidden[:, hr].mean(1).numpy().astype(np.float32)
        ok = [u for u in uses if want_dec and check_use(positions, u) is None]
        if ok:
            pred = {u.name: [p - 1 for p in positions[u.target]] for u in ok}  # the position before each target token
            drows = sorted({r for u in ok for r in pred[u.name]})
            dpos = {r: k for k, r in enumerate(drows)}
            groups = [[dpos[r] for r in pred[u.name]] for u in ok]
            for comp in ("decoder", "cross"):
                if comp not in comps:
                    continue
                if comp == "decoder":  # every definition from the same raw token scores
                    per = {(c, m): [] for c in (*DECODER_COMPONENTS.values(), PROMPT_MASS) for m in measures}
                    for lc in caps[comp]:
                        lc = _with_cached_pv(lc)
                        for m in measures:
                            raw = _decoder_token_scores(lc, drows, m)
                            words, prompt = paper_decoder_rows(raw, groups, positions, False, prefix_length)
                            per[(DECODER_COMPONENTS["paper"], m)].append(words)
                            per[(PROMPT_MASS, m)].append(prompt)
                            per[(DECODER_COMPONENTS["paper+skip_special_tokens"], m)].append(
                                paper_decoder_rows(raw, groups, positions, True, prefix_length)[0])
                            per[(DECODER_COMPONENTS["word_pooled"], m)].append(
                                _decoder_rows(lc, drows, groups, positions, m, m=raw))
                else:
                    per = {(comp, m): [] for m in measures}
                    for lc in caps[comp]:
                        lc = _with_cached_pv(keys_upto(lc, K))
                        for m in measures:
                            per[(comp, m)].append(_cross_rows(lc, drows, groups, spans, m))
                for gi, u in enumerate(ok):
                    for (c, m), v in per.items():
                        result["dist"][(u.name, c, m)] = np.stack([x[gi] for x in v]).astype(np.float32)
            if "decoder" in comps:
                for u in ok:
                    result["probe"][(u.name, "decoder")] = caps["decoder_hidden"][:, pred[u.name]].mean(1).numpy().astype(np.float32)
    return result


def cue_contribution(dist: np.ndarray, cue: Sequence[int]) -> np.ndarray:
    """Share of the target row's mass on the cue word(s): ``sum_{w in cue} s[..., w]``."""
    dist = np.asarray(dist)
    return dist[..., list(cue)].sum(-1)


# ================================================================================================
# caching
# ================================================================================================
def study_cache_dir() -> Path:
    from ctxmix_lite.course.paths import cache_dir

    return cache_dir() / "study" / f"v{STUDY_VERSION}"


def _settings_tag(components, measures, language: str, teacher_forcing: str = "transcription") -> str:
    """Shard key of the settings. Includes :data:`SCORING_SCHEMA` (which decoder definitions a
    shard holds, each under its own name): a shard written under another definition of the scores
    is never read back."""
    d = dict(c=sorted(components) if components else None, m=list(measures), lang=language, scoring=SCORING_SCHEMA)
    if teacher_forcing != "transcription":  # the paper's setting keeps the tags it always had
        d["teacher_forcing"] = teacher_forcing
    s = json.dumps(d, sort_keys=True)
    return hashlib.sha1(s.encode()).hexdigest()[:8]


def _atomic_write(path: Path, writer: Callable[[str], None]):
    """Atomic, group-readable write (:func:`ctxmix_lite.study_cache.atomic_write`)."""
    from .cache import atomic_write

    atomic_write(path, writer)


def _save_shard(path: Path, res: dict, meta: dict) -> bool:
    """Write one checked shard (:func:`ctxmix_lite.study_cache.save_shard`); False: not cached."""
    from .cache import save_shard

    return save_shard(path, res, meta, root=study_cache_dir())


def _load_shard(path: Path, **checks):
    """Read one shard with every check (:func:`ctxmix_lite.study_cache.read_shard`); raises
    :class:`~ctxmix_lite.study_cache.CacheEntryError` with the reason when it is unusable."""
    from .cache import read_shard

    return read_shard(path, **checks)


# ================================================================================================
# transcriptions
# ================================================================================================
def _ctc_transcribe(model, processor, audio) -> str:
    from ctxmix_lite.corpus.audio import wav2vec2_num_frames
    from ctxmix_lite.models.loading import check_analysis_state

    check_analysis_state(model)
    wav2vec2_num_frames(len(audio), model.config.conv_kernel, model.config.conv_stride)  # too short: AudioError
    fe = getattr(processor, "feature_extractor", processor)
    inputs = fe(audio, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad(), attention_implementation(model, "sdpa"):
        logits = model(inputs.input_values.float().to(next(model.parameters()).device)).logits
    ids = logits.argmax(-1).cpu()
    return processor.batch_decode(ids)[0]


def get_transcriptions(run: ModelRun, items: Sequence, keys: Sequence[str], model=None, processor=None,
                       cache: bool = True, progress: bool = True, language: str = "fr") -> dict:
    """Greedy transcription of every item by a *trained* ASR model, generated once and cached:
    ``{key: {"text": str, "ids": [text token ids] (Whisper) or None (CTC)}}``."""
    from tqdm.auto import tqdm

    from ctxmix_lite.models.loading import model_family

    if run.init != "trained":
        raise ValueError("transcriptions come from trained models")
    from .cache import load_transcript, save_transcript, transcript_path

    root = study_cache_dir() / "transcripts" / run.slug / language
    out, todo = {}, []
    for k, it in zip(keys, items):
        rec = load_transcript(transcript_path(root, k), k, run.slug, language) if cache else None
        if rec is not None:
            out[k] = rec
        else:
            todo.append((k, it))
    if todo:
        if model is None:
            model, processor = run.load()
        fam = model_family(model)
        for k, it in tqdm(todo, desc=f"transcribe {run.label}", disable=not progress):
            audio = audio_of(it)
            if fam == "whisper":
                from ctxmix_lite.internals.capture import transcribe

                with attention_implementation(model, "sdpa"):  # no weights read: fastest kernel
                    text, ids = transcribe(model, processor, audio, language=language, sampling_rate=16000)
                rec = {"text": text, "ids": [int(i) for i in ids]}
            else:
                if not hasattr(processor, "batch_decode"):
                    continue  # no tokenizer: not an ASR model
                rec = {"text": _ctc_transcribe(model, processor, audio), "ids": None}
            out[k] = rec
            if cache:  # an unwritable cache warns once and the run goes on in memory
                save_transcript(transcript_path(root, k), rec, k, run.slug, language, root=study_cache_dir())
    return out


def _is_asr(run: ModelRun, model=None) -> bool:
    """Trained models that output text (Whisper, CTC heads) vote on which items are kept."""
    if run.init != "trained":
        return False
    from ctxmix_lite.models.loading import resolve_name

    spec = resolve_name(run.name)
    if spec.family == "whisper":
        return True
    return any(s in run.name.lower() for s in ("french", "-fr", "asr"))


# ================================================================================================
# the study
# ================================================================================================
@dataclass
class StudyResult:
    """``table``: the tidy cue-contribution table after the paper's exclusion rule (when on);
    ``all_table``: before it; ``exclusions``: one row per excluded (item, use) and the model and
    reason; ``probe``: per (model label, component) -> dict(X=[L+1, N, D], y, items DataFrame);
    ``items``: one row per (item, use) with metadata and the transcriptions; ``runs``: the
    :class:`ModelRun` list; ``fingerprint``: the dataset fingerprint; ``timings``: seconds per
    model run."""

    table: "object"
    all_table: "object"
    exclusions: "object"
    items: "object"
    probe: dict
    runs: list
    fingerprint: str
    timings: dict = field(default_factory=dict)
    options: StudyOptions = field(default_factory=StudyOptions)
    variants: "object" = None
    decoder_mass: "object" = None

    def summary(self, **kw):
        return summarize(self.table, **kw)

    @property
    def n_excluded(self) -> int:
        """(item, use) analyses dropped from every model and component (the paper's rule)."""
        if not len(self.exclusions):
            return 0
        e = self.exclusions[self.exclusions["scope"] == "all components"]
        return int(e[["item", "use"]].drop_duplicates().shape[0])

    def exclusion_counts(self):
        """Excluded analyses by reason and scope: ``reason_code, scope, n`` (distinct (item, use))."""
        import pandas as pd

        if not len(self.exclusions):
            return pd.DataFrame(columns=["reason_code", "scope", "n"])
        return (self.exclusions.drop_duplicates(["item", "use", "reason_code", "scope"])
                .groupby(["reason_code", "scope"]).size().rename("n").reset_index())

    def variant_summary(self, by=("model_label", "init", "component", "measure", "layer", "definition")):
        """Mean cue contribution per layer of the decoder under every definition
        (:data:`DECODER_DEFINITIONS`), the same analyses as :attr:`table`."""
        return summarize(self.variants, by=by)


def _as_items(items, n_items: Optional[int]) -> list:
    if n_items is not None:
        _check_n_items(n_items)
        n = min(int(n_items), len(items))
        items = items.select(range(n)) if hasattr(items, "select") else list(items)[:n]
    return [dict(it) for it in items]


def run_study(
    items,
    models=None,
    components: Optional[Sequence[str]] = None,
    measures: Sequence[str] = MEASURES,
    n_items: Optional[int] = None,
    exclude_misrecognised: bool = True,
    cache: bool = True,
    progress: bool = True,
    threads: Optional[int] = None,
    language: str = "fr",
    loaded: Optional[dict] = None,
    options=None,
    teacher_forcing: str = "transcription",
) -> StudyResult:
    """Cue contribution for every item × model × component × measure × layer.

    Args:
        items: the homophony items (``load_homophony(...)`` rows or dicts with audio, alignment,
            cue_index, target_index[, target_index_2], template, label...).
        models: :class:`ModelRun` specs (default :func:`default_model_runs`).
        components: subset of ``("encoder", "decoder", "cross")`` (default: all a model has).
        n_items: only the first ``n_items`` items.
        exclude_misrecognised: the paper's rule: drop (item, use) pairs that any trained ASR model of
            the run did not transcribe with cue and target right and in order (all models, all
            components). False: keep them for the encoder; decoder/cross rows exist only where the
            transcript contains cue and target.
        cache: read / write per-item shards under :func:`study_cache_dir` (resumable).
        threads: ``torch.set_num_threads(threads)`` for the run (e.g. 2 cores).
        loaded: optional ``{ModelRun: (model, processor)}`` of already loaded models.
        options: :class:`StudyOptions` (or a dict / definition name): which decoder definition the
            ``decoder`` rows of ``table`` use (default: the paper's). Every definition is computed in
            the same pass and kept in ``variants`` (column ``definition``); ``decoder_mass`` holds
            the paper-normalised mass of the target rows on each prompt position.
        teacher_forcing: what Whisper's decoder reads: ``"transcription"`` (the paper's: the
            trained model's own greedy transcription) or ``"reference"`` (the item's sentence, so
            every item has decoder and cross-attention rows whatever the model heard; the
            notebooks' ``SMOKE`` runs use it with ``exclude_misrecognised=False`` so that a tiny
            CI sample never depends on the recogniser -- not the paper's setting).

    Nothing is dropped silently: ``exclusions`` has one row per excluded (item, use, model) with
    ``reason_code`` (``misrecognised``: the paper's rule, ``scope`` = all components;
    ``not_in_transcript``: cue or target absent from the transcript the decoder was teacher-forced
    on, ``scope`` = decoder and cross-attention only, when the rule is off), counted by
    :meth:`StudyResult.exclusion_counts`.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from ctxmix_lite.models.loading import resolve_name

    if teacher_forcing not in ("transcription", "reference"):
        raise ValueError(f"teacher_forcing must be 'transcription' or 'reference', got {teacher_forcing!r}")
    if threads is not None:
        torch.set_num_threads(int(threads))
    runs = [ModelRun.make(m) for m in (models if models is not None else default_model_runs())]
    items = _as_items(items, n_items)
    if not items:
        raise ValueError("no items to analyse")
    audios = [audio_of(it) for it in items]
    keys = [item_key(it, a) for it, a in zip(items, audios)]
    ids = [item_id_of(it, k) for k, it in enumerate(items)]
    uses = [item_uses(it) for it in items]
    fp = dataset_fingerprint(keys)
    loaded = dict(loaded or {})
    tag = _settings_tag(components, measures, language, teacher_forcing)
    options = StudyOptions.make(options)

    # ---- transcriptions, once per trained Whisper / CTC model (also needed by random twins)
    transcripts: dict = {}
    whisper_names = {r.name for r in runs if resolve_name(r.name).family == "whisper"}
    asr_runs = [r for r in runs if _is_asr(r)]
    from .cache import load_shard, shard_path

    def _missing_shards(run):
        d = study_cache_dir() / run.slug / tag
        return not cache or any(not shard_path(d, k).exists() for k in keys)

    for name in sorted(whisper_names):
        tr = ModelRun(name, "trained")
        try:
            if tr in runs and tr not in loaded and _missing_shards(tr):
                loaded[tr] = tr.load()  # loaded once: transcribes, then runs the study
            mp = loaded.get(tr)
            transcripts[tr] = get_transcriptions(tr, items, keys, *(mp or (None, None)), cache=cache,
                                                 progress=progress, language=language)
        except OSError as err:  # no trained weights (offline): teacher-force on the reference text
            print(f"[study] no trained {name} to transcribe with ({err}); random twin teacher-forced on the reference text")
    for r in asr_runs:
        if r not in transcripts:
            mp = loaded.get(r)
            transcripts[r] = get_transcriptions(r, items, keys, *(mp or (None, None)), cache=cache,
                                                progress=progress, language=language)

    # ---- which (item, use) pairs each ASR model got right
    excl_rows = []
    for r in asr_runs:
        tr = transcripts.get(r, {})
        for k, it in enumerate(items):
            rec = tr.get(keys[k])
            if rec is None:
                continue
            words = [w["word"] for w in alignment_of(it)]
            for u in uses[k]:
                missing = misrecognised_words(words, rec["text"], u)
                if missing:
                    excl_rows.append(dict(
                        item=ids[k] if u.name == "main" else f"{ids[k]}:{u.name}", base_item=ids[k], use=u.name,
                        template=it.get("template"), label=it.get("label"), model=r.name,
                        reason_code="misrecognised",
                        scope=("all components" if exclude_misrecognised else
                               "decoder, cross" if teacher_forcing == "transcription" else
                               "none (decoder teacher-forced on the reference)"),
                        reason="misrecognised: " + ", ".join(repr(words[i]) for i in missing),
                        transcription=rec["text"], reference=it.get("transcription"),
                    ))
    excl_cols = ["item", "base_item", "use", "template", "label", "model", "reason_code", "scope", "reason",
                 "transcription", "reference"]
    excluded = ({(r["base_item"], r["use"]) for r in excl_rows if r["scope"] == "all components"}
                if exclude_misrecognised else set())
    dec_excl = {(r["base_item"], r["use"]) for r in excl_rows}  # (item, use) already counted: not again

    # ---- per model run: one pass per item, cached
    rows, probe_rows, timings, variant_rows, mass_rows = [], {}, {}, [], []
    from ctxmix_lite.internals.capture import whisper_prefix_ids

    for run in runs:
        spec = resolve_name(run.name)
        shard_dir = study_cache_dir() / run.slug / tag
        todo = [k for k in range(len(items)) if not (cache and shard_path(shard_dir, keys[k]).exists())]
        model = processor = None
        if todo:
            model, processor = loaded.get(run) or run.load()
        t0 = time.perf_counter()
        n_layers = None
        for k in tqdm(range(len(items)), desc=f"study {run.label}", disable=not progress):
            path = shard_path(shard_dir, keys[k])
            got = load_shard(path, key=keys[k], run=run.slug, settings=tag, expect=dict(
                uses=[u.name for u in uses[k]], n_words=len(alignment_of(items[k])), measures=list(measures),
                encoder=components is None or "encoder" in components)) if cache else None
            if got is not None:
                res, meta = got
            else:  # missing, or unusable (reported with its path): computed now
                if model is None:
                    model, processor = loaded.get(run) or run.load()
                dec_ids, src = None, None
                if spec.family == "whisper" and (components is None or any(c in components for c in ("decoder", "cross"))):
                    tr = transcripts.get(ModelRun(run.name, "trained"), {}).get(keys[k])
                    prefix = whisper_prefix_ids(processor, language)
                    if tr is not None and teacher_forcing == "transcription":
                        dec_ids, src = prefix + list(tr["ids"]), "trained-model transcription"
                    else:
                        text = " " + str(items[k]["transcription"]).strip()
                        dec_ids = prefix + list(processor.tokenizer(text, add_special_tokens=False).input_ids)
                        src = "reference text"
                res = item_distributions(model, processor, items[k], uses[k], dec_ids, 4, components, measures, audios[k])
                meta = dict(key=keys[k], run=run.slug, settings=tag, transcript_source=src, n_frames=res["n_frames"],
                            window=res["window"], positions=res["positions"], study_version=STUDY_VERSION,
                            decoder_prefix=None if dec_ids is None else
                            list(processor.tokenizer.convert_ids_to_tokens(list(dec_ids)[:4])))
                if cache:
                    _save_shard(path, res, meta)
            it = items[k]
            positions = meta.get("positions")
            prompt_ids = meta.get("decoder_prefix")
            for (u_name, comp, meas), dist in res["dist"].items():
                u = next(u for u in uses[k] if u.name == u_name)
                L = dist.shape[0]
                n_layers = L
                item_id = ids[k] if u.name == "main" else f"{ids[k]}:{u.name}"
                dist_w = use_cue_distance(it, u)
                dist_t = _token_distance(positions, u)
                base = (item_id, ids[k], u.name, it.get("template"), it.get("label"), run.name, run.init, run.label)
                if comp == PROMPT_MASS:
                    for layer in range(L):
                        for j in range(dist.shape[1]):
                            mass_rows.append((*base, meas, layer + 1, j, None if prompt_ids is None else prompt_ids[j],
                                              float(dist[layer, j]), dist_w))
                    continue
                scores = cue_contribution(dist, u.cue)
                definition = next((d for d, c in DECODER_COMPONENTS.items() if c == comp), None)
                out_comp = "decoder" if definition is not None else comp
                for layer in range(L):
                    row = (*base, out_comp, meas, layer + 1, (layer + 1) / L, float(scores[layer]),
                           it.get("voice"), it.get("pair_id"), keys[k], dist_w, distance_group(dist_w), dist_t)
                    if definition is not None:
                        variant_rows.append((*row, definition))
                        if definition != options.decoder_definition:
                            continue
                    rows.append(row)
            if spec.family == "whisper" and (components is None or "decoder" in components or "cross" in components):
                for u in uses[k]:
                    if (u.name, "decoder", measures[0]) in res["dist"] or (u.name, "cross", measures[0]) in res["dist"]:
                        continue
                    item_id = ids[k] if u.name == "main" else f"{ids[k]}:{u.name}"
                    if (ids[k], u.name) in dec_excl:
                        continue  # already counted (misrecognised, or by the twin reading the same transcript)
                    dec_excl.add((ids[k], u.name))
                    al = alignment_of(it)
                    missing = [i for i in (*u.cue, u.target) if positions is None or positions[i] is None]
                    excl_rows.append(dict(
                        item=item_id, base_item=ids[k], use=u.name, template=it.get("template"), label=it.get("label"),
                        model=run.name + ("" if run.init == "trained" else f" ({run.init})"), reason_code="not_in_transcript",
                        scope="decoder, cross",
                        reason=f"not in the transcript the decoder reads ({meta.get('transcript_source')}): "
                               + ", ".join(repr(al[i]["word"]) for i in missing),
                        transcription=None, reference=it.get("transcription")))
            for (u_name, comp), vec in res["probe"].items():
                probe_rows.setdefault((run.label, comp), []).append(
                    (ids[k] if u_name == "main" else f"{ids[k]}:{u_name}", ids[k], u_name, it.get("template"), it.get("label"), vec))
        timings[run.label] = time.perf_counter() - t0
        loaded.pop(run, None)
        del model

    cols = ["item", "base_item", "use", "template", "label", "model", "init", "model_label", "component", "measure",
            "layer", "depth", "score", "voice", "pair_id", "key", "cue_distance", "distance_group",
            "cue_distance_tokens"]
    exclusions = pd.DataFrame(excl_rows, columns=excl_cols)

    def _keep(df):
        if exclude_misrecognised and excluded and len(df):
            drop = df.set_index(["base_item", "use"]).index.isin(list(excluded))
            return df[~drop].reset_index(drop=True)
        return df

    def _frame(data, columns):  # token distance: a nullable integer (None where a run has no decoder)
        df = pd.DataFrame(data, columns=columns)
        df["cue_distance_tokens"] = df["cue_distance_tokens"].astype("Int64")
        return df

    all_table = _frame(rows, cols)
    table = _keep(all_table)
    variants = _keep(_frame(variant_rows, cols + ["definition"]))
    decoder_mass = _keep(pd.DataFrame(mass_rows, columns=["item", "base_item", "use", "template", "label", "model", "init",
                                                          "model_label", "measure", "layer", "position", "token",
                                                          "mass", "cue_distance"]))
    probe = {}
    for (label, comp), lst in probe_rows.items():
        keep = [r for r in lst if not (exclude_misrecognised and (r[1], r[2]) in excluded)]
        if not keep:
            continue
        meta_df = pd.DataFrame([r[:5] for r in keep], columns=["item", "base_item", "use", "template", "label"])
        probe[(label, comp)] = dict(X=np.stack([r[5] for r in keep], axis=1), y=meta_df["label"].to_numpy(), items=meta_df)
    item_rows = []
    for k, it in enumerate(items):
        for u in uses[k]:
            d = dict(item=ids[k] if u.name == "main" else f"{ids[k]}:{u.name}", base_item=ids[k], use=u.name,
                     template=it.get("template"), label=it.get("label"), voice=it.get("voice"),
                     reference=it.get("transcription"), cue=" ".join(alignment_of(it)[i]["word"] for i in u.cue),
                     target=alignment_of(it)[u.target]["word"], key=keys[k],
                     cue_distance=use_cue_distance(it, u), distance_group=distance_group(use_cue_distance(it, u)),
                     excluded=(ids[k], u.name) in excluded, whisper_ok=it.get("whisper_ok"))
            for r, tr in transcripts.items():
                rec = tr.get(keys[k])
                d[f"transcription[{r.name.split('/')[-1]}]"] = None if rec is None else rec["text"]
            item_rows.append(d)
    return StudyResult(table=table, all_table=all_table, exclusions=exclusions, items=pd.DataFrame(item_rows),
                       probe=probe, runs=runs, fingerprint=fp, timings=timings, options=options,
                       variants=variants, decoder_mass=decoder_mass)


def summarize(table, by=("model", "init", "model_label", "component", "measure", "layer", "depth")):
    """Mean cue contribution per layer with its standard error and a 95 % interval over items:
    columns ``mean, sem, ci95, n`` beside the ``by`` columns."""
    by = [b for b in by if b in table.columns]
    g = table.groupby(by, sort=True)["score"]
    out = g.agg(["mean", "std", "count"]).reset_index()
    out["sem"] = out["std"] / np.sqrt(out["count"].clip(lower=1))
    out["ci95"] = 1.96 * out["sem"]
    return out.rename(columns={"count": "n"}).drop(columns="std")


def summarize_by_distance(table, by=("model", "init", "model_label", "component", "measure", "layer", "depth")):
    """:func:`summarize` per cue-distance group (``distance_group``: adjacent / non-adjacent)."""
    return summarize(table, by=tuple(by) + ("distance_group",))


def prompt_mass_summary(decoder_mass, measure: Optional[str] = None):
    """Mean mass (paper normalisation: rows over all decoder positions) that the rows predicting the
    target put on each prompt token, per model and layer: ``[model_label, measure, layer] x
    token``, plus the ``prompt total``."""
    d = decoder_mass if measure is None else decoder_mass[decoder_mass["measure"] == measure]
    piv = d.pivot_table(index=["model_label", "measure", "layer"], columns=["position", "token"], values="mass",
                        aggfunc="mean").sort_index(axis=1)
    piv.columns = [f"{p}:{t}" for p, t in piv.columns]
    piv["prompt total"] = piv.sum(axis=1)
    return piv


# ================================================================================================
# figures and the comparison with the paper
# ================================================================================================
def layer_measure_matrix(summary, model_label: str, component: str, measures: Sequence[str] = MEASURES):
    """``[L, len(measures)]`` mean cue contribution (layers 1..L) of one model and component."""
    s = summary[(summary["model_label"] == model_label) & (summary["component"] == component)]
    if s.empty:
        raise ValueError(f"no results for {model_label!r} / {component!r}; have "
                         f"{sorted(set(zip(summary['model_label'], summary['component'])))}")
    piv = s.pivot_table(index="layer", columns="measure", values="mean").sort_index()
    return piv.reindex(columns=list(measures)).to_numpy(), list(piv.index)


def plot_cue_panels(summary, panels: Sequence, ncols: Optional[int] = None, vmax: Optional[float] = None,
                    suptitle: Optional[str] = None, cmap: str = "Blues"):
    """One layer x measure heatmap of mean cue contribution per panel, ``panels`` = list of
    ``(model_label, component)`` (or ``(model_label, component, title)``); shared colour scale."""
    import matplotlib.pyplot as plt

    from ctxmix_lite.viz.plotting import plot_layer_heatmap

    mats = []
    for p in panels:
        m, layers = layer_measure_matrix(summary, p[0], p[1])
        mats.append((p, m, layers))
    vmax = vmax if vmax is not None else max(float(np.nanmax(m)) for _, m, _ in mats)
    ncols = ncols or len(panels)
    nrows = int(np.ceil(len(panels) / ncols))
    height = max(3.2, 0.32 * max(len(l) for _, _, l in mats) + 1.6)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, height * nrows), squeeze=False)
    for ax, (p, m, layers) in zip(axes.flat, mats):
        title = p[2] if len(p) > 2 else f"{p[0]}\n{COMPONENT_LABELS.get(p[1], p[1])}"
        plot_layer_heatmap(m, [MEASURE_LABELS[x] for x in MEASURES], layer_labels=layers, title=title, ax=ax,
                           vmin=0.0, vmax=vmax, cmap=cmap, annotate=len(layers) <= 12,
                           colorbar_label="cue contribution")
    for ax in list(axes.flat)[len(mats):]:
        ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle)
        fig.tight_layout(rect=(0, 0, 1, 0.96))
    else:
        fig.tight_layout()
    return fig


def plot_template_breakdown(table, model_labels: Sequence[str], component: str, measure: str = "value_zeroing"):
    """Cue contribution per layer and template (mean +- 95 % CI over items), one panel per model."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(model_labels), figsize=(4.6 * len(model_labels), 3.4), squeeze=False, sharey=True)
    for ax, label in zip(axes[0], model_labels):
        t = table[(table["model_label"] == label) & (table["component"] == component) & (table["measure"] == measure)]
        t = t.assign(template_use=np.where(t["use"] == "main", t["template"], t["template"] + " (" + t["use"] + ")"))
        s = summarize(t, by=("template_use", "layer"))
        for tpl, g in s.groupby("template_use"):
            ax.errorbar(g["layer"], g["mean"], yerr=g["ci95"], marker="o", ms=3, capsize=2,
                        label=f"{tpl} (n={int(g['n'].max())})")
        ax.set_title(f"{label}\n{COMPONENT_LABELS.get(component, component)}, {MEASURE_LABELS[measure]}")
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("cue contribution (share)")
    axes[0, -1].legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_by_distance(table, model_labels: Sequence[str], components: Sequence[str] = ("encoder", "cross", "decoder"),
                     measure: str = "value_zeroing", title: Optional[str] = None):
    """Cue contribution per layer (mean +- 95 % CI over items), adjacent vs non-adjacent cues: one
    panel per component, one line style per model and distance group."""
    import matplotlib.pyplot as plt

    t = table[table["measure"] == measure]
    comps = [c for c in components if c in set(t["component"])]
    if not comps:
        raise ValueError(f"no {measure} rows for components {list(components)}")
    fig, axes = plt.subplots(1, len(comps), figsize=(4.6 * len(comps), 3.6), squeeze=False, sharey=True)
    styles = {DISTANCE_GROUPS[0]: "-", DISTANCE_GROUPS[1]: "--"}
    for ax, comp in zip(axes[0], comps):
        for ci, label in enumerate(model_labels):
            g0 = t[(t["component"] == comp) & (t["model_label"] == label)]
            if g0.empty:
                continue
            s = summarize(g0, by=("distance_group", "layer"))
            for grp, g in s.groupby("distance_group"):
                ax.errorbar(g["layer"], g["mean"], yerr=g["ci95"], marker="o", ms=3, capsize=2,
                            ls=styles.get(grp, ":"), color=f"C{ci}", label=f"{label}, {grp} (n={int(g['n'].max())})")
        ax.set_title(f"{COMPONENT_LABELS.get(comp, comp)}, {MEASURE_LABELS[measure]}")
        ax.set_xlabel("layer (1-based)")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("cue contribution (share)")
    axes[0, -1].legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_decoder_definitions(variants, model_labels: Sequence[str], measure: str = "value_zeroing"):
    """The decoder's cue contribution per layer under each definition (:data:`DECODER_DEFINITIONS`),
    one panel per model: the paper's first, the variants beside it."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(model_labels), figsize=(4.6 * len(model_labels), 3.4), squeeze=False, sharey=True)
    for ax, label in zip(axes[0], model_labels):
        t = variants[(variants["model_label"] == label) & (variants["measure"] == measure)]
        s = summarize(t, by=("definition", "layer"))
        for k, d in enumerate(DECODER_DEFINITIONS):
            g = s[s["definition"] == d]
            if len(g):
                ax.errorbar(g["layer"], g["mean"], yerr=g["ci95"], marker="o", ms=3, capsize=2, color=f"C{k}",
                            lw=2.5 if d == "paper" else 1.2, label=d + (" (default)" if d == "paper" else ""))
        ax.set_title(f"{label}\ndecoder, {MEASURE_LABELS[measure]}")
        ax.set_xlabel("layer (1-based)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("cue contribution (share)")
    axes[0, -1].legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def _rise(summary, label, component, measure="value_zeroing"):
    """Upper-half minus lower-half mean cue contribution (a rise in upper layers is > 0)."""
    m, layers = layer_measure_matrix(summary, label, component, (measure,))
    v = m[:, 0]
    h = len(v) // 2
    return float(v[h:].mean() - v[:h].mean()), v


def paper_comparison(summary, runs: Sequence[ModelRun], probe_results=None, decoder_definition: str = "paper") -> "object":
    """The paper's reported findings beside ours (``pandas.DataFrame``: finding, paper, ours, verdict,
    why). Value Zeroing is the reference measure, as in the paper. ``probe_results``: optional
    tidy probe table (:func:`ctxmix_lite.probe.probe_layers` rows with ``model_label``,
    ``component``) for the probe findings. ``decoder_definition``: the definition of the
    summary's decoder rows (``StudyResult.options.decoder_definition``), named in ``ours``."""
    import pandas as pd

    labels = {r.label: r for r in runs}
    have = set(summary["model_label"])
    rows = []
    why_synth = ("offline items are synthetic MBROLA voices with exact homophony and clean word times; "
                 "Common Voice speech is varied and noisier")
    enc_only_trained = [l for l, r in labels.items() if l in have and r.init == "trained" and "whisper" not in r.name]
    enc_only_random = [l for l, r in labels.items() if l in have and r.init == "random" and "whisper" not in r.name]
    w_tr = [l for l, r in labels.items() if l in have and r.init == "trained" and "whisper" in r.name]
    w_rd = [l for l, r in labels.items() if l in have and r.init == "random" and "whisper" in r.name]

    if enc_only_trained:
        d, v = _rise(summary, enc_only_trained[0], "encoder")
        rows.append(dict(finding="encoder-only ASR model: cue contribution rises in upper layers",
                         paper="yes (XLSR-53 French, Value Zeroing)", ours=f"upper - lower half = {d:+.3f}",
                         verdict="agree" if d > 0 else "differ", why=why_synth))
    else:
        rows.append(dict(finding="encoder-only ASR model: cue contribution rises in upper layers",
                         paper="yes (XLSR-53 French, Value Zeroing)", ours="not measured offline",
                         verdict="not testable", why="the trained French XLSR checkpoint needs the hub (HUB=True)"))
    for l in enc_only_random + w_rd:
        comp = "encoder"
        d, v = _rise(summary, l, comp)
        rows.append(dict(finding=f"random init ({l}): no rise of cue contribution",
                         paper="no rise (random baselines flat)", ours=f"upper - lower half = {d:+.3f}",
                         verdict="agree" if d <= 0.02 else "differ",
                         why="random layers mix by position/energy only; flat or falling is expected"))
    for l in w_tr:
        means = {}
        for comp in ("encoder", "cross", "decoder"):
            try:
                m, _ = layer_measure_matrix(summary, l, comp, ("value_zeroing",))
                means[comp] = float(np.nanmean(m))
            except ValueError:
                pass
        if means:
            top = max(means, key=means.get)
            rows.append(dict(finding=f"Whisper ({l}): most cue -> target mixing happens in the decoder",
                             paper="yes (decoder >> encoder; Whisper-medium)",
                             ours=", ".join(f"{k} {v:.3f}" for k, v in means.items()) + f" (decoder: {decoder_definition})",
                             verdict="agree" if top == "decoder" else "differ",
                             why="Whisper-base (6+6 layers) instead of medium (24+24); the decoder row that predicts "
                                 "the target is the cue token itself when the cue directly precedes the target"))
        d, v = _rise(summary, l, "encoder")
        rows.append(dict(finding=f"Whisper encoder ({l}): little cue information, weak rise",
                         paper="weak in the encoder compared with XLSR", ours=f"upper - lower half = {d:+.3f}, max {v.max():.3f}",
                         verdict="agree" if v.max() < 0.35 else "differ", why=why_synth))
    if w_tr and w_rd:
        a = float(np.nanmean(layer_measure_matrix(summary, w_tr[0], "decoder", ("value_zeroing",))[0]))
        b = float(np.nanmean(layer_measure_matrix(summary, w_rd[0], "decoder", ("value_zeroing",))[0]))
        rows.append(dict(finding="trained vs random Whisper decoder", paper="trained decoder reads the cue more",
                         ours=f"trained {a:.3f} vs random {b:.3f} (decoder: {decoder_definition})", verdict="agree" if a > b else "differ",
                         why="a random causal decoder spreads its mass over the few preceding tokens"))
    if probe_results is not None and len(probe_results):
        pr = probe_results
        for comp in ("encoder", "decoder"):
            for l in w_tr + enc_only_trained:
                t = pr[(pr["model_label"] == l) & (pr["component"] == comp)]
                if t.empty:
                    continue
                best = float(t["accuracy"].max())
                last = float(t.sort_values("layer")["accuracy"].iloc[-1])
                paper = "near ceiling" if comp == "decoder" else "number decodable from upper layers"
                if "whisper-base" in l:  # the paper's own Whisper-base curve, read from its Fig. 4
                    from .probe import PAPER_FIG4_WHISPER_BASE

                    curve = PAPER_FIG4_WHISPER_BASE[(comp, "trained")]
                    read = [v for v in curve if not math.isnan(v)]
                    tail = "layers 4-6 hidden in the figure" if math.isnan(curve[-1]) else f"last layer {curve[-1]:.2f}"
                    paper += f" (Whisper-base, read from Fig. 4: best {max(read):.2f}, {tail})"
                ok = best > 0.9 if comp == "decoder" else last > 0.65
                rows.append(dict(finding=f"probe, {l} {comp}", paper=paper, ours=f"best {best:.2f}, last layer {last:.2f}",
                                 verdict="agree" if ok else "differ", why=why_synth))
    return pd.DataFrame(rows, columns=["finding", "paper", "ours", "verdict", "why"])


def _check_n_items(n) -> int:
    """``n_items`` must be a whole number >= 1 (None: all items)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < 1:
        raise ValueError(f"n_items must be a whole number >= 1, or None for all items; got {n!r}")
    return int(n)


def _n_items_arg(text: str):
    """``--n-items``: a whole number >= 1, or ``all``."""
    import argparse

    if text.strip().lower() == "all":
        return None
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1 or 'all', got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (or 'all'), got {n}")
    return n


def course_items(data: str = "offline", n_items: Optional[int] = 200, smoke: bool = False, seed: int = 0,
                 progress: bool = True, checked_only: bool = False):
    """The items notebooks 05-07 share (same arguments -> same items -> cache hits): the offline
    synthetic set (1,000 items; 24 with ``smoke``) or ``data="hub"`` / a path, then a label-balanced
    subset of ``n_items`` (whole minimal pairs where the data has them; seeded; ``None`` keeps all).

    checked_only: first keep only the items whose Whisper-base transcription check passed (the
    data's ``whisper_ok``; the paper's exclusion rule would drop the others), so that every chosen
    item is analysed. Ignored, with a message, when the data carries no check (the smoke build;
    the released data set, which holds only correctly transcribed items).
    """
    from ctxmix_lite.corpus.homophony import balanced_subset, load_homophony

    if n_items is not None:
        _check_n_items(n_items)
    if data == "offline":
        ds = load_homophony("offline", smoke=smoke, seed=seed, progress=progress)
    else:
        ds = load_homophony(data, progress=progress)
    origin = {a: getattr(ds, a) for a in ("_ctxmix_build_dir", "_ctxmix_report") if hasattr(ds, a)}
    if checked_only:
        ok = list(ds["whisper_ok"])
        if all(o is None for o in ok):
            print("(no transcription check in this data: all items kept)")
        else:
            ds = ds.select([i for i, o in enumerate(ok) if o])
    if n_items is not None and int(n_items) < len(ds):
        ds = balanced_subset(ds, int(n_items), seed)
    for a, v in origin.items():  # the build the items come from (its key goes into shipped provenance)
        setattr(ds, a, v)
    return ds


# ================================================================================================
# command line: the whole study without a notebook
# ================================================================================================
def main(argv=None) -> int:
    """``python -m ctxmix_lite.study --n-items all --threads 2`` -- run (or resume) the study and
    write the tidy table, the exclusions and the per-layer summary as CSV under ``outputs/``."""
    import argparse

    from ctxmix_lite.course.paths import outputs_dir

    ap = argparse.ArgumentParser(prog="python -m ctxmix_lite.study", description="The homophony study: cue contribution per layer (cached, resumable).")
    ap.add_argument("--data", default="offline", help="'offline' (synthetic), 'hub' or a local path")
    ap.add_argument("--n-items", default=200, type=_n_items_arg,
                    help="number of items (>= 1), or 'all' (1,000 offline)")
    ap.add_argument("--models", nargs="+", default=None,
                    help="name:init pairs (default: Whisper-base trained + random, XLSR-53 random)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep-misrecognised", action="store_true", help="do not apply the paper's exclusion rule")
    ap.add_argument("--whisper-ok-only", action="store_true",
                    help="draw the items from those the data's Whisper-base check passed (what the exclusion "
                         "rule keeps; saves transcribing the rest): study.course_items(checked_only=True)")
    ap.add_argument("--decoder-scoring", choices=("paper", "word_pooled"), default="paper",
                    help="decoder self-attention definition of the main table (all are computed and saved)")
    ap.add_argument("--skip-special-tokens", action="store_true",
                    help="the paper's --SKIP_SPECIAL_TOKENS: drop the first 3 decoder positions, renormalise")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    options = StudyOptions(args.decoder_scoring, args.skip_special_tokens)
    n = args.n_items  # None: all
    items = course_items(args.data, n, smoke=args.smoke, seed=args.seed, checked_only=args.whisper_ok_only)
    runs = ([ModelRun(*m.split(":")) for m in args.models] if args.models
            else default_model_runs(smoke=args.smoke))
    t0 = time.perf_counter()
    res = run_study(items, runs, exclude_misrecognised=not args.keep_misrecognised, threads=args.threads,
                    options=options)
    out = outputs_dir()
    res.table.to_csv(out / "study_cue_contribution.csv", index=False)
    res.exclusions.to_csv(out / "study_exclusions.csv", index=False)
    summ = res.summary()
    summ.to_csv(out / "study_summary.csv", index=False)
    summarize_by_distance(res.table).to_csv(out / "study_summary_by_distance.csv", index=False)
    vs = summarize(res.variants, by=("model_label", "init", "component", "measure", "layer", "definition", "distance_group"))
    vs.to_csv(out / "study_decoder_definitions_by_distance.csv", index=False)
    res.variant_summary().to_csv(out / "study_decoder_definitions.csv", index=False)
    prompt_mass_summary(res.decoder_mass).to_csv(out / "study_decoder_prompt_mass.csv")
    print(f"{len(items)} items, {res.table['item'].nunique()} analyses kept, {res.n_excluded} excluded "
          f"(decoder definition: {options.decoder_definition}); "
          f"{time.perf_counter() - t0:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in res.timings.items())})")
    print("exclusions by reason:\n" + res.exclusion_counts().to_string(index=False))
    print("analyses by cue distance:\n" + res.items[~res.items["excluded"]]["distance_group"].value_counts().to_string())
    piv = summ[summ["measure"] == "value_zeroing"].pivot_table(index="layer", columns=["model_label", "component"], values="mean")
    print("value zeroing, mean cue contribution per layer:\n" + piv.round(3).to_string())
    vpiv = res.variant_summary().query("measure == 'value_zeroing'").pivot_table(
        index="layer", columns=["model_label", "definition"], values="mean")
    print("decoder, value zeroing, by definition:\n" + vpiv.round(3).to_string())
    print("tables written to", out)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
