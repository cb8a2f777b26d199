#!/usr/bin/env python3
"""Generate notebooks/06_number_probe.ipynb (committed without outputs).

    python scripts/make_nb06.py            # writes the notebook
    python scripts/make_nb06.py --check    # exit 1 if the committed notebook differs from this script
"""
from __future__ import annotations

import sys

from nbgen import ROOT, code, main, md, setup_cell

OUT = ROOT / "notebooks" / "06_number_probe.ipynb"


CELLS = [
    setup_cell(),
    md(r"""
# 06 · Is number decodable? A layer-wise probe (Mohebbi et al., EMNLP 2023)

*Context-Mixing in Speech Transformers* — notebook 7 of 8.

Notebook 05 measured how much the target word *reads* the cue. Here we ask the complementary
question of the paper's probing section: after each layer, is the target's grammatical number
**linearly decodable** from the target's own representation? The target's sound is the same in
both numbers, so any decodable number must have been mixed in from the context.

**Learning goals**

- build probe features from the study (mean over the target's frames in the encoder, over the
  positions that predict the target in the decoder) and score a logistic-regression probe by
  3-fold cross-validation after a seeded shuffle (you write the scoring loop);
- compare trained and random models on one normalised depth axis (Fig. 4 analogue);
- rule out shortcuts: an acoustic baseline (MFCCs), a minimal-pair control showing that the
  target's own acoustics do not carry the label, and shuffled labels;
- relate decodability to the cue contribution of notebook 05.
"""),
    md(r"""
## What runs here (and how it differs from the paper)

Same items and models as notebook 05 (its cache is reused: with the same parameters nothing is
recomputed): Whisper-base trained and random, the XLSR-53 architecture random (the trained French
XLSR with `HUB = True`), synthetic French speech instead of Common Voice. The paper probed
Whisper-medium and XLSR-53 French on 1,000 Common Voice items; our Whisper is smaller and our voices
synthetic (exactly homophonous targets, so the acoustic controls are cleaner than in real speech).
In `SMOKE` mode, misrecognised items are kept so that every class has three items for 3-fold
cross-validation; the numbers of a smoke run mean nothing.
"""),
    code(r"""
MODEL = "openai/whisper-base"     # Whisper (trained: packaged weights; "openai/whisper-medium" needs the hub)
HUB = False                       # True: trained French XLSR-53 as the encoder-only model (needs the hub)
DATA = "offline"                  # "offline" (synthetic) or "hub" (hosein-m/french_homophone_asr)
N_ITEMS = 200                     # items (the same as notebook 05: its cache is reused)
CHECKED_ONLY = True               # only items the data's Whisper-base check passed (the rule drops the rest)
EXCLUDE_MISRECOGNISED = True      # the paper's rule
THREADS = 2                       # CPU threads
SMOKE = False                     # True: tiny run (CI)
SOLUTIONS = False                 # True: use the reference solution of the exercise
SEED = 0                          # items, folds and random initialisation
""", tags=["parameters"]),
    code(r"""
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ctxmix_lite import probe, study
from ctxmix_lite.exercises import nb06, use_solution
from ctxmix_lite.paths import outputs_dir, savefig

torch.set_num_threads(THREADS)
if SMOKE:
    N_ITEMS, EXCLUDE_MISRECOGNISED = 6, False
pd.set_option("display.width", 160)
T0 = time.perf_counter()
"""),
    md(r"""
## 1 · Exercise: the probe's score

A probe is only as honest as its evaluation. Write the study's loop: shuffle the items with
`np.random.default_rng(seed).permutation`, split the shuffled items with
`sklearn.model_selection.StratifiedKFold(n_splits)` (no second shuffle), fit
`StandardScaler` + `LogisticRegression(max_iter=2000)` on the training folds only, and return the
mean held-out accuracy.
"""),
    code(r"""
def cv_accuracy(X, y, n_splits=3, seed=0):
    # YOUR CODE HERE
    raise NotImplementedError


cv_accuracy = use_solution(cv_accuracy, nb06.cv_accuracy, SOLUTIONS)
nb06.check_cv_accuracy(cv_accuracy)

# sanity checks of a probe: a planted linear signal is found, shuffled labels are at chance
X, y = probe.planted_signal(n=200, d=64, strength=2.0, seed=SEED)
print(f"planted signal: {cv_accuracy(X, y, seed=SEED):.2f}   shuffled labels: "
      f"{cv_accuracy(X, np.random.default_rng(SEED).permutation(y), seed=SEED):.2f}")
"""),
    md(r"""
## 2 · Features from the study

`run_study` stores, beside the cue-contribution scores, one vector per item, layer and component:
the mean hidden state over the target's encoder frames, or over the decoder positions that predict
the target's tokens. Layer 0 is the input to the first layer (the embeddings: a baseline that has
seen no context mixing yet).
"""),
    code(r"""
items = study.course_items(DATA, N_ITEMS, smoke=SMOKE, seed=SEED, progress=False, checked_only=CHECKED_ONLY)
RUNS = study.default_model_runs(hub=HUB, smoke=SMOKE, whisper=MODEL)
t = time.perf_counter()
res = study.run_study(items, RUNS, exclude_misrecognised=EXCLUDE_MISRECOGNISED, threads=THREADS)
print(f"study (cached after notebook 05): {time.perf_counter() - t:.0f} s")
for (label, comp), d in res.probe.items():
    print(f"  {label:55s} {comp:8s} X {tuple(d['X'].shape)}  labels {dict(zip(*np.unique(d['y'], return_counts=True)))}")
"""),
    md(r"""
## 3 · The probe, layer by layer (Fig. 4 analogue)

Accuracy against normalised depth (0 = embeddings, 1 = last layer), trained solid, random dashed,
with the acoustic baselines: MFCCs of the **target** word alone (its own sound), of the **cue**
word, and of the whole clip.
"""),
    code(r"""
table = probe.probe_study(res, seed=SEED)
ref = next(k for k in res.probe if k[1] == "encoder")
analyses = res.probe[ref]["items"]
yb = res.probe[ref]["y"]
baselines = {}
for span in ("target", "cue", "clip"):
    Xa = probe.acoustic_features(items, analyses, span=span)
    baselines[f"MFCC {span}"] = probe.cross_validate_probe(Xa, yb, seed=SEED)["accuracy"]
fig, ax = plt.subplots(figsize=(8, 4.5))
probe.plot_probe(table, baselines, ax=ax)
ax.set_title("Number probe on the target (Fig. 4 analogue)")
savefig(fig, "06_fig4_probe")
plt.show()
table.pivot_table(index="layer", columns=["model_label", "component"], values="accuracy").round(2)
"""),
    md(r"""
## 4 · Controls

- **Minimal pairs.** Each item has a twin with the other number (same sentence, voice, prosody).
  If the target's own sound carried number, the two targets would differ acoustically. The ratio
  below is the MFCC distance between the two members' *target* words (resp. *cue* words), divided by
  the typical distance between random items: near 0 means "the same sound".
- **Shuffled labels** on the best layer: a probe that finds signal here overfits.
"""),
    code(r"""
pairs = probe.minimal_pair_distances(items)
print(pairs[["target_ratio", "cue_ratio"]].describe().round(3))
fig, ax = plt.subplots(figsize=(6, 3.2))
bins = np.linspace(0, max(1.5, float(pairs[["target_ratio", "cue_ratio"]].max().max())), 30)
ax.hist(pairs["target_ratio"], bins=bins, alpha=0.7, label="target word (homophones)")
ax.hist(pairs["cue_ratio"], bins=bins, alpha=0.7, label="cue word (le / les, il / ils...)")
ax.set_xlabel("MFCC distance within a minimal pair / distance between random items")
ax.set_ylabel("pairs")
ax.legend()
savefig(fig, "06_minimal_pairs")
plt.show()

best = table.sort_values("accuracy").iloc[-1]
d = res.probe[(best["model_label"], best["component"])]
shuf = probe.shuffled_label_control(d["X"][int(best["layer"])], d["y"], seed=SEED)
print(f"best layer: {best['model_label']} {best['component']} layer {int(best['layer'])}: "
      f"accuracy {best['accuracy']:.2f}; with shuffled labels {shuf['accuracy']:.2f} (chance {shuf['chance']:.2f})")
"""),
    md(r"""
## 5 · Decodability and cue contribution

Does number become decodable where the target reads the cue? For each model and component, the
probe accuracy after layer $l$ beside the cue contribution (value zeroing) of layer $l$'s mixing.
"""),
    code(r"""
summary = res.summary()
merged, corr = probe.relate_to_cue(table, summary)
fig, ax = plt.subplots(figsize=(6.5, 4))
for (label, comp), g in merged.groupby(["model_label", "component"]):
    ax.plot(g["cue_contribution"], g["accuracy"], "o-", ms=4, label=f"{label} {comp}")
ax.set_xlabel("cue contribution of layer l (value zeroing)")
ax.set_ylabel("probe accuracy after layer l")
ax.grid(alpha=0.3)
ax.legend(fontsize=7)
savefig(fig, "06_probe_vs_cue")
plt.show()
corr
"""),
    md(r"""
## 6 · The paper's findings beside ours
"""),
    code(r"""
cmp = study.paper_comparison(summary, RUNS, probe_results=table)
table.to_csv(outputs_dir() / "06_probe.csv", index=False)
print(f"total notebook time {time.perf_counter() - T0:.0f} s")
cmp
"""),
    md(r"""
## Wrap-up

- The target's own audio does not tell singular from plural (minimal pairs, MFCC of the target at
  chance), so a probe that decodes number from the target's representation reads mixed-in context.
- In the decoder the answer is almost written already: the positions that predict the target have
  just read the cue token.
- Decodability and cue contribution need not rise together: a layer can mix the cue in (cue
  contribution) before the number becomes *linearly* separable, or keep it decodable after the
  mixing has moved elsewhere.

To think about:

1. Why normalise depth instead of comparing layer indices across models?
2. The random models are well above chance in some layers. Where can number information come from
   in a model that never learnt anything? (Hint: the cue's frames are next to the target's.)
"""),
]


if __name__ == "__main__":
    sys.exit(main(CELLS, OUT, __doc__))
