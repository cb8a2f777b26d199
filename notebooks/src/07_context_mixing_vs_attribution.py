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
# # 07 · Context mixing vs feature attribution, and a faithfulness check
#
# *Context-Mixing in Speech Transformers* — **notebook 8 of 8** (`07_context_mixing_vs_attribution`; previous: [06](06_number_probe.ipynb), next: —).
# Terms: [glossary](GLOSSARY.md) · teaching it: [instructor's guide](INSTRUCTORS.md) (both in `notebooks/`).
#
# Context-mixing measures say how much one position reads another *inside* the network. Feature
# attribution asks a different question: which parts of the **input** does the output depend on? For
# the homophony items both can be put on the same time axis, and both can be checked against an
# intervention: silence a word's audio and see whether the target's probability drops.
#
# **Learning goals**
#
# - compute [gradient × input](GLOSSARY.md#gradient-x-input) and [integrated gradients](GLOSSARY.md#integrated-gradients) of the target word's probability with respect
#   to Whisper's log-mel input, and this course's value-zeroing rollout from the target's decoder
#   rows back to input time, for the same item, side by side on the waveform;
# - pool time series into words (you write it) and test every method against a **[blank-out](GLOSSARY.md#blank-out)**
#   deletion profile (faithfulness);
# - separate what the encoder contributes (silence the cue's *audio*) from what the decoder
#   contributes (replace the cue *token* in the teacher-forced transcript).

# %% [markdown]
# ## What runs here (and how it differs from the paper)
#
# Whisper-base (packaged weights) on the synthetic French items of notebooks 05–06. The paper
# studied Whisper-base, -small and -medium (its cue-contribution figures show Whisper-medium) on
# Common Voice. The attribution methods and the blank-out test are this course's extension of the
# study (the paper's own code has a cue blank-out evaluation).
#
# - $f$ = the probability of the target word (product over its subword tokens) given the audio and
#   the teacher-forced transcript before it (the trained model's own transcription).
# - Gradients are taken **with respect to the log-mel input features** (80 mel bins × 10 ms frames;
#   the waveform → log-mel step is numpy preprocessing), summed over mel bins.
# - Integrated gradients start from the features of *silence* (an all-zero waveform of the clip's
#   length); the completeness gap $\sum a - (f(x) - f(x'))$ is printed — it shrinks with `IG_STEPS`.
# - **"VZ rollout" is this course's own construction**, not a method of the paper or of the
#   value-zeroing papers. It rolls the encoder's value-zeroing matrices out through the encoder
#   layers in the authors' value-zeroing form (a plain product, no identity added — their
#   `res=False`; `ctxmix_lite.measures.rollout`, form `"plain"`), then reads them from the target's decoder
#   rows through the cross-attention value-zeroing rows **averaged over the decoder layers**:
#   $a = \big(\tfrac1L \sum_l c_l\big)\, R_{\text{enc}}$. It **ignores**:
#   - the decoder's **self-attention**: what the target's rows take from earlier tokens — the cue
#     token included — is dropped, and each cross-attention row is renormalised over the speech;
#     yet notebook 05 and section 5 below find that Whisper settles number mostly in the decoder;
#   - the **order of the decoder layers** (a plain mean, not a chain through them) and the residual
#     stream around each cross-attention block;
#   - Whisper's padding frames (the clip's frames only, in chunks of `VZ_CHUNK` × 20 ms).
# - **Each faithfulness correlation rests on a handful of words**: a clip's words minus the
#   target — a few numbers per item on our short sentences. The number of words behind each
#   correlation is printed; read a Spearman ρ on 4 words as a rough rank agreement (with 4 words,
#   ρ = 1 happens by chance 1 time in 24), not as a measurement.

# %% tags=["parameters"]
MODEL = "openai/whisper-base"     # Whisper (trained: packaged weights)
DATA = "offline"                  # "offline" (synthetic) or "hub"
N_ITEMS = 200                     # the item pool of notebooks 05-06 (transcriptions are cached)
CHECKED_ONLY = True               # only items the data's Whisper-base check passed (the rule drops the rest)
N_EXAMPLES = 3                    # items analysed here (correctly transcribed, templates mixed)
IG_STEPS = 16                     # integrated-gradients steps
VZ_CHUNK = 2                      # encoder frames (20 ms) per value-zeroing chunk
THREADS = 2                       # CPU threads
DEVICE = "auto"                   # "auto": CUDA when available, else CPU
PRECOMPUTED = True                # True: the shipped examples (data/results/), the first re-checked live; False: recompute
SMOKE = False                     # True: tiny run (CI): 1 example, 4 IG steps, 80 ms chunks
SOLUTIONS = False                 # True: use the reference solution of the exercise
SEED = 0

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ctxmix_lite.study import attribution as A
from ctxmix_lite.study import attribution_examples as AE
from ctxmix_lite.study import shipped
from ctxmix_lite import study
from ctxmix_lite.course.exercises import nb07, use_solution
from ctxmix_lite.models import resolve_device
from ctxmix_lite.course.paths import outputs_dir, savefig
from ctxmix_lite.viz.widgets import audio_player

torch.set_num_threads(THREADS)
DEVICE = resolve_device(DEVICE)
PRECOMPUTED, why = shipped.usable(PRECOMPUTED, model=MODEL, data=DATA, n_items=N_ITEMS, checked_only=CHECKED_ONLY,
                                  seed=SEED, n_examples=N_EXAMPLES, ig_steps=IG_STEPS, vz_chunk=VZ_CHUNK)
print(why)
if SMOKE and not PRECOMPUTED:
    N_ITEMS, N_EXAMPLES, IG_STEPS, VZ_CHUNK = 6, 1, 4, 4
pd.set_option("display.width", 160)
T0 = time.perf_counter()

# %% [markdown]
# ## 1. Items the model gets right
#
# Attribution of a wrong output explains nothing useful: we take items whose cue and target the
# trained model transcribed correctly (its transcriptions are cached by notebook 05), one template
# after another.

# %%
items = study.course_items(DATA, N_ITEMS, smoke=SMOKE and not PRECOMPUTED, seed=SEED, progress=False,
                           checked_only=CHECKED_ONLY)
run = study.ModelRun(MODEL, "trained")
model, proc = run.load(device=DEVICE)
keys = [study.item_key(it) for it in items]
if PRECOMPUTED:
    shipped_examples, prov = shipped.load_attribution(items=items)
    shipped.describe(prov)
    examples = [e["k"] for e in shipped_examples]
    print(f"analysing {examples} (the shipped examples)")
else:
    tr = study.get_transcriptions(run, items, keys, model, proc, progress=False)
    if SMOKE:  # as notebooks 05-06: the tiny CI sample reads the reference sentence, whatever was heard
        tr = {k: dict(text=it["transcription"], ids=list(proc.tokenizer(" " + it["transcription"].strip(),
                                                                        add_special_tokens=False).input_ids))
              for k, it in zip(keys, items)}
    examples, n_ok = AE.choose_examples(items, tr, keys, proc.tokenizer, N_EXAMPLES)
    print(f"{n_ok} of {len(items)} items transcribed right; analysing {examples}")

# %% [markdown]
# ## 2. Three answers on one time axis

# %%
if PRECOMPUTED:
    # the shipped gradient x input, integrated gradients, VZ rollout, blank-out and interventions;
    # the first example's gradient x input and blank-out are recomputed live and compared
    results = []
    for e in shipped_examples:
        it = items[e["k"]]
        results.append(dict(e, item=it, use=study.item_uses(it)[0], audio=study.audio_of(it)))
    r0 = results[0]
    t = time.perf_counter()
    cpu_model, cpu_proc = (model, proc) if DEVICE == "cpu" else run.load()  # shipped on the CPU: re-check there
    live = AE.analyse_example(cpu_model, cpu_proc, r0["item"], r0["k"], r0["key"], r0["transcript_ids"],
                              methods=("gxi",), with_interventions=False)
    shipped.recheck_attribution(r0, live)
    print(f"({time.perf_counter() - t:.0f} s)")
else:
    results = [AE.analyse_example(model, proc, items[k], k, keys[k], tr[keys[k]]["ids"], ig_steps=IG_STEPS,
                                  vz_chunk=VZ_CHUNK)
               for k in examples]
for r in results:
    it, u = r["item"], r["use"]
    al = it["alignment"]
    fig = A.plot_side_by_side(r["audio"], al, [r["gxi"], r["ig"], r["vz"]], cue=u.cue, target=u.target,
                              title=f"{it['transcription']}  p({al[u.target]['word']}) = {r['gxi'].value:.3f}")
    savefig(fig, f"07_attribution_item{r['k']}")
    plt.show()
    print(f"integrated gradients: completeness gap {r['ig'].extra['completeness_gap']:+.3f} "
          f"(f(x) - f(silence) = {r['ig'].value - r['ig'].extra['baseline_value']:.3f}); {r['seconds']:.0f} s for the three methods")
audio_player(results[0]["audio"], 16000)


# %% [markdown]
# ## 3. Exercise: from time to words
#
# The attribution methods score time intervals (log-mel frames, chunks of audio); the blank-out test
# below compares words. One pooling step turns the first into the second.

# %% [markdown]
# ### Exercise 7.1 — from time to words
#
# > **Difficulty** 🔴⚪⚪⚪⚪ · **Importance** 🔵🔵🔵⚪⚪ · **Time** ~10 min
#
# Write `word_attribution(scores, times, step, alignment)` → an array `[W]`, one value per word of
# `alignment` (a list of dicts with `start`, `end` in seconds). `scores[k]` covers the interval
# `[times[k], times[k] + step)` seconds; an interval belongs to word $w$ when its **centre**
# $c_k = t_k + \text{step}/2$ lies in $[\text{start}_w, \text{end}_w)$, and
#
# $$s_w = \sum_{k:\ \text{start}_w \le c_k < \text{end}_w} \text{scores}_k \qquad\text{(signed: keep negative scores).}$$
#
# A word no interval falls in gets 0.
#
# <details><summary>Hint 1 — a nudge</summary>
#
# Compute every interval's centre once (`times + step / 2`), then, per word, a boolean mask of the intervals whose centre falls in the word.
#
# </details>
# <details><summary>Hint 2 — closer</summary>
#
# The interval is half-open: `(centre >= w['start']) & (centre < w['end'])`; sum `scores` under the mask (no `abs`, no mean).
#
# </details>
# <details><summary>Hint 3 — the key line</summary>
#
# `c = np.asarray(times) + step / 2; return np.array([np.asarray(scores)[(c >= w['start']) & (c < w['end'])].sum() for w in alignment])`
#
# </details>

# %%
def word_attribution(scores, times, step, alignment):
    # YOUR CODE HERE
    raise NotImplementedError


# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
# @title Solution — word_attribution (open it when you are stuck)
def word_attribution_solution(scores, times, step, alignment):
    s = np.asarray(scores, dtype=np.float64)
    centre = np.asarray(times, dtype=np.float64) + step / 2     # c_k = t_k + step / 2
    out = np.zeros(len(alignment))
    for w, word in enumerate(alignment):
        inside = (centre >= word["start"]) & (centre < word["end"])  # start_w <= c_k < end_w
        out[w] = s[inside].sum()                                # s_w = sum of the word's (signed) scores
    return out


# %%
word_attribution = use_solution(word_attribution, word_attribution_solution, SOLUTIONS)
nb07.check_word_attribution(word_attribution)

# %% [markdown]
# ## 4. Faithfulness: blank-out
#
# For every word, silence its samples and measure the drop of $p(\text{target})$ (the decoder is
# still teacher-forced on the original transcript). A faithful method ranks the *context* words as
# the drops do (Spearman correlation; the target itself is left out: its own sound dominates every
# method and every drop).

# %%
rows = []
for r in results:
    it, u = r["item"], r["use"]
    al = it["alignment"]
    dele = r["deletion"]  # blank every word in turn: A.word_deletion (computed with the examples)
    words = {m: word_attribution(r[key].scores, r[key].times, r[key].step, al)
             for m, key in (("gradient x input", "gxi"), ("integrated gradients", "ig"),
                            ("VZ rollout (course construction)", "vz"))}
    f = A.faithfulness(words, dele, exclude=[u.target])
    f.insert(0, "item", it["item_id"])
    rows.append(f)
    show = dele[["word", "p_blanked", "drop"]].copy()
    for m, s in words.items():
        show[m] = np.round(s, 4)
    print(it["transcription"])
    print(show.round(4).to_string(index=False), "\n")
faith = pd.concat(rows, ignore_index=True)
print(f"{len(faith)} correlations over {faith['item'].nunique()} item(s); words per correlation: "
      f"{sorted(set(faith['n_words'].tolist()))} (a handful: read them as rough rank agreements)")
print(faith.groupby("method")[["spearman"]].agg(["mean", "count"]).round(2).to_string())
faith

# %% [markdown]
# ## 5. Encoder or decoder? Silence the cue's audio, or replace the cue token
#
# Three interventions on each item: silence the cue's **audio** (what the encoder hears), replace
# the cue **token** in the teacher-forced transcript by the other number's form (what the decoder
# reads: *les* → *le*), and both.

# %%
# AE.interventions(model, proc, item, audio, ids, pos): A.blank_out on the cue's time span, and
# A.cue_token_replacement with the other number's form of the cue (A.flip_number), without and with the silence
interventions = pd.DataFrame([r["interventions"] for r in results])
interventions.to_csv(outputs_dir() / "07_interventions.csv", index=False)
print(f"total notebook time {time.perf_counter() - T0:.0f} s")
interventions.round(4)

# %% [markdown]
# ## Wrap-up
#
# - Gradient-based attribution of a confident output is often *saturated*: at $p \approx 1$ the
#   gradient is tiny and its sign unstable; integrated gradients fix the scale (completeness) but
#   need enough steps.
# - The VZ rollout (the course's construction) describes *mixing*, not sensitivity; it is
#   non-negative and sums to 1 over the clip — compare where its mass goes with the deletion
#   profile. It leaves out the decoder's self-attention, where Whisper does most of its number
#   agreement, so it can only show what the target's rows read from the *audio*.
# - Every correlation here rests on a few words of a few items (the counts are printed): a
#   pattern across items, not one ρ, is what to look for.
# - Silencing the cue's audio barely moves $p(\text{target})$ when the decoder is teacher-forced on
#   the right cue token, while replacing that token collapses it: in Whisper the number agreement is
#   done by the **decoder**, reading the cue token — the paper's Fig. 2 finding, seen causally.
#
# To think about:
#
# 1. Why exclude the target word from the faithfulness correlation? What would each method's
#    correlation be if you kept it?
# 2. The blank-out replaces a word by silence. What else could replace it (noise, the other member
#    of the minimal pair), and what would each answer?
