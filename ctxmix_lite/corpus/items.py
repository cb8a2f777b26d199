"""The homophony items: their schema, plain-python accessors and the per-item check.

Every source (the offline build, :mod:`.build`; the hub or a local folder, :mod:`.external`;
Common Voice, :mod:`.commonvoice`) yields items in one schema (:func:`features`, fields
:data:`FIELDS`); :func:`check_schema` checks a data set, :func:`check_item` one item. The
accessors (:func:`item_audio`, :func:`item_alignment`, :func:`cue_target_indices`) read an item
whatever its storage (a ``datasets`` row or a plain dict). Part of :mod:`ctxmix_lite.corpus`;
the public names are also importable from :mod:`.homophony`.
"""
from __future__ import annotations

import math
import unicodedata
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .audio import SAMPLE_RATE  # the course's one sampling rate (synth.py keeps its own: its bytes key the data)
TEMPLATES = ("Det_Noun", "Pronoun_Verb", "Det_Noun_Verb")
LABELS = ("singular", "plural")

SINGULAR_CUES = {"le", "la", "un", "une", "ce", "cet", "cette", "mon", "ma", "ton", "ta", "son",
                 "sa", "il", "elle", "l'", "notre", "votre", "leur"}
PLURAL_CUES = {"les", "des", "ces", "mes", "tes", "ses", "ils", "elles", "nos", "vos", "leurs"}
PRONOUNS = {"il", "elle", "ils", "elles"}


class HomophonyDataError(ValueError):
    """An item or a data set does not fit the homophony schema."""


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
    (:func:`ctxmix_lite.corpus.audio.load_audio`)."""
    from .audio import load_audio

    a = item["audio"]
    if isinstance(a, dict):
        return load_audio(a, None if a.get("sampling_rate") is not None else SAMPLE_RATE, check=False)
    return load_audio(a, SAMPLE_RATE, check=False)


def item_alignment(item) -> List[dict]:
    """The word alignment as a list of ``{"start": s, "end": s, "word": str}`` (python floats),
    whatever the storage (list of dicts, or datasets' dict of lists)."""
    al = item["alignment"] if isinstance(item, dict) and "alignment" in item else item
    return as_interval_list(al)


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


def _interval(d) -> Optional[dict]:
    if not isinstance(d, dict):
        return None
    s = next((d[k] for k in ("start", "xmin", "begin", "start_time", "tmin") if k in d), None)
    e = next((d[k] for k in ("end", "xmax", "stop", "end_time", "tmax") if k in d), None)
    w = next((d[k] for k in ("word", "text", "label", "token") if k in d), None)
    if s is None or e is None or w is None:
        return None
    return {"start": float(s), "end": float(e), "word": str(w)}


def as_interval_list(value) -> List[dict]:
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
                    return as_interval_list(inner)
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


class quiet_datasets:
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
