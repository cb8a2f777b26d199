"""Attention patterns: CAD (closed form vs brute-force integral), D(r), locality band, head diversity."""
import math

import pytest
import torch

from _hand_captures import all_tiny_captures, real_capture
from ctxmix_lite import patterns as P


def random_maps(n=3, T=17, seed=0, sharp=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(sharp * torch.randn(n, T, T, generator=g), -1)


def test_cad_reference_values():
    for T in (2, 5, 40, 300):
        assert float(P.cad(torch.eye(T))) == pytest.approx(1.0, abs=1e-12)
        u = torch.full((T, T), 1.0 / T, dtype=torch.float64)
        assert float(P.cad(u)) == pytest.approx(2 / 3 - 1 / (3 * T), abs=1e-12)  # -> 2/3
    assert float(P.cad(torch.full((1000, 1000), 1e-3, dtype=torch.float64))) == pytest.approx(2 / 3, abs=1e-3)
    # "vertical" map: every query reads frame 0 -> (1/T) sum_i (1 - i/(T-1)) = 1/2
    T = 51
    v = torch.zeros(T, T)
    v[:, 0] = 1
    assert float(P.cad(v)) == pytest.approx(0.5, abs=1e-12)
    # anti-diagonal: low diagonality
    assert float(P.cad(torch.eye(T).flip(-1))) < 0.5


def _vertical(T, k, width=1):
    v = torch.zeros(T, T, dtype=torch.float64)
    v[:, k : k + width] = 1.0 / width
    return v


def test_cad_cannot_single_out_vertical_heads_but_verticality_does():
    T = 61
    diag = torch.eye(T, dtype=torch.float64)
    unif = torch.full((T, T), 1.0 / T, dtype=torch.float64)
    v_mid = _vertical(T, T // 2)
    # the column whose stripe scores what uniform attention scores (CAD rises from 1/2 at the edge)
    cads = torch.stack([P.cad(_vertical(T, k)) for k in range(T // 2 + 1)])
    k_eq = int((cads - P.cad(unif)).abs().argmin())
    v_eq = _vertical(T, k_eq)
    # CAD: a mid-clip stripe scores ~3/4, *above* uniform (~2/3); another stripe ties with uniform
    assert float(P.cad(v_mid)) == pytest.approx(0.75, abs=0.01)
    assert float(P.cad(v_mid)) > float(P.cad(unif))
    assert abs(float(P.cad(v_eq)) - float(P.cad(unif))) < 0.01
    # verticality: 0 for uniform and for diagonal, 1 for any single stripe
    assert float(P.verticality(unif)) == pytest.approx(0.0, abs=1e-12)
    assert float(P.verticality(diag)) == pytest.approx(0.0, abs=1e-12)
    for v in (v_mid, v_eq, _vertical(T, 0)):
        assert float(P.verticality(v)) == pytest.approx(1.0, abs=1e-12)
    # a 3-column stripe: 1 - log 3 / log T by hand; top_column_share of the 3 columns is 1
    v3 = _vertical(T, 10, width=3)
    assert float(P.verticality(v3)) == pytest.approx(1 - math.log(3) / math.log(T), abs=1e-12)
    assert float(P.top_column_share(v3, k=3)) == pytest.approx(1.0)
    assert float(P.top_column_share(unif)) == pytest.approx(1 / T)
    # a half-vertical head (half of every row on one column, half on the diagonal) lies in between
    half = 0.5 * diag + 0.5 * v_mid
    assert 0.1 < float(P.verticality(half)) < 0.9
    # batched, against a direct entropy computation on random maps
    A = random_maps(4, 9, seed=2)
    c = A.double().mean(-2)
    ref = 1 + (c * c.log()).sum(-1) / math.log(9)
    assert torch.allclose(P.verticality(A), ref, atol=1e-12)
    assert torch.allclose(P.column_mass(A).sum(-1), torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="k must be"):
        P.top_column_share(A, k=10)


def test_cad_matches_brute_force_integral():
    A = random_maps(4, 13)
    assert torch.allclose(P.cad(A), P.cad_numeric(A, n_points=40001), atol=2e-4)
    band = torch.softmax(-((torch.arange(20)[:, None] - torch.arange(20)[None]) ** 2) / 4.0, -1)
    assert torch.allclose(P.cad(band), P.cad_numeric(band, n_points=40001), atol=2e-4)


def test_diagonality_curve():
    A = random_maps(2, 11)
    r, D = P.diagonality_curve(A)
    assert D.shape == (2, 101)
    assert torch.all(D[:, 1:] >= D[:, :-1] - 1e-12)  # non-decreasing
    assert torch.allclose(D[:, -1], torch.ones(2, dtype=torch.float64))
    diag_mass = torch.diagonal(A, dim1=-2, dim2=-1).sum(-1) / 11
    assert torch.allclose(D[:, 0], diag_mass.double())
    # the curve integrates to CAD (step function sampled finely)
    r2, D2 = P.diagonality_curve(A, r=torch.linspace(0, 1, 100001))
    assert torch.allclose(torch.trapezoid(D2, r2, dim=-1), P.cad(A), atol=1e-4)
    # D(r) by brute force at a few r
    k = (torch.arange(11)[:, None] - torch.arange(11)[None]).abs()
    for rv in (0.0, 0.25, 0.5, 0.99):
        want = (A * (k <= rv * 10).double()).sum((-1, -2)) / 11
        _, got = P.diagonality_curve(A, r=[rv])
        assert torch.allclose(got[:, 0], want)


def test_valid_crop():
    T, n = 30, 12
    A = torch.zeros(T, T)
    A[:n, :n] = torch.eye(n) * 0.5
    A[:n, n:] = 0.5 / (T - n)  # half the mass on padding
    A[n:] = 1.0 / T
    assert float(P.cad(A, valid=n)) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        P.cad(A, valid=0)
    with pytest.raises(ValueError, match="square"):
        P.cad(torch.rand(3, 4))


def test_locality_band():
    T = 21
    assert float(P.locality_band(torch.eye(T))) == 0.0
    tri = torch.zeros(T, T)
    for i in range(T):  # each row: 1/3 on i-1, i, i+1 (2/3 or 1 at the edges)
        for j in (i - 1, i, i + 1):
            if 0 <= j < T:
                tri[i, j] = 1.0
    tri = tri / tri.sum(-1, keepdim=True)
    assert float(P.locality_band(tri, mass=0.9)) == 1.0
    assert float(P.locality_band(tri, mass=0.3)) == 0.0
    u = torch.full((T, T), 1.0 / T)
    w = P.locality_band(u, mass=0.9, per_query=True)
    i = torch.arange(T)
    # brute force per row: smallest k with |{j: |i-j| <= k}| / T >= 0.9
    want = [min(k for k in range(T) if ((i - r).abs() <= k).sum() / T >= 0.9 - 1e-12) for r in range(T)]
    assert w.tolist() == want


def test_cka_and_js():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(50, 8, generator=g)
    Q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    assert float(P.linear_cka(X, X)) == pytest.approx(1.0)
    assert float(P.linear_cka(X, 3.0 * X @ Q + 2.0)) == pytest.approx(1.0)  # rotation, scale, shift
    Y = torch.randn(50, 8, generator=g)
    assert 0 <= float(P.linear_cka(X, Y)) < 0.5
    # Gram-matrix path (p > T) agrees with the feature-space path
    Z = torch.randn(6, 20, generator=g)
    W = torch.randn(6, 20, generator=g)
    Kz, Kw = Z - Z.mean(0), W - W.mean(0)
    feat = (Kw.T @ Kz).pow(2).sum() / ((Kz.T @ Kz).norm() * (Kw.T @ Kw).norm())
    assert float(P.linear_cka(Z, W)) == pytest.approx(float(feat), rel=1e-5)
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    q = torch.tensor([[0.0, 1.0], [0.5, 0.5]])
    assert torch.allclose(P.js_divergence_rows(p, q), torch.tensor([1.0, 0.0], dtype=torch.float64))


def test_head_diversity_zero_for_identical_heads():
    A = random_maps(1, 15)[0]
    V = torch.randn(15, 4)
    d = P.layer_head_diversity(A.expand(3, 15, 15), V.expand(3, 15, 4), V.expand(3, 15, 4), V.expand(3, 15, 4))
    for k in P.DIVERSITY_KEYS:
        assert abs(d[k]) < 1e-9, k
    d2 = P.layer_head_diversity(random_maps(3, 15), torch.randn(3, 15, 4), torch.randn(3, 15, 4), torch.randn(3, 15, 4))
    for k in P.DIVERSITY_KEYS:
        assert 0 < d2[k] <= 1, k


def test_head_diversity_on_layers():
    caps = all_tiny_captures(seed=3, final=False)
    out = P.head_diversity([caps["whisper_encoder"], caps["w2v_stable"]])
    assert set(out["total"]) == set(P.DIVERSITY_KEYS)
    for k in P.DIVERSITY_KEYS:
        assert len(out["per_layer"][k]) == 2
        assert out["total"][k] == pytest.approx(sum(out["per_layer"][k]))
        assert all(0 <= v <= 1 for v in out["per_layer"][k])


@pytest.mark.slow
def test_real_whisper_patterns(french_clip):
    cap = real_capture("whisper-base trained", french_clip)
    n = int(math.ceil(len(french_clip) / 16000 / 0.02))  # frames of real audio
    enc = cap["encoder"]
    c = torch.stack([P.cad(lc.weights, valid=n) for lc in enc])  # [L, H]
    assert c.shape == (len(enc), enc[0].num_heads)
    assert torch.all((c > 0) & (c <= 1))
    d = P.head_diversity(enc, valid=n)
    assert all(0 < v < len(enc) for v in d["total"].values())
