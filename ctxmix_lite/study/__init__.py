"""The homophony study (Mohebbi et al., EMNLP 2023): cue contribution per layer, trained vs random.

    runs.py         settings (StudyOptions), model runs (ModelRun), items and their uses
    transcripts.py  decoder tokens <-> aligned words, the exclusion rule
    scoring.py      the word-level target rows of one item (encoder, decoder definitions, cross)
    core.py         run_study(): transcriptions, the per-item shards, the StudyResult
    cache.py        the shards and transcripts, validated on every read
    figures.py      summaries, figures, the comparison with the paper
    cli.py          ``python -m ctxmix_lite.study``
    shipped.py      the committed results in data/results/, saved and loaded
    recheck.py      live re-checks of the shipped results (re-exported by shipped)
    explorer.py     the item x model x component x layer x measure explorer (notebook 05)
    probe.py        the number probe (notebook 06)
    attribution.py, attribution_examples.py   context mixing vs attribution (notebook 07)

The rows-only Whisper capture the study runs on is :mod:`ctxmix_lite.internals.rows_capture`.
Every public name of runs, transcripts, scoring, core, figures and cli (``run_study``,
``StudyOptions``, ``ModelRun``, ``summarize``, ``course_items``, ...) is importable from here, as it
was from the single ``study`` module of the first releases; see :mod:`.core` for the definitions.
"""
from ctxmix_lite import public_names
from ctxmix_lite.internals import rows_capture as _rows_capture
from ctxmix_lite.measures.registry import MEASURE_LABELS, MEASURES

from . import cli, core, figures, runs, scoring, transcripts


__all__ = ["MEASURES", "MEASURE_LABELS", "attention_implementation", "whisper_rows_capture",
           "verify_recomputed_weights", "RECOMPUTE_RTOL"]
for _m in (runs, transcripts, scoring, core, figures, cli):
    __all__ += [k for k in public_names(_m) if k not in __all__]
    globals().update({k: getattr(_m, k) for k in public_names(_m)})
globals().update({k: getattr(_rows_capture, k) for k in __all__[2:6]})
del _m
