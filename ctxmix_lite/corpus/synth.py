"""French speech with exact word and phone times, from libespeak-ng through ctypes.

The synthesiser reports, through its callback, *events* beside the audio: ``SAMPLERATE`` (the
real output rate of the voice), ``WORD`` (start of a word) and ``PHONEME`` (start of a phone, with
the phone's name and the character position of the word it belongs to). Each event carries a
``sample`` field: the index of the output sample where it happens. Word and phone intervals are
read from those events, so they are exact by construction up to the synthesiser's own placement
(measured error against acoustic landmarks: espeak voices <= 6 ms, MBROLA voices mostly <= 20 ms).

Facts this module relies on (checked on libespeak-ng 1.51/1.52, see tests/test_synth.py):

* times come from ``event.sample`` (the millisecond field ``audio_position`` is rounded);
* MBROLA voices (``mb-fr1`` ... ``mb-fr7``) run 16,000 Hz (fr1/3/5/6/7) or 22,050 Hz (fr2/4), espeak
  voices 22,050 Hz: the rate is taken from the ``SAMPLERATE`` event, never assumed;
* MBROLA sample counters are shifted by a constant delay (1,000 samples): every event's sample
  minus the ``SAMPLERATE`` event's sample is the position in the returned audio
  (``t_k = (sample_k - sample_SAMPLERATE) / rate``; the shift is 0 for espeak voices);
* MBROLA voices emit only the *first* WORD event, and later PHONEME events may carry a stale text
  position (that of the last pause). Word starts are therefore read from PHONEME events whose
  text position is the (1-based, in characters) start of the *next* orthographic word;
* phones with an empty name are pauses: they end the current word and belong to no word;
* liaison consonants (``ils aiment`` -> /ilzɛm/) are reported with the word *before* them;
* some MBROLA voices (fr2/3/4) clip at the default volume, hence a lower volume for them.

libespeak-ng is a global-state C library: one process synthesises one sentence at a time (a lock
guards it). Run sentences sequentially, or in a process pool.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import shutil
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

SAMPLE_RATE = 16000

#: MBROLA French voices (Debian/Ubuntu ``mbrola-fr1`` ... ``mbrola-fr7``): name -> (gender, accent).
MBROLA_VOICES = {
    "mb-fr1": ("M", "fr-FR"),
    "mb-fr2": ("F", "fr-FR"),
    "mb-fr3": ("M", "fr-FR"),
    "mb-fr4": ("F", "fr-FR"),
    "mb-fr5": ("M", "fr-BE"),
    "mb-fr6": ("M", "fr-FR"),
    "mb-fr7": ("M", "fr-BE"),
}
#: MBROLA voices left out of :func:`default_voices`: Whisper-base transcribes mb-fr5 (Belgian)
#: far worse than the others (cue and target right in 4/32 items vs 68/200 over all voices,
#: measured on the offline homophony set). Pass ``voices=`` explicitly to use it.
WHISPER_WEAK_VOICES = ("mb-fr5",)
#: Plain espeak French voices (formant synthesis; Whisper transcribes them poorly).
ESPEAK_VOICES = ("fr", "fr-be", "fr-ch")
#: Volume per voice (espeak scale 0..200, default 100). At 100, fr2/3/4/6/7 reach int16 full scale
#: and clip; these levels keep every voice's peak near 0.3-0.6 (measured on varied rate/pitch).
#: MBROLA itself may still report "Saturation on x-y" for a few samples of some diphones: its own
#: volume ratio is fixed by espeak's phoneme table and applied before espeak's volume. Those
#: messages are captured and counted (``Synthesis.saturations``), not printed.
DEFAULT_VOLUME = {"mb-fr1": 50, "mb-fr2": 45, "mb-fr3": 35, "mb-fr4": 40, "mb-fr5": 85,
                  "mb-fr6": 50, "mb-fr7": 50}
MBROLA_VOLUME = 50

INSTALL_COMMAND = (
    "sudo apt-get install -y espeak-ng libespeak-ng1 mbrola mbrola-fr1 mbrola-fr2 mbrola-fr3 "
    "mbrola-fr4 mbrola-fr5 mbrola-fr6 mbrola-fr7   # Debian: enable 'contrib non-free' in "
    "/etc/apt/sources.list first; Ubuntu: enable 'multiverse'"
)
MBROLA_DIRS = ("/usr/share/mbrola", "/usr/local/share/mbrola", "/usr/lib/mbrola")

# espeak_EVENT_TYPE
_EV_LIST_TERMINATED, _EV_WORD, _EV_SENTENCE, _EV_MARK, _EV_PLAY, _EV_END = 0, 1, 2, 3, 4, 5
_EV_MSG_TERMINATED, _EV_PHONEME, _EV_SAMPLERATE = 6, 7, 8
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS, _INIT_PHONEME_IPA, _INIT_DONT_EXIT = 0x0001, 0x0002, 0x8000
_CHARS_UTF8, _POS_CHARACTER = 1, 1
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE, _PARAM_PUNCT = 1, 2, 3, 4, 5

_WORD_RE = re.compile(r"[\w'’-]+", re.UNICODE)


class SynthesizerUnavailable(RuntimeError):
    """libespeak-ng (or a requested voice) cannot be used here; the message gives the fix."""


class SynthesisError(ValueError):
    """A sentence could not be synthesised or aligned (e.g. a word got no phone)."""


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):  # espeak_EVENT of speak_lib.h
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


@dataclass(frozen=True)
class LibraryInfo:
    path: str
    data_path: Optional[str]  # None: the library's compiled-in default
    source: str  # "system" | "espeakng-loader"
    mbrola: bool  # whether MBROLA voices can be used with it


def _system_library() -> Optional[str]:
    for cand in ("libespeak-ng.so.1", ctypes.util.find_library("espeak-ng")):
        if not cand:
            continue
        try:
            ctypes.CDLL(cand)
            return cand
        except OSError:
            continue
    return None


def mbrola_voice_file(voice: str) -> Optional[Path]:
    """Path of the MBROLA database for ``mb-frN`` (e.g. /usr/share/mbrola/fr1/fr1), or None."""
    name = voice[3:] if voice.startswith("mb-") else voice
    for d in MBROLA_DIRS:
        for p in (Path(d) / name / name, Path(d) / name):
            if p.is_file():
                return p
    return None


def find_library() -> LibraryInfo:
    """Locate libespeak-ng: the system one (apt; works with MBROLA) first, else the copy bundled by
    the ``espeakng-loader`` wheel (no MBROLA), with a warning. Raises SynthesizerUnavailable."""
    env = os.environ.get("CTXMIX_ESPEAK_LIB")
    if env:
        return LibraryInfo(env, os.environ.get("CTXMIX_ESPEAK_DATA"), "env",
                           shutil.which("mbrola") is not None)
    sys_lib = _system_library()
    if sys_lib is not None:
        return LibraryInfo(sys_lib, None, "system", shutil.which("mbrola") is not None)
    try:
        import espeakng_loader  # type: ignore

        warnings.warn(
            "System libespeak-ng not found: using the library bundled with espeakng-loader, which "
            "has no MBROLA voices. Plain espeak voices are robotic and Whisper transcribes them "
            f"poorly. For MBROLA voices run:\n  {INSTALL_COMMAND}",
            RuntimeWarning, stacklevel=2)
        return LibraryInfo(str(espeakng_loader.get_library_path()),
                           str(espeakng_loader.get_data_path()), "espeakng-loader", False)
    except ImportError:
        pass
    raise SynthesizerUnavailable(
        "libespeak-ng was not found. Install it (and the French MBROLA voices) with:\n  "
        f"{INSTALL_COMMAND}\nor, for plain espeak voices only: pip install espeakng-loader")


def available_voices(include_espeak: bool = False) -> List[str]:
    """French voices usable here: MBROLA voices whose database is installed (and the ``mbrola``
    program present, and a system libespeak-ng), then optionally the plain espeak voices."""
    try:
        info = find_library()
    except SynthesizerUnavailable:
        return []
    voices = []
    if info.mbrola:
        voices = [v for v in MBROLA_VOICES if mbrola_voice_file(v) is not None]
    if include_espeak:
        voices += list(ESPEAK_VOICES)
    return voices


def default_voices() -> List[str]:
    """MBROLA voices when installed (but :data:`WHISPER_WEAK_VOICES`); else the espeak voices
    with a warning (Whisper handles them poorly). Raises SynthesizerUnavailable with the install
    command if nothing works."""
    v = [x for x in available_voices() if x not in WHISPER_WEAK_VOICES] or available_voices()
    if v:
        return v
    info = find_library()  # raises when there is no library at all
    warnings.warn(
        "No MBROLA French voice is installed: falling back to plain espeak voices, which Whisper "
        f"transcribes poorly (expect few items to pass the transcription check). Install with:\n  "
        f"{INSTALL_COMMAND}", RuntimeWarning, stacklevel=2)
    return list(ESPEAK_VOICES) if info else []


@dataclass
class Synthesis:
    """One synthesised sentence. ``words``/``phones`` times are seconds in ``audio``."""
    text: str
    voice: str
    audio: np.ndarray  # float32 mono at ``sampling_rate``
    sampling_rate: int
    native_rate: int  # the voice's own rate before resampling
    words: List[dict] = field(default_factory=list)  # {"start", "end", "word"}
    phones: List[dict] = field(default_factory=list)  # {"start", "end", "phone", "word_index"}
    clipped: int = 0  # samples at int16 full scale (should be 0 with the default volumes)
    saturations: int = 0  # "Saturation" warnings MBROLA printed for this sentence

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sampling_rate

    def word_phones(self, index: int) -> List[str]:
        """Phone names of word ``index`` (liaison consonants go with the word before them)."""
        return [p["phone"] for p in self.phones if p["word_index"] == index]


def tokenize(text: str):
    """Orthographic words with their 1-based character start (espeak's ``text_position``).
    Elided forms stay one word ("l'élève", "qu'il"); punctuation is dropped."""
    return [(m.group(0), m.start() + 1) for m in _WORD_RE.finditer(text)]


class _Engine:
    """The one libespeak-ng instance of this process."""

    def __init__(self, info: LibraryInfo):
        self.info = info
        self.lib = ctypes.CDLL(info.path)
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                               ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint,
                                          ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                          ctypes.c_void_p, ctypes.c_void_p]
        data = info.data_path.encode() if info.data_path else None
        rate = self.lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data,
            _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA | _INIT_DONT_EXIT)
        if rate <= 0:
            raise SynthesizerUnavailable(f"espeak_Initialize failed ({rate}) for {info.path}")
        self._chunks: List[np.ndarray] = []
        self._events: List[tuple] = []
        self._cb = _CALLBACK(self._callback)  # keep a reference: C holds only the pointer
        self.lib.espeak_SetSynthCallback(self._cb)
        self.lock = threading.Lock()
        # MBROLA runs as a child process that writes warnings to the inherited stderr: during a
        # synthesis, fd 2 points to this file, so they are counted instead of printed.
        import tempfile

        self._err = tempfile.TemporaryFile()

    def _callback(self, wav, n, events):
        if wav and n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        i = 0
        while events[i].type != _EV_LIST_TERMINATED:
            e = events[i]
            if e.type == _EV_PHONEME:
                payload = bytes(e.id.string).split(b"\0")[0].decode("utf-8", "replace")
            else:
                payload = e.id.number
            self._events.append((e.type, e.text_position, e.sample, payload))
            i += 1
        return 0

    def run(self, text: str, voice: str, rate: int, pitch: int, volume: int, pitch_range: int):
        """Synthesise; returns (int16 audio, events, stderr text written meanwhile)."""
        with self.lock:
            try:
                saved = os.dup(2)
            except OSError:  # no stderr at all
                saved = None
            if saved is not None:
                self._err.seek(0)
                self._err.truncate()
                os.dup2(self._err.fileno(), 2)
            try:
                audio, events = self._run(text, voice, rate, pitch, volume, pitch_range)
            finally:
                if saved is not None:
                    os.dup2(saved, 2)
                    os.close(saved)
            self._err.seek(0)
            messages = self._err.read().decode("utf-8", "replace")
            return audio, events, messages

    def _run(self, text, voice, rate, pitch, volume, pitch_range):
        # Set the voice every time: this resets the synthesiser and makes it emit the
        # SAMPLERATE event (rate and MBROLA delay) for this very sentence.
        err = self.lib.espeak_SetVoiceByName(voice.encode())
        if err != 0:
            raise SynthesizerUnavailable(
                f"voice {voice!r} cannot be loaded (espeak error {err}). "
                + (f"Install MBROLA voices with:\n  {INSTALL_COMMAND}"
                   if voice.startswith("mb-") else ""))
        for param, value in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch),
                             (_PARAM_VOLUME, volume), (_PARAM_RANGE, pitch_range),
                             (_PARAM_PUNCT, 0)):
            self.lib.espeak_SetParameter(param, int(value), 0)
        self._chunks, self._events = [], []
        buf = text.encode("utf-8")
        err = self.lib.espeak_Synth(buf, len(buf) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                                    None, None)
        self.lib.espeak_Synchronize()
        if err != 0:
            raise SynthesisError(f"espeak_Synth failed ({err}) on {text!r} with {voice}")
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return audio, list(self._events)


_ENGINE: Optional[_Engine] = None
_ENGINE_LOCK = threading.Lock()


def engine() -> _Engine:
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = _Engine(find_library())
        return _ENGINE


def _resample(x: np.ndarray, sr: int, target: int) -> np.ndarray:
    if sr == target:
        return x.astype(np.float32)
    import librosa

    return librosa.resample(x.astype(np.float32), orig_sr=sr, target_sr=target,
                            res_type="soxr_hq").astype(np.float32)


def synthesize(text: str, voice: str = "mb-fr1", rate: int = 160, pitch: int = 50,
               volume: Optional[int] = None, pitch_range: int = 50,
               sampling_rate: int = SAMPLE_RATE) -> Synthesis:
    """Synthesise ``text`` with ``voice`` and read word/phone intervals from the events.

    rate: words per minute (espeak 80..450, default 175); pitch, pitch_range: 0..100 (50 normal);
    volume: 0..200 (None: a per-voice level that does not clip).

    Word ``k`` spans ``[t(first phone of k), t(first event after its last phone))`` where
    ``t(e) = (e.sample - s0) / native_rate`` and ``s0`` is the SAMPLERATE event's sample (the
    MBROLA delay). Raises SynthesisError if a word of the text gets no phone.
    """
    if not text or not text.strip():
        raise SynthesisError("empty text")
    if volume is None:
        volume = DEFAULT_VOLUME.get(voice, MBROLA_VOLUME if voice.startswith("mb-") else 100)
    eng = engine()
    if voice.startswith("mb-") and not eng.info.mbrola:
        raise SynthesizerUnavailable(
            f"voice {voice!r} needs MBROLA, which this libespeak-ng ({eng.info.source}) cannot "
            f"use. Install with:\n  {INSTALL_COMMAND}")
    if voice.startswith("mb-") and mbrola_voice_file(voice) is None:
        raise SynthesizerUnavailable(f"MBROLA database for {voice!r} not installed. Install "
                                     f"with:\n  {INSTALL_COMMAND}")
    raw, events, messages = eng.run(text, voice, rate, pitch, volume, pitch_range)
    srs = [e for e in events if e[0] == _EV_SAMPLERATE]
    if not srs:
        raise SynthesisError(f"no SAMPLERATE event for {text!r} with {voice}")
    native, offset = int(srs[0][3]), int(srs[0][2])
    n = len(raw)
    if n == 0:
        raise SynthesisError(f"no audio for {text!r} with {voice}")

    tokens = tokenize(text)
    starts = {pos: k for k, (_, pos) in enumerate(tokens)}
    phon = [e for e in events if e[0] == _EV_PHONEME]
    # per phone: (name, start sample); the end is the next phoneme event's sample (or the audio end)
    phones, cur = [], -1
    for idx, (_, tpos, sample, name) in enumerate(phon):
        s = min(max(sample - offset, 0), n)
        e = min(max((phon[idx + 1][2] - offset) if idx + 1 < len(phon) else n, s), n)
        k = starts.get(tpos)
        if k is not None and k > cur:
            if k != cur + 1:
                raise SynthesisError(
                    f"words {[t for t, _ in tokens[cur + 1:k]]} of {text!r} got no phone ({voice})")
            cur = k
        if name == "":  # pause (it may carry the next word's position, e.g. before h aspiré)
            continue
        if cur < 0:
            raise SynthesisError(f"phone {name!r} before the first word in {text!r} ({voice})")
        phones.append({"phone": name, "start": s, "end": e, "word_index": cur})
    if cur != len(tokens) - 1:
        raise SynthesisError(
            f"words {[t for t, _ in tokens[cur + 1:]]} of {text!r} got no phone ({voice})")
    words = []
    for k, (w, _) in enumerate(tokens):
        ps = [p for p in phones if p["word_index"] == k]
        if not ps:
            raise SynthesisError(f"word {w!r} of {text!r} got no phone ({voice})")
        words.append({"start": ps[0]["start"] / native, "end": ps[-1]["end"] / native, "word": w})
    for p in phones:
        p["start"] /= native
        p["end"] /= native

    audio = _resample(raw.astype(np.float32) / 32768.0, native, sampling_rate)
    dur = len(audio) / sampling_rate
    for item in words + phones:  # resampling may shorten by < 1 sample
        item["start"] = float(min(item["start"], dur))
        item["end"] = float(min(item["end"], dur))
    return Synthesis(text=text, voice=voice, audio=audio, sampling_rate=sampling_rate,
                     native_rate=native, words=words, phones=phones,
                     clipped=int(np.sum(np.abs(raw.astype(np.int32)) >= 32767)),
                     saturations=messages.count("Saturation"))


def synthesize_many(jobs: Sequence[dict], workers: int = 1, progress: bool = False):
    """Synthesise many sentences; ``jobs`` are keyword dicts for :func:`synthesize`.
    Returns a list of Synthesis or the exception raised for that job (never dropped silently).
    ``workers > 1`` uses a process pool (each process owns its own libespeak-ng)."""
    from tqdm.auto import tqdm

    if workers <= 1:
        out = []
        for job in tqdm(jobs, disable=not progress, desc="synthesis"):
            out.append(_safe(job))
        return out
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # never fork a process whose libespeak-ng (and its mbrola child) is live
    with ctx.Pool(workers) as pool:
        return list(tqdm(pool.imap(_safe, jobs, chunksize=8), total=len(jobs),
                         disable=not progress, desc="synthesis"))


def _safe(job):
    try:
        return synthesize(**job)
    except (SynthesisError, SynthesizerUnavailable) as err:
        return err
