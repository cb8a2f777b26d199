"""The converted Whisper-base on disk: a locked, validated cache.

The converted model + ``WhisperProcessor`` are saved once with ``save_pretrained`` under
``cache_dir() / "whisper-base-offline"`` (:func:`write_cache`: an atomic directory swap, done under
an exclusive ``fcntl`` file lock held by the caller, :func:`locked`), with a marker file carrying
:data:`CONVERTER_VERSION`, the source wheels' identity and the size and SHA-256 of every file
written. Before a later load reads it, :func:`cache_problem` checks it: a file whose size or
SHA-256 differs (a flipped byte in ``model.safetensors``, an edited ``config.json``, a damaged
``generation_config.json`` or tokenizer file), a missing or unexpected file, or a marker from
another converter or wheel version is reported with its path, and the caller re-converts. Each
file is hashed once per process (memo keyed by device, inode, size and modification time): ~0.6 s
for the 290 MB of weights on the first load, nothing after. :func:`load_cached` checks what it
loaded again (eager, float32, parameter count, every special token id).

Part of :mod:`ctxmix_lite.models.whisper_offline` (the entry point: the load-or-convert logic).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import torch

from .whisper_format import N_PARAMETERS, OfflineWhisperError, source_identity
from .whisper_tokenizer import check_tokenizer


# Bump when anything that ends up in the cache changes (mapping, config, tokenizer, generation
# config): every cache written by another version is then re-converted.
CONVERTER_VERSION = 2  # 2: restores the BPE merge 'Ġ t' missing from the shipped tokenizer.json

CACHE_NAME = "whisper-base-offline"
MARKER_NAME = "ctxmix_whisper_offline.json"


def _fallback_cache_dir() -> Path:
    env = os.environ.get("CTXMIX_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ctxmix"


def default_cache_dir() -> Path:
    """``ctxmix_lite.course.paths.cache_dir() / "whisper-base-offline"`` (``$CTXMIX_CACHE``, default ~/.cache/ctxmix)."""
    try:
        from ctxmix_lite.course.paths import cache_dir as _cd
    except ImportError:
        return _fallback_cache_dir() / CACHE_NAME
    return Path(_cd()) / CACHE_NAME


@contextlib.contextmanager
def locked(lock_path: Path, exclusive: bool):
    """fcntl advisory lock (shared for readers, exclusive for the converter); no-op without fcntl."""
    try:
        import fcntl
    except ImportError:  # not POSIX: rely on the atomic directory swap alone
        yield
        return
    fh = open(lock_path, "a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        fh.close()


def _marker(files: Mapping[str, Path]) -> Dict[str, Any]:
    return {"converter_version": CONVERTER_VERSION, "source": source_identity(files)}


#: files the cache must hold (beside the marker); every file written is also checksummed
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json")
_DIGESTS: Dict[tuple, str] = {}  # (device, inode, size, mtime_ns) -> SHA-256: each file hashed once per process


def _sha256(path: Path) -> str:
    import hashlib

    st = path.stat()
    memo = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if memo not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[memo] = h.hexdigest()
    return _DIGESTS[memo]


def _cache_files(folder: Path) -> list:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name != MARKER_NAME and not p.name.startswith("."))


def _checksums(folder: Path) -> Dict[str, Dict[str, Any]]:
    """``{file name: {"size", "sha256"}}`` of every file in a converted cache but the marker."""
    return {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)} for p in _cache_files(folder)}


def cache_problem(target: Path, files: Mapping[str, Path], skip: Sequence[str] = ()) -> Optional[str]:
    """``None`` when the converted cache at ``target`` can be trusted, else what is wrong with it
    (naming the file). ``skip``: files not verified (the processor-only loader skips the weights)."""
    try:
        stored = json.loads((target / MARKER_NAME).read_text())
    except FileNotFoundError:
        return f"no marker {target / MARKER_NAME} (never converted, or interrupted)"
    except (OSError, ValueError) as e:
        return f"unreadable marker {target / MARKER_NAME} ({type(e).__name__}: {e})"
    want = _marker(files)
    if not isinstance(stored, dict):
        return f"marker {target / MARKER_NAME} is not a JSON object"
    for k, v in want.items():
        if stored.get(k) != v:
            return f"written for {k} {stored.get(k)!r}, now {v!r}"
    sums = stored.get("files")
    if not isinstance(sums, dict) or not sums:
        return "no checksums in its marker (written by an older version of ctxmix_lite)"
    try:
        present = {p.name for p in _cache_files(target)}
    except OSError as e:
        return f"unreadable folder ({e})"
    lacking = [f for f in REQUIRED_FILES if f not in present or f not in sums]
    if lacking:
        return f"missing file(s) {[str(target / f) for f in lacking]}"
    if set(sums) - present:
        return f"missing file(s) {[str(target / f) for f in sorted(set(sums) - present)]}"
    if present - set(sums):
        return f"unexpected file(s) {[str(target / f) for f in sorted(present - set(sums))]}"
    for name, rec in sums.items():
        if name in skip:
            continue
        p = target / name
        try:
            if not isinstance(rec, dict) or p.stat().st_size != rec.get("size"):
                return (f"{p}: size mismatch ({p.stat().st_size:,} bytes, the marker says "
                        f"{rec.get('size') if isinstance(rec, dict) else rec!r})")
            if _sha256(p) != rec.get("sha256"):
                return f"{p}: SHA-256 mismatch (the file changed after it was written)"
        except OSError as e:
            return f"{p}: unreadable ({e})"
    return None


def load_cached(target: Path):
    """``(model, processor)`` read from a cache folder (check it with :func:`cache_problem` first)."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(
        target, dtype=torch.float32, attn_implementation="eager", local_files_only=True
    )
    processor = WhisperProcessor.from_pretrained(target, local_files_only=True)
    check_tokenizer(processor.tokenizer)
    if model.config._attn_implementation != "eager" or model.dtype != torch.float32:
        raise OfflineWhisperError("cached model did not load as eager / float32")
    if model.num_parameters() != N_PARAMETERS:
        raise OfflineWhisperError(f"cached model has {model.num_parameters():,} parameters, expected {N_PARAMETERS:,}")
    return model.eval(), processor


def write_cache(target: Path, files: Mapping[str, Path], build: Callable[[], tuple]) -> None:
    """Convert (``build()`` -> ``(model, processor)``) and place the result at ``target``
    atomically, marker last. The caller holds the exclusive lock (:func:`locked`)."""
    # leftovers of a process killed mid-conversion (only lock holders create them): ~290 MB each
    for stale in list(target.parent.glob(f".{target.name}.tmp-*")) + list(target.parent.glob(f".{target.name}.old-*")):
        shutil.rmtree(stale, ignore_errors=True)
    model, processor = build()
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; the cache is an ordinary folder
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        for p in _cache_files(tmp):  # save_pretrained writes the weights 0600: an ordinary, shared folder
            os.chmod(p, 0o666 & ~umask)
        # marker last: a directory without it is never trusted
        marker = dict(_marker(files), n_parameters=model.num_parameters(), created=time.strftime("%Y-%m-%d %H:%M:%S"),
                      files=_checksums(tmp))
        (tmp / MARKER_NAME).write_text(json.dumps(marker, indent=1))
        old = None
        if target.exists() or target.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "x")
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
