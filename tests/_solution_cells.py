"""The notebooks' collapsed ``solution`` cells, executed outside the notebook.

CI runs every notebook with ``SOLUTIONS=True``, i.e. with these cells' functions in place of the
learner's; the exercise tests run the same source against the checks with ``strict=True`` (and a
deliberately wrong function against the same checks, which must fail)."""
from __future__ import annotations

from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]


def solution_sources(stem: str) -> list[str]:
    """Sources of the cells tagged ``solution`` in ``notebooks/<stem>*.ipynb`` (``stem`` e.g. ``"04"``)."""
    (path,) = sorted((ROOT / "notebooks").glob(f"{stem}_*.ipynb"))
    nb = nbformat.read(path, as_version=4)
    return [c.source for c in nb.cells if "solution" in c.get("metadata", {}).get("tags", [])]


def solutions(stem: str, **namespace) -> dict:
    """Execute every solution cell of notebook ``stem`` in one namespace (seeded with ``namespace``,
    e.g. ``torch=torch``, plus numpy/torch imports as the notebooks have them) and return it."""
    import numpy as np
    import torch

    ns = {"np": np, "torch": torch, **namespace}
    sources = solution_sources(stem)
    if not sources:
        raise AssertionError(f"notebook {stem} has no solution cell")
    for src in sources:
        exec(compile(src, f"<notebook {stem} solution cell>", "exec"), ns)
    return ns
