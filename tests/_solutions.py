"""The readable reference solutions written in the notebooks (code cells tagged ``solution``),
read back from the committed notebook so that the tests check what a learner will open."""
from __future__ import annotations

from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def notebook_path(number: str) -> Path:
    (path,) = sorted(NOTEBOOKS.glob(f"{number}_*.ipynb"))
    return path


def solution_sources(number: str) -> list:
    """The sources of notebook ``number``'s solution cells, in notebook order."""
    nb = nbformat.read(notebook_path(number), as_version=4)
    return [c.source for c in nb.cells
            if c.cell_type == "code" and "solution" in c.get("metadata", {}).get("tags", [])]


def load_solutions(number: str, namespace: dict | None = None) -> dict:
    """Execute notebook ``number``'s solution cells, in order, in ``namespace`` (the names the
    notebook has imported before them, e.g. ``torch``); return the namespace."""
    ns = {} if namespace is None else dict(namespace)
    for src in solution_sources(number):
        exec(compile(src, f"<notebook {number} solution cell>", "exec"), ns)  # noqa: S102
    return ns


def numpy_torch_solutions(number: str, **namespace) -> dict:
    """:func:`load_solutions` with ``np`` and ``torch`` already imported, as the notebooks have them."""
    import numpy as np
    import torch

    return load_solutions(number, {"np": np, "torch": torch, **namespace})
