"""Notebooks 06-07 exercises: references pass their checks, typical mistakes are named."""
from __future__ import annotations

import numpy as np
import pytest

from ctxmix_lite.exercises import nb06


def test_nb06_reference_and_solution_cell_pass_strict():
    from _solutions import numpy_torch_solutions as solutions, solution_sources

    assert nb06.check_cv_accuracy(nb06.cv_accuracy, strict=True)
    src = "\n".join(solution_sources("06"))
    assert "cross_validate_probe" not in src and "nb06." not in src  # written out, not the library's call
    assert nb06.check_cv_accuracy(solutions("06")["cv_accuracy_solution"], strict=True)


@pytest.mark.parametrize("random_state", [0, 7, 12345])
def test_nb06_any_correct_cross_validation_passes(random_state):
    """StratifiedKFold(shuffle=True) with any random_state is a correct answer (issue 14: the old
    check demanded equality with one split at atol 1e-9 and failed it)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def mine(X, y, n_splits=3, seed=0):
        cv = StratifiedKFold(n_splits, shuffle=True, random_state=random_state + seed)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        return float(cross_val_score(model, X, y, cv=cv).mean())

    assert nb06.check_cv_accuracy(mine, strict=True)


def test_nb06_a_hand_written_loop_passes():
    """What a learner writes from the instructions, without sklearn's splitter: a stratified split
    by hand (every class dealt round-robin into the folds)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def mine(X, y, n_splits=3, seed=0):
        X, y = np.asarray(X), np.asarray(y)
        rng = np.random.default_rng(seed)
        fold = np.empty(len(y), dtype=int)
        for label in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == label))
            fold[idx] = np.arange(len(idx)) % n_splits
        accs = []
        for k in range(n_splits):
            tr, te = fold != k, fold == k
            m = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X[tr], y[tr])
            accs.append(np.mean(m.predict(X[te]) == y[te]))
        return float(np.mean(accs))

    assert nb06.check_cv_accuracy(mine, strict=True)


@pytest.mark.parametrize("wrong, words", [
    (nb06._train_accuracy, "training"),
    (nb06._scored_on_everything, "fitted on"),
])
def test_nb06_leaky_evaluation_is_rejected_and_named(wrong, words, capsys):
    with pytest.raises(AssertionError):
        nb06.check_cv_accuracy(wrong, strict=True)
    assert words in capsys.readouterr().out


def test_nb06_other_wrong_answers_are_rejected(capsys, monkeypatch):
    monkeypatch.setenv("CTXMIX_STRICT_CHECKS", "0")

    def unseeded(X, y, n_splits=3, seed=0):  # a correct split, but not reproducible
        from sklearn.model_selection import StratifiedKFold, cross_val_score
        from sklearn.linear_model import LogisticRegression
        return float(cross_val_score(LogisticRegression(max_iter=2000), X, y, cv=StratifiedKFold(n_splits, shuffle=True)).mean())

    def misaligned(X, y, n_splits=3, seed=0):  # labels shuffled apart from their features
        return nb06.cv_accuracy(X, np.random.default_rng(seed + 1).permutation(y), n_splits, seed)

    def todo(X, y, n_splits=3, seed=0):
        raise NotImplementedError

    for fn, words in ((unseeded, "same seed"), (misaligned, "aligned"), (todo, "not implemented"),
                      (lambda X, y, n_splits=3, seed=0: np.float32(80.0), "not an accuracy"),
                      (lambda X, y, n_splits=3, seed=0: [0.8], "expected one number")):
        assert not nb06.check_cv_accuracy(fn)
        assert words in capsys.readouterr().out, words


# ----------------------------------------------------------------------------------------------- nb07
from ctxmix_lite.exercises import nb07  # noqa: E402


def test_nb07_reference_passes(monkeypatch):
    monkeypatch.setenv("CTXMIX_STRICT_CHECKS", "1")
    assert nb07.check_word_attribution(nb07.word_attribution)


@pytest.mark.parametrize("wrong, words", [(nb07._by_start, "centre"), (nb07._absolute, "sign"), (nb07._mean, "sum")])
def test_nb07_mistakes_are_named(wrong, words, capsys, monkeypatch):
    monkeypatch.setenv("CTXMIX_STRICT_CHECKS", "0")
    assert not nb07.check_word_attribution(wrong)
    assert words in capsys.readouterr().out


def test_nb07_solution_cell_passes_strict_and_is_written_out():
    from _solutions import numpy_torch_solutions as solutions, solution_sources

    src = "\n".join(solution_sources("07"))
    assert "word_scores" not in src and "nb07." not in src
    fn = solutions("07")["word_attribution_solution"]
    assert nb07.check_word_attribution(fn, strict=True)
    # the same cell with the interval's start instead of its centre is rejected
    with pytest.raises(AssertionError):
        nb07.check_word_attribution(lambda s, t, step, al: fn(s, np.asarray(t) - step / 2, step, al), strict=True)
