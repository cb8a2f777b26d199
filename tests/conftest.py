"""Shared fixtures. Tests never touch the network: the hub is switched off for the whole session."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("CTXMIX_STRICT_CHECKS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SENTENCES = [
    "Elle a perdu les livres dans le train.",
    "Il aime le gâteau de sa mère.",
    "Ils aiment les chansons de la radio.",
]


def _espeak_wav(text: str, path: Path, voice: str = "mb-fr1") -> Path:
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is not installed (make test installs it as root)")
    subprocess.run([exe, "-v", voice, "-w", str(path), text], check=True, capture_output=True)
    return path


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("speech")


@pytest.fixture(scope="session")
def french_clip(speech_dir):
    """A French sentence spoken by an MBROLA voice, as float32 16 kHz mono samples."""
    from ctxmix_lite.audio import load_audio

    return load_audio(_espeak_wav(SENTENCES[0], speech_dir / "s0.wav"))


@pytest.fixture(scope="session")
def french_clip_path(speech_dir):
    return _espeak_wav(SENTENCES[0], speech_dir / "s0_path.wav")


@pytest.fixture(scope="session")
def whisper_base():
    """The real trained Whisper-base from the packaged weights (converted once, then cached)."""
    from ctxmix_lite.models import load_model

    return load_model("openai/whisper-base")


_WATCHED_ENV = ("CTXMIX_CACHE", "CTXMIX_DATA", "CTXMIX_OUTPUTS", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@pytest.fixture(autouse=True)
def _no_leaked_process_state():
    """A test that changes the environment variables that locate caches and data, or the working
    directory, and does not undo it, changes every later test on its worker (a CI failure once:
    a leaked ``CTXMIX_CACHE`` sent another file's fixtures to an empty temporary cache). Such a
    test fails here, by name, and the state is put back."""
    env = {k: os.environ.get(k) for k in _WATCHED_ENV}
    cwd = os.getcwd()
    yield
    leaked = {k: (v, os.environ.get(k)) for k, v in env.items() if os.environ.get(k) != v}
    for k, (before, _) in leaked.items():
        if before is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = before
    moved = os.getcwd() != cwd
    if moved:
        os.chdir(cwd)
    if leaked or moved:
        what = [f"{k}: {a!r} -> {b!r}" for k, (a, b) in leaked.items()]
        if moved:
            what.append("working directory changed")
        pytest.fail("this test left process state changed (restored now): " + "; ".join(what))


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(0)


def pytest_collection_modifyitems(config, items):
    """Schedule for 2 workers (``pytest -n 2 --dist loadgroup``): every test file stays on one
    worker (its module fixtures are built once), except the notebook executions, which are spread
    one by one and start first (they are the longest: longest-first keeps both workers busy)."""
    for item in items:
        path = item.nodeid.split("::")[0]
        if item.nodeid.startswith("tests/test_notebooks.py::test_notebook_runs"):
            group = item.nodeid
        else:
            group = path
        item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda it: not it.nodeid.startswith("tests/test_notebooks.py::test_notebook_runs"))
