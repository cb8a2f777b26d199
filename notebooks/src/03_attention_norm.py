# %%
# Set-up (the same cell opens every notebook; notebook 00 explains it). On Google Colab it fetches
# the course at the ref below and installs it, step by step with timings: ~2-3 min the first time
# in a runtime, seconds afterwards. On your own machine (`make lab`, `make run`) it only makes
# `ctxmix_lite` importable. Another version: run `%env CTXMIX_REF=<tag, branch or commit>` before
# this cell; a fork: `%env CTXMIX_REPO=https://github.com/...`.
import os, shutil, subprocess, sys, time

IN_COLAB = "google.colab" in sys.modules
if IN_COLAB:
    REPO = os.environ.get("CTXMIX_REPO", "https://github.com/ctxmix/ctxmix")
    REF = os.environ.get("CTXMIX_REF", "main")
    REPO_DIR = os.environ.get("CTXMIX_DIR", "/content/ctxmix")
    T0 = time.time()
    if os.path.isfile(os.path.join(REPO_DIR, "ctxmix_lite", "course", "colab.py")):
        print(f"[1/4] the course is already in {REPO_DIR} (an earlier notebook of this runtime fetched it)")
    else:
        print(f"[1/4] fetching the course: {REPO} @ {REF} -> {REPO_DIR} (~10 s) ...", flush=True)
        if os.path.exists(REPO_DIR):
            raise RuntimeError(f"{REPO_DIR} exists but holds no course: remove it, or choose another "
                               "folder with %env CTXMIX_DIR=...")
        try:  # init + fetch, not clone: works for a tag, a branch or a commit id
            for cmd in (["git", "init", "-q", REPO_DIR], ["git", "-C", REPO_DIR, "remote", "add", "origin", REPO],
                        ["git", "-C", REPO_DIR, "fetch", "-q", "--depth", "1", "origin", REF],
                        ["git", "-C", REPO_DIR, "checkout", "-q", "--detach", "FETCH_HEAD"]):
                subprocess.run(cmd, check=True)
        except subprocess.CalledProcessError as err:
            shutil.rmtree(REPO_DIR, ignore_errors=True)  # no half-fetched copy left behind
            raise RuntimeError(f"could not fetch '{REF}' from {REPO} ({err}). Check the address and "
                               "that the ref exists (a release tag, a branch or a commit id), or choose "
                               "another with %env CTXMIX_REF=... and run this cell again.") from None
        print(f"      done in {time.time() - T0:.0f} s", flush=True)
    if REPO_DIR not in sys.path:
        sys.path.insert(0, REPO_DIR)
    from ctxmix_lite.course.colab import colab_setup
    colab_setup(REPO_DIR, REF, T0)  # [2/4] pip  [3/4] voices (apt)  [4/4] caches; prints what it does
else:
    try:
        import ctxmix_lite
    except ImportError:  # a checkout that was not pip-installed: the package is one level up
        sys.path.insert(0, os.path.abspath(".."))


# %% [markdown]
# # 03 · Attention-Norm: weigh attention by what it moves
#
# *Context-Mixing in Speech Transformers* — **notebook 4 of 8** (`03_attention_norm`; previous: [02](02_attention_in_speech.ipynb), next: [04](04_value_zeroing.ipynb)).
# Terms: [glossary](GLOSSARY.md) · teaching it: [instructor's guide](INSTRUCTORS.md) (both in `notebooks/`).
#
# **Learning goals**
#
# - derive **[Attention-Norm](GLOSSARY.md#attention-norm)** (Kobayashi et al., 2020) from the multi-head attention equations of
#   notebook 01: the attention output of position $i$ is a sum of vectors sent by each position $j$,
#   and the measure is the length of that vector;
# - implement it, per head and summed over heads, and check it on real Whisper-base blocks
#   (encoder, causal decoder, cross-attention);
# - compute it efficiently for 1,500 frames (a Gram-matrix identity instead of a
#   `[Tq, Tk, D]` tensor);
# - compare it with attention on the same clips, at frame and word level, trained vs random: where
#   do the two disagree, and why?

# %% [markdown]
# ## What runs here (and how it differs from the paper)
#
# - **Whisper-base, trained** (offline weights) and **Whisper-base, random init**; the homophony
#   paper used Whisper-base, -small and -medium and two trained French XLSR-53 models (its
#   cue-contribution figures show Whisper-medium and XLSR-53); all but Whisper-base need the hub.
# - Sentences of the offline **synthetic French** set (espeak-ng + MBROLA voices).
# - Encoder maps are read on the frames of speech (Whisper pads every clip to 30 s); rows are
#   re-normalised over them for display and comparison.

# %% tags=["parameters"]
MODEL = "openai/whisper-base"  # trained model (offline weights)
N_CLIPS = 4        # sentences compared (SMOKE: 1)
SMOKE = False      # True: small sizes (what the automated tests run)
SOLUTIONS = False  # True: use the reference solution of the exercise
SEED = 0           # random-init model and choice of clips
DEVICE = "auto"    # "auto": CUDA when available, else CPU

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from ctxmix_lite.measures.attention_norm import attention_norm as library_attention_norm
from ctxmix_lite.course.speech_clips import (analyse_clip, clip_measures, load_clips, plot_map_with_audio,
                                          plot_word_matrix, word_map)
from ctxmix_lite.course.exercises import nb03, use_solution
from ctxmix_lite.models import load_model, resolve_device
from ctxmix_lite.course.paths import savefig
from ctxmix_lite.viz.plotting import layer_label, layer_options
from ctxmix_lite.viz.widgets import viewer

DEVICE = resolve_device(DEVICE)  # "auto" -> "cuda" or "cpu"
torch.manual_seed(SEED)
n_clips = 1 if SMOKE else N_CLIPS
clips = load_clips(n_clips, seed=SEED)
models = {"Whisper-base trained": load_model(MODEL, device=DEVICE),
          "Whisper-base random": load_model(MODEL, pretrained=False, seed=SEED, device=DEVICE)}
whisper, proc = models["Whisper-base trained"]
clip = clips[0]
data0, cap = analyse_clip(whisper, proc, clip, "Whisper-base trained",
                               components=("encoder", "decoder", "cross"), keep_capture=True)
print(f"{clip.text!r}: {clip.duration:.2f} s = {data0.n} encoder frames of speech; decoder tokens: {data0.tokens}")


# %% [markdown]
# ## 1. From the equations of notebook 01
#
# Multi-head attention for query position $i$ (notebook 01, section 2), with the output projection
# split into the column blocks $W_O^h = W_O[:, h d_h:(h+1) d_h]$ that read head $h$:
#
# $$\mathrm{MHA}(X)_i = \sum_h \text{head}_{h,i}\,(W_O^h)^\top + b_O
# = \sum_j \underbrace{\sum_h \alpha^h_{ij}\; v^h_j\,(W_O^h)^\top}_{f_i(x_j)} \;+\; b_O,
# \qquad v_j^h = x_j (W_V^h)^\top + b_V^h .$$
#
# The attention output is a **sum over source positions** $j$ of vectors $f_i(x_j)$ — what $j$
# sends to $i$ — plus a bias that no position owns. Attention looks at the weights $\alpha^h_{ij}$
# only; two positions with the same weight can send vectors of very different size.
# Kobayashi et al. (2020) score the pair by the length of what is sent:
#
# $$\mathrm{AN}_{ij} = \Big\lVert \sum_h \alpha^h_{ij}\, v^h_j (W_O^h)^\top \Big\rVert_2
# \qquad\text{and per head}\qquad
# \mathrm{AN}^h_{ij} = \big\lVert \alpha^h_{ij}\, v^h_j (W_O^h)^\top \big\rVert_2 = \alpha^h_{ij}\,\big\lVert v^h_j (W_O^h)^\top\big\rVert_2 .$$
#
# - The **value bias** $b_V$ is part of $v_j$: it is sent by $j$ with $j$'s weight, so it stays in.
# - The **output bias** $b_O$ does not depend on $j$: it is left out.
# - The head-summed score is the norm of the *sum* over heads (heads can cancel each other), not the
#   sum of the per-head norms.

# %% [markdown]
# ### Exercise 3.1 — Attention-Norm
#
# > **Difficulty** 🔴🔴🔴⚪⚪ · **Importance** 🔵🔵🔵🔵🔵 · **Time** ~20 min
#
# Write `attention_norm(weights, values, W_O, per_head=False)`:
# `weights [H, Tq, Tk]`, `values [H, Tk, d_h]` (bias included), `W_O [D, H·d_h]` (torch's
# `out_proj.weight`, `[out, in]`). Return `[Tq, Tk]`, or `[H, Tq, Tk]` with `per_head=True`.
# `torch.einsum` is the easiest way to write the sums. The check runs it on real blocks of
# Whisper-base (encoder, decoder, cross-attention), compares with the library's Gram-matrix
# formulation (section 2) within float32 tolerance, and tests that every score is $\ge 0$ and
# exactly 0 where no head attends.
#
# <details><summary>Hint 1 — a nudge</summary>
#
# Work from the right of the formula: first what each key $j$ sends through each head,
# $p^h_j = v^h_j (W_O^h)^\top$ (a `[H, Tk, D]` tensor), then weight it by $\alpha^h_{ij}$, sum over
# heads, and take the norm over $D$. Per head there is no sum, and
# $\lVert \alpha^h_{ij} p^h_j \rVert = \alpha^h_{ij} \lVert p^h_j \rVert$.
#
# </details>
# <details><summary>Hint 2 — closer</summary>
#
# $W_O^h$ is a block of **columns**: `W_O[:, h * d_h:(h + 1) * d_h]`, so
# `values[h] @ W_O[:, h * d_h:(h + 1) * d_h].T` is $p^h$ (`[Tk, D]`). The sum over heads without a
# `[H, Tq, Tk, D]` tensor: `torch.einsum("hik,hkd->ikd", weights, p)`.
#
# </details>
# <details><summary>Hint 3 — the key line</summary>
#
# `p = torch.stack([values[h] @ W_O[:, h*d_h:(h+1)*d_h].T for h in range(H)])`; per head
# `weights * p.norm(dim=-1)[:, None, :]`, else `torch.einsum("hik,hkd->ikd", weights, p).norm(dim=-1)`.
#
# </details>

# %%
def attention_norm(weights, values, W_O, per_head=False):
    # YOUR CODE HERE
    raise NotImplementedError


# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
# @title Solution — attention_norm (open it when you are stuck)
def attention_norm_solution(weights, values, W_O, per_head=False):
    H, Tk, d_h = values.shape
    # what key j sends through head h: p_j^h = v_j^h (W_O^h)^T, with W_O^h = W_O[:, h d_h:(h+1) d_h]
    p = torch.stack([values[h] @ W_O[:, h * d_h:(h + 1) * d_h].T for h in range(H)])  # [H, Tk, D]
    if per_head:
        return weights * p.norm(dim=-1)[:, None, :]  # AN^h_ij = alpha^h_ij ||p_j^h||              [H, Tq, Tk]
    f = torch.einsum("hik,hkd->ikd", weights, p)  # f_i(x_j) = sum_h alpha^h_ij p_j^h                [Tq, Tk, D]
    return f.norm(dim=-1)  # AN_ij = ||f_i(x_j)||_2: the norm of the sum over heads                 [Tq, Tk]


# %%
attention_norm = use_solution(attention_norm, attention_norm_solution, SOLUTIONS)
nb03.check_attention_norm(attention_norm, cap)

# %% [markdown]
# ## 2. 1,500 frames: the same numbers without a `[Tq, Tk, D]` tensor
#
# A direct implementation builds one $D$-vector per pair: $1500 \times 1500 \times 512$ floats
# = 4.6 GB for one Whisper encoder layer. Expand the squared norm instead. With
# $p^h_j = v^h_j (W_O^h)^\top$ and the small per-key Gram matrix $G_j[h, g] = \langle p^h_j, p^g_j\rangle$
# ($H \times H$):
#
# $$\mathrm{AN}_{ij}^2 = \Big\lVert \sum_h \alpha^h_{ij} p^h_j \Big\rVert^2
# = \sum_{h,g} \alpha^h_{ij}\, G_j[h,g]\, \alpha^g_{ij} ,$$
#
# $T_k H^2$ numbers for $G$ and $T_q T_k H^2$ operations, no $D$ in the big loop.
# `ctxmix_lite.measures.attention_norm.attention_norm(layer_capture)` does this ($G$ in float64). With fewer
# than $4H$ rows the $D$-vectors themselves are the cheaper way (the study's ~20 target frames), and
# it takes that form instead; both are tested against a per-head loop. Compare it with
# your function (on the first 60 query frames: a direct version needs 60 x 1500 x 512 floats
# already) and time both:

# %%
lc = cap["encoder"][1]
q = 60
t0 = time.perf_counter()
mine = attention_norm(lc.weights[:, :q], lc.values, lc.W_O)
t1 = time.perf_counter()
lib = library_attention_norm(lc, rows=list(range(q)))
t2 = time.perf_counter()
full = library_attention_norm(lc)
t3 = time.perf_counter()
print(f"max |yours - library| = {(mine - lib).abs().max():.2e} (scores up to {float(lib.max()):.2f})")
print(f"{q} rows: yours {t1 - t0:.2f} s, library {t2 - t1:.2f} s; all {full.shape[0]} rows with the library: {t3 - t2:.2f} s")

# %% [markdown]
# ## 3. Attention vs Attention-Norm on the same clip
#
# Frame level, head-summed Attention-Norm vs head-averaged attention, both rows re-normalised over the
# frames of speech. Look for columns that attention credits and Attention-Norm does not (and the
# reverse): those frames receive weight but send little (or much).

# %%
M0 = clip_measures(cap, data0.n, measures=("attention", "attention_norm"))
for layer in (0, 4):
    fig = plt.figure(figsize=(15, 7.5), constrained_layout=True)
    sub = fig.subfigures(1, 2)
    for sf, m, label in zip(sub, ("attention", "attention_norm"), ("Attention (mean over heads)", "Attention-Norm (summed over heads)")):
        plot_map_with_audio(M0["encoder"][m][layer], clip, data0.frame_duration, fig=sf,
                                 title=f"{label}, encoder {layer_label(layer)}", colorbar_label="share of the row")
    print("saved", savefig(fig, f"03_attention_vs_norm_layer{layer + 1}"))
    plt.show()

# %% [markdown]
# **Word level** (mean over the frames of each word, rows re-normalised over the words), for the
# encoder, the cross-attention and the decoder of the last layer:

# %%
last = len(cap["encoder"]) - 1
fig, axes = plt.subplots(2, 3, figsize=(18, 9.5), constrained_layout=True)
w = clip.word_labels
for row, m in enumerate(("attention", "attention_norm")):
    name = "Attention" if m == "attention" else "Attention-Norm"
    plot_word_matrix(word_map(data0, M0["encoder"][m][last], "encoder"), w, w, ax=axes[row, 0],
                          title=f"{name}: encoder layer {last + 1}")
    plot_word_matrix(word_map(data0, M0["cross"][m][last], "cross"), data0.tokens, w, ax=axes[row, 1],
                          title=f"{name}: cross-attention layer {last + 1}", ylabel="decoder token")
    plot_word_matrix(M0["decoder"][m][last], data0.tokens, data0.tokens, ax=axes[row, 2],
                          title=f"{name}: decoder layer {last + 1}", xlabel="source token", ylabel="target token")
print("saved", savefig(fig, "03_word_level_attention_vs_norm"))
plt.show()

# %% [markdown]
# ## 4. How much do they agree, layer by layer?
#
# For every layer, the Spearman rank correlation between the attention map and the Attention-Norm
# map (speech frames; decoder: all tokens, cells $j \le i$ only), averaged over the clips; trained
# vs random. A value of 1 means Attention-Norm only re-weights without changing the order.

# %%
corr = {label: {c: [] for c in ("encoder", "decoder", "cross")} for label in models}
DATA = {}
for label, (m, p) in models.items():
    for k, c in enumerate(clips):
        d, cp = analyse_clip(m, p, c, label, components=("encoder", "decoder", "cross"), keep_capture=True)
        meas = clip_measures(cp, d.n, measures=("attention", "attention_norm"))
        d.extra.update(meas)
        DATA[(label, k)] = d
        for comp in corr[label]:
            A, N = meas[comp]["attention"], meas[comp]["attention_norm"]
            corr[label][comp].append([nb03.spearman(A[l], N[l], causal=comp == "decoder") for l in range(A.shape[0])])
        del cp
fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=True, constrained_layout=True)
for ax, comp in zip(axes, ("encoder", "decoder", "cross")):
    for label in models:
        r = np.array(corr[label][comp])
        ax.errorbar(np.arange(1, r.shape[1] + 1), r.mean(0), yerr=r.std(0), marker="o", capsize=3, label=label)
    ax.set_title(f"{comp}: Spearman(attention, Attention-Norm)")
    ax.set_xlabel("layer")
    ax.set_ylim(-0.1, 1.05)
axes[0].set_ylabel(f"rank correlation (mean ± sd over {len(clips)} clip(s))")
axes[0].legend()
print("saved", savefig(fig, "03_attention_norm_correlation_layers"))
plt.show()


# %% [markdown]
# What to look for (check it on your clips):
#
# - in the trained model the two rank cells much alike (on our clips ρ ≈ 0.95–0.99): *which*
#   frames a head reads decides most of the order, and the size of the value vectors re-weights
#   within it. The differences sit in the cells that carry the mass — compare the maps above
#   column by column;
# - in the random model they agree less (ρ ≈ 0.6–0.85): its attention is nearly uniform, so what
#   ranks the cells is mostly the size of the value vectors, which only Attention-Norm sees;
# - outside the crop shown here, Whisper's encoder sends a good part of its attention to frames
#   after the speech (notebook 02, section 5); Attention-Norm re-weights those too;
# - Attention-Norm still ignores the residual connection, the layer norms and the feed-forward
#   network: how much of position $i$'s new vector comes from itself? Notebook 04 answers with value
#   zeroing, which runs the whole layer.
#
# ## 5. Explore
#
# Clip, model, component, layer, head (or all heads: mean of attention / sum for Attention-Norm)
# and measure. Rows are re-normalised over the speech frames.

# %%
def show(clip, model, component, layer, head, measure):
    d = DATA[(model, clip)]
    M = d.extra[component]
    key = measure if head == "all" else measure + "_heads"
    mat = M[key][layer] if head == "all" else M[key][layer][head]
    name = {"attention": "Attention", "attention_norm": "Attention-Norm"}[measure]
    title = f"{model}: {name}, {component} {layer_label(layer)}, " + ("all heads" if head == "all" else f"head {head}")
    if component == "encoder":
        plot_map_with_audio(mat, d.clip, d.frame_duration, title=title, colorbar_label="share of the row")
    elif component == "cross":
        plot_word_matrix(word_map(d, mat, "cross"), d.tokens, d.clip.word_labels, title=title, ylabel="decoder token")
    else:
        plot_word_matrix(mat, d.tokens, d.tokens, title=title, xlabel="source token", ylabel="target token")


v = viewer(show, clip=range(len(clips)), model=list(models), component=["encoder", "decoder", "cross"],
           layer=layer_options(len(cap["encoder"])), head=["all"] + list(range(8)), measure=["attention", "attention_norm"])
if SMOKE:
    print("headless run of every option:", v.run_all(), "figures")
v

# %% [markdown]
# ## What's next
#
# Notebook 04 zeroes the value vectors of a position (or of a whole word), runs the **rest of the
# layer** — residual, layer norms, feed-forward — and measures how much each output changes (value
# zeroing, Mohebbi et al., 2023). You will write the slow, obviously right version, then derive the
# exact shortcut that makes it fast: its key ingredient is the vector $f_i(x_j)$ of this notebook.
#
# To think about:
#
# 1. Why leave $b_O$ out but keep $b_V$ in?
# 2. In a pre-LN layer the residual stream $x_i$ is added *after* attention, unnormalised. If
#    $\lVert x_i \rVert$ is large, how much can any $f_i(x_j)$ change position $i$?
