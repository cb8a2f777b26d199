#!/usr/bin/env python3
"""The notebooks and their sources: ``notebooks/NN_name.ipynb`` <-> ``notebooks/src/NN_name.py``.

Each notebook is written as a jupytext ``py:percent`` source (markdown cells as ``# `` comments
under ``# %% [markdown]``, code cells under ``# %%``, a cell's tags and collapsed state on its
marker line) paired with the committed, output-free ``.ipynb`` (the file learners open, Colab's
badges, papermill). ``notebooks/jupytext.toml`` declares the pairing, so JupyterLab with jupytext
(``make lab``) saves both sides at once; this script is what ``make notebooks`` runs::

    python scripts/sync_notebooks.py                # bring every pair up to date (the newer side wins)
    python scripts/sync_notebooks.py --only 03      # notebooks whose name starts with 03
    python scripts/sync_notebooks.py --from py      # the sources win (or --from ipynb)
    python scripts/sync_notebooks.py --check        # exit 1 naming each pair that is not in sync

Both sides are always written in one normal form, so the committed ``.ipynb`` is a function of its
source alone: no outputs, execution counts or widget state; the course's notebook metadata
(kernelspec ``python3``, ``language_info``, Colab's ``provenance``); cell ids ``nbNN-MM``
(position MM, as the runner's stall reports name them); cell metadata limited to ``tags``,
``jupyter.source_hidden`` and Colab's ``cellView`` (anything else Jupyter adds is dropped, and
said); the first cell, the set-up cell, is the current ``ctxmix_lite.course.colab.COLAB_SETUP_CELL``.

When the two sides say different things, the more recently modified file wins. If both were edited
since the last commit (``git``) and disagree, nothing is written for that notebook until
``--from py`` or ``--from ipynb`` says which edits to keep.
"""
from __future__ import annotations

import argparse
import copy
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = ROOT / "notebooks"
SRC_DIR_NAME = "src"
FMT = "py:percent"
FIX = "make notebooks"
# The notebook-level metadata of every committed notebook (Colab opens it, papermill and the lint
# read the kernelspec; `make` registers the kernel "ctxmix" locally, which the runner picks itself).
NOTEBOOK_METADATA = {
    "colab": {"provenance": []},
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}
# Cell metadata that is part of a notebook: its tags ("parameters", "solution"), a solution's
# collapsed state in JupyterLab (jupyter.source_hidden) and on Colab (cellView "form").
KEPT_CELL_METADATA = ("tags", "jupyter", "cellView")
KEPT_JUPYTER_METADATA = ("source_hidden",)
# Metadata that Jupyter front ends (and jupytext, Colab, papermill) write for their own state:
# dropped without a note. Any other cell metadata is dropped with one.
UI_CELL_METADATA = {"autoscroll", "collapsed", "scrolled", "trusted", "execution", "ExecuteTime",
                    "editable", "deletable", "papermill", "jp-MarkdownHeadingCollapsed", "vscode",
                    "id", "outputId", "executionInfo", "colab",
                    "cell_marker", "lines_to_next_cell", "lines_to_end_of_cell_marker"}


def _import_root():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def pairs(directory: Path = NOTEBOOKS_DIR, only=None) -> list:
    """``[(ipynb, py)]`` for every notebook or source under ``directory`` (either may not exist
    yet), in order, filtered by name prefixes ``only``."""
    stems = {p.stem for p in directory.glob("[0-9][0-9]_*.ipynb")}
    stems |= {p.stem for p in (directory / SRC_DIR_NAME).glob("[0-9][0-9]_*.py")}
    if only:
        prefixes = [o for item in only for o in str(item).split(",") if o]
        stems = {s for s in stems if any(s.startswith(pre) for pre in prefixes)}
    return [(directory / f"{s}.ipynb", directory / SRC_DIR_NAME / f"{s}.py") for s in sorted(stems)]


def _config(directory: Path):
    """The jupytext configuration that JupyterLab uses for these notebooks (notebooks/jupytext.toml),
    so that a source this script writes is the one JupyterLab would write."""
    from jupytext.config import load_jupytext_config

    config = load_jupytext_config(str(directory / "00_x.ipynb"))
    if config is None:
        raise SystemExit(f"no jupytext configuration found for {directory} (notebooks/jupytext.toml)")
    return config


# ---- the normal form --------------------------------------------------------------------------
def normalise(nb, stem: str, notes: list | None = None):
    """A copy of ``nb`` in the committed form (see the module docstring); what it drops that a
    contributor may have meant to keep (cell metadata) is appended to ``notes``."""
    _import_root()
    from ctxmix_lite.course.colab import COLAB_SETUP_CELL

    notes = [] if notes is None else notes
    out = nbformat.v4.new_notebook()
    out.metadata = copy.deepcopy(NOTEBOOK_METADATA)
    for i, cell in enumerate(nb.cells):
        kind = cell.get("cell_type")
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(source)
        if kind == "code":
            new = nbformat.v4.new_code_cell(source)
        elif kind == "markdown":
            new = nbformat.v4.new_markdown_cell(source)
            if cell.get("attachments"):
                new["attachments"] = copy.deepcopy(cell["attachments"])
        else:
            new = nbformat.v4.new_raw_cell(source)
        meta = cell.get("metadata", {}) or {}
        for key in sorted(meta):
            if key == "jupyter":
                kept = {k: v for k, v in meta[key].items() if k in KEPT_JUPYTER_METADATA}
                if kept:
                    new.metadata[key] = kept
            elif key in KEPT_CELL_METADATA:
                if meta[key] not in ([], {}, None, ""):
                    new.metadata[key] = copy.deepcopy(meta[key])
            elif key not in UI_CELL_METADATA:
                notes.append(f"{stem}: cell {i}: dropped the cell metadata {key!r} (kept: "
                             f"{', '.join(KEPT_CELL_METADATA)}; see scripts/sync_notebooks.py)")
        out.cells.append(new)
    if out.cells and out.cells[0].cell_type == "code" and "colab_setup" in out.cells[0].source:
        out.cells[0].source = COLAB_SETUP_CELL  # the current one (ctxmix_lite/colab.py)
    for i, cell in enumerate(out.cells):
        cell["id"] = f"nb{stem[:2]}-{i:02d}"
    out.nbformat, out.nbformat_minor = 4, 5
    return out


def from_source(text: str, stem: str, config, notes=None):
    """The committed notebook of a ``py:percent`` source text."""
    import jupytext

    return normalise(jupytext.reads(text, fmt=FMT, config=config), stem, notes)


def to_source(nb, config) -> str:
    """The ``py:percent`` source text of a normalised notebook."""
    import jupytext

    return jupytext.writes(nb, fmt=FMT, config=config)


def ipynb_text(nb) -> str:
    """The committed ``.ipynb`` text (nbformat's own writer, as Jupyter writes it)."""
    return nbformat.writes(nb)


def read_ipynb(path: Path):
    return nbformat.read(path, as_version=4)


# ---- check and sync ---------------------------------------------------------------------------
def check_pair(ipynb: Path, py: Path, config=None) -> list:
    """Why the pair is not in sync ([] when it is): the committed ``.ipynb`` must be exactly what
    its source gives, and the source in the normal form (what ``make notebooks`` writes)."""
    config = config or _config(ipynb.parent)
    stem = ipynb.stem
    rel_nb, rel_py = _rel(ipynb), _rel(py)
    if not py.exists():
        return [f"{rel_nb} has no source {rel_py}: run `{FIX}` (it writes one from the notebook)"]
    if not ipynb.exists():
        return [f"{rel_py} has no notebook {rel_nb}: run `{FIX}` (it writes it from the source)"]
    problems = []
    text = py.read_text(encoding="utf-8")
    nb = from_source(text, stem, config)
    if ipynb.read_text(encoding="utf-8") != ipynb_text(nb):
        problems.append(f"{rel_nb} differs from its source {rel_py}: run `{FIX}` (the more recently "
                        f"edited side wins; --from py|ipynb to choose)")
    if to_source(nb, config) != text:
        problems.append(f"{rel_py} is not in the form `{FIX}` writes (jupytext py:percent, normalised): "
                        f"run `{FIX}`")
    return problems


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _edited_since_commit(path: Path) -> bool | None:
    """True when ``path`` differs from git's HEAD (or is untracked); None without git."""
    try:
        res = subprocess.run(["git", "status", "--porcelain", "--", path.name], cwd=path.parent,
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    return bool(res.stdout.strip())


def sync_pair(ipynb: Path, py: Path, prefer: str | None = None, config=None, log=print) -> str:
    """Bring one pair up to date; returns "ok", "wrote" or "conflict" (nothing written)."""
    config = config or _config(ipynb.parent)
    stem = ipynb.stem
    notes: list = []
    if not ipynb.exists() and not py.exists():
        raise FileNotFoundError(f"neither {ipynb} nor {py} exists")
    if not py.exists() or (prefer == "ipynb" and ipynb.exists()):
        winner = "ipynb"
    elif not ipynb.exists() or prefer == "py":
        winner = "py"
    else:
        from_py = from_source(py.read_text(encoding="utf-8"), stem, config, notes)
        from_nb = normalise(read_ipynb(ipynb), stem, notes)
        if ipynb_text(from_py) == ipynb_text(from_nb):
            winner = "same"  # same content: only the form may change (outputs, ids, metadata...)
        else:
            newer = "py" if py.stat().st_mtime_ns > ipynb.stat().st_mtime_ns else "ipynb"
            if py.stat().st_mtime_ns == ipynb.stat().st_mtime_ns:
                newer = None
            both_edited = _edited_since_commit(py) and _edited_since_commit(ipynb)
            if both_edited or newer is None:
                why = "were both edited since the last commit" if both_edited else "have the same time"
                log(f"CONFLICT {_rel(ipynb)} and {_rel(py)} {why} and say different things: nothing "
                    f"written. Keep one side's edits with `python scripts/sync_notebooks.py --only "
                    f"{stem[:2]} --from py` (or `--from ipynb`); the other side is overwritten.")
                return "conflict"
            winner = newer
    if winner in ("py", "same"):
        nb = from_source(py.read_text(encoding="utf-8"), stem, config, notes)
    else:
        nb = normalise(read_ipynb(ipynb), stem, notes)
    for note in dict.fromkeys(notes):
        log("note: " + note)
    wrote = []
    new_ipynb, new_py = ipynb_text(nb), to_source(nb, config)
    for path, text in ((ipynb, new_ipynb), (py, new_py)):
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            wrote.append(_rel(path))
    if wrote:
        how = {"py": "from the source", "ipynb": "from the notebook", "same": "same cells, normal form"}[winner]
        log(f"{stem}: {how} -> wrote {', '.join(wrote)}")
        return "wrote"
    return "ok"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a pair is not in sync")
    ap.add_argument("--from", dest="prefer", choices=("py", "ipynb"),
                    help="the side that wins (default: the more recently modified one)")
    ap.add_argument("--only", nargs="+", metavar="NN", help="notebooks whose name starts with these")
    ap.add_argument("--dir", type=Path, default=NOTEBOOKS_DIR, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    found = pairs(args.dir, args.only)
    if not found:
        print("no notebooks found", file=sys.stderr)
        return 1
    config = _config(args.dir)
    if args.check:
        problems = [p for nb, py in found for p in check_pair(nb, py, config)]
        for p in problems:
            print(p)
        if not problems:
            print(f"{len(found)} notebooks in sync with their sources")
        return 1 if problems else 0
    results = [sync_pair(nb, py, args.prefer, config) for nb, py in found]
    print(f"{len(found)} notebooks: {results.count('ok')} already in sync, {results.count('wrote')} updated"
          + (f", {results.count('conflict')} CONFLICT (see above)" if "conflict" in results else ""))
    return 1 if "conflict" in results else 0


if __name__ == "__main__":
    sys.exit(main())
