"""The study's on-disk caches, validated on every read: per-item shards and transcripts.

Nothing read back from disk is trusted unchecked. Every file carries what it is and a checksum:

* **shards** (``<study_cache_dir>/<model run>/<settings>/<item key>.s2.npz``, one per item and
  model run): the arrays (``dist|use|component|measure`` ``[L, W]``, ``probe|use|component``
  ``[L+1, D]``) and a JSON ``meta`` holding the format version (:data:`SHARD_FORMAT`), the item key,
  the model run and the settings tag, the name, dtype and shape of every array, and a SHA-256 of
  all of it (meta and array bytes). On read, each of these is compared; an array missing, one
  too many, a shape or dtype changed, another item's shard copied over this name (foreign key),
  a truncated or empty file, a byte flipped anywhere (zip structure, CRC, JSON or the checksum),
  an older format, non-finite scores, or arrays that do not fit the item (its uses, its number of
  aligned words) make the shard *unusable*: a :class:`CacheWarning` names the path and the reason,
  and the item is recomputed (and the shard rewritten).
* **transcripts** (``<study_cache_dir>/transcripts/<run>/<language>/<item key>.v2.json``): the
  text and token ids with the format version, key, run, language and a SHA-256; checked the same
  way (a truncated JSON is reported with its path and re-transcribed).

Writes are atomic (a temporary file in the same folder, then ``os.replace``: an interrupted run
resumes) and group-readable (mode ``0666 & ~umask``, e.g. 0644 or 0664, not ``mkstemp``'s 0600).
A cache that cannot be written (read-only folder, full disk) degrades to computing in memory:
one :class:`CacheWarning` per cache folder and process, and the run goes on with every result
kept in memory.

The format version is part of the file name, so shards and transcripts of an older format are
simply not read (no warning); bump :data:`SHARD_FORMAT` / :data:`TRANSCRIPT_FORMAT` when the
layout changes (:data:`ctxmix_lite.study.STUDY_VERSION` when the scores would change).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

__all__ = [
    "SHARD_FORMAT",
    "TRANSCRIPT_FORMAT",
    "CacheWarning",
    "CacheEntryError",
    "file_mode",
    "atomic_write",
    "try_write",
    "shard_path",
    "save_shard",
    "load_shard",
    "read_shard",
    "transcript_path",
    "save_transcript",
    "read_transcript",
]

SHARD_FORMAT = 2  # 2: key, run, settings, array manifest and SHA-256 inside the shard
TRANSCRIPT_FORMAT = 2  # 2: key, run, language and SHA-256 inside the record


class CacheWarning(UserWarning):
    """A cache file was unusable (and is recomputed), or the cache cannot be written."""


class CacheEntryError(ValueError):
    """A cache file failed its checks (the message says which and why)."""


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------
def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask is process-wide and racy with threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode an ordinary ``open(..., "w")`` would give: ``0o666 & ~umask`` (0644, 0664...)."""
    return 0o666 & ~_umask()


def _mkstemp(folder: Path, suffix: str):
    return tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)


def atomic_write(path: Path, writer: Callable[[str], None]) -> None:
    """Write ``path`` through ``writer(tmp_name)`` and ``os.replace``; mode ``0666 & ~umask``.
    Raises ``OSError`` when the folder cannot be written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _mkstemp(path.parent, path.suffix)
    os.close(fd)
    try:
        os.chmod(tmp, file_mode())  # mkstemp creates 0600: the cache is shared like any folder
        writer(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


_UNWRITABLE: set = set()


def try_write(path: Path, writer: Callable[[str], None], root: Optional[Path] = None) -> bool:
    """:func:`atomic_write`, degrading to "not cached" when the cache cannot be written: one
    :class:`CacheWarning` per ``root`` (the cache folder) and process; returns False then."""
    try:
        atomic_write(path, writer)
        return True
    except OSError as err:
        key = str(root if root is not None else Path(path).parent)
        if key not in _UNWRITABLE:
            _UNWRITABLE.add(key)
            warnings.warn(
                f"the study cache at {key} cannot be written ({type(err).__name__}: {err}); results are "
                "computed in memory and kept for this run, but not saved (set CTXMIX_CACHE to a writable "
                "folder to resume later runs from disk)", CacheWarning, stacklevel=3)
        return False


def report(path: Path, reason: str, what: str = "recomputing it") -> None:
    """The one way a bad cache file is reported: a :class:`CacheWarning` naming path and reason."""
    warnings.warn(f"unusable study cache file {path}: {reason}; {what}", CacheWarning, stacklevel=3)


# ------------------------------------------------------------------------------------------------
# shards
# ------------------------------------------------------------------------------------------------
def shard_path(shard_dir: Path, key: str) -> Path:
    return Path(shard_dir) / f"{key}.s{SHARD_FORMAT}.npz"


def _digest(meta: dict, arrays: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _shard_arrays(res: dict) -> dict:
    arrays = {}
    for (u, c, m), v in res["dist"].items():
        arrays[f"dist|{u}|{c}|{m}"] = np.ascontiguousarray(v)
    for (u, c), v in res["probe"].items():
        arrays[f"probe|{u}|{c}"] = np.ascontiguousarray(v)
    return arrays


def save_shard(path: Path, res: dict, meta: dict, root: Optional[Path] = None) -> bool:
    """Write one item's results (``res["dist"]``, ``res["probe"]``) with a checked ``meta`` (must
    hold ``key``; ``run`` and ``settings`` are checked on read when given). False: not cached."""
    arrays = _shard_arrays(res)
    meta = dict(meta, format=SHARD_FORMAT,
                arrays={k: [v.dtype.str, list(v.shape)] for k, v in arrays.items()})
    meta["sha256"] = _digest(meta, arrays)
    payload = dict(arrays, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))

    def w(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **payload)

    return try_write(path, w, root)


def read_shard(path: Path, key: Optional[str] = None, run: Optional[str] = None,
               settings: Optional[str] = None, expect: Optional[dict] = None):
    """Read and check one shard: ``({"dist": {(use, comp, measure): [L, W]}, "probe": {(use, comp):
    [L+1, D]}}, meta)``. Raises :class:`CacheEntryError` (reason in the message) on any failure.

    ``expect`` (optional): ``uses`` (names of the item's uses), ``n_words`` (aligned words),
    ``measures`` and ``encoder`` (True when encoder rows must be there for every use and measure).
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            if "meta" not in names:
                raise CacheEntryError("no 'meta' record (not a shard of this format)")
            meta = json.loads(bytes(z["meta"]).decode("utf-8"))
            arrays = {k: z[k] for k in names if k != "meta"}
    except CacheEntryError:
        raise
    except Exception as err:  # BadZipFile, EOFError, zlib/CRC errors, JSON/Unicode errors, OSError...
        raise CacheEntryError(f"unreadable ({type(err).__name__}: {err})") from err
    if not isinstance(meta, dict):
        raise CacheEntryError("its meta record is not a JSON object")
    if meta.get("format") != SHARD_FORMAT:
        raise CacheEntryError(f"format {meta.get('format')!r}, expected {SHARD_FORMAT}")
    for field, want in (("key", key), ("run", run), ("settings", settings)):
        if want is not None and meta.get(field) != want:
            raise CacheEntryError(f"it holds {field} {meta.get(field)!r}, not {want!r} (a file copied over "
                                  "another's name?)")
    manifest = meta.get("arrays")
    if not isinstance(manifest, dict):
        raise CacheEntryError("no array manifest in its meta")
    missing, extra = sorted(set(manifest) - set(arrays)), sorted(set(arrays) - set(manifest))
    if missing:
        raise CacheEntryError(f"array(s) missing: {missing}")
    if extra:
        raise CacheEntryError(f"unexpected array(s): {extra}")
    for name, a in arrays.items():
        dt, shape = manifest[name]
        if a.dtype.str != dt or list(a.shape) != list(shape):
            raise CacheEntryError(f"array {name!r} is {a.dtype.str} {list(a.shape)}, the manifest says {dt} {shape}")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise CacheEntryError(f"array {name!r} holds NaN or inf")
    if meta.get("sha256") != _digest(meta, arrays):
        raise CacheEntryError("SHA-256 mismatch (the file's bytes changed after it was written)")
    dist, probe = {}, {}
    for k, a in arrays.items():
        parts = k.split("|")
        if parts[0] == "dist" and len(parts) == 4:
            dist[tuple(parts[1:])] = a
        elif parts[0] == "probe" and len(parts) == 3:
            probe[tuple(parts[1:])] = a
        else:
            raise CacheEntryError(f"unknown array name {k!r}")
    if expect:
        _check_expected(dist, probe, expect)
    return {"dist": dist, "probe": probe}, meta


def _check_expected(dist: dict, probe: dict, expect: dict) -> None:
    from .runs import N_PROMPT
    from .core import PROMPT_MASS  # the study's shard layout (imported late: study imports this module)

    uses = list(expect.get("uses") or [])
    n_words = expect.get("n_words")
    for (u, c, m), a in dist.items():
        if uses and u not in uses:
            raise CacheEntryError(f"rows for use {u!r}, which this item does not have (uses {uses})")
        if c == PROMPT_MASS:  # one column per prompt position, not per word
            if a.ndim != 2 or a.shape[1] != N_PROMPT:
                raise CacheEntryError(f"array dist|{u}|{c}|{m} has shape {list(a.shape)}; expected "
                                      f"[layers, {N_PROMPT}] (one column per prompt token)")
            continue
        if a.ndim != 2 or (n_words is not None and a.shape[1] != n_words):
            raise CacheEntryError(f"array dist|{u}|{c}|{m} has shape {list(a.shape)}; expected [layers, {n_words}] "
                                  "(one column per aligned word)")
    layers = {}
    for (u, c, m), a in dist.items():
        if layers.setdefault(c, a.shape[0]) != a.shape[0]:
            raise CacheEntryError(f"component {c!r} has arrays with {layers[c]} and {a.shape[0]} layers")
    if expect.get("encoder"):
        want = [(u, "encoder", m) for u in uses for m in expect.get("measures", ())]
        lack = [w for w in want if w not in dist]
        if lack:
            raise CacheEntryError(f"encoder rows missing: {['|'.join(w) for w in lack]}")
        lack = [u for u in uses if (u, "encoder") not in probe]
        if lack:
            raise CacheEntryError(f"encoder probe features missing for use(s) {lack}")


def load_shard(path: Path, **checks):
    """:func:`read_shard`, or ``None`` with a :class:`CacheWarning` naming the path and the reason
    when the shard is unusable (the caller recomputes it). A missing file is ``None``, silently."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return read_shard(path, **checks)
    except CacheEntryError as err:
        report(path, str(err))
        return None


# ------------------------------------------------------------------------------------------------
# transcripts
# ------------------------------------------------------------------------------------------------
def transcript_path(root: Path, key: str) -> Path:
    return Path(root) / f"{key}.v{TRANSCRIPT_FORMAT}.json"


def _record_digest(rec: dict) -> str:
    return hashlib.sha256(json.dumps({k: v for k, v in rec.items() if k != "sha256"}, sort_keys=True,
                                     ensure_ascii=False).encode()).hexdigest()


def save_transcript(path: Path, rec: dict, key: str, run: str, language: str,
                    root: Optional[Path] = None) -> bool:
    out = dict(format=TRANSCRIPT_FORMAT, key=key, run=run, language=language, text=rec["text"],
               ids=None if rec.get("ids") is None else [int(i) for i in rec["ids"]])
    out["sha256"] = _record_digest(out)
    return try_write(path, lambda tmp: Path(tmp).write_text(json.dumps(out, ensure_ascii=False), encoding="utf-8"),
                     root)


def read_transcript(path: Path, key: str, run: str, language: str) -> dict:
    """``{"text", "ids"}`` of a checked transcript file; :class:`CacheEntryError` otherwise."""
    try:
        rec = json.loads(Path(path).read_text(encoding="utf-8"))
    except Exception as err:  # JSONDecodeError (truncated), UnicodeDecodeError, OSError
        raise CacheEntryError(f"unreadable ({type(err).__name__}: {err})") from err
    if not isinstance(rec, dict):
        raise CacheEntryError("not a JSON object")
    if rec.get("format") != TRANSCRIPT_FORMAT:
        raise CacheEntryError(f"format {rec.get('format')!r}, expected {TRANSCRIPT_FORMAT}")
    for field, want in (("key", key), ("run", run), ("language", language)):
        if rec.get(field) != want:
            raise CacheEntryError(f"it holds {field} {rec.get(field)!r}, not {want!r} (a file copied over "
                                  "another's name?)")
    text, ids = rec.get("text"), rec.get("ids")
    if not isinstance(text, str):
        raise CacheEntryError("its text is not a string")
    if ids is not None and not (isinstance(ids, list) and all(isinstance(i, int) and not isinstance(i, bool)
                                                              and i >= 0 for i in ids)):
        raise CacheEntryError("its token ids are not a list of non-negative integers")
    if rec.get("sha256") != _record_digest(rec):
        raise CacheEntryError("SHA-256 mismatch (the file changed after it was written)")
    return {"text": text, "ids": ids}


def load_transcript(path: Path, key: str, run: str, language: str) -> Optional[dict]:
    """:func:`read_transcript`, or ``None`` (missing: silently; unusable: with a warning)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return read_transcript(path, key, run, language)
    except CacheEntryError as err:
        report(path, str(err), "transcribing the item again")
        return None


def missing(paths: Sequence[Path]) -> bool:
    """True when any of ``paths`` does not exist (a cheap pre-check; contents are checked on read)."""
    return any(not Path(p).exists() for p in paths)
