"""One registry and one signature for the context-mixing measures, per layer and per component.

Every measure is a :class:`Measure`: a function of one attention block with the signature ::

    fn(cap: LayerCapture, *, rows=None, spans=None, per_head=False, **options) -> Tensor
        # [R, C] (query rows x key columns), or [H, R, C] with per_head

plus what it supports (per-head form, key spans, its options) and the rollout form the course uses
for it. :data:`REGISTRY` is the one table of them; :func:`layer_measure` / :func:`component_measure`
run any of them by name.

=================  ==================================================================  ===================
measure            cell ``[i, j]`` (query ``i``, key ``j``)                            module
=================  ==================================================================  ===================
attention          ``mean_h alpha_ij^h`` (or per head)                                 attention.py
attention_norm     ``|| sum_h alpha_ij^h v_j^h W_O^h ||`` (or per head)                attention_norm.py
value_zeroing      ``1 - cos(x~_i^{-j}, x~_i)``, rows normalised                       value_zeroing.py
alti               ``max(0, ||y_i||_1 - ||y_i - T_i(x_j)||_1)``, rows normalised       decomposition.py
=================  ==================================================================  ===================

``rows`` restricts the query rows; ``spans`` replaces key columns by inclusive key spans
(attention, attention_norm: the column is the mass summed over the span frames; value zeroing:
the whole span zeroed at once).  Causal components: cells with the key after the query are 0.
Attention and Attention-Norm are returned raw (attention rows sum to 1 already); value zeroing and
ALTI rows are normalised (``normalize=False`` for raw scores).  Word-level matrices:
:func:`ctxmix_lite.measures.pooling.word_level`.  Rollout through the layers:
:func:`ctxmix_lite.measures.rollout.rollout_measure` (each measure's form is in its entry).

Adding a measure (README, "Contributing"): write ``measures/<name>.py`` with a function of the
signature above, then add one :class:`Measure` line to :data:`REGISTRY` below.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import torch

from ctxmix_lite.internals.capture_types import Capture, LayerCapture

from .attention import attention
from .attention_norm import attention_norm
from .decomposition import alti
from .value_zeroing import ValueZeroingOptions, value_zeroing

__all__ = ["Measure", "REGISTRY", "MEASURES", "MEASURE_LABELS", "register", "get_measure", "attention",
           "layer_measure", "component_measure"]


@dataclass(frozen=True)
class Measure:
    """One context-mixing measure: its function and what it supports."""

    name: str
    label: str  # for figures
    fn: Callable[..., torch.Tensor]  # fn(cap, *, rows, spans, per_head, **options)
    per_head: bool  # has a per-head form
    spans: bool  # accepts key spans
    options: Tuple[str, ...]  # extra keyword options it takes
    rollout: str  # form of ctxmix_lite.measures.rollout.rollout used for it
    reference: str  # where it comes from

    def __call__(self, cap: LayerCapture, rows=None, spans=None, per_head: bool = False, **options) -> torch.Tensor:
        if per_head and not self.per_head:
            raise ValueError(f"{self.name} has no per-head variant here; use per_head=False"
                             + (" (the values of a key are zeroed in all heads at once, Mohebbi et al. 2023)"
                                if self.name == "value_zeroing" else ""))
        if spans is not None and not self.spans:
            raise ValueError(f"{self.name} scores single keys; it takes no spans (pool its matrix with "
                             "ctxmix_lite.measures.pooling.word_level instead)")
        bad = sorted(set(options) - set(self.options))
        if bad:
            raise ValueError(f"{self.name} takes no option(s) {bad}"
                             + (f"; its options: {list(self.options)}" if self.options else " (it has no extra options)"))
        return self.fn(cap, rows=rows, spans=spans, per_head=per_head, **options)


def _attention(cap, rows=None, spans=None, per_head=False):
    return attention(cap, per_head=per_head, rows=rows, spans=spans)


def _attention_norm(cap, rows=None, spans=None, per_head=False):
    return attention_norm(cap, per_head=per_head, rows=rows, spans=spans)


def _value_zeroing(cap, rows=None, spans=None, per_head=False, **options):
    return value_zeroing(cap, rows=rows, spans=spans, **options)


def _alti(cap, rows=None, spans=None, per_head=False, **options):
    return alti(cap, rows=rows, **options)


#: The one table of measures (name -> Measure). The study scores the first three.
REGISTRY: Dict[str, Measure] = {}


def register(measure: Measure) -> Measure:
    """Add ``measure`` to :data:`REGISTRY` (a name can be registered once)."""
    if measure.name in REGISTRY:
        raise ValueError(f"measure {measure.name!r} is already registered")
    REGISTRY[measure.name] = measure
    return measure


register(Measure("attention", "Attention", _attention, per_head=True, spans=True, options=(),
                 rollout="abnar_zuidema", reference="softmax weights, mean over heads"))
register(Measure("attention_norm", "Attention-Norm", _attention_norm, per_head=True, spans=True, options=(),
                 rollout="abnar_zuidema", reference="Kobayashi et al. 2020"))
register(Measure("value_zeroing", "Value Zeroing", _value_zeroing, per_head=False, spans=True,
                 options=ValueZeroingOptions.field_names(),
                 rollout="plain", reference="Mohebbi et al. 2023"))
register(Measure("alti", "ALTI", _alti, per_head=False, spans=False,
                 options=("layer_norm", "score", "normalize", "keys"),
                 rollout="plain", reference="Ferrando et al. 2022"))

#: the measures the study and its figures use, in their order
MEASURES = ("attention", "attention_norm", "value_zeroing")
#: labels for figures
MEASURE_LABELS = {name: m.label for name, m in REGISTRY.items()}


def get_measure(name: str) -> Measure:
    """The registered measure ``name`` (a clear error names the known ones)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown measure {name!r}; choose one of {tuple(REGISTRY)}") from None


def layer_measure(cap: LayerCapture, measure: str, rows=None, spans=None, per_head: bool = False, **options) -> torch.Tensor:
    """Measure ``measure`` on one attention block -> ``[R, C]`` (``[H, R, C]`` with ``per_head``).

    Extra keywords are the measure's options (value zeroing: ``method``, ``chunk_size``,
    ``normalize``, ``progress``, ``factor_ffn``; ALTI: ``layer_norm``, ``score``, ``normalize``, ``keys``).
    """
    return get_measure(measure)(cap, rows=rows, spans=spans, per_head=per_head, **options)


def component_measure(
    capture: Capture,
    component: str,
    measure: str,
    rows=None,
    spans=None,
    layers=None,
    per_head: bool = False,
    **options,
) -> torch.Tensor:
    """Stack :func:`layer_measure` over the layers of one component -> ``[L, R, C]``.

    ``layers``: None (all) or a list of layer indices (the stack follows that order).
    ``progress=True`` shows a bar over the layers (it is not passed on to the measure); the other
    keywords are the measure's options, as for :func:`layer_measure`.
    """
    m = get_measure(measure)
    progress = bool(options.pop("progress", False))
    caps = capture[component]
    idx = range(len(caps)) if layers is None else list(layers)
    it = idx
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(idx, desc=f"{measure} {component}", leave=False)
    mats = []
    for l in it:
        if not 0 <= l < len(caps):
            raise ValueError(f"layer {l} out of range: {component} has {len(caps)} layers")
        mats.append(m(caps[l], rows=rows, spans=spans, per_head=per_head, **options))
    return torch.stack(mats)
