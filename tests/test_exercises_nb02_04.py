"""Notebooks 02-04: reference solutions pass their own checks, and the checks name typical mistakes."""
from __future__ import annotations

import pytest
import torch

from _hand_captures import TRANSCRIPT, real_capture
from ctxmix_lite import patterns
from ctxmix_lite.course import speech_clips
from ctxmix_lite.exercises import case, nb02, nb03, nb04


# ----------------------------------------------------------------------------------------------- nb02
def test_cad_reference_and_mistakes(capsys, monkeypatch):
    monkeypatch.setenv("CTXMIX_STRICT_CHECKS", "0")
    maps = torch.softmax(torch.randn(2, 3, 25, 25), -1)
    assert nb02.check_cad(nb02.cad, real_maps=maps)
    capsys.readouterr()
    assert not nb02.check_cad(nb02._cad_wrong_T)
    assert "1 - k/(T - 1)" in capsys.readouterr().out
    assert not nb02.check_cad(nb02._cad_diag_only)
    assert "D(0)" in capsys.readouterr().out
    assert torch.allclose(nb02.cad(maps), patterns.cad(maps).float())


def test_nb02_notebook_solution_passes_and_a_wrong_one_fails(capsys):
    """The collapsed solution cell of notebook 02 (after the notebook's `import torch`) passes the
    check strictly; the same solution without the 1/T leaves [0, 1] and is rejected."""
    from _solutions import load_solutions, solution_sources

    cad_solution = load_solutions("02", {"torch": torch})["cad_solution"]
    maps = torch.softmax(torch.randn(2, 3, 25, 25, generator=torch.Generator().manual_seed(1)), -1)
    assert nb02.check_cad(cad_solution, real_maps=maps, strict=True)
    assert "patterns." not in "\n".join(solution_sources("02")) and "nb02." not in "\n".join(solution_sources("02"))
    no_mean = lambda A: cad_solution(A) * A.shape[-1]  # noqa: E731  (forgot the 1/T)
    with pytest.raises(AssertionError, match="lies in \\[0, 1\\]"):
        nb02.check_cad(no_mean, real_maps=maps, strict=True)
    assert "divide by T" in capsys.readouterr().out  # the diagnosis names the mistake
    float64 = lambda A: cad_solution(A.double())  # noqa: E731  right values, wrong dtype: the check says so
    with pytest.raises(AssertionError, match="dtype"):
        nb02.check_cad(float64, strict=True)


def test_word_map_and_measures_on_tiny_capture():
    from _hand_captures import all_tiny_captures

    caps = all_tiny_captures(seed=5, final=False)
    lc = caps["whisper_encoder"]
    out = speech_clips.layer_measures(lc, "encoder", 12, measures=("attention", "attention_norm", "value_zeroing", "alti"))
    for k in ("attention", "attention_norm", "value_zeroing", "alti"):
        assert out[k].shape == (12, 12) and torch.allclose(out[k].sum(-1), torch.ones(12), atol=1e-5), k
    assert out["attention_heads"].shape == (lc.num_heads, 12, 12)
    # against the equations, written here without the registry: the crop, then rows renormalised
    w = lc.weights[:, :12, :12].double()
    assert torch.allclose(out["attention"].double(), w.mean(0) / w.mean(0).sum(-1, keepdim=True), atol=1e-6)
    H, Tk, dh = lc.values.shape
    W_O = lc.W_O.double().reshape(-1, H, dh)  # W_O^h = W_O[:, h d_h:(h+1) d_h]
    vW = torch.einsum("hkd,ehd->hke", lc.values.double(), W_O)  # v_j^h W_O^h  [H, Tk, D]
    an = (lc.weights.double()[:, :12, :, None] * vW[:, None]).norm(dim=-1)[..., :12]  # ||alpha_ij^h v_j^h W_O^h||
    assert torch.allclose(out["attention_norm_heads"].double(), an / an.sum(-1, keepdim=True), atol=1e-5)
    cross = speech_clips.layer_measures(caps["whisper_cross"], "cross", 10, measures=("attention", "value_zeroing", "alti"))
    assert cross["value_zeroing"].shape == (24, 10) and "alti" not in cross
    dec = speech_clips.layer_measures(caps["whisper_decoder"], "decoder", 10, measures=("value_zeroing",))
    assert torch.all(dec["value_zeroing"].triu(1) == 0)


# ----------------------------------------------------------------------------------------------- nb03
def _random_block(H=4, Tq=7, Tk=9, dh=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.softmax(torch.randn(H, Tq, Tk, generator=g), -1)
    v = torch.randn(H, Tk, dh, generator=g)
    W_O = torch.randn(H * dh + 3, H * dh, generator=g)  # D != H*dh on purpose
    return w, v, W_O


def test_nb03_reference_matches_explicit_formula():
    w, v, W_O = _random_block()
    H, Tk, dh = v.shape
    want = torch.zeros(w.shape[1], Tk)
    for i in range(w.shape[1]):
        for j in range(Tk):
            f = sum(w[h, i, j] * (v[h, j] @ W_O[:, h * dh:(h + 1) * dh].T) for h in range(H))
            want[i, j] = f.norm()
    assert torch.allclose(nb03.attention_norm(w, v, W_O), want, atol=1e-5)
    ph = nb03.attention_norm(w, v, W_O, per_head=True)
    assert torch.allclose(ph[2, 3, 4], (w[2, 3, 4] * (v[2, 4] @ W_O[:, 2 * dh:3 * dh].T)).norm(), atol=1e-6)


def _nb03_solution():
    from _solutions import load_solutions

    return load_solutions("03", {"torch": torch})["attention_norm_solution"]


def test_nb03_notebook_solution_matches_explicit_formula_and_invariants():
    """The notebook's solution cell against the pair-by-pair formula (an independent loop), the
    properties the check tests, and no call into the library it asks to rebuild."""
    from _solutions import solution_sources

    sol = _nb03_solution()
    w, v, W_O = _random_block(seed=3)
    H, Tk, dh = v.shape
    want = torch.stack([torch.stack([sum(w[h, i, j] * (v[h, j] @ W_O[:, h * dh:(h + 1) * dh].T) for h in range(H)).norm()
                                     for j in range(Tk)]) for i in range(w.shape[1])])
    assert torch.allclose(sol(w, v, W_O), want, atol=1e-5)
    assert torch.allclose(sol(w, v, W_O, per_head=True), nb03.attention_norm(w, v, W_O, per_head=True), atol=1e-5)
    causal = torch.softmax(torch.randn(H, Tk, Tk).masked_fill(torch.ones(Tk, Tk, dtype=torch.bool).triu(1), float("-inf")), -1)
    c = case(causal, v, W_O, label="causal block")
    (_, non_negative), (_, zero_where_unattended) = nb03.INVARIANTS
    good = sol(causal, v, W_O)
    assert non_negative(good, c) and zero_where_unattended(good, c)
    assert not non_negative(-good, c)
    assert not zero_where_unattended(good + torch.ones(Tk, Tk).triu(1), c)  # a score for the future
    src = "\n".join(solution_sources("03"))
    assert "attention_norm(" not in src.replace("def attention_norm_solution(", "") and "nb03." not in src


@pytest.mark.slow
def test_nb03_notebook_solution_on_real_capture(french_clip):
    cap = real_capture("whisper-base trained", french_clip)
    sol = _nb03_solution()
    assert nb03.check_attention_norm(sol, cap, strict=True)
    # deliberately wrong: rows of W_O instead of columns (D = H d_h here, so the shapes still fit)
    wrong = lambda w, v, W_O, per_head=False: sol(w, v, W_O.T.contiguous(), per_head)  # noqa: E731
    with pytest.raises(AssertionError, match="attention_norm"):
        nb03.check_attention_norm(wrong, cap, strict=True)


@pytest.mark.slow
def test_nb03_check_on_real_capture(french_clip, capsys, monkeypatch):
    cap = real_capture("whisper-base trained", french_clip)
    assert nb03.check_attention_norm(nb03.attention_norm, cap)
    monkeypatch.setenv("CTXMIX_STRICT_CHECKS", "0")
    capsys.readouterr()
    assert not nb03.check_attention_norm(nb03._sum_of_norms, cap)
    assert "norm of the *sum*" in capsys.readouterr().out
    assert not nb03.check_attention_norm(nb03._rows_not_columns, cap)
    assert "block of *columns*" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------- nb04
@pytest.mark.slow
def test_nb04_check_on_real_capture(french_clip, capsys, monkeypatch):
    cap = real_capture("whisper-base trained", french_clip)
    spans = [(5, 12), (13, 30), (31, 45), (46, 60), (61, 80), (81, 100)]
    rows = list(range(31, 46))
    assert nb04.check_value_zeroing_slow(nb04.value_zeroing_slow, cap, spans, rows)

    def learner(cap, spans=None, rows=None, causal_zero=True, dtype=torch.float64):  # as the notebook asks
        cols = [[j] for j in range(cap.weights.shape[-1])] if spans is None else [list(range(f, l + 1)) for f, l in spans]
        r = list(range(cap.out.shape[0])) if rows is None else list(rows)
        out = torch.stack([1 - torch.nn.functional.cosine_similarity(cap.rerun(p)[r].to(dtype), cap.out[r].to(dtype), dim=-1)
                           for p in cols], -1)
        if cap.causal and causal_zero:
            out = out.tril()
        return (out / out.sum(-1, keepdim=True)).float()

    assert nb04.check_value_zeroing_slow(learner, cap, spans, rows)
    monkeypatch.setenv("CTXMIX_STRICT_CHECKS", "0")
    capsys.readouterr()
    # float32 and no causal zeroing: the rounding noise above the diagonal is amplified by the row
    # normalisation of the early decoder rows (tiny distances) -> fails, and the check says why
    assert not nb04.check_value_zeroing_slow(lambda *a, **k: learner(*a, causal_zero=False, dtype=torch.float32, **k),
                                             cap, spans, rows)
    assert "j > i" in capsys.readouterr().out
    assert not nb04.check_value_zeroing_slow(nb04._no_normalisation, cap, spans, rows)
    assert "not normalised" in capsys.readouterr().out
    r = nb04.identity_check(cap["encoder"][1], rows, [0, 31, 1499])
    assert r["max_abs_diff"] < 1e-4 and r["max_change"] > 1e-3
    assert TRANSCRIPT  # the capture is teacher-forced on the known sentence


# ------------------------------------------------------------------ nb04: the notebook's solution cells
_NB04_SPANS = [(5, 12), (13, 30), (31, 45), (46, 60), (61, 80), (81, 100)]
_NB04_ROWS = list(range(31, 46))


def test_nb04_solution_cells_are_written_from_the_equations():
    """The collapsed cells define the three solutions and do not call the library's answers."""
    from _solutions import numpy_torch_solutions as solutions, solution_sources

    src = "\n".join(solution_sources("04"))
    assert "nb04." not in src and "value_zeroing(" not in src.replace("def value_zeroing_slow_solution(", "")
    assert "cap.rerun" not in src.split("def value_zeroing_slow_solution")[0]  # 4.1 zeroes by itself
    assert "cap.rerun" not in src.split("def fast_zeroed_output_solution")[1]  # 4.3 re-runs nothing
    ns = solutions("04")
    for name in ("zeroed_output_solution", "value_zeroing_slow_solution", "fast_zeroed_output_solution"):
        assert callable(ns[name]), name


@pytest.mark.slow
def test_nb04_solution_cells_pass_their_checks(french_clip):
    from _solutions import numpy_torch_solutions as solutions

    cap = real_capture("whisper-base trained", french_clip)
    ns = solutions("04")
    assert nb04.check_zeroed_output(ns["zeroed_output_solution"], cap, _NB04_SPANS, strict=True)
    assert nb04.check_value_zeroing_slow(ns["value_zeroing_slow_solution"], cap, _NB04_SPANS, _NB04_ROWS, strict=True)
    assert nb04.check_fast_zeroed_output(ns["fast_zeroed_output_solution"], cap, _NB04_SPANS, _NB04_ROWS, strict=True)
    # the library's own answers pass too
    assert nb04.check_zeroed_output(nb04.zeroed_output, cap, _NB04_SPANS, strict=True)
    assert nb04.check_fast_zeroed_output(nb04.fast_zeroed_output, cap, _NB04_SPANS, _NB04_ROWS, strict=True)


@pytest.mark.slow
def test_nb04_wrong_zeroing_is_rejected_and_named(french_clip, capsys):
    cap = real_capture("whisper-base trained", french_clip)
    for hint, wrong in nb04.MISTAKES_41:
        with pytest.raises(AssertionError):
            nb04.check_zeroed_output(wrong, cap, _NB04_SPANS, strict=True)
        assert hint in capsys.readouterr().out
    # letting the model do it: refused (it is what the check compares with)
    with pytest.raises(AssertionError, match="calls cap.rerun"):
        nb04.check_zeroed_output(lambda c, p: c.rerun(p), cap, _NB04_SPANS, strict=True)
    for hint, wrong in nb04.MISTAKES_43:
        with pytest.raises(AssertionError):
            nb04.check_fast_zeroed_output(wrong, cap, _NB04_SPANS, _NB04_ROWS, strict=True)
        assert hint in capsys.readouterr().out
    with pytest.raises(AssertionError, match="calls cap.rerun"):
        nb04.check_fast_zeroed_output(nb04._rerun_rows, cap, _NB04_SPANS, _NB04_ROWS, strict=True)

    def todo(cap, positions, rows=None):
        raise NotImplementedError

    with pytest.raises(AssertionError, match="not implemented"):
        nb04.check_fast_zeroed_output(todo, cap, _NB04_SPANS, _NB04_ROWS, strict=True)


@pytest.mark.slow
def test_nb04_zeroing_the_input_moves_the_weights(french_clip):
    """The notebook's demonstration: zeroing x_j changes attention weights outside column j and
    wrecks the output at j; zeroing v_j keeps the weights and changes j's output much less."""
    from _hand_captures import real_model

    cap = real_capture("whisper-base trained", french_clip)
    model, proc = real_model("whisper-base trained")
    r = nb04.input_vs_value_zeroing(model, proc, french_clip, 1, 20, _NB04_ROWS, cap=cap)
    assert nb04.input_vs_value_zeroing(model, proc, french_clip, 1, 20, _NB04_ROWS,
                                       options=nb04.InputZeroingOptions(cap=cap)) == r  # the same call
    assert r["max_weight_change_other_columns"] > 1e-2 and r["rows_with_changed_weights"] > 0
    assert r["change_at_j"]["input"] > 0.5 > r["change_at_j"]["values"]
    assert r["change_on_rows"]["values"] > 0


# ------------------------------------------------------------------------------- options objects
def test_nb02_plot_settings_as_options_or_keywords():
    """plot_word_matrix / plot_map_with_audio: an options object draws what the same keywords draw;
    an unknown keyword is a TypeError naming the function."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    m = torch.rand(3, 4, generator=torch.Generator().manual_seed(0))
    kw = dict(title="encoder layer 2", colorbar_label="share", xlabel="source", ylabel="target")
    ax_kw = speech_clips.plot_word_matrix(m, list("abc"), list("defg"), **kw)
    ax_opt = speech_clips.plot_word_matrix(m, list("abc"), list("defg"), options=speech_clips.WordMatrixStyle(**kw))
    for ax in (ax_kw, ax_opt):
        assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == ("encoder layer 2", "source", "target")
    assert speech_clips.WordMatrixStyle.resolve(None, kw, where="t") == speech_clips.WordMatrixStyle(**kw)
    with pytest.raises(TypeError, match="plot_word_matrix.*xlabels"):
        speech_clips.plot_word_matrix(m, list("abc"), list("defg"), xlabels="source")

    clip = speech_clips.Clip(np.zeros(8000, dtype=np.float32), [{"start": 0.04, "end": 0.12, "word": "a"}], "a")
    kw = dict(title="frames", colorbar_label="share of the row", cmap="magma", vmax=0.5)
    figs = [speech_clips.plot_map_with_audio(m.T @ m, clip, 0.02, **kw),
            speech_clips.plot_map_with_audio(m.T @ m, clip, 0.02, options=speech_clips.MapWithAudioStyle(**kw))]
    got = []
    for fig in figs:
        img = fig.axes[1].images[0]
        got.append((fig.axes[1].get_title(), img.get_cmap().name, img.get_clim(), fig.axes[-1].get_ylabel()))
    assert got[0] == got[1] == ("frames", "magma", (0.0, 0.5), "share of the row")
    with pytest.raises(TypeError, match="plot_map_with_audio.*colormap"):
        speech_clips.plot_map_with_audio(m, clip, 0.02, colormap="magma")
    plt.close("all")


def test_nb04_input_vs_value_zeroing_rejects_an_unknown_setting():
    assert nb04.InputZeroingOptions.resolve(None, {"sampling_rate": 8000}, where="t") == \
        nb04.InputZeroingOptions(sampling_rate=8000)
    with pytest.raises(TypeError, match="input_vs_value_zeroing.*sample_rate"):
        nb04.input_vs_value_zeroing(None, None, None, 1, 2, [3], sample_rate=16000)
