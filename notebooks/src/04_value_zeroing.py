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
# # 04 · Value zeroing: remove a position, measure the change
#
# *Context-Mixing in Speech Transformers* — **notebook 5 of 8** (`04_value_zeroing`; previous: [03](03_attention_norm.ipynb), next: [05](05_homophony_cue_contribution.ipynb)).
# Terms: [glossary](GLOSSARY.md) · teaching it: [instructor's guide](INSTRUCTORS.md) (both in `notebooks/`).
#
# **Learning goals**
#
# - define **[value zeroing](GLOSSARY.md#value-zeroing)** (Mohebbi et al., 2023): zero the value vectors of one position (or of
#   a whole word) in every head, keep the attention weights, run the rest of the layer — residual,
#   layer norms, feed-forward — and score each output by its cosine distance to the original;
# - zero the values yourself and re-run the layer from its captured pieces; see why the *values*
#   and not the inputs are zeroed;
# - implement the slow, obviously right version (one real layer re-run per zeroed position) and
#   check it on Whisper-base's encoder, decoder and cross-attention;
# - derive, write and verify the **exact fast identity** — zeroing $v_j$ shifts the attention output
#   by the very vector Attention-Norm measures — that turns 1,500 layer re-runs into one batched pass;
# - compare attention, Attention-Norm and value zeroing (and [ALTI](GLOSSARY.md#alti), a residual- and layer-norm-aware
#   decomposition) with rank correlations across layers, and follow mixing across layers with
#   **[rollout](GLOSSARY.md#rollout)**.

# %% [markdown]
# ## What runs here (and how it differs from the paper)
#
# - **Whisper-base, trained** (offline weights) and **random init**; the paper used Whisper-base,
#   -small and -medium and two trained French XLSR-53 models (hub) — all five in its probe (Fig. 4);
#   its cue-contribution figures show XLSR-53 and Whisper-medium.
# - Sentences of the offline **synthetic French** set (espeak-ng + MBROLA voices).
# - Encoder matrices are computed on the frames of speech: query rows are the speech frames and key
#   columns too (one zeroed frame each), rows normalised over them. The paper zeroes frames of the
#   whole 30 s window; padding frames are never read out there either.

# %% tags=["parameters"]
MODEL = "openai/whisper-base"  # trained model (offline weights)
N_CLIPS = 3        # sentences compared (SMOKE: 1)
SMOKE = False      # True: small sizes (what the automated tests run)
SOLUTIONS = False  # True: use the reference solution of the exercise
SEED = 0           # random-init model and choice of clips
DEVICE = "auto"    # "auto": CUDA when available, else CPU

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from ctxmix_lite.course.speech_clips import (SR, analyse_clip, clip_measures, load_clips,
                                          plot_map_with_audio, plot_word_matrix, word_map)
from ctxmix_lite.course.exercises import nb03, nb04, use_solution
from ctxmix_lite.models import load_model, resolve_device
from ctxmix_lite.course.paths import savefig
from ctxmix_lite.viz.plotting import layer_label, layer_options
from ctxmix_lite.measures.rollout import rollout, rollout_form, rollout_measure
from ctxmix_lite.measures.value_zeroing import value_zeroing
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
target = clip.target_index if clip.target_index >= 0 else len(clip.words) // 2
t_first, t_last = data0.spans[target]
target_rows = list(range(t_first, t_last + 1))
print(f"{clip.text!r}: target word {clip.words[target]['word']!r} = encoder frames {t_first}..{t_last}; "
      f"{len(data0.spans)} words; decoder tokens {data0.tokens}")

# %% [markdown]
# ## 1. The definition
#
# Attention-Norm (notebook 03) measures what position $j$ *sends* to $i$ through attention, but the
# layer does more: the residual connection adds $x_i$ itself, layer norms rescale, the feed-forward
# network transforms. Value zeroing asks the layer directly. For one layer, with its **original
# input** (nothing is propagated from earlier layers):
#
# 1. set $v_j^h \leftarrow 0$ for every head $h$ (after the value projection, bias included) —
#    the queries, keys and hence the attention weights $\alpha^h_{ij}$ stay as they were;
# 2. run the rest of the layer as the model does (and the model's final layer norm on its last
#    layer, where the model's output includes it): new outputs $\tilde x_i^{\neg j}$;
# 3. score $C_{ij} = 1 - \cos(\tilde x_i^{\neg j}, \tilde x_i)$ and normalise each row:
#    $C_{ij} \leftarrow C_{ij} / \sum_k C_{ik}$.
#
# A **span** column zeroes all the frames of a word at once. In the causal decoder only $j \le i$ is
# defined: zeroing a later token cannot change position $i$.
#
# ### Why the values, and not the inputs?
#
# Zeroing the layer's *input* $x_j$ would be the obvious way to "remove" position $j$, but it
# removes much more than what $j$ sends through attention:
#
# - $x_j$ also makes the **key** $k_j$, and every query's softmax runs over all keys: a new $k_j$
#   changes the weights $\alpha^h_{ik}$ of *every* column $k$ in the rows that read $j$ — the mixing
#   pattern itself moves, not just $j$'s share;
# - $x_j$ is the **residual** of position $j$: its own output $\tilde x_j$ is wrecked, whatever
#   attention does;
# - and $j$'s value does not even vanish: Whisper's layer norm maps $x_j = 0$ to its bias $\beta$, so
#   $v_j = \beta W_V + b_V \neq 0$ still sends something.
#
# Zeroing $v_j^h$ (after the value projection) removes exactly the term $\alpha^h_{ij} v^h_j$ of
# every head and leaves the weights, the other values and every residual as they were. What changes
# is then *only* what $i$ received from $j$ — the quantity a context-mixing measure wants. Below,
# both on encoder layer 2 for one frame $j$ of the word before the target (`input_vs_value_zeroing`
# zeroes the input with a hook on the model's layer and captures it again):

# %%
j_demo = data0.spans[max(0, target - 1)][0]            # first frame of the word before the target
demo = nb04.input_vs_value_zeroing(whisper, proc, clip.audio, 1, j_demo, target_rows, cap=cap, sampling_rate=SR)
print(f"zero the INPUT x_j (frame {j_demo}) of encoder {layer_label(1)}: attention weights outside column j change by up to "
      f"{demo['max_weight_change_other_columns']:.3f} (in {demo['rows_with_changed_weights']} of {demo['n_rows']} rows); "
      f"zeroing the VALUES keeps them all (by construction)")
for what, key in (("the output at j itself", "change_at_j"), ("the target word's outputs", "change_on_rows")):
    print(f"  relative change of {what:<27}: input zeroed {demo[key]['input']:.3f}, values zeroed {demo[key]['values']:.3f}")


# %% [markdown]
# How to read it: with the input zeroed, the weights of the rows that read $j$ move in *every*
# column and $j$'s own output is replaced wholesale. Elsewhere both changes can be of similar size
# (on our clip, the target word's rows) — but only the value-zeroed one is $j$'s contribution
# alone, measured with the mixing weights as the model used them.

# %% [markdown]
# ### Exercise 4.1 — zero the values and re-run the layer yourself
#
# > **Difficulty** 🔴🔴🔴⚪⚪ · **Importance** 🔵🔵🔵🔵🔵 · **Time** ~15–20 min
#
# Write `zeroed_output(cap, positions)` for one `LayerCapture` `cap`: the layer output `[Tq, D]`
# with the value vectors of the key positions `positions` set to 0 in every head. Use the captured
# pieces:
#
# - `cap.weights` `[H, Tq, Tk]`: the attention weights $\alpha^h_{ij}$ — they **stay as they are**;
# - `cap.values` `[H, Tk, dh]`: the value vectors $v^h_j$ (value bias included): set $v^h_j = 0$ for
#   $j$ in `positions`, every $h$ (work on a copy);
# - `cap.W_O` `[D, H·dh]` and `cap.b_O` (`None` when the model has no bias): the output projection,
#   $a_i = \mathrm{concat}_h\big(\textstyle\sum_j \alpha^h_{ij} v^h_j\big)\, W_O^\top + b_O$;
# - `cap.post(cap.resid, a)`: the rest of the layer (residual, layer norms, feed-forward — the
#   model's own modules).
#
# Do **not** call `cap.rerun`: that is the model's own layer run again with a hook that zeroes the
# output of `v_proj` — the check compares your function with it (and says so if you call it). The
# check runs the causal decoder (its weights above the diagonal are already 0), the encoder (a
# word's frames zeroed) and the cross-attention (keys = encoder frames), and `positions=[]`.
#
# <details><summary>Hint 1 — a nudge</summary>
#
# The mixing weights do not depend on the values: only `V` changes, `cap.weights` is used as captured. Per head, $z^h_i = \sum_j \alpha^h_{ij} v^h_j$ is one matrix product.
#
# </details>
# <details><summary>Hint 2 — closer</summary>
#
# `z = cap.weights @ V` is `[H, Tq, dh]`; the output projection wants the heads side by side: `z.transpose(0, 1).reshape(Tq, H * dh)`, then `@ cap.W_O.T`, then `+ cap.b_O`.
#
# </details>
# <details><summary>Hint 3 — the key line</summary>
#
# `V = cap.values.clone(); V[:, positions] = 0; a = (cap.weights @ V).transpose(0, 1).reshape(Tq, -1) @ cap.W_O.T + cap.b_O; return cap.post(cap.resid, a)`
#
# </details>

# %%
def zeroed_output(cap, positions):
    # YOUR CODE HERE
    raise NotImplementedError


# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
# @title Solution — zeroed_output (open it when you are stuck)
def zeroed_output_solution(cap, positions):
    H, Tq, Tk = cap.weights.shape
    with torch.no_grad():
        V = cap.values.clone()                      # v^h_j = x_j W_V^h + b_V^h          [H, Tk, dh]
        V[:, list(positions)] = 0.0                 # v^h_j <- 0 for j in positions, every head h
        z = cap.weights @ V                         # z^h_i = sum_j alpha^h_ij v^h_j      [H, Tq, dh]
        z = z.transpose(0, 1).reshape(Tq, -1)       # concat_h z^h_i                      [Tq, H*dh]
        a = z @ cap.W_O.T                           # a_i = concat_h(z^h_i) W_O^T ...
        if cap.b_O is not None:
            a = a + cap.b_O                         #       ... + b_O                     [Tq, D]
        return cap.post(cap.resid, a)               # x~_i^{not j} = post(x_i, a_i): residual, norms, FFN


# %%
zeroed_output = use_solution(zeroed_output, zeroed_output_solution, SOLUTIONS)
nb04.check_zeroed_output(zeroed_output, cap, data0.spans)


# %% [markdown]
# ### Exercise 4.2 — the slow, obviously right value-zeroing matrix
#
# > **Difficulty** 🔴🔴⚪⚪⚪ · **Importance** 🔵🔵🔵🔵⚪ · **Time** ~15 min
#
# Write `value_zeroing_slow(cap, spans=None, rows=None)` for one `LayerCapture` `cap`:
#
# - columns: every key position `j` (`spans=None`) or every inclusive span `(first, last)`;
# - for each column get the layer output with the values of its positions zeroed in all heads —
#   your `zeroed_output(cap, positions)` from 4.1, or `cap.rerun(positions)` (the model's own
#   layer re-run; the same numbers to float32 rounding) — `[Tq, D]`;
# - compare the kept rows (`rows`, or all) with `cap.out` (the original output) by cosine distance,
#   computed in float64 (`.double()`): most distances are tiny (1e-6 to 1e-3), and float32's
#   $1 - \cos$ carries a rounding error of ~1e-7 that row normalisation would magnify;
# - in a causal layer (`cap.causal`) set the cells with $j > i$ (a span: its `first` $> i$) to
#   exactly 0 (only $j \le i$ is defined; what the re-run gives there is rounding);
# - normalise every row to sum 1 (leave an all-zero row at zero); return float32.
#
# The check runs it on the decoder (every token), the encoder (the target word's frames, one column
# per word) and the cross-attention (tokens, one column per word).
#
# <details><summary>Hint 1 — a nudge</summary>
#
# One column = one zeroed re-run: loop over the columns, and fill column `c` of an `[R, C]` float64 matrix with the distances of the kept rows.
#
# </details>
# <details><summary>Hint 2 — closer</summary>
#
# `torch.nn.functional.cosine_similarity(new[rows].double(), cap.out[rows].double(), dim=-1)` gives one number per row; the causal mask is `torch.tensor(rows) < first`.
#
# </details>
# <details><summary>Hint 3 — the key line</summary>
#
# `C[:, c] = 1 - F.cosine_similarity(cap.rerun(list(range(first, last + 1)))[rows].double(), cap.out[rows].double(), dim=-1)`; then `C / C.sum(-1, keepdim=True)` where the sum is > 0.
#
# </details>

# %%
def value_zeroing_slow(cap, spans=None, rows=None):
    # YOUR CODE HERE
    raise NotImplementedError


# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
# @title Solution — value_zeroing_slow (open it when you are stuck)
def value_zeroing_slow_solution(cap, spans=None, rows=None):
    H, Tq, Tk = cap.weights.shape
    rows = list(range(Tq)) if rows is None else list(rows)
    spans = [(j, j) for j in range(Tk)] if spans is None else list(spans)
    with torch.no_grad():
        x = cap.out[rows].double()                               # x~_i: the original outputs
        C = torch.zeros(len(rows), len(spans), dtype=torch.float64)
        for c, (first, last) in enumerate(spans):
            # x~_i^{not j}: the layer re-run with v^h_j = 0 for every j of the span (zeroed_output gives the same)
            x_not_j = cap.rerun(list(range(first, last + 1)))[rows].double()
            C[:, c] = 1 - torch.nn.functional.cosine_similarity(x_not_j, x, dim=-1)  # C_ij = 1 - cos(x~_i^{not j}, x~_i)
            if cap.causal:
                C[torch.tensor(rows) < first, c] = 0.0           # causal: only j <= i is defined
        total = C.sum(-1, keepdim=True)                          # sum_k C_ik
        C = torch.where(total > 0, C / total, torch.zeros_like(C))  # C_ij <- C_ij / sum_k C_ik
    return C.float()


# %%
value_zeroing_slow = use_solution(value_zeroing_slow, value_zeroing_slow_solution, SOLUTIONS)
nb04.check_value_zeroing_slow(value_zeroing_slow, cap, data0.spans, target_rows)

# %% [markdown]
# **The cost.** One column = one full layer: projections of all 1,500 frames, a $1500 \times 1500$
# attention per head, the feed-forward network. A frame-level matrix of one encoder layer needs
# 1,500 re-runs:

# %%
lc = cap["encoder"][1]
t0 = time.perf_counter()
lc.rerun([t_first])
one = time.perf_counter() - t0
print(f"one encoder layer re-run ({layer_label(1)}): {one:.2f} s -> a 1,500-column matrix: ~{1500 * one / 60:.0f} min per layer, "
      f"~{6 * 1500 * one / 60:.0f} min for the 6 layers of one clip")


# %% [markdown]
# ## 2. The exact shortcut
#
# Go back to the decomposition of notebooks 01 and 03. With the attention weights fixed, the
# attention output of query $i$ is linear in the value vectors:
#
# $$a_i = \sum_j \sum_h \alpha^h_{ij}\, v^h_j (W_O^h)^\top + b_O .$$
#
# Setting $v_j^h = 0$ in every head removes exactly one term:
#
# $$a_i^{\neg j} = a_i - \delta_{ij},\qquad \delta_{ij} = \sum_h \alpha^h_{ij}\, v^h_j (W_O^h)^\top,$$
#
# the very vector whose norm is Attention-Norm. For a span, $\delta$ is summed over its keys.
# Everything after the attention — residual, layer norms, feed-forward, and in Whisper's decoder
# the cross-attention block (its keys are the fixed encoder states) — acts on each position
# separately. Call it $\mathrm{post}(x_i, a_i)$; then, **exactly**,
#
# $$\tilde x_i^{\neg j} = \mathrm{post}\big(x_i,\; a_i - \delta_{ij}\big).$$
#
# No attention needs re-running: all the $(i, j)$ pairs — or only the rows a study reads — go
# through `post` (the model's own modules, `LayerCapture.post`) in batches, in chunks that bound
# memory. This is `ctxmix_lite.measures.value_zeroing.value_zeroing(cap, method="fast")`; `method="reference"`
# is the loop you wrote.

# %% [markdown]
# ### Exercise 4.3 — the fast identity
#
# > **Difficulty** 🔴🔴🔴⚪⚪ · **Importance** 🔵🔵🔵🔵🔵 · **Time** ~15 min
#
# Write `fast_zeroed_output(cap, positions, rows=None)`: the outputs of the kept query rows
# (`rows`, in that order, or every query) with the values of `positions` zeroed, **without
# re-running attention**:
#
# $$\tilde x_i^{\neg j} = \mathrm{post}\big(x_i,\; a_i - \delta_{ij}\big),\qquad
# \delta_{ij} = \sum_{j \in \text{positions}} \sum_h \alpha^h_{ij}\, v^h_j (W_O^h)^\top ,$$
#
# with $x_i$ = `cap.resid[i]`, $a_i$ = `cap.attn_out[i]` (the captured attention output, $b_O$
# included), $\alpha^h_{ij}$ = `cap.weights[h, i, j]`, and $W_O^h$ the `dh` columns of `cap.W_O`
# that belong to head $h$ (`cap.W_O.reshape(D, H, dh)[:, h]`; `cap.projected_values()` gives every
# $v^h_j (W_O^h)^\top$ at once, `[H, Tk, D]`). Return `[len(rows), D]`. The check compares with
# the real re-runs `cap.rerun(positions)[rows]` (and refuses a function that calls `cap.rerun`).
#
# <details><summary>Hint 1 — a nudge</summary>
#
# Only the attention output changes, and it is linear in the values: subtract from $a_i$ the one term per head (and per zeroed key) that $v_j$ contributed, then hand the result to `cap.post`.
#
# </details>
# <details><summary>Hint 2 — closer</summary>
#
# $v^h_j (W_O^h)^\top$ for every head and key is `cap.projected_values()` `[H, Tk, D]`; weight it by `cap.weights[:, rows][:, :, positions]` `[H, R, P]` and sum over heads and positions: one `torch.einsum`.
#
# </details>
# <details><summary>Hint 3 — the key line</summary>
#
# `delta = torch.einsum('hij,hjd->id', cap.weights[:, rows][:, :, positions], cap.projected_values()[:, positions]); return cap.post(cap.resid[rows], cap.attn_out[rows] - delta)`
#
# </details>

# %%
def fast_zeroed_output(cap, positions, rows=None):
    # YOUR CODE HERE
    raise NotImplementedError


# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
# @title Solution — fast_zeroed_output (open it when you are stuck)
def fast_zeroed_output_solution(cap, positions, rows=None):
    H, Tq, Tk = cap.weights.shape
    dh = cap.values.shape[-1]
    rows = list(range(Tq)) if rows is None else list(rows)
    pos = list(positions)
    with torch.no_grad():
        W_O = cap.W_O.reshape(-1, H, dh)                         # W_O^h = W_O[:, h*dh:(h+1)*dh]   [D, H, dh]
        vW = torch.einsum("hjd,ehd->hje", cap.values[:, pos], W_O)  # v^h_j (W_O^h)^T             [H, P, D]
        alpha = cap.weights[:, rows][:, :, pos]                  # alpha^h_ij                     [H, R, P]
        delta = torch.einsum("hij,hje->ie", alpha, vW)           # delta_ij = sum_j sum_h alpha^h_ij v^h_j (W_O^h)^T
        return cap.post(cap.resid[rows], cap.attn_out[rows] - delta)  # x~_i^{not j} = post(x_i, a_i - delta_ij)


# %%
fast_zeroed_output = use_solution(fast_zeroed_output, fast_zeroed_output_solution, SOLUTIONS)
nb04.check_fast_zeroed_output(fast_zeroed_output, cap, data0.spans, target_rows)

# %% [markdown]
# The identity on more rows and columns of each component — `nb04.identity_check` does what your
# function does, for one key at a time, against the real re-runs:

# %%
for comp, layer, rows, cols in (("encoder", 1, target_rows, [0, t_first, t_last, data0.n - 1, 1499]),
                                 ("decoder", 2, list(range(len(data0.tokens))), [0, 3, len(data0.tokens) - 1]),
                                 ("cross", 2, list(range(len(data0.tokens))), [0, t_first, 1499])):
    r = nb04.identity_check(cap[comp][layer], rows, cols)
    print(f"{comp:<8} {layer_label(layer)}: max |post(x, a - delta) - rerun| = {r['max_abs_diff']:.1e} "
          f"(outputs up to {r['max_output']:.0f}: float32 rounding); zeroing changed them by up to {r['max_change']:.2f}")

# %% [markdown]
# And the whole measure, fast vs reference, with their wall times: the decoder (every token), the
# encoder (the target word's frames × one column per word):

# %%
few = data0.spans[max(0, target - 2): target + 2]
for label, lc_, kw in ((f"decoder {layer_label(2)}, all tokens", cap["decoder"][2], {}),
                       (f"encoder {layer_label(1)}, target rows x {len(few)} words", cap["encoder"][1],
                        dict(rows=target_rows, spans=few))):
    t = nb04.time_methods(lc_, **kw)
    print(f"{label:<40} reference {t['reference_s']:.2f} s, fast {t['fast_s']:.3f} s "
          f"({t['speedup']:.0f}x), max abs diff {t['max_abs_diff']:.1e}")
t0 = time.perf_counter()
rows_all = value_zeroing(cap["encoder"][1], rows=target_rows)        # target frames x all 1,500 frames
dt = time.perf_counter() - t0
print(f"target frames x all 1,500 key frames, fast: {dt:.1f} s (the loop: ~{1500 * one:.0f} s)")

# %% [markdown]
# For full matrices one more exact step pays off. With $h_{ij} = h_i - \delta_{ij}$ (residual plus
# attention output), the layer norm before the feed-forward network is an affine map of the centred
# vector $c(h_{ij})$ divided by its own scale $\sigma_{ij}$, and `fc1` is linear, so
#
# $$\mathrm{fc1}(\mathrm{LN}(h_{ij})) = \frac{Z_i - \sum_h \alpha^h_{ij}\, G^h_j}{\sigma_{ij}} + W_1\beta + b_1,
# \qquad Z_i = W_1(\gamma \odot c(h_i)),\quad G^h_j = W_1\big(\gamma \odot c(v^h_j (W_O^h)^\top)\big):$$
#
# one `fc1` per row and one per (head, key) instead of one per pair; $\sigma_{ij}$ is computed from
# $h_{ij}$ itself, so nothing is approximated. Only the activation and `fc2` remain per pair (the
# cosine needs each pair's full output). `value_zeroing` picks this *factored* variant when there
# are many rows (`factor_ffn=None`; `True`/`False` force it). On the speech frames of encoder layer 2:

# %%
lc1 = cap["encoder"][1]
speech = list(range(data0.n))
one_col = [(j, j) for j in speech]          # one column per speech frame
out = {}
for factor in (False, True):
    t0 = time.perf_counter()
    out[factor] = value_zeroing(lc1, rows=speech, spans=one_col, factor_ffn=factor)
    print(f"factor_ffn={factor!s:<5} {len(speech)} x {len(speech)} frames: {time.perf_counter() - t0:.2f} s")
print(f"max |factored - generic| = {float((out[True] - out[False]).abs().max()):.1e}")

# %% [markdown]
# (`bench/bench_value_zeroing.py` measures the full $1500 \times 1500$ matrix; its numbers are in
# the README. The speed-up of the full matrix is smaller than for `rows=`: even factored, the fast
# path runs `fc2` once per pair, the reference a whole layer per column.)
#
# ## 3. Three measures, layer by layer
#
# On the frames of speech (encoder) and the tokens (decoder), every layer: attention (mean over
# heads), Attention-Norm, value zeroing, and **ALTI** (Ferrando et al., 2022) — a decomposition of
# the attention block's output into one vector per input position *including the residual* and
# the layer norm, scored by how close each part is to the whole (`ctxmix_lite.measures.decomposition`;
# it reconstructs the block output exactly, see the tests). How similar are their rankings?
# Spearman rank correlation per layer, mean over clips, trained vs random.

# %%
MEAS = ("attention", "attention_norm", "value_zeroing", "alti")
LABEL = {"attention": "Attention", "attention_norm": "Attention-Norm", "value_zeroing": "Value zeroing", "alti": "ALTI"}
PAIRS = [("attention", "attention_norm"), ("attention", "value_zeroing"), ("attention_norm", "value_zeroing"),
         ("alti", "value_zeroing")]
DATA, corr = {}, {}
for label, (m, p) in models.items():
    for k, c in enumerate(clips):
        d, cp = analyse_clip(m, p, c, label, components=("encoder", "decoder"), keep_capture=True)
        d.extra.update(clip_measures(cp, d.n, measures=MEAS, model=m, progress=True))
        DATA[(label, k)] = d
        del cp
        for comp in ("encoder", "decoder"):
            M = d.extra[comp]
            for a, b in PAIRS:
                corr.setdefault((label, comp, a, b), []).append(
                    [nb03.spearman(M[a][l], M[b][l], causal=comp == "decoder") for l in range(M[a].shape[0])])
fig, axes = plt.subplots(2, 2, figsize=(13, 8), sharey=True, sharex=True, constrained_layout=True)
for i, label in enumerate(models):
    for j, comp in enumerate(("encoder", "decoder")):
        ax = axes[i, j]
        for a, b in PAIRS:
            r = np.array(corr[(label, comp, a, b)])
            ax.errorbar(np.arange(1, r.shape[1] + 1), r.mean(0), yerr=r.std(0), marker="o", capsize=3,
                        label=f"{LABEL[a]} vs {LABEL[b]}")
        ax.set_title(f"{label}, {comp}")
        ax.set_ylim(-0.3, 1.05)
        ax.axhline(0, color="0.7", lw=0.8)
    axes[i, 0].set_ylabel("Spearman rank correlation")
for ax in axes[-1]:
    ax.set_xlabel("layer")
axes[0, 0].legend(fontsize=8)
print("saved", savefig(fig, "04_measure_correlations_layers"))
plt.show()

# %% [markdown]
# What to look for (on our clips; check yours in the figure):
#
# - in the trained model attention, Attention-Norm and value zeroing rank the cells of a layer
#   much alike (ρ ≈ 0.95–1): at the frame level *which* frames a head reads decides most of the
#   order; the rest of the layer re-weights within it. Where a study looks — the share of a few
#   cells, such as cue → target in notebook 05 — the re-weighting is what matters;
# - in the random model attention departs from the other two while Attention-Norm and value
#   zeroing still agree: near-uniform weights leave the order to the size of the value vectors;
# - ALTI ranks cells very differently: it credits the residual stream to the position itself (on
#   our clips the diagonal holds 50–100 % of a row) and gives 0 to the many small parts that point
#   away from the block output (its $\max(0, \cdot)$). Value zeroing leaves the residual untouched
#   — it only removes what attention brings — so the two answer different questions: "how much of
#   $i$ comes from $j$, itself included" vs "how much does $i$ depend on reading $j$".
#
# Frame-level maps of the target word's layer, the three measures side by side:

# %%
d = DATA[("Whisper-base trained", 0)]
layer = 4
fig = plt.figure(figsize=(20, 7.2), constrained_layout=True)
for sf, m in zip(fig.subfigures(1, 3), ("attention", "attention_norm", "value_zeroing")):
    plot_map_with_audio(d.extra["encoder"][m][layer], d.clip, d.frame_duration, fig=sf,
                             title=f"{LABEL[m]}, encoder {layer_label(layer)}", colorbar_label="share of the row")
print("saved", savefig(fig, f"04_three_measures_layer{layer + 1}"))
plt.show()

# %% [markdown]
# ## 4. Rollout: mixing across layers
#
# A layer's matrix says how much position $i$ takes from $j$ *in that layer*. To follow information
# from the input through the stack, multiply the layers: $R_1 = \tilde A_1$,
# $R_l = \tilde A_l R_{l-1}$. What $\tilde A_l$ is depends on what the measure already contains:
#
# - **Attention rollout** (Abnar & Zuidema, 2020), form `"abnar_zuidema"`: attention weights leave
#   out the residual connection, so half of each row is given back to the identity:
#   $\tilde A_l = \mathrm{rownorm}\big(\tfrac12 A_l + \tfrac12 I\big)$. Used here for attention
#   and Attention-Norm.
# - **The authors' value-zeroing rollout**, form `"plain"`: $\tilde A_l = A_l$ (rows normalised, no
#   identity added). Value zeroing compares the layer's *output*, residual included, so adding
#   $I$ would count the residual twice; Mohebbi et al. roll it out this way
#   (`compute_joint_attention(..., res=False)` in their `ValueZeroing` code, where attention gets
#   `res=True`, the form above). ALTI contains the residual too and uses the same form.
#
# `ctxmix_lite.measures.rollout.rollout(mats, form=...)` takes either form; `rollout_measure(mats, measure)`
# picks the one listed above. Below: the decoder's rollout after the last layer, token × token, for
# each measure.

# %%
fig, axes = plt.subplots(1, 4, figsize=(22, 5), constrained_layout=True)
for ax, m in zip(axes, MEAS):
    R = rollout_measure(d.extra["decoder"][m], m)
    plot_word_matrix(R[-1], d.tokens, d.tokens, ax=ax, title=f"rollout ({rollout_form(m)}) of {LABEL[m]}, decoder, all layers",
                          xlabel="source token", ylabel="target token")
print("saved", savefig(fig, "04_rollout_decoder"))
plt.show()

# %%
fig, axes = plt.subplots(2, 3, figsize=(17, 9), constrained_layout=True)
words = d.clip.word_labels
last = d.extra["encoder"]["attention"].shape[0] - 1
for col, m in enumerate(("attention", "attention_norm", "value_zeroing")):
    plot_word_matrix(word_map(d, d.extra["encoder"][m][last]), words, words, ax=axes[0, col],
                          title=f"{LABEL[m]}, encoder {layer_label(last)}")
    R = rollout_measure(d.extra["encoder"][m], m)
    plot_word_matrix(word_map(d, R[-1]), words, words, ax=axes[1, col],
                          title=f"rollout ({rollout_form(m)}) of {LABEL[m]}, layers 1-{last + 1}")
print("saved", savefig(fig, "04_rollout_encoder_words"))
plt.show()

# %% [markdown]
# Rollout spreads mixing: after six layers every word holds a share of every other word, even
# where each layer alone is local. The plain form gives no layer an extra share on the diagonal,
# so it spreads faster than Abnar & Zuidema's.
#
# How much does the form matter? The same value-zeroing matrices, rolled out both ways:

# %%
vz = d.extra["encoder"]["value_zeroing"]
R_plain, R_az = rollout(vz, form="plain")[-1], rollout(vz, form="abnar_zuidema")[-1]
diag = lambda R: float(torch.diagonal(torch.as_tensor(R)).mean())
print(f"value zeroing, encoder, after {layer_label(last)}: mean diagonal share {diag(R_plain):.3f} (authors' plain form) "
      f"vs {diag(R_az):.3f} (0.5 I added); max |difference| {float((R_plain - R_az).abs().max()):.3f}")


# %% [markdown]
#  It assumes that what a position takes in one layer is mixed the
# same way in the next (a linear chain), which the feed-forward networks and layer norms do not
# guarantee — read it as a rough summary, not a measurement.
#
# ## 5. Explore
#
# Clip, model, component, layer, head (attention and Attention-Norm; value zeroing and ALTI are
# defined over all heads), measure, and whether to show the layer's own matrix or the rollout up to
# that layer.

# %%
def show(clip, model, component, layer, head, measure, view):
    d = DATA[(model, clip)]
    M = d.extra[component]
    per_head = head != "all" and measure in ("attention", "attention_norm")
    if view == "rollout":
        mat = rollout_measure(M[measure], measure)[layer]
        what = f"rollout ({rollout_form(measure)}) to {layer_label(layer)}"
    else:
        mat = M[measure + "_heads"][layer][head] if per_head else M[measure][layer]
        what = f"{layer_label(layer)}, " + (f"head {head}" if per_head else "all heads")
    title = f"{model}: {LABEL[measure]}, {component} {what}"
    if component == "encoder":
        plot_map_with_audio(mat, d.clip, d.frame_duration, title=title, colorbar_label="share of the row")
    else:
        plot_word_matrix(mat, d.tokens, d.tokens, title=title, xlabel="source token", ylabel="target token")


v = viewer(show, clip=range(len(clips)), model=list(models), component=["encoder", "decoder"],
           layer=layer_options(len(cap["encoder"])), head=["all"] + list(range(8)), measure=list(MEAS),
           view=["layer", "rollout"])
if SMOKE:
    print("headless run of every option:", v.run_all(), "figures")
v

# %% [markdown]
# ## What's next
#
# Notebook 05 uses these measures — at the word level, on the rows of a target word — to ask the
# homophony question: how much of *livres* comes from *les*, layer by layer, in the encoder, the
# cross-attention and the decoder, trained vs random.
#
# To think about:
#
# 1. Value zeroing removes $v_j$ but keeps the attention weights. What would change if instead the
#    key $k_j$ were removed (so the softmax renormalises over the other positions)?
# 2. The fast path is exact because everything after attention is position-wise. Which layer types
#    would break that (think of a convolution module, as in the Conformer)?
