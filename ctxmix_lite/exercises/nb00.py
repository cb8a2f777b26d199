"""Notebook 00 (welcome): reference solutions and checks -- seconds -> encoder frames.

A speech encoder sees *frames*, not words. Whisper pads every clip to ``T = 30 s`` and its encoder
outputs ``F = 1500`` frames (20 ms each); wav2vec2 outputs about 49 frames per second of the clip
itself (``T`` = clip duration). The study maps a time ``t`` to the frame ``ceil(F * t / T)``
(clipped to ``[0, F - 1]``), and a word ``[start, end]`` to the inclusive frame span
``(frame(start), max(frame(start), frame(end)))``.
"""
from __future__ import annotations

import math

from ctxmix_lite.exercises import case, check_function


def frame_of(t: float, n_frames: int = 1500, window: float = 30.0) -> int:
    """Frame index of time ``t`` seconds: ``ceil(F * t / T)`` clipped to ``[0, F - 1]``.

    ``1e-9`` absorbs floating-point noise: ``1500 * 1.1 / 30`` is ``55.00000000000001`` in
    floating point, and its ceiling would wrongly be 56.
    """
    f = math.ceil(n_frames * t / window - 1e-9)  # ceil(F t / T)
    return int(min(max(f, 0), n_frames - 1))  # clip to [0, F-1]


def word_to_frames(start: float, end: float, n_frames: int = 1500, window: float = 30.0) -> tuple:
    """Inclusive frame span ``(first, last)`` of a word from ``start`` to ``end`` seconds."""
    first = frame_of(start, n_frames, window)
    last = max(first, frame_of(end, n_frames, window))  # a very short word keeps >= 1 frame
    return first, last


FRAME_CASES = [
    case(0.0, label="t = 0"),
    case(0.35, label="t = 0.35 s (between frames)"),
    case(0.1, label="t = 0.1 s (exactly frame 5)"),
    case(1.1, label="t = 1.1 s (on a frame boundary, floating-point noise)"),
    case(29.999, label="t near the end of the 30 s window"),
    case(31.0, label="t beyond the window"),
    case(1.234, n_frames=149, window=3.0, label="wav2vec2: 149 frames for a 3 s clip"),
]

FRAME_HINTS = {
    "t = 1.1 s (on a frame boundary, floating-point noise)":
        "1500 * 1.1 / 30 is 55.00000000000001 in floating point: subtract a tiny tolerance "
        "(1e-9) before math.ceil, so that a time exactly on a boundary stays on its frame.",
    "t near the end of the 30 s window": "clip the index to the last frame, n_frames - 1.",
    "t beyond the window": "clip the index to the last frame, n_frames - 1.",
    "t = 0": "the first frame is 0.",
    "dtype": "return a plain Python int (int(...)), not a float.",
}

SPAN_CASES = [
    case(0.35, 0.80, label="a word from 0.35 to 0.80 s"),
    case(1.1, 1.1, label="a zero-length word"),
    case(0.0, 0.02, label="the first frame"),
    case(2.0, 2.9, n_frames=149, window=3.0, label="wav2vec2 clip of 3 s"),
    case(29.9, 35.0, label="a word past the window"),
]


def check_frame_of(fn) -> bool:
    """Compare a learner's ``frame_of(t, n_frames=1500, window=30.0)`` with the reference."""
    return check_function(fn, frame_of, FRAME_CASES, "frame_of", atol=0, rtol=0,
                          hints=FRAME_HINTS)


def check_word_to_frames(fn) -> bool:
    """Compare a learner's ``word_to_frames(start, end, n_frames, window)`` with the reference."""
    return check_function(fn, word_to_frames, SPAN_CASES, "word_to_frames", atol=0, rtol=0,
                          hints={"a zero-length word": "a word always keeps at least one frame: "
                                                       "last = max(first, frame of the end).",
                                 "type": "return a tuple (first, last)."})
