"""Notebook 00's reference solutions agree with ctxmix_lite.audio, and its checks catch mistakes."""
from __future__ import annotations

import math

import pytest

from ctxmix_lite import audio
from ctxmix_lite.exercises import check_function, nb00


@pytest.mark.parametrize("t", [0.0, 0.01, 0.1, 0.35, 1.1, 2.3, 7.77, 29.99, 30.0, 45.0])
@pytest.mark.parametrize("n_frames,window", [(1500, 30.0), (149, 3.0), (49, 1.0)])
def test_frame_of_matches_audio_time_to_frame(t, n_frames, window):
    assert nb00.frame_of(t, n_frames, window) == audio.time_to_frame(t, n_frames, window)


@pytest.mark.parametrize("start,end", [(0.35, 0.8), (1.1, 1.1), (0.0, 0.02), (29.9, 35.0)])
def test_word_to_frames_matches_audio_span_to_frames(start, end):
    assert nb00.word_to_frames(start, end) == audio.span_to_frames(start, end, 1500, 30.0)


def test_reference_passes_its_own_checks():
    assert nb00.check_frame_of(nb00.frame_of) and nb00.check_word_to_frames(nb00.word_to_frames)


def test_checks_catch_typical_mistakes(capsys, monkeypatch):
    monkeypatch.setenv("CTXMIX_STRICT_CHECKS", "0")  # return False instead of raising
    naive = lambda t, n_frames=1500, window=30.0: min(math.ceil(n_frames * t / window), n_frames - 1)  # noqa: E731
    assert not nb00.check_frame_of(lambda t, n_frames=1500, window=30.0: t * 50)
    assert "expected an integer" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="floating point"):
        check_function(naive, nb00.frame_of, nb00.FRAME_CASES, "frame_of", atol=0, rtol=0,
            hints=nb00.FRAME_HINTS, strict=True)
    unclipped = lambda t, n_frames=1500, window=30.0: math.ceil(n_frames * t / window - 1e-9)  # noqa: E731
    assert not nb00.check_frame_of(unclipped)
    assert "clip the index" in capsys.readouterr().out
    no_min_len = lambda s, e, n_frames=1500, window=30.0: (nb00.frame_of(s, n_frames, window), nb00.frame_of(e, n_frames, window) - 1)  # noqa: E731
    assert not nb00.check_word_to_frames(no_min_len)


# ---- the notebook's own (readable) solutions --------------------------------------------------
def test_notebook_solutions_pass_the_checks():
    from _solutions import load_solutions, solution_sources

    ns = load_solutions("00", {"math": math})  # the notebook imports math in its imports cell
    assert nb00.check_frame_of(ns["frame_of_solution"], strict=True)
    assert nb00.check_word_to_frames(ns["word_to_frames_solution"], strict=True)
    src = "\n".join(solution_sources("00"))
    # written from the equation, not a call into the library the exercise asks to rebuild
    assert "time_to_frame" not in src and "span_to_frames" not in src and "nb00." not in src


def test_checks_reject_a_deliberately_wrong_solution():
    """Rounding down instead of up: off by one frame almost everywhere."""
    floor = lambda t, n_frames=1500, window=30.0: int(min(max(math.floor(n_frames * t / window), 0), n_frames - 1))  # noqa: E731
    with pytest.raises(AssertionError, match="frame_of"):
        nb00.check_frame_of(floor, strict=True)
    swapped = lambda s, e, n_frames=1500, window=30.0: (nb00.frame_of(e, n_frames, window), nb00.frame_of(s, n_frames, window))  # noqa: E731
    with pytest.raises(AssertionError, match="first <= last"):
        nb00.check_word_to_frames(swapped, strict=True)
