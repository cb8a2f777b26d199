"""The Whisper transcription check of the homophony items (``whisper_ok``): transcribe every item,
split the transcript into words (:func:`transcript_words`, the one word split of transcripts; the
study's token-level split, :func:`ctxmix_lite.study.transcript_word_tokens`, is built on
:func:`transcript_word_starts`) and keep the items whose cue and target were heard, as the study
does. Transcripts are cached by audio hash; the committed ``data/checks/*.tsv`` seed the cache.

Part of :mod:`ctxmix_lite.corpus`; the public names are also importable from :mod:`.homophony`.
"""
from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .items import (FIELDS, SAMPLE_RATE, HomophonyDataError, features, find_cue_target,
                    item_audio, quiet_datasets)

DEFAULT_CHECK_MODEL = "whisper-base"


def seed_transcripts(ds) -> Optional[List[str]]:
    """Transcripts of every item from a committed ``data/checks/whisper-base*.tsv`` (keyed by the
    audio's SHA-1), or None when any item is missing there (other synthesiser version, another
    build such as the smoke set, which shares a few items with the default one: a partly checked
    set would make ``checked_only`` selections keep only those few)."""
    folder = _seed_check_path("x").parent
    if not folder.is_dir():
        return None
    keys = None
    for f in sorted(folder.glob(f"{DEFAULT_CHECK_MODEL}*.tsv")):
        table = _read_seed(f)
        if keys is None:
            keys = [_audio_key(np.asarray(a["array"], np.float32)) for a in ds["audio"]]
        if all(k in table for k in keys):
            return [table[k] for k in keys]
    return None


def _read_seed(path: Path) -> Dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            parts = line.split("\t")
            if len(parts) >= 3:
                out[parts[0]] = parts[-1]
    return out


# ---------------------------------------------------------------------------------------------
# Whisper transcription check
# ---------------------------------------------------------------------------------------------
_KEEP_CHAR = re.compile(r"[\w'\- ]")
_ELIDED = re.compile(r"^((?:[a-z]|qu|jusqu|lorsqu|puisqu)')(.+)$")


def transcript_word_starts(lowered: str) -> List[Tuple[str, int]]:
    """The words of a lower-case (NFC) transcript as the check splits them, each with the offset
    of its first character in ``lowered``: the typographic apostrophe reads as ``'``; every
    character but a word character, ``'``, ``-`` and space as a space; words split at spaces; an
    elided prefix split off (*l'*, *qu'*, *jusqu'*...); ``'`` and ``-`` stripped at the ends; empty
    words dropped. Characters map one to one, so the offsets index ``lowered``. The one word split
    of transcripts: :func:`transcript_words` and the study's token-level split
    (:func:`ctxmix_lite.study.transcript_word_tokens`) both use it."""
    folded = "".join(c if _KEEP_CHAR.match(c) else " " for c in lowered.replace("\u2019", "'"))
    words = []
    for m in re.finditer(r"\S+", folded):
        w, a = m.group(0), m.start()
        e = _ELIDED.match(w)
        if e:
            parts = [(e.group(1), a), (e.group(2), a + len(e.group(1)))]
        else:
            core = w.strip("-'")
            parts = [(core, a + (len(w) - len(w.lstrip("-'"))))]
        words += [(part, start) for part, start in parts if part]
    return words


def transcript_words(text: str) -> List[str]:
    """Words of a transcript for matching: lower case, apostrophes kept inside words but elided
    prefixes split off ("l'élève" -> "l'", "élève"), punctuation dropped
    (:func:`transcript_word_starts`)."""
    return [w for w, _ in transcript_word_starts(unicodedata.normalize("NFC", text).lower())]


def whisper_item_ok(transcript: str, item) -> bool:
    """The study's criterion: cue and target (and second target) are in the transcript, in order."""
    words = transcript_words(transcript)
    try:
        find_cue_target(words, item["cue_word"], item["target_word"],
                        item.get("target_word_2") or "")
        return True
    except HomophonyDataError:
        return False


def _audio_key(arr: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(arr, dtype=np.float32).tobytes()).hexdigest()


def default_model():
    """Whisper-base ``(model, processor)`` from :func:`ctxmix_lite.models.load_model`, or, where that
    raises ImportError, :func:`ctxmix_lite.models.whisper_offline.load_whisper_base_offline`."""
    try:
        from ctxmix_lite.models.loading import load_model

        return load_model("openai/whisper-base")
    except ImportError:
        from ctxmix_lite.models.whisper_offline import load_whisper_base_offline

        return load_whisper_base_offline()


def model_fingerprint(model) -> str:
    """A short name that identifies the *weights* (not just the architecture): cached transcripts
    of a trained model are never reused for a randomly initialised one of the same shape."""
    import torch

    base = str(getattr(getattr(model, "config", None), "_name_or_path", "") or "").split("/")[-1]
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base) or type(model).__name__.lower()
    h = hashlib.sha1()
    n = 0
    for name, p in model.named_parameters():
        n += p.numel()
        if n < 5_000_000:  # the first parameters suffice
            h.update(name.encode())
            h.update(p.detach().reshape(-1)[:4096].to(torch.float32).cpu().numpy().tobytes())
    return f"{base}-{n}-{h.hexdigest()[:10]}"


def transcription_check(dataset, model=None, processor=None, batch_size: int = 8,
                        progress: bool = True, cache: bool = True, save: bool = True):
    """Transcribe every item with Whisper (greedy, forced French) and set ``whisper_ok``: True when
    the transcript has cue and target (and second target) correct and in order (the study keeps
    only those for the decoder analysis).

    model/processor: default the offline trained Whisper-base (``models.load_model``).
    cache: reuse transcripts by audio hash from ``paths.cache_dir()/homophony_whisper/<model>.jsonl``
    and from the committed ``data/checks/<model>.tsv`` (bit-identical audio only).
    save: when ``dataset`` is an offline build, write ``whisper_check.json`` into its build folder
    so that later loads of that build come with ``whisper_ok`` filled in.
    Returns a new Dataset; the transcripts are in ``ds._ctxmix_transcripts`` (item_id -> text).
    """
    if model is None or processor is None:
        model, processor = default_model()
    name = model_fingerprint(model) if hasattr(model, "named_parameters") else "stub"
    known = _load_check_cache(name) if cache else {}
    keys = [_audio_key(np.asarray(a["array"], np.float32)) for a in dataset["audio"]]
    todo = [i for i, k in enumerate(keys) if k not in known]
    new = {}
    model.eval()
    with _fast_attention(model):  # generation reads no weights: sdpa (~2x faster), then eager again
        _transcribe_into(new, todo, keys, dataset, model, processor, batch_size, progress,
                         name if cache else None)
    known.update(new)
    texts = [known[k] for k in keys]
    oks = [whisper_item_ok(t, dataset[i]) for i, t in enumerate(texts)]
    with quiet_datasets(not progress):
        ds = dataset.remove_columns("whisper_ok").add_column("whisper_ok", oks)
        ds = ds.select_columns(list(FIELDS)).cast(features())
    ds._ctxmix_transcripts = dict(zip(dataset["item_id"], texts))  # type: ignore[attr-defined]
    for attr in ("_ctxmix_build_dir", "_ctxmix_report"):
        if hasattr(dataset, attr):
            setattr(ds, attr, getattr(dataset, attr))
    build = getattr(dataset, "_ctxmix_build_dir", None)
    if save and build and Path(build, "report.json").is_file():
        by = {}
        for t, v in zip(ds["template"], oks):
            by.setdefault(t, [0, 0])
            by[t][0] += int(v)
            by[t][1] += 1
        Path(build, "whisper_check.json").write_text(json.dumps({
            "model": name, "ok": int(sum(oks)), "checked": len(oks), "by_template": by,
            "items": {i: {"ok": o, "text": t} for i, o, t in zip(ds["item_id"], oks, texts)}},
            indent=1, ensure_ascii=False))
    return ds


class _fast_attention:
    """Run a block with sdpa attention when the model can switch, restoring the previous
    implementation afterwards (analysis code needs eager; plain generation does not)."""

    def __init__(self, model):
        self.model = model
        self.prev = getattr(getattr(model, "config", None), "_attn_implementation", None)

    def __enter__(self):
        if self.prev and self.prev != "sdpa" and hasattr(self.model, "set_attn_implementation"):
            try:
                self.model.set_attn_implementation("sdpa")
            except Exception:  # pragma: no cover - sdpa unsupported: stay as is
                self.prev = None
        else:
            self.prev = None
        return self

    def __exit__(self, *exc):
        if self.prev:
            self.model.set_attn_implementation(self.prev)
        return False


def _transcribe_into(new, todo, keys, dataset, model, processor, batch_size, progress, cache_name):
    import torch
    from tqdm.auto import tqdm

    for s in tqdm(range(0, len(todo), batch_size), desc="whisper check", disable=not progress):
        idx = todo[s: s + batch_size]
        audios = [item_audio(dataset[i]) for i in idx]
        feats = processor.feature_extractor(audios, sampling_rate=SAMPLE_RATE,
                                            return_tensors="pt").input_features
        with torch.no_grad():
            out = model.generate(feats.to(model.device, model.dtype), language="fr",
                                 task="transcribe", max_new_tokens=96)
        seqs = out.sequences if hasattr(out, "sequences") else out
        texts = processor.batch_decode(seqs, skip_special_tokens=True)
        for i, t in zip(idx, texts):
            new[keys[i]] = t.strip()
        if cache_name:  # write as we go: an interrupted check resumes where it stopped
            _append_check_cache(cache_name, {keys[i]: new[keys[i]] for i in idx})


def _check_cache_path(name: str) -> Path:
    from ctxmix_lite.course.paths import cache_dir

    return cache_dir() / "homophony_whisper" / f"{name}.jsonl"


def _seed_check_path(name: str) -> Path:
    return Path(__file__).resolve().parents[2] / "data" / "checks" / f"{name}.tsv"


def export_check_seed(name: str, dataset, path: Optional[Path] = None) -> Path:
    """Write the cached transcripts of ``dataset``'s items as a committed seed file
    ``data/checks/<name>.tsv`` (audio SHA-1, item id, transcript)."""
    known = _load_check_cache(name)
    path = Path(path) if path else _seed_check_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# Whisper transcripts of the offline homophony set ({name}); key: SHA-1 of the "
             "float32 audio. Written by homophony.export_check_seed.",
             "# audio_sha1\titem_id\ttranscript"]
    for iid, a in zip(dataset["item_id"], dataset["audio"]):
        k = _audio_key(np.asarray(a["array"], np.float32))
        if k in known:
            lines.append(f"{k}\t{iid}\t{known[k]}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _load_check_cache(name: str) -> Dict[str, str]:
    seed = _seed_check_path(name)
    out = _read_seed(seed) if seed.is_file() else {}
    p = _check_cache_path(name)
    if p.is_file():
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                d = json.loads(line)
                out[d["audio_sha1"]] = d["text"]
            except (ValueError, KeyError):
                continue
    return out


def _append_check_cache(name: str, new: Dict[str, str]) -> None:
    p = _check_cache_path(name)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("a", encoding="utf-8") as fh:
        for k, t in new.items():
            fh.write(json.dumps({"audio_sha1": k, "text": t}, ensure_ascii=False) + "\n")
