"""Rollout: follow context mixing through the layers.

A layer's row-normalised mixing matrix ``A_l`` says how much query ``i`` takes from each ``j``
*in that layer*.  Rollout multiplies the layers (layer 1 first, index 0 here)::

    A~_l = normalize_rows( (1 - r) A_l + r I )          r = residual                          (1)
    R_1  = A~_1
    R_l  = A~_l R_{l-1}                                  (mixing after layers 1..l)            (2)

``R_l[i, j]`` is then the share of input position ``j`` in position ``i`` after layer ``l``.  Two
*forms* are in use, named here:

* ``"abnar_zuidema"`` (``r = 0.5``): Abnar & Zuidema (2020)'s *attention rollout*.  Attention
  weights leave out the residual connection, which carries token ``i`` itself forward, so half of
  each row is given back to the identity.  The authors of value zeroing use the same form for
  attention: ``compute_joint_attention(att, res=True)`` adds ``I`` and renormalises the rows
  (``hmohebbi/ValueZeroing``, ``scoring/value_zeroing.py`` l. 73-86; ``rollout(S, res=True)`` in
  ``hmohebbi/context_mixing_toolkit``, ``src/utils.py`` l. 24-36), which equals (1) with ``r = 0.5``
  for row-stochastic ``A``.
* ``"plain"`` (``r = 0``): the plain product of the row-normalised matrices.  This is how the
  authors roll out **value zeroing** (``compute_joint_attention(score_matrix, res=False)``,
  ``scoring/value_zeroing.py`` l. 170-173 and ``demo.py`` l. 106-107: rows normalised, no identity
  added, no renormalisation) and GlobEnc (toolkit ``test.py`` l. 53): these measures compare the
  layer's *output*, residual included, so adding ``I`` again would count the residual twice.  ALTI
  (:mod:`decomposition`) contains the residual too and uses the same form.

:func:`rollout_form` gives the form the course uses for each measure (value zeroing and ALTI:
``"plain"``, the authors' form; attention and Attention-Norm: ``"abnar_zuidema"``) and
:func:`rollout_measure` applies it.  Only square (self-attention) matrices can be rolled out:
cross-attention maps decoder tokens to encoder frames, no chain exists.  Rows that sum to 0 stay 0
(the authors' numpy code would give NaN there).
"""
from __future__ import annotations

from typing import Optional

import torch

from .utils import normalize_rows

__all__ = ["rollout", "rollout_form", "rollout_measure", "ROLLOUT_FORMS", "EXTRA_ROLLOUT_FORMS"]

#: residual share ``r`` of eq. (1) for each named form
ROLLOUT_FORMS = {"abnar_zuidema": 0.5, "plain": 0.0}

#: rollout forms of measures outside :data:`ctxmix_lite.measures.registry.REGISTRY` (whose
#: entries carry their own form in ``Measure.rollout``, the one table for the registered measures)
EXTRA_ROLLOUT_FORMS = {
    "globenc": "plain",  # the authors' toolkit: res=False
}


def rollout_form(measure: str) -> str:
    """The rollout form used for ``measure``: its registry entry's ``rollout`` field (attention and
    Attention-Norm: ``"abnar_zuidema"``, the authors' ``res=True`` -- Attention-Norm leaves the
    residual out like attention, a course choice; value zeroing: ``"plain"``, the authors'
    ``res=False``; ALTI: ``"plain"``, the residual is inside the decomposition), else
    :data:`EXTRA_ROLLOUT_FORMS`."""
    from .registry import REGISTRY

    if measure in REGISTRY:
        return REGISTRY[measure].rollout
    try:
        return EXTRA_ROLLOUT_FORMS[measure]
    except KeyError:
        known = sorted({*REGISTRY, *EXTRA_ROLLOUT_FORMS})
        raise ValueError(f"no rollout form for measure {measure!r}; known: {known}") from None


def rollout(mats, residual: Optional[float] = None, normalize: bool = True, form: Optional[str] = None) -> torch.Tensor:
    """``mats`` ``[L, T, T]`` (layer 1 first) -> ``[L, T, T]`` with ``R_l`` of eq. (2) at index l-1.

    form: ``"abnar_zuidema"`` (``residual=0.5``) or ``"plain"`` (``residual=0``, the authors'
    value-zeroing rollout); when given it sets ``residual`` (passing both is an error unless they
    agree).  Neither given: ``residual=0.5`` (Abnar & Zuidema).  normalize: row-normalise each
    ``A_l`` first (rows summing to 0 stay 0 before the identity is added).  ``residual`` in [0, 1].  Computed in float64, returned float32.
    """
    if form is not None:
        if form not in ROLLOUT_FORMS:
            raise ValueError(f"rollout form must be one of {sorted(ROLLOUT_FORMS)}, got {form!r}")
        if residual is not None and float(residual) != ROLLOUT_FORMS[form]:
            raise ValueError(f"form={form!r} means residual={ROLLOUT_FORMS[form]}, got residual={residual}")
        residual = ROLLOUT_FORMS[form]
    elif residual is None:
        residual = ROLLOUT_FORMS["abnar_zuidema"]
    m = torch.as_tensor(mats)
    if m.dim() != 3 or m.shape[-1] != m.shape[-2]:
        raise ValueError(
            f"rollout needs square per-layer matrices [L, T, T], got shape {tuple(m.shape)} "
            "(cross-attention cannot be rolled out)"
        )
    if not 0.0 <= float(residual) <= 1.0:
        raise ValueError(f"residual must lie in [0, 1], got {residual}")
    if (m < 0).any():
        raise ValueError("rollout needs non-negative mixing scores")
    m = m.double()
    if normalize:
        m = normalize_rows(m)
    eye = torch.eye(m.shape[-1], dtype=m.dtype)
    out = []
    acc = None
    for a in m:
        if residual > 0:
            a = normalize_rows((1.0 - residual) * a + residual * eye)  # eq. (1)
        acc = a if acc is None else a @ acc  # eq. (2)
        out.append(acc)
    return torch.stack(out).float()


def rollout_measure(mats, measure: str, normalize: bool = True) -> torch.Tensor:
    """:func:`rollout` in the form the course uses for ``measure`` (:func:`rollout_form`)."""
    return rollout(mats, normalize=normalize, form=rollout_form(measure))
