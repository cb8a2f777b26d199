"""Shipped results: the full offline study, computed once and committed under ``data/results/``.

A tutorial or a Colab classroom has no time to recompute the homophony study (tens of minutes on
two CPU cores, and Colab opens every notebook in a fresh runtime). Notebooks 05-07 therefore load
these results by default (their ``PRECOMPUTED`` parameter), **recompute a few items live and check
that they equal the shipped rows** (:func:`recheck_study`, :func:`recheck_attribution`), and say so.
``PRECOMPUTED = False`` recomputes everything as before.

A bundle is a folder::

    data/results/<name>/
        provenance.json      what, how, from what: data build key and dataset fingerprint, model
                             runs and their weight fingerprints, code version, settings, command,
                             timings, and the SHA-256 of every file below
        <frame>.csv.gz       tidy tables (pandas CSV; floats written at full precision)
        arrays.npz           arrays (probe features, attribution scores)

:func:`read_bundle` checks every file's size and SHA-256 against ``provenance.json`` before use and
names the file that does not match (:class:`ShippedResultsError`); :func:`load_study` also checks
that the bundle was computed from the same items (dataset fingerprint) and with the same study
definitions (:data:`ctxmix_lite.study.SCORING_SCHEMA`) as the code that reads it.

Regenerate (after the data, the models or the study's definitions change)::

    python -m ctxmix_lite.study.shipped            # ~30-60 min on 2 CPU cores (resumes from the study cache)
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ctxmix_lite.course.options import Options

# the live re-checks live in .recheck; they stay importable from here (notebooks: shipped.recheck_study).
# Absolute imports throughout: `python -m ctxmix_lite.study.shipped` runs this file as package `ctxmix_lite`.
from ctxmix_lite.study.recheck import (LOOSE, RecheckSettings, ShippedResultsError, ShippedResultsMismatch,
                                      compare_study, recheck_attribution, recheck_probe, recheck_study)

__all__ = [
    "FORMAT",
    "STUDY_BUNDLE",
    "ATTRIBUTION_BUNDLE",
    "ShippedResultsError",
    "ShippedResultsMismatch",
    "results_dir",
    "write_bundle",
    "read_bundle",
    "weights_fingerprint",
    "code_version",
    "save_study",
    "load_study",
    "usable",
    "describe",
    "StudyRecord",
    "RecheckSettings",
    "recheck_study",
    "compare_study",
    "recheck_probe",
    "LOOSE",
    "save_attribution",
    "load_attribution",
    "recheck_attribution",
    "main",
]

FORMAT = "ctxmix-shipped/1"
#: the bundle notebooks 05 and 06 load (the study at the notebooks' default parameters)
STUDY_BUNDLE = "homophony-study-offline"
#: the bundle notebook 07 loads (its attribution examples at the default parameters)
ATTRIBUTION_BUNDLE = "attribution-offline"

def results_dir() -> Path:
    """``data/results`` of the checkout (``$CTXMIX_RESULTS`` overrides)."""
    env = os.environ.get("CTXMIX_RESULTS")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "data" / "results"


def _bundle_path(name_or_path) -> Path:
    p = Path(name_or_path)
    return p if (p.is_absolute() or p.exists() or len(p.parts) > 1) else results_dir() / p


# ------------------------------------------------------------------------------------------------
# bundles: tables + arrays + provenance, checked on read
# ------------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _dtype_name(dtype) -> str:
    return str(dtype)


def write_bundle(directory, frames: dict, arrays: dict, provenance: dict) -> Path:
    """Write ``frames`` (name -> DataFrame) as ``name.csv.gz``, ``arrays`` (name -> ndarray) into
    ``arrays.npz`` and ``provenance`` (plus each frame's dtypes and every file's size and SHA-256)
    as ``provenance.json``. Written to a temporary folder first, then moved into place."""
    import shutil

    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    files, dtypes = {}, {}
    for name, df in frames.items():
        fn = f"{name}.csv.gz"
        df.to_csv(tmp / fn, index=False, compression={"method": "gzip", "mtime": 0})
        dtypes[name] = {str(c): _dtype_name(t) for c, t in df.dtypes.items()}
    if arrays:
        buf = io.BytesIO()
        np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        (tmp / "arrays.npz").write_bytes(buf.getvalue())
    for p in sorted(tmp.iterdir()):
        files[p.name] = dict(bytes=p.stat().st_size, sha256=_sha256(p))
    prov = dict(provenance)
    prov.update(format=FORMAT, dtypes=dtypes, files=files)
    (tmp / "provenance.json").write_text(json.dumps(prov, indent=1, sort_keys=True, default=str) + "\n")
    if directory.exists():
        shutil.rmtree(directory)
    tmp.rename(directory)
    return directory


def read_bundle(name_or_path, kind: Optional[str] = None):
    """``(frames, arrays, provenance)`` of a bundle, after checking every file against
    ``provenance.json`` (presence, size, SHA-256) -- a mismatch raises :class:`ShippedResultsError`
    naming the file."""
    import pandas as pd

    d = _bundle_path(name_or_path)
    pj = d / "provenance.json"
    if not pj.is_file():
        raise ShippedResultsError(f"no shipped results at {d} (missing {pj.name}); regenerate them with "
                                  "`python -m ctxmix_lite.study.shipped` or run the notebook with PRECOMPUTED = False")
    try:
        prov = json.loads(pj.read_text())
    except (OSError, ValueError) as err:
        raise ShippedResultsError(f"{pj} is not readable JSON ({err}); restore it from git "
                                  "(git checkout -- data/results) or regenerate the bundle") from err
    if prov.get("format") != FORMAT:
        raise ShippedResultsError(f"{pj}: format {prov.get('format')!r}, this code reads {FORMAT!r}")
    if kind is not None and prov.get("kind") != kind:
        raise ShippedResultsError(f"{pj}: a {prov.get('kind')!r} bundle, expected {kind!r}")
    for fn, meta in sorted(prov.get("files", {}).items()):
        p = d / fn
        if not p.is_file():
            raise ShippedResultsError(f"{p} is missing (listed in {pj.name})")
        if p.stat().st_size != meta["bytes"] or _sha256(p) != meta["sha256"]:
            raise ShippedResultsError(
                f"{p} does not match its provenance ({p.stat().st_size} bytes, expected {meta['bytes']}; "
                "SHA-256 differs): the file is corrupt or was edited. Restore it (git checkout -- "
                f"{p}) or regenerate the bundle with `python -m ctxmix_lite.study.shipped`")
    frames = {}
    for name, dts in prov.get("dtypes", {}).items():
        p = d / f"{name}.csv.gz"
        text_cols = {c: str for c, dt in dts.items() if dt == "object" or dt.startswith("str")}
        try:  # text columns stay text ("0007" is not 7); an empty cell reads back as None
            df = pd.read_csv(p, keep_default_na=True, dtype=text_cols)
        except (OSError, ValueError, EOFError) as err:
            raise ShippedResultsError(f"{p} could not be read ({type(err).__name__}: {err})") from err
        for col, dt in dts.items():
            if col not in df.columns:
                raise ShippedResultsError(f"{p}: column {col!r} listed in the provenance is missing")
            if dt == "object" or dt.startswith("str"):
                df[col] = df[col].astype(object).where(df[col].notna(), None)
            elif dt == "bool":
                df[col] = df[col].astype(bool)
            else:
                df[col] = df[col].astype(dt)
        frames[name] = df
    arrays = {}
    if (d / "arrays.npz").is_file():
        with np.load(d / "arrays.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    return frames, arrays, prov


# ------------------------------------------------------------------------------------------------
# provenance
# ------------------------------------------------------------------------------------------------
def weights_fingerprint(model) -> str:
    """SHA-256 (first 16 hex) of a model's parameters and buffers, by name, as float32 bytes."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        a = t.detach().to("cpu")
        if a.is_floating_point():
            a = a.to(torch.float32)
        h.update(a.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def code_version() -> dict:
    """The package version, the git commit of the checkout (and whether it had local changes),
    the study's scoring schema and the library versions that compute the numbers."""
    import torch
    import transformers

    from ctxmix_lite import __version__
    from ctxmix_lite.study.runs import SCORING_SCHEMA

    root = Path(__file__).resolve().parents[2]
    commit, dirty = None, None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        st = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "ctxmix_lite"],
                            cwd=root, capture_output=True, text=True, timeout=10).stdout
        dirty = bool(st.strip()) if commit else None
    except (OSError, subprocess.SubprocessError):
        pass
    return dict(ctxmix_lite=__version__, git_commit=commit, package_modified=dirty,
                scoring_schema=SCORING_SCHEMA, torch=torch.__version__, transformers=transformers.__version__,
                numpy=np.__version__, cpu=cpu_id())


def cpu_id() -> str:
    """The CPU the numbers are computed on: torch's SIMD level and the processor's model name
    (float32 sums are reduced in a different order on another CPU: differences of ~1e-6 to 1e-5)."""
    import platform

    import torch

    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            name = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        pass
    return f"{torch.backends.cpu.get_cpu_capability()} {name or platform.processor() or platform.machine()}".strip()


#: a live recomputation on a CPU or library versions other than the shipped results' agrees to
#: this (float32 summation order; measured 5e-6 on an AMD EPYC against the shipped run)
OTHER_PLATFORM_ATOL = 2e-5


def same_platform(code: dict) -> bool:
    """Whether this machine computes bit-for-bit like the one recorded in ``code`` (a provenance
    ``code`` block): same torch, transformers, numpy and CPU. Results shipped before the CPU was
    recorded count as another platform."""
    import torch
    import transformers

    return (code.get("cpu") == cpu_id() and code.get("torch") == torch.__version__
            and code.get("transformers") == transformers.__version__ and code.get("numpy") == np.__version__)


def _data_provenance(items, data: str) -> dict:
    from ctxmix_lite.study.runs import dataset_fingerprint, item_key

    keys = [item_key(dict(it)) for it in items]
    d = dict(source=data, dataset_fingerprint=dataset_fingerprint(keys), n_items=len(keys))
    rep = getattr(items, "_ctxmix_report", None)
    build = getattr(items, "_ctxmix_build_dir", None)
    if isinstance(rep, dict) and rep.get("key"):
        d["build_key"] = rep.get("key")
    elif build:  # an offline build: its folder is named by its key, its report.json holds it
        try:
            d["build_key"] = json.loads((Path(build) / "report.json").read_text()).get("key") or Path(build).name
        except (OSError, ValueError):
            d["build_key"] = Path(build).name
    return d


def _run_record(run, model=None) -> dict:
    d = asdict(run)
    d["config_overrides"] = [list(kv) for kv in run.config_overrides]
    d["label"] = run.label
    if model is not None:
        d["weights_fingerprint"] = weights_fingerprint(model)
    return d


def _run_from_record(d: dict):
    from ctxmix_lite.study.runs import ModelRun

    return ModelRun(d["name"], d["init"], int(d["seed"]), tuple(tuple(kv) for kv in d.get("config_overrides", [])))


# ------------------------------------------------------------------------------------------------
# the study (notebooks 05 and 06)
# ------------------------------------------------------------------------------------------------
_STUDY_FRAMES = ("all_table", "exclusions", "items", "variants", "decoder_mass")


@dataclass(frozen=True)
class StudyRecord(Options):
    """What :func:`save_study` records beside the result: the ``data`` source (``"offline"``), the
    ``settings`` the items were chosen and the study run with (n_items, checked_only, seed,
    exclude_misrecognised, teacher_forcing...), the ``command`` that made it, and ``extra_frames``
    (``{name: DataFrame}`` computed from the study, e.g. notebook 06's probe scores)."""

    data: str = "offline"
    settings: Optional[dict] = None
    command: str = ""
    extra_frames: Optional[dict] = None


def save_study(res, items, directory=None, *, loaded: Optional[dict] = None,
               options: Optional[StudyRecord] = None, **record) -> Path:
    """Write a :class:`~ctxmix_lite.study.StudyResult` as a bundle (``directory`` default:
    ``data/results/homophony-study-offline``). ``loaded``: ``{ModelRun: (model, processor)}`` to
    record each model's weight fingerprint. record: the fields of :class:`StudyRecord` (``data``,
    ``settings``, ``command``, ``extra_frames``; or pass ``options=``)."""
    import pandas as pd

    o = StudyRecord.resolve(options, record, where="save_study")
    data, settings, command, extra_frames = o.data, o.settings, o.command, o.extra_frames

    directory = Path(directory) if directory is not None else results_dir() / STUDY_BUNDLE
    frames = {name: getattr(res, name) for name in _STUDY_FRAMES if getattr(res, name) is not None}
    arrays, probe_meta, probe_items = {}, [], []
    for i, ((label, comp), d) in enumerate(sorted(res.probe.items())):
        arrays[f"probe{i}_X"] = np.asarray(d["X"], dtype=np.float32)
        meta = d["items"].copy()
        meta.insert(0, "probe", i)
        probe_items.append(meta)
        probe_meta.append(dict(index=i, model_label=label, component=comp, shape=list(np.shape(d["X"]))))
    if probe_items:
        frames["probe_items"] = pd.concat(probe_items, ignore_index=True)
    for name, df in (extra_frames or {}).items():  # e.g. the probe's scores (notebook 06)
        if name in frames:
            raise ValueError(f"extra frame {name!r} clashes with the study's own")
        frames[name] = df
    loaded = loaded or {}
    prov = dict(
        kind="homophony-study",
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        command=command,
        code=code_version(),
        data=_data_provenance(items, data),
        runs=[_run_record(r, loaded.get(r, (None,))[0]) for r in res.runs],
        options=dict(decoder_scoring=res.options.decoder_scoring,
                     skip_special_tokens=bool(res.options.skip_special_tokens)),
        settings=dict(settings or {}),
        fingerprint=res.fingerprint,
        timings={k: round(float(v), 1) for k, v in res.timings.items()},
        probe=probe_meta,
    )
    if prov["data"]["dataset_fingerprint"] != res.fingerprint:
        raise ValueError("the items given are not the items of the result (dataset fingerprints differ)")
    return write_bundle(directory, frames, arrays, prov)


def load_study(name_or_path=STUDY_BUNDLE, items=None, options=None):
    """The shipped :class:`~ctxmix_lite.study.StudyResult` (``table`` rebuilt from ``all_table`` by
    the exclusions it was computed with). Checks the files (:func:`read_bundle`), that the study's
    definitions are this code's (scoring schema) and, when ``items`` is given, that they are the
    items the bundle was computed from (dataset fingerprint). ``options``: the decoder definition
    of ``table`` (default: the one it was computed with; all are in ``variants``)."""
    import pandas as pd

    from ctxmix_lite.study.runs import SCORING_SCHEMA, StudyOptions, dataset_fingerprint, item_key

    from ctxmix_lite.study.core import StudyResult

    frames, arrays, prov = read_bundle(name_or_path, kind="homophony-study")
    where = _bundle_path(name_or_path)
    if prov["code"].get("scoring_schema") != SCORING_SCHEMA:
        raise ShippedResultsError(
            f"{where} was computed with the study schema {prov['code'].get('scoring_schema')!r}, this code "
            f"uses {SCORING_SCHEMA!r}: regenerate it (`python -m ctxmix_lite.study.shipped`) or set PRECOMPUTED = False")
    if items is not None:
        fp = dataset_fingerprint([item_key(dict(it)) for it in items])
        if fp != prov["fingerprint"]:
            raise ShippedResultsError(
                f"{where} was computed from other items (dataset fingerprint {prov['fingerprint']}, these items "
                f"{fp}; its settings: {prov.get('settings')}, data build {prov['data'].get('build_key')}). "
                "Use the notebook's default item parameters, or PRECOMPUTED = False to recompute")
    computed = StudyOptions(**prov["options"])
    opts = StudyOptions.make(options) if options is not None else computed
    all_table = frames["all_table"]
    items_df = frames["items"]
    excluded = set(map(tuple, items_df.loc[items_df["excluded"], ["base_item", "use"]].astype(str).to_numpy()))
    keep = ~all_table[["base_item", "use"]].astype(str).apply(tuple, axis=1).isin(excluded) if len(all_table) else []
    table = all_table[keep].reset_index(drop=True)
    variants = frames.get("variants")
    if opts.decoder_definition != computed.decoder_definition:
        dec = variants[variants["definition"] == opts.decoder_definition].drop(columns=["definition"])
        table = (pd.concat([table[table["component"] != "decoder"], dec], ignore_index=True)
                 .sort_values(["model_label", "item", "component", "measure", "layer"], kind="stable")
                 .reset_index(drop=True))
    probe = {}
    for meta in prov.get("probe", []):
        i = meta["index"]
        pi = frames["probe_items"]
        m = pi[pi["probe"] == i].drop(columns=["probe"]).reset_index(drop=True)
        probe[(meta["model_label"], meta["component"])] = dict(X=arrays[f"probe{i}_X"], y=m["label"].to_numpy(), items=m)
    res = StudyResult(table=table, all_table=all_table, exclusions=frames["exclusions"], items=items_df,
                      probe=probe, runs=[_run_from_record(r) for r in prov["runs"]], fingerprint=prov["fingerprint"],
                      timings=dict(prov.get("timings", {})), options=opts, variants=variants,
                      decoder_mass=frames.get("decoder_mass"))
    res.provenance = prov  # type: ignore[attr-defined]
    # the scores computed from the study and shipped with it (probe_scores, probe_by_distance)
    res.shipped_frames = {k: v for k, v in frames.items()  # type: ignore[attr-defined]
                          if k not in _STUDY_FRAMES and k != "probe_items"}
    return res


def usable(precomputed: bool, **params) -> tuple:
    """``(use_shipped, message)``: the shipped results stand for a run only at the notebooks'
    default parameters (:data:`ctxmix_lite.study.NOTEBOOK_DEFAULTS`, offline data, the paper's
    exclusion rule, no hub model). ``params``: the notebook's values (``model, data, n_items,
    checked_only, seed``, and optionally ``hub=False``, ``exclude_misrecognised=True``,
    ``n_examples, ig_steps, vz_chunk``)."""
    from ctxmix_lite.study.runs import NOTEBOOK_DEFAULTS

    if not precomputed:
        return False, "PRECOMPUTED = False: everything is recomputed here."
    expected = dict(NOTEBOOK_DEFAULTS, hub=False, exclude_misrecognised=True)
    differ = {k: v for k, v in params.items() if k in expected and v != expected[k]}
    if differ:
        return False, ("PRECOMPUTED ignored: the shipped results are the run at "
                       + ", ".join(f"{k}={expected[k]!r}" for k in differ) + "; this notebook asks for "
                       + ", ".join(f"{k}={v!r}" for k, v in differ.items()) + ", so everything is recomputed.")
    return True, ("PRECOMPUTED = True: the shipped results (data/results/) are loaded and a few items are "
                  "recomputed live to check them.")


def describe(res_or_prov) -> None:
    """Print where shipped results come from (their provenance)."""
    prov = getattr(res_or_prov, "provenance", res_or_prov)
    code, data = prov.get("code", {}), prov.get("data", {})
    print(f"shipped {prov.get('kind')} results, created {prov.get('created')} by `{prov.get('command')}`")
    print(f"  code: ctxmix_lite {code.get('ctxmix_lite')} at commit {str(code.get('git_commit'))[:10]}"
          f"{' (package modified)' if code.get('package_modified') else ''}; scoring schema {code.get('scoring_schema')}; "
          f"torch {code.get('torch')}, transformers {code.get('transformers')}")
    print(f"  data: {data.get('source')} build {data.get('build_key')}, {data.get('n_items')} items, "
          f"dataset fingerprint {data.get('dataset_fingerprint')}; settings {prov.get('settings')}")
    for r in prov.get("runs", []):
        print(f"  model {r['label']}: weights {r.get('weights_fingerprint')}")
    if prov.get("model"):
        print(f"  model weights {prov['model'].get('weights_fingerprint')}")


# ------------------------------------------------------------------------------------------------
# attribution examples (notebook 07)
# ------------------------------------------------------------------------------------------------
_ATTR_KEYS = ("gxi", "ig", "vz")


def save_attribution(examples: Sequence[dict], directory=None, *, items=None, data: str = "offline",
                     settings: Optional[dict] = None, model=None, command: str = "") -> Path:
    """Notebook 07's per-example results: ``examples`` = dicts with ``k`` (index in the item pool),
    ``key`` (item content key), ``ids`` (teacher-forced decoder input), ``pos`` (target positions),
    ``gxi`` / ``ig`` / ``vz`` (:class:`~ctxmix_lite.study.attribution.Attribution`), ``deletion``
    (DataFrame) and ``interventions`` (dict)."""
    import pandas as pd

    directory = Path(directory) if directory is not None else results_dir() / ATTRIBUTION_BUNDLE
    arrays, ex_meta, deletions, inter = {}, [], [], []
    for e_i, e in enumerate(examples):
        meta = dict(index=e_i, k=int(e["k"]), key=e["key"], item_id=e.get("item_id"), ids=[int(x) for x in e["ids"]],
                    transcript_ids=[int(x) for x in e["transcript_ids"]],
                    pos=[int(x) for x in e["pos"]], seconds=round(float(e.get("seconds", 0.0)), 1), methods={})
        for m in _ATTR_KEYS:
            a = e[m]
            arrays[f"ex{e_i}_{m}_scores"] = np.asarray(a.scores, dtype=np.float64)
            arrays[f"ex{e_i}_{m}_times"] = np.asarray(a.times, dtype=np.float64)
            meta["methods"][m] = dict(method=a.method, step=float(a.step), value=float(a.value),
                                      extra={k: (float(v) if isinstance(v, (int, float, np.floating)) else v)
                                             for k, v in a.extra.items()})
        ex_meta.append(meta)
        dl = e["deletion"].copy()
        dl.insert(0, "example", e_i)
        deletions.append(dl)
        inter.append(dict(example=e_i, **e["interventions"]))
    prov = dict(
        kind="attribution",
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        command=command, code=code_version(),
        data=_data_provenance(items, data) if items is not None else {},
        model=dict(weights_fingerprint=weights_fingerprint(model)) if model is not None else {},
        settings=dict(settings or {}), examples=ex_meta,
    )
    frames = {"deletion": pd.concat(deletions, ignore_index=True), "interventions": pd.DataFrame(inter)}
    return write_bundle(directory, frames, arrays, prov)


def load_attribution(name_or_path=ATTRIBUTION_BUNDLE, items=None):
    """Notebook 07's shipped examples: a list of dicts as given to :func:`save_attribution` (the
    attributions rebuilt as :class:`~ctxmix_lite.study.attribution.Attribution`) and the provenance."""
    from ctxmix_lite.study.attribution import Attribution
    from ctxmix_lite.study.runs import dataset_fingerprint, item_key

    frames, arrays, prov = read_bundle(name_or_path, kind="attribution")
    if items is not None and prov.get("data"):
        fp = dataset_fingerprint([item_key(dict(it)) for it in items])
        if fp != prov["data"]["dataset_fingerprint"]:
            raise ShippedResultsError(
                f"{_bundle_path(name_or_path)} was computed from other items (dataset fingerprint "
                f"{prov['data']['dataset_fingerprint']}, these items {fp}): use the notebook's default "
                "item parameters, or PRECOMPUTED = False")
    out = []
    dele, inter = frames["deletion"], frames["interventions"]
    for meta in prov["examples"]:
        i = meta["index"]
        e = dict(k=meta["k"], key=meta["key"], item_id=meta.get("item_id"), ids=meta["ids"], pos=meta["pos"],
                 transcript_ids=meta["transcript_ids"],
                 seconds=meta.get("seconds"))
        for m in _ATTR_KEYS:
            mm = meta["methods"][m]
            e[m] = Attribution(mm["method"], arrays[f"ex{i}_{m}_scores"], arrays[f"ex{i}_{m}_times"], mm["step"],
                               mm["value"], dict(mm["extra"]))
        e["deletion"] = dele[dele["example"] == i].drop(columns=["example"]).reset_index(drop=True)
        e["interventions"] = inter[inter["example"] == i].drop(columns=["example"]).iloc[0].to_dict()
        out.append(e)
    return out, prov


# ------------------------------------------------------------------------------------------------
# regeneration
# ------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    """``python -m ctxmix_lite.study.shipped [--only study|attribution]`` -- recompute the shipped results
    at the notebooks' default parameters (resuming from the study cache) and write them under
    ``data/results/``."""
    import argparse

    from ctxmix_lite.study import core as study
    from ctxmix_lite.study.runs import NOTEBOOK_DEFAULTS

    ap = argparse.ArgumentParser(prog="python -m ctxmix_lite.study.shipped", description=main.__doc__)
    ap.add_argument("--only", choices=("study", "attribution"), default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="folder for the bundles (default data/results)")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else results_dir()
    d = NOTEBOOK_DEFAULTS
    items = study.course_items(d["data"], d["n_items"], seed=d["seed"], checked_only=d["checked_only"])
    runs = study.default_model_runs()
    cmd = "python -m ctxmix_lite.study.shipped" + (f" --only {args.only}" if args.only else "")
    if args.only in (None, "study"):
        loaded = {r: r.load() for r in runs}
        t = time.perf_counter()
        res = study.run_study(items, runs, exclude_misrecognised=True, threads=args.threads, loaded=dict(loaded),
                              options=study.StudyOptions())
        from ctxmix_lite.study import probe

        scores = probe.probe_study(res, seed=d["seed"], progress=False)  # notebook 06's probe, its seed
        by_distance, _ = probe.probe_by_distance(res, items, seed=d["seed"], verbose=False)
        p = save_study(res, items, out / STUDY_BUNDLE, data=d["data"], loaded=loaded, command=cmd,
                       extra_frames=dict(probe_scores=scores, probe_by_distance=by_distance),
                       settings=dict(n_items=d["n_items"], checked_only=d["checked_only"], seed=d["seed"],
                                     exclude_misrecognised=True, teacher_forcing="transcription"))
        print(f"study: {time.perf_counter() - t:.0f} s -> {p}")
        del loaded
    if args.only in (None, "attribution"):
        from ctxmix_lite.study.attribution_examples import compute_examples

        t = time.perf_counter()
        model, proc = study.ModelRun(d["model"], "trained").load()
        ex = compute_examples(items, model, proc, n_examples=d["n_examples"], ig_steps=d["ig_steps"],
                              vz_chunk=d["vz_chunk"], progress=True)
        p = save_attribution(ex, out / ATTRIBUTION_BUNDLE, items=items, data=d["data"], model=model, command=cmd,
                             settings=dict(n_items=d["n_items"], checked_only=d["checked_only"], seed=d["seed"],
                                           n_examples=d["n_examples"], ig_steps=d["ig_steps"], vz_chunk=d["vz_chunk"]))
        print(f"attribution: {time.perf_counter() - t:.0f} s -> {p}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
