"""Audio loading conversions, refusals, and the time -> frame maps of the study."""
import math

import numpy as np
import pytest
import soundfile as sf

from ctxmix_lite import audio as A


def tone(sr=16000, seconds=1.0, f=220.0):
    t = np.arange(int(sr * seconds)) / sr
    return (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32)


def test_array_needs_sampling_rate():
    with pytest.raises(A.AudioError, match="sampling_rate"):
        A.load_audio(tone())


def test_resample_to_16k():
    x = tone(sr=22050, seconds=2.0)
    y = A.load_audio(x, sampling_rate=22050)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 32000) <= 2
    # the tone survives resampling: same dominant frequency
    spec = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spec) * 16000 / len(y) - 220.0) < 2.0


@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
def test_stereo_is_mixed_to_mono(layout):
    left, right = tone(f=220.0), tone(f=330.0)
    st = np.stack([left, right], axis=1 if layout == "channels_last" else 0)
    y = A.load_audio(st, sampling_rate=16000)
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-7)


def test_int16_pcm_is_scaled():
    x = (tone() * 32767).astype(np.int16)
    y = A.load_audio(x, sampling_rate=16000)
    assert np.max(np.abs(y)) <= 1.0 and np.max(np.abs(y)) > 0.29


def test_file_round_trip(tmp_path):
    p = tmp_path / "x.wav"
    sf.write(p, tone(sr=8000), 8000)
    y = A.load_audio(p)
    assert abs(len(y) - 16000) <= 2


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros(0, np.float32), "empty"),
        (np.zeros(16000, np.float32), "silent"),
        (np.full(100, np.nan, np.float32), "NaN"),
        (np.zeros((2, 3, 100), np.float32), "1-D"),
        (np.ones((16, 1000), np.float32), "batch"),
    ],
)
def test_bad_arrays_are_refused(bad, match):
    with pytest.raises(A.AudioError, match=match):
        A.load_audio(bad, sampling_rate=16000)


def test_missing_file():
    with pytest.raises(A.AudioError, match="not found"):
        A.load_audio("/nonexistent/clip.wav")


def test_duration_limit():
    x = np.concatenate([tone(seconds=31.0)])
    with pytest.raises(A.AudioError, match="at most 30"):
        A.check_duration(x, 30.0, "Whisper")
    A.check_duration(tone(seconds=30.0), 30.0)


def test_time_to_frame_whisper():
    F, T = 1500, 30.0
    assert A.time_to_frame(0.0, F, T) == 0
    assert A.time_to_frame(0.02, F, T) == 1  # exactly one frame: ceil(1.0) = 1, not 2
    assert A.time_to_frame(0.021, F, T) == 2
    assert A.time_to_frame(0.1, F, T) == 5
    assert A.time_to_frame(30.0, F, T) == F - 1  # clipped
    assert A.time_to_frame(45.0, F, T) == F - 1
    # ceil(F t / T) for a grid of times
    for t in np.linspace(0.0013, 29.9, 57):
        assert A.time_to_frame(t, F, T) == min(math.ceil(F * t / T), F - 1)


def test_span_is_inclusive_and_ordered():
    assert A.span_to_frames(0.5, 0.7, 1500, 30.0) == (25, 35)
    assert A.span_to_frames(0.5, 0.5, 1500, 30.0) == (25, 25)
    with pytest.raises(A.AlignmentError):
        A.span_to_frames(0.7, 0.5, 1500, 30.0)


def test_wav2vec2_window_is_clip_duration():
    # 2 s clip, 99 frames: the word at [1.0, 1.5] s
    assert A.span_to_frames(1.0, 1.5, 99, 2.0) == (50, 75)


ALIGN = [{"start": 0.1, "end": 0.3, "word": "le"}, {"start": 0.3, "end": 0.8, "word": "livre"}]


def test_words_to_frame_spans():
    assert A.words_to_frame_spans(ALIGN, 1500, 30.0, audio_duration=1.0) == [(5, 15), (15, 40)]


@pytest.mark.parametrize(
    "alignment, match",
    [
        ([{"start": 0.1, "end": 1.5, "word": "x"}], "outside the clip"),
        ([{"start": -0.5, "end": 0.2, "word": "x"}], "outside the clip"),
        ([{"start": 0.4, "end": 0.2, "word": "x"}], "ends before"),
        (list(reversed(ALIGN)), "not in order"),
        ([{"word": "x"}], "start/end"),
        ([], "empty"),
    ],
)
def test_bad_alignments(alignment, match):
    with pytest.raises(A.AlignmentError, match=match):
        A.check_alignment(alignment, audio_duration=1.0)


def test_wav2vec2_num_frames():
    kernel, stride = (10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)
    assert A.wav2vec2_num_frames(16000, kernel, stride) == 49
    with pytest.raises(A.AudioError, match="too short"):
        A.wav2vec2_num_frames(100, kernel, stride)
