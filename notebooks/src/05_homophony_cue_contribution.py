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
# # 05 · Homophony: does the target read the cue? (Mohebbi et al., EMNLP 2023)
#
# *Context-Mixing in Speech Transformers* — **notebook 6 of 8** (`05_homophony_cue_contribution`; previous: [04](04_value_zeroing.ipynb), next: [06](06_number_probe.ipynb)).
# Terms: [glossary](GLOSSARY.md) · teaching it: [instructor's guide](INSTRUCTORS.md) (both in `notebooks/`).
#
# French *livre* and *livres* sound the same; so do *trouve* and *trouvent*. A speech recogniser can
# only write the right form by reading an earlier word that marks number audibly: the **cue**
# (*le / les*; *il / ils* before a vowel, through the liaison /z/). This notebook replicates the
# study's central measurement with the three context-mixing measures of notebooks 02–04.
#
# **Learning goals**
#
# - turn a frame-level (or token-level) context-mixing matrix into the study's number: the **[cue
#   contribution](GLOSSARY.md#cue-contribution)**, the share of the target word's row that falls on the cue (you write it);
# - explore items word × word and frame × frame, layer by layer, for every component and measure;
# - run the whole study — every item × model (trained and random) × component × measure × layer —
#   as one tidy table, cached and resumable;
# - draw the paper's Fig. 1 and Fig. 2 analogues and compare our findings with the paper's, saying
#   where they agree, where they differ and why.

# %% [markdown]
# ## What runs here (and how it differs from the paper)
#
# | | paper | this notebook (offline default) |
# |---|---|---|
# | speech | Common Voice 11 French, test split (1,000 items) | synthetic French (espeak-ng + MBROLA voices), exact word times, minimal pairs |
# | Whisper | whisper-base/small/**medium** | **whisper-base** (packaged weights), trained + random init |
# | encoder-only | XLSR-53 fine-tuned for French (trained) | the **XLSR-53 architecture, random init** (trained checkpoint with `HUB = True`) |
# | templates | Det_Noun 720, Pronoun_Verb 257, Det_Noun_Verb 23 | same templates; Det_Noun_Verb more frequent |
#
# With the Hugging Face hub (e.g. on Colab) set `HUB = True`, `MODEL = "openai/whisper-medium"` and
# `DATA = "hub"` to run on the released dataset with the paper's models. A GPU helps a lot there.
#
# **Method, as in the paper's code** ([`hmohebbi/ContextMixingASR`](https://github.com/hmohebbi/ContextMixingASR):
# `scoring/attentions.py`, `scoring/valueZeroing.py`, `evaluating/cue_alignment.py`). Encoder rows
# are the target word's frames (Whisper: 1,500 frames for the 30 s padded window,
# $t \mapsto \lceil F t / T\rceil$; wav2vec2: $T$ = clip duration); columns are the aligned words
# (mean over their frames; value zeroing zeroes a whole word at once); rows are re-normalised over
# aligned words only, so padding and silence never count. The Whisper decoder is teacher-forced on
# the *trained* model's own greedy transcription (forced French). Its rows are the positions that
# **predict** the target's subword tokens; each row is normalised over **all** decoder input
# positions — the four prompt tokens `<|startoftranscript|><|fr|><|transcribe|><|notimestamps|>` and
# punctuation included — and the cue contribution is the row's mass on the cue's *tokens*, averaged
# over the target's tokens. Cross-attention: the same rows, the encoder's word frames as columns.
# `Det_Noun_Verb` items are used twice (det → noun; det + noun → verb). Items that the trained ASR
# model does not transcribe with cue and target right are excluded from every model and component,
# and counted by reason.
#
# **Every choice, the paper's and ours.** Where the course offers something else it is a named
# option of `study.StudyOptions` / `run_study`; the paper's form is the default.
#
# | choice | paper (code) | course default | option |
# |---|---|---|---|
# | frame → word pooling (encoder, cross) | mean over the word's frames `[ceil(F·start/T), ceil(F·end/T)]` (`attentions.py` l. 134–140, 179–183, `DIM_AGGREGATOR=mean`; `utils.get_encoder_word_boundaries`) | same | — |
# | per-head normalisation (Attention) | encoder / cross: pooled per head, normalised over words per head, heads averaged (`attentions.py` l. 143–145, 184; `cue_alignment.py` l. 101–102); decoder: softmax rows, heads averaged | same | — |
# | value zeroing | a whole word's frames zeroed (encoder, cross); one decoder token at a time, only rows ≥ that token (`valueZeroing.py` l. 148–172, 178–234) | same | — |
# | decoder rows | the positions that *predict* the target's tokens (decoder input = `<|startoftranscript|>` + generated ids; `valueZeroing.py` l. 77, `cue_alignment.py` l. 108) | same | — |
# | decoder columns, normalisation | **all** decoder input positions, prompt tokens and punctuation included, rows normalised over all (`attentions.py` l. 165–167, `valueZeroing.py` l. 202–204); cue columns = cue tokens (generated index + 1, `cue_alignment.py` l. 109) | same | `skip_special_tokens=True` (the paper's `--SKIP_SPECIAL_TOKENS`: first 3 positions dropped, renormalised, `cue_alignment.py` l. 117–126); `decoder_scoring="word_pooled"` (the course's earlier definition: only the aligned words' tokens, renormalised over words) |
# | score | row · binary cue vector, mean over the target's token rows (`cue_alignment.py` l. 128–137) | same | — |
# | Det_Noun_Verb split | det → noun, and det + noun → verb (`cue_alignment.py` l. 81–90) | same | — |
# | exclusions | items that all five models transcribe right (the released data set); annotations sharing a Common Voice sentence dropped (`cue_alignment.py` l. 77–79) | items the run's trained Whisper transcribes with cue and target, transcripts split as the data's `whisper_ok` (*d'un* → *d'* *un*); every exclusion counted by reason (`res.exclusion_counts()`) | `exclude_misrecognised=False` |

# %% tags=["parameters"]
MODEL = "openai/whisper-base"     # Whisper (trained: packaged weights; "openai/whisper-medium" needs the hub)
HUB = False                       # True: trained French XLSR-53 as the encoder-only model (needs the hub)
DATA = "offline"                  # "offline" (synthetic) or "hub" (hosein-m/french_homophone_asr)
N_ITEMS = 200                     # items of the study (None: the whole set, 1,000 offline)
CHECKED_ONLY = True               # only items the data's Whisper-base check passed (the rule drops the rest)
EXPLORER_ITEMS = 4                # items in the interactive explorer
EXCLUDE_MISRECOGNISED = True      # the paper's rule (False: keep them for the encoder)
DECODER_SCORING = "paper"         # decoder self-attention: "paper" (token level, all positions) or "word_pooled"
SKIP_SPECIAL_TOKENS = False       # the paper's --SKIP_SPECIAL_TOKENS option (first 3 decoder positions dropped)
THREADS = 2                       # CPU threads (torch.set_num_threads)
DEVICE = "auto"                   # "auto": CUDA when available, else CPU
PRECOMPUTED = True                # True: load the shipped study (data/results/) and re-check items live; False: recompute it all
RECHECK_ITEMS = 2                 # items recomputed live and compared with the shipped rows (PRECOMPUTED)
SMOKE = False                     # True: tiny run (CI): 6 items, a 4-layer random XLSR (shipped: 1 item re-checked)
SOLUTIONS = False                 # True: use the reference solution of the exercise
SEED = 0                          # random initialisation and choice of items

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ctxmix_lite.study import shipped
from ctxmix_lite import study
from ctxmix_lite.course.exercises import nb05, use_solution
from ctxmix_lite.study.explorer import Explorer
from ctxmix_lite.models import resolve_device
from ctxmix_lite.course.paths import outputs_dir, savefig
from ctxmix_lite.viz.plotting import plot_waveform_words
from ctxmix_lite.viz.widgets import audio_player

torch.set_num_threads(THREADS)
DEVICE = resolve_device(DEVICE)
TEACHER_FORCING = "transcription"  # the paper's: the decoder reads the trained model's own transcription
OPTIONS = study.StudyOptions(DECODER_SCORING, SKIP_SPECIAL_TOKENS)
# the shipped results hold the run at the default parameters; any other choice recomputes
PRECOMPUTED, why = shipped.usable(PRECOMPUTED, model=MODEL, data=DATA, n_items=N_ITEMS, checked_only=CHECKED_ONLY,
                                  seed=SEED, hub=HUB, exclude_misrecognised=EXCLUDE_MISRECOGNISED)
print(why)
if SMOKE:
    EXPLORER_ITEMS, RECHECK_ITEMS = 1, 1
if SMOKE and not PRECOMPUTED:  # a tiny CI sample must not depend on what the recogniser heard: not the paper's setting
    N_ITEMS = 6
    EXCLUDE_MISRECOGNISED, TEACHER_FORCING = False, "reference"
pd.set_option("display.width", 160)
pd.set_option("display.max_colwidth", 60)
T0 = time.perf_counter()

# %% [markdown]
# ## 1. The items
#
# Every item comes with its minimal pair (same sentence, voice and prosody, other number). The
# target's own sound is the same in both members: only the cue tells them apart.
#
# The paper analyses only items the ASR models transcribe with cue and target right. The offline set
# was checked once with Whisper-base (366 of its 1,000 items pass; `data/README.md`), so with
# `CHECKED_ONLY = True` the `N_ITEMS` are drawn from those and every one is analysed (label-balanced;
# a pair's other member may have failed the check). The study still applies the rule itself, with
# the transcriptions it makes.

# %%
items = study.course_items(DATA, N_ITEMS, smoke=SMOKE and not PRECOMPUTED, seed=SEED, progress=False,
                           checked_only=CHECKED_ONLY)
print(f"{len(items)} items")
print(pd.crosstab(pd.Series(items["template"], name="template"), pd.Series(items["label"], name="label")))

it = items[0]
uses = study.item_uses(it)
al = it["alignment"]
wav = study.audio_of(it)
ax = plot_waveform_words(wav, 16000, al, title=f"{it['transcription']}  ({it['template']}, {it['label']})")
for u in uses:
    ax.axvspan(al[u.target]["start"], al[u.target]["end"], color="tab:red", alpha=0.15)
    for c in u.cue:
        ax.axvspan(al[c]["start"], al[c]["end"], color="tab:green", alpha=0.15)
savefig(ax.figure, "05_item_waveform")
plt.show()
print("cue:", [al[c]["word"] for c in uses[0].cue], " target:", al[uses[0].target]["word"])
audio_player(wav, 16000)


# %% [markdown]
# ## 2. Exercise: the cue contribution
#
# The study reads a word-level matrix $M$ (rows: the word that *receives*, columns: the word that
# *contributes*, non-negative) and reduces it, for one layer, to one number per item.

# %% [markdown]
# ### Exercise 5.1 — the cue contribution
#
# > **Difficulty** 🔴⚪⚪⚪⚪ · **Importance** 🔵🔵🔵🔵🔵 · **Time** ~10 min
#
# Write `cue_contribution(word_matrix, cue, target)`: the share of the target row's mass that falls
# on the cue word(s),
#
# $$\text{cue contribution} = \frac{\sum_{j \in \text{cue}} M_{\text{target}, j}}{\sum_j M_{\text{target}, j}}$$
#
# (0 for an all-zero row). `cue` is a list: the second use of a `Det_Noun_Verb` item has two cue
# words (det + noun → verb). Rows need not sum to 1. Make it work on one matrix `[W, W]` (return a
# float) and on a stack of layers `[L, W, W]` (return `[L]`, one value per layer).
#
# <details><summary>Hint 1 — a nudge</summary>
#
# Rows receive, columns give: everything the target receives is its row, `M[..., target, :]` (the `...` keeps a layer axis in front).
#
# </details>
# <details><summary>Hint 2 — closer</summary>
#
# Sum the row over the cue columns, and over all columns; divide where the total is > 0 (`np.divide(..., where=total > 0)` with a zeros `out`).
#
# </details>
# <details><summary>Hint 3 — the key line</summary>
#
# `row = M[..., target, :]; share = row[..., cue].sum(-1) / row.sum(-1)` (0 where `row.sum(-1) == 0`); `float(share)` for a single matrix.
#
# </details>

# %%
def cue_contribution(word_matrix, cue, target):
    # YOUR CODE HERE
    raise NotImplementedError


# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
# @title Solution — cue_contribution (open it when you are stuck)
def cue_contribution_solution(word_matrix, cue, target):
    M = np.asarray(word_matrix, dtype=np.float64)        # [W, W] or [L, W, W]: rows receive, columns give
    row = M[..., target, :]                               # M_{target, j} for every word j (and layer)
    on_cue = row[..., list(cue)].sum(-1)                  # sum_{j in cue} M_{target, j}
    total = row.sum(-1)                                   # sum_j M_{target, j}
    share = np.divide(on_cue, total, out=np.zeros_like(total), where=total > 0)  # 0 for an all-zero row
    return float(share) if share.ndim == 0 else share     # one layer: a float; a stack: [L]


# %%
cue_contribution = use_solution(cue_contribution, cue_contribution_solution, SOLUTIONS)
nb05.check_cue_contribution(cue_contribution)

# %% [markdown]
# ## 3. The models
#
# Whisper trained and randomly initialised (same architecture, seeded default initialisation), and
# the encoder-only model of Fig. 1: the XLSR-53 architecture, randomly initialised offline (the
# trained French checkpoint with `HUB = True`). In `SMOKE` mode the random XLSR keeps 4 of its 24
# layers (same layer type) to fit the CI budget.

# %%
RUNS = study.default_model_runs(hub=HUB, smoke=SMOKE and not PRECOMPUTED, whisper=MODEL)
t = time.perf_counter()
loaded = {run: run.load(device=DEVICE) for run in RUNS}
print(f"loaded {len(RUNS)} models in {time.perf_counter() - t:.0f} s:")
for run in RUNS:
    print("  ", run.label)

# %% [markdown]
# ## 4. Explore an item
#
# Pick an item, a model, a component (encoder, decoder self-attention, cross-attention), a layer and
# a measure. Left: the word × word matrix, computed by the study's own scoring with every word in
# turn as the target, so the target row is the study's row and its cue cell the cue contribution of
# section 5 (encoder and cross-attention: rows re-normalised over the aligned words; decoder: the
# definition of `OPTIONS`, by default the paper's, each row's share of *all* decoder positions, so a
# row sums to at most 1). Right: the frame × frame (encoder), token × token (decoder) or
# token × frame (cross-attention) matrix with the word boundaries. The explorer runs one forward
# pass per (item, model) and computes the chosen layer on demand.

# %%
explorer = Explorer(list(items.select(range(EXPLORER_ITEMS))), {run.label: loaded[run] for run in RUNS},
                    decoder=OPTIONS.decoder_definition)
trained = RUNS[0].label
view = explorer.view(0, trained, "encoder", 5 if not SMOKE else 1, "value_zeroing")
u = study.item_uses(items[0])[0]
print(f"{trained}, encoder, value zeroing: cue contribution = {view.cue_contribution:.3f}")
# your function on the real word-level matrix
nb05.check_cue_contribution(cue_contribution, view.word, list(u.cue), u.target)
explorer.widget()

# %% [markdown]
# ## 5. The whole study
#
# One forward pass per item and model (the rows-only pass of `ctxmix_lite.study`: the model's own
# forward plus, for the target rows only, the eager attention weights), then all three measures for
# every component and layer. Shards are cached per (model, init, settings, item): run the cell
# again, or resume after an interruption, and only missing items are computed. Transcriptions are
# generated once with the trained Whisper.
#
# **Shipped results.** The whole run takes tens of minutes on two CPU cores, so with
# `PRECOMPUTED = True` (the default) the notebook loads it from `data/results/` — computed by
# `python -m ctxmix_lite.study.shipped` with exactly these definitions and items; its provenance (data
# build, model weights, code version) is printed — and **recomputes `RECHECK_ITEMS` items live**,
# every model, component, measure and layer, checking that they equal the shipped rows to 1e-6.
# `PRECOMPUTED = False` recomputes everything (and so does any change of the item or model
# parameters).

# %%
t = time.perf_counter()
if PRECOMPUTED:
    res = shipped.load_study(items=items, options=OPTIONS)
    shipped.describe(res)
    shipped.recheck_study(res, items, n_items=RECHECK_ITEMS, loaded=loaded, threads=THREADS)
else:
    res = study.run_study(items, RUNS, exclude_misrecognised=EXCLUDE_MISRECOGNISED, threads=THREADS, loaded=loaded,
                          options=OPTIONS, teacher_forcing=TEACHER_FORCING)
print(f"study: {time.perf_counter() - t:.0f} s; per model when computed: "
      + ", ".join(f"{k} {v:.0f} s" for k, v in res.timings.items()))
print(f"decoder definition of the main table: {res.options.decoder_definition}")
print(f"{res.table['item'].nunique()} analysed items (Det_Noun_Verb counted twice), "
      f"{res.n_excluded} excluded as misrecognised by the trained model(s)")
res.table.head()

# %%
# every exclusion, with its reason (nothing is dropped silently)
print(res.exclusion_counts().to_string(index=False) if len(res.exclusions) else "no exclusions")
res.exclusions[["item", "reason_code", "scope", "reason", "transcription", "reference"]].head(10)

# %% [markdown]
# ## 6. Fig. 1 analogue: encoders, trained vs random
#
# Mean cue contribution per layer (rows, layer 1 at the bottom) and measure (columns). The paper's
# Fig. 1 shows a trained encoder-only ASR model (XLSR-53 French) whose upper layers draw on the cue,
# and random models that do not.

# %%
summary = res.summary()
enc_only = [r.label for r in RUNS if "whisper" not in r.name]
whisper_runs = [r.label for r in RUNS if "whisper" in r.name]
fig1 = study.plot_cue_panels(summary, [(l, "encoder") for l in enc_only + whisper_runs],
                             suptitle="Cue contribution in the encoder (Fig. 1 analogue)")
savefig(fig1, "05_fig1_encoders")
plt.show()

# %% [markdown]
# ## 7. Fig. 2 analogue: Whisper's encoder, cross-attention and decoder
#
# The paper's Fig. 2: in Whisper most of the cue → target mixing happens in the **decoder** (the
# decoder reads the cue *token* it has already written); the encoder contributes little. The decoder
# panels use the paper's definition (unless you changed `DECODER_SCORING` / `SKIP_SPECIAL_TOKENS`).

# %%
panels = [(l, c) for l in whisper_runs for c in ("encoder", "cross", "decoder")]
fig2 = study.plot_cue_panels(summary, panels, ncols=3,
                             suptitle=f"Whisper: encoder / cross-attention / decoder (Fig. 2 analogue; decoder: {res.options.decoder_definition})")
savefig(fig2, "05_fig2_whisper_components")
plt.show()

# %% [markdown]
# ### The decoder under each definition, and where its mass goes
#
# Every definition comes from the same forward pass (`res.variants`, column `definition`). The
# paper's (thick line) first, then its `skip_special_tokens` option and the course's earlier
# word-pooled variant. The numbers move because the denominators differ: the paper normalises each
# row over **all** decoder positions, and Whisper's decoder rows put much of their mass on the four
# prompt tokens (printed below, the same rows as the paper's score); `skip_special_tokens` gives back
# the mass of the first three to the rest; the word-pooled variant drops the whole prompt and the
# punctuation and renormalises over the aligned words, so the cue's share can only grow.

# %%
figd = study.plot_decoder_definitions(res.variants, whisper_runs)
savefig(figd, "05_decoder_definitions")
plt.show()
vpiv = res.variant_summary().query("measure == 'value_zeroing'").pivot_table(
    index="layer", columns=["model_label", "definition"], values="mean")
print("decoder, Value Zeroing, mean cue contribution per layer (1-based) and definition:")
print(vpiv.round(3).to_string())
pm = study.prompt_mass_summary(res.decoder_mass, "value_zeroing")
print("\nValue Zeroing: mean mass of the rows predicting the target on each prompt position (paper normalisation):")
print(pm.round(3).to_string())

# %% [markdown]
# ## 8. By cue distance
#
# Adjacent cues (*le livre*, *ils aiment*: distance 1) against cues with words between them (*le
# petit chat*: distance ≥ 2). In an adjacent item the decoder position that **predicts** the target
# *is* the cue token: its row's mass on the cue is largely that position's contribution to itself,
# which even a random decoder gives. When the cue is further back, the predicting position is
# another word's token and must read the cue across the intervening tokens: the decoder's cue
# contribution then measures real mixing between tokens, and it is the fair comparison with the
# encoder and cross-attention. (Items without a non-adjacent cue give one group only.)

# %%
print(res.items[~res.items["excluded"]].groupby("distance_group").size().rename("analyses").to_string())
figdist = study.plot_by_distance(res.table, whisper_runs + enc_only, title="Value Zeroing by cue distance")
savefig(figdist, "05_by_distance")
plt.show()
sd = study.summarize_by_distance(res.table).query("measure == 'value_zeroing'")
sd.pivot_table(index="layer", columns=["model_label", "component", "distance_group"], values="mean").round(3)

# %% [markdown]
# ## 9. Per template
#
# Value zeroing, mean ± 95 % interval over items. `Det_Noun_Verb (verb)` is the second use: cue =
# det + noun.

# %%
for comp in ("encoder", "decoder"):
    labels = [l for l in (whisper_runs if comp == "decoder" else enc_only + whisper_runs)]
    fig = study.plot_template_breakdown(res.table, labels, comp)
    savefig(fig, f"05_templates_{comp}")
    plt.show()

# %% [markdown]
# ## 10. The paper's findings beside ours
#
# `verdict` is computed from the numbers (value zeroing, the paper's reference measure); `why` says
# what differs between the two set-ups.

# %%
cmp = study.paper_comparison(summary, RUNS, decoder_definition=res.options.decoder_definition)
out = outputs_dir() / "05_cue_contribution.csv"
res.table.to_csv(out, index=False)
res.variants.to_csv(outputs_dir() / "05_decoder_definitions.csv", index=False)
print("table saved to", out, f"({len(res.table)} rows); total notebook time {time.perf_counter() - T0:.0f} s")
cmp

# %% [markdown]
# ## Wrap-up
#
# - The cue contribution is one number per item, model, component, measure and layer: the share of
#   the target's row on the cue. Averaged over items it gives the paper's heatmaps.
# - Attention, Attention-Norm and Value Zeroing do not always agree: which one moves most between
#   trained and random models? Which one puts most weight on the target itself?
# - In Whisper the decoder does most of the work: the row that predicts the target often *is* the
#   cue token (*les* → *livres*). Notebook 07 tests that directly: replace the cue token in the
#   teacher-forced transcript, or silence the cue's audio, and watch the target's probability.
# - The decoder's number depends on its definition: by the paper's (rows over all positions) much
#   of a row's mass sits on the prompt tokens; the word-pooled variant hides that and looks larger.
#   Say which definition a number uses whenever you compare it with the paper.
#
# To think about:
#
# 1. Synthetic voices give exact homophony and clean word times. Which of our differences from the
#    paper would you expect to shrink on Common Voice, and which would not?
# 2. Why can a *random* model show a non-zero cue contribution at all? What sets its level?
