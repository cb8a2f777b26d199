"""Notebooks 06-07 exercises: references pass their checks, typical mistakes are named."""
from __future__ import annotations

import numpy as np
import pytest

from ctxmix_lite.exercises import nb06


def test_nb06_reference_passes(monkeypatch):
    monkeypatch.setenv("CTXMIX_STRICT_CHECKS", "0")
    assert nb06.check_cv_accuracy(nb06.cv_accuracy)


def test_nb06_training_accuracy_is_named(capsys, monkeypatch):
    monkeypatch.setenv("CTXMIX_STRICT_CHECKS", "0")
    assert not nb06.check_cv_accuracy(nb06._train_accuracy)
    assert "training" in capsys.readouterr().out


def test_nb06_a_hand_written_loop_passes(monkeypatch):
    """What a learner writes from the instructions matches the reference exactly."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def mine(X, y, n_splits=3, seed=0):
        perm = np.random.default_rng(seed).permutation(len(y))
        Xs, ys = np.asarray(X)[perm], np.asarray(y)[perm]
        accs = []
        for tr, te in StratifiedKFold(n_splits).split(Xs, ys):
            m = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(Xs[tr], ys[tr])
            accs.append(np.mean(m.predict(Xs[te]) == ys[te]))
        return float(np.mean(accs))

    monkeypatch.setenv("CTXMIX_STRICT_CHECKS", "1")
    assert nb06.check_cv_accuracy(mine)


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
