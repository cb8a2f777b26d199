"""The offline homophony build: its key, the build itself (:func:`build_offline`, cached by key),
saving and loading a build folder, and its report.

The key (:func:`_build_key`) hashes every input: the word lists, the code version, the bytes of
``synth.py`` and ``lexicon.py``, the source of the data-generating functions
(:func:`.pairs.generating_code`), voices, prosody ranges, parameters, the synthesiser, lexicon and
tokenizer versions; a change of any input rebuilds and nothing else does. Part of
:mod:`ctxmix_lite.corpus`; the public names are also importable from :mod:`.homophony`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Tuple

from ctxmix_lite.course.options import Options

from .items import FIELDS, features, quiet_datasets, to_dataset
from .pairs import (DEFAULT_MIX, DEFAULT_VARIANT_MIX, EDGE_SILENCE, PITCH_RANGE, RANGE_RANGE,
                    RATE_RANGE, build_rows, generating_code)
from .tokens import tokenizer_identity
from .whisper_check import seed_transcripts, whisper_item_ok
from .wordlists import WordLists, load_word_lists

CODE_VERSION = "homophony-2"  # 2: non-adjacent variants, distances, edge silence
DEFAULT_ITEMS = 1000
SMOKE_ITEMS = 24


# ---------------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------------
def _hash_inputs(parts: dict) -> str:
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def _synth_identity() -> dict:
    from . import synth

    info = synth.find_library()
    ver = ""
    try:
        import ctypes

        lib = ctypes.CDLL(info.path)
        lib.espeak_Info.restype = ctypes.c_char_p
        ver = (lib.espeak_Info(None) or b"").decode()
    except Exception:  # pragma: no cover
        pass
    return {"library": info.path, "source": info.source, "version": ver, "mbrola": info.mbrola}


def _generating_code():
    return generating_code()  # the functions whose source makes the data (.pairs)


def build_dir(key: str) -> Path:
    from ctxmix_lite.course.paths import data_dir

    return data_dir() / "homophony" / key


def _build_key(n_items, seed, voices, mix, lists: WordLists, variant_mix=None
               ) -> Tuple[str, dict]:
    from . import lexicon

    code = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for mod in ("synth.py", "lexicon.py"):
        code.update((here / mod).read_bytes())
    import inspect

    for fn in _generating_code():  # the parts of this module that make the data
        code.update(inspect.getsource(fn).encode())
    ident = {
        "code": CODE_VERSION, "code_sha256": code.hexdigest()[:16], "n_items": n_items, "seed": seed, "voices": list(voices),
        "mix": dict(mix), "word_lists": {k: hashlib.sha256(v.encode()).hexdigest()
                                         for k, v in lists.sources.items()},
        "synth": _synth_identity(), "lexicon": lexicon.source_version(),
        "prosody": [RATE_RANGE, PITCH_RANGE, RANGE_RANGE],
        "variants": {t: dict(v) for t, v in (variant_mix or DEFAULT_VARIANT_MIX).items()},
        "edge_silence": list(EDGE_SILENCE), "tokenizer": tokenizer_identity(),
    }
    return _hash_inputs(ident), ident


@dataclass(frozen=True)
class BuildOptions(Options):
    """The settings of :func:`build_offline` (its defaults live here)."""

    n_items: int = DEFAULT_ITEMS
    smoke: bool = False
    out_dir: Any = None
    seed: int = 0
    workers: int = 1
    voices: Optional[Sequence[str]] = None
    mix: Optional[Mapping[str, float]] = None
    force: bool = False
    progress: bool = True
    variant_mix: Optional[Mapping[str, Mapping[str, float]]] = None


def build_offline(options: Optional[BuildOptions] = None, **settings):
    """Build (or load from the cache) the offline synthetic homophony set.

    n_items: number of items (even: pairs); ``smoke=True`` makes it :data:`SMOKE_ITEMS` unless
    another ``n_items`` is given. Labels are balanced by construction (one singular and one plural
    per pair); templates follow ``mix`` (:data:`DEFAULT_MIX`), and each template's pairs are split
    over its :data:`VARIANTS` by ``variant_mix`` (:data:`DEFAULT_VARIANT_MIX`; a template it
    lacks is all adjacent): at least 30 % of the default build has 2-3 words between cue and
    target. Every clip starts and ends with a pause (:data:`EDGE_SILENCE`, drawn per pair).
    out_dir: where the build goes (default ``paths.data_dir()/homophony/<key>``); the key hashes
    every input (word lists, code version, voices, prosody ranges, parameters, synthesiser and
    lexicon versions), so a change of any input rebuilds and nothing else does.
    workers: processes for synthesis (libespeak-ng is single-threaded global state); the result
    does not depend on it.
    force: rebuild even when the build folder holds this key's build.
    settings: the fields of :class:`BuildOptions` (or pass ``options=``).
    Returns a ``datasets.Dataset`` in :func:`features`; the report is ``build_report(ds)``.
    """
    from . import synth

    o = BuildOptions.resolve(options, settings, where="build_offline")
    n_items, seed, voices, mix, variant_mix = o.n_items, o.seed, o.voices, o.mix, o.variant_mix
    if o.smoke and n_items == DEFAULT_ITEMS:
        n_items = SMOKE_ITEMS
    if n_items < 2 or n_items % 2:
        raise ValueError(f"n_items must be an even number >= 2 (pairs); got {n_items}")
    voices = list(voices) if voices else synth.default_voices()
    if not voices:
        raise synth.SynthesizerUnavailable(f"no French voice: {synth.INSTALL_COMMAND}")
    mix = OrderedDict(mix or DEFAULT_MIX)
    lists = load_word_lists()
    key, ident = _build_key(n_items, seed, voices, mix, lists, variant_mix)
    out = Path(o.out_dir) if o.out_dir else build_dir(key)
    if not o.force and _complete(out, key):
        return _load_build(out)
    t0 = time.perf_counter()
    tmp = _tmp_dir(out)
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "clips").mkdir(parents=True)
    rows, report = build_rows(n_items, seed, voices, mix, lists, o.workers, o.progress, tmp, out,
                              variant_mix)
    report["build_seconds"] = round(time.perf_counter() - t0, 2)
    report["key"], report["inputs"] = key, ident
    with quiet_datasets(not o.progress):
        ds = to_dataset(rows)
        _save_build(ds, report, out)
    return _load_build(out)


def _complete(out: Path, key: str) -> bool:
    rp = out / "report.json"
    if not (rp.is_file() and (out / "dataset" / "dataset_info.json").is_file()):
        return False
    try:
        return json.loads(rp.read_text())["key"] == key
    except Exception:
        return False


def _tmp_dir(out: Path) -> Path:
    return out.with_name(out.name + f".tmp{os.getpid()}")


def _save_build(ds, report, out: Path):
    """Write dataset + report into the temporary folder (which already holds clips/), then move
    it into place, so that an interrupted build is never mistaken for a cached one."""
    tmp = _tmp_dir(out)
    ds.save_to_disk(str(tmp / "dataset"))
    (tmp / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def _load_build(out: Path):
    """Load a build; if a transcription check was saved for it, fill ``whisper_ok`` from it."""
    from datasets import load_from_disk

    ds = load_from_disk(str(out / "dataset"))
    texts = None
    wc = out / "whisper_check.json"
    if wc.is_file():
        items = json.loads(wc.read_text())["items"]
        if all(i in items for i in ds["item_id"]):
            texts = [items[i]["text"] for i in ds["item_id"]]
    if texts is None:  # the committed check of the default model, if the audio is bit-identical
        texts = seed_transcripts(ds)
    if texts is not None:
        oks = [whisper_item_ok(t, ds[i]) for i, t in enumerate(texts)]
        with quiet_datasets(True):
            ds = ds.remove_columns("whisper_ok").add_column("whisper_ok", oks)
            ds = ds.select_columns(list(FIELDS)).cast(features())
        ds._ctxmix_transcripts = dict(zip(ds["item_id"], texts))  # type: ignore[attr-defined]
    ds._ctxmix_build_dir = str(out)  # type: ignore[attr-defined]
    return ds


def build_report(ds_or_dir) -> dict:
    """The build report (dict) of a built data set or build folder."""
    d = getattr(ds_or_dir, "_ctxmix_build_dir", None) or ds_or_dir
    p = Path(d) / "report.json"
    if not p.is_file():
        raise FileNotFoundError(f"no build report at {p}")
    return json.loads(p.read_text())


def format_report(report: dict) -> str:
    """A readable multi-line summary of a build report."""
    lines = [f"items: {report['n_items']} ({report['n_pairs']} minimal pairs), seed "
             f"{report.get('seed')}, built in {report.get('build_seconds', '?')} s"]
    c = report["counts"]
    for k in ("template", "label", "voice", "cue_distance", "cue_token_distance"):
        if k not in c:
            continue
        lines.append(f"  by {k}: " + ", ".join(f"{a} {b}" for a, b in c[k].items()))
    if "duration_s" in c:
        d = c["duration_s"]
        lines.append(f"  audio: {d['total']} s in all, {d['mean']} s mean ({d['min']}-{d['max']})")
    ex = report.get("excluded", {})
    n_ex = sum(ex.values())
    lines.append(f"candidates examined: {sum(report.get('candidates_examined', {}).values())}, "
                 f"excluded: {n_ex}")
    for r, n in ex.items():
        eg = report.get("excluded_examples", {}).get(r, [])[:2]
        lines.append(f"  {r}: {n}" + (f"  e.g. {eg}" if eg else ""))
    ch = report.get("checks", {})
    if ch:
        lines.append("checks: " + ", ".join(f"{k} {v}" for k, v in ch.items()
                                            if not isinstance(v, dict)))
        if ch.get("lexicon_failures"):
            lines.append("  lexicon failures: " + ", ".join(
                f"{k} ({v})" for k, v in ch["lexicon_failures"].items()))
    if "whisper_check" in report:
        w = report["whisper_check"]
        lines.append(f"whisper check ({w.get('model')}): {w.get('ok')}/{w.get('checked')} ok")
    return "\n".join(lines)
