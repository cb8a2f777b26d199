"""Rollout against a hand computation and an explicit per-layer loop."""
import pytest
import torch

from ctxmix_lite.rollout import rollout


def test_by_hand_two_layers():
    A0 = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    A1 = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    R = rollout(torch.stack([A0, A1]))
    t0 = torch.tensor([[1.0, 0.0], [0.5, 0.5]])  # 0.5 A0 + 0.5 I
    t1 = torch.tensor([[0.5, 0.5], [0.0, 1.0]])
    assert torch.allclose(R[0], t0)
    assert torch.allclose(R[1], t1 @ t0)
    assert torch.allclose(R[1], torch.tensor([[0.75, 0.25], [0.5, 0.5]]))


def test_explicit_loop_and_properties():
    g = torch.Generator().manual_seed(0)
    L, T = 4, 7
    raw = torch.rand(L, T, T, generator=g)
    for residual in (0.0, 0.3, 0.5, 1.0):
        R = rollout(raw, residual=residual)
        acc = torch.eye(T, dtype=torch.float64)
        for l in range(L):
            a = raw[l].double() / raw[l].double().sum(-1, keepdim=True)
            a = (1 - residual) * a + residual * torch.eye(T, dtype=torch.float64)
            a = a / a.sum(-1, keepdim=True)
            acc = a @ acc
            assert torch.allclose(R[l].double(), acc, atol=1e-6)
        assert torch.allclose(R.sum(-1), torch.ones(L, T), atol=1e-5)
    assert torch.allclose(rollout(raw, residual=1.0), torch.eye(T).expand(L, T, T))


def test_causal_stays_causal():
    T = 6
    A = torch.tril(torch.rand(3, T, T))
    R = rollout(A)
    assert torch.all(torch.triu(R, 1) == 0)


def test_errors():
    with pytest.raises(ValueError, match="square"):
        rollout(torch.rand(2, 3, 4))
    with pytest.raises(ValueError, match="residual"):
        rollout(torch.rand(2, 3, 3), residual=1.5)
    with pytest.raises(ValueError, match="non-negative"):
        rollout(-torch.rand(2, 3, 3))
