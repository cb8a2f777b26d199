"""Number probe: is the grammatical number of the target word linearly decodable, layer by layer?

The paper's probe (Mohebbi et al. 2023, section on probing): for every layer, one feature vector per
item -- the mean of the layer's hidden states over the target word's encoder frames (encoder) or over
the decoder positions that *predict* the target's tokens (decoder) -- and a logistic-regression
classifier (L2, default ``C``) scored by 3-fold cross-validation after a seeded shuffle. Accuracy
and macro-F1, trained vs randomly initialised models, depth normalised to [0, 1] so that models of
different depths share one axis.

Functions here are plain numpy / scikit-learn; the features come from the study pipeline
(:func:`ctxmix_lite.study.run_study` stores them next to the cue-contribution scores) or from
:func:`mfcc_features` (the acoustic baseline and the minimal-pair control).

    x_n^(l) = mean_{t in target(n)} h_t^(l)                       one vector per item and layer
    p(y = plural | x) = sigmoid(w . x + b),  min_w  sum_n CE + ||w||^2 / (2C)
    accuracy = mean_folds mean_n [y_hat_n == y_n],  macro-F1 = mean_classes F1_c
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

from ctxmix_lite.course.options import Options

__all__ = [
    "DistanceProbeSettings",
    "cross_validate_probe",
    "probe_layers",
    "normalised_depth",
    "shuffled_label_control",
    "planted_signal",
    "mfcc_features",
    "chance_level",
    "probe_study",
    "acoustic_features",
    "acoustic_baselines",
    "cue_distances",
    "probe_by_distance",
    "distance_counts",
    "PAPER_FIG4_WHISPER_BASE",
    "plot_paper_fig4",
    "DISTANCE_GROUPS",
    "minimal_pair_distances",
    "plot_probe",
    "relate_to_cue",
]


def _as_labels(y) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    return y


def chance_level(y) -> float:
    """Accuracy of always answering the majority class: ``max_c n_c / N``."""
    y = _as_labels(y)
    if len(y) == 0:
        raise ValueError("no labels")
    _, counts = np.unique(y, return_counts=True)
    return float(counts.max() / counts.sum())


def _folds(y: np.ndarray, n_splits: int, seed: int):
    """Seeded shuffle, then stratified folds: (train_idx, test_idx) in the original indexing."""
    from sklearn.model_selection import StratifiedKFold

    n = len(y)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"the probe needs two classes at least, got only {classes.tolist()}")
    if counts.min() < n_splits:
        raise ValueError(
            f"every class needs >= n_splits={n_splits} items for {n_splits}-fold cross-validation; "
            f"class counts are {dict(zip(classes.tolist(), counts.tolist()))}"
        )
    perm = np.random.default_rng(seed).permutation(n)  # the seeded shuffle
    skf = StratifiedKFold(n_splits=n_splits, shuffle=False)
    for tr, te in skf.split(np.zeros(n), y[perm]):
        yield perm[tr], perm[te]


def cross_validate_probe(
    X,
    y,
    n_splits: int = 3,
    seed: int = 0,
    C: float = 1.0,
    standardize: bool = True,
    max_iter: int = 2000,
) -> dict:
    """Logistic-regression probe scored by ``n_splits``-fold cross-validation after a seeded shuffle.

    Parameters
    ----------
    X : array [N, D]
        One feature vector per item.
    y : array [N]
        Labels (any hashable type, e.g. ``"singular"`` / ``"plural"``).
    standardize : bool
        z-score every feature with the *training* fold's mean and std before the regression (keeps
        lbfgs well conditioned across layers whose scales differ by orders of magnitude; the
        decision rule of an L2 probe changes only through the penalty's scale).

    Returns
    -------
    dict with ``accuracy``, ``accuracy_std``, ``macro_f1``, ``macro_f1_std`` (mean / std over folds),
    ``fold_accuracy``, ``fold_macro_f1`` (lists), ``chance`` (majority-class rate) and ``n``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.asarray(X, dtype=np.float64)
    y = _as_labels(y)
    if X.ndim != 2:
        raise ValueError(f"X must be [N, D], got shape {X.shape}")
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]} labels")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or infinite values")
    accs, f1s = [], []
    for tr, te in _folds(y, n_splits, seed):
        clf = LogisticRegression(C=C, max_iter=max_iter)  # L2 penalty is sklearn's default
        model = make_pipeline(StandardScaler(), clf) if standardize else clf
        model.fit(X[tr], y[tr])
        pred = model.predict(X[te])
        accs.append(accuracy_score(y[te], pred))
        f1s.append(f1_score(y[te], pred, average="macro"))
    return {
        "accuracy": float(np.mean(accs)),
        "accuracy_std": float(np.std(accs)),
        "macro_f1": float(np.mean(f1s)),
        "macro_f1_std": float(np.std(f1s)),
        "fold_accuracy": [float(a) for a in accs],
        "fold_macro_f1": [float(f) for f in f1s],
        "chance": chance_level(y),
        "n": int(len(y)),
    }


def normalised_depth(layer, n_layers: int):
    """Depth in [0, 1]: ``layer / n_layers`` where state 0 is the input to the first Transformer layer
    and state ``n_layers`` the output of the last one."""
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    layer = np.asarray(layer)
    if np.any(layer < 0) or np.any(layer > n_layers):
        raise ValueError(f"layer indices must lie in [0, {n_layers}], got {layer}")
    out = layer / float(n_layers)
    return float(out) if out.ndim == 0 else out


def _layer_names(layers):
    from ctxmix_lite.viz.plotting import state_label

    return [state_label(l) for l in layers]


def probe_layers(
    features,
    y,
    n_splits: int = 3,
    seed: int = 0,
    C: float = 1.0,
    standardize: bool = True,
    progress: bool = False,
    **meta,
):
    """Run :func:`cross_validate_probe` on every layer.

    ``features``: array ``[L+1, N, D]`` (state 0 = the input to layer 1) or a mapping ``layer -> [N, D]``.
    Extra keyword arguments (e.g. ``model="whisper-base", init="trained", component="encoder"``) are
    copied into every row. Returns a tidy ``pandas.DataFrame`` with columns ``layer, layer_name,
    depth, accuracy, accuracy_std, macro_f1, macro_f1_std, chance, n`` (+ the meta columns);
    ``layer`` is the hidden-state index (0 = the input to layer 1, ``l`` = the output of layer
    ``l``) and ``layer_name`` its learner-facing name (:func:`ctxmix_lite.viz.plotting.state_label`:
    ``"input (0)"``, ``"layer 1"``, ...).  The paper probes states 1..L only
    (``probing/save_rep.py`` keeps ``hidden_states[1:]``): the ``input (0)`` row is this course's.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    if isinstance(features, Mapping):
        layers = sorted(features)
        mats = [features[k] for k in layers]
    else:
        arr = np.asarray(features)
        if arr.ndim != 3:
            raise ValueError(f"features must be [L+1, N, D] or a dict of [N, D], got shape {arr.shape}")
        layers = list(range(arr.shape[0]))
        mats = list(arr)
    n_layers = max(layers) if max(layers) > 0 else 1
    rows = []
    for layer, X in tqdm(list(zip(layers, mats)), desc="probe", disable=not progress):
        r = cross_validate_probe(X, y, n_splits=n_splits, seed=seed, C=C, standardize=standardize)
        rows.append(
            {
                **meta,
                "layer": int(layer),
                "layer_name": _layer_names([layer])[0],
                "depth": normalised_depth(layer, n_layers),
                **{k: r[k] for k in ("accuracy", "accuracy_std", "macro_f1", "macro_f1_std", "chance", "n")},
            }
        )
    return pd.DataFrame(rows)


def shuffled_label_control(X, y, seed: int = 0, **kw) -> dict:
    """Same probe with the labels randomly permuted (seeded): a probe that finds 'signal' here
    overfits. Expected accuracy ~ chance."""
    y = _as_labels(y)
    y_perm = y[np.random.default_rng(seed + 1).permutation(len(y))]
    return cross_validate_probe(X, y_perm, seed=seed, **kw)


def planted_signal(n: int = 200, d: int = 32, strength: float = 2.0, noise_dims: Optional[int] = None, seed: int = 0):
    """Synthetic probe data with a known answer: ``x = noise + strength * y_pm * u`` where ``u`` is a
    random unit direction and ``y_pm`` = +-1. With ``strength`` >= 2 a linear probe is near 100 %.
    Returns ``(X [n, d], y [n] in {"singular", "plural"})`` balanced."""
    rng = np.random.default_rng(seed)
    if n < 6 or d < 1:
        raise ValueError(f"need n >= 6 and d >= 1, got n={n}, d={d}")
    y01 = np.arange(n) % 2
    rng.shuffle(y01)
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)
    X = rng.standard_normal((n, d)) + strength * (2 * y01[:, None] - 1) * u[None, :]
    y = np.where(y01 == 1, "plural", "singular")
    return X, y


def mfcc_features(
    audio,
    span: Optional[Sequence[float]] = None,
    sampling_rate: int = 16000,
    n_mfcc: int = 13,
    margin: float = 0.0,
) -> np.ndarray:
    """Acoustic baseline: MFCCs (25 ms window, 10 ms hop) of ``audio`` restricted to the time span
    ``span = (start, end)`` in seconds, summarised as ``[mean, std]`` over frames -> ``[2 * n_mfcc]``.

    Used twice in notebook 06: on the target word's span (the *minimal-pair control*: singular and
    plural targets are homophones, so their own acoustics should not carry the label) and on the
    cue's span (which does carry it)."""
    import librosa

    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"audio must be a non-empty 1-D array, got shape {x.shape}")
    if span is not None:
        start, end = float(span[0]) - margin, float(span[1]) + margin
        if not end > start:
            raise ValueError(f"span end must be after start, got {span}")
        a = max(0, int(round(start * sampling_rate)))
        b = min(len(x), int(round(end * sampling_rate)))
        if b - a < int(0.025 * sampling_rate):
            raise ValueError(f"span {span} covers {b - a} samples: shorter than one 25 ms MFCC window")
        x = x[a:b]
    m = librosa.feature.mfcc(
        y=x, sr=sampling_rate, n_mfcc=n_mfcc, n_fft=int(0.025 * sampling_rate),
        hop_length=int(0.010 * sampling_rate), n_mels=40, center=False,
    )  # [n_mfcc, frames]
    return np.concatenate([m.mean(axis=1), m.std(axis=1)]).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# the probe on the study's features, baselines and controls (notebook 06)
# ------------------------------------------------------------------------------------------------
def probe_study(result, n_splits: int = 3, seed: int = 0, C: float = 1.0, progress: bool = True):
    """Probe every layer of every (model, component) of a :class:`~ctxmix_lite.study.StudyResult`
    (features stored by the study: mean over the target's frames / predicting positions, state 0 =
    the input to layer 1). Returns a tidy table with ``model_label, init, component, layer, depth, ...``."""
    import pandas as pd

    runs = {r.label: r for r in result.runs}
    out = []
    for (label, comp), d in result.probe.items():
        r = runs.get(label)
        _, counts = np.unique(d["y"], return_counts=True)
        if len(counts) < 2 or counts.min() < n_splits:
            print(f"[probe] skipped {label} {comp}: class counts {counts.tolist()} < {n_splits} folds")
            continue
        df = probe_layers(d["X"], d["y"], n_splits=n_splits, seed=seed, C=C, progress=progress,
                          model_label=label, model=getattr(r, "name", label), init=getattr(r, "init", ""),
                          component=comp)
        out.append(df)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def acoustic_features(items, analyses, span: str = "target", n_mfcc: int = 13):
    """MFCC features of each analysed (item, use): ``span="target"`` (the target word's own audio),
    ``"cue"`` (the cue word(s)) or ``"clip"`` (the whole clip). ``analyses``: rows with ``base_item``
    and ``use`` (e.g. ``result.probe[...]["items"]``). Returns ``X [N, 2 n_mfcc]``."""
    from .runs import alignment_of, audio_of, item_id_of, item_uses

    by_id = {}
    for k, it in enumerate(items):
        by_id[item_id_of(it, k)] = it
    X = []
    for base, use in zip(analyses["base_item"], analyses["use"]):
        it = by_id[base]
        al = alignment_of(it)
        u = next(x for x in item_uses(it) if x.name == use)
        audio = audio_of(it)
        if span == "target":
            sp = (al[u.target]["start"], al[u.target]["end"])
        elif span == "cue":
            sp = (min(al[c]["start"] for c in u.cue), max(al[c]["end"] for c in u.cue))
        elif span == "clip":
            sp = None
        else:
            raise ValueError(f"span must be 'target', 'cue' or 'clip', got {span!r}")
        X.append(mfcc_features(audio, sp, n_mfcc=n_mfcc))
    return np.stack(X)


def acoustic_baselines(items, analyses, y, seed: int = 0, spans=("target", "cue", "clip"), n_splits: int = 3) -> "object":
    """The probe on MFCC summaries of each span (see :func:`acoustic_features`), printed by the
    notebook as measured: a ``pandas.DataFrame`` with ``features, accuracy, accuracy_std, macro_f1,
    chance, n``."""
    import pandas as pd

    rows = []
    for span in spans:
        r = cross_validate_probe(acoustic_features(items, analyses, span=span), y, seed=seed, n_splits=n_splits)
        rows.append(dict(features=f"MFCC {span}", accuracy=r["accuracy"], accuracy_std=r["accuracy_std"],
                         macro_f1=r["macro_f1"], chance=r["chance"], n=r["n"]))
    return pd.DataFrame(rows)


#: cue-distance groups of :func:`probe_by_distance`: name -> test on the distance in words
DISTANCE_GROUPS = {"adjacent (1)": lambda d: d == 1, "non-adjacent (>=2)": lambda d: d >= 2}


def cue_distances(items, analyses) -> np.ndarray:
    """Cue distance of each analysed (item, use), in words: ``target_index - cue_index`` with the
    cue's last word (the nearest to the target) when the cue has several (Det_Noun_Verb's second
    use: cue = det + noun). 1 = the cue is right before the target. ``analyses``: rows with
    ``base_item`` and ``use`` (``result.probe[...]["items"]``)."""
    from .runs import item_id_of, item_uses

    by_id = {item_id_of(it, k): it for k, it in enumerate(items)}
    out = []
    for base, use in zip(analyses["base_item"], analyses["use"]):
        if base not in by_id:
            raise KeyError(f"item {base!r} of the study is not among the items given")
        u = next(x for x in item_uses(by_id[base]) if x.name == use)
        out.append(int(u.target) - int(max(u.cue)))
    return np.asarray(out, dtype=int)


@dataclass(frozen=True)
class DistanceProbeSettings(Options):
    """:func:`probe_by_distance`: the probe's cross-validation folds (``n_splits``), ``seed`` and
    inverse regularisation ``C`` (as :func:`probe_layers`), a ``progress`` bar, and ``verbose``
    (print the groups that are skipped)."""

    n_splits: int = 3
    seed: int = 0
    C: float = 1.0
    progress: bool = False
    verbose: bool = True


def probe_by_distance(result, items, groups: Optional[Mapping] = None,
                      options: Optional[DistanceProbeSettings] = None, **settings):
    """The probe of :func:`probe_study`, separately for each cue-distance group
    (:data:`DISTANCE_GROUPS`: adjacent vs ``>= 2`` words apart), whatever distances the items have.
    settings: the fields of :class:`DistanceProbeSettings` (or pass ``options=``).

    A group is probed only where each class has at least ``n_splits`` items; otherwise it is
    skipped with a printed note (never silently). Returns ``(table, counts)``: the tidy probe table
    with a ``distance_group`` column (possibly empty), and the counts per (model, component,
    group, label) and per exact distance, so a reader sees what each number rests on."""
    import pandas as pd

    o = DistanceProbeSettings.resolve(options, settings, where="probe_by_distance")
    n_splits, seed, C, progress, verbose = o.n_splits, o.seed, o.C, o.progress, o.verbose
    groups = dict(DISTANCE_GROUPS if groups is None else groups)
    runs = {r.label: r for r in result.runs}
    out = []
    counts = distance_counts(result, items, groups)
    for (label, comp), d in result.probe.items():
        dist = cue_distances(items, d["items"])
        y = np.asarray(d["y"])
        for gname, test in groups.items():
            keep = np.array([bool(test(int(x))) for x in dist], dtype=bool)
            yk = y[keep]
            cls, cnt = np.unique(yk, return_counts=True)
            per = dict(zip(cls.tolist(), cnt.tolist()))
            if len(cls) < 2 or cnt.min() < n_splits:
                if verbose:
                    print(f"[probe by distance] {label} {comp} {gname}: {int(keep.sum())} items {per} -- "
                          f"fewer than {n_splits} per class, not probed")
                continue
            df = probe_layers(d["X"][:, keep], yk, n_splits=n_splits, seed=seed, C=C, progress=progress,
                              model_label=label, model=getattr(runs.get(label), "name", label),
                              init=getattr(runs.get(label), "init", ""), component=comp, distance_group=gname)
            out.append(df)
    table = pd.concat(out, ignore_index=True) if out else pd.DataFrame(
        columns=["model_label", "component", "distance_group", "layer", "layer_name", "accuracy", "n"])
    return table, counts


def distance_counts(result, items, groups: Optional[Mapping] = None):
    """What each group of :func:`probe_by_distance` rests on, without fitting anything: per (model,
    component, group) the number of analyses, their labels and their exact cue distances."""
    import pandas as pd

    groups = dict(DISTANCE_GROUPS if groups is None else groups)
    counts = []
    for (label, comp), d in result.probe.items():
        dist = cue_distances(items, d["items"])
        y = np.asarray(d["y"])
        for gname, test in groups.items():
            keep = np.array([bool(test(int(x))) for x in dist], dtype=bool)
            cls, cnt = np.unique(y[keep], return_counts=True)
            dists = dict(zip(*np.unique(dist[keep], return_counts=True))) if keep.any() else {}
            counts.append(dict(model_label=label, component=comp, distance_group=gname, n=int(keep.sum()),
                               labels=dict(zip(cls.tolist(), cnt.tolist())),
                               distances={int(k): int(v) for k, v in dists.items()}))
    return pd.DataFrame(counts)


def minimal_pair_distances(items, n_mfcc: int = 13):
    """Minimal-pair control: for each pair (same sentence, voice and prosody; singular vs plural),
    the distance between the two members' MFCC summaries of the target word and of the cue word,
    each divided by the mean distance between *random* items' target (resp. cue) features.
    Homophonous targets give ratios near 0 (same sound), audible cues ratios near or above 1.
    Returns a ``pandas.DataFrame``: ``pair_id, template, target_ratio, cue_ratio``."""
    import pandas as pd

    from .runs import alignment_of, audio_of, item_uses

    feats = {}
    for it in items:
        al = alignment_of(it)
        u = item_uses(it)[0]
        audio = audio_of(it)
        t = mfcc_features(audio, (al[u.target]["start"], al[u.target]["end"]), n_mfcc=n_mfcc)
        c = mfcc_features(audio, (min(al[i]["start"] for i in u.cue), max(al[i]["end"] for i in u.cue)), n_mfcc=n_mfcc)
        feats.setdefault(it.get("pair_id"), {})[it.get("label")] = (t, c, it.get("template"))
    pairs = {p: d for p, d in feats.items() if len(d) == 2}
    if not pairs:
        raise ValueError("no complete minimal pair (singular + plural with the same pair_id) among the items")
    T = np.stack([v[0] for d in feats.values() for v in d.values()])
    Cf = np.stack([v[1] for d in feats.values() for v in d.values()])
    rng = np.random.default_rng(0)
    ia, ib = rng.integers(0, len(T), 500), rng.integers(0, len(T), 500)
    keep = ia != ib
    t_ref = np.linalg.norm(T[ia[keep]] - T[ib[keep]], axis=1).mean()
    c_ref = np.linalg.norm(Cf[ia[keep]] - Cf[ib[keep]], axis=1).mean()
    rows = []
    for p, d in pairs.items():
        (ts, cs, tpl), (tp, cp, _) = d["singular"], d["plural"]
        rows.append(dict(pair_id=p, template=tpl, target_ratio=float(np.linalg.norm(ts - tp) / t_ref),
                         cue_ratio=float(np.linalg.norm(cs - cp) / c_ref)))
    return pd.DataFrame(rows)


#: The paper's probe accuracies for **Whisper-base** (its Fig. 4), read from the figure -- the
#: paper and its repository publish no numbers. Source: Fig. 4 of Mohebbi et al. (EMNLP 2023) as
#: reproduced on page 20 of the first author's Interspeech 2025 tutorial deck
#: (interpretingdl/speech-interpretability-tutorial @ de98b7c, the third image of that page),
#: digitised by the curve's colour (ggplot's #F8766D) with ``scripts/digitise_fig4.py``. The
#: paper probes the outputs of layers 1-6 (``probing/save_rep.py`` keeps ``hidden_states[1:]``),
#: drawn there at depth (l - 1) / 5; the curve's kinks sit at those depths. Read to about +-0.005;
#: ``nan`` where the curve is hidden under the other models' curves (trained decoder, layers 4-6,
#: all near 0.99-1.00). Keys: (component, init); values: layer outputs 1..6.
PAPER_FIG4_WHISPER_BASE = {
    ("encoder", "trained"): (0.698, 0.710, 0.736, 0.801, 0.870, 0.855),
    ("encoder", "random"): (0.636, 0.633, 0.638, 0.637, 0.630, 0.620),
    ("decoder", "trained"): (0.974, 0.975, 0.982, float("nan"), float("nan"), float("nan")),
    ("decoder", "random"): (0.963, 0.953, 0.948, 0.946, 0.945, 0.948),
}


def plot_paper_fig4(ax, components=("encoder", "decoder"), n_layers: int = 6):
    """Draw :data:`PAPER_FIG4_WHISPER_BASE` on a :func:`plot_probe` axis: layer ``l``'s output at
    this course's depth ``l / n_layers`` (the same state as ours), black, trained solid, random
    dashed, labelled as read from the paper's figure."""
    for (comp, init), vals in PAPER_FIG4_WHISPER_BASE.items():
        if comp not in components:
            continue
        depth = [l / n_layers for l in range(1, len(vals) + 1)]
        ax.plot(depth, vals, color="black", marker="x", ms=5, lw=1.4, ls="-" if init == "trained" else "--",
                label=f"paper Fig. 4 (read from the figure): Whisper-base {comp}, {init}")
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    return ax


def plot_probe(table, baselines: Optional[dict] = None, metric: str = "accuracy", ax=None):
    """Fig. 4 analogue: probe ``metric`` against normalised depth, one line per (model, component);
    trained solid, random dashed; ``baselines`` = ``{name: value}`` drawn as horizontal lines."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 4.2))
    for (label, comp), g in table.groupby(["model_label", "component"], sort=True):
        g = g.sort_values("depth")
        random = "random" in str(g["init"].iloc[0]) if "init" in g else "random" in label
        ax.errorbar(g["depth"], g[metric], yerr=g.get(f"{metric}_std"), marker="o", ms=3, capsize=2,
                    ls="--" if random else "-", label=f"{label} {comp}")
    chance = float(table["chance"].iloc[0]) if "chance" in table and len(table) else 0.5
    ax.axhline(chance, color="0.5", lw=1, ls=":", label=f"chance ({chance:.2f})")
    for k, (name, v) in enumerate((baselines or {}).items()):
        ax.axhline(v, color=f"C{(k + 5) % 10}", lw=1.2, ls="-.", label=f"{name} ({v:.2f})")
    ax.set_xlabel("normalised depth (0 = input to layer 1, 1 = output of the last layer)")
    ax.set_ylabel(f"probe {metric.replace('_', '-')} (3-fold CV)")
    ax.set_ylim(0.3, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    return ax


def relate_to_cue(probe_table, summary, measure: str = "value_zeroing"):
    """Probe accuracy of layer ``l``'s output beside the cue contribution of layer ``l``'s mixing
    (same model and component; the decoder probe is paired with the decoder's cue contribution).
    Returns the merged table and the Spearman correlation per (model, component)."""
    import pandas as pd
    from scipy.stats import spearmanr

    s = summary[summary["measure"] == measure][["model_label", "component", "layer", "mean"]]
    m = probe_table.merge(s.rename(columns={"mean": "cue_contribution"}), on=["model_label", "component", "layer"])
    rows = []
    import warnings

    for (label, comp), g in m.groupby(["model_label", "component"]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rho = spearmanr(g["cue_contribution"], g["accuracy"]).statistic if len(g) > 2 and g["accuracy"].std() > 0 and g["cue_contribution"].std() > 0 else float("nan")
        rows.append(dict(model_label=label, component=comp, layers=len(g), spearman=float(rho)))
    return m, pd.DataFrame(rows)
