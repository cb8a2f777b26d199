"""The French homophony data: spoken sentences whose target word sounds the same in the singular
and the plural, preceded by a cue word that carries number audibly.

Three templates, as in the study (Mohebbi et al., EMNLP 2023):

* ``Det_Noun``       -- "Elle a perdu **les** **livres** dans le train."    cue = determiner, target = noun
* ``Pronoun_Verb``   -- "**Ils** **aiment** la musique."                    cue = pronoun (liaison /z/),
  target = verb (vowel-initial, so that ils /ilz/ differs from il /il/)
* ``Det_Noun_Verb``  -- "**Les** **chats** **jouent** dans le jardin."      cue = determiner, target = noun,
  ``target_word_2`` = verb (the label is the verb's number)

Cue and target are adjacent in the examples above; the offline build also makes *non-adjacent*
items (:data:`VARIANTS`), whose intervening words keep number inaudible: pre-nominal adjectives
and degree adverbs in the noun phrase ("Elle a perdu **les** très jolis petits **livres**...";
the plural -s makes no liaison before the consonant-initial noun) and the object clitics *en*/*y*
after the pronoun ("**Ils** en **mangent** beaucoup."; the clitic starts with a vowel, so the
liaison /z/ is kept). Each item records its cue distance in words (``cue_distance`` =
``target_index - cue_index``, 1 = adjacent) and in decoder tokens (``cue_token_distance``, see
:func:`token_distance`).

Every item has a *minimal pair*: the same sentence, voice and prosody with the other number.

Offline default (:func:`build_offline`): sentences from the word lists and frames in ``data/``,
spoken by libespeak-ng + MBROLA (:mod:`ctxmix_lite.synth`) with exact word times. Checks, each
counted in the build report:

1. lexicon: ``merge(phon(sg)) == merge(phon(pl))`` in Lexique 3.82 for every target
   (:mod:`ctxmix_lite.lexicon`);
2. synthesiser: the target's phones are identical in both members of the pair, and so are the
   phones of every word except the cue;
3. cue audible: the cue's phones differ between the members; for Pronoun_Verb the plural cue ends
   in the liaison /z/ and the singular one does not;
3b. intervening words (non-adjacent items): each is a homophone of its counterpart in Lexique
   (invariant words: the same, known word) and has identical phones in both members;
4. audio: no sample clipped; word times inside the clip and in order; cue before target.

Real data: :func:`load_homophony` with ``"hub"`` (``hosein-m/french_homophone_asr``) or a local
path, mapped onto the same schema (:func:`normalize_external`); Common Voice French through
:mod:`ctxmix_lite.commonvoice`.

Every offline clip starts and ends with a pause (:data:`EDGE_SILENCE`, drawn per pair, the same for
both members), as real recordings do; word and phone times include it.

Schema (:func:`features`): ``item_id, audio{array, sampling_rate, path}, transcription, cue_word,
target_word, target_word_2, alignment[{start, end, word}], template, label, voice, pair_id,
cue_index, target_index, target_index_2, cue_distance, cue_token_distance, whisper_ok,
phones[{start, end, phone, word_index}]``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import time
import unicodedata
import warnings
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

SAMPLE_RATE = 16000
CODE_VERSION = "homophony-2"  # 2: non-adjacent variants, distances, edge silence
HUB_DATASET = "hosein-m/french_homophone_asr"
TEMPLATES = ("Det_Noun", "Pronoun_Verb", "Det_Noun_Verb")
LABELS = ("singular", "plural")
#: Share of pairs per template (the study has 720 / 257 / 23 of 1,000; Det_Noun_Verb gets more
#: here so that every analysis has enough of it).
DEFAULT_MIX = OrderedDict([("Det_Noun", 0.56), ("Pronoun_Verb", 0.30), ("Det_Noun_Verb", 0.14)])
#: Ways of putting words between cue and target, per template, with the number of words between:
#: ``adjacent`` (0), ``adj`` (1: "le petit chat"), ``adv_adj`` (2: "le très petit chat"),
#: ``adj_adj`` (2: "le joli petit chat"), ``adv_adj_adj`` (3: "le plus joli petit chat"),
#: ``clitic`` (1: "ils en mangent").
VARIANTS = OrderedDict([
    ("Det_Noun", ("adjacent", "adj", "adv_adj", "adj_adj", "adv_adj_adj")),
    ("Pronoun_Verb", ("adjacent", "clitic")),
    ("Det_Noun_Verb", ("adjacent", "adj", "adv_adj", "adj_adj", "adv_adj_adj")),
])
VARIANT_GAP = {"adjacent": 0, "adj": 1, "adv_adj": 2, "adj_adj": 2, "adv_adj_adj": 3, "clitic": 1}
#: Share of each template's pairs per variant. Half of the noun-phrase pairs have 2-3 words
#: between cue and target, which makes 35 % of the default build (>= 30 %: :func:`far_share`).
DEFAULT_VARIANT_MIX = {
    "Det_Noun": OrderedDict([("adjacent", 0.35), ("adj", 0.15), ("adv_adj", 0.25),
                             ("adj_adj", 0.10), ("adv_adj_adj", 0.15)]),
    "Pronoun_Verb": OrderedDict([("adjacent", 0.55), ("clitic", 0.45)]),
    "Det_Noun_Verb": OrderedDict([("adjacent", 0.35), ("adj", 0.15), ("adv_adj", 0.25),
                                  ("adj_adj", 0.10), ("adv_adj_adj", 0.15)]),
}
#: Pause added at the start and at the end of every offline clip, seconds (uniform, drawn per
#: pair; both members get the same).
EDGE_SILENCE = (0.2, 0.5)
DEFAULT_ITEMS = 1000
SMOKE_ITEMS = 24
#: Prosody ranges (espeak units): rate in words per minute, pitch and pitch range 0..100.
RATE_RANGE = (145, 185)
PITCH_RANGE = (35, 65)
RANGE_RANGE = (40, 70)

SINGULAR_CUES = {"le", "la", "un", "une", "ce", "cet", "cette", "mon", "ma", "ton", "ta", "son",
                 "sa", "il", "elle", "l'", "notre", "votre", "leur"}
PLURAL_CUES = {"les", "des", "ces", "mes", "tes", "ses", "ils", "elles", "nos", "vos", "leurs"}
PRONOUNS = {"il", "elle", "ils", "elles"}
_VOWELS = set("aeiouyàâäéèêëîïôöùûüÿœæh")


class WordListError(ValueError):
    """A word list or frame file in data/ is malformed (the message names file and line)."""


class HomophonyDataError(ValueError):
    """An item or a data set does not fit the homophony schema."""


class HubDataUnavailable(OSError):
    """The hub data set cannot be reached (no network / HF_HUB_OFFLINE)."""


# ---------------------------------------------------------------------------------------------
# schema
# ---------------------------------------------------------------------------------------------
def features():
    """The common schema of every source (offline, hub, Common Voice), as ``datasets.Features``.

    ``audio`` is a plain struct (not ``datasets.Audio``, whose decoding needs torchcodec):
    ``{"array": float32 samples at 16 kHz, "sampling_rate": 16000, "path": file or ""}``.
    """
    from datasets import Features, List, Value

    return Features({
        "item_id": Value("string"),
        "audio": {"array": List(Value("float32")), "sampling_rate": Value("int32"),
                  "path": Value("string")},
        "transcription": Value("string"),
        "cue_word": Value("string"),
        "target_word": Value("string"),
        "target_word_2": Value("string"),
        "alignment": List({"start": Value("float64"), "end": Value("float64"),
                           "word": Value("string")}),
        "template": Value("string"),
        "label": Value("string"),
        "voice": Value("string"),
        "pair_id": Value("string"),
        "cue_index": Value("int32"),
        "target_index": Value("int32"),
        "target_index_2": Value("int32"),
        "cue_distance": Value("int32"),
        "cue_token_distance": Value("int32"),
        "whisper_ok": Value("bool"),
        "phones": List({"start": Value("float64"), "end": Value("float64"),
                        "phone": Value("string"), "word_index": Value("int32")}),
    })


FIELDS = ("item_id", "audio", "transcription", "cue_word", "target_word", "target_word_2",
          "alignment", "template", "label", "voice", "pair_id", "cue_index", "target_index",
          "target_index_2", "cue_distance", "cue_token_distance", "whisper_ok", "phones")


def to_dataset(rows: Sequence[dict]):
    """Rows (dicts with :data:`FIELDS`, audio arrays as numpy) -> ``datasets.Dataset`` in the schema."""
    import pyarrow as pa
    from datasets import Dataset

    feats = features()
    cols = {k: [] for k in FIELDS}
    for r in rows:
        missing = [k for k in FIELDS if k not in r]
        if missing:
            raise HomophonyDataError(f"row {r.get('item_id')!r} lacks fields {missing}")
        for k in FIELDS:
            cols[k].append(r[k])
    # audio arrays: build the arrow list column from numpy directly (fast, exact float32)
    arrays = [np.asarray(a["array"], dtype=np.float32).reshape(-1) for a in cols["audio"]]
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(a) for a in arrays])
    values = np.concatenate(arrays) if arrays else np.zeros(0, np.float32)
    if len(values) >= 2 ** 31:
        raise HomophonyDataError(f"{len(values)} samples exceed one arrow list column (2^31): "
                                 "build or import the data in parts (e.g. max_items=...)")
    audio = pa.StructArray.from_arrays(
        [pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values)),
         pa.array([int(a["sampling_rate"]) for a in cols["audio"]], pa.int32()),
         pa.array([str(a.get("path") or "") for a in cols["audio"]], pa.string())],
        names=["array", "sampling_rate", "path"])
    table = {k: cols[k] for k in FIELDS if k != "audio"}
    rest = Dataset.from_dict(table, features=_without(feats, "audio"))
    tbl = rest.data.table.add_column(1, "audio", audio)
    ds = Dataset(tbl.select(list(FIELDS)))
    return ds.cast(feats) if ds.features != feats else ds


def _without(feats, name):
    from datasets import Features

    return Features({k: v for k, v in feats.items() if k != name})


def check_schema(ds) -> None:
    """Raise HomophonyDataError unless ``ds`` has exactly the common schema."""
    want = features()
    if dict(ds.features) != dict(want):
        extra = sorted(set(ds.features) - set(want))
        missing = sorted(set(want) - set(ds.features))
        diff = [k for k in want if k in ds.features and ds.features[k] != want[k]]
        raise HomophonyDataError(f"not the homophony schema: missing {missing}, extra {extra}, "
                                 f"different types {diff}")


# ---------------------------------------------------------------------------------------------
# plain-python accessors
# ---------------------------------------------------------------------------------------------
def item_audio(item) -> np.ndarray:
    """The item's samples as float32 16 kHz numpy: the dict's ``array`` (at its ``sampling_rate``,
    16 kHz when that is missing or None), else its ``path`` or ``bytes``
    (:func:`ctxmix_lite.audio.load_audio`)."""
    from .audio import load_audio

    a = item["audio"]
    if isinstance(a, dict):
        return load_audio(a, None if a.get("sampling_rate") is not None else SAMPLE_RATE, check=False)
    return load_audio(a, SAMPLE_RATE, check=False)


def item_alignment(item) -> List[dict]:
    """The word alignment as a list of ``{"start": s, "end": s, "word": str}`` (python floats),
    whatever the storage (list of dicts, or datasets' dict of lists)."""
    al = item["alignment"] if isinstance(item, dict) and "alignment" in item else item
    return _as_interval_list(al)


def cue_target_indices(item) -> Tuple[int, int, int]:
    """``(cue_index, target_index, target_index_2)`` into :func:`item_alignment` (-1: none).
    Uses the stored indices when present, else finds the words (:func:`find_cue_target`)."""
    ci, ti = item.get("cue_index", -1), item.get("target_index", -1)
    t2 = item.get("target_index_2", -1)
    if ci is not None and ti is not None and ci >= 0 and ti >= 0:
        return int(ci), int(ti), int(t2 if t2 is not None else -1)
    words = [w["word"] for w in item_alignment(item)]
    return find_cue_target(words, item["cue_word"], item["target_word"],
                           item.get("target_word_2") or "")


def norm_word(w: str) -> str:
    """Comparison form: lower case, NFC, ’ -> ', no surrounding punctuation."""
    w = unicodedata.normalize("NFC", str(w)).lower().replace("’", "'")
    return w.strip(" \t\n.,;:!?«»\"()[]{}…—–")


def find_cue_target(words: Sequence[str], cue: str, target: str, target_2: str = ""
                    ) -> Tuple[int, int, int]:
    """Indices of cue, target (and second target) in a word sequence, as in the study: the target
    is the first occurrence of the target word that has a cue occurrence before it; the cue is the
    occurrence nearest before it; the second target the first occurrence after the target.
    Raises HomophonyDataError (missing word, cue only after the target)."""
    w = [norm_word(x) for x in words]
    c, t = norm_word(cue), norm_word(target)
    cues = [i for i, x in enumerate(w) if x == c]
    targets = [i for i, x in enumerate(w) if x == t]
    if not cues:
        raise HomophonyDataError(f"cue word {cue!r} not in the alignment {list(words)}")
    if not targets:
        raise HomophonyDataError(f"target word {target!r} not in the alignment {list(words)}")
    ok = [j for j in targets if any(i < j for i in cues)]
    if not ok:
        raise HomophonyDataError(f"cue {cue!r} comes after target {target!r} in {list(words)}")
    ti = ok[0]
    ci = max(i for i in cues if i < ti)
    t2i = -1
    if target_2:
        later = [i for i, x in enumerate(w) if x == norm_word(target_2) and i > ti]
        if not later:
            raise HomophonyDataError(f"second target {target_2!r} not after {target!r} in "
                                     f"{list(words)}")
        t2i = later[0]
    return ci, ti, t2i


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


def check_item(item, duration: Optional[float] = None, tol: float = 0.02) -> None:
    """Raise HomophonyDataError unless the item is usable: alignment inside the clip and in order,
    indices pointing at the cue/target words, cue before target(s), known template and label."""
    al = item_alignment(item)
    if duration is None:
        a = item["audio"]
        duration = len(a["array"]) / float(a["sampling_rate"]) if len(a["array"]) else math.inf
    prev = -math.inf
    for k, w in enumerate(al):
        if not (-tol <= w["start"] <= w["end"] <= duration + tol):
            raise HomophonyDataError(f"word {k} {w['word']!r} [{w['start']:.3f}, {w['end']:.3f}] s "
                                     f"is outside the clip [0, {duration:.3f}] s or reversed")
        if w["start"] < prev - 1e-9:
            raise HomophonyDataError(f"word {k} {w['word']!r} starts before the previous word")
        prev = w["start"]
    ci, ti, t2 = item["cue_index"], item["target_index"], item["target_index_2"]
    n = len(al)
    if not (0 <= ci < n and 0 <= ti < n):
        raise HomophonyDataError(f"cue/target index {ci}/{ti} outside the alignment ({n} words)")
    if not ci < ti:
        raise HomophonyDataError(f"cue (word {ci}) is not before the target (word {ti})")
    if norm_word(al[ci]["word"]) != norm_word(item["cue_word"]):
        raise HomophonyDataError(f"alignment word {ci} is {al[ci]['word']!r}, not the cue "
                                 f"{item['cue_word']!r}")
    if norm_word(al[ti]["word"]) != norm_word(item["target_word"]):
        raise HomophonyDataError(f"alignment word {ti} is {al[ti]['word']!r}, not the target "
                                 f"{item['target_word']!r}")
    if item["target_word_2"]:
        if not (ti < t2 < n) or norm_word(al[t2]["word"]) != norm_word(item["target_word_2"]):
            raise HomophonyDataError(f"second target index {t2} does not point at "
                                     f"{item['target_word_2']!r} after the target")
    elif t2 != -1:
        raise HomophonyDataError("target_index_2 must be -1 when there is no second target")
    if "cue_distance" in item and item["cue_distance"] != ti - ci:
        raise HomophonyDataError(f"cue_distance {item['cue_distance']} is not target_index - "
                                 f"cue_index = {ti - ci}")
    td = item.get("cue_token_distance", -1)
    if td is None or td < -1:
        raise HomophonyDataError(f"cue_token_distance must be >= 0, or -1 (unknown); got {td!r}")
    if item["template"] not in TEMPLATES:
        raise HomophonyDataError(f"unknown template {item['template']!r}")
    if item["label"] not in LABELS:
        raise HomophonyDataError(f"unknown label {item['label']!r}")


# ---------------------------------------------------------------------------------------------
# word lists
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Noun:
    sg: str
    pl: str
    gender: str
    category: str
    where: str


@dataclass(frozen=True)
class Verb:
    sg: str
    pl: str
    tag: Tuple[str, ...]  # tense (Pronoun_Verb) or subject categories (Det_Noun_Verb)
    continuations: Tuple[str, ...]
    where: str


@dataclass(frozen=True)
class Adjective:
    forms: Dict[Tuple[str, str], str]  # (gender m|f, number sg|pl) -> form
    categories: Tuple[str, ...]
    combine: str  # "first" | "second" | "-"
    where: str

    def form(self, gender: str, plural: bool) -> str:
        return self.forms[(gender, "pl" if plural else "sg")]


@dataclass(frozen=True)
class Adverb:
    word: str
    determiners: Tuple[str, ...]  # singular determiners it goes with, or ("*",)
    where: str


@dataclass(frozen=True)
class CliticVerb:
    clitic: str
    sg: str
    pl: str
    tense: str
    continuations: Tuple[str, ...]
    where: str


@dataclass(frozen=True)
class Frame:
    key: str  # category / tense / "" (Det_Noun_Verb)
    text: str
    where: str


@dataclass
class WordLists:
    nouns: List[Noun]
    determiners: List[Tuple[str, str, str, Tuple[str, ...]]]  # (gender, sg, pl, categories)
    verbs_pronoun: List[Verb]
    verbs_subject: List[Verb]
    frames_det_noun: Dict[str, List[Frame]]
    frames_pronoun_verb: Dict[str, List[Frame]]
    frames_det_noun_verb: List[Frame]
    sources: Dict[str, str]  # relative file name -> text (for the cache key)
    adjectives: List[Adjective] = field(default_factory=list)
    adverbs: List[Adverb] = field(default_factory=list)
    verbs_clitic: List[CliticVerb] = field(default_factory=list)


WORDLIST_FILES = ("lexicon/nouns.txt", "lexicon/determiners.txt", "lexicon/verbs_pronoun.txt",
                  "lexicon/verbs_subject.txt", "frames/det_noun.txt", "frames/pronoun_verb.txt",
                  "frames/det_noun_verb.txt", "lexicon/adjectives.txt", "lexicon/adverbs.txt",
                  "lexicon/verbs_clitic.txt")


def wordlist_dir() -> Path:
    """``$CTXMIX_WORDLISTS``, else ``<checkout>/data``."""
    env = os.environ.get("CTXMIX_WORDLISTS", "").strip()
    if env:
        return Path(env).expanduser()
    here = Path(__file__).resolve().parents[2] / "data"
    if (here / "lexicon" / "nouns.txt").is_file():
        return here
    raise WordListError(
        "The word lists (data/lexicon/*.txt, data/frames/*.txt) are not found: run from a clone "
        "of the course repository (pip install -e .) or set CTXMIX_WORDLISTS to its data/ folder.")


def _lines(path: Path, rel: str):
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        s = line.strip()
        if s and not s.startswith("#"):
            yield f"data/{rel}:{no}", s


def consonant_initial(word: str) -> bool:
    """Whether ``word`` starts with a consonant letter (no liaison or elision before it)."""
    w = norm_word(word)
    return bool(w) and w[0].isalpha() and w[0] not in _VOWELS


def vowel_initial(word: str) -> bool:  # vowel or (mute) h
    """Whether ``word`` starts with a vowel or (mute) h."""
    w = norm_word(word)
    return bool(w) and w[0] in _VOWELS and w[0] != "y"


# The data-generating functions (_generating_code) call these by their old private names; their
# source is hashed into the data build key (_build_key), so they keep them: a rename there would
# rebuild the data. Other modules use the public names.
_consonant_initial, _vowel_initial = consonant_initial, vowel_initial


def load_word_lists(folder: Optional[Path] = None) -> WordLists:
    """Read and validate the word lists and frames. Raises WordListError naming file:line."""
    folder = Path(folder) if folder else wordlist_dir()
    sources = {}
    for rel in WORDLIST_FILES:
        p = folder / rel
        if not p.is_file():
            raise WordListError(f"missing word list {p}")
        sources[rel] = p.read_text(encoding="utf-8")

    def fail(where, msg):
        raise WordListError(f"{where}: {msg}")

    nouns = []
    for where, s in _lines(folder / WORDLIST_FILES[0], WORDLIST_FILES[0]):
        parts = s.split()
        if len(parts) != 4:
            fail(where, f"expected 'singular plural gender category', got {s!r}")
        sg, pl, g, cat = parts
        if g not in ("m", "f"):
            fail(where, f"gender must be m or f, got {g!r}")
        if not (_consonant_initial(sg) and _consonant_initial(pl)):
            fail(where, f"{sg}/{pl}: nouns must start with a consonant (no elision, no liaison "
                        "with the determiner)")
        if sg == pl:
            fail(where, f"{sg}: invariant noun (singular and plural spelled alike)")
        nouns.append(Noun(sg, pl, g, cat, where))

    dets = []
    for where, s in _lines(folder / WORDLIST_FILES[1], WORDLIST_FILES[1]):
        parts = s.split()
        if len(parts) != 4 or parts[0] not in ("m", "f"):
            fail(where, f"expected 'gender singular plural categories', got {s!r}")
        if parts[1].lower() not in SINGULAR_CUES or parts[2].lower() not in PLURAL_CUES:
            fail(where, f"{parts[1]}/{parts[2]} is not a known singular/plural determiner pair")
        dets.append((parts[0], parts[1], parts[2], tuple(parts[3].split(","))))

    def verbs(rel, kind):
        out = []
        for where, s in _lines(folder / rel, rel):
            if "|" not in s:
                fail(where, "expected 'singular plural tag | continuation; ...'")
            head, rest = s.split("|", 1)
            parts = head.split()
            if len(parts) != 3:
                fail(where, f"expected 'singular plural tag' before '|', got {head.strip()!r}")
            sg, pl, tag = parts
            conts = tuple(c.strip() for c in rest.split(";") if c.strip())
            if not conts:
                fail(where, "no continuation after '|'")
            if kind == "pronoun":
                if tag not in ("present", "imperfect"):
                    fail(where, f"tense must be present or imperfect, got {tag!r}")
                if not (_vowel_initial(sg) and _vowel_initial(pl)):
                    fail(where, f"{sg}/{pl}: Pronoun_Verb needs vowel-initial verbs (liaison /z/)")
                tags = (tag,)
            else:
                if not (_consonant_initial(sg) and _consonant_initial(pl)):
                    fail(where, f"{sg}/{pl}: Det_Noun_Verb needs consonant-initial verbs")
                tags = tuple(t for t in tag.split(",") if t)
            for c in conts:
                if not _consonant_initial(c.split()[0]):
                    fail(where, f"continuation {c!r} must start with a consonant (liaison trap "
                                f"after the plural verb, e.g. 'aiment une')")
            out.append(Verb(sg, pl, tags, conts, where))
        return out

    v_pron = verbs(WORDLIST_FILES[2], "pronoun")
    v_subj = verbs(WORDLIST_FILES[3], "subject")

    def frames(rel, placeholders, keyed):
        out = {} if keyed else []
        for where, s in _lines(folder / rel, rel):
            key, text = "", s
            if keyed:
                if "|" not in s:
                    fail(where, "expected 'key | frame'")
                key, text = (x.strip() for x in s.split("|", 1))
            for ph in placeholders:
                if text.count(ph) != 1:
                    fail(where, f"frame must contain {ph} exactly once: {text!r}")
            after = text.split(placeholders[-1], 1)[1].strip()
            if after and after[0].isalpha() and not _consonant_initial(after.split()[0]):
                fail(where, f"the word after {placeholders[-1]} must start with a consonant: "
                            f"{text!r}")
            fr = Frame(key, text, where)
            if keyed:
                out.setdefault(key, []).append(fr)
            else:
                out.append(fr)
        return out

    f_dn = frames(WORDLIST_FILES[4], ("{NP}",), True)
    f_pv = frames(WORDLIST_FILES[5], ("{PRON}", "{VERB}", "{REST}"), True)
    f_dnv = frames(WORDLIST_FILES[6], ("{NP}", "{VERB}", "{REST}"), False)
    for n in nouns:
        if n.category not in f_dn:
            fail(n.where, f"category {n.category!r} has no frame in data/frames/det_noun.txt")
    for v in v_pron:
        if v.tag[0] not in f_pv:
            fail(v.where, f"tense {v.tag[0]!r} has no frame in data/frames/pronoun_verb.txt")
    for v in v_subj:
        for cat in v.tag:
            if not any(n.category == cat for n in nouns):
                fail(v.where, f"subject category {cat!r} has no noun")
    for n in nouns:
        if not _dets_for(dets, n):
            fail(n.where, f"no determiner in data/{WORDLIST_FILES[1]} for a {n.gender} "
                          f"{n.category}")

    cats = {n.category for n in nouns}
    adjs = []
    for where, s in _lines(folder / WORDLIST_FILES[7], WORDLIST_FILES[7]):
        parts = s.split()
        if len(parts) != 6:
            fail(where, "expected 'masc-sg masc-pl fem-sg fem-pl categories combine', got "
                        f"{s!r}")
        ms, mp, fs, fp, cat, comb = parts
        for w in (ms, mp, fs, fp):
            if not _consonant_initial(w):
                fail(where, f"{w}: adjectives must start with a consonant (no elision of le/la, "
                            "no liaison after les)")
        if comb not in ("first", "second", "-"):
            fail(where, f"combine must be first, second or -, got {comb!r}")
        c = tuple(x for x in cat.split(",") if x)
        bad = [x for x in c if x not in cats]
        if bad:
            fail(where, f"unknown noun categories {bad} (known: {sorted(cats)})")
        adjs.append(Adjective({("m", "sg"): ms, ("m", "pl"): mp, ("f", "sg"): fs,
                               ("f", "pl"): fp}, c, comb, where))
    advs = []
    for where, s in _lines(folder / WORDLIST_FILES[8], WORDLIST_FILES[8]):
        if "|" not in s:
            fail(where, "expected 'adverb | determiners'")
        w, d = (x.strip() for x in s.split("|", 1))
        if len(w.split()) != 1 or not _consonant_initial(w):
            fail(where, f"{w!r}: one consonant-initial word expected (no liaison before the "
                        "adjective)")
        ds = tuple(x.strip() for x in d.split(",") if x.strip())
        sg_dets = {x[1] for x in dets}
        if not ds or any(x != "*" and x not in sg_dets for x in ds):
            fail(where, f"determiners must be * or singular determiners of "
                        f"data/{WORDLIST_FILES[1]}, got {d!r}")
        advs.append(Adverb(w, ds, where))
    v_clit = []
    for where, s in _lines(folder / WORDLIST_FILES[9], WORDLIST_FILES[9]):
        if "|" not in s:
            fail(where, "expected 'clitic singular plural tense | continuation; ...'")
        head, rest = s.split("|", 1)
        parts = head.split()
        if len(parts) != 4:
            fail(where, f"expected 'clitic singular plural tense' before '|', got {head.strip()!r}")
        cl, sg, pl, tense = parts
        if not (cl.lower() in ("en", "y") or _vowel_initial(cl)):
            fail(where, f"clitic {cl!r} must start with a vowel (ils/elles keep the liaison /z/)")
        if tense not in f_pv:
            fail(where, f"tense {tense!r} has no frame in data/{WORDLIST_FILES[5]}")
        conts = tuple(c.strip() for c in rest.split(";") if c.strip())
        if not conts:
            fail(where, "no continuation after '|'")
        for c in conts:
            if not _consonant_initial(c.split()[0]):
                fail(where, f"continuation {c!r} must start with a consonant (liaison trap "
                            f"after the plural verb)")
        v_clit.append(CliticVerb(cl, sg, pl, tense, conts, where))
    return WordLists(nouns, dets, v_pron, v_subj, f_dn, f_pv, f_dnv, sources, adjs, advs, v_clit)


def _dets_for(dets, noun: Noun):
    return [d for d in dets if d[0] == noun.gender and ("*" in d[3] or noun.category in d[3])]


# ---------------------------------------------------------------------------------------------
# candidate pairs
# ---------------------------------------------------------------------------------------------
@dataclass
class PairSpec:
    template: str
    texts: Tuple[str, str]  # (singular, plural)
    cues: Tuple[str, str]
    targets: Tuple[str, str]
    targets_2: Tuple[str, str]  # ("", "") if none
    cue_index: int
    target_index: int
    target_index_2: int
    voice: str
    rate: int
    pitch: int
    pitch_range: int
    sources: Tuple[str, ...] = ()
    variant: str = "adjacent"
    between: Tuple[Tuple[str, str], ...] = ()  # (singular, plural) form of each word between
    lead: int = 0  # edge silence, samples at 16 kHz (start, end of the clip)
    tail: int = 0


def _fill(frame: str, values: Dict[str, str]) -> Tuple[str, Dict[str, int]]:
    """Fill the placeholders; return the text and the word index of each placeholder's first word.
    ``{NP}``: det + noun (indices of NP = det); a frame starting with a placeholder is capitalised."""
    from .synth import tokenize

    text, index = frame, {}
    # word index of a placeholder = number of words before it in the filled text
    order = sorted(values, key=lambda ph: frame.index(ph))
    for ph in order:
        before = text.split(ph, 1)[0]
        index[ph] = len(tokenize(before))
        text = text.replace(ph, values[ph], 1)
    if text[:1].islower():
        text = text[0].upper() + text[1:]
    return text, index


def _word_at(text: str, idx: int) -> str:
    """The word ``idx`` of ``text`` as written there (capitalised at the sentence start)."""
    from .synth import tokenize

    return tokenize(text)[idx][0]


class _Prosody:
    def __init__(self, rng, voices):
        self.rng, self.voices, self.k = rng, list(voices), 0
        self.order = list(rng.permutation(len(self.voices)))

    def next(self):
        if self.k == len(self.order):
            self.order, self.k = list(self.rng.permutation(len(self.voices))), 0
        v = self.voices[self.order[self.k]]
        self.k += 1
        r = self.rng
        lo, hi = (int(round(x * SAMPLE_RATE)) for x in EDGE_SILENCE)
        return dict(voice=v, rate=int(r.integers(RATE_RANGE[0], RATE_RANGE[1] + 1)),
                    pitch=int(r.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
                    pitch_range=int(r.integers(RANGE_RANGE[0], RANGE_RANGE[1] + 1)),
                    lead=int(r.integers(lo, hi + 1)), tail=int(r.integers(lo, hi + 1)))


#: Determiners not used before an adjective: careful French turns plural "des" into "de" there
#: ("de petits chats"), which would change the cue.
_NO_ADJ_DETS = ("un", "une")


def _noun_phrase(variant: str, noun: Noun, lists: WordLists, pick):
    """``(determiner row, [(singular, plural) of each word between determiner and noun])`` for a
    noun-phrase variant, or None when the lists offer no such phrase for this noun."""
    dets = _dets_for(lists.determiners, noun)
    if variant != "adjacent":
        dets = [d for d in dets if d[1] not in _NO_ADJ_DETS]
    if not dets:
        return None
    det = pick(dets)
    adjs = [a for a in lists.adjectives if noun.category in a.categories]
    g = noun.gender

    def forms(a):
        return (a.form(g, False), a.form(g, True))

    mods = []
    if variant in ("adv_adj", "adv_adj_adj"):
        advs = [a for a in lists.adverbs if "*" in a.determiners or det[1] in a.determiners]
        if not advs:
            return None
        w = pick(advs).word
        mods.append((w, w))
    if variant in ("adj", "adv_adj"):
        if not adjs:
            return None
        mods.append(forms(pick(adjs)))
    elif variant in ("adj_adj", "adv_adj_adj"):
        firsts = [a for a in adjs if a.combine == "first"]
        seconds = [a for a in adjs if a.combine == "second"]
        if not firsts or not seconds:
            return None
        mods += [forms(pick(firsts)), forms(pick(seconds))]
    elif variant != "adjacent":
        raise ValueError(f"unknown noun-phrase variant {variant!r}")
    return det, mods


MAX_ROUNDS = 400


def candidate_pairs(template: str, lists: WordLists, rng, voices, prosody=None,
                    variant: str = "adjacent") -> Iterator[PairSpec]:
    """Endless-until-exhausted stream of distinct minimal pairs for ``template`` and ``variant``
    (:data:`VARIANTS`; deterministic for a given numpy Generator). Words are visited round-robin
    so that a small build still uses many different targets. ``prosody``: a shared voice/prosody
    drawer (balances voices across templates); default: one of its own from ``rng``."""
    if template not in VARIANTS:
        raise ValueError(f"unknown template {template!r}; expected one of {TEMPLATES}")
    if variant not in VARIANTS[template]:
        raise ValueError(f"unknown variant {variant!r} of {template}; expected one of "
                         f"{VARIANTS[template]}")
    pros = prosody or _Prosody(rng, voices)
    seen = set()

    def pick(seq):
        return seq[int(rng.integers(len(seq)))]

    def np_text(det, mods, n, k):
        return " ".join([det[1 + k]] + [m[k] for m in mods] + [(n.sg, n.pl)[k]])

    if template == "Det_Noun":
        nouns = [lists.nouns[i] for i in rng.permutation(len(lists.nouns))]
        for _ in range(MAX_ROUNDS):
            for n in nouns:
                fr = pick(lists.frames_det_noun[n.category])
                npx = _noun_phrase(variant, n, lists, pick)
                if npx is None:
                    continue
                det, mods = npx
                key = (fr.text, det, tuple(mods), n.sg)
                if key in seen:
                    continue
                seen.add(key)
                (t_sg, ix), (t_pl, _) = (_fill(fr.text, {"{NP}": np_text(det, mods, n, 0)}),
                                         _fill(fr.text, {"{NP}": np_text(det, mods, n, 1)}))
                ci = ix["{NP}"]
                yield PairSpec(template, (t_sg, t_pl), (_word_at(t_sg, ci),
                               _word_at(t_pl, ci)), (n.sg, n.pl), ("", ""), ci,
                               ci + 1 + len(mods), -1, sources=(n.where, fr.where),
                               variant=variant, between=tuple(mods), **pros.next())
    elif template == "Pronoun_Verb" and variant == "adjacent":
        verbs = [lists.verbs_pronoun[i] for i in rng.permutation(len(lists.verbs_pronoun))]
        for _ in range(MAX_ROUNDS):
            for v in verbs:
                fr, rest = pick(lists.frames_pronoun_verb[v.tag[0]]), pick(v.continuations)
                pron = pick(("il", "elle"))
                key = (fr.text, rest, pron, v.sg)
                if key in seen:
                    continue
                seen.add(key)
                t_sg, ix = _fill(fr.text, {"{PRON}": pron, "{VERB}": v.sg, "{REST}": rest})
                t_pl, _ = _fill(fr.text, {"{PRON}": pron + "s", "{VERB}": v.pl, "{REST}": rest})
                ci, ti = ix["{PRON}"], ix["{VERB}"]
                yield PairSpec(template, (t_sg, t_pl), (_word_at(t_sg, ci),
                               _word_at(t_pl, ci)), (v.sg, v.pl), ("", ""), ci, ti, -1,
                               sources=(v.where, fr.where), **pros.next())
    elif template == "Pronoun_Verb":  # clitic: "ils en mangent"
        verbs = [lists.verbs_clitic[i] for i in rng.permutation(len(lists.verbs_clitic))]
        for _ in range(MAX_ROUNDS):
            for v in verbs:
                fr, rest = pick(lists.frames_pronoun_verb[v.tense]), pick(v.continuations)
                pron = pick(("il", "elle"))
                key = (fr.text, rest, pron, v.clitic, v.sg)
                if key in seen:
                    continue
                seen.add(key)
                t_sg, ix = _fill(fr.text, {"{PRON}": pron, "{VERB}": f"{v.clitic} {v.sg}",
                                           "{REST}": rest})
                t_pl, _ = _fill(fr.text, {"{PRON}": pron + "s", "{VERB}": f"{v.clitic} {v.pl}",
                                          "{REST}": rest})
                ci, ti = ix["{PRON}"], ix["{VERB}"] + 1
                yield PairSpec(template, (t_sg, t_pl), (_word_at(t_sg, ci),
                               _word_at(t_pl, ci)), (v.sg, v.pl), ("", ""), ci, ti, -1,
                               sources=(v.where, fr.where), variant=variant,
                               between=((v.clitic, v.clitic),), **pros.next())
    else:  # Det_Noun_Verb
        verbs = [lists.verbs_subject[i] for i in rng.permutation(len(lists.verbs_subject))]
        for _ in range(MAX_ROUNDS):
            for v in verbs:
                n = pick([x for x in lists.nouns if x.category in v.tag])
                npx = _noun_phrase(variant, n, lists, pick)
                if npx is None:
                    continue
                det, mods = npx
                fr, rest = pick(lists.frames_det_noun_verb), pick(v.continuations)
                key = (fr.text, rest, det, tuple(mods), n.sg, v.sg)
                if key in seen:
                    continue
                seen.add(key)
                t_sg, ix = _fill(fr.text, {"{NP}": np_text(det, mods, n, 0), "{VERB}": v.sg,
                                           "{REST}": rest})
                t_pl, _ = _fill(fr.text, {"{NP}": np_text(det, mods, n, 1), "{VERB}": v.pl,
                                          "{REST}": rest})
                ci = ix["{NP}"]
                yield PairSpec(template, (t_sg, t_pl), (_word_at(t_sg, ci),
                               _word_at(t_pl, ci)), (n.sg, n.pl), (v.sg, v.pl), ci,
                               ci + 1 + len(mods), ix["{VERB}"],
                               sources=(n.where, v.where, fr.where), variant=variant,
                               between=tuple(mods), **pros.next())


def template_quotas(n_pairs: int, mix=None) -> Dict[str, int]:
    """Pairs per template: largest-remainder rounding of ``n_pairs * share``, at least 1 each."""
    mix = OrderedDict(mix or DEFAULT_MIX)
    if set(mix) - set(TEMPLATES):
        raise ValueError(f"unknown templates in mix: {sorted(set(mix) - set(TEMPLATES))}")
    total = sum(mix.values())
    raw = {t: n_pairs * mix[t] / total for t in mix}
    q = {t: int(math.floor(raw[t])) for t in mix}
    for t in sorted(mix, key=lambda t: -(raw[t] - q[t]))[: n_pairs - sum(q.values())]:
        q[t] += 1
    for t in mix:  # every template present
        if q[t] == 0 and mix[t] > 0 and n_pairs >= len(mix):
            donor = max(q, key=q.get)
            q[donor] -= 1
            q[t] += 1
    return dict(q)


def _largest_remainder(n: int, shares: Dict[str, float]) -> Dict[str, int]:
    total = sum(shares.values())
    raw = {k: n * v / total for k, v in shares.items()}
    q = {k: int(math.floor(raw[k])) for k in shares}
    for k in sorted(shares, key=lambda k: -(raw[k] - q[k]))[: n - sum(q.values())]:
        q[k] += 1
    return q


def variant_quotas(n_pairs: int, mix=None, variant_mix=None) -> Dict[Tuple[str, str], int]:
    """Pairs per (template, variant): :func:`template_quotas`, then each template's pairs split
    over its variants (:data:`DEFAULT_VARIANT_MIX`) by largest-remainder rounding."""
    vm = variant_mix or DEFAULT_VARIANT_MIX
    out = OrderedDict()
    for t, n in template_quotas(n_pairs, mix).items():
        shares = OrderedDict(vm.get(t) or {"adjacent": 1.0})
        bad = [v for v in shares if v not in VARIANTS[t]]
        if bad:
            raise ValueError(f"unknown variants of {t}: {bad}; expected {VARIANTS[t]}")
        for v, k in _largest_remainder(n, shares).items():
            out[(t, v)] = k
    return dict(out)


def far_share(quotas: Dict[Tuple[str, str], int], lo: int = 2, hi: int = 4) -> float:
    """Share of pairs (= of items) with ``lo``..``hi`` words between cue and target."""
    n = sum(quotas.values())
    return sum(k for (t, v), k in quotas.items() if lo <= VARIANT_GAP[v] <= hi) / max(n, 1)


# ---------------------------------------------------------------------------------------------
# checks on a synthesised pair
# ---------------------------------------------------------------------------------------------
def check_pair_synthesis(spec: PairSpec, sg, pl) -> Optional[str]:
    """None if the pair passes the synthesiser checks, else the exclusion reason."""
    for s in (sg, pl):
        if s.clipped:
            return "clipping"
        n = len(s.words)
        if any(not (0 <= w["start"] <= w["end"] <= s.duration + 1e-6) for w in s.words) or any(
                s.words[k]["start"] < s.words[k - 1]["start"] for k in range(1, n)):
            return "alignment_invalid"
    if len(sg.words) != len(pl.words):
        return "alignment_invalid"
    idx = [spec.cue_index, spec.target_index] + (
        [spec.target_index_2] if spec.target_index_2 >= 0 else [])
    for s, cue, tgt, tgt2 in ((sg, spec.cues[0], spec.targets[0], spec.targets_2[0]),
                              (pl, spec.cues[1], spec.targets[1], spec.targets_2[1])):
        want = [cue, tgt] + ([tgt2] if spec.target_index_2 >= 0 else [])
        if [norm_word(s.words[i]["word"]) for i in idx] != [norm_word(w) for w in want]:
            return "alignment_invalid"
    if sg.word_phones(spec.target_index) != pl.word_phones(spec.target_index):
        return "synth_target_phones_differ"
    if spec.target_index_2 >= 0 and (sg.word_phones(spec.target_index_2)
                                     != pl.word_phones(spec.target_index_2)):
        return "synth_target2_phones_differ"
    for k in range(spec.cue_index + 1, spec.target_index):  # the words between cue and target
        if sg.word_phones(k) != pl.word_phones(k):
            return "synth_intervening_phones_differ"
    cue_sg, cue_pl = sg.word_phones(spec.cue_index), pl.word_phones(spec.cue_index)
    if cue_sg == cue_pl:
        return "cue_not_audible"
    if spec.template == "Pronoun_Verb" and not (cue_pl[-1:] == ["z"] and cue_sg[-1:] != ["z"]):
        return "cue_liaison_missing"
    for k in range(len(sg.words)):
        if k != spec.cue_index and sg.word_phones(k) != pl.word_phones(k):
            return "context_phones_differ"
    return None


# ---------------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------------
def _hash_inputs(parts: dict) -> str:
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def _synth_identity() -> dict:
    from . import synth

    info = synth.find_library()
    ver = ""
    try:
        import ctypes

        lib = ctypes.CDLL(info.path)
        lib.espeak_Info.restype = ctypes.c_char_p
        ver = (lib.espeak_Info(None) or b"").decode()
    except Exception:  # pragma: no cover
        pass
    return {"library": info.path, "source": info.source, "version": ver, "mbrola": info.mbrola}


def _generating_code():
    return (load_word_lists, _dets_for, _fill, _word_at, _Prosody, _noun_phrase, candidate_pairs,
            template_quotas, _largest_remainder, variant_quotas, check_pair_synthesis,
            pad_edges, text_token_ids, token_distance, _byte_level_decoder, _build_rows,
            to_dataset, features)


def build_dir(key: str) -> Path:
    from ctxmix_lite.course.paths import data_dir

    return data_dir() / "homophony" / key


def _build_key(n_items, seed, voices, mix, lists: WordLists, variant_mix=None
               ) -> Tuple[str, dict]:
    from . import lexicon

    code = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for mod in ("synth.py", "lexicon.py"):
        code.update((here / mod).read_bytes())
    import inspect

    for fn in _generating_code():  # the parts of this module that make the data
        code.update(inspect.getsource(fn).encode())
    ident = {
        "code": CODE_VERSION, "code_sha256": code.hexdigest()[:16], "n_items": n_items, "seed": seed, "voices": list(voices),
        "mix": dict(mix), "word_lists": {k: hashlib.sha256(v.encode()).hexdigest()
                                         for k, v in lists.sources.items()},
        "synth": _synth_identity(), "lexicon": lexicon.source_version(),
        "prosody": [RATE_RANGE, PITCH_RANGE, RANGE_RANGE],
        "variants": {t: dict(v) for t, v in (variant_mix or DEFAULT_VARIANT_MIX).items()},
        "edge_silence": list(EDGE_SILENCE), "tokenizer": tokenizer_identity(),
    }
    return _hash_inputs(ident), ident


def build_offline(n_items: int = DEFAULT_ITEMS, smoke: bool = False, out_dir=None, seed: int = 0,
                  workers: int = 1, voices: Optional[Sequence[str]] = None, mix=None,
                  force: bool = False, progress: bool = True, variant_mix=None):
    """Build (or load from the cache) the offline synthetic homophony set.

    n_items: number of items (even: pairs); ``smoke=True`` makes it :data:`SMOKE_ITEMS` unless
    another ``n_items`` is given. Labels are balanced by construction (one singular and one plural
    per pair); templates follow ``mix`` (:data:`DEFAULT_MIX`), and each template's pairs are split
    over its :data:`VARIANTS` by ``variant_mix`` (:data:`DEFAULT_VARIANT_MIX`; a template it
    lacks is all adjacent): at least 30 % of the default build has 2-3 words between cue and
    target. Every clip starts and ends with a pause (:data:`EDGE_SILENCE`, drawn per pair).
    out_dir: where the build goes (default ``paths.data_dir()/homophony/<key>``); the key hashes
    every input (word lists, code version, voices, prosody ranges, parameters, synthesiser and
    lexicon versions), so a change of any input rebuilds and nothing else does.
    workers: processes for synthesis (libespeak-ng is single-threaded global state); the result
    does not depend on it.
    Returns a ``datasets.Dataset`` in :func:`features`; the report is ``build_report(ds)``.
    """
    from . import synth

    if smoke and n_items == DEFAULT_ITEMS:
        n_items = SMOKE_ITEMS
    if n_items < 2 or n_items % 2:
        raise ValueError(f"n_items must be an even number >= 2 (pairs); got {n_items}")
    voices = list(voices) if voices else synth.default_voices()
    if not voices:
        raise synth.SynthesizerUnavailable(f"no French voice: {synth.INSTALL_COMMAND}")
    mix = OrderedDict(mix or DEFAULT_MIX)
    lists = load_word_lists()
    key, ident = _build_key(n_items, seed, voices, mix, lists, variant_mix)
    out = Path(out_dir) if out_dir else build_dir(key)
    if not force and _complete(out, key):
        return _load_build(out)
    t0 = time.perf_counter()
    tmp = _tmp_dir(out)
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "clips").mkdir(parents=True)
    rows, report = _build_rows(n_items, seed, voices, mix, lists, workers, progress, tmp, out,
                               variant_mix)
    report["build_seconds"] = round(time.perf_counter() - t0, 2)
    report["key"], report["inputs"] = key, ident
    with _quiet_datasets(not progress):
        ds = to_dataset(rows)
        _save_build(ds, report, out)
    return _load_build(out)


class _quiet_datasets:
    """Silence datasets' own progress bars (saving, casting) inside a build run with
    ``progress=False``."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __enter__(self):
        from datasets.utils import are_progress_bars_disabled, disable_progress_bars

        self.was = are_progress_bars_disabled()
        if self.quiet:
            disable_progress_bars()
        return self

    def __exit__(self, *exc):
        from datasets.utils import enable_progress_bars

        if self.quiet and not self.was:
            enable_progress_bars()
        return False


def _complete(out: Path, key: str) -> bool:
    rp = out / "report.json"
    if not (rp.is_file() and (out / "dataset" / "dataset_info.json").is_file()):
        return False
    try:
        return json.loads(rp.read_text())["key"] == key
    except Exception:
        return False


def _tmp_dir(out: Path) -> Path:
    return out.with_name(out.name + f".tmp{os.getpid()}")


def _save_build(ds, report, out: Path):
    """Write dataset + report into the temporary folder (which already holds clips/), then move
    it into place, so that an interrupted build is never mistaken for a cached one."""
    tmp = _tmp_dir(out)
    ds.save_to_disk(str(tmp / "dataset"))
    (tmp / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def _load_build(out: Path):
    """Load a build; if a transcription check was saved for it, fill ``whisper_ok`` from it."""
    from datasets import load_from_disk

    ds = load_from_disk(str(out / "dataset"))
    texts = None
    wc = out / "whisper_check.json"
    if wc.is_file():
        items = json.loads(wc.read_text())["items"]
        if all(i in items for i in ds["item_id"]):
            texts = [items[i]["text"] for i in ds["item_id"]]
    if texts is None:  # the committed check of the default model, if the audio is bit-identical
        texts = _seed_transcripts(ds)
    if texts is not None:
        oks = [whisper_item_ok(t, ds[i]) for i, t in enumerate(texts)]
        with _quiet_datasets(True):
            ds = ds.remove_columns("whisper_ok").add_column("whisper_ok", oks)
            ds = ds.select_columns(list(FIELDS)).cast(features())
        ds._ctxmix_transcripts = dict(zip(ds["item_id"], texts))  # type: ignore[attr-defined]
    ds._ctxmix_build_dir = str(out)  # type: ignore[attr-defined]
    return ds


DEFAULT_CHECK_MODEL = "whisper-base"


def _seed_transcripts(ds) -> Optional[List[str]]:
    """Transcripts of every item from a committed ``data/checks/whisper-base*.tsv`` (keyed by the
    audio's SHA-1), or None when any item is missing there (other synthesiser version, another
    build such as the smoke set, which shares a few items with the default one: a partly checked
    set would make ``checked_only`` selections keep only those few)."""
    folder = _seed_check_path("x").parent
    if not folder.is_dir():
        return None
    keys = None
    for f in sorted(folder.glob(f"{DEFAULT_CHECK_MODEL}*.tsv")):
        table = _read_seed(f)
        if keys is None:
            keys = [_audio_key(np.asarray(a["array"], np.float32)) for a in ds["audio"]]
        if all(k in table for k in keys):
            return [table[k] for k in keys]
    return None


def _read_seed(path: Path) -> Dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            parts = line.split("\t")
            if len(parts) >= 3:
                out[parts[0]] = parts[-1]
    return out


def build_report(ds_or_dir) -> dict:
    """The build report (dict) of a built data set or build folder."""
    d = getattr(ds_or_dir, "_ctxmix_build_dir", None) or ds_or_dir
    p = Path(d) / "report.json"
    if not p.is_file():
        raise FileNotFoundError(f"no build report at {p}")
    return json.loads(p.read_text())


def pad_edges(s, lead: int, tail: int):
    """A copy of Synthesis ``s`` with ``lead`` / ``tail`` samples of silence (zeros) at its start
    and end; word and phone times shifted by ``lead / sampling_rate``."""
    from dataclasses import replace

    if lead < 0 or tail < 0:
        raise ValueError(f"edge silence must be >= 0 samples, got {lead}, {tail}")
    dt = lead / s.sampling_rate
    audio = np.concatenate([np.zeros(lead, np.float32), np.asarray(s.audio, np.float32),
                            np.zeros(tail, np.float32)])
    words = [dict(w, start=w["start"] + dt, end=w["end"] + dt) for w in s.words]
    phones = [dict(p, start=p["start"] + dt, end=p["end"] + dt) for p in s.phones]
    return replace(s, audio=audio, words=words, phones=phones)


def _build_rows(n_items, seed, voices, mix, lists, workers, progress, tmp: Path, out: Path,
                variant_mix=None):
    from tqdm.auto import tqdm

    from . import lexicon, synth

    n_pairs = n_items // 2
    quotas = template_quotas(n_pairs, mix)
    vquotas = variant_quotas(n_pairs, mix, variant_mix)
    rng = np.random.default_rng(seed)
    rngs = dict(zip(TEMPLATES, rng.spawn(len(TEMPLATES))))
    rngs = {(t, v): r for t in TEMPLATES for v, r in zip(VARIANTS[t], rngs[t].spawn(
        len(VARIANTS[t])))}
    tok = decoder_tokenizer()
    prosody = _Prosody(rng, voices)  # shared: voices balanced over the whole set
    excluded, examples = Counter(), {}
    examined, examined_v, excluded_v = Counter(), Counter(), Counter()
    lex_checked, lex_failed = set(), {}
    between_checked, between_failed = set(), {}
    saturations = 0
    accepted: List[Tuple[PairSpec, object, object]] = []

    def exclude(reason, spec):
        excluded[reason] += 1
        excluded_v[f"{spec.template}/{spec.variant}/{reason}"] += 1
        ex = examples.setdefault(reason, [])
        if len(ex) < 5:
            ex.append(spec.texts[1])

    bar = tqdm(total=n_pairs, desc="homophony pairs", disable=not progress)
    pool = None
    if workers > 1:
        import multiprocessing as mp

        pool = mp.get_context("spawn").Pool(workers)
    try:
        for (template, variant), need in vquotas.items():
            if need == 0:
                continue
            stream = candidate_pairs(template, lists, rngs[(template, variant)], voices, prosody,
                                     variant=variant)
            got = 0
            while got < need:
                # a chunk of candidates that pass the lexicon check, synthesised together
                chunk = []
                while len(chunk) < min(64, (need - got) + max(1, (need - got) // 8)):
                    try:
                        spec = next(stream)
                    except StopIteration:
                        raise HomophonyDataError(
                            f"the word lists give only {got} valid {template}/{variant} pairs; "
                            f"{need} wanted. Add words/frames in data/ or lower n_items.") from None
                    chunk.append(spec)
                jobs = []
                for spec in chunk:
                    for k in (0, 1):
                        jobs.append(dict(text=spec.texts[k], voice=spec.voice, rate=spec.rate,
                                         pitch=spec.pitch, pitch_range=spec.pitch_range))
                lex = []
                for spec in chunk:
                    reason = None
                    for a, b in (spec.targets, spec.targets_2):
                        if a:
                            r = lexicon.check_pair(a, b)
                            lex_checked.add((a, b))
                            if r:
                                lex_failed[f"{a}/{b}"] = r.split(":")[0]
                                reason = reason or r.split(":")[0]
                    for a, b in spec.between:  # intervening words: homophones (or invariant)
                        r = lexicon.check_pair(a, b)
                        between_checked.add((a, b))
                        if r:
                            between_failed[f"{a}/{b}"] = r.split(":")[0]
                            reason = reason or "intervening_" + r.split(":")[0]
                    lex.append(reason)
                # only synthesise what passed the lexicon
                todo = [j for i, j in enumerate(jobs) if lex[i // 2] is None]
                if pool is not None:
                    res = pool.map(synth._safe, todo, chunksize=4)
                else:
                    res = [synth._safe(j) for j in todo]
                it = iter(res)
                for i, spec in enumerate(chunk):
                    if got >= need:
                        break  # candidates past the quota are not counted
                    examined[template] += 1
                    examined_v[f"{template}/{variant}"] += 1
                    if lex[i] is not None:
                        exclude(lex[i], spec)
                        continue
                    sg, pl = next(it), next(it)
                    if isinstance(sg, Exception) or isinstance(pl, Exception):
                        err = sg if isinstance(sg, Exception) else pl
                        if isinstance(err, synth.SynthesizerUnavailable):
                            raise err
                        exclude("synthesis_error", spec)
                        continue
                    reason = check_pair_synthesis(spec, sg, pl)
                    if reason:
                        exclude(reason, spec)
                        continue
                    saturations += sg.saturations + pl.saturations
                    accepted.append((spec, pad_edges(sg, spec.lead, spec.tail),
                                     pad_edges(pl, spec.lead, spec.tail)))
                    got += 1
                    bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()

    rows = []
    import soundfile as sf

    counters = Counter()
    edges, tok_fail = {}, 0
    for spec, sg, pl in accepted:
        counters[spec.template] += 1
        pair_id = f"{spec.template}-{counters[spec.template]:04d}"
        edges[pair_id] = [spec.lead, spec.tail]
        for k, (s, label) in enumerate(((sg, "singular"), (pl, "plural"))):
            words = [w["word"] for w in s.words]
            tdist = token_distance(s.text, words, spec.cue_index, spec.target_index, tok)
            tok_fail += tdist < 0
            item_id = f"{pair_id}-{'sg' if k == 0 else 'pl'}"
            sf.write(str(tmp / "clips" / f"{item_id}.wav"), s.audio, SAMPLE_RATE,
                     subtype="PCM_16")  # a 16-bit copy for listening / other tools
            row = {
                "item_id": item_id,
                "audio": {"array": s.audio, "sampling_rate": SAMPLE_RATE,
                          "path": str(out / "clips" / f"{item_id}.wav")},
                "transcription": s.text,
                "cue_word": spec.cues[k],
                "target_word": spec.targets[k],
                "target_word_2": spec.targets_2[k],
                "alignment": [dict(start=w["start"], end=w["end"], word=w["word"])
                              for w in s.words],
                "template": spec.template,
                "label": label,
                "voice": s.voice,
                "pair_id": pair_id,
                "cue_index": spec.cue_index,
                "target_index": spec.target_index,
                "target_index_2": spec.target_index_2,
                "cue_distance": spec.target_index - spec.cue_index,
                "cue_token_distance": tdist,
                "whisper_ok": None,
                "phones": [dict(start=p["start"], end=p["end"], phone=p["phone"],
                                word_index=p["word_index"]) for p in s.phones],
            }
            check_item(row, duration=s.duration)
            rows.append(row)
    report = {
        "n_items": len(rows), "n_pairs": len(accepted), "seed": seed, "quotas": quotas,
        "variant_quotas": {f"{t}/{v}": k for (t, v), k in vquotas.items()},
        "voices": list(voices),
        "counts": _counts(rows),
        "candidates_examined": dict(examined),
        "candidates_examined_by_variant": dict(examined_v),
        "excluded": dict(sorted(excluded.items())),
        "excluded_by_variant": dict(sorted(excluded_v.items())),
        "excluded_examples": examples,
        "edge_silence_samples": edges,
        "checks": {
            "lexicon_pairs_checked": len(lex_checked),
            "lexicon_failures": dict(sorted(lex_failed.items())),
            "intervening_lexicon_pairs_checked": len(between_checked),
            "intervening_lexicon_failures": dict(sorted(between_failed.items())),
            "intervening_words_checked": sorted(f"{a}/{b}" for a, b in between_checked),
            "pairs_with_identical_intervening_phones": sum(1 for s, _, _ in accepted
                                                           if s.between),
            "items_without_token_distance": tok_fail,
            "pairs_with_identical_target_phones": len(accepted),
            "pronoun_verb_plural_cue_ends_in_z": sum(
                1 for s, _, p in accepted if s.template == "Pronoun_Verb"
                and p.word_phones(s.cue_index)[-1:] == ["z"]),
            "pronoun_verb_singular_cue_without_z": sum(
                1 for s, g, _ in accepted if s.template == "Pronoun_Verb"
                and g.word_phones(s.cue_index)[-1:] != ["z"]),
            "items_clipped": 0,
            "mbrola_saturation_warnings": saturations,
        },
        "lexicon": {"source": lexicon.source_version(), "attribution": lexicon.ATTRIBUTION},
    }
    return rows, report


def report_counts(rows) -> dict:
    """The ``counts`` section of a build report: items by template, label, voice, cue distance
    (in words and tokens) and their combinations, and the clips' durations in seconds."""
    c = {"template": Counter(), "label": Counter(), "voice": Counter(), "template_label": Counter(),
         "cue_distance": Counter(), "template_distance_label": Counter(),
         "cue_token_distance": Counter()}
    dur = []
    for r in rows:
        c["cue_distance"][str(r["cue_distance"])] += 1
        c["cue_token_distance"][str(r["cue_token_distance"])] += 1
        c["template_distance_label"][f"{r['template']}/{r['cue_distance']}/{r['label']}"] += 1
        c["template"][r["template"]] += 1
        c["label"][r["label"]] += 1
        c["voice"][r["voice"]] += 1
        c["template_label"][f"{r['template']}/{r['label']}"] += 1
        dur.append(len(r["audio"]["array"]) / SAMPLE_RATE)
    out = {k: dict(sorted(v.items())) for k, v in c.items()}
    if dur:
        out["duration_s"] = {"total": round(float(np.sum(dur)), 1),
                             "mean": round(float(np.mean(dur)), 2),
                             "min": round(float(np.min(dur)), 2),
                             "max": round(float(np.max(dur)), 2)}
    return out


_counts = report_counts  # called so by _build_rows, whose source is hashed into the data build key


def format_report(report: dict) -> str:
    """A readable multi-line summary of a build report."""
    lines = [f"items: {report['n_items']} ({report['n_pairs']} minimal pairs), seed "
             f"{report.get('seed')}, built in {report.get('build_seconds', '?')} s"]
    c = report["counts"]
    for k in ("template", "label", "voice", "cue_distance", "cue_token_distance"):
        if k not in c:
            continue
        lines.append(f"  by {k}: " + ", ".join(f"{a} {b}" for a, b in c[k].items()))
    if "duration_s" in c:
        d = c["duration_s"]
        lines.append(f"  audio: {d['total']} s in all, {d['mean']} s mean ({d['min']}-{d['max']})")
    ex = report.get("excluded", {})
    n_ex = sum(ex.values())
    lines.append(f"candidates examined: {sum(report.get('candidates_examined', {}).values())}, "
                 f"excluded: {n_ex}")
    for r, n in ex.items():
        eg = report.get("excluded_examples", {}).get(r, [])[:2]
        lines.append(f"  {r}: {n}" + (f"  e.g. {eg}" if eg else ""))
    ch = report.get("checks", {})
    if ch:
        lines.append("checks: " + ", ".join(f"{k} {v}" for k, v in ch.items()
                                            if not isinstance(v, dict)))
        if ch.get("lexicon_failures"):
            lines.append("  lexicon failures: " + ", ".join(
                f"{k} ({v})" for k, v in ch["lexicon_failures"].items()))
    if "whisper_check" in report:
        w = report["whisper_check"]
        lines.append(f"whisper check ({w.get('model')}): {w.get('ok')}/{w.get('checked')} ok")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# external data (hub, local folders) -> common schema
# ---------------------------------------------------------------------------------------------
_TEXT_FIELDS = ("transcription", "text", "sentence", "normalized_text", "raw_text")
_ALIGN_FIELDS = ("alignment", "alignments", "word_alignment", "word_alignments", "intervals",
                 "words", "word_intervals", "word_segments", "segments")
_LABEL_FIELDS = ("label", "label_number", "number", "labels", "grammatical_number")
_TEMPLATE_NAMES = {"det_noun": "Det_Noun", "pronoun_verb": "Pronoun_Verb",
                   "det_noun_verb": "Det_Noun_Verb", "detnoun": "Det_Noun",
                   "pronounverb": "Pronoun_Verb", "detnounverb": "Det_Noun_Verb"}


def _interval(d) -> Optional[dict]:
    if not isinstance(d, dict):
        return None
    s = next((d[k] for k in ("start", "xmin", "begin", "start_time", "tmin") if k in d), None)
    e = next((d[k] for k in ("end", "xmax", "stop", "end_time", "tmax") if k in d), None)
    w = next((d[k] for k in ("word", "text", "label", "token") if k in d), None)
    if s is None or e is None or w is None:
        return None
    return {"start": float(s), "end": float(e), "word": str(w)}


def _as_interval_list(value) -> List[dict]:
    """Accepts: list of {start, end, word} dicts (or xmin/xmax/text), a dict of parallel lists
    (datasets' storage of a list of structs), or a dict holding one of those under 'intervals' /
    'words' (the study's {'total_start', 'total_end', 'intervals'}). Raises HomophonyDataError."""
    if value is None:
        raise HomophonyDataError("no alignment")
    if isinstance(value, dict):
        for k in ("intervals", "words", "word_intervals", "alignment", "segments"):
            if k in value and value[k] is not None and not isinstance(value[k], str):
                inner = value[k]
                if isinstance(inner, (list, tuple, dict)):
                    return _as_interval_list(inner)
        keys = set(value)
        s_key = next((k for k in ("start", "xmin", "begin", "start_time") if k in keys), None)
        e_key = next((k for k in ("end", "xmax", "stop", "end_time") if k in keys), None)
        w_key = next((k for k in ("word", "text", "label", "token") if k in keys), None)
        if s_key and e_key and w_key and isinstance(value[s_key], (list, tuple, np.ndarray)):
            n = len(value[s_key])
            if not (len(value[e_key]) == n == len(value[w_key])):
                raise HomophonyDataError("alignment lists of different lengths")
            return [{"start": float(value[s_key][i]), "end": float(value[e_key][i]),
                     "word": str(value[w_key][i])} for i in range(n)]
        raise HomophonyDataError(f"cannot read an alignment from a dict with keys {sorted(keys)}")
    if isinstance(value, (list, tuple, np.ndarray)):
        out = []
        for k, d in enumerate(value):
            iv = _interval(d)
            if iv is None:
                raise HomophonyDataError(f"alignment entry {k} is not a start/end/word interval: "
                                         f"{d!r}")
            out.append(iv)
        # drop empty words (silences in TextGrids)
        return [w for w in out if w["word"].strip()]
    raise HomophonyDataError(f"cannot read an alignment from {type(value).__name__}")


def _find_alignment_field(example: dict) -> str:
    for k in _ALIGN_FIELDS:
        if k in example:
            try:
                _as_interval_list(example[k])
                return k
            except HomophonyDataError:
                pass
    for k, v in example.items():  # any field that reads as intervals
        if k == "audio" or isinstance(v, (str, int, float, bool)) or v is None:
            continue
        try:
            if _as_interval_list(v):
                return k
        except HomophonyDataError:
            continue
    raise HomophonyDataError(f"no word-alignment field (list of start/end/word) among "
                             f"{sorted(example)}")


def _parse_label(value, cue: str) -> str:
    v = value
    if isinstance(v, (list, tuple)):
        v = v[0] if len(v) else None
    if isinstance(v, str):
        s = v.lower()
        if "plur" in s or s in ("pl", "p"):
            return "plural"
        if "sing" in s or s in ("sg", "s"):
            return "singular"
    if isinstance(v, (int, np.integer, bool)) and not isinstance(v, bool):
        warnings.warn("numeric number label: read from the cue word instead", RuntimeWarning)
    c = norm_word(cue)
    if c in PLURAL_CUES:
        return "plural"
    if c in SINGULAR_CUES:
        return "singular"
    raise HomophonyDataError(f"cannot tell the number from label {value!r} or cue {cue!r}")


def _parse_template(value, cue: str, target_2: str) -> str:
    if isinstance(value, str):
        k = re.sub(r"[^a-z_]", "", value.lower())
        if k in _TEMPLATE_NAMES:
            return _TEMPLATE_NAMES[k]
        if value in TEMPLATES:
            return value
    if target_2:
        return "Det_Noun_Verb"
    return "Pronoun_Verb" if norm_word(cue) in PRONOUNS else "Det_Noun"


def _decode_audio(a) -> Tuple[np.ndarray, str]:
    """datasets audio value (decoded dict, {'bytes','path'}, a path, or an array) -> 16 kHz."""
    from .audio import load_audio

    if isinstance(a, dict):
        path = a.get("path") or ""
        if a.get("array") is not None and len(a["array"]):
            return load_audio({"array": np.asarray(a["array"], np.float32),
                               "sampling_rate": a.get("sampling_rate") or SAMPLE_RATE},
                              check=False), path
        if a.get("bytes"):
            import io

            import soundfile as sf

            try:
                arr, sr = sf.read(io.BytesIO(a["bytes"]), dtype="float32", always_2d=False)
            except Exception:
                import librosa

                import tempfile
                with tempfile.NamedTemporaryFile(suffix=os.path.splitext(path)[1] or ".mp3") as f:
                    f.write(a["bytes"])
                    f.flush()
                    arr, sr = librosa.load(f.name, sr=None, mono=True)
            return load_audio(arr, sampling_rate=sr, check=False), path
        if path:
            return load_audio(path, check=False), path
        raise HomophonyDataError("audio has neither samples, bytes nor a path")
    if isinstance(a, (str, os.PathLike)):
        return load_audio(a, check=False), str(a)
    raise HomophonyDataError(f"unreadable audio value of type {type(a).__name__}")


def normalize_external(ds, source: str = "hub", progress: bool = True):
    """Map a data set in the released layout (or anything close) onto the common schema.

    Field mapping: text from ``transcription|text|sentence``; alignment from the first field that
    reads as start/end/word intervals (list of dicts, dict of lists, or ``{'intervals': [...]}``);
    label from ``label|label_number|number`` (``Number_Plur``, ``Plur``, ``plural``...) else from
    the cue word; template from ``template`` (``det_noun``...) else from the words; indices
    recomputed on the alignment (:func:`find_cue_target`). Rows that cannot be mapped (no
    alignment, cue after target, words outside the clip, unreadable audio) are skipped and
    counted. Returns ``(Dataset, report)``.
    """
    from tqdm.auto import tqdm

    try:
        from datasets import Audio

        if "audio" in ds.features and isinstance(ds.features["audio"], Audio):
            ds = ds.cast_column("audio", Audio(decode=False))  # decoding needs torchcodec
    except Exception:  # pragma: no cover
        pass
    rows, skipped, examples = [], Counter(), {}
    align_key = None
    tok = decoder_tokenizer()
    for i in tqdm(range(len(ds)), desc=f"{source} -> schema", disable=not progress):
        ex = ds[i]
        try:
            if align_key is None or align_key not in ex:
                align_key = _find_alignment_field(ex)
            al = _as_interval_list(ex[align_key])
            text = next((ex[k] for k in _TEXT_FIELDS if ex.get(k)), None)
            if text is None:
                text = " ".join(w["word"] for w in al)
            cue, tgt = ex.get("cue_word"), ex.get("target_word")
            if not cue or not tgt:
                raise HomophonyDataError("cue_word / target_word missing")
            t2 = ex.get("target_word_2") or ""
            ci, ti, t2i = find_cue_target([w["word"] for w in al], cue, tgt, t2)
            label = _parse_label(next((ex[k] for k in _LABEL_FIELDS if k in ex), None), cue)
            template = _parse_template(ex.get("template"), cue, t2)
            audio, path = _decode_audio(ex.get("audio"))
            item_id = str(ex.get("item_id") or ex.get("id") or ex.get("org_id") or
                          (os.path.splitext(os.path.basename(path))[0] if path else "") or i)
            tdist = token_distance(str(text), [w["word"] for w in al], ci, ti, tok)
            row = {
                "item_id": f"{source}-{item_id}" if not str(item_id).startswith(source) else
                str(item_id),
                "audio": {"array": audio, "sampling_rate": SAMPLE_RATE, "path": path},
                "transcription": str(text), "cue_word": str(al[ci]["word"]),
                "target_word": str(al[ti]["word"]),
                "target_word_2": str(al[t2i]["word"]) if t2i >= 0 else "",
                "alignment": al, "template": template, "label": label,
                "voice": str(ex.get("voice") or ex.get("client_id") or source),
                "pair_id": str(ex.get("pair_id") or f"{source}-{item_id}"),
                "cue_index": ci, "target_index": ti, "target_index_2": t2i,
                "cue_distance": ti - ci, "cue_token_distance": tdist,
                "whisper_ok": ex.get("whisper_ok") if isinstance(ex.get("whisper_ok"), bool)
                else None,
                "phones": [],
            }
            check_item(row, duration=len(audio) / SAMPLE_RATE)
            rows.append(row)
        except (HomophonyDataError, ValueError, OSError) as err:
            reason = type(err).__name__ + ": " + str(err).split(":")[0][:60]
            skipped[reason] += 1
            examples.setdefault(reason, str(err)[:200])
    report = {"source": source, "rows_in": len(ds), "rows_out": len(rows),
              "skipped": dict(skipped), "skipped_examples": examples,
              "cue_token_distance_unknown": sum(r["cue_token_distance"] < 0 for r in rows),
              "counts": report_counts(rows) if rows else {}}
    if skipped:
        warnings.warn(f"{source}: {sum(skipped.values())} of {len(ds)} rows skipped "
                      f"({dict(skipped)})", RuntimeWarning, stacklevel=2)
    if not rows:
        raise HomophonyDataError(f"{source}: no usable row ({dict(skipped)})")
    with _quiet_datasets(not progress):
        return to_dataset(rows), report


def load_homophony(source: str = "offline", n: Optional[int] = None, smoke: bool = False,
                   seed: int = 0, split: str = "train", progress: bool = True, **kw):
    """The homophony data in the common schema (a ``datasets.Dataset``).

    source: ``"offline"`` (synthetic, built or cached; ``n`` = number of items, default 1,000,
    ``smoke`` = 24), ``"hub"`` (``hosein-m/french_homophone_asr``; needs the network), or a local
    path: a folder written by ``save_to_disk`` / a parquet, json(l) or csv file / a folder of such
    files, in the common schema or in the released layout (mapped by :func:`normalize_external`).
    n: for hub/path sources, keep a label-balanced subset of ``n`` items (seeded).
    """
    if source == "offline":
        return build_offline(n_items=n or DEFAULT_ITEMS, smoke=smoke if n is None else False,
                             seed=seed, progress=progress, **kw)
    if source == "hub":
        from ctxmix_lite.models.loading import hub_offline

        if hub_offline():
            raise HubDataUnavailable(
                f"{HUB_DATASET} needs the Hugging Face hub, but HF_HUB_OFFLINE is set; use "
                "load_homophony('offline') for the synthetic set.")
        from datasets import load_dataset

        try:
            raw = load_dataset(HUB_DATASET, split=split)
        except Exception as err:
            raise HubDataUnavailable(
                f"could not load {HUB_DATASET} from the hub ({type(err).__name__}: {err}). "
                "Use load_homophony('offline') for the synthetic set.") from err
        ds, rep = normalize_external(raw, source="hub", progress=progress)
    else:
        ds, rep = _load_local(Path(source), split, progress)
    ds._ctxmix_report = rep  # type: ignore[attr-defined]
    if n is not None:
        ds = balanced_subset(ds, n, seed)
    return ds


def _load_local(path: Path, split: str, progress: bool):
    from datasets import DatasetDict, load_dataset, load_from_disk

    if not path.exists():
        raise FileNotFoundError(f"no data set at {path}")
    if path.is_dir() and ((path / "dataset_info.json").is_file() or
                          (path / "dataset_dict.json").is_file()):
        raw = load_from_disk(str(path))
    elif path.is_dir() and (path / "dataset" / "dataset_info.json").is_file():
        raw = load_from_disk(str(path / "dataset"))
    else:
        files = [path] if path.is_file() else sorted(
            p for p in path.rglob("*") if p.suffix in (".parquet", ".jsonl", ".json", ".csv",
                                                      ".arrow"))
        if not files:
            raise HomophonyDataError(f"no parquet/json/csv/arrow files under {path}")
        kind = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv",
                ".arrow": "arrow"}[files[0].suffix]
        raw = load_dataset(kind, data_files=[str(f) for f in files], split="train")
    if isinstance(raw, DatasetDict):
        raw = raw[split] if split in raw else raw[list(raw)[0]]
    if dict(raw.features) == dict(features()):
        for i in range(len(raw)):  # already ours: still check every row
            check_item(raw[i])
        return raw, {"source": str(path), "rows_in": len(raw), "rows_out": len(raw),
                     "skipped": {}}
    return normalize_external(raw, source=path.name or "local", progress=progress)


def balanced_subset(ds, n: int, seed: int = 0):
    """``n`` items, half singular and half plural (as far as available), seeded; whole pairs are
    kept together when the data has pairs."""
    if n >= len(ds):
        return ds
    rng = np.random.default_rng(seed)
    labels = np.asarray(ds["label"])
    pairs = np.asarray(ds["pair_id"])
    uniq, counts = np.unique(pairs, return_counts=True)
    if np.all(counts == 2) and n % 2 == 0:
        chosen = set(rng.permutation(uniq)[: n // 2].tolist())
        idx = [i for i, p in enumerate(pairs) if p in chosen]
    else:
        sg = rng.permutation(np.where(labels == "singular")[0])
        pl = rng.permutation(np.where(labels == "plural")[0])
        k = min(n // 2, len(sg), len(pl))
        idx = sorted(list(sg[:k]) + list(pl[:k]) + list(
            rng.permutation(np.setdiff1d(np.arange(len(ds)), np.r_[sg[:k], pl[:k]]))[
                : n - 2 * k]))
    return ds.select(sorted(idx))


# ---------------------------------------------------------------------------------------------
# Whisper transcription check
# ---------------------------------------------------------------------------------------------
def transcript_words(text: str) -> List[str]:
    """Words of a transcript for matching: lower case, apostrophes kept inside words but elided
    prefixes split off ("l'élève" -> "l'", "élève"), punctuation dropped."""
    t = unicodedata.normalize("NFC", text).lower().replace("’", "'")
    t = re.sub(r"[^\w'\- ]+", " ", t)
    out = []
    for w in t.split():
        m = re.match(r"^((?:[a-z]|qu|jusqu|lorsqu|puisqu)')(.+)$", w)
        out.extend([m.group(1), m.group(2)] if m else [w.strip("-'")])
    return [w for w in out if w]


def whisper_item_ok(transcript: str, item) -> bool:
    """The study's criterion: cue and target (and second target) are in the transcript, in order."""
    words = transcript_words(transcript)
    try:
        find_cue_target(words, item["cue_word"], item["target_word"],
                        item.get("target_word_2") or "")
        return True
    except HomophonyDataError:
        return False


def _audio_key(arr: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(arr, dtype=np.float32).tobytes()).hexdigest()


def default_model():
    """Whisper-base ``(model, processor)`` from :func:`ctxmix_lite.models.load_model`, or, where that
    raises ImportError, :func:`ctxmix_lite.whisper_offline.load_whisper_base_offline`."""
    try:
        from ctxmix_lite.models.loading import load_model

        return load_model("openai/whisper-base")
    except ImportError:
        from ctxmix_lite.models.whisper_offline import load_whisper_base_offline

        return load_whisper_base_offline()


def model_fingerprint(model) -> str:
    """A short name that identifies the *weights* (not just the architecture): cached transcripts
    of a trained model are never reused for a randomly initialised one of the same shape."""
    import torch

    base = str(getattr(getattr(model, "config", None), "_name_or_path", "") or "").split("/")[-1]
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base) or type(model).__name__.lower()
    h = hashlib.sha1()
    n = 0
    for name, p in model.named_parameters():
        n += p.numel()
        if n < 5_000_000:  # the first parameters suffice
            h.update(name.encode())
            h.update(p.detach().reshape(-1)[:4096].to(torch.float32).cpu().numpy().tobytes())
    return f"{base}-{n}-{h.hexdigest()[:10]}"


def transcription_check(dataset, model=None, processor=None, batch_size: int = 8,
                        progress: bool = True, cache: bool = True, save: bool = True):
    """Transcribe every item with Whisper (greedy, forced French) and set ``whisper_ok``: True when
    the transcript has cue and target (and second target) correct and in order (the study keeps
    only those for the decoder analysis).

    model/processor: default the offline trained Whisper-base (``models.load_model``).
    cache: reuse transcripts by audio hash from ``paths.cache_dir()/homophony_whisper/<model>.jsonl``
    and from the committed ``data/checks/<model>.tsv`` (bit-identical audio only).
    save: when ``dataset`` is an offline build, write ``whisper_check.json`` into its build folder
    so that later loads of that build come with ``whisper_ok`` filled in.
    Returns a new Dataset; the transcripts are in ``ds._ctxmix_transcripts`` (item_id -> text).
    """
    import torch
    from tqdm.auto import tqdm

    if model is None or processor is None:
        model, processor = default_model()
    name = model_fingerprint(model) if hasattr(model, "named_parameters") else "stub"
    known = _load_check_cache(name) if cache else {}
    keys = [_audio_key(np.asarray(a["array"], np.float32)) for a in dataset["audio"]]
    todo = [i for i, k in enumerate(keys) if k not in known]
    new = {}
    model.eval()
    with _fast_attention(model):  # generation reads no weights: sdpa (~2x faster), then eager again
        _transcribe_into(new, todo, keys, dataset, model, processor, batch_size, progress,
                         name if cache else None)
    known.update(new)
    texts = [known[k] for k in keys]
    oks = [whisper_item_ok(t, dataset[i]) for i, t in enumerate(texts)]
    with _quiet_datasets(not progress):
        ds = dataset.remove_columns("whisper_ok").add_column("whisper_ok", oks)
        ds = ds.select_columns(list(FIELDS)).cast(features())
    ds._ctxmix_transcripts = dict(zip(dataset["item_id"], texts))  # type: ignore[attr-defined]
    for attr in ("_ctxmix_build_dir", "_ctxmix_report"):
        if hasattr(dataset, attr):
            setattr(ds, attr, getattr(dataset, attr))
    build = getattr(dataset, "_ctxmix_build_dir", None)
    if save and build and Path(build, "report.json").is_file():
        by = {}
        for t, v in zip(ds["template"], oks):
            by.setdefault(t, [0, 0])
            by[t][0] += int(v)
            by[t][1] += 1
        Path(build, "whisper_check.json").write_text(json.dumps({
            "model": name, "ok": int(sum(oks)), "checked": len(oks), "by_template": by,
            "items": {i: {"ok": o, "text": t} for i, o, t in zip(ds["item_id"], oks, texts)}},
            indent=1, ensure_ascii=False))
    return ds


class _fast_attention:
    """Run a block with sdpa attention when the model can switch, restoring the previous
    implementation afterwards (analysis code needs eager; plain generation does not)."""

    def __init__(self, model):
        self.model = model
        self.prev = getattr(getattr(model, "config", None), "_attn_implementation", None)

    def __enter__(self):
        if self.prev and self.prev != "sdpa" and hasattr(self.model, "set_attn_implementation"):
            try:
                self.model.set_attn_implementation("sdpa")
            except Exception:  # pragma: no cover - sdpa unsupported: stay as is
                self.prev = None
        else:
            self.prev = None
        return self

    def __exit__(self, *exc):
        if self.prev:
            self.model.set_attn_implementation(self.prev)
        return False


def _transcribe_into(new, todo, keys, dataset, model, processor, batch_size, progress, cache_name):
    import torch
    from tqdm.auto import tqdm

    for s in tqdm(range(0, len(todo), batch_size), desc="whisper check", disable=not progress):
        idx = todo[s: s + batch_size]
        audios = [item_audio(dataset[i]) for i in idx]
        feats = processor.feature_extractor(audios, sampling_rate=SAMPLE_RATE,
                                            return_tensors="pt").input_features
        with torch.no_grad():
            out = model.generate(feats.to(model.device, model.dtype), language="fr",
                                 task="transcribe", max_new_tokens=96)
        seqs = out.sequences if hasattr(out, "sequences") else out
        texts = processor.batch_decode(seqs, skip_special_tokens=True)
        for i, t in zip(idx, texts):
            new[keys[i]] = t.strip()
        if cache_name:  # write as we go: an interrupted check resumes where it stopped
            _append_check_cache(cache_name, {keys[i]: new[keys[i]] for i in idx})


def _check_cache_path(name: str) -> Path:
    from ctxmix_lite.course.paths import cache_dir

    return cache_dir() / "homophony_whisper" / f"{name}.jsonl"


def _seed_check_path(name: str) -> Path:
    return Path(__file__).resolve().parents[2] / "data" / "checks" / f"{name}.tsv"


def export_check_seed(name: str, dataset, path: Optional[Path] = None) -> Path:
    """Write the cached transcripts of ``dataset``'s items as a committed seed file
    ``data/checks/<name>.tsv`` (audio SHA-1, item id, transcript)."""
    known = _load_check_cache(name)
    path = Path(path) if path else _seed_check_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# Whisper transcripts of the offline homophony set ({name}); key: SHA-1 of the "
             "float32 audio. Written by homophony.export_check_seed.",
             "# audio_sha1\titem_id\ttranscript"]
    for iid, a in zip(dataset["item_id"], dataset["audio"]):
        k = _audio_key(np.asarray(a["array"], np.float32))
        if k in known:
            lines.append(f"{k}\t{iid}\t{known[k]}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _load_check_cache(name: str) -> Dict[str, str]:
    seed = _seed_check_path(name)
    out = _read_seed(seed) if seed.is_file() else {}
    p = _check_cache_path(name)
    if p.is_file():
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                d = json.loads(line)
                out[d["audio_sha1"]] = d["text"]
            except (ValueError, KeyError):
                continue
    return out


def _append_check_cache(name: str, new: Dict[str, str]) -> None:
    p = _check_cache_path(name)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("a", encoding="utf-8") as fh:
        for k, t in new.items():
            fh.write(json.dumps({"audio_sha1": k, "text": t}, ensure_ascii=False) + "\n")
