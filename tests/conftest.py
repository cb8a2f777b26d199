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


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(0)
