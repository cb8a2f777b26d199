"""Live re-checks of the shipped results: recompute a few rows and compare them with the bundle.

Notebooks 05-07 load the shipped results (:mod:`.shipped`) and then recompute a few items here to
show that they equal the shipped rows: :func:`recheck_study` (the study: every measure, decoder
definition, prompt mass and probe feature of the first analysed items), :func:`compare_study`
(the comparison itself, on two study results), :func:`recheck_probe` (the probe re-fitted on the
shipped features) and :func:`recheck_attribution` (one attribution example of notebook 07).

On the machine and library versions that computed the bundle the values are equal to ``atol``
(1e-6); elsewhere float32 sums run in another order and a difference within :data:`LOOSE` is
accepted with a printed note. Everything here is importable from :mod:`.shipped` as before.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ctxmix_lite.course.options import Options

__all__ = ["LOOSE", "ShippedResultsError", "ShippedResultsMismatch", "RecheckSettings", "recheck_study",
           "compare_study", "recheck_probe", "recheck_attribution"]

#: how far a live re-check may differ from the shipped rows on *other* hardware or library
#: versions and still be accepted, with a printed note (float32 sums run in another order there);
#: the same machine and versions reproduce them exactly (tests/test_shipped.py)
LOOSE = {"study": 1e-3, "attribution": 1e-3, "probe": 0.02}


class ShippedResultsError(RuntimeError):
    """A shipped bundle is missing, corrupt (size / SHA-256 differs from its provenance) or was
    computed from other items or other definitions than the code that reads it."""


class ShippedResultsMismatch(AssertionError):
    """A live recomputation does not equal the shipped rows."""


def _compare_frames(live, shipped, keys, value: str, what: str):
    """``(rows, largest |difference| of value)``: every row of ``live`` must be in ``shipped``
    (same keys), else :class:`ShippedResultsMismatch`."""
    if not len(live):
        raise ShippedResultsMismatch(f"{what}: the live recomputation produced no rows")
    m = live.merge(shipped, on=list(keys), how="left", suffixes=("_live", "_shipped"), indicator=True)
    missing = m[m["_merge"] != "both"]
    if len(missing):
        raise ShippedResultsMismatch(f"{what}: {len(missing)} live rows have no shipped row, e.g. "
                                     f"{missing[list(keys)].head(3).to_dict('records')}")
    diff = (m[f"{value}_live"].astype(float) - m[f"{value}_shipped"].astype(float)).abs()
    return len(m), float(diff.max()) if len(diff) else 0.0


@dataclass(frozen=True)
class RecheckSettings(Options):
    """How :func:`recheck_study` re-checks the shipped study: the first ``n_items`` analysed items,
    the model ``runs`` (default: the shipped runs), CPU ``threads``, the tolerance ``atol`` (and
    ``loose``, see :func:`compare_study`), ``verbose`` prints the comparison table."""

    n_items: int = 2
    atol: float = 1e-6
    runs: Optional[Sequence] = None
    threads: Optional[int] = None
    verbose: bool = True
    loose: Optional[float] = LOOSE["study"]


def recheck_study(shipped, items, loaded: Optional[dict] = None, options: Optional[RecheckSettings] = None,
                  **settings):
    """Recompute the first ``n_items`` analysed items of ``items`` live (every model, component,
    measure and layer of the shipped runs, no cache) and check that they equal the shipped rows
    (:func:`compare_study`): the main table, every decoder definition, the prompt mass and the
    probe features. Returns the comparison table; raises :class:`ShippedResultsMismatch` when a
    difference exceeds ``atol`` or a row is missing. ``loaded``: ``{ModelRun: (model, processor)}``
    already loaded (CPU copies are used). settings: the fields of :class:`RecheckSettings` (or
    pass ``options=``)."""
    o = RecheckSettings.resolve(options, settings, where="recheck_study")
    n_items, atol, runs, threads, verbose, loose = o.n_items, o.atol, o.runs, o.threads, o.verbose, o.loose
    from .runs import item_key
    from .core import run_study

    prov = getattr(shipped, "provenance", {})
    settings = prov.get("settings", {})
    kept = set(shipped.items.loc[~shipped.items["excluded"].astype(bool), "key"])
    chosen = [dict(it) for it in items if item_key(dict(it)) in kept][:n_items]
    if not chosen:
        raise ShippedResultsMismatch("none of the given items is an analysed item of the shipped study")
    runs = list(runs) if runs is not None else shipped.runs
    from ctxmix_lite.internals.capture import model_device

    # the shipped rows were computed on the CPU: models on another device are re-loaded there
    on_cpu = {r: mp for r, mp in (loaded or {}).items() if model_device(mp[0]).type == "cpu"}
    if verbose and len(on_cpu) < len(loaded or {}):
        print("(the re-check runs on the CPU, where the shipped results were computed: loading CPU copies)")
    t = time.perf_counter()
    live = run_study(chosen, runs, exclude_misrecognised=settings.get("exclude_misrecognised", True), cache=False,
                     progress=False, threads=threads, loaded=on_cpu, options=shipped.options,
                     teacher_forcing=settings.get("teacher_forcing", "transcription"))
    return compare_study(live, shipped, atol=atol, loose=loose, verbose=verbose,
                         title=f"live re-check of {len(chosen)} item(s) against the shipped results "
                               f"({time.perf_counter() - t:.0f} s, tolerance {atol:g}):")


def compare_study(live, shipped, atol: float = 1e-6, loose: Optional[float] = None, verbose: bool = False,
                  title: str = "live re-check against the shipped results:"):
    """Every row of the study result ``live`` must be in ``shipped`` (matched by item content key,
    use, model, component, measure, layer) with the same value within ``atol``: cue contributions
    (all components), every decoder definition, the prompt mass, the probe features (relative to
    their largest magnitude). Returns ``part, rows, max_abs_diff, ok``; raises
    :class:`ShippedResultsMismatch` on a missing row or a larger difference -- unless ``loose`` is
    given and no difference exceeds it (see :func:`_verdict`: accepted with a printed note)."""
    keys = ["key", "use", "model_label", "component", "measure", "layer"]
    report = []
    n, d = _compare_frames(live.all_table, shipped.all_table, keys, "score", "cue contribution")
    report.append(("cue contribution (all components, measures, layers)", n, d))
    if live.variants is not None and len(live.variants):
        n, d = _compare_frames(live.variants, shipped.variants, keys + ["definition"], "score", "decoder definitions")
        report.append(("decoder, every definition", n, d))
    if live.decoder_mass is not None and len(live.decoder_mass):
        lm = live.decoder_mass.merge(live.items[["item", "key"]], on="item")
        sm = shipped.decoder_mass.merge(shipped.items[["item", "key"]], on="item")
        n, d = _compare_frames(lm, sm, ["key", "use", "model_label", "measure", "layer", "position"], "mass",
                               "prompt mass")
        report.append(("decoder prompt mass", n, d))
    key_of = dict(zip(shipped.items["item"], shipped.items["key"]))
    live_key_of = dict(zip(live.items["item"], live.items["key"]))
    nprobe, dprobe = 0, 0.0
    for (label, comp), lp in live.probe.items():
        sp = shipped.probe.get((label, comp))
        if sp is None:
            raise ShippedResultsMismatch(f"probe features of {label} / {comp}: not in the shipped results")
        srow = {(key_of[i], u): j for j, (i, u) in enumerate(zip(sp["items"]["item"], sp["items"]["use"]))}
        for j, (i, u) in enumerate(zip(lp["items"]["item"], lp["items"]["use"])):
            k = (live_key_of[i], u)
            if k not in srow:
                raise ShippedResultsMismatch(f"probe features of {label} / {comp}: item {i} ({u}) not shipped")
            a, b = np.asarray(lp["X"][:, j], np.float64), np.asarray(sp["X"][:, srow[k]], np.float64)
            if a.shape != b.shape:
                raise ShippedResultsMismatch(f"probe features of {label} / {comp}: shape {a.shape} live, {b.shape} shipped")
            scale = max(1.0, float(np.abs(b).max()))
            dprobe = max(dprobe, float(np.abs(a - b).max()) / scale)
            nprobe += 1
    if nprobe:
        report.append(("probe features (relative to the largest |feature|)", nprobe, dprobe))
    return _verdict(report, ["part", "rows", "max_abs_diff"], atol, title,
                    "the live recomputation differs from the shipped results", verbose, loose)


def _verdict(rows, columns, atol: float, title: str, failure: str, verbose: bool, loose: Optional[float] = None):
    """A comparison table (``columns`` + ``ok``), printed under ``title`` when ``verbose``.

    Every ``max_abs_diff <= atol``: equal (``ok`` = True). Otherwise, with ``loose`` given and no
    difference above it: accepted with a printed note saying that bitwise agreement holds only on
    the hardware and versions that computed the shipped rows (``ok`` = "close"). Anything larger
    (or above ``atol`` with ``loose=None``) raises :class:`ShippedResultsMismatch` with ``failure``
    and the failing rows."""
    import pandas as pd

    rep = pd.DataFrame(rows, columns=columns)
    equal = rep["max_abs_diff"] <= atol
    close = rep["max_abs_diff"] <= (loose if loose is not None else atol)
    rep["ok"] = [True if e else ("close" if c else False) for e, c in zip(equal, close)]
    if verbose:
        print(title)
        print(rep.to_string(index=False))
    if not close.all():
        raise ShippedResultsMismatch(
            f"{failure}:\n" + rep[~close].to_string(index=False)
            + "\nRegenerate them (`python -m ctxmix_lite.study.shipped`) or set PRECOMPUTED = False to recompute.")
    if not equal.all():
        import torch

        print(f"note: the live values differ from the shipped ones by up to {rep['max_abs_diff'].max():.1e} "
              f"(above {atol:g}, within {loose:g}). The shipped rows were computed on a CPU with the library "
              f"versions in their provenance; this runtime (torch {torch.__version__}) sums float32 numbers in "
              "another order, which moves the last digits. They are used as shipped; PRECOMPUTED = False "
              "recomputes everything here.")
    return rep


def recheck_probe(shipped, label: Optional[str] = None, component: str = "encoder", seed: int = 0,
                  atol: float = 1e-6, verbose: bool = True, loose: Optional[float] = LOOSE["probe"]):
    """Re-fit the probe of one (model, component) of the shipped study on its shipped features
    (:func:`ctxmix_lite.study.probe.probe_layers`, the notebook's settings) and check accuracy and
    macro-F1 of every layer against the shipped ``probe_scores`` (default: the trained Whisper's
    encoder). The features themselves are checked by :func:`recheck_study`."""
    from .probe import probe_layers

    scores = getattr(shipped, "shipped_frames", {}).get("probe_scores")
    if scores is None:
        raise ShippedResultsError("the shipped study holds no probe scores (probe_scores): regenerate it")
    runs = {r.label: r for r in shipped.runs}
    if label is None:
        label = next(r.label for r in shipped.runs if r.init == "trained")
    d = shipped.probe[(label, component)]
    t = time.perf_counter()
    live = probe_layers(d["X"], d["y"], seed=seed, progress=False, model_label=label, model=runs[label].name,
                        init=runs[label].init, component=component)
    ref = scores[(scores["model_label"] == label) & (scores["component"] == component)]
    m = live.merge(ref, on=["model_label", "component", "layer"], suffixes=("_live", "_shipped"))
    if len(m) != len(live) or not len(m):
        raise ShippedResultsMismatch(f"probe of {label} / {component}: {len(live)} live layers, {len(m)} shipped")
    rows = [(f"probe {label} / {component}: {c}", len(m),
             float((m[f"{c}_live"] - m[f"{c}_shipped"]).abs().max())) for c in ("accuracy", "macro_f1")]
    return _verdict(rows, ["part", "layers", "max_abs_diff"], atol,
                    f"live re-fit of the probe ({time.perf_counter() - t:.0f} s, tolerance {atol:g}):",
                    "the re-fitted probe differs from the shipped scores", verbose, loose)


def recheck_attribution(example: dict, live: dict, atol: float = 1e-6, verbose: bool = True,
                        loose: Optional[float] = LOOSE["attribution"]):
    """Compare one shipped example with its live recomputation: the target's probability and the
    gradient x input scores (relative to their largest magnitude), the blank-out drops. ``live``
    holds whichever of ``gxi`` (Attribution), ``deletion`` (DataFrame) was recomputed."""
    rows = []
    if "gxi" in live:
        a, b = np.asarray(live["gxi"].scores, np.float64), np.asarray(example["gxi"].scores, np.float64)
        if a.shape != b.shape:
            raise ShippedResultsMismatch(f"gradient x input: shape {a.shape} live vs {b.shape} shipped")
        rows.append(("p(target)", 1, abs(live["gxi"].value - example["gxi"].value)))
        rows.append(("gradient x input (relative to max |score|)", a.size,
                     float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))))
    if "deletion" in live:
        a, b = live["deletion"]["p_blanked"].to_numpy(float), example["deletion"]["p_blanked"].to_numpy(float)
        if a.shape != b.shape:
            raise ShippedResultsMismatch(f"word deletion: {a.shape} live vs {b.shape} shipped")
        rows.append(("p(target) with each word blanked", a.size, float(np.abs(a - b).max())))
    return _verdict(rows, ["part", "values", "max_abs_diff"], atol,
                    f"live re-check of the shipped example (tolerance {atol:g}):",
                    "the live recomputation differs from the shipped example", verbose, loose)
