"""Value zeroing: the exact fast path equals the reference loop (the real layer re-run per zeroed
position / span) to <= 1e-5 on every layer type, in every mode (positions, spans, rows, chunked)."""
import pytest
import torch

from _hand_captures import REAL_MODELS, all_tiny_captures, real_capture
from ctxmix_lite.value_zeroing import auto_chunk_size, value_zeroing, zeroed_outputs

TOL = 1e-5


@pytest.fixture(scope="module")
def tiny():
    return all_tiny_captures(seed=0)


def maxdiff(a, b):
    return float((a - b).abs().max())


@pytest.mark.parametrize(
    "name",
    ["whisper_encoder", "whisper_encoder_last", "whisper_decoder", "whisper_decoder_last", "whisper_cross",
     "whisper_cross_last", "w2v_postln", "w2v_stable", "w2v_stable_last"],
)
def test_fast_equals_reference_every_layer_type(tiny, name):
    cap = tiny[name]
    H, Tq, Tk = cap.weights.shape
    ref = value_zeroing(cap, method="reference")
    raw_ref = value_zeroing(cap, method="reference", normalize=False)
    assert raw_ref.max() > 1e-4, "zeroing must change the outputs (a test that cannot fail is a defect)"
    for chunk in (None, 7, 10_000):
        for factor in (None, True, False):  # factored (eq. 5) where the capture has ffn parts, and generic
            fast = value_zeroing(cap, method="fast", chunk_size=chunk, factor_ffn=factor)
            assert fast.shape == (Tq, Tk) and fast.dtype == torch.float32
            assert maxdiff(fast, ref) <= TOL, (name, chunk, factor)
            assert maxdiff(value_zeroing(cap, chunk_size=chunk, normalize=False, factor_ffn=factor), raw_ref) <= TOL
    rows = [0, Tq // 2, Tq - 1]  # one pair per chunk (rows mode keeps it short)
    assert maxdiff(value_zeroing(cap, rows=rows, chunk_size=1), ref[rows]) <= TOL
    # rows normalised (guarded), non-negative
    sums = ref.sum(-1)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    assert (ref >= 0).all()


@pytest.mark.parametrize("name", ["whisper_encoder_last", "whisper_decoder", "whisper_cross", "w2v_postln", "w2v_stable"])
def test_spans_and_rows(tiny, name):
    cap = tiny[name]
    H, Tq, Tk = cap.weights.shape
    spans = [(0, 3), (4, 4), (5, 11), (2, 9), (Tk - 6, Tk - 1)]  # overlapping spans are zeroed independently
    rows = [Tq - 1, 0, 5, 6, 17]
    ref = value_zeroing(cap, spans=spans, method="reference")
    for chunk in (None, 2, 3):
        fast = value_zeroing(cap, spans=spans, chunk_size=chunk)
        assert fast.shape == (Tq, len(spans))
        assert maxdiff(fast, ref) <= TOL
        fr = value_zeroing(cap, spans=spans, rows=rows, chunk_size=chunk)
        assert maxdiff(fr, value_zeroing(cap, spans=spans, rows=rows, method="reference")) <= TOL
        assert maxdiff(fr, ref[rows]) <= TOL  # rows mode = the same rows of the full matrix
    full = value_zeroing(cap)
    assert maxdiff(value_zeroing(cap, rows=rows, chunk_size=5), full[rows]) <= TOL
    # a single-frame span is the same column as position zeroing (unnormalised)
    one = value_zeroing(cap, spans=[(4, 4)], normalize=False)
    assert maxdiff(one[:, 0], value_zeroing(cap, normalize=False)[:, 4]) <= 1e-7


def test_causal_cells_exactly_zero(tiny):
    for name in ("whisper_decoder", "whisper_decoder_last"):
        cap = tiny[name]
        T = cap.weights.shape[-1]
        for method in ("fast", "reference"):
            m = value_zeroing(cap, method=method, normalize=False)
            assert torch.all(torch.triu(m, 1) == 0)
            assert torch.all(torch.tril(m)[1:].sum(-1) > 0)
        rows = [3, 10]
        m = value_zeroing(cap, rows=rows, spans=[(0, 2), (3, 8), (11, 20)])
        assert m[0, 2] == 0 and m[0, 1] > 0 and m[1, 2] == 0  # span starting after the query: 0
        assert m[1, 1] > 0  # span (3, 8) starts before query 10


def test_fast_path_really_depends_on_the_identity(tiny):
    """Mutation check: drop the value bias from delta and the fast path must disagree."""
    cap = tiny["w2v_stable"]
    import dataclasses

    H, Tk, dh = cap.values.shape
    bias = cap.values[:, :, :].mean(1, keepdim=True)  # a stand-in for a broken value vector
    broken = dataclasses.replace(cap, values=cap.values - bias)
    good = value_zeroing(cap)
    bad = value_zeroing(broken)
    assert maxdiff(good, value_zeroing(cap, method="reference")) <= TOL
    assert maxdiff(bad, value_zeroing(cap, method="reference")) > 1e-3


def test_ffn_parts_are_the_rest_of_the_layer(tiny):
    """The modules the factored path uses compute exactly what ``post`` computes."""
    with_parts = [k for k, c in tiny.items() if c.ffn is not None]
    assert sorted(with_parts) == sorted(k for k in tiny if "decoder" not in k)  # decoder self: cross-attn follows
    for k in with_parts:
        cap = tiny[k]
        with torch.no_grad():
            assert maxdiff(cap.ffn(cap.resid, cap.attn_out), cap.out) <= 1e-5, k


def test_factored_path_is_used_and_really_depends_on_its_parts(tiny, monkeypatch):
    """Auto mode takes the factored path for full matrices; a wrong part makes it disagree."""
    import dataclasses

    import ctxmix_lite.value_zeroing as vz

    calls = []
    real = vz._fast_factored
    monkeypatch.setattr(vz, "_fast_factored", lambda *a, **k: calls.append(1) or real(*a, **k))
    cap = tiny["w2v_postln"]
    ref = value_zeroing(cap, method="reference")
    assert maxdiff(value_zeroing(cap), ref) <= TOL and calls  # 24+ rows >= 4 x 4 heads: factored
    n = len(calls)
    value_zeroing(cap, rows=[0, 1])  # two rows: the generic path (G would cost more than it saves)
    assert len(calls) == n
    wrong = dataclasses.replace(cap, ffn=dataclasses.replace(cap.ffn, post_ln=False))
    assert maxdiff(value_zeroing(wrong, factor_ffn=True), ref) > 1e-3
    assert maxdiff(value_zeroing(wrong, factor_ffn=False), ref) <= TOL  # generic path ignores ffn


def test_zeroed_outputs_match_rerun(tiny):
    cap = tiny["whisper_encoder_last"]
    outs = zeroed_outputs(cap, row=4, columns=[0, 4, 9])
    for k, j in enumerate([0, 4, 9]):
        assert maxdiff(outs[k], cap.rerun([j])[4]) <= 1e-5


def test_bad_input(tiny):
    cap = tiny["whisper_encoder"]
    with pytest.raises(ValueError, match="method"):
        value_zeroing(cap, method="slow")
    with pytest.raises(ValueError, match="rows"):
        value_zeroing(cap, rows=[0, 99])
    with pytest.raises(ValueError, match="span"):
        value_zeroing(cap, spans=[(5, 2)])
    with pytest.raises(ValueError, match="span"):
        value_zeroing(cap, spans=[(0, 99)])
    with pytest.raises(ValueError, match="chunk_size"):
        value_zeroing(cap, chunk_size=0)
    with pytest.raises(TypeError, match=r"value_zeroing\(\) got unexpected keyword.*'normalise'.*'normalize'"):
        value_zeroing(cap, normalise=False)


def test_options_object_equals_keywords(tiny):
    from ctxmix_lite.measures.value_zeroing import ValueZeroingOptions

    cap = tiny["whisper_decoder"]
    kw = value_zeroing(cap, rows=[1, 3], method="reference", normalize=False)
    opt = value_zeroing(cap, rows=[1, 3], options=ValueZeroingOptions(method="reference", normalize=False))
    assert torch.equal(kw, opt)
    # keywords override the object's fields
    assert torch.equal(value_zeroing(cap, rows=[1, 3], options=ValueZeroingOptions(method="reference"),
                                     normalize=False), kw)
    assert not torch.equal(value_zeroing(cap, rows=[1, 3], method="reference"), kw)


def test_auto_chunk_bounds_memory():
    n = auto_chunk_size(512)
    # ~24 float32 vectors of D per pair inside a chunk must fit the budget (~768 MB)
    assert 10_000 < n and n * 24 * 4 * 512 <= 800 * 2**20
    assert auto_chunk_size(1024) == pytest.approx(n / 2, abs=1)


# ----------------------------------------------------------------------------- real models, lead's capture
SMALL_W2V = ["wav2vec2-base random (post-LN)", "XLSR-53 random (pre-LN)", "HuBERT-base random (post-LN)"]


@pytest.mark.slow
@pytest.mark.parametrize("key", SMALL_W2V)
def test_real_wav2vec2_family_full_matrix(key, french_clip):
    cap = real_capture(key, french_clip)
    for lc in cap["encoder"]:  # 2 layers; the last one of XLSR includes the encoder's final LN
        ref = value_zeroing(lc, method="reference")
        fast = value_zeroing(lc)
        assert maxdiff(fast, ref) <= TOL, (key, lc.layer)
        T = lc.weights.shape[-1]
        spans = [(0, 9), (10, 30), (31, T - 1)]
        rows = list(range(20, 40))
        assert maxdiff(value_zeroing(lc, spans=spans, rows=rows, chunk_size=11),
                       value_zeroing(lc, spans=spans, rows=rows, method="reference")) <= TOL


def _encoder_checks(lc, rows, cols, spans):
    # single-position columns through spans of one frame (unnormalised columns of the full matrix)
    one = [(j, j) for j in cols]
    f = value_zeroing(lc, rows=rows, spans=one, normalize=False)
    r = value_zeroing(lc, rows=rows, spans=one, normalize=False, method="reference")
    assert r.max() > 0  # (random Whisper's cross-attention changes outputs by ~1e-8 only)
    assert maxdiff(f, r) <= TOL
    # the factored path (eq. 5) on the same real layer, forced (few rows) and on >= 4 x heads rows
    assert maxdiff(value_zeroing(lc, rows=rows, spans=one, normalize=False, factor_ffn=True), r) <= TOL
    many = list(range(0, lc.weights.shape[1], max(1, lc.weights.shape[1] // 40)))
    assert maxdiff(value_zeroing(lc, rows=many, spans=one, normalize=False),
                   value_zeroing(lc, rows=many, spans=one, normalize=False, method="reference")) <= TOL
    f = value_zeroing(lc, rows=rows, spans=spans, chunk_size=13)
    r = value_zeroing(lc, rows=rows, spans=spans, method="reference")
    assert maxdiff(f, r) <= TOL
    # rows mode of the full frame-level matrix = the same rows computed with all rows at once
    full_rows = value_zeroing(lc, rows=rows)
    assert maxdiff(full_rows[:3], value_zeroing(lc, rows=rows[:3], chunk_size=500)) <= TOL


@pytest.mark.slow
@pytest.mark.parametrize("key", ["whisper-base trained", "whisper-base random"])
def test_real_whisper_all_components(key, french_clip):
    cap = real_capture(key, french_clip)
    spans = [(0, 9), (10, 40), (41, 80), (81, 140), (141, 1499)]  # last span: all the padding
    rows = [20, 45, 46, 90, 120]
    enc = cap["encoder"]
    for lc in (enc[0], enc[-1]):  # first, and last with the encoder's final layer norm
        _encoder_checks(lc, rows, [0, 30, 60, 100, 700, 1499], spans)
    for comp in ("decoder", "cross"):
        for lc in (cap[comp][0], cap[comp][-1]):
            H, Tq, Tk = lc.weights.shape
            if comp == "decoder":
                ref = value_zeroing(lc, method="reference")
                assert maxdiff(value_zeroing(lc), ref) <= TOL
                assert maxdiff(value_zeroing(lc, chunk_size=5), ref) <= TOL
                assert torch.all(torch.triu(value_zeroing(lc, normalize=False), 1) == 0)
                sp = [(0, 3), (4, 6), (7, Tq - 1)]
                assert maxdiff(value_zeroing(lc, spans=sp), value_zeroing(lc, spans=sp, method="reference")) <= TOL
            else:
                _encoder_checks(lc, list(range(4, Tq)), [0, 50, 99, 1200], spans)
