"""Speech and its words: audio and frame maps (:mod:`.audio`), the synthesiser (:mod:`.synth`),
pronunciations (:mod:`.lexicon`), the homophony items (:mod:`.homophony`, which re-exports
:mod:`.items`, :mod:`.tokens`, :mod:`.wordlists`, :mod:`.pairs`, :mod:`.build`,
:mod:`.whisper_check` and :mod:`.external`) and Common Voice (:mod:`.commonvoice`).

A new data source is a module here that returns items in :func:`.homophony.features`' schema
(:func:`.homophony.check_schema` checks it), as :mod:`.commonvoice` does.
"""
from __future__ import annotations

import sys
import types


class _Corpus(types.ModuleType):
    """This subpackage's module type: when the import system binds ``corpus.synth`` (by any route,
    process-pool workers included), the synthesiser's descriptor guard is installed
    (:mod:`.synth_guard`; kept out of ``synth.py``, whose bytes key the built data)."""

    def __setattr__(self, name, value):
        if name == "synth" and isinstance(value, types.ModuleType):
            from .synth_guard import install

            install(value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Corpus
