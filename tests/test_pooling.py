"""Word-level pooling on hand-made matrices."""
import pytest
import torch

from ctxmix_lite.pooling import word_level


def test_mean_pooling_by_hand():
    # 6 frames: word A = frames 0-1, word B = frames 3-5, frame 2 is silence
    M = torch.tensor(
        [
            [1.0, 3.0, 100.0, 0.0, 2.0, 4.0],
            [1.0, 1.0, 100.0, 2.0, 2.0, 2.0],
            [9.0, 9.0, 9.0, 9.0, 9.0, 9.0],
            [0.0, 2.0, 100.0, 6.0, 0.0, 0.0],
            [4.0, 2.0, 100.0, 0.0, 3.0, 0.0],
            [0.0, 0.0, 100.0, 0.0, 0.0, 3.0],
        ]
    )
    spans = [(0, 1), (3, 5)]
    raw = word_level(M, spans, spans, renormalize=False)
    # A->A: mean of [[1,3],[1,1]] = 1.5 ; A->B: mean of [[0,2,4],[2,2,2]] = 2
    # B->A: mean of [[0,2],[4,2],[0,0]] = 8/6 ; B->B: mean of [[6,0,0],[0,3,0],[0,0,3]] = 12/9
    want = torch.tensor([[1.5, 2.0], [8 / 6, 12 / 9]])
    assert torch.allclose(raw, want)
    norm = word_level(M, spans, spans)
    assert torch.allclose(norm, want / want.sum(-1, keepdim=True))
    # silence (frame 2, huge values) never enters
    assert torch.allclose(norm.sum(-1), torch.ones(2))
    mx = word_level(M, spans, spans, agg="max", renormalize=False)
    assert torch.equal(mx, torch.tensor([[3.0, 4.0], [4.0, 6.0]]))
    sm = word_level(M, spans, spans, agg="sum", renormalize=False)
    assert torch.equal(sm, torch.tensor([[6.0, 12.0], [8.0, 12.0]]))


def test_none_spans_leading_dims_and_zero_rows():
    M = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)  # [layers, Tq, Tk]
    out = word_level(M, None, [(0, 1), (2, 3)], renormalize=False)
    assert out.shape == (2, 3, 2)
    assert torch.allclose(out[1, 2], torch.tensor([(20 + 21) / 2, (22 + 23) / 2]))
    z = torch.zeros(3, 4)
    assert torch.equal(word_level(z, [(0, 0), (1, 2)], [(0, 3)]), torch.zeros(2, 1))  # no NaN
    rows_only = word_level(M[0], [(0, 1), (2, 2)], None, renormalize=False)
    assert torch.allclose(rows_only, torch.stack([M[0, :2].mean(0), M[0, 2]]))


def test_errors():
    M = torch.rand(5, 5)
    with pytest.raises(ValueError, match="agg"):
        word_level(M, None, None, agg="median")
    with pytest.raises(ValueError, match="span"):
        word_level(M, [(0, 7)], None)
    with pytest.raises(ValueError, match="non-negative"):
        word_level(-M, None, [(0, 1)])
    with pytest.raises(ValueError, match="matrix"):
        word_level(torch.rand(5), None, None)
