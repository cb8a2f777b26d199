"""The short speech clips notebooks 02, 03 and 04 look at: loading them, one pass through a model,
the frames of speech, frame and word maps of every measure, and their two figures.

* :func:`load_clips` -- items of the offline synthetic French homophony set (audio + word times);
* :class:`ClipData` / :func:`analyse_clip` -- one clip through one model: the capture, the frames
  of speech, the word spans, and small cropped per-head attention maps kept for the viewers (a
  full Whisper capture holds ~0.5 GB, so it is dropped once what is needed is extracted);
* :func:`layer_measures` / :func:`clip_measures` -- every registry measure on the speech crop;
* :func:`word_map` -- frame maps pooled to words;
* figures: a frame map under the waveform (:func:`plot_map_with_audio`) and a word matrix
  (:func:`plot_word_matrix`).

Notebook 02's own exercise and figures (CAD, locality, head diversity) stay in
:mod:`ctxmix_lite.course.exercises.nb02`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from ctxmix_lite.corpus.audio import SAMPLE_RATE
from ctxmix_lite.course.options import Options
from ctxmix_lite.measures.pooling import word_level
from ctxmix_lite.measures.utils import normalize_rows

#: the clips' sampling rate (Hz)
SR = SAMPLE_RATE


@dataclass
class Clip:
    """One spoken sentence with its word times (seconds)."""

    audio: np.ndarray
    words: list  # [{"start", "end", "word"}]
    text: str
    item_id: str = ""
    cue_index: int = -1
    target_index: int = -1

    @property
    def duration(self) -> float:
        return len(self.audio) / SR

    @property
    def word_labels(self) -> list:
        return [w["word"] for w in self.words]


def load_clips(n: int, seed: int = 0, min_duration: float = 1.5) -> list:
    """``n`` clips of the offline synthetic homophony set (built on first use, then cached).

    The 24-item smoke build is used for ``n <= 24`` (seconds to build); otherwise a build of ``n``
    items.  Items are taken after a seeded shuffle, those of at least ``min_duration`` seconds
    first (longer sentences make clearer maps).
    """
    from ctxmix_lite.corpus.homophony import item_alignment, item_audio, load_homophony

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    ds = load_homophony("offline", smoke=True, progress=False) if n <= 24 else load_homophony("offline", n=n, progress=False)
    order = np.random.default_rng(seed).permutation(len(ds)).tolist()
    dur = [len(item_audio(ds[int(k)])) / SR for k in order]
    order = [k for k, d in zip(order, dur) if d >= min_duration] + [k for k, d in zip(order, dur) if d < min_duration]
    clips = []
    for k in order[:n]:
        it = ds[int(k)]
        clips.append(Clip(item_audio(it), item_alignment(it), it["transcription"], it.get("item_id", ""),
                          int(it.get("cue_index", -1)), int(it.get("target_index", -1))))
    return clips


def speech_frames(capture, margin: float = 0.1) -> int:
    """Number of encoder frames covering the speech (+ ``margin`` seconds), at most ``n_frames``."""
    n = math.ceil((capture.audio_duration + margin) / capture.frame_duration)
    return max(1, min(capture.n_frames, n))


def word_spans(capture, clip: Clip) -> list:
    """Inclusive encoder-frame span of every word of ``clip`` (the paper's ceil(F t / T) map)."""
    from ctxmix_lite.corpus.audio import words_to_frame_spans

    return words_to_frame_spans(clip.words, capture.n_frames, capture.window)


@dataclass
class ClipData:
    """What the notebooks keep of one clip through one model (small tensors only)."""

    clip: Clip
    model_label: str
    n: int  # encoder frames of speech (crop)
    frame_duration: float
    spans: list  # word frame spans (encoder)
    maps: dict = field(default_factory=dict)  # component -> [L, H, Tq', Tk'] cropped attention
    tokens: Optional[list] = None  # decoder token strings (decoder / cross rows)
    prefix_length: int = 0
    extra: dict = field(default_factory=dict)  # per-notebook additions (other measures)

    def crop_keys(self, component: str) -> int:
        return self.n if component in ("encoder", "cross") else len(self.tokens or [])


def analyse_clip(model, processor, clip: Clip, model_label: str, components=("encoder",), keep_capture=False,
                 margin: float = 0.1):
    """Capture ``clip`` (decoder teacher-forced on the clip's text) and keep cropped attention maps.

    Encoder maps are cropped to the frames of speech (queries and keys; rows re-normalised over
    them), cross-attention maps to those keys, decoder maps kept whole.  Returns ``ClipData`` (and
    the capture when ``keep_capture``).
    """
    from ctxmix_lite.internals.capture import capture as run_capture

    kw = {}
    if any(c in components for c in ("decoder", "cross")):
        kw["transcription"] = clip.text
    cap = run_capture(model, processor, clip.audio, components=list(components), sampling_rate=SR, **kw)
    n = speech_frames(cap, margin)
    data = ClipData(clip, model_label, n, cap.frame_duration, word_spans(cap, clip),
                    tokens=cap.decoder_token_strings, prefix_length=cap.prefix_length)
    for comp in components:
        maps = []
        for lc in cap[comp]:
            w = lc.weights
            if comp == "encoder":
                w = normalize_rows(w[:, :n, :n])
            elif comp == "cross":
                w = normalize_rows(w[:, :, :n])
            maps.append(w.clone())
        data.maps[comp] = torch.stack(maps)
    return (data, cap) if keep_capture else data


def word_map(data: ClipData, mat: torch.Tensor, component: str = "encoder", agg: str = "mean") -> torch.Tensor:
    """Frame-level ``[..., Tq, Tk]`` (cropped) -> word level over the clip's words.

    Encoder: rows and columns pooled over word frames; cross: columns only (rows are tokens);
    decoder: unchanged.
    """
    if component == "encoder":
        return word_level(mat, data.spans, data.spans, agg=agg)
    if component == "cross":
        return word_level(mat, None, data.spans, agg=agg)
    return mat


@dataclass(frozen=True)
class MapWithAudioStyle(Options):
    """The settings of :func:`plot_map_with_audio`."""

    title: str = ""
    colorbar_label: str = "attention"
    cmap: str = "viridis"
    vmax: Optional[float] = None  # None: the map's maximum (vmin is 0)


def plot_map_with_audio(mat, clip: Clip, frame_duration: float, fig=None,
                        options: Optional[MapWithAudioStyle] = None, **settings):
    """A frame-level map (queries x keys, cropped to the speech) under the clip's waveform; both axes
    in seconds, word boundaries dashed.  Returns the figure.

    settings: the fields of :class:`MapWithAudioStyle` (``title``, ``colorbar_label``, ``cmap``,
    ``vmax``), as keywords or ``options=``."""
    import matplotlib.pyplot as plt

    from ctxmix_lite.viz.plotting import plot_waveform_words

    o = MapWithAudioStyle.resolve(options, settings, where="plot_map_with_audio")
    title, colorbar_label, cmap, vmax = o.title, o.colorbar_label, o.cmap, o.vmax
    m = mat.detach().cpu().float().numpy() if hasattr(mat, "detach") else np.asarray(mat)
    n_q, n_k = m.shape
    if fig is None:
        fig = plt.figure(figsize=(7.5, 8.2), constrained_layout=True)
    gs = fig.add_gridspec(2, 1, height_ratios=[1, 3.6])
    ax_w = fig.add_subplot(gs[0])
    plot_waveform_words(clip.audio, SR, clip.words, ax=ax_w)
    ax_w.set_xlim(0, n_k * frame_duration)
    ax = fig.add_subplot(gs[1])
    img = ax.imshow(m, aspect="auto", origin="upper", interpolation="nearest", cmap=cmap, vmin=0, vmax=vmax,
                    extent=(0, n_k * frame_duration, n_q * frame_duration, 0))
    for w in clip.words:
        for t in (w["start"], w["end"]):
            ax.axvline(t, color="white", lw=0.5, ls="--", alpha=0.6)
            ax.axhline(t, color="white", lw=0.5, ls="--", alpha=0.6)
    ax.set_xlabel("key frame j (s)")
    ax.set_ylabel("query frame i (s)")
    ax.set_title(title)
    fig.colorbar(img, ax=[ax_w, ax], pad=0.01, shrink=0.6, location="right").set_label(colorbar_label)
    return fig


@dataclass(frozen=True)
class WordMatrixStyle(Options):
    """The settings of :func:`plot_word_matrix`."""

    title: str = ""
    colorbar_label: str = "share of the row"
    xlabel: str = "source word j"
    ylabel: str = "target word i"


def plot_word_matrix(mat, row_labels, col_labels, ax=None, options: Optional[WordMatrixStyle] = None, **settings):
    """Word x word (or token x word) matrix, annotated when small.

    settings: the fields of :class:`WordMatrixStyle` (``title``, ``colorbar_label``, ``xlabel``,
    ``ylabel``), as keywords or ``options=``."""
    from ctxmix_lite.viz.plotting import plot_matrix

    o = WordMatrixStyle.resolve(options, settings, where="plot_word_matrix")
    m = mat.detach().cpu().float() if hasattr(mat, "detach") else torch.as_tensor(mat)
    annotate = m.shape[0] * m.shape[1] <= 150
    return plot_matrix(m, row_labels=row_labels, col_labels=col_labels, title=o.title, ax=ax, annotate=annotate,
                       colorbar_label=o.colorbar_label, xlabel=o.xlabel, ylabel=o.ylabel, vmin=0)


MEASURE_NAMES = ("attention", "attention_norm", "value_zeroing", "alti")


def layer_measures(lc, component: str, n: int, measures=("attention", "attention_norm"), model=None) -> dict:
    """Frame-level matrices of one layer on the speech crop, rows re-normalised over the crop.

    Encoder: queries and keys = the first ``n`` frames; cross: all token rows, keys = the first
    ``n`` frames; decoder: all tokens.  Value zeroing zeroes one key at a time (spans of one frame)
    and only for the kept keys; ALTI needs ``model`` (its post-LN layer norm, if any).  Returns
    ``{measure: [R, C]}`` and, for attention and attention_norm, ``{measure + "_heads": [H, R, C]}``.
    """
    from ctxmix_lite.measures.decomposition import block_layer_norm
    from ctxmix_lite.measures.registry import layer_measure

    Tq, Tk = lc.weights.shape[1:]
    rows = list(range(min(n, Tq))) if component == "encoder" else None
    k = min(n, Tk) if component in ("encoder", "cross") else Tk
    out = {}
    for m in measures:
        if m not in MEASURE_NAMES:
            raise ValueError(f"unknown measure {m!r}; choose from {MEASURE_NAMES}")
        if m in ("attention", "attention_norm"):  # per head and over heads, cropped to the kept keys
            out[m + "_heads"] = normalize_rows(layer_measure(lc, m, rows=rows, per_head=True)[..., :k])
            # attention: the mean over heads; Attention-Norm: the norm of the sum over heads
            out[m] = normalize_rows(layer_measure(lc, m, rows=rows)[..., :k])
        elif m == "value_zeroing":
            spans = None if component == "decoder" else [(j, j) for j in range(k)]
            out[m] = layer_measure(lc, m, rows=rows, spans=spans)
        elif component != "cross":  # alti: no cross-attention form
            ln = block_layer_norm(model, component, lc.layer) if model is not None else None
            out[m] = layer_measure(lc, m, rows=rows, layer_norm=ln, keys=list(range(k)))
    return out


def clip_measures(capture, n: int, measures=("attention", "attention_norm"), components=None, model=None,
                  progress=False) -> dict:
    """:func:`layer_measures` for every layer of every component: ``{component: {measure: [L, ...]}}``."""
    comps = components or list(capture.components)
    res = {}
    for comp in comps:
        layers = capture[comp]
        it = layers
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(layers, desc=f"measures {comp}", leave=False)
        per = [layer_measures(lc, comp, n, measures, model=model) for lc in it]
        res[comp] = {key: torch.stack([p[key] for p in per]) for key in per[0]}
    return res
