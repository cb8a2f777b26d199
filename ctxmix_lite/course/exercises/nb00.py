"""Notebook 00 (welcome): the checks of its exercises -- seconds -> encoder frames.

A speech encoder sees *frames*, not words. Whisper pads every clip to ``T = 30 s`` and its encoder
outputs ``F = 1500`` frames (20 ms each); wav2vec2 outputs about 49 frames per second of the clip
itself (``T`` = clip duration). The study maps a time ``t`` to the frame ``ceil(F * t / T)``
(clipped to ``[0, F - 1]``), and a word ``[start, end]`` to the inclusive frame span
``(frame(start), max(frame(start), frame(end)))``.

The notebook's readable solutions live in the notebook itself (collapsed cells tagged
``solution``). The references here are the library's own functions,
:func:`ctxmix_lite.corpus.audio.time_to_frame` and :func:`ctxmix_lite.corpus.audio.span_to_frames` -- what the
study uses -- so a solution is checked against an independent formulation. Frame indices are
integers: one answer is right, so the comparison is exact.
"""
from __future__ import annotations

from ctxmix_lite.corpus import audio
from ctxmix_lite.course.exercises import case, check_function


def frame_of(t: float, n_frames: int = 1500, window: float = 30.0) -> int:
    """Reference: frame index of time ``t`` seconds, ``ceil(F * t / T)`` clipped to ``[0, F - 1]``
    (:func:`ctxmix_lite.corpus.audio.time_to_frame`)."""
    return audio.time_to_frame(t, n_frames, window)


def word_to_frames(start: float, end: float, n_frames: int = 1500, window: float = 30.0) -> tuple:
    """Reference: inclusive frame span ``(first, last)`` of a word from ``start`` to ``end`` seconds
    (:func:`ctxmix_lite.corpus.audio.span_to_frames`)."""
    return audio.span_to_frames(start, end, n_frames, window)


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


def _n_frames(c) -> int:
    return c.kwargs.get("n_frames", c.args[1] if len(c.args) > 1 else 1500)


def _n_frames_span(c) -> int:
    return c.kwargs.get("n_frames", c.args[2] if len(c.args) > 2 else 1500)


FRAME_PROPERTIES = [
    ("a frame index lies in [0, n_frames - 1].",
     lambda out, c: not isinstance(out, int) or 0 <= out < _n_frames(c)),  # (the type: compared below)
]

SPAN_PROPERTIES = [
    ("a span (first, last) has 0 <= first <= last <= n_frames - 1 (a word keeps at least one frame).",
     lambda out, c: (not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(v, int) for v in out))
                     or 0 <= out[0] <= out[1] < _n_frames_span(c))),
]


def check_frame_of(fn, strict=None) -> bool:
    """Compare a learner's ``frame_of(t, n_frames=1500, window=30.0)`` with the reference."""
    return check_function(fn, frame_of, FRAME_CASES, "frame_of", atol=0, rtol=0,
                          hints=FRAME_HINTS, strict=strict, properties=FRAME_PROPERTIES)


def check_word_to_frames(fn, strict=None) -> bool:
    """Compare a learner's ``word_to_frames(start, end, n_frames, window)`` with the reference."""
    return check_function(fn, word_to_frames, SPAN_CASES, "word_to_frames", atol=0, rtol=0,
                          hints={"a zero-length word": "a word always keeps at least one frame: "
                                                       "last = max(first, frame of the end).",
                                 "type": "return a tuple (first, last).",
                                 "property": "first = frame of the start, last = max(first, frame of "
                                             "the end), both clipped to [0, n_frames - 1]."},
                          strict=strict, properties=SPAN_PROPERTIES)
