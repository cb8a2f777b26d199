"""Figures of the course: audio with its words, and labelled heatmaps.

* :func:`plot_waveform_words` -- waveform, time in seconds, word boundaries and labels.
* :func:`plot_spectrogram_words` -- log-mel spectrogram (Whisper's 25 ms / 10 ms framing, 80 bands)
  with the same word boundaries.
* :func:`plot_matrix` -- any 2-D array (attention map, contribution matrix, word x word table) with
  labelled axes and a labelled colour bar; :func:`mark_spans` draws word spans over frame axes.
* :func:`plot_layer_heatmap` -- layers (rows, first layer at the bottom) x columns (measures,
  components, words), every cell annotated: the figure type of the homophony study.

Every function draws on ``ax`` when given (else on a new figure) and returns the axes, so several
panels can be combined with ``plt.subplots``. Their drawing settings are typed options objects
(:class:`MatrixStyle`, :class:`LayerHeatmapStyle`, :class:`SpectrogramSettings`), given as keywords
(``plot_matrix(M, cmap="magma")``) or as the object (``options=MatrixStyle(cmap="magma")``). Save with :func:`ctxmix_lite.course.paths.savefig`.

**Layer names** (one convention for everything a learner reads: text, titles, axis labels,
printed tables, viewer controls).  Code indexes the Transformer layers of a stack from 0, as
Python lists do (``capture["encoder"][0]``); a learner reads them from 1: **"layer 1" is the first
Transformer layer** of its stack (encoder or decoder).  :func:`layer_label` turns an index into
that name and :func:`layer_options` builds ``("layer 1", 0), ...`` pairs for a viewer's dropdown.
Hidden *states* are counted differently: state ``l`` is the output of layer ``l`` and state 0 the
input to layer 1 (what ``output_hidden_states`` returns first; the probe of notebook 06 uses it);
:func:`state_label` names state 0 explicitly ``"input (0)"`` and state ``l >= 1`` ``"layer l"``.
Per-layer tables of the study (``study.summarize``) already carry 1-based layer numbers.

An *alignment* is a list of words with times in seconds: dicts ``{"start": s, "end": s, "word": w}``
(the data sets' format), ``(start, end, word)`` tuples, or objects with those attributes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ctxmix_lite.course.options import Options


def layer_label(index: int, component: Optional[str] = None) -> str:
    """Name of the Transformer layer at 0-based ``index``: ``"layer 1"`` for index 0 (with the
    component when given: ``"encoder layer 1"``)."""
    i = int(index)
    if i < 0:
        raise ValueError(f"layer index must be >= 0 (0 = the first layer), got {index}")
    return f"{component + ' ' if component else ''}layer {i + 1}"


def layer_options(n_layers: int) -> list:
    """``[("layer 1", 0), ..., ("layer n", n - 1)]``: a viewer dropdown with learner-facing names
    and 0-based values."""
    if int(n_layers) < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    return [(layer_label(i), i) for i in range(int(n_layers))]


def state_label(state: int) -> str:
    """Name of hidden state ``state`` (0 = the input to layer 1, ``l`` = the output of layer ``l``):
    ``"input (0)"`` or ``"layer l"``."""
    l = int(state)
    if l < 0:
        raise ValueError(f"hidden-state index must be >= 0, got {state}")
    return "input (0)" if l == 0 else f"layer {l}"


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _new_ax(ax, figsize):
    if ax is not None:
        return ax
    fig, ax = _plt().subplots(figsize=figsize)
    return ax


def _to_numpy(x, name="array") -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().float().numpy()
    arr = np.asarray(x)
    if arr.dtype == object:
        raise TypeError(f"{name} must be numeric, got an object array")
    return arr.astype(np.float64, copy=False)


def _audio(audio, sr) -> np.ndarray:
    arr = _to_numpy(audio, "audio")
    if arr.ndim != 1:
        raise ValueError(f"audio must be 1-D (mono samples), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("audio is empty")
    if not (isinstance(sr, (int, np.integer)) and sr > 0):
        raise ValueError(f"sampling rate must be a positive integer (Hz), got {sr!r}")
    return arr


def normalize_alignment(alignment) -> list:
    """Alignment as a list of ``(start, end, word)`` with float seconds; checks order and bounds."""
    if alignment is None:
        return []
    words = []
    for k, item in enumerate(alignment):
        if isinstance(item, dict):
            try:
                start, end, word = item["start"], item["end"], item["word"]
            except KeyError as err:
                raise ValueError(f"alignment entry {k} lacks key {err} (needs start, end, word)")
        elif isinstance(item, (tuple, list)) and len(item) == 3:
            start, end, word = item
        elif all(hasattr(item, a) for a in ("start", "end", "word")):
            start, end, word = item.start, item.end, item.word
        else:
            raise ValueError(f"alignment entry {k} must be a dict/tuple/object with start, end, "
                             f"word; got {item!r}")
        start, end = float(start), float(end)
        if not (np.isfinite(start) and np.isfinite(end)) or start < 0 or end < start:
            raise ValueError(f"alignment entry {k} ({word!r}) has invalid times "
                             f"start={start}, end={end} (need 0 <= start <= end)")
        words.append((start, end, str(word)))
    return words


def _draw_words(ax, words, duration, color, label_color, box):
    """Boundaries as vertical lines, word labels staggered on two rows at the top of the axes."""
    trans = ax.get_xaxis_transform()  # x in data (seconds), y in axes fraction
    for k, (start, end, word) in enumerate(words):
        ax.axvline(start, color=color, lw=0.9, ls="--", alpha=0.9)
        ax.axvline(end, color=color, lw=0.9, ls="--", alpha=0.9)
        y = 0.97 if k % 2 == 0 else 0.86
        ax.text((start + end) / 2, y, word, transform=trans, ha="center", va="top",
                fontsize=9, color=label_color, clip_on=True,
                bbox=dict(boxstyle="round,pad=0.15", fc=box, ec="none", alpha=0.75))
    ax.set_xlim(0, duration)


def plot_waveform_words(audio, sr: int, alignment=None, ax=None, title: Optional[str] = None):
    """Waveform (amplitude vs time in seconds) with word boundaries and labels."""
    y = _audio(audio, sr)
    words = normalize_alignment(alignment)
    ax = _new_ax(ax, (10, 2.6))
    t = np.arange(y.size) / sr
    ax.plot(t, y, lw=0.5, color="tab:blue")
    duration = y.size / sr
    _draw_words(ax, words, duration, color="0.35", label_color="black", box="white")
    peak = float(np.max(np.abs(y))) or 1.0
    ax.set_ylim(-1.25 * peak, 1.45 * peak)  # head room for the labels
    ax.set_xlabel("Time (s)")
    ax.set_ylabel("Amplitude")
    if title:
        ax.set_title(title)
    return ax


def mel_spectrogram_db(audio, sr: int, n_mels: int = 80, n_fft: int = 400, hop_length: int = 160,
                       fmax: Optional[float] = 8000.0) -> np.ndarray:
    """Log-mel spectrogram in dB (0 dB = loudest bin), ``[n_mels, frames]``.

    Defaults follow Whisper at 16 kHz: 25 ms windows (n_fft=400) every 10 ms (hop 160), 80 bands.
    """
    import librosa

    y = _audio(audio, sr).astype(np.float32)
    fmax = min(fmax or sr / 2, sr / 2)
    S = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop_length,
                                       n_mels=n_mels, fmax=fmax)
    return librosa.power_to_db(S, ref=np.max)


@dataclass(frozen=True)
class SpectrogramSettings(Options):
    """How :func:`plot_spectrogram_words` computes and draws the spectrogram (the framing of
    :func:`mel_spectrogram_db`, Whisper's by default), its colour bar and title."""

    n_mels: int = 80
    n_fft: int = 400
    hop_length: int = 160
    fmax: Optional[float] = 8000.0
    colorbar: bool = True
    title: Optional[str] = None


def plot_spectrogram_words(audio, sr: int, alignment=None, ax=None,
                           options: Optional[SpectrogramSettings] = None, **settings):
    """Log-mel spectrogram (time in seconds, frequency in Hz on a mel scale) with word boundaries.
    settings: the fields of :class:`SpectrogramSettings` (or pass ``options=``)."""
    import librosa.display

    o = SpectrogramSettings.resolve(options, settings, where="plot_spectrogram_words")
    n_mels, n_fft, hop_length, fmax, colorbar, title = o.n_mels, o.n_fft, o.hop_length, o.fmax, o.colorbar, o.title

    S_db = mel_spectrogram_db(audio, sr, n_mels=n_mels, n_fft=n_fft, hop_length=hop_length,
                              fmax=fmax)
    words = normalize_alignment(alignment)
    ax = _new_ax(ax, (10, 3.2))
    fmax = min(fmax or sr / 2, sr / 2)
    img = librosa.display.specshow(S_db, sr=sr, hop_length=hop_length, x_axis="time",
                                   y_axis="mel", fmax=fmax, ax=ax, cmap="magma")
    duration = _to_numpy(audio).size / sr
    _draw_words(ax, words, duration, color="white", label_color="black", box="white")
    ax.set_xlabel("Time (s)")
    ax.set_ylabel("Frequency (Hz, mel scale)")
    if colorbar:
        ax.figure.colorbar(img, ax=ax, format="%+.0f dB", pad=0.01).set_label("Power (dB)")
    if title:
        ax.set_title(title)
    return ax


def _set_ticks(ax, labels, n, axis):
    if labels is None:
        return
    labels = [str(x) for x in labels]
    if len(labels) != n:
        raise ValueError(f"{axis} labels: got {len(labels)} labels for {n} {axis}s")
    if axis == "row":
        ax.set_yticks(range(n))
        ax.set_yticklabels(labels)
    else:
        ax.set_xticks(range(n))
        rotate = n > 8 or max((len(s) for s in labels), default=0) > 6
        ax.set_xticklabels(labels, rotation=90 if rotate else 0)


@dataclass(frozen=True)
class MatrixStyle(Options):
    """How :func:`plot_matrix` draws a heatmap: axis labels, title, colour map and its range
    (``vmin`` / ``vmax``, default: the data's), the colour bar's label, and ``annotate`` (write
    each value in its cell with ``fmt``)."""

    xlabel: str = "key / source position j"
    ylabel: str = "query / target position i"
    title: Optional[str] = None
    cmap: str = "viridis"
    colorbar_label: str = "value"
    vmin: Optional[float] = None
    vmax: Optional[float] = None
    annotate: bool = False
    fmt: str = "{:.2f}"


@dataclass(frozen=True)
class LayerHeatmapStyle(MatrixStyle):
    """:class:`MatrixStyle` with the defaults of :func:`plot_layer_heatmap` (the study's figure)."""

    xlabel: str = ""
    ylabel: str = "Layer"
    cmap: str = "Blues"
    colorbar_label: str = "cue contribution"
    annotate: bool = True


def _draw_heatmap(ax, m, o: MatrixStyle, origin: str = "upper"):
    """``m`` on ``ax`` with the colour map and range of ``o`` (the image; ticks are the caller's)."""
    return ax.imshow(m, aspect="auto", origin=origin, interpolation="nearest", cmap=o.cmap, vmin=o.vmin, vmax=o.vmax)


def _finish_heatmap(ax, m, img, o: MatrixStyle):
    """Axis labels, title, colour bar and annotations of ``o`` on a heatmap drawn by :func:`_draw_heatmap`."""
    ax.set_xlabel(o.xlabel)
    ax.set_ylabel(o.ylabel)
    if o.title:
        ax.set_title(o.title)
    ax.figure.colorbar(img, ax=ax, pad=0.02).set_label(o.colorbar_label)
    if o.annotate:
        _annotate(ax, m, img, o.fmt)
    return ax


def plot_matrix(mat, row_labels: Optional[Sequence] = None, col_labels: Optional[Sequence] = None, ax=None,
                options: Optional[MatrixStyle] = None, **style):
    """Heatmap of a 2-D array (row i, column j) with labelled axes and colour bar.

    ``row_labels`` / ``col_labels`` (e.g. words) must match the shape. style: the fields of
    :class:`MatrixStyle` (``xlabel, ylabel, title, cmap, colorbar_label, vmin, vmax, annotate,
    fmt``; or pass ``options=``); ``annotate`` writes each value in its cell (for small word x
    word matrices).
    """
    o = MatrixStyle.resolve(options, style, where="plot_matrix")
    m = _to_numpy(mat, "mat")
    if m.ndim != 2:
        raise ValueError(f"plot_matrix needs a 2-D array, got shape {m.shape}")
    ax = _new_ax(ax, (5.5, 4.5))
    img = _draw_heatmap(ax, m, o)
    _set_ticks(ax, row_labels, m.shape[0], "row")
    _set_ticks(ax, col_labels, m.shape[1], "column")
    return _finish_heatmap(ax, m, img, o)


def _annotate(ax, m, img, fmt):
    norm = img.norm
    for (i, j), v in np.ndenumerate(m):
        if not np.isfinite(v):
            continue
        shade = norm(v) if norm.vmax != norm.vmin else 0.0
        ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=8,
                color="black" if shade > 0.6 else "white")


def mark_spans(ax, spans, labels: Optional[Sequence] = None, axis: str = "both",
               color: str = "white"):
    """Outline inclusive index spans ``(first, last)`` (e.g. the frames of each word) on a matrix
    drawn by :func:`plot_matrix`: lines at span edges, labels at span centres."""
    if axis not in ("x", "y", "both"):
        raise ValueError(f"axis must be 'x', 'y' or 'both', got {axis!r}")
    spans = [(int(a), int(b)) for a, b in spans]
    if labels is not None and len(labels) != len(spans):
        raise ValueError(f"{len(labels)} labels for {len(spans)} spans")
    for k, (a, b) in enumerate(spans):
        if b < a:
            raise ValueError(f"span {k} = ({a}, {b}) has last < first")
        for edge in (a - 0.5, b + 0.5):
            if axis in ("x", "both"):
                ax.axvline(edge, color=color, lw=0.6, alpha=0.8)
            if axis in ("y", "both"):
                ax.axhline(edge, color=color, lw=0.6, alpha=0.8)
    if labels is not None:
        centres = [(a + b) / 2 for a, b in spans]
        if axis in ("x", "both"):
            ax.set_xticks(centres)
            ax.set_xticklabels([str(s) for s in labels], rotation=90)
        if axis in ("y", "both"):
            ax.set_yticks(centres)
            ax.set_yticklabels([str(s) for s in labels])
    return ax


def plot_layer_heatmap(values, col_labels: Sequence, layer_labels: Optional[Sequence] = None, ax=None,
                       options: Optional[LayerHeatmapStyle] = None, **style):
    """Layers x columns heatmap, layer 1 at the bottom, each cell annotated.

    ``values``: ``[n_layers, n_cols]``; ``col_labels`` name the columns (measures, components...);
    ``layer_labels`` default to 1..n_layers. style: the fields of :class:`LayerHeatmapStyle` (the
    fields of :class:`MatrixStyle` with this figure's defaults; or pass ``options=``).
    """
    o = LayerHeatmapStyle.resolve(options, style, where="plot_layer_heatmap")
    m = _to_numpy(values, "values")
    if m.ndim != 2:
        raise ValueError(f"plot_layer_heatmap needs [layers, columns], got shape {m.shape}")
    n_layers, n_cols = m.shape
    if layer_labels is None:
        layer_labels = list(range(1, n_layers + 1))
    ax = _new_ax(ax, (1.2 + 1.1 * n_cols, 1.0 + 0.45 * n_layers))
    img = _draw_heatmap(ax, m, o, origin="lower")
    _set_ticks(ax, layer_labels, n_layers, "row")
    _set_ticks(ax, col_labels, n_cols, "column")
    return _finish_heatmap(ax, m, img, o)
