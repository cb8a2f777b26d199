"""One adapter table per architecture: where a model keeps its layers, attentions, norms and
feed-forward parts, and whether its blocks are pre- or post-LN (inseq's "one table of module names").

Everything that reads a model's internals (:mod:`ctxmix_lite.internals.capture`, ALTI's layer
norms in :mod:`ctxmix_lite.measures.decomposition`) finds the parts here. Adding a model family is
one :class:`Architecture` entry (plus its capture hooks if its layer computes something new).

=========  ==========================  ===========================  =====================  =========
family     transformer (from model)    layers                       attention per layer    blocks
=========  ==========================  ===========================  =====================  =========
whisper    ``model.model`` or model    encoder.layers,              self_attn,             pre-LN
                                       decoder.layers               encoder_attn (cross)
wav2vec2   ``model.wav2vec2`` /        encoder.layers               attention              post-LN, or
           ``model.hubert`` or model                                                       pre-LN when
                                                                                           stable
=========  ==========================  ===========================  =====================  =========
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

__all__ = ["Architecture", "ARCHITECTURES", "architecture_of", "transformer_of", "layer_stack", "post_ln"]


@dataclass(frozen=True)
class Architecture:
    family: str
    model_types: Tuple[str, ...]  # config.model_type values
    cores: Tuple[str, ...]  # attributes holding the transformer, tried in order (else the model itself)
    stacks: Dict[str, str]  # component -> the module holding its layers (relative to the transformer)
    attention: Dict[str, str]  # component -> the attention module's attribute on a layer
    block_norm: str  # attribute of a layer: the norm that closes the attention block when post-LN
    final_norm: str  # attribute of a stack: its final norm (pre-LN models)


ARCHITECTURES: Dict[str, Architecture] = {
    "whisper": Architecture(
        family="whisper", model_types=("whisper",), cores=("model",),
        stacks={"encoder": "encoder", "decoder": "decoder", "cross": "decoder"},
        attention={"encoder": "self_attn", "decoder": "self_attn", "cross": "encoder_attn"},
        block_norm="self_attn_layer_norm", final_norm="layer_norm"),
    "wav2vec2": Architecture(
        family="wav2vec2", model_types=("wav2vec2", "hubert"), cores=("wav2vec2", "hubert"),
        stacks={"encoder": "encoder"}, attention={"encoder": "attention"},
        block_norm="layer_norm", final_norm="layer_norm"),
}


def architecture_of(model) -> Architecture:
    """The table entry of ``model`` (by ``config.model_type``); a clear error otherwise."""
    mt = getattr(getattr(model, "config", None), "model_type", None)
    for arch in ARCHITECTURES.values():
        if mt in arch.model_types:
            return arch
    raise ValueError(f"unsupported model type {mt!r}; supported: "
                     f"{sorted(t for a in ARCHITECTURES.values() for t in a.model_types)}")


def transformer_of(model):
    """The module that holds the stacks (``model.model`` of a Whisper head model, ...)."""
    for attr in architecture_of(model).cores:
        if hasattr(model, attr):
            return getattr(model, attr)
    return model


def layer_stack(model, component: str):
    """The stack module of ``component`` (its ``.layers`` are the layers)."""
    arch = architecture_of(model)
    if component not in arch.stacks:
        raise ValueError(f"{arch.family} models have the components {tuple(arch.stacks)}, got {component!r}")
    return getattr(transformer_of(model), arch.stacks[component])


def post_ln(model) -> bool:
    """Whether the model's blocks are post-LN (the norm closes the attention block)."""
    arch = architecture_of(model)
    if arch.family == "wav2vec2":
        return not bool(model.config.do_stable_layer_norm)
    return False
