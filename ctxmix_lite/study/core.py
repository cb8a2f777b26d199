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
formula ``softmax(q_i K^T / sqrt(d_h))`` (tested equal to :func:`ctxmix_lite.internals.capture.capture`), and
checked on every layer of every item: they must rebuild the kernel's own attention output (relative
error ~5e-7 on Whisper-base; a ``CaptureError`` above 1e-4). So no weight is read from sdpa, and
every weight used is verified to be the one the forward pass applied.
Value zeroing runs in the fast rows-only mode of :mod:`ctxmix_lite.measures.value_zeroing` with one column
per aligned word. See ``bench/bench_study.py`` for the cost against a plain forward pass.

Results: one tidy ``pandas.DataFrame`` (item, template, label, model, init, component, measure,
layer, score, ...), cached per (model, init, seed, settings, item) under
``cache_dir()/study/`` (one ``.npz`` shard per item, written atomically: an interrupted run
resumes), transcriptions cached once per trained model and item. Every shard and transcript is
checked when read back (key, format, arrays and shapes, SHA-256) and recomputed, with a warning
naming its path, when it fails: see :mod:`ctxmix_lite.study.cache`.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ctxmix_lite.course.options import Options
from ctxmix_lite.measures.registry import MEASURES
from ctxmix_lite.internals.rows_capture import attention_implementation
from .runs import DECODER_COMPONENTS, ModelRun, PROMPT_MASS, SCORING_SCHEMA, STUDY_VERSION, StudyOptions, alignment_of, audio_of, check_n_items, dataset_fingerprint, default_model_runs, distance_group, item_id_of, item_key, item_uses, use_cue_distance, use_token_distance
from .scoring import cue_contribution, item_distributions
from .transcripts import misrecognised_words


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
    """Atomic, group-readable write (:func:`ctxmix_lite.study.cache.atomic_write`)."""
    from .cache import atomic_write

    atomic_write(path, writer)


def _save_shard(path: Path, res: dict, meta: dict) -> bool:
    """Write one checked shard (:func:`ctxmix_lite.study.cache.save_shard`); False: not cached."""
    from .cache import save_shard

    return save_shard(path, res, meta, root=study_cache_dir())


def _load_shard(path: Path, **checks):
    """Read one shard with every check (:func:`ctxmix_lite.study.cache.read_shard`); raises
    :class:`~ctxmix_lite.study.cache.CacheEntryError` with the reason when it is unusable."""
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


@dataclass(frozen=True)
class TranscriptionSettings(Options):
    """How :func:`get_transcriptions` runs: read / write the transcript ``cache``, show a
    ``progress`` bar, the ``language`` Whisper transcribes."""

    cache: bool = True
    progress: bool = True
    language: str = "fr"


def get_transcriptions(run: ModelRun, items: Sequence, keys: Sequence[str], model=None, processor=None,
                       options: Optional[TranscriptionSettings] = None, **settings) -> dict:
    """Greedy transcription of every item by a *trained* ASR model, generated once and cached:
    ``{key: {"text": str, "ids": [text token ids] (Whisper) or None (CTC)}}``. settings: the fields
    of :class:`TranscriptionSettings` (or pass ``options=``)."""
    from tqdm.auto import tqdm

    o = TranscriptionSettings.resolve(options, settings, where="get_transcriptions")
    cache, progress, language = o.cache, o.progress, o.language

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
        check_n_items(n_items)
        n = min(int(n_items), len(items))
        items = items.select(range(n)) if hasattr(items, "select") else list(items)[:n]
    return [dict(it) for it in items]


@dataclass(frozen=True)
class RunSettings(Options):
    """How :func:`run_study` runs (not what it computes: the decoder definitions are
    :class:`StudyOptions`, recorded with every result; these are not).

    Fields:
        components: subset of ``("encoder", "decoder", "cross")`` (default: all a model has).
        measures: the context-mixing measures (default: all, :data:`MEASURES`).
        n_items: only the first ``n_items`` items.
        exclude_misrecognised: the paper's rule: drop (item, use) pairs that any trained ASR model of
            the run did not transcribe with cue and target right and in order (all models, all
            components). False: keep them for the encoder; decoder/cross rows exist only where the
            transcript contains cue and target.
        cache: read / write per-item shards under :func:`study_cache_dir` (resumable).
        progress: show progress bars.
        threads: ``torch.set_num_threads(threads)`` for the run (e.g. 2 cores).
        language: the language Whisper transcribes (``"fr"``).
        teacher_forcing: what Whisper's decoder reads: ``"transcription"`` (the paper's: the
            trained model's own greedy transcription) or ``"reference"`` (the item's sentence, so
            every item has decoder and cross-attention rows whatever the model heard; the
            notebooks' ``SMOKE`` runs use it with ``exclude_misrecognised=False`` so that a tiny
            CI sample never depends on the recogniser -- not the paper's setting).
    """

    components: Optional[Sequence[str]] = None
    measures: Sequence[str] = MEASURES
    n_items: Optional[int] = None
    exclude_misrecognised: bool = True
    cache: bool = True
    progress: bool = True
    threads: Optional[int] = None
    language: str = "fr"
    teacher_forcing: str = "transcription"


def run_study(items, models=None, loaded: Optional[dict] = None, options=None,
              run_settings: Optional[RunSettings] = None, **settings) -> StudyResult:
    """Cue contribution for every item × model × component × measure × layer.

    Args:
        items: the homophony items (``load_homophony(...)`` rows or dicts with audio, alignment,
            cue_index, target_index[, target_index_2], template, label...).
        models: :class:`ModelRun` specs (default :func:`default_model_runs`).
        loaded: optional ``{ModelRun: (model, processor)}`` of already loaded models.
        options: :class:`StudyOptions` (or a dict / definition name): which decoder definition the
            ``decoder`` rows of ``table`` use (default: the paper's). Every definition is computed in
            the same pass and kept in ``variants`` (column ``definition``); ``decoder_mass`` holds
            the paper-normalised mass of the target rows on each prompt position.
        run_settings, settings: how the study runs: a :class:`RunSettings` and/or its fields as
            keywords (``components, measures, n_items, exclude_misrecognised, cache, progress,
            threads, language, teacher_forcing``), e.g. ``run_study(items, cache=False)``.

    Nothing is dropped silently: ``exclusions`` has one row per excluded (item, use, model) with
    ``reason_code`` (``misrecognised``: the paper's rule, ``scope`` = all components;
    ``not_in_transcript``: cue or target absent from the transcript the decoder was teacher-forced
    on, ``scope`` = decoder and cross-attention only, when the rule is off), counted by
    :meth:`StudyResult.exclusion_counts`.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from ctxmix_lite.models.loading import resolve_name

    o = RunSettings.resolve(run_settings, settings, where="run_study")
    components, measures, n_items, exclude_misrecognised = o.components, o.measures, o.n_items, o.exclude_misrecognised
    cache, progress, threads, language, teacher_forcing = o.cache, o.progress, o.threads, o.language, o.teacher_forcing
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
                res = item_distributions(model, processor, items[k], uses[k], dec_ids, audio=audios[k],
                                         prefix_length=4, components=components, measures=measures)
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
                item_id = ids[k] if u.name == "main" else f"{ids[k]}:{u.name}"
                dist_w = use_cue_distance(it, u)
                dist_t = use_token_distance(positions, u)
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


