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


# --------------------------------------------------------------------------- the two named forms
def _authors_joint(S, res):
    """Direct numpy transcription of the authors' rollout (hmohebbi/ValueZeroing,
    scoring/value_zeroing.py ``compute_joint_attention``): ``res=True`` adds I and renormalises the
    rows; ``res=False`` multiplies the matrices as they are."""
    import numpy as np

    S = np.array(S, dtype=np.float64)
    if res:
        S = S + np.eye(S.shape[1])[None]
        S = S / S.sum(axis=-1)[..., None]
    J = np.zeros(S.shape)
    J[0] = S[0]
    for i in range(1, S.shape[0]):
        J[i] = S[i].dot(J[i - 1])
    return J


def test_plain_form_by_hand():
    """The authors' value-zeroing rollout (res=False): no identity, R_2 = A_2 A_1."""
    A0 = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    A1 = torch.tensor([[0.0, 1.0], [0.5, 0.5]])
    R = rollout(torch.stack([A0, A1]), form="plain")
    assert torch.allclose(R[0], A0)
    # A1 @ A0 = [[0*1 + 1*1, 0], [0.5 + 0.5, 0]] = [[1, 0], [1, 0]]
    assert torch.allclose(R[1], torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    # the Abnar & Zuidema form of the same matrices differs: [[0.75, 0.25], [0.625, 0.375]] by hand
    Rab = rollout(torch.stack([A0, A1]), form="abnar_zuidema")
    assert torch.allclose(Rab[1], torch.tensor([[0.75, 0.25], [0.625, 0.375]]))
    assert not torch.allclose(R[1], Rab[1], atol=0.1)


def test_forms_match_the_authors_formula():
    import numpy as np

    g = torch.Generator().manual_seed(3)
    raw = torch.rand(5, 6, 6, generator=g)
    S = (raw / raw.sum(-1, keepdim=True)).numpy()  # the authors normalise rows before rolling out
    for form, res in (("plain", False), ("abnar_zuidema", True)):
        ours = rollout(torch.from_numpy(S), form=form).numpy()
        np.testing.assert_allclose(ours, _authors_joint(S, res), atol=1e-6)
    assert rollout(raw, form="plain").sum(-1).sub(1).abs().max() < 1e-5


def test_per_measure_forms():
    from ctxmix_lite.rollout import rollout_form, rollout_measure

    assert rollout_form("value_zeroing") == "plain"
    assert rollout_form("alti") == "plain"
    assert rollout_form("attention") == "abnar_zuidema"
    raw = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(rollout_measure(raw, "value_zeroing"), rollout(raw, residual=0.0))
    assert torch.allclose(rollout_measure(raw, "attention"), rollout(raw, residual=0.5))
    with pytest.raises(ValueError, match="no rollout form"):
        rollout_form("gradient")
    with pytest.raises(ValueError, match="form"):
        rollout(raw, form="half")
    with pytest.raises(ValueError, match="means residual"):
        rollout(raw, form="plain", residual=0.5)
