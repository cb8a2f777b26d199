"""Common Voice French -> the homophony schema, offline.

From a locally downloaded Common Voice release folder (``validated.tsv`` or ``test.tsv`` beside
``clips/``), :func:`import_common_voice` finds template matches, aligns the words of every kept
clip, and writes the same schema as the offline set (:func:`ctxmix_lite.corpus.homophony.features`).

Template matching (no parser offline, so rules on the lexicon; the study used a French spaCy
parse):

* ``Det_Noun``: determiner + consonant-initial noun form (Lexique's noun list) whose other-number
  form (``+s``/``+x``, or ``-s``/``-x``) exists and is a homophone (Lexique, mid vowels merged),
  the determiner's number agreeing with the noun's spelling;
* ``Pronoun_Verb``: il/elle/ils/elles + vowel-initial verb form ``-e``/``-ent`` or
  ``-ait``/``-aient`` whose other form exists and is a homophone;
* ``Det_Noun_Verb``: a Det_Noun match followed by a consonant-initial verb form agreeing with it
  (a curated verb of ``data/lexicon``, or a homophone ``-e``/``-ent`` pair that Lexique does not
  also list as a noun: "le ciel calme" is not taken for a verb).

The aligner (:func:`whisper_align`) is *forced alignment from Whisper's cross-attention*: the
reference sentence is teacher-forced into the decoder of the offline Whisper-base; the
cross-attention of the model's alignment heads (``generation_config.alignment_heads``) gives a
token x frame matrix, standardised per head over tokens, median-filtered (width 7), averaged
over heads; dynamic time warping on its negative gives a monotonic token -> frame path; a word
starts at the frame where the path enters its first token and ends where the next word starts
(20 ms per encoder frame). Accuracy against the synthesiser's exact times: see
:data:`ALIGNER_ACCURACY` (measured by ``tests/test_commonvoice.py``).

Bad input is never dropped silently: malformed TSV rows, clips that fail to load, sentences
without a match, alignments outside the clip are skipped and counted in the report.
"""
from __future__ import annotations

import csv
import gzip
import math
import os
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ctxmix_lite.course.options import Options

from . import homophony as H
from . import lexicon as L

#: Columns every Common Voice release has (later releases add more after these).
CV_COLUMNS = ("client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender")
FRAME_SECONDS = 0.02  # Whisper encoder frame
#: :func:`whisper_align` against the synthesiser's exact word times on 59 clips of the default
#: offline set (406 words, 6 MBROLA voices, Whisper-base offline). Indicative only: read speech,
#: digital silence in pauses; expect larger errors on real recordings.
ALIGNER_ACCURACY = {
    "clips": 59, "words": 406,
    "start_mae_ms": 19, "start_median_ms": 12, "start_bias_ms": -2,
    "start_within_50ms": 0.92, "start_within_100ms": 0.99,
    "end_mae_ms": 20, "end_within_100ms": 0.99, "cue_start_mae_ms": 15,
    "without_pause_snapping": {"start_mae_ms": 29, "start_within_100ms": 0.93,
                               "cue_start_mae_ms": 87},
    "with_the_rows_of_the_tokens_themselves": {"start_bias_ms": +120},
}

SG_DETS = {"le", "la", "un", "une", "ce", "cette", "mon", "ma", "ton", "ta", "son", "sa",
           "notre", "votre", "leur"}
PL_DETS = {"les", "des", "ces", "mes", "tes", "ses", "nos", "vos", "leurs"}
SG_PRON, PL_PRON = {"il", "elle"}, {"ils", "elles"}


class CommonVoiceError(ValueError):
    """The release folder or a file in it is unusable (the message says which and why)."""


# ---------------------------------------------------------------------------------------------
# reading a release
# ---------------------------------------------------------------------------------------------
def find_tsv(folder: Path, split: Optional[str] = None) -> Path:
    """``<folder>/<split>.tsv`` (default: validated.tsv, else test.tsv)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CommonVoiceError(f"{folder} is not a folder (expected a Common Voice release: "
                               "validated.tsv or test.tsv beside clips/)")
    names = [f"{split}.tsv"] if split else ["validated.tsv", "test.tsv"]
    for n in names:
        if (folder / n).is_file():
            if not (folder / "clips").is_dir():
                raise CommonVoiceError(f"{folder} has {n} but no clips/ folder")
            return folder / n
    raise CommonVoiceError(f"none of {names} in {folder}")


def read_tsv(path: Path) -> Tuple[List[dict], Counter, Dict[str, str]]:
    """Rows of a Common Voice TSV (tab-separated, no quoting, header first). Returns
    ``(rows, skipped, examples)``; malformed rows (wrong column count, empty path or sentence)
    are skipped and counted."""
    skipped, examples = Counter(), {}
    rows = []
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            header = next(reader)
        except StopIteration:
            raise CommonVoiceError(f"{path} is empty") from None
        missing = [c for c in ("path", "sentence") if c not in header]
        if missing:
            raise CommonVoiceError(f"{path}: header lacks {missing} (got {header[:8]})")
        for lineno, rec in enumerate(reader, start=2):
            if not rec or rec == [""]:
                continue
            if len(rec) != len(header):
                skipped["tsv_malformed_row"] += 1
                examples.setdefault("tsv_malformed_row", f"line {lineno}: {len(rec)} fields, "
                                    f"{len(header)} expected")
                continue
            row = dict(zip(header, rec))
            if not row["path"].strip() or not row["sentence"].strip():
                skipped["tsv_empty_path_or_sentence"] += 1
                examples.setdefault("tsv_empty_path_or_sentence", f"line {lineno}")
                continue
            row["_line"] = lineno
            rows.append(row)
    return rows, skipped, examples


# ---------------------------------------------------------------------------------------------
# template matching
# ---------------------------------------------------------------------------------------------
@dataclass
class Match:
    template: str
    cue_index: int
    target_index: int
    target_index_2: int
    label: str


@lru_cache(maxsize=1)
def _lexique_nouns() -> frozenset:
    path = L.data_dir() / "nouns.txt.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return frozenset(w.strip().lower() for w in fh if w.strip())


@lru_cache(maxsize=1)
def _curated_verbs() -> Dict[str, Tuple[str, str]]:
    lists = H.load_word_lists()
    out = {}
    for v in lists.verbs_pronoun + lists.verbs_subject:
        out[v.sg] = ("singular", v.pl)
        out[v.pl] = ("plural", v.sg)
    return out


def _noun_other(word: str, plural: bool) -> Optional[str]:
    """The other-number spelling of a noun form, if Lexique has it and it sounds the same."""
    w = word.lower()
    if w not in _lexique_nouns():
        return None
    cands = ([w[:-1]] if w.endswith(("s", "x")) else []) if plural else [w + "s", w + "x"]
    for c in cands:
        if c and c != w and L.known(c) and L.homophones(w, c):
            return c
    return None


def _verb_other(word: str, plural: bool) -> Optional[str]:
    w = word.lower()
    cur = _curated_verbs().get(w)
    if cur is not None:
        return cur[1] if (cur[0] == "plural") == plural else None
    if plural:
        cands = [w[:-5] + "ait"] if w.endswith("aient") else (
            [w[:-2]] if w.endswith("ent") else [])
    else:
        cands = [w[:-3] + "aient"] if w.endswith("ait") else ([w + "nt"] if w.endswith("e")
                                                               else [])
    for c in cands:
        if L.known(w) and L.known(c) and L.homophones(w, c):
            return c
    return None


def find_matches(words: Sequence[str]) -> List[Match]:
    """Template matches in a word sequence (see the module docstring for the rules)."""
    w = [H.norm_word(x) for x in words]
    out = []
    for i in range(len(w) - 1):
        a, b = w[i], w[i + 1]
        if a in SG_DETS | PL_DETS and H.consonant_initial(b):
            plural = a in PL_DETS
            if _noun_other(b, plural) is None:
                continue
            label = "plural" if plural else "singular"
            if i + 2 < len(w) and H.consonant_initial(w[i + 2]) and (
                    w[i + 2] in _curated_verbs() or w[i + 2] not in _lexique_nouns()) and \
                    _verb_other(w[i + 2], plural) is not None:
                out.append(Match("Det_Noun_Verb", i, i + 1, i + 2, label))
            else:
                out.append(Match("Det_Noun", i, i + 1, -1, label))
        elif a in SG_PRON | PL_PRON and H.vowel_initial(b):
            plural = a in PL_PRON
            if _verb_other(b, plural) is not None and b not in ("est", "a", "ont", "es"):
                out.append(Match("Pronoun_Verb", i, i + 1, -1,
                                 "plural" if plural else "singular"))
    return out


# ---------------------------------------------------------------------------------------------
# aligner: forced alignment from Whisper cross-attention + DTW
# ---------------------------------------------------------------------------------------------
def _dtw(cost: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Monotonic path through ``cost[N tokens, M frames]`` (steps: diagonal, down, right) with
    minimal summed cost. Returns (token indices, frame indices) along the path."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    trace = np.zeros((n + 1, m + 1), dtype=np.int8)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            c0, c1, c2 = acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]
            if c0 <= c1 and c0 <= c2:
                acc[i, j], trace[i, j] = cost[i - 1, j - 1] + c0, 0
            elif c1 <= c2:
                acc[i, j], trace[i, j] = cost[i - 1, j - 1] + c1, 1
            else:
                acc[i, j], trace[i, j] = cost[i - 1, j - 1] + c2, 2
    i, j = n, m
    ti, fj = [], []
    while i > 0 and j > 0:
        ti.append(i - 1)
        fj.append(j - 1)
        t = trace[i, j]
        if t == 0:
            i, j = i - 1, j - 1
        elif t == 1:
            i -= 1
        else:
            j -= 1
    return np.array(ti[::-1]), np.array(fj[::-1])


def _median_filter(x: np.ndarray, width: int) -> np.ndarray:
    if width <= 1 or x.shape[-1] < width:
        return x
    pad = width // 2
    xp = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
    win = np.lib.stride_tricks.sliding_window_view(xp, width, axis=-1)
    return np.median(win, axis=-1)


def _alignment_heads(model) -> List[Tuple[int, int]]:
    heads = getattr(getattr(model, "generation_config", None), "alignment_heads", None)
    if heads:
        return [(int(l), int(h)) for l, h in heads]
    cfg = model.config  # fallback: every head of the upper half of the decoder
    return [(l, h) for l in range(cfg.decoder_layers // 2, cfg.decoder_layers)
            for h in range(cfg.decoder_attention_heads)]


def _frame_rms(audio: np.ndarray, hop: float = 0.01, win: float = 0.02) -> np.ndarray:
    h, w = int(hop * H.SAMPLE_RATE), int(win * H.SAMPLE_RATE)
    n = max(1, 1 + (len(audio) - w) // h)
    idx = np.arange(n)[:, None] * h + np.arange(w)[None, :]
    x = np.pad(audio, (0, max(0, idx.max() + 1 - len(audio))))[idx]
    return np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=1))


def snap_to_pauses(words: List[dict], audio: np.ndarray, threshold_db: float = -40.0,
                   min_pause: float = 0.10, max_lead: float = 0.10, hop: float = 0.01
                   ) -> List[dict]:
    """Move word starts out of pauses. Attention-based alignment gives a pause (a comma...) to
    the *next* word: if a word's span holds a silent run of at least ``min_pause`` s (10 ms frames
    whose RMS is ``threshold_db`` below the clip's 95th-percentile frame RMS) starting within
    ``max_lead`` s of the word start, the word starts after the run and the speech before it goes
    back to the previous word. Clips with no such silence (noisy real recordings) are unchanged."""
    rms = _frame_rms(audio, hop)
    silent = rms < np.percentile(rms, 95) * 10 ** (threshold_db / 20)
    out = [dict(w) for w in words]
    for i, w in enumerate(out):
        i0, i1 = int(round(w["start"] / hop)), min(int(round(w["end"] / hop)), len(silent))
        k = i0
        while k < i1 and k - i0 <= max_lead / hop:  # first silent run starting near the start
            if silent[k]:
                j = k
                while j < i1 and silent[j]:
                    j += 1
                if (j - k) * hop >= min_pause and j < i1:
                    if i > 0 and k > i0:
                        out[i - 1]["end"] = k * hop
                    w["start"] = j * hop
                break
            k += 1
    return out


def whisper_align(model, processor, audio: np.ndarray, text: str, language: str = "fr",
                  medfilt_width: int = 7, snap_pauses: bool = True) -> List[dict]:
    """Word intervals of ``text`` in ``audio`` (16 kHz) by forced alignment with Whisper.

    Let ``A[h, i, f]`` be the cross-attention of alignment head ``h`` at decoder position ``i`` to
    encoder frame ``f < F = ceil(duration / 20 ms)``, renormalised over those frames. Then
    ``Z = median_filter((A - mean_i A) / std_i A)``, ``M[k] = mean_h Z[:, p - 1 + k]`` for text
    token ``k`` (``p`` = prefix length: position ``p - 1 + k`` is the one that *predicts* token
    ``k``; taking the row of token ``k`` itself makes every word ~120 ms late), and the
    token -> frame path is ``DTW(-M)``. Word ``k`` starts at ``f_first(k) * 20 ms`` (first path frame of its first
    token) and ends at the next word's start (the last word: at its last path frame + 20 ms),
    clipped to the clip; then :func:`snap_to_pauses` (the text has no token for a pause, so DTW
    hands the pause to the next word). Words are the whitespace-separated words of ``text``
    without punctuation, as in :func:`ctxmix_lite.corpus.synth.tokenize`.
    """
    import torch

    from .synth import tokenize

    words = [w for w, _ in tokenize(text)]
    if not words:
        raise H.HomophonyDataError(f"no word to align in {text!r}")
    tok = processor.tokenizer
    dur = len(audio) / H.SAMPLE_RATE
    n_frames = max(1, min(1500, int(math.ceil(dur / FRAME_SECONDS))))
    # tokens word by word, so that we know which tokens make which word
    word_tokens = [tok.encode(" " + w, add_special_tokens=False) for w in words]
    prefix = tok.convert_tokens_to_ids(["<|startoftranscript|>", f"<|{language}|>",
                                        "<|transcribe|>", "<|notimestamps|>"])
    text_ids = [t for ws in word_tokens for t in ws]
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    ids = torch.tensor([prefix + text_ids + [eot]])
    feats = processor.feature_extractor(audio, sampling_rate=H.SAMPLE_RATE,
                                        return_tensors="pt").input_features
    with torch.no_grad():
        out = model(input_features=feats.to(model.device, model.dtype),
                    decoder_input_ids=ids.to(model.device), output_attentions=True)
    cross = out.cross_attentions
    if not cross or cross[0] is None or cross[0].numel() == 0:
        raise RuntimeError("the model returned no cross-attention weights: load it with eager "
                           "attention (ctxmix_lite.models.load_model does)")
    heads = _alignment_heads(model)
    A = torch.stack([cross[l][0, h] for l, h in heads]).float().cpu().numpy()  # [H, T, 1500]
    A = A[:, :, :n_frames]
    A = A / (A.sum(axis=-1, keepdims=True) + 1e-12)  # attention over the clip's frames only
    Z = (A - A.mean(axis=1, keepdims=True)) / (A.std(axis=1, keepdims=True) + 1e-8)
    Z = _median_filter(Z, medfilt_width)
    # the row of decoder position i is the one that *predicts* token i+1: text token k is
    # predicted at position len(prefix) - 1 + k
    M = Z.mean(axis=0)[len(prefix) - 1: len(prefix) - 1 + len(text_ids)]
    ti, fj = _dtw(-M.astype(np.float64))
    first_frame = np.full(len(text_ids), -1)
    last_frame = np.full(len(text_ids), -1)
    for t, f in zip(ti, fj):
        if first_frame[t] < 0:
            first_frame[t] = f
        last_frame[t] = f
    bounds, k = [], 0
    for ws in word_tokens:
        bounds.append((k, k + len(ws)))
        k += len(ws)
    starts = [first_frame[a] * FRAME_SECONDS for a, _ in bounds]
    out_words = []
    for i, (w, (a, b)) in enumerate(zip(words, bounds)):
        s = starts[i]
        e = starts[i + 1] if i + 1 < len(words) else (last_frame[b - 1] + 1) * FRAME_SECONDS
        s, e = min(max(s, 0.0), dur), min(max(e, s), dur)
        out_words.append({"start": float(s), "end": float(e), "word": w})
    if snap_pauses:
        out_words = snap_to_pauses(out_words, audio)
        for w in out_words:
            w["start"], w["end"] = float(min(w["start"], dur)), float(min(max(w["end"],
                                                                                w["start"]), dur))
    return out_words


# ---------------------------------------------------------------------------------------------
# importer
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CommonVoiceImport(Options):
    """The settings of :func:`import_common_voice` (its defaults live here).

    split: the TSV to read (``"test"``, ``"validated"``...; default: ``validated.tsv``, else
    ``test.tsv``). max_items: stop after this many items (rows are read in file order).
    out_dir: if given, the data set is also saved there (``save_to_disk``) with ``report.json``.
    progress: show a progress bar."""

    split: Optional[str] = None
    max_items: Optional[int] = None
    out_dir: Any = None
    progress: bool = True


def import_common_voice(folder, model=None, processor=None,
                        aligner: Optional[Callable[[np.ndarray, str], List[dict]]] = None,
                        options: Optional[CommonVoiceImport] = None, **settings):
    """Import a local Common Voice French release into the homophony schema.

    folder: the release's language folder (``.../fr``) with ``validated.tsv`` or ``test.tsv``
    (``split`` picks another, e.g. ``"test"``) and ``clips/``.
    aligner: ``f(audio16k, sentence) -> [{start, end, word}]``; default :func:`whisper_align`
    with the offline Whisper-base (``model``/``processor`` or loaded here).
    settings: the fields of :class:`CommonVoiceImport` (``split``, ``max_items``, ``out_dir``,
    ``progress``; or pass ``options=``).
    Returns ``(datasets.Dataset, report)``; the report counts every skipped row by reason.
    """
    o = CommonVoiceImport.resolve(options, settings, where="import_common_voice")
    split, max_items, out_dir, progress = o.split, o.max_items, o.out_dir, o.progress
    from tqdm.auto import tqdm

    from .audio import load_audio

    folder = Path(folder)
    tsv = find_tsv(folder, split)
    rows, skipped, examples = read_tsv(tsv)
    if aligner is None:
        if model is None or processor is None:
            model, processor = H.default_model()
        aligner = lambda a, s: whisper_align(model, processor, a, s)  # noqa: E731
    items = []
    counts_match = Counter()
    for row in tqdm(rows, desc="common voice", disable=not progress):
        if max_items is not None and len(items) >= max_items:
            break
        sentence = row["sentence"].strip()
        from .synth import tokenize

        words = [w for w, _ in tokenize(sentence)]
        matches = find_matches(words)
        if not matches:
            skipped["no_template_match"] += 1
            continue
        clip = folder / "clips" / row["path"]
        if not clip.is_file():
            skipped["clip_missing"] += 1
            examples.setdefault("clip_missing", str(clip))
            continue
        try:
            audio = load_audio(str(clip))
        except Exception as err:  # missing, corrupt, silent...
            skipped["clip_unreadable"] += 1
            examples.setdefault("clip_unreadable", f"{row['path']}: {err}")
            continue
        try:
            al = aligner(audio, sentence)
        except Exception as err:
            skipped["alignment_failed"] += 1
            examples.setdefault("alignment_failed", f"{row['path']}: {err}")
            continue
        if [H.norm_word(w["word"]) for w in al] != [H.norm_word(w) for w in words]:
            skipped["alignment_words_differ"] += 1
            examples.setdefault("alignment_words_differ", row["path"])
            continue
        stem = os.path.splitext(row["path"])[0]
        for m in matches:
            counts_match[m.template] += 1
            item = {
                "item_id": f"cv-{stem}-{m.cue_index}",
                "audio": {"array": audio, "sampling_rate": H.SAMPLE_RATE, "path": str(clip)},
                "transcription": sentence,
                "cue_word": words[m.cue_index], "target_word": words[m.target_index],
                "target_word_2": words[m.target_index_2] if m.target_index_2 >= 0 else "",
                "alignment": al, "template": m.template, "label": m.label,
                "voice": f"cv:{row.get('client_id', '')[:16]}",
                "pair_id": f"cv-{stem}-{m.cue_index}",
                "cue_index": m.cue_index, "target_index": m.target_index,
                "target_index_2": m.target_index_2,
                "cue_distance": m.target_index - m.cue_index,
                "cue_token_distance": H.token_distance(sentence, words, m.cue_index,
                                                       m.target_index),
                "whisper_ok": None, "phones": [],
            }
            try:
                H.check_item(item, duration=len(audio) / H.SAMPLE_RATE)
            except H.HomophonyDataError as err:
                reason = ("alignment_outside_clip" if "outside" in str(err) else
                          "cue_after_target" if "before the target" in str(err) else
                          "item_invalid")
                skipped[reason] += 1
                examples.setdefault(reason, f"{row['path']}: {err}")
                continue
            items.append(item)
    report = {"source": str(tsv), "rows_read": len(rows), "items": len(items),
              "matches": dict(counts_match), "skipped": dict(sorted(skipped.items())),
              "skipped_examples": examples,
              "counts": H.report_counts(items) if items else {}}
    if not items:
        raise CommonVoiceError(f"no usable item in {tsv}: {dict(skipped)}")
    ds = H.to_dataset(items)
    if out_dir is not None:
        import json

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        ds.save_to_disk(str(out / "dataset"))
        (out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    return ds, report


def write_common_voice_folder(folder, items: Sequence[dict], split: str = "test",
                              sample_rate: int = 48000, fmt: str = "mp3") -> Path:
    """Write clips + ``<split>.tsv`` in Common Voice's exact layout (used by the tests, and to try
    the importer without a download). ``items``: dicts with ``audio`` (16 kHz array) and
    ``sentence``, optional ``client_id``; clips are ``common_voice_fr_<n>.mp3`` at 48 kHz."""
    import librosa
    import soundfile as sf

    folder = Path(folder)
    (folder / "clips").mkdir(parents=True, exist_ok=True)
    header = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender",
              "accents", "variant", "locale", "segment"]
    lines = ["\t".join(header)]
    for k, it in enumerate(items):
        name = f"common_voice_fr_{3000000 + k}.{fmt}"
        y = librosa.resample(np.asarray(it["audio"], np.float32), orig_sr=H.SAMPLE_RATE,
                             target_sr=sample_rate)
        sf.write(str(folder / "clips" / name), y, sample_rate,
                 format=fmt.upper(), **({"subtype": "MPEG_LAYER_III"} if fmt == "mp3" else {}))
        lines.append("\t".join([it.get("client_id", f"{k:064x}"), name, it["sentence"], "2", "0",
                                "", "", "", "", "fr", ""]))
    (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder
