"""Where things live: the checkout, caches, built data, outputs and figures.

Every location can be moved with an environment variable, so that tests, CI and Colab can put
things elsewhere without touching code:

=================  =======================================  ==========================================
function           environment variable                     default
=================  =======================================  ==========================================
``cache_dir()``    ``CTXMIX_CACHE``                         ``~/.cache/ctxmix``
``data_dir()``     ``CTXMIX_DATA``                          ``<repo>/data/build`` in a checkout,
                                                            else ``cache_dir()/data``
``outputs_dir()``  ``CTXMIX_OUTPUTS``                       ``<repo>/outputs`` in a checkout,
                                                            else ``./outputs``
``figures_dir()``  (follows ``CTXMIX_OUTPUTS``)             ``outputs_dir()/figures``
=================  =======================================  ==========================================

A *checkout* is a clone of the course repository (also an editable install, as on Colab): the
directory above the package holds ``pyproject.toml`` and ``notebooks/``. Nothing is created until
a function is asked for a directory (each ``*_dir()`` creates its directory).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

PACKAGE_DIR = Path(__file__).resolve().parents[1]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def repo_root() -> Optional[Path]:
    """The root of the course checkout this package runs from, or ``None`` when installed.

    Recognised by ``pyproject.toml`` and ``notebooks/`` beside the ``ctxmix_lite`` directory.
    """
    root = PACKAGE_DIR.parent
    if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir():
        return root
    return None


def _env_path(var: str) -> Optional[Path]:
    value = os.environ.get(var, "").strip()
    if not value:
        return None
    return Path(value).expanduser().resolve()


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Caches (converted model weights, transcriptions): ``$CTXMIX_CACHE`` or ``~/.cache/ctxmix``."""
    return _ensure(_env_path("CTXMIX_CACHE") or Path.home() / ".cache" / "ctxmix")


def data_dir() -> Path:
    """Built data sets (offline synthetic speech...): ``$CTXMIX_DATA``, else ``<repo>/data/build``
    in a checkout, else ``cache_dir()/data``."""
    env = _env_path("CTXMIX_DATA")
    if env is not None:
        return _ensure(env)
    root = repo_root()
    if root is not None:
        return _ensure(root / "data" / "build")
    return _ensure(cache_dir() / "data")


def outputs_dir() -> Path:
    """Run outputs (executed notebooks, figures): ``$CTXMIX_OUTPUTS``, else ``<repo>/outputs`` in a
    checkout, else ``./outputs``."""
    env = _env_path("CTXMIX_OUTPUTS")
    if env is not None:
        return _ensure(env)
    root = repo_root()
    if root is not None:
        return _ensure(root / "outputs")
    return _ensure(Path.cwd() / "outputs")


def figures_dir() -> Path:
    """Saved figures: ``outputs_dir()/figures``."""
    return _ensure(outputs_dir() / "figures")


def savefig(fig, name: str, dpi: int = 150) -> Path:
    """Save a matplotlib figure as PNG into :func:`figures_dir` and return the path.

    ``name`` is a plain file name such as ``"00_waveform_words"`` (``.png`` is added when
    missing); the notebook number first keeps the figures of one notebook together.
    """
    if not hasattr(fig, "savefig"):
        raise TypeError(f"savefig expects a matplotlib Figure, got {type(fig).__name__}")
    if not isinstance(name, str):
        raise TypeError(f"figure name must be a str, got {type(name).__name__}")
    stem = name[:-4] if name.lower().endswith(".png") else name
    if not _SAFE_NAME.match(stem):
        raise ValueError(
            f"figure name {name!r} must be a plain file name (letters, digits, '.', '_', '-'; "
            "no directories), e.g. '03_attention_norm_layers'"
        )
    path = figures_dir() / f"{stem}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight", format="png")
    return path
