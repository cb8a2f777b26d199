"""ctxmix_lite.paths: locations follow the environment variables, savefig writes real PNGs."""
from __future__ import annotations

from pathlib import Path

import pytest

from ctxmix_lite import paths

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_env(monkeypatch):
    for var in ("CTXMIX_CACHE", "CTXMIX_DATA", "CTXMIX_OUTPUTS"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_repo_root_is_this_checkout():
    assert paths.repo_root() == ROOT
    assert (paths.repo_root() / "pyproject.toml").is_file()


def test_defaults_in_a_checkout(clean_env, tmp_path):
    clean_env.setenv("HOME", str(tmp_path))  # cache_dir must not touch the real home
    assert paths.cache_dir() == tmp_path / ".cache" / "ctxmix"
    assert paths.data_dir() == ROOT / "data" / "build"
    assert paths.outputs_dir() == ROOT / "outputs"
    assert paths.figures_dir() == ROOT / "outputs" / "figures"


def test_environment_overrides(clean_env, tmp_path):
    clean_env.setenv("CTXMIX_CACHE", str(tmp_path / "c"))
    clean_env.setenv("CTXMIX_DATA", str(tmp_path / "d"))
    clean_env.setenv("CTXMIX_OUTPUTS", str(tmp_path / "o"))
    assert paths.cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()
    assert paths.data_dir() == tmp_path / "d" and (tmp_path / "d").is_dir()
    assert paths.outputs_dir() == tmp_path / "o"
    assert paths.figures_dir() == tmp_path / "o" / "figures"


def test_outside_a_checkout(clean_env, tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "repo_root", lambda: None)
    clean_env.setenv("CTXMIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert paths.data_dir() == tmp_path / "cache" / "data"
    assert paths.outputs_dir() == tmp_path / "outputs"


def test_savefig_writes_png(clean_env, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clean_env.setenv("CTXMIX_OUTPUTS", str(tmp_path))
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    p = paths.savefig(fig, "00_test_line")
    p2 = paths.savefig(fig, "00_test_line2.png")
    fig.savefig(tmp_path / "ref100.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    assert p == tmp_path / "figures" / "00_test_line.png"
    assert p2.name == "00_test_line2.png"
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # dpi 150: 1.5 times as wide as the same figure saved at dpi 100
    width = int.from_bytes(p.read_bytes()[16:20], "big")
    ref = int.from_bytes((tmp_path / "ref100.png").read_bytes()[16:20], "big")
    assert abs(width / ref - 1.5) < 0.02, (width, ref)


@pytest.mark.parametrize("bad", ["", "../escape", "a/b", "/abs", " space"])
def test_savefig_rejects_bad_names(clean_env, tmp_path, bad):
    import matplotlib.pyplot as plt

    clean_env.setenv("CTXMIX_OUTPUTS", str(tmp_path))
    fig = plt.figure()
    with pytest.raises(ValueError, match="plain file name"):
        paths.savefig(fig, bad)
    plt.close(fig)


def test_savefig_rejects_non_figures():
    with pytest.raises(TypeError, match="matplotlib Figure"):
        paths.savefig([1, 2], "x")


def test_import_is_light():
    """`import ctxmix_lite` (and paths/colab) must not import torch: the Colab cell runs it first."""
    import subprocess
    import sys

    code = ("import sys, ctxmix_lite, ctxmix_lite.paths, ctxmix_lite.colab; "
            "print('torch' in sys.modules, 'transformers' in sys.modules, ctxmix_lite.__version__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[:2] == ["False", "False"], out
    assert out[2] == "0.1.0"


def test_lazy_submodule_access():
    import ctxmix_lite

    assert ctxmix_lite.paths is paths
    with pytest.raises(AttributeError):
        ctxmix_lite.no_such_module
