"""Notebook 02 (attention in speech) -- and the helpers notebooks 03 and 04 share.

No exercise is checked in notebook 02; this module holds what its cells call so that no library
code is pasted into notebooks:

* :func:`load_clips` -- items of the offline synthetic French homophony set (audio + word times);
* :class:`ClipData` / :func:`analyse_clip` -- one clip through one model: the capture, the frames
  of speech, the word spans, and small cropped per-head attention maps kept for the viewers (a
  full Whisper capture holds ~0.5 GB, so it is dropped once what is needed is extracted);
* figures: an attention map with the waveform and word boundaries above it
  (:func:`plot_map_with_audio`), per-layer/per-head heatmaps (:func:`plot_heads_by_layer`), D(r);
* :func:`diversity_over_clips` -- the head-diversity table, trained vs random.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from ctxmix_lite.course.options import Options
from ctxmix_lite.measures import patterns
from ctxmix_lite.measures.utils import normalize_rows
from ctxmix_lite.measures.pooling import word_level

SR = 16000


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
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


def cad_table(data: ClipData, component: str = "encoder") -> torch.Tensor:
    """CAD of every head of every layer ``[L, H]`` on the (cropped) maps."""
    return patterns.cad(data.maps[component])


def locality_table(data: ClipData, component: str = "encoder", mass: float = 0.9) -> torch.Tensor:
    """Mean half-width (frames) of the band holding ``mass`` of each head's attention, ``[L, H]``."""
    return patterns.locality_band(data.maps[component], mass=mass)


def diversity_over_clips(model, processor, clips: Sequence[Clip], component: str = "encoder", progress=True) -> dict:
    """Head diversity (``patterns.head_diversity`` on the speech frames) averaged over clips.

    Returns ``{"per_layer": {key: [L]}, "total": {key: float}, "total_sd": {key: float}}``.
    """
    from ctxmix_lite.internals.capture import capture as run_capture

    it = clips
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(clips, desc="head diversity", leave=False)
    per_clip = []
    for clip in it:
        kw = {"transcription": clip.text} if component != "encoder" else {}
        cap = run_capture(model, processor, clip.audio, components=[component], sampling_rate=SR, **kw)
        valid = speech_frames(cap) if component == "encoder" else None
        per_clip.append(patterns.head_diversity(cap[component], valid=valid))
        del cap
    keys = patterns.DIVERSITY_KEYS
    per_layer = {k: np.mean([d["per_layer"][k] for d in per_clip], axis=0).tolist() for k in keys}
    totals = {k: [d["total"][k] for d in per_clip] for k in keys}
    return {"per_layer": per_layer, "total": {k: float(np.mean(v)) for k, v in totals.items()},
            "total_sd": {k: float(np.std(v)) for k, v in totals.items()}, "n_clips": len(per_clip)}


def diversity_markdown(results: dict, keys=("A", "Q", "K", "V", "A_js")) -> str:
    """A markdown table: one row per model, one column per distance (sum over layers, mean +- sd)."""
    names = {"A": "d^A (1-CKA)", "Q": "d^Q", "K": "d^K", "V": "d^V", "A_js": "d^A (JS)"}
    head = "| model | " + " | ".join(names[k] for k in keys) + " | ordering (1-CKA) |"
    lines = [head, "|" + "---|" * (len(keys) + 2)]
    for label, res in results.items():
        order = " > ".join(sorted(("A", "Q", "K", "V"), key=lambda k: -res["total"][k]))
        cells = " | ".join(f"{res['total'][k]:.2f} ± {res['total_sd'][k]:.2f}" for k in keys)
        lines.append(f"| {label} | {cells} | {order} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------
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


def plot_heads_by_layer(values, title: str, ax=None, colorbar_label: str = "CAD", cmap="magma", vmin=None, vmax=None):
    """``[L, H]`` per-head values (CAD, locality...) as a layer x head heatmap, layer 1 at the bottom."""
    from ctxmix_lite.viz.plotting import plot_layer_heatmap

    v = values.detach().cpu().float() if hasattr(values, "detach") else torch.as_tensor(values)
    L, H = v.shape
    return plot_layer_heatmap(v, col_labels=[str(h) for h in range(H)], title=title, ax=ax, xlabel="head",
                              colorbar_label=colorbar_label, cmap=cmap, vmin=vmin, vmax=vmax, annotate=H <= 12)


def plot_dr_curves(maps_by_layer, title: str, ax=None):
    """D(r) of the head-averaged map of every layer (``[L, H, T, T]``) with its CAD in the legend."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4))
    mean = maps_by_layer.mean(1)
    r, D = patterns.diagonality_curve(mean)
    cads = patterns.cad(mean)
    cmap = plt.get_cmap("viridis")
    L = mean.shape[0]
    for l in range(L):
        ax.plot(r.numpy(), D[l].numpy(), color=cmap(l / max(1, L - 1)), label=f"layer {l + 1} (CAD {float(cads[l]):.2f})")
    T = mean.shape[-1]
    _, Du = patterns.diagonality_curve(torch.full((T, T), 1.0 / T, dtype=torch.float64), r=r)
    ax.plot(r.numpy(), Du.numpy(), color="0.5", ls=":", lw=1.2, label="uniform attention (CAD 2/3)")
    ax.set_xlabel("band ratio r (|i - j| <= r (T - 1))")
    ax.set_ylabel("D(r): share of attention inside the band")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    return ax


def value_norm_profile(lc, n_show: int, n_speech: int) -> dict:
    """For one encoder LayerCapture: attention each key frame receives from the speech queries
    (head-averaged), and the size of what it sends, ``mean_h ||v_j^h W_O^h||`` -- over the first
    ``n_show`` frames (speech + some padding).  Also the share of the speech queries' attention
    that lands on frames after the speech (padding/silence)."""
    w = lc.weights[:, :n_speech]  # [H, n_speech, 1500]
    received = w.mean((0, 1))[:n_show]  # mean over heads and speech queries
    norms = lc.projected_values().norm(dim=-1).mean(0)[:n_show]  # [n_show]
    outside = float(w[:, :, n_speech:].sum(-1).mean())
    return {"received": received, "value_norm": norms, "outside_mass": outside}


# ----------------------------------------------------------------------------------------------
# exercise: cumulative attention diagonality
# ----------------------------------------------------------------------------------------------
def cad(A: torch.Tensor) -> torch.Tensor:
    """Reference of the check: CAD of every map in ``A [..., T, T]`` -> ``[...]`` float32, from
    :func:`ctxmix_lite.patterns.cad` (which integrates D(r) in float64: an independent formulation
    of the closed form the notebook's solution writes)."""
    return patterns.cad(A).to(torch.float32)


def _cad_wrong_T(A):  # 1 - k/T instead of 1 - k/(T-1)
    T = A.shape[-1]
    k = (torch.arange(T)[:, None] - torch.arange(T)[None]).abs().double()
    return ((A.double() * (1 - k / T)).sum((-1, -2)) / T).float()


def _cad_no_mean(A):  # forgot the 1/T
    T = A.shape[-1]
    k = (torch.arange(T)[:, None] - torch.arange(T)[None]).abs().double()
    return (A.double() * (1 - k / (T - 1))).sum((-1, -2)).float()


def _cad_diag_only(A):  # D(0) only
    return (torch.diagonal(A, dim1=-2, dim2=-1).sum(-1) / A.shape[-1]).float()


CAD_MISTAKES = [
    ("the band is |i - j| <= r (T - 1): the weight of offset k is 1 - k/(T - 1), not 1 - k/T.", _cad_wrong_T),
    ("divide by T: D(r) is the *average* over the T queries of the mass inside the band.", _cad_no_mean),
    ("that is D(0), the diagonal mass only; CAD integrates D(r) over r from 0 to 1.", _cad_diag_only),
]


def cad_cases(real_maps: Optional[torch.Tensor] = None) -> list:
    from ctxmix_lite.course.exercises import case

    g = torch.Generator().manual_seed(0)
    cases = [
        case(torch.eye(12), label="identity map (CAD = 1)"),
        case(torch.full((12, 12), 1.0 / 12), label="uniform attention (CAD = 2/3 - 1/(3T))"),
        case(torch.softmax(3 * torch.randn(4, 20, 20, generator=g), -1), label="4 random maps [4, 20, 20]"),
    ]
    if real_maps is not None:
        cases.append(case(real_maps.float(), label=f"real attention maps {list(real_maps.shape)}"))
    for c in cases:
        c.reference = cad
    return cases


# what every correct answer satisfies (maps with rows summing to 1)
CAD_INVARIANTS = [
    ("a CAD lies in [0, 1] (a weighted average of row sums that are 1, with weights 1 - |i - j|/(T - 1) "
     "in [0, 1])",
     lambda out, c: not bool(torch.isfinite(out).all()) or bool((out >= -1e-6).all() and (out <= 1 + 1e-5).all())),
]


def check_cad(fn, real_maps: Optional[torch.Tensor] = None, strict=None) -> bool:
    """``cad(A)`` for maps ``A [..., T, T]`` -> ``[...]`` float32; identity, uniform, random, real."""
    from ctxmix_lite.course.exercises import check_function
    from ctxmix_lite.course.exercises import diagnose_mistakes, mistake_hints

    cases = cad_cases(real_maps)
    found = diagnose_mistakes(fn, cases, CAD_MISTAKES)
    generic = {"shape": "one number per map: the result has shape A.shape[:-2] (a 0-d tensor for one map).",
               "value": "CAD = (1/T) sum_ij A[i, j] (1 - |i - j| / (T - 1)): build the |i - j| matrix "
                        "with torch.arange, weight, sum over the last two axes, divide by T."}
    return check_function(fn, cad, cases, "cad", atol=1e-5, rtol=1e-4, hints=mistake_hints(found, generic), strict=strict,
                          properties=CAD_INVARIANTS)


# ----------------------------------------------------------------------------------------------
# measures on the frames of speech (shared by notebooks 03 and 04)
# ----------------------------------------------------------------------------------------------
MEASURE_NAMES = ("attention", "attention_norm", "value_zeroing", "alti")


def layer_measures(lc, component: str, n: int, measures=("attention", "attention_norm"), model=None) -> dict:
    """Frame-level matrices of one layer on the speech crop, rows re-normalised over the crop.

    Encoder: queries and keys = the first ``n`` frames; cross: all token rows, keys = the first
    ``n`` frames; decoder: all tokens.  Value zeroing zeroes one key at a time (spans of one frame)
    and only for the kept keys; ALTI needs ``model`` (its post-LN layer norm, if any).  Returns
    ``{measure: [R, C]}`` and, for attention and attention_norm, ``{measure + "_heads": [H, R, C]}``.
    """
    from ctxmix_lite.measures.attention_norm import attention_norm
    from ctxmix_lite.measures.decomposition import alti, block_layer_norm
    from ctxmix_lite.measures.value_zeroing import value_zeroing

    Tq, Tk = lc.weights.shape[1:]
    rows = list(range(min(n, Tq))) if component == "encoder" else None
    k = min(n, Tk) if component in ("encoder", "cross") else Tk
    out = {}
    for m in measures:
        if m == "attention":
            w = lc.weights if rows is None else lc.weights[:, rows]
            heads = w[..., :k]
            out["attention_heads"] = normalize_rows(heads)
            out["attention"] = normalize_rows(heads.mean(0))
        elif m == "attention_norm":
            out["attention_norm_heads"] = normalize_rows(attention_norm(lc, per_head=True, rows=rows)[..., :k])
            out["attention_norm"] = normalize_rows(attention_norm(lc, rows=rows)[..., :k])
        elif m == "value_zeroing":
            spans = None if component == "decoder" else [(j, j) for j in range(k)]
            out["value_zeroing"] = value_zeroing(lc, rows=rows, spans=spans)
        elif m == "alti":
            if component == "cross":
                continue
            ln = block_layer_norm(model, component, lc.layer) if model is not None else None
            out["alti"] = alti(lc, ln, rows=rows, keys=list(range(k)))
        else:
            raise ValueError(f"unknown measure {m!r}; choose from {MEASURE_NAMES}")
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
