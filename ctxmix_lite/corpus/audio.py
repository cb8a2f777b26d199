"""Audio in, frames out: loading clips and mapping time to encoder frames.

Speech Transformers do not see words, they see *frames*: Whisper turns 30 s of audio into 1,500
encoder frames (20 ms each, the clip zero-padded to 30 s); wav2vec2 turns a clip of T seconds into
about 49.9 frames per second (a 320-sample stride of its convolutional feature encoder, 20 ms).
Every word-level analysis in the course goes through the two maps below.

Time t (seconds) to frame, as in the homophony study::

    frame(t) = ceil(F * t / T)        F frames covering a window of T seconds

with T = 30 s for Whisper and T = clip duration for wav2vec2; word spans are *inclusive* of their
end frame. Conversions that the course does for you, and says so:

* any sampling rate is resampled to 16 kHz (librosa, ``soxr_hq``);
* stereo / multi-channel audio is mixed down to mono by averaging the channels;
* signed PCM arrays (int8 / int16 / int32) are scaled to [-1, 1) by ``2**(bits-1)``;
* unsigned PCM arrays (uint8 / uint16 / uint32, e.g. 8-bit WAV) are *centred* first:
  ``(x - 2**(bits-1)) / 2**(bits-1)``, so an all-128 uint8 clip is silence (and refused as such);
* a ``datasets`` audio dict is read from its ``array`` (with its ``sampling_rate``), else from
  its ``path`` (the file's own rate), else from its undecoded ``bytes``; a ``sampling_rate`` of
  ``None`` in the dict does not override an explicit ``sampling_rate=`` argument, and two different
  rates are refused.

Everything else is refused with an :class:`AudioError`: empty clips, silent clips, NaN or inf
samples, arrays of more than two dimensions, 64-bit integer arrays (int64 / uint64 have no PCM
scale: ``np.array`` of Python ints gives them, so they are refused rather than guessed; convert to
the real PCM type, e.g. ``x.astype(np.int16)``, or to float in [-1, 1]), clips longer than a model
accepts (:func:`check_duration`) and clips shorter than wav2vec2's receptive field
(:func:`wav2vec2_num_frames`: 400 samples = 25 ms at 16 kHz).

Alignments (:func:`check_alignment`, :func:`words_to_frame_spans`) are refused with an
:class:`AlignmentError` naming the word when a time is missing, NaN or infinite, negative, past
the clip (or, without a clip duration, past the frames' window), reversed, or out of order.
"""
from __future__ import annotations

import math
import os
from typing import Iterable, Sequence

import numpy as np

SAMPLE_RATE = 16000
#: peak amplitude under which a clip counts as silent
SILENCE_PEAK = 1e-4


class AudioError(ValueError):
    """A clip that cannot be analysed (empty, silent, malformed, too long...)."""


class AlignmentError(ValueError):
    """A word alignment that does not fit the clip (outside it, unordered, negative...)."""


def _to_float(arr: np.ndarray) -> np.ndarray:
    """PCM -> float32 in [-1, 1] (see the module docstring for the conversions)."""
    if arr.dtype == object:
        raise AudioError("audio array holds Python objects, not samples; pass a numeric array, a path "
                         "or a datasets audio dict {'array', 'sampling_rate'} / {'path'}")
    if np.issubdtype(arr.dtype, np.integer):
        bits = arr.dtype.itemsize * 8
        if bits > 32:
            raise AudioError(
                f"audio array has dtype {arr.dtype}: 64-bit integers have no PCM scale (numpy makes them "
                "from Python ints), so they are not guessed at. Convert to the PCM type the samples "
                "really are (e.g. x.astype(np.int16) for 16-bit PCM) or to float samples in [-1, 1]")
        half = float(2 ** (bits - 1))
        x = arr.astype(np.float64)
        if np.issubdtype(arr.dtype, np.unsignedinteger):
            x = x - half  # unsigned PCM is centred on 2**(bits-1) (8-bit WAV: 128 is silence)
        return (x / half).astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float32, copy=False)
    raise AudioError(f"audio array has dtype {arr.dtype}; expected float or integer PCM samples")


def _to_mono(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 1:
        return arr
    if arr.ndim != 2:
        raise AudioError(f"audio must be 1-D (samples) or 2-D (channels); got shape {arr.shape}")
    # channels are the short axis: (2, n) from librosa, (n, 2) from soundfile
    ch_axis = 0 if arr.shape[0] <= arr.shape[1] else 1
    if arr.shape[ch_axis] > 8:
        raise AudioError(
            f"audio of shape {arr.shape} looks like a batch, not a multi-channel clip; pass one clip"
        )
    return arr.mean(axis=ch_axis)


def load_audio(source, sampling_rate: int | None = None, check: bool = True) -> np.ndarray:
    """Return the clip as float32 mono samples at 16 kHz.

    ``source`` is a file path (anything soundfile/librosa read), a numpy array or torch tensor
    (then ``sampling_rate`` is required unless it is already 16 kHz), raw file bytes, or a
    ``datasets`` audio dict: ``{"array": ..., "sampling_rate": ...}``, ``{"path": ...}`` or
    ``{"bytes": ..., "path": ...}`` (a ``sampling_rate`` of None in the dict leaves the argument's).
    """
    if isinstance(source, dict):
        source, sampling_rate = _from_audio_dict(source, sampling_rate)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise AudioError(f"audio file not found: {path}")
        try:
            import soundfile as sf

            arr, sr = sf.read(path, dtype="float32", always_2d=False)
        except Exception:  # formats soundfile cannot read (mp3 in old libsndfile...)
            try:
                import librosa

                arr, sr = librosa.load(path, sr=None, mono=False)
            except Exception as err:  # pragma: no cover - depends on codecs present
                raise AudioError(f"could not read audio file {path}: {err}") from err
        sampling_rate = sr
    elif isinstance(source, (bytes, bytearray)):
        arr, sampling_rate = _decode_bytes(bytes(source), "")
    else:
        if hasattr(source, "detach"):  # torch tensor
            source = source.detach().cpu().numpy()
        arr = np.asarray(source)
        if sampling_rate is None:
            raise AudioError(
                "an audio array was given without its sampling_rate; pass sampling_rate=... "
                f"(the models expect {SAMPLE_RATE} Hz and the clip will be resampled)"
            )
    if arr.size == 0:
        raise AudioError("the audio clip is empty (0 samples)")
    arr = _to_mono(_to_float(arr))
    if not np.all(np.isfinite(arr)):
        raise AudioError("the audio clip contains NaN or infinite samples")
    if int(sampling_rate) <= 0:
        raise AudioError(f"invalid sampling rate {sampling_rate}")
    if int(sampling_rate) != SAMPLE_RATE:
        import librosa

        arr = librosa.resample(arr, orig_sr=int(sampling_rate), target_sr=SAMPLE_RATE, res_type="soxr_hq")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if check:
        check_audio(arr)
    return arr


def _from_audio_dict(d: dict, sampling_rate):
    """A ``datasets`` audio dict -> (samples or a path, sampling rate) for load_audio."""
    sr = d.get("sampling_rate")
    if sr is not None and sampling_rate is not None and int(sr) != int(sampling_rate):
        raise AudioError(f"the audio dict says sampling_rate={sr} but sampling_rate={sampling_rate} was "
                         "passed; give one of them")
    arr = d.get("array")
    if arr is not None and np.size(arr) > 0:
        return arr, (sr if sr is not None else sampling_rate)
    if d.get("bytes"):  # datasets' undecoded Audio: {"bytes": ..., "path": file name inside an archive}
        return _decode_bytes(bytes(d["bytes"]), str(d.get("path") or ""))
    if d.get("path"):
        return os.fspath(d["path"]), None  # a file carries its own rate
    if arr is not None:
        raise AudioError("the audio clip is empty (0 samples) and the dict has no path or bytes to read")
    raise AudioError(f"the audio dict has none of 'array', 'path' or 'bytes' (keys: {sorted(d)})")


def _decode_bytes(data: bytes, name: str):
    import io

    try:
        import soundfile as sf

        return sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    except Exception:
        import tempfile

        try:
            import librosa

            with tempfile.NamedTemporaryFile(suffix=os.path.splitext(name)[1] or ".mp3") as f:
                f.write(data)
                f.flush()
                return librosa.load(f.name, sr=None, mono=False)
        except Exception as err:  # pragma: no cover - depends on codecs present
            raise AudioError(f"could not decode the audio bytes{' of ' + name if name else ''}: {err}") from err


def check_audio(audio: np.ndarray) -> None:
    """Refuse clips no analysis can use: empty, silent (peak < 1e-4) or non-finite."""
    if audio.ndim != 1:
        raise AudioError(f"expected mono samples (1-D); got shape {audio.shape}; use load_audio")
    if audio.size == 0:
        raise AudioError("the audio clip is empty (0 samples)")
    if not np.all(np.isfinite(audio)):
        raise AudioError("the audio clip contains NaN or infinite samples")
    peak = float(np.max(np.abs(audio)))
    if peak < SILENCE_PEAK:
        raise AudioError(
            f"the audio clip is silent (peak amplitude {peak:.2e} < {SILENCE_PEAK:g}); "
            "nothing to analyse"
        )


def duration(audio: np.ndarray) -> float:
    return len(audio) / SAMPLE_RATE


def check_duration(audio: np.ndarray, max_seconds: float, model_name: str = "this model") -> None:
    """Refuse clips longer than a model accepts (Whisper: 30 s)."""
    d = duration(audio)
    if d > max_seconds + 1e-9:
        raise AudioError(
            f"the clip lasts {d:.2f} s but {model_name} accepts at most {max_seconds:g} s; "
            "cut it (e.g. around the words of interest) before analysing it"
        )


# --------------------------------------------------------------------------------------------
# time <-> frames
# --------------------------------------------------------------------------------------------
def time_to_frame(t: float, n_frames: int, window: float) -> int:
    """``ceil(F * t / T)`` clipped to ``[0, F-1]`` (the study's map from seconds to frames)."""
    if n_frames <= 0 or window <= 0:
        raise ValueError(f"need n_frames > 0 and window > 0; got {n_frames}, {window}")
    if not math.isfinite(t):
        raise AlignmentError(f"time {t} s is not a finite number")
    # a tiny tolerance so that 0.1 s * 50 fps does not become ceil(5.000000001) = 6
    f = math.ceil(n_frames * t / window - 1e-9)
    return int(min(max(f, 0), n_frames - 1))


def frame_to_time(frame: int | np.ndarray, n_frames: int, window: float):
    """Start time (s) of a frame: ``frame * T / F``."""
    return np.asarray(frame) * (window / n_frames)


def span_to_frames(start: float, end: float, n_frames: int, window: float) -> tuple[int, int]:
    """Inclusive frame span ``(first, last)`` of the interval ``[start, end]`` seconds."""
    if end < start:
        raise AlignmentError(f"interval ends before it starts: [{start}, {end}]")
    first = time_to_frame(start, n_frames, window)
    last = time_to_frame(end, n_frames, window)
    return first, max(first, last)


def check_alignment(alignment: Sequence[dict], audio_duration: float, tol: float = 0.02,
                    item: str | None = None) -> None:
    """Words must have finite times, lie inside the clip (``tol`` seconds of slack), with
    start <= end, in order of their start times. ``item``: a name for the messages."""
    where = f"item {item!r}: " if item is not None else ""
    if len(alignment) == 0:
        raise AlignmentError(f"{where}the alignment is empty")
    prev_start, prev_label = -math.inf, None
    for k, w in enumerate(alignment):
        try:
            s, e = float(w["start"]), float(w["end"])
        except (KeyError, TypeError, ValueError) as err:
            raise AlignmentError(f"{where}word {k} of the alignment lacks numeric start/end: {w!r}") from err
        label = w.get("word", f"#{k}") if isinstance(w, dict) else f"#{k}"
        if not (math.isfinite(s) and math.isfinite(e)):
            raise AlignmentError(f"{where}word {k} {label!r} has a non-finite time [{s}, {e}] s")
        if s < -tol or e > audio_duration + tol:
            raise AlignmentError(
                f"{where}word {k} {label!r} [{s:.3f}, {e:.3f}] s lies outside the clip [0, {audio_duration:.3f}] s"
            )
        if e < s:
            raise AlignmentError(f"{where}word {k} {label!r} ends before it starts: [{s:.3f}, {e:.3f}] s")
        if s < prev_start - 1e-9:
            raise AlignmentError(f"{where}word {k} {label!r} starts ({s:.3f} s) before the previous word "
                                 f"{prev_label!r} ({prev_start:.3f} s): alignment not in order")
        prev_start, prev_label = s, label


def words_to_frame_spans(
    alignment: Sequence[dict], n_frames: int, window: float, audio_duration: float | None = None,
    item: str | None = None,
) -> list[tuple[int, int]]:
    """Inclusive frame span of every aligned word (alignment: ``[{start, end, word}, ...]``).

    The alignment is always validated (:func:`check_alignment`): against the clip when
    ``audio_duration`` is given, else against the frames' ``window`` (Whisper: 30 s). Nothing is
    reordered. The one clamping that remains is documented in :func:`time_to_frame`: a time at the
    very end of the window (``ceil(F T / T) = F``) maps to the last frame ``F - 1``, as do the
    ``tol`` = 20 ms of slack past the clip's end that the check allows.
    """
    if n_frames <= 0 or window <= 0:
        raise ValueError(f"need n_frames > 0 and window > 0; got {n_frames}, {window}")
    check_alignment(alignment, audio_duration if audio_duration is not None else window, item=item)
    return [span_to_frames(float(w["start"]), float(w["end"]), n_frames, window) for w in alignment]


#: the shortest clip wav2vec2 / XLSR / HuBERT's feature encoder accepts: its receptive field
#: (kernels 10, 3, 3, 3, 3, 2, 2 with strides 5, 2, 2, 2, 2, 2, 2) is 400 samples = 25 ms
def wav2vec2_min_samples(conv_kernel: Iterable[int], conv_stride: Iterable[int]) -> int:
    """Receptive field (samples) of the convolutional feature encoder: the length of one frame."""
    n, jump = 1, 1
    for k, s in zip(conv_kernel, conv_stride):
        n += (int(k) - 1) * jump
        jump *= int(s)
    return n


def wav2vec2_num_frames(n_samples: int, conv_kernel: Iterable[int], conv_stride: Iterable[int]) -> int:
    """Output length of wav2vec2's convolutional feature encoder (no padding): floor((L-k)/s)+1 per layer."""
    conv_kernel, conv_stride = list(conv_kernel), list(conv_stride)
    length = int(n_samples)
    for k, s in zip(conv_kernel, conv_stride):
        length = (length - k) // s + 1
        if length <= 0:
            need = wav2vec2_min_samples(conv_kernel, conv_stride)
            raise AudioError(
                f"the clip ({n_samples} samples = {n_samples / SAMPLE_RATE * 1000:.1f} ms) is too short for the "
                f"model's feature encoder: it needs at least {need} samples = {need / SAMPLE_RATE:.3f} s "
                "at 16 kHz (its receptive field, one frame)"
            )
    return length
