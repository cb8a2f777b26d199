"""Tests of the number probe (ctxmix_lite.probe): a planted linear signal is recovered, shuffled labels
give chance, the cross-validation is deterministic under a seed and independent of item order."""
import numpy as np
import pytest

from ctxmix_lite import probe


def test_planted_signal_is_recovered():
    X, y = probe.planted_signal(n=240, d=64, strength=2.0, seed=3)
    r = probe.cross_validate_probe(X, y, seed=0)
    assert r["accuracy"] > 0.9
    assert r["macro_f1"] > 0.9
    assert len(r["fold_accuracy"]) == 3
    assert r["chance"] == pytest.approx(0.5)


def test_shuffled_labels_are_at_chance():
    X, y = probe.planted_signal(n=300, d=64, strength=2.0, seed=1)
    accs = [probe.shuffled_label_control(X, y, seed=s)["accuracy"] for s in range(5)]
    # 5 x 300 held-out predictions: the mean of chance-level accuracies has sd ~ 0.013
    assert abs(np.mean(accs) - 0.5) < 0.06
    assert max(accs) < 0.65


def test_no_signal_is_at_chance():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 16))
    y = np.array(["a", "b"] * 150)
    assert abs(probe.cross_validate_probe(X, y)["accuracy"] - 0.5) < 0.1


def test_seeded_determinism_and_seed_matters():
    X, y = probe.planted_signal(n=90, d=20, strength=0.6, seed=5)
    a = probe.cross_validate_probe(X, y, seed=7)
    b = probe.cross_validate_probe(X, y, seed=7)
    c = probe.cross_validate_probe(X, y, seed=8)
    assert a["fold_accuracy"] == b["fold_accuracy"]
    assert a["fold_accuracy"] != c["fold_accuracy"]  # a different shuffle, different folds


def test_folds_partition_and_are_stratified():
    y = np.array(["s"] * 30 + ["p"] * 60)
    seen = []
    for tr, te in probe._folds(y, 3, seed=0):
        assert len(set(tr) & set(te)) == 0
        assert (y[te] == "s").sum() == 10  # stratified: every fold keeps the 1:2 ratio
        seen.extend(te.tolist())
    assert sorted(seen) == list(range(90))


def test_matches_a_direct_sklearn_loop():
    """Independent formulation: shuffle, StratifiedKFold, StandardScaler+LogisticRegression by hand."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    X, y = probe.planted_signal(n=120, d=10, strength=0.8, seed=2)
    perm = np.random.default_rng(4).permutation(len(y))
    Xs, ys = X[perm], y[perm]
    accs = []
    for tr, te in StratifiedKFold(3).split(Xs, ys):
        sc = StandardScaler().fit(Xs[tr])
        clf = LogisticRegression(max_iter=2000).fit(sc.transform(Xs[tr]), ys[tr])
        accs.append(np.mean(clf.predict(sc.transform(Xs[te])) == ys[te]))
    r = probe.cross_validate_probe(X, y, seed=4)
    np.testing.assert_allclose(r["fold_accuracy"], accs)


def test_probe_layers_table_and_depth():
    rng = np.random.default_rng(0)
    y = np.array(["singular", "plural"] * 60)
    feats = rng.standard_normal((4, 120, 8))
    feats[3, :, 0] += 3.0 * (y == "plural")  # only the last layer carries the label
    df = probe.probe_layers(feats, y, model="m", init="trained")
    assert list(df["layer"]) == [0, 1, 2, 3]
    np.testing.assert_allclose(df["depth"], [0, 1 / 3, 2 / 3, 1])
    assert df.loc[3, "accuracy"] > 0.9 and df.loc[0, "accuracy"] < 0.7
    assert set(df["model"]) == {"m"}


def test_normalised_depth():
    assert probe.normalised_depth(0, 6) == 0.0
    assert probe.normalised_depth(6, 6) == 1.0
    np.testing.assert_allclose(probe.normalised_depth(np.arange(25), 24)[12], 0.5)
    with pytest.raises(ValueError):
        probe.normalised_depth(7, 6)


def test_bad_inputs_raise():
    X, y = probe.planted_signal(n=30, d=4)
    with pytest.raises(ValueError, match="rows"):
        probe.cross_validate_probe(X[:10], y)
    with pytest.raises(ValueError, match="two classes"):
        probe.cross_validate_probe(X, np.array(["a"] * 30))
    with pytest.raises(ValueError, match="n_splits"):
        probe.cross_validate_probe(X[:8], np.array(["a"] * 6 + ["b"] * 2))
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        probe.cross_validate_probe(Xn, y)


def test_mfcc_features_span_and_errors():
    sr = 16000
    t = np.arange(sr) / sr
    audio = (0.1 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    audio[sr // 2:] = 0.1 * np.sin(2 * np.pi * 2000 * t[sr // 2:])
    f1 = probe.mfcc_features(audio, (0.1, 0.4))
    f2 = probe.mfcc_features(audio, (0.6, 0.9))
    assert f1.shape == (26,)
    assert not np.allclose(f1, f2)  # different content in the two spans
    np.testing.assert_allclose(probe.mfcc_features(audio, (0.1, 0.4)), f1)
    with pytest.raises(ValueError, match="shorter"):
        probe.mfcc_features(audio, (0.1, 0.11))


# ------------------------------------------------------------------------------------------------
# study-level helpers
# ------------------------------------------------------------------------------------------------
def test_probe_study_skips_small_classes_and_tabulates():
    import types

    import pandas as pd

    from ctxmix_lite.study import ModelRun

    rng = np.random.default_rng(0)
    y = np.array(["singular", "plural"] * 30)
    X = rng.standard_normal((4, 60, 6))
    X[3, :, 0] += 3 * (y == "plural")
    items = pd.DataFrame(dict(item=[str(i) for i in range(60)]))
    res = types.SimpleNamespace(
        runs=[ModelRun("openai/whisper-base", "trained")],
        probe={("whisper-base (trained)", "encoder"): dict(X=X, y=y, items=items),
               ("whisper-base (trained)", "decoder"): dict(X=X[:, :4], y=y[:4], items=items[:4])})
    t = probe.probe_study(res, progress=False)
    assert set(t["component"]) == {"encoder"}  # the decoder has 2 items per class < 3 folds
    assert t.loc[t["layer"] == 3, "accuracy"].item() > 0.9
    assert set(t["init"]) == {"trained"}
    summary = pd.DataFrame(dict(model_label="whisper-base (trained)", component="encoder", measure="value_zeroing",
                                layer=[1, 2, 3], mean=[0.1, 0.2, 0.4]))
    merged, corr = probe.relate_to_cue(t, summary)
    assert len(merged) == 3 and corr["spearman"].iloc[0] > 0
    import matplotlib.pyplot as plt

    ax = probe.plot_probe(t, {"MFCC target": 0.5})
    assert ax.get_xlabel().startswith("normalised depth")
    plt.close("all")


def test_minimal_pairs_and_acoustic_features():
    import pandas as pd

    from ctxmix_lite import synth

    items = []
    for k, (sg, pl) in enumerate([("Elle a perdu le livre dans le train.", "Elle a perdu les livres dans le train."),
                                  ("Il aime la musique.", "Ils aiment la musique.")]):
        for text, lab in ((sg, "singular"), (pl, "plural")):
            try:
                s = synth.synthesize(text, voice="mb-fr1", rate=140)
            except Exception as err:  # pragma: no cover
                pytest.skip(f"synthesiser unavailable: {err}")
            cue, tgt = (3, 4) if k == 0 else (0, 1)
            items.append(dict(item_id=f"{k}-{lab}", audio=dict(array=s.audio, sampling_rate=s.sampling_rate, path=""),
                              transcription=text, alignment=s.words, cue_index=cue, target_index=tgt,
                              target_index_2=-1, template="Det_Noun" if k == 0 else "Pronoun_Verb",
                              label=lab, pair_id=f"p{k}"))
    d = probe.minimal_pair_distances(items)
    assert len(d) == 2
    # the cue differs within a pair (le/les); the homophonous target much less
    assert (d["cue_ratio"] > d["target_ratio"]).all()
    an = pd.DataFrame(dict(base_item=[it["item_id"] for it in items], use="main"))
    for span in ("target", "cue", "clip"):
        assert probe.acoustic_features(items, an, span=span).shape == (4, 26)
    with pytest.raises(ValueError, match="span"):
        probe.acoustic_features(items, an, span="word")


def test_probe_layers_names_states():
    rng = np.random.default_rng(0)
    y = np.array(["singular", "plural"] * 10)
    df = probe.probe_layers(rng.standard_normal((3, 20, 4)), y)
    assert list(df["layer_name"]) == ["input (0)", "layer 1", "layer 2"]


def _distance_items(distances):
    """Items whose alignment puts the target ``d`` words after the cue (and one Det_Noun_Verb)."""
    items = []
    for k, d in enumerate(distances):
        words = [dict(start=0.1 * i, end=0.1 * i + 0.1, word=f"w{i}") for i in range(d + 3)]
        items.append(dict(item_id=f"i{k}", alignment=words, cue_index=1, target_index=1 + d, target_index_2=-1,
                          label="singular" if k % 2 else "plural", template="Det_Noun"))
    return items


def test_cue_distances_and_probe_by_distance_degrade_gracefully(capsys):
    import types

    import pandas as pd

    from ctxmix_lite.study import ModelRun

    dist = [1] * 40 + [3] * 4 + [2] * 2  # 40 adjacent, 6 non-adjacent (3 + 3 labels)
    items = _distance_items(dist)
    items.append(dict(item_id="dnv", alignment=[dict(start=0.1 * i, end=0.1 * i + 0.1, word=f"w{i}") for i in range(5)],
                      cue_index=0, target_index=2, target_index_2=3, label="plural", template="Det_Noun_Verb"))
    an = pd.DataFrame(dict(base_item=[it["item_id"] for it in items[:-1]] + ["dnv", "dnv"],
                           use=["main"] * (len(items) - 1) + ["noun", "verb"]))
    d = probe.cue_distances(items, an)
    # by hand: target - nearest cue word; Det_Noun_Verb: det -> noun 2 words, det+noun -> verb 1 word
    assert d.tolist() == dist + [2, 1]
    y = np.array([it["label"] for it in items[:-1]] + ["plural", "plural"])
    rng = np.random.default_rng(1)
    X = rng.standard_normal((2, len(y), 5))
    X[1, :, 0] += 4 * (y == "plural")
    res = types.SimpleNamespace(runs=[ModelRun("openai/whisper-base", "trained")],
                                probe={("w (trained)", "encoder"): dict(X=X, y=y, items=an)})
    table, counts = probe.probe_by_distance(res, items)
    assert set(table["distance_group"]) == {"adjacent (1)", "non-adjacent (>=2)"}
    adj = counts[counts["distance_group"] == "adjacent (1)"].iloc[0]
    assert adj["n"] == 41 and adj["distances"] == {1: 41}
    non = counts[counts["distance_group"] == "non-adjacent (>=2)"].iloc[0]
    assert non["n"] == 7 and non["distances"] == {2: 3, 3: 4}
    assert table.loc[(table["distance_group"] == "adjacent (1)") & (table["layer"] == 1), "accuracy"].item() > 0.9
    # a group that is too small is skipped with a note, not silently
    small = {"adjacent (1)": lambda x: x == 1, "far (>=3)": lambda x: x >= 3}
    table, counts = probe.probe_by_distance(res, items, groups=small)
    assert set(table["distance_group"]) == {"adjacent (1)"}
    assert "far (>=3)" in capsys.readouterr().out
    # no item at all in a group
    table, counts = probe.probe_by_distance(res, items, groups={"far (>=9)": lambda x: x >= 9})
    assert table.empty and counts["n"].tolist() == [0]
    # issue 13: the settings object is the same call as its fields; an unknown keyword is refused
    capsys.readouterr()
    kw = dict(n_splits=5, seed=3, C=0.5, verbose=False)
    a, _ = probe.probe_by_distance(res, items, groups=small, **kw)
    b, _ = probe.probe_by_distance(res, items, groups=small, options=probe.DistanceProbeSettings(**kw))
    pd.testing.assert_frame_equal(a, b)
    assert set(a["distance_group"]) == {"adjacent (1)"} and not capsys.readouterr().out  # skipped, not printed
    assert not a.equals(probe.probe_by_distance(res, items, groups=small, verbose=False)[0])  # the settings count
    with pytest.raises(TypeError, match=r"probe_by_distance\(\) got unexpected keyword argument\(s\) \['splits'\]"):
        probe.probe_by_distance(res, items, splits=2)


def test_the_papers_fig4_values_are_drawn_at_our_depth_of_the_same_layer():
    """probe.PAPER_FIG4_WHISPER_BASE (read from the paper's figure): layer outputs 1..6, accuracies
    in [0.5, 1], the trained encoder rising from ~0.70 to its peak ~0.87 at layer 5 (as in Fig. 4),
    random below trained; drawn at depth l / 6, i.e. on our state l."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ctxmix_lite.probe import PAPER_FIG4_WHISPER_BASE as P
    from ctxmix_lite.probe import plot_paper_fig4

    assert set(P) == {(c, i) for c in ("encoder", "decoder") for i in ("trained", "random")}
    for vals in P.values():
        assert len(vals) == 6 and all(0.5 <= v <= 1 for v in vals if v == v)
    enc = P[("encoder", "trained")]
    assert enc[0] < 0.72 and max(enc) == enc[4] and 0.85 <= max(enc) <= 0.89
    assert all(r < t for r, t in zip(P[("encoder", "random")], enc))
    fig, ax = plt.subplots()
    plot_paper_fig4(ax)
    lines = [l for l in ax.get_lines() if "paper Fig. 4" in l.get_label()]
    assert len(lines) == 4
    assert np.allclose(lines[0].get_xdata(), np.arange(1, 7) / 6)
    plt.close(fig)
