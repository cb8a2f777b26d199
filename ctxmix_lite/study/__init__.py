"""The homophony study (Mohebbi et al., EMNLP 2023): cue contribution per layer, trained vs random
(:mod:`.core`, its caches :mod:`.cache` and shipped results :mod:`.shipped`), the number probe
(:mod:`.probe`), context mixing vs attribution (:mod:`.attribution`, :mod:`.attribution_examples`)
and the interactive explorer (:mod:`.explorer`).

``python -m ctxmix_lite.study --help`` runs it from the command line. Every public name of
:mod:`.core` (``run_study``, ``StudyOptions``, ``ModelRun``, ``summarize``, ...) is importable from
here.
"""
from . import core

#: the public names of :mod:`.core`: its functions, classes and constants (not the modules it imports)
__all__ = [k for k, v in vars(core).items()
           if not k.startswith("_") and (k.isupper() or getattr(v, "__module__", None) == core.__name__)]
globals().update({k: getattr(core, k) for k in __all__})
