"""The study's summaries and figures, and the comparison with the paper.

Part of the homophony study (:mod:`ctxmix_lite.study`)."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from ctxmix_lite.measures.registry import MEASURE_LABELS, MEASURES
from .core import summarize
from .runs import COMPONENT_LABELS, DECODER_DEFINITIONS, DISTANCE_GROUPS, ModelRun


# ================================================================================================
# figures and the comparison with the paper
# ================================================================================================
def layer_measure_matrix(summary, model_label: str, component: str, measures: Sequence[str] = MEASURES):
    """``[L, len(measures)]`` mean cue contribution (layers 1..L) of one model and component."""
    s = summary[(summary["model_label"] == model_label) & (summary["component"] == component)]
    if s.empty:
        raise ValueError(f"no results for {model_label!r} / {component!r}; have "
                         f"{sorted(set(zip(summary['model_label'], summary['component'])))}")
    piv = s.pivot_table(index="layer", columns="measure", values="mean").sort_index()
    return piv.reindex(columns=list(measures)).to_numpy(), list(piv.index)


def plot_cue_panels(summary, panels: Sequence, ncols: Optional[int] = None, vmax: Optional[float] = None,
                    suptitle: Optional[str] = None, cmap: str = "Blues"):
    """One layer x measure heatmap of mean cue contribution per panel, ``panels`` = list of
    ``(model_label, component)`` (or ``(model_label, component, title)``); shared colour scale."""
    import matplotlib.pyplot as plt

    from ctxmix_lite.viz.plotting import plot_layer_heatmap

    mats = []
    for p in panels:
        m, layers = layer_measure_matrix(summary, p[0], p[1])
        mats.append((p, m, layers))
    vmax = vmax if vmax is not None else max(float(np.nanmax(m)) for _, m, _ in mats)
    ncols = ncols or len(panels)
    nrows = int(np.ceil(len(panels) / ncols))
    height = max(3.2, 0.32 * max(len(l) for _, _, l in mats) + 1.6)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, height * nrows), squeeze=False)
    for ax, (p, m, layers) in zip(axes.flat, mats):
        title = p[2] if len(p) > 2 else f"{p[0]}\n{COMPONENT_LABELS.get(p[1], p[1])}"
        plot_layer_heatmap(m, [MEASURE_LABELS[x] for x in MEASURES], layer_labels=layers, title=title, ax=ax,
                           vmin=0.0, vmax=vmax, cmap=cmap, annotate=len(layers) <= 12,
                           colorbar_label="cue contribution")
    for ax in list(axes.flat)[len(mats):]:
        ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle)
        fig.tight_layout(rect=(0, 0, 1, 0.96))
    else:
        fig.tight_layout()
    return fig


def plot_template_breakdown(table, model_labels: Sequence[str], component: str, measure: str = "value_zeroing"):
    """Cue contribution per layer and template (mean +- 95 % CI over items), one panel per model."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(model_labels), figsize=(4.6 * len(model_labels), 3.4), squeeze=False, sharey=True)
    for ax, label in zip(axes[0], model_labels):
        t = table[(table["model_label"] == label) & (table["component"] == component) & (table["measure"] == measure)]
        t = t.assign(template_use=np.where(t["use"] == "main", t["template"], t["template"] + " (" + t["use"] + ")"))
        s = summarize(t, by=("template_use", "layer"))
        for tpl, g in s.groupby("template_use"):
            ax.errorbar(g["layer"], g["mean"], yerr=g["ci95"], marker="o", ms=3, capsize=2,
                        label=f"{tpl} (n={int(g['n'].max())})")
        ax.set_title(f"{label}\n{COMPONENT_LABELS.get(component, component)}, {MEASURE_LABELS[measure]}")
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("cue contribution (share)")
    axes[0, -1].legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_by_distance(table, model_labels: Sequence[str], components: Sequence[str] = ("encoder", "cross", "decoder"),
                     measure: str = "value_zeroing", title: Optional[str] = None):
    """Cue contribution per layer (mean +- 95 % CI over items), adjacent vs non-adjacent cues: one
    panel per component, one line style per model and distance group."""
    import matplotlib.pyplot as plt

    t = table[table["measure"] == measure]
    comps = [c for c in components if c in set(t["component"])]
    if not comps:
        raise ValueError(f"no {measure} rows for components {list(components)}")
    fig, axes = plt.subplots(1, len(comps), figsize=(4.6 * len(comps), 3.6), squeeze=False, sharey=True)
    styles = {DISTANCE_GROUPS[0]: "-", DISTANCE_GROUPS[1]: "--"}
    for ax, comp in zip(axes[0], comps):
        for ci, label in enumerate(model_labels):
            g0 = t[(t["component"] == comp) & (t["model_label"] == label)]
            if g0.empty:
                continue
            s = summarize(g0, by=("distance_group", "layer"))
            for grp, g in s.groupby("distance_group"):
                ax.errorbar(g["layer"], g["mean"], yerr=g["ci95"], marker="o", ms=3, capsize=2,
                            ls=styles.get(grp, ":"), color=f"C{ci}", label=f"{label}, {grp} (n={int(g['n'].max())})")
        ax.set_title(f"{COMPONENT_LABELS.get(comp, comp)}, {MEASURE_LABELS[measure]}")
        ax.set_xlabel("layer (1-based)")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("cue contribution (share)")
    axes[0, -1].legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_decoder_definitions(variants, model_labels: Sequence[str], measure: str = "value_zeroing"):
    """The decoder's cue contribution per layer under each definition (:data:`DECODER_DEFINITIONS`),
    one panel per model: the paper's first, the variants beside it."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(model_labels), figsize=(4.6 * len(model_labels), 3.4), squeeze=False, sharey=True)
    for ax, label in zip(axes[0], model_labels):
        t = variants[(variants["model_label"] == label) & (variants["measure"] == measure)]
        s = summarize(t, by=("definition", "layer"))
        for k, d in enumerate(DECODER_DEFINITIONS):
            g = s[s["definition"] == d]
            if len(g):
                ax.errorbar(g["layer"], g["mean"], yerr=g["ci95"], marker="o", ms=3, capsize=2, color=f"C{k}",
                            lw=2.5 if d == "paper" else 1.2, label=d + (" (default)" if d == "paper" else ""))
        ax.set_title(f"{label}\ndecoder, {MEASURE_LABELS[measure]}")
        ax.set_xlabel("layer (1-based)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("cue contribution (share)")
    axes[0, -1].legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def _rise(summary, label, component, measure="value_zeroing"):
    """Upper-half minus lower-half mean cue contribution (a rise in upper layers is > 0)."""
    m, layers = layer_measure_matrix(summary, label, component, (measure,))
    v = m[:, 0]
    h = len(v) // 2
    return float(v[h:].mean() - v[:h].mean()), v


def paper_comparison(summary, runs: Sequence[ModelRun], probe_results=None, decoder_definition: str = "paper") -> "object":
    """The paper's reported findings beside ours (``pandas.DataFrame``: finding, paper, ours, verdict,
    why). Value Zeroing is the reference measure, as in the paper. ``probe_results``: optional
    tidy probe table (:func:`ctxmix_lite.study.probe.probe_layers` rows with ``model_label``,
    ``component``) for the probe findings. ``decoder_definition``: the definition of the
    summary's decoder rows (``StudyResult.options.decoder_definition``), named in ``ours``."""
    import pandas as pd

    labels = {r.label: r for r in runs}
    have = set(summary["model_label"])
    rows = []
    why_synth = ("offline items are synthetic MBROLA voices with exact homophony and clean word times; "
                 "Common Voice speech is varied and noisier")
    enc_only_trained = [l for l, r in labels.items() if l in have and r.init == "trained" and "whisper" not in r.name]
    enc_only_random = [l for l, r in labels.items() if l in have and r.init == "random" and "whisper" not in r.name]
    w_tr = [l for l, r in labels.items() if l in have and r.init == "trained" and "whisper" in r.name]
    w_rd = [l for l, r in labels.items() if l in have and r.init == "random" and "whisper" in r.name]

    if enc_only_trained:
        d, v = _rise(summary, enc_only_trained[0], "encoder")
        rows.append(dict(finding="encoder-only ASR model: cue contribution rises in upper layers",
                         paper="yes (XLSR-53 French, Value Zeroing)", ours=f"upper - lower half = {d:+.3f}",
                         verdict="agree" if d > 0 else "differ", why=why_synth))
    else:
        rows.append(dict(finding="encoder-only ASR model: cue contribution rises in upper layers",
                         paper="yes (XLSR-53 French, Value Zeroing)", ours="not measured offline",
                         verdict="not testable", why="the trained French XLSR checkpoint needs the hub (HUB=True)"))
    for l in enc_only_random + w_rd:
        comp = "encoder"
        d, v = _rise(summary, l, comp)
        rows.append(dict(finding=f"random init ({l}): no rise of cue contribution",
                         paper="no rise (random baselines flat)", ours=f"upper - lower half = {d:+.3f}",
                         verdict="agree" if d <= 0.02 else "differ",
                         why="random layers mix by position/energy only; flat or falling is expected"))
    for l in w_tr:
        means = {}
        for comp in ("encoder", "cross", "decoder"):
            try:
                m, _ = layer_measure_matrix(summary, l, comp, ("value_zeroing",))
                means[comp] = float(np.nanmean(m))
            except ValueError:
                pass
        if means:
            top = max(means, key=means.get)
            rows.append(dict(finding=f"Whisper ({l}): most cue -> target mixing happens in the decoder",
                             paper="yes (decoder >> encoder; Whisper-medium)",
                             ours=", ".join(f"{k} {v:.3f}" for k, v in means.items()) + f" (decoder: {decoder_definition})",
                             verdict="agree" if top == "decoder" else "differ",
                             why="Whisper-base (6+6 layers) instead of medium (24+24); the decoder row that predicts "
                                 "the target is the cue token itself when the cue directly precedes the target"))
        d, v = _rise(summary, l, "encoder")
        rows.append(dict(finding=f"Whisper encoder ({l}): little cue information, weak rise",
                         paper="weak in the encoder compared with XLSR", ours=f"upper - lower half = {d:+.3f}, max {v.max():.3f}",
                         verdict="agree" if v.max() < 0.35 else "differ", why=why_synth))
    if w_tr and w_rd:
        a = float(np.nanmean(layer_measure_matrix(summary, w_tr[0], "decoder", ("value_zeroing",))[0]))
        b = float(np.nanmean(layer_measure_matrix(summary, w_rd[0], "decoder", ("value_zeroing",))[0]))
        rows.append(dict(finding="trained vs random Whisper decoder", paper="trained decoder reads the cue more",
                         ours=f"trained {a:.3f} vs random {b:.3f} (decoder: {decoder_definition})", verdict="agree" if a > b else "differ",
                         why="a random causal decoder spreads its mass over the few preceding tokens"))
    if probe_results is not None and len(probe_results):
        pr = probe_results
        for comp in ("encoder", "decoder"):
            for l in w_tr + enc_only_trained:
                t = pr[(pr["model_label"] == l) & (pr["component"] == comp)]
                if t.empty:
                    continue
                best = float(t["accuracy"].max())
                last = float(t.sort_values("layer")["accuracy"].iloc[-1])
                paper = "near ceiling" if comp == "decoder" else "number decodable from upper layers"
                if "whisper-base" in l:  # the paper's own Whisper-base curve, read from its Fig. 4
                    from .probe import PAPER_FIG4_WHISPER_BASE

                    curve = PAPER_FIG4_WHISPER_BASE[(comp, "trained")]
                    read = [v for v in curve if not math.isnan(v)]
                    tail = "layers 4-6 hidden in the figure" if math.isnan(curve[-1]) else f"last layer {curve[-1]:.2f}"
                    paper += f" (Whisper-base, read from Fig. 4: best {max(read):.2f}, {tail})"
                ok = best > 0.9 if comp == "decoder" else last > 0.65
                rows.append(dict(finding=f"probe, {l} {comp}", paper=paper, ours=f"best {best:.2f}, last layer {last:.2f}",
                                 verdict="agree" if ok else "differ", why=why_synth))
    return pd.DataFrame(rows, columns=["finding", "paper", "ours", "verdict", "why"])


