"""The study's settings, model runs and items: what is compared, on what.

Part of the homophony study (:mod:`ctxmix_lite.study`)."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np



#: The default parameters of notebooks 05-07 (their ``parameters`` cells repeat them as literals,
#: which papermill needs; tests/test_shipped.py checks they agree): the run the shipped results in
#: ``data/results/`` hold (:mod:`ctxmix_lite.study.shipped`).
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


def use_token_distance(positions, use: Use) -> Optional[int]:
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
    if isinstance(a, dict):  # array + sampling_rate, else path or bytes (ctxmix_lite.corpus.audio.load_audio)
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




def check_n_items(n) -> int:
    """``n_items`` must be a whole number >= 1 (None: all items)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < 1:
        raise ValueError(f"n_items must be a whole number >= 1, or None for all items; got {n!r}")
    return int(n)


def n_items_arg(text: str):
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
        check_n_items(n_items)
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


