"""Attention patterns of speech Transformers: diagonality, locality and head diversity.

**Cumulative attention diagonality** (Shim et al., 2022).  For a square map ``A`` (``T x T``, rows
summing to 1) and a band ratio ``r in [0, 1]``::

    D(r) = (1/T) sum_i sum_{j : |i - j| <= r (T - 1)} A[i, j]                                  (1)
    CAD  = integral_0^1 D(r) dr                                                                (2)

``D`` is a step function: the offset ``k = |i - j|`` enters the band when ``r >= k / (T - 1)``, so
with ``m_k = (1/T) sum_{|i-j| = k} A[i, j]`` (the mass on the k-th off-diagonals) the integral is
exact::

    CAD = sum_k m_k (1 - k / (T - 1))  = (1/T) sum_ij A[i, j] (1 - |i - j| / (T - 1))        (3)

A purely diagonal map gives 1; uniform attention ``A = 1/T`` gives ``2/3 - 1/(3T)`` (about 2/3);
a map where every query looks at one fixed frame ``k`` ("vertical", content-based) gives
``(1/T) sum_i (1 - |i - k| / (T - 1))``: about 1/2 for the first or last frame, about 3/4 for the
middle one.  Shim et al. call high-CAD heads *linguistic/local* and low-CAD heads
*phonetic/global*.  CAD therefore **cannot single out vertical heads**: a vertical stripe can
score below, at or above uniform attention.

**Verticality** (this course's measure, for that gap).  A vertical head sends most of *every*
row's mass to the same few key columns.  With the column mass ``c_j = (1/T) sum_i A[i, j]`` (the
share of all the map's attention that key ``j`` receives; ``sum_j c_j = 1``)::

    V = 1 - H(c) / log T,      H(c) = - sum_j c_j log c_j                                     (4)

``V = 0`` when every key receives the same total (uniform attention *and* a purely diagonal map:
each column holds one row's mass), ``V = 1`` when one column receives everything (a perfect
vertical stripe, wherever it lies).  :func:`top_column_share` (the largest ``c_j``, or the sum of
the ``k`` largest) is a blunter companion.  Verticality and CAD are complementary: CAD separates
diagonal from spread-out maps, ``V`` separates column-concentrated maps from both.

**Locality band** (after Alastruey et al., 2022): for each query the smallest half-width ``k``
with ``sum_{|i-j| <= k} A[i, j] >= mass`` (e.g. 90 %); averaged over queries, in frames.

**Head diversity** (after Audhkhasi et al., 2022, Table 3 for a Conformer).  Their exact distance
is not recoverable, so we define two and document them:

* ``d^X = 1 - CKA(X_h, X_g)`` for X in {A, Q, K, V}: linear centred kernel alignment (Kornblith
  et al., 2019) between two heads' representations of the same T positions (``A_h`` rows
  ``[T, T]``, ``Q_h``, ``K_h``, ``V_h`` ``[T, d_h]``)::

      CKA(X, Y) = ||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F),   X_c = X - mean_rows(X)

  CKA is invariant to rotations and isotropic scaling of each head's space -- heads are only
  defined up to such a change of basis (any orthogonal ``R`` gives ``W_Q R``, ``W_K R`` with the same
  attention) -- and it lies in [0, 1] for every X, so the four distances share one scale and their
  *ordering* can be compared.
* ``d^A_JS``: mean over queries of the Jensen-Shannon divergence (base 2, in [0, 1]) between the
  two heads' attention rows: the natural distance between probability rows.

Each is averaged over the ``H (H - 1) / 2`` head pairs of a layer and *summed over layers* (as the
seed's table reports).  Padding frames (Whisper's 30 s window) can be excluded with ``valid=n``:
only the first ``n`` positions are used, attention rows re-normalised over them.
"""
from __future__ import annotations

from itertools import combinations
from typing import Optional, Sequence

import torch

from .utils import normalize_rows

__all__ = [
    "crop",
    "offset_mass",
    "cad",
    "diagonality_curve",
    "cad_numeric",
    "locality_band",
    "column_mass",
    "verticality",
    "top_column_share",
    "linear_cka",
    "js_divergence_rows",
    "layer_head_diversity",
    "head_diversity",
    "DIVERSITY_KEYS",
]

DIVERSITY_KEYS = ("A", "Q", "K", "V", "A_js")


def _square(A):
    A = torch.as_tensor(A)
    if A.dim() < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"expected square attention maps [..., T, T], got shape {tuple(A.shape)}")
    return A.double()


def crop(A, valid: Optional[int] = None) -> torch.Tensor:
    """Keep the first ``valid`` queries and keys (real audio, no padding), rows re-normalised."""
    A = _square(A)
    if valid is None:
        return A
    T = A.shape[-1]
    if not 1 <= int(valid) <= T:
        raise ValueError(f"valid must be in [1, {T}], got {valid}")
    return normalize_rows(A[..., :valid, :valid])


def _offsets(T: int) -> torch.Tensor:
    i = torch.arange(T)
    return (i[:, None] - i[None, :]).abs()  # k = |i - j|


def offset_mass(A, valid: Optional[int] = None) -> torch.Tensor:
    """``m_k = (1/T) sum_{|i-j|=k} A[i, j]`` for k = 0..T-1: ``[..., T]`` (float64)."""
    A = crop(A, valid)
    T = A.shape[-1]
    k = _offsets(T).reshape(-1).expand(*A.shape[:-2], T * T)
    m = torch.zeros(*A.shape[:-2], T, dtype=A.dtype).scatter_add_(-1, k, A.reshape(*A.shape[:-2], T * T))
    return m / T


def cad(A, valid: Optional[int] = None) -> torch.Tensor:
    """Cumulative attention diagonality, eq. (3), for every map in ``A[..., T, T]`` -> ``[...]``."""
    m = offset_mass(A, valid)
    T = m.shape[-1]
    if T == 1:
        return m[..., 0]
    w = 1.0 - torch.arange(T, dtype=m.dtype) / (T - 1)  # 1 - k/(T-1)
    return (m * w).sum(-1)


def diagonality_curve(A, r=None, valid: Optional[int] = None):
    """``(r, D(r))`` of eq. (1): ``r`` ``[P]`` (default 101 points on [0, 1]), ``D`` ``[..., P]``."""
    m = offset_mass(A, valid)
    T = m.shape[-1]
    r = torch.linspace(0, 1, 101, dtype=torch.float64) if r is None else torch.as_tensor(r, dtype=torch.float64)
    if (r < 0).any() or (r > 1).any():
        raise ValueError("band ratios r must lie in [0, 1]")
    cum = m.cumsum(-1)  # D at r = k/(T-1)
    kmax = torch.floor(r * (T - 1) + 1e-9).long().clamp(0, T - 1)  # largest offset inside the band
    return r, cum[..., kmax]


def cad_numeric(A, n_points: int = 20001, valid: Optional[int] = None) -> torch.Tensor:
    """Brute-force check of eq. (2): eq. (1) evaluated cell by cell on a grid, trapezoid rule."""
    A = crop(A, valid)
    T = A.shape[-1]
    k = _offsets(T).double()
    r = torch.linspace(0, 1, n_points, dtype=torch.float64)
    step = max(1, int(1e7 // (T * T)))
    vals = []
    for s in range(0, n_points, step):  # D(r): sum of the cells inside the band, divided by T
        band = (k[None] <= r[s : s + step, None, None] * (T - 1) + 1e-12).double()  # [p, T, T]
        vals.append(torch.einsum("...ij,pij->...p", A, band) / T)
    D = torch.cat(vals, -1)
    return torch.trapezoid(D, r, dim=-1)


def locality_band(A, mass: float = 0.9, valid: Optional[int] = None, per_query: bool = False):
    """Smallest half-width ``k`` (frames) with ``sum_{|i-j|<=k} A[i, j] >= mass``; mean over queries
    (``[...]``) or per query (``[..., T]``)."""
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    A = crop(A, valid)
    T = A.shape[-1]
    k = _offsets(T).expand(*A.shape[:-2], T, T)
    per_off = torch.zeros_like(A).scatter_add_(-1, k, A)  # [..., i, k]: mass of row i at offset k
    cum = per_off.cumsum(-1)
    tot = cum[..., -1:]
    width = (cum < mass * tot - 1e-12).sum(-1).double()  # first k reaching the mass
    return width if per_query else width.mean(-1)


def column_mass(A, valid: Optional[int] = None) -> torch.Tensor:
    """``c_j = (1/T) sum_i A[i, j]``: the share of the map's attention that key ``j`` receives,
    ``[..., T]`` (float64; sums to 1 over ``j`` when the rows do)."""
    A = crop(A, valid)
    return A.sum(-2) / A.shape[-2]


def verticality(A, valid: Optional[int] = None) -> torch.Tensor:
    """Eq. (4): ``1 - H(c) / log T`` of the column mass ``c`` -> ``[...]`` in [0, 1]; 0 for uniform
    or diagonal maps, 1 when every query reads the same single key."""
    c = column_mass(A, valid)
    T = c.shape[-1]
    if T == 1:
        return torch.zeros(c.shape[:-1], dtype=c.dtype)
    c = c / c.sum(-1, keepdim=True).clamp_min(1e-300)
    H = -torch.where(c > 0, c * torch.log(c.clamp_min(1e-300)), torch.zeros_like(c)).sum(-1)
    return (1.0 - H / torch.log(torch.tensor(float(T), dtype=c.dtype))).clamp(0.0, 1.0)


def top_column_share(A, k: int = 1, valid: Optional[int] = None) -> torch.Tensor:
    """Sum of the ``k`` largest column masses ``c_j`` -> ``[...]`` (``k/T`` for uniform or diagonal
    maps, 1 when ``k`` columns receive everything)."""
    c = column_mass(A, valid)
    if not 1 <= int(k) <= c.shape[-1]:
        raise ValueError(f"k must be in [1, {c.shape[-1]}], got {k}")
    return c.topk(int(k), dim=-1).values.sum(-1)


# ------------------------------------------------------------------------------------------ diversity
def linear_cka(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Linear CKA between ``X [..., T, p]`` and ``Y [..., T, q]`` (same T positions), in [0, 1]."""
    X = X.double() - X.double().mean(-2, keepdim=True)
    Y = Y.double() - Y.double().mean(-2, keepdim=True)
    if X.shape[-1] > X.shape[-2] or Y.shape[-1] > Y.shape[-2]:  # cheaper through T x T Gram matrices
        Kx, Ky = X @ X.transpose(-1, -2), Y @ Y.transpose(-1, -2)
        hsic = (Kx * Ky).sum((-1, -2))
        nx, ny = Kx.norm(dim=(-1, -2)), Ky.norm(dim=(-1, -2))
    else:
        hsic = (Y.transpose(-1, -2) @ X).pow(2).sum((-1, -2))
        nx = (X.transpose(-1, -2) @ X).norm(dim=(-1, -2))
        ny = (Y.transpose(-1, -2) @ Y).norm(dim=(-1, -2))
    den = nx * ny
    return torch.where(den > 0, hsic / den.clamp_min(1e-300), torch.zeros_like(hsic))


def js_divergence_rows(P: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence (base 2, in [0, 1]) between matching rows of ``P`` and ``Q``."""
    P, Q = P.double(), Q.double()
    M = 0.5 * (P + Q)

    def kl(a, b):
        t = torch.where(a > 0, a * (torch.log2(a.clamp_min(1e-300)) - torch.log2(b.clamp_min(1e-300))), torch.zeros_like(a))
        return t.sum(-1)

    return (0.5 * kl(P, M) + 0.5 * kl(Q, M)).clamp(0, 1)


def layer_head_diversity(weights, queries=None, keys=None, values=None, valid: Optional[int] = None) -> dict:
    """Mean over head pairs of each distance, for one layer.

    weights ``[H, Tq, Tk]`` (square for ``valid``); queries ``[H, Tq, dh]``, keys / values
    ``[H, Tk, dh]`` (any may be None).  Returns ``{"A", "A_js", "Q", "K", "V"} -> float``.
    """
    W = torch.as_tensor(weights).double()
    H = W.shape[0]
    if H < 2:
        raise ValueError("head diversity needs at least two heads")
    if valid is not None:
        W = crop(W, valid)
    n = valid
    feats = {
        "Q": None if queries is None else queries[:, :n] if n else queries,
        "K": None if keys is None else keys[:, :n] if n else keys,
        "V": None if values is None else values[:, :n] if n else values,
    }
    pairs = list(combinations(range(H), 2))
    hi = torch.tensor([p[0] for p in pairs])
    gi = torch.tensor([p[1] for p in pairs])
    out = {}
    out["A"] = float((1 - linear_cka(W[hi], W[gi])).mean())
    out["A_js"] = float(js_divergence_rows(W[hi], W[gi]).mean())
    for name, X in feats.items():
        out[name] = float("nan") if X is None else float((1 - linear_cka(X[hi], X[gi])).mean())
    return out


def head_diversity(layer_caps: Sequence, valid: Optional[int] = None) -> dict:
    """Per-layer diversities of a component (a list of LayerCaptures) and their sum over layers.

    Returns ``{"per_layer": {key: [L floats]}, "total": {key: float}}`` with keys
    :data:`DIVERSITY_KEYS`.
    """
    per = {k: [] for k in DIVERSITY_KEYS}
    for lc in layer_caps:
        d = layer_head_diversity(lc.weights, lc.queries, lc.keys, lc.values, valid=valid)
        for k in DIVERSITY_KEYS:
            per[k].append(d[k])
    return {"per_layer": per, "total": {k: float(sum(v)) for k, v in per.items()}}
