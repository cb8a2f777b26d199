"""Shared pieces of the notebook generators ``scripts/make_nbNN.py``.

Each generator lists its cells with :func:`md` and :func:`code` (the first one is always
:func:`setup_cell`, the Colab set-up cell) and ends with ``sys.exit(main(CELLS, OUT, __doc__))``::

    python scripts/make_nbNN.py            # writes the notebook (no outputs)
    python scripts/make_nbNN.py --check    # exit 1 if the committed notebook differs from the script
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str, tags=None):
    cell = new_code_cell(text.strip("\n"))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


# ---- exercises (ARENA manner) -----------------------------------------------------------------
# An exercise is three or four cells, in this order (tests/test_notebooks.py lints it):
#   1. exercise(...)  markdown: "### Exercise N.M — title", the markers line, the task, a hint ladder
#   2. code           the learner's stub: "# YOUR CODE HERE" + raise NotImplementedError
#   3. solution(...)  a collapsed code cell (tag "solution"): the reference written from the equations
#   4. code           f = use_solution(f, f_solution, SOLUTIONS); the check that says what is wrong
DIFFICULTY, IMPORTANCE = "\U0001F534", "\U0001F535"  # red / blue circles (ARENA's markers)
EMPTY = "\u26AA"  # white circle
MARKERS_RE = (r"\*\*Difficulty\*\* (?:\U0001F534)+(?:\u26AA)* · \*\*Importance\*\* (?:\U0001F535)+(?:\u26AA)* · "
              r"\*\*Time\*\* ~\d+(?:[–-]\d+)? min")


def markers(difficulty: int, importance: int, minutes) -> str:
    """The markers line: difficulty and importance out of 5, expected time in minutes."""
    if not (1 <= difficulty <= 5 and 1 <= importance <= 5):
        raise ValueError("difficulty and importance are 1..5")
    return (f"> **Difficulty** {DIFFICULTY * difficulty}{EMPTY * (5 - difficulty)} · "
            f"**Importance** {IMPORTANCE * importance}{EMPTY * (5 - importance)} · **Time** ~{minutes} min")


def exercise(title: str, difficulty: int, importance: int, minutes, body: str, hints) -> "object":
    """The markdown cell of an exercise: heading, markers, task, then a hint ladder (first a nudge,
    last the key line), each hint folded in a ``<details>`` block."""
    if len(hints) < 2:
        raise ValueError("a hint ladder has at least two rungs: a nudge, then the key line")
    ladder = []
    for i, h in enumerate(hints, 1):
        kind = "a nudge" if i == 1 else ("the key line" if i == len(hints) else "closer")
        ladder.append(f"<details><summary>Hint {i} — {kind}</summary>\n\n{h.strip()}\n\n</details>")
    return md(f"### Exercise {title}\n\n{markers(difficulty, importance, minutes)}\n\n{body.strip()}\n\n"
              + "\n".join(ladder))


def solution(text: str, name: str = ""):
    """A collapsed code cell holding a readable reference solution (written from the equations).
    JupyterLab hides it (``jupyter.source_hidden``), Colab folds it (``cellView: form`` + ``@title``)."""
    title = f"# @title Solution{(' — ' + name) if name else ''} (open it when you are stuck)\n"
    cell = new_code_cell(title + text.strip("\n"))
    cell.metadata["tags"] = ["solution"]
    cell.metadata["jupyter"] = {"source_hidden": True}
    cell.metadata["cellView"] = "form"
    return cell


def setup_cell():
    from ctxmix_lite.colab import COLAB_SETUP_CELL

    return new_code_cell(COLAB_SETUP_CELL)


def build(cells, stem: str):
    """The notebook of ``cells``: python3 kernelspec, stable cell ids ``<stem>-NN`` (regenerating
    gives the same file), nbformat 4.5, no outputs."""
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["colab"] = {"provenance": []}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{stem}-{i:02d}"
    nb.nbformat, nb.nbformat_minor = 4, 5
    return nb


def main(cells, out: Path, doc: str = "", argv=None) -> int:
    """Write ``out`` (or, with ``--check``, compare it with what the cells give)."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    stem = "nb" + out.name[:2]
    text = nbformat.writes(build(cells, stem))
    if args.check:
        same = out.exists() and out.read_text() == text
        print("up to date" if same else f"{out} differs from its generator")
        return 0 if same else 1
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print("wrote", out)
    return 0
