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
