"""Notebook 05's exercise: the reference passes its own check, and typical mistakes are named."""
from __future__ import annotations

import numpy as np
import pytest

from ctxmix_lite import study
from ctxmix_lite.exercises import nb05


def test_reference_passes_and_matches_the_study(capsys, monkeypatch):
    monkeypatch.setenv("CTXMIX_STRICT_CHECKS", "0")
    m = np.random.default_rng(1).random((6, 7, 7))
    m = m / m.sum(-1, keepdims=True)
    assert nb05.check_cue_contribution(nb05.cue_contribution, m, [1, 2], 4)
    # on normalised rows the exercise's value is the study's read-out
    np.testing.assert_allclose(nb05.cue_contribution(m, [1, 2], 4), study.cue_contribution(m[:, 4], (1, 2)))
    assert isinstance(nb05.cue_contribution(m[0], [1], 4), float)


@pytest.mark.parametrize("wrong, words", [
    (nb05._column, "column"),
    (nb05._unnormalised, "share"),
    (nb05._first_cue_only, "several words"),
])
def test_mistakes_are_named(wrong, words, capsys, monkeypatch):
    monkeypatch.setenv("CTXMIX_STRICT_CHECKS", "0")
    assert not nb05.check_cue_contribution(wrong)
    assert words in capsys.readouterr().out


def test_not_implemented_and_strict(capsys, monkeypatch):
    def todo(word_matrix, cue, target):
        raise NotImplementedError

    monkeypatch.setenv("CTXMIX_STRICT_CHECKS", "0")
    assert not nb05.check_cue_contribution(todo)
    assert "not implemented" in capsys.readouterr().out
    with pytest.raises(AssertionError):
        nb05.check_cue_contribution(nb05._column, strict=True)


def test_solution_cell_passes_strict_and_is_written_out():
    """The notebook's collapsed solution (what CI runs with SOLUTIONS=True) passes the check;
    it computes the share itself instead of calling the library."""
    from _solutions import numpy_torch_solutions as solutions, solution_sources

    src = "\n".join(solution_sources("05"))
    assert "nb05." not in src and "study." not in src
    fn = solutions("05")["cue_contribution_solution"]
    assert nb05.check_cue_contribution(fn, strict=True)
    m = np.random.default_rng(2).random((3, 5, 5))
    assert nb05.check_cue_contribution(fn, m[1], [0, 2], 3, strict=True)  # with a "real" matrix case
    # a wrong variant of the very same cell is rejected: the check can fail
    with pytest.raises(AssertionError):
        nb05.check_cue_contribution(lambda M, cue, target: fn(np.swapaxes(M, -1, -2), cue, target), strict=True)
