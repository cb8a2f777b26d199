"""Homophony data from elsewhere, mapped onto the common schema: the study's hub data set
(``hosein-m/french_homophone_asr``), a local folder or file (:func:`normalize_external`), and the
one entry point of every source, :func:`load_homophony` (``"offline"`` builds or loads the
synthetic set, :mod:`.build`); :func:`balanced_subset` picks a label-balanced subset.

Part of :mod:`ctxmix_lite.corpus`; the public names are also importable from :mod:`.homophony`.
"""
from __future__ import annotations

import os
import re
import warnings
from collections import Counter
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from .build import DEFAULT_ITEMS, build_offline
from .items import (PLURAL_CUES, PRONOUNS, SAMPLE_RATE, SINGULAR_CUES, TEMPLATES,
                    HomophonyDataError, as_interval_list, check_item, features, find_cue_target,
                    norm_word, quiet_datasets, to_dataset)
from .pairs import report_counts
from .tokens import decoder_tokenizer, token_distance

HUB_DATASET = "hosein-m/french_homophone_asr"


class HubDataUnavailable(OSError):
    """The hub data set cannot be reached (no network / HF_HUB_OFFLINE)."""


# ---------------------------------------------------------------------------------------------
# external data (hub, local folders) -> common schema
# ---------------------------------------------------------------------------------------------
_TEXT_FIELDS = ("transcription", "text", "sentence", "normalized_text", "raw_text")
_ALIGN_FIELDS = ("alignment", "alignments", "word_alignment", "word_alignments", "intervals",
                 "words", "word_intervals", "word_segments", "segments")
_LABEL_FIELDS = ("label", "label_number", "number", "labels", "grammatical_number")
_TEMPLATE_NAMES = {"det_noun": "Det_Noun", "pronoun_verb": "Pronoun_Verb",
                   "det_noun_verb": "Det_Noun_Verb", "detnoun": "Det_Noun",
                   "pronounverb": "Pronoun_Verb", "detnounverb": "Det_Noun_Verb"}



def _find_alignment_field(example: dict) -> str:
    for k in _ALIGN_FIELDS:
        if k in example:
            try:
                as_interval_list(example[k])
                return k
            except HomophonyDataError:
                pass
    for k, v in example.items():  # any field that reads as intervals
        if k == "audio" or isinstance(v, (str, int, float, bool)) or v is None:
            continue
        try:
            if as_interval_list(v):
                return k
        except HomophonyDataError:
            continue
    raise HomophonyDataError(f"no word-alignment field (list of start/end/word) among "
                             f"{sorted(example)}")


def _parse_label(value, cue: str) -> str:
    v = value
    if isinstance(v, (list, tuple)):
        v = v[0] if len(v) else None
    if isinstance(v, str):
        s = v.lower()
        if "plur" in s or s in ("pl", "p"):
            return "plural"
        if "sing" in s or s in ("sg", "s"):
            return "singular"
    if isinstance(v, (int, np.integer, bool)) and not isinstance(v, bool):
        warnings.warn("numeric number label: read from the cue word instead", RuntimeWarning)
    c = norm_word(cue)
    if c in PLURAL_CUES:
        return "plural"
    if c in SINGULAR_CUES:
        return "singular"
    raise HomophonyDataError(f"cannot tell the number from label {value!r} or cue {cue!r}")


def _parse_template(value, cue: str, target_2: str) -> str:
    if isinstance(value, str):
        k = re.sub(r"[^a-z_]", "", value.lower())
        if k in _TEMPLATE_NAMES:
            return _TEMPLATE_NAMES[k]
        if value in TEMPLATES:
            return value
    if target_2:
        return "Det_Noun_Verb"
    return "Pronoun_Verb" if norm_word(cue) in PRONOUNS else "Det_Noun"


def _decode_audio(a) -> Tuple[np.ndarray, str]:
    """datasets audio value (decoded dict, {'bytes','path'}, a path, or an array) -> 16 kHz."""
    from .audio import load_audio

    if isinstance(a, dict):
        path = a.get("path") or ""
        if a.get("array") is not None and len(a["array"]):
            return load_audio({"array": np.asarray(a["array"], np.float32),
                               "sampling_rate": a.get("sampling_rate") or SAMPLE_RATE},
                              check=False), path
        if a.get("bytes"):
            import io

            import soundfile as sf

            try:
                arr, sr = sf.read(io.BytesIO(a["bytes"]), dtype="float32", always_2d=False)
            except Exception:
                import librosa

                import tempfile
                with tempfile.NamedTemporaryFile(suffix=os.path.splitext(path)[1] or ".mp3") as f:
                    f.write(a["bytes"])
                    f.flush()
                    arr, sr = librosa.load(f.name, sr=None, mono=True)
            return load_audio(arr, sampling_rate=sr, check=False), path
        if path:
            return load_audio(path, check=False), path
        raise HomophonyDataError("audio has neither samples, bytes nor a path")
    if isinstance(a, (str, os.PathLike)):
        return load_audio(a, check=False), str(a)
    raise HomophonyDataError(f"unreadable audio value of type {type(a).__name__}")


def normalize_external(ds, source: str = "hub", progress: bool = True):
    """Map a data set in the released layout (or anything close) onto the common schema.

    Field mapping: text from ``transcription|text|sentence``; alignment from the first field that
    reads as start/end/word intervals (list of dicts, dict of lists, or ``{'intervals': [...]}``);
    label from ``label|label_number|number`` (``Number_Plur``, ``Plur``, ``plural``...) else from
    the cue word; template from ``template`` (``det_noun``...) else from the words; indices
    recomputed on the alignment (:func:`find_cue_target`). Rows that cannot be mapped (no
    alignment, cue after target, words outside the clip, unreadable audio) are skipped and
    counted. Returns ``(Dataset, report)``.
    """
    from tqdm.auto import tqdm

    try:
        from datasets import Audio

        if "audio" in ds.features and isinstance(ds.features["audio"], Audio):
            ds = ds.cast_column("audio", Audio(decode=False))  # decoding needs torchcodec
    except Exception:  # pragma: no cover
        pass
    rows, skipped, examples = [], Counter(), {}
    align_key = None
    tok = decoder_tokenizer()
    for i in tqdm(range(len(ds)), desc=f"{source} -> schema", disable=not progress):
        ex = ds[i]
        try:
            if align_key is None or align_key not in ex:
                align_key = _find_alignment_field(ex)
            al = as_interval_list(ex[align_key])
            text = next((ex[k] for k in _TEXT_FIELDS if ex.get(k)), None)
            if text is None:
                text = " ".join(w["word"] for w in al)
            cue, tgt = ex.get("cue_word"), ex.get("target_word")
            if not cue or not tgt:
                raise HomophonyDataError("cue_word / target_word missing")
            t2 = ex.get("target_word_2") or ""
            ci, ti, t2i = find_cue_target([w["word"] for w in al], cue, tgt, t2)
            label = _parse_label(next((ex[k] for k in _LABEL_FIELDS if k in ex), None), cue)
            template = _parse_template(ex.get("template"), cue, t2)
            audio, path = _decode_audio(ex.get("audio"))
            item_id = str(ex.get("item_id") or ex.get("id") or ex.get("org_id") or
                          (os.path.splitext(os.path.basename(path))[0] if path else "") or i)
            tdist = token_distance(str(text), [w["word"] for w in al], ci, ti, tok)
            row = {
                "item_id": f"{source}-{item_id}" if not str(item_id).startswith(source) else
                str(item_id),
                "audio": {"array": audio, "sampling_rate": SAMPLE_RATE, "path": path},
                "transcription": str(text), "cue_word": str(al[ci]["word"]),
                "target_word": str(al[ti]["word"]),
                "target_word_2": str(al[t2i]["word"]) if t2i >= 0 else "",
                "alignment": al, "template": template, "label": label,
                "voice": str(ex.get("voice") or ex.get("client_id") or source),
                "pair_id": str(ex.get("pair_id") or f"{source}-{item_id}"),
                "cue_index": ci, "target_index": ti, "target_index_2": t2i,
                "cue_distance": ti - ci, "cue_token_distance": tdist,
                "whisper_ok": ex.get("whisper_ok") if isinstance(ex.get("whisper_ok"), bool)
                else None,
                "phones": [],
            }
            check_item(row, duration=len(audio) / SAMPLE_RATE)
            rows.append(row)
        except (HomophonyDataError, ValueError, OSError) as err:
            reason = type(err).__name__ + ": " + str(err).split(":")[0][:60]
            skipped[reason] += 1
            examples.setdefault(reason, str(err)[:200])
    report = {"source": source, "rows_in": len(ds), "rows_out": len(rows),
              "skipped": dict(skipped), "skipped_examples": examples,
              "cue_token_distance_unknown": sum(r["cue_token_distance"] < 0 for r in rows),
              "counts": report_counts(rows) if rows else {}}
    if skipped:
        warnings.warn(f"{source}: {sum(skipped.values())} of {len(ds)} rows skipped "
                      f"({dict(skipped)})", RuntimeWarning, stacklevel=2)
    if not rows:
        raise HomophonyDataError(f"{source}: no usable row ({dict(skipped)})")
    with quiet_datasets(not progress):
        return to_dataset(rows), report


def load_homophony(source: str = "offline", n: Optional[int] = None, smoke: bool = False,
                   seed: int = 0, split: str = "train", progress: bool = True, **kw):
    """The homophony data in the common schema (a ``datasets.Dataset``).

    source: ``"offline"`` (synthetic, built or cached; ``n`` = number of items, default 1,000,
    ``smoke`` = 24), ``"hub"`` (``hosein-m/french_homophone_asr``; needs the network), or a local
    path: a folder written by ``save_to_disk`` / a parquet, json(l) or csv file / a folder of such
    files, in the common schema or in the released layout (mapped by :func:`normalize_external`).
    n: for hub/path sources, keep a label-balanced subset of ``n`` items (seeded).
    """
    if source == "offline":
        return build_offline(n_items=n or DEFAULT_ITEMS, smoke=smoke if n is None else False,
                             seed=seed, progress=progress, **kw)
    if source == "hub":
        from ctxmix_lite.models.loading import hub_offline

        if hub_offline():
            raise HubDataUnavailable(
                f"{HUB_DATASET} needs the Hugging Face hub, but HF_HUB_OFFLINE is set; use "
                "load_homophony('offline') for the synthetic set.")
        from datasets import load_dataset

        try:
            raw = load_dataset(HUB_DATASET, split=split)
        except Exception as err:
            raise HubDataUnavailable(
                f"could not load {HUB_DATASET} from the hub ({type(err).__name__}: {err}). "
                "Use load_homophony('offline') for the synthetic set.") from err
        ds, rep = normalize_external(raw, source="hub", progress=progress)
    else:
        ds, rep = _load_local(Path(source), split, progress)
    ds._ctxmix_report = rep  # type: ignore[attr-defined]
    if n is not None:
        ds = balanced_subset(ds, n, seed)
    return ds


def _load_local(path: Path, split: str, progress: bool):
    from datasets import DatasetDict, load_dataset, load_from_disk

    if not path.exists():
        raise FileNotFoundError(f"no data set at {path}")
    if path.is_dir() and ((path / "dataset_info.json").is_file() or
                          (path / "dataset_dict.json").is_file()):
        raw = load_from_disk(str(path))
    elif path.is_dir() and (path / "dataset" / "dataset_info.json").is_file():
        raw = load_from_disk(str(path / "dataset"))
    else:
        files = [path] if path.is_file() else sorted(
            p for p in path.rglob("*") if p.suffix in (".parquet", ".jsonl", ".json", ".csv",
                                                      ".arrow"))
        if not files:
            raise HomophonyDataError(f"no parquet/json/csv/arrow files under {path}")
        kind = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv",
                ".arrow": "arrow"}[files[0].suffix]
        raw = load_dataset(kind, data_files=[str(f) for f in files], split="train")
    if isinstance(raw, DatasetDict):
        raw = raw[split] if split in raw else raw[list(raw)[0]]
    if dict(raw.features) == dict(features()):
        for i in range(len(raw)):  # already ours: still check every row
            check_item(raw[i])
        return raw, {"source": str(path), "rows_in": len(raw), "rows_out": len(raw),
                     "skipped": {}}
    return normalize_external(raw, source=path.name or "local", progress=progress)


def balanced_subset(ds, n: int, seed: int = 0):
    """``n`` items, half singular and half plural (as far as available), seeded; whole pairs are
    kept together when the data has pairs."""
    if n >= len(ds):
        return ds
    rng = np.random.default_rng(seed)
    labels = np.asarray(ds["label"])
    pairs = np.asarray(ds["pair_id"])
    uniq, counts = np.unique(pairs, return_counts=True)
    if np.all(counts == 2) and n % 2 == 0:
        chosen = set(rng.permutation(uniq)[: n // 2].tolist())
        idx = [i for i, p in enumerate(pairs) if p in chosen]
    else:
        sg = rng.permutation(np.where(labels == "singular")[0])
        pl = rng.permutation(np.where(labels == "plural")[0])
        k = min(n // 2, len(sg), len(pl))
        idx = sorted(list(sg[:k]) + list(pl[:k]) + list(
            rng.permutation(np.setdiff1d(np.arange(len(ds)), np.r_[sg[:k], pl[:k]]))[
                : n - 2 * k]))
    return ds.select(sorted(idx))
