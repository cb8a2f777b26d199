"""ctxmix_lite -- support package of the course *Context-Mixing in Speech Transformers*.

The package is laid out as the course is: one module per concept, in the order the notebooks
meet them. Importing ``ctxmix_lite`` is cheap: no submodule (and so neither torch nor
transformers) is imported until you touch it (``ctxmix_lite.audio`` or
``from ctxmix_lite import audio`` loads it on first use).

Course outline (package tree)::

    ctxmix_lite/
      paths.py           where data, caches, outputs and figures live; savefig()       (all notebooks)
      colab.py           the Colab set-up cell, system packages (espeak-ng, MBROLA)    (all notebooks)
      plotting.py        waveform / spectrogram with words, labelled heatmaps         (00 ->)
      widgets.py         small ipywidgets 7/8 viewers, audio player                   (00 ->)
      exercises/         check_function(): learner code vs reference; nbXX solutions   (00 ->)
      audio.py           load audio, time <-> frame maps, word spans -> frame spans    (00 welcome)
      capture_types.py   LayerCapture / Capture: what one attention block exposes      (01 ->)
      layer.py           a Transformer layer written from its equations                (01 transformer layer)
      models.py          load_model(): Whisper / wav2vec2, trained or random init      (01 ->)
      whisper_offline.py the packaged Whisper-base weights -> transformers             (01 ->)
      capture.py         capture(): every layer's weights, values, residuals           (02)
      patterns.py        diagonality, locality, head diversity of attention maps       (02)
      attention_norm.py  ||sum_h alpha_ij^h v_j^h W_O^h||  (Kobayashi et al. 2020)     (03 attention norm)
      value_zeroing.py   zero v_j, rerun the layer, cosine distance (Mohebbi 2023)     (04 value zeroing)
      rollout.py, decomposition.py  rollout, GlobEnc / ALTI-style decompositions       (04)
      measure_utils.py   row / span / causal helpers shared by the measures            (03 ->)
      measures.py        one dispatch over the measures, per layer and component       (05 ->)
      pooling.py         frames -> words (mean / max, renormalised)                    (05)
      synth.py, lexicon.py, homophony.py, commonvoice.py
                         the French homophony data: offline synthetic, or CV11         (05 homophony cue)
      study.py           cue -> target contribution over layers, trained vs random     (05)
      study_cache.py     the study's per-item shards, validated on read                (05 ->)
      shipped.py         the committed results in data/results/, loaded and re-checked (05 -> 07)
      explorer.py        the interactive item x model x layer x measure explorer       (05)
      probe.py           number probe per layer (logistic regression, 3-fold CV)       (06 number probe)
      attribution.py     gradient attribution to compare with context mixing          (07 mixing vs attribution)
      attribution_examples.py  notebook 07's per-item analysis (notebook + shipped results) (07)
"""
from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

# Submodules loaded lazily on attribute access (PEP 562), so that `import ctxmix_lite` stays
# light (the Colab set-up cell and the paths helpers must not import torch).
_SUBMODULES = (
    "paths", "colab", "plotting", "widgets", "exercises", "audio", "capture_types", "layer",
    "models", "whisper_offline", "capture", "patterns", "attention_norm", "value_zeroing",
    "rollout", "decomposition", "measures", "pooling", "synth", "lexicon", "homophony",
    "commonvoice", "measure_utils", "study", "study_cache", "shipped", "explorer", "probe", "attribution",
    "attribution_examples",
)

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES))


class _Package(types.ModuleType):
    """This package's module type: when the import system binds ``ctxmix_lite.synth`` (by any
    route, process-pool workers included), the synthesiser's descriptor guard is installed
    (:mod:`ctxmix_lite.synth_guard`; kept out of ``synth.py``, whose bytes key the built data)."""

    def __setattr__(self, name, value):
        if name == "synth" and isinstance(value, types.ModuleType):
            from .synth_guard import install

            install(value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
