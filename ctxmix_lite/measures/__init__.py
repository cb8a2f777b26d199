"""Context mixing, measured: one registry and one signature (:mod:`.registry`) over attention,
Attention-Norm, value zeroing and ALTI, with rollout, frame -> word pooling and attention patterns.

    from ctxmix_lite import measures
    measures.layer_measure(cap["encoder"][3], "value_zeroing", rows=target_frames, spans=word_spans)
    measures.component_measure(cap, "decoder", "attention_norm")   # [L, R, C]
    measures.REGISTRY                                              # name -> Measure
"""
from .registry import (MEASURE_LABELS, MEASURES, REGISTRY, Measure, attention, component_measure,
                       get_measure, layer_measure, register)

__all__ = ["Measure", "REGISTRY", "MEASURES", "MEASURE_LABELS", "register", "get_measure", "attention",
           "layer_measure", "component_measure"]
