"""libespeak-ng through ctypes: audio, word/phone times from the synthesis events, MBROLA quirks."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ctxmix_lite import synth

ROOT = Path(__file__).resolve().parents[1]


def _need_voice(voice: str):
    try:
        synth.find_library()
    except synth.SynthesizerUnavailable as err:
        pytest.skip(str(err))
    if voice.startswith("mb-") and voice not in synth.available_voices():
        pytest.skip(f"{voice} not installed: {synth.INSTALL_COMMAND}")


def _rms(x):
    return float(np.sqrt(np.mean(np.square(x)))) if len(x) else 0.0


def test_tokenize_keeps_elisions_and_hyphens():
    toks = synth.tokenize("J'ai vu l’élève par-dessus la barrière, aujourd'hui.")
    assert [t for t, _ in toks] == ["J'ai", "vu", "l’élève", "par-dessus", "la", "barrière",
                                    "aujourd'hui"]
    assert toks[1][1] == 6  # 1-based character position, as espeak's text_position


@pytest.mark.parametrize("voice", ["mb-fr1", "mb-fr2", "fr"])  # 16 kHz MBROLA, 22.05 kHz MBROLA, espeak
def test_words_match_text_and_lie_inside_the_clip(voice):
    _need_voice(voice)
    text = "Le matin, elles aiment beaucoup les livres."
    s = synth.synthesize(text, voice=voice)
    assert s.audio.dtype == np.float32 and s.sampling_rate == 16000 and s.audio.ndim == 1
    assert [w["word"] for w in s.words] == [t for t, _ in synth.tokenize(text)]
    prev_end = 0.0
    for w in s.words:
        assert 0.0 <= w["start"] < w["end"] <= s.duration + 1e-9
        assert w["start"] >= prev_end - 1e-9  # ordered, no overlap
        prev_end = w["end"]
    # every phone lies inside its word
    for p in s.phones:
        w = s.words[p["word_index"]]
        assert w["start"] - 1e-9 <= p["start"] <= p["end"] <= w["end"] + 1e-9
    assert 0.05 < float(np.abs(s.audio).max()) < 0.99
    assert s.clipped == 0


@pytest.mark.parametrize("voice", ["mb-fr1", "mb-fr4", "fr"])
def test_event_times_meet_the_acoustics(voice):
    """The comma pause between 'matin' and 'elles' is silent in the audio, the words are not: a
    wrong MBROLA delay (1,000 samples = 62 ms at 16 kHz, 45 ms at 22.05 kHz) or a wrong sample
    rate would put speech inside the pause interval."""
    _need_voice(voice)
    s = synth.synthesize("Le matin, elles aiment la musique.", voice=voice)
    sr = s.sampling_rate
    matin, elles = s.words[1], s.words[2]
    gap = s.audio[int((matin["end"] + 0.01) * sr): int((elles["start"] - 0.01) * sr)]
    assert elles["start"] - matin["end"] > 0.08, "the comma should make a pause"
    speech = s.audio[int(elles["start"] * sr): int(s.words[3]["end"] * sr)]
    assert _rms(gap) < 0.02 * _rms(speech)
    # speech starts within 20 ms after the word start (and not before it)
    env = np.abs(s.audio)
    onset = next(i for i in range(int((matin["end"]) * sr), len(env))
                 if i / sr > matin["end"] + 0.01 and env[i] > 0.1 * env.max())
    assert abs(onset / sr - elles["start"]) < 0.03


def test_liaison_z_goes_with_the_plural_pronoun_and_the_verb_sounds_the_same():
    _need_voice("mb-fr1")
    sg = synth.synthesize("Elle aime la musique.", voice="mb-fr1")
    pl = synth.synthesize("Elles aiment la musique.", voice="mb-fr1")
    assert pl.word_phones(0)[-1] == "z" and sg.word_phones(0)[-1] != "z"
    assert sg.word_phones(1) == pl.word_phones(1) == ["ɛ", "m"]


def test_h_aspire_pause_keeps_the_word():
    _need_voice("mb-fr1")
    s = synth.synthesize("Ses dames sautent très haut.", voice="mb-fr1")
    assert s.words[-1]["word"] == "haut" and s.word_phones(4) == ["o"]


def test_deterministic_and_independent_of_history():
    _need_voice("mb-fr3")
    text = "Les chats jouent dans le jardin."
    a = synth.synthesize(text, voice="mb-fr3", rate=150, pitch=40)
    synth.synthesize("Il arrive demain matin.", voice="mb-fr5", rate=185, pitch=65)
    b = synth.synthesize(text, voice="mb-fr3", rate=150, pitch=40)
    assert np.array_equal(a.audio, b.audio) and a.words == b.words and a.phones == b.phones
    c = synth.synthesize(text, voice="mb-fr3", rate=180, pitch=40)
    assert c.duration < a.duration  # the rate parameter is applied


def test_bad_input_errors():
    _need_voice("mb-fr1")
    with pytest.raises(synth.SynthesisError, match="empty"):
        synth.synthesize("   ")
    with pytest.raises(synth.SynthesizerUnavailable, match="no-such-voice"):
        synth.synthesize("Bonjour.", voice="no-such-voice")


def test_mbrola_voice_without_mbrola_says_how_to_install(monkeypatch):
    _need_voice("mb-fr1")
    eng = synth.engine()
    monkeypatch.setattr(eng, "info", synth.LibraryInfo(eng.info.path, None, "espeakng-loader",
                                                       False))
    with pytest.raises(synth.SynthesizerUnavailable, match="apt-get install"):
        synth.synthesize("Bonjour.", voice="mb-fr1")
    monkeypatch.setattr(synth, "mbrola_voice_file", lambda v: None)
    monkeypatch.setattr(eng, "info", synth.LibraryInfo(eng.info.path, None, "system", True))
    with pytest.raises(synth.SynthesizerUnavailable, match="mbrola-fr"):
        synth.synthesize("Bonjour.", voice="mb-fr1")


def test_no_library_at_all_gives_the_install_command(monkeypatch):
    monkeypatch.delenv("CTXMIX_ESPEAK_LIB", raising=False)
    monkeypatch.setattr(synth, "_system_library", lambda: None)
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # import fails
    with pytest.raises(synth.SynthesizerUnavailable, match="apt-get install -y espeak-ng"):
        synth.find_library()
    assert synth.available_voices() == []


def test_fallback_to_bundled_library_warns(monkeypatch):
    pytest.importorskip("espeakng_loader")
    monkeypatch.delenv("CTXMIX_ESPEAK_LIB", raising=False)
    monkeypatch.setattr(synth, "_system_library", lambda: None)
    with pytest.warns(RuntimeWarning, match="no MBROLA"):
        info = synth.find_library()
    assert info.source == "espeakng-loader" and not info.mbrola
    with pytest.warns(RuntimeWarning, match="Whisper"):
        assert synth.default_voices() == list(synth.ESPEAK_VOICES)


def test_bundled_library_synthesises_in_its_own_process():
    """libespeak-ng is global state: the fallback library is tried in a fresh process."""
    loader = pytest.importorskip("espeakng_loader")
    code = ("from ctxmix_lite import synth\n"
            "s = synth.synthesize('Elles aiment la musique.', voice='fr')\n"
            "print(synth.engine().info.source, s.native_rate, [w['word'] for w in s.words],"
            " s.word_phones(0))\n")
    env = dict(os.environ, CTXMIX_ESPEAK_LIB=str(loader.get_library_path()),
               CTXMIX_ESPEAK_DATA=str(loader.get_data_path()), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "env 22050 ['Elles', 'aiment', 'la', 'musique']" in out.stdout
    assert "'z'" in out.stdout


def test_pool_gives_the_same_result_as_sequential():
    _need_voice("mb-fr2")
    jobs = [dict(text="Il écoute la radio.", voice="mb-fr2"),
            dict(text="", voice="mb-fr2"),
            dict(text="Ils écoutent la radio.", voice="mb-fr2")]
    seq = synth.synthesize_many(jobs, workers=1)
    par = synth.synthesize_many(jobs, workers=2)
    assert isinstance(seq[1], synth.SynthesisError) and isinstance(par[1], synth.SynthesisError)
    for a, b in ((seq[0], par[0]), (seq[2], par[2])):
        assert np.array_equal(a.audio, b.audio) and a.words == b.words
