"""The homophony study (Mohebbi et al., EMNLP 2023): cue contribution per layer, trained vs random
(:mod:`.core`, its caches :mod:`.cache` and shipped results :mod:`.shipped`), the number probe
(:mod:`.probe`), context mixing vs attribution (:mod:`.attribution`, :mod:`.attribution_examples`)
and the interactive explorer (:mod:`.explorer`).

``python -m ctxmix_lite.study --help`` runs it from the command line.
"""
from .core import *  # noqa: F401,F403  (the study's public names, core.__all__)
from .core import __all__ as _core_all
from .core import __doc__ as _core_doc

__all__ = list(_core_all)
__doc__ = (__doc__ or "") + "\n" + (_core_doc or "")
