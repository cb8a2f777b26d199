"""Notebook 02 (attention in speech): its CAD exercise, check and mistake catalogue, and its own
tables and figures (CAD and locality per head, D(r) curves, head diversity trained vs random,
value-norm profile).

The clips notebooks 02-04 share (loading, one pass through a model, frame and word maps, their
figures) are :mod:`ctxmix_lite.course.speech_clips`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from ctxmix_lite.course.speech_clips import SR, Clip, ClipData, speech_frames
from ctxmix_lite.measures import patterns


# ----------------------------------------------------------------------------------------------
# per-head tables
# ----------------------------------------------------------------------------------------------
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
    :func:`ctxmix_lite.measures.patterns.cad` (which integrates D(r) in float64: an independent formulation
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
