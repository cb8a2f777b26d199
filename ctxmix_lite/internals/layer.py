"""The Transformer layer from its equations, in plain torch operations.

Its sub-layers -- attention, layer norm, feed-forward, each equation beside the line that computes
it, and their parameter objects -- are in :mod:`ctxmix_lite.internals.layer_blocks` (notation
there); this module re-exports them (``layer.multi_head_attention``, ``layer.AttentionParams``, ...)
and wires them into whole layers, written the same way. No ``transformers`` function is used to
compute anything: ``transformers`` modules are only *read* (their weights) by
:func:`extract_weights`, so that :func:`from_scratch_layer` can reproduce a real layer's output from
its input and the tests can compare the two.

Supported layer types (the module classes of ``transformers`` 5.x):

=======================================  ========  ==============================================
module class                             kind      used by
=======================================  ========  ==============================================
``Wav2Vec2EncoderLayer``                 post_ln   wav2vec2-base, bhuang/asr-wav2vec2-french ...
``Wav2Vec2EncoderLayerStableLayerNorm``  pre_ln    XLSR-53 (``do_stable_layer_norm=True``)
``HubertEncoderLayer``                   post_ln   HuBERT base
``HubertEncoderLayerStableLayerNorm``    pre_ln    HuBERT large / x-large
``WhisperEncoderLayer``                  pre_ln    Whisper encoder
``WhisperDecoderLayer``                  decoder   Whisper decoder (causal self-attn + cross-attn)
=======================================  ========  ==============================================

Reading real layers: :func:`extract_weights` (module -> :class:`LayerWeights`),
:func:`from_scratch_layer` (module -> callable with the module's forward signature),
:func:`capture_layer_io` (each layer's true input/output during a model run, via forward hooks) and
:func:`compare_with_transformers` (max abs / scaled / float64 differences per layer).

Differences between the models that matter at float32 tolerance (all read from the module, never
assumed):

* **scaling order** -- Whisper multiplies the *queries* by ``1/sqrt(d_h)`` before the product
  (``q = (x W_q^T + b_q) / sqrt(d_h)``, then ``q k^T``); wav2vec2 / HuBERT multiply the *scores*
  (``(q k^T) / sqrt(d_h)``). The two are equal in exact arithmetic; with ``d_h = 64`` the factor
  is 1/8, a power of two, so they are equal bit for bit in floating point too.
* **key bias** -- Whisper's ``k_proj`` has no bias (``b_k = None``); a bias on keys would cancel
  in the softmax anyway (it adds ``q . b_k``, the same for every key of a row).
* **layer-norm epsilon** -- ``config.layer_norm_eps`` (1e-5) for wav2vec2 / HuBERT; torch's
  default 1e-5 for Whisper. Read from each ``nn.LayerNorm``.
* **activation** -- all these models use exact GELU, ``0.5 x (1 + erf(x / sqrt 2))`` (``"gelu"``);
  the tanh approximation (``"gelu_new"``) differs by up to 5e-4 per activation (6e-3 after
  ``W2`` in Whisper-base) and would fail the comparison.

Measured (float32, real speech input; tests/test_layer.py): max abs difference <= 1.2e-6 for
wav2vec2-base / XLSR-53 / HuBERT layers (random init), <= 3e-6 for Whisper-base layers whose outputs
stay below ~30; Whisper-base encoder layers 3-5 carry features of ~500, where float32 spacing is
3e-5 to 6e-5, and differ by up to ~1e-4 -- exactly as far as transformers' own layer is from a
float64 computation. Relative to ``max(1, |out|)`` every layer is within 1e-5.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence

import torch

from ctxmix_lite.internals.layer_blocks import (
    ACTIVATIONS,
    AttentionParams,
    FFNParams,
    NormParams,
    activation_fn,
    attention_weights,
    causal_mask,
    feed_forward,
    layer_norm,
    linear,
    merge_heads,
    multi_head_attention,
    per_head_outputs,
    split_heads,
)

__all__ = [
    "LayerNotSupportedError",
    "AttentionParams",
    "NormParams",
    "FFNParams",
    "LayerWeights",
    "SUPPORTED_LAYERS",
    "ACTIVATIONS",
    "activation_fn",
    "linear",
    "layer_norm",
    "split_heads",
    "merge_heads",
    "causal_mask",
    "attention_weights",
    "multi_head_attention",
    "per_head_outputs",
    "feed_forward",
    "post_ln_layer",
    "pre_ln_layer",
    "whisper_decoder_layer",
    "run_layer",
    "extract_weights",
    "from_scratch_layer",
    "FromScratchLayer",
    "LayerIO",
    "capture_layer_io",
    "compare_with_transformers",
]


class LayerNotSupportedError(ValueError):
    """Raised for a module this from-scratch implementation does not reproduce."""


# ----------------------------------------------------------------------------------------------
# Parameters of a layer (its blocks' parameters: layer_blocks)
# ----------------------------------------------------------------------------------------------


@dataclass
class LayerWeights:
    """Everything one layer computes with, detached from the ``transformers`` module.

    ``kind``:
      * ``"post_ln"`` -- ``norm_attn`` is applied *after* the attention residual sum, ``norm_ffn``
        after the feed-forward residual sum (wav2vec2-base, HuBERT base, original Transformer);
      * ``"pre_ln"``  -- ``norm_attn`` is applied to the attention *input*, ``norm_ffn`` to the
        feed-forward input; the residual stream itself is never normalised (Whisper, XLSR);
      * ``"decoder"`` -- Whisper decoder: pre-LN causal self-attention, then pre-LN cross-attention
        (``cross_attn``, ``norm_cross``) to the encoder output, then pre-LN feed-forward.

    Mapping to transformers names: ``norm_attn`` = ``layer_norm`` (wav2vec2/HuBERT) or
    ``self_attn_layer_norm`` (Whisper); ``norm_ffn`` = ``final_layer_norm``; ``norm_cross`` =
    ``encoder_attn_layer_norm``; ``ffn.W1/W2`` = ``feed_forward.intermediate_dense/output_dense``
    (wav2vec2/HuBERT) or ``fc1/fc2`` (Whisper).
    """

    kind: str
    self_attn: AttentionParams
    norm_attn: NormParams
    ffn: FFNParams
    norm_ffn: NormParams
    cross_attn: Optional[AttentionParams] = None
    norm_cross: Optional[NormParams] = None
    source: str = ""  # class name of the module the weights came from

    @property
    def causal(self) -> bool:
        return self.kind == "decoder"

    def to(self, dtype) -> "LayerWeights":
        """A copy with every tensor cast to ``dtype`` (e.g. ``torch.float64`` for a reference)."""
        return replace(
            self,
            self_attn=self.self_attn.to(dtype),
            norm_attn=self.norm_attn.to(dtype),
            ffn=self.ffn.to(dtype),
            norm_ffn=self.norm_ffn.to(dtype),
            cross_attn=None if self.cross_attn is None else self.cross_attn.to(dtype),
            norm_cross=None if self.norm_cross is None else self.norm_cross.to(dtype),
        )


# ----------------------------------------------------------------------------------------------
# Whole layers
# ----------------------------------------------------------------------------------------------


def post_ln_layer(x: torch.Tensor, w: LayerWeights, mask: Optional[torch.Tensor] = None,
                  return_weights: bool = False):
    """Post-LN layer (Vaswani et al. 2017; wav2vec2-base; HuBERT base).

        h = LN_1( x + MHA(x) )          "Add & Norm" after attention
        y = LN_2( h + FFN(h) )          "Add & Norm" after the feed-forward

    Returns ``y`` or ``(y, A)`` with ``A [..., H, T, T]``.
    """
    a, A = multi_head_attention(x, x, w.self_attn, causal=w.causal, mask=mask, return_weights=True)
    h = w.norm_attn(x + a)  # h = LN_1(x + MHA(x))
    y = w.norm_ffn(h + w.ffn(h))  # y = LN_2(h + FFN(h))
    return (y, A) if return_weights else y


def pre_ln_layer(x: torch.Tensor, w: LayerWeights, mask: Optional[torch.Tensor] = None,
                 return_weights: bool = False):
    """Pre-LN layer (Whisper encoder; wav2vec2 "stable layer norm": XLSR-53, HuBERT large).

        h = x + MHA( LN_1(x) )          the residual stream itself is never normalised
        y = h + FFN( LN_2(h) )

    (The model normalises the stream once, after its last layer: ``encoder.layer_norm``.)
    Returns ``y`` or ``(y, A)``.
    """
    z = w.norm_attn(x)  # LN_1(x): queries, keys and values all come from the normalised input
    a, A = multi_head_attention(z, z, w.self_attn, causal=w.causal, mask=mask, return_weights=True)
    h = x + a  # h = x + MHA(LN_1(x))   (the residual adds the *un-normalised* x)
    y = h + w.ffn(w.norm_ffn(h))  # y = h + FFN(LN_2(h))
    return (y, A) if return_weights else y


def whisper_decoder_layer(
    x: torch.Tensor,
    encoder_states: torch.Tensor,
    w: LayerWeights,
    mask: Optional[torch.Tensor] = None,
    encoder_mask: Optional[torch.Tensor] = None,
    return_weights: bool = False,
):
    """Whisper decoder layer: pre-LN causal self-attention, pre-LN cross-attention, pre-LN FFN.

        h1 = x  + MHA_self( LN_1(x) )                  causal: token i attends tokens j <= i
        h2 = h1 + MHA_cross( LN_2(h1), e )             queries from h2's stream, keys/values
                                                       from the encoder output e (no LN on e here)
        y  = h2 + FFN( LN_3(h2) )

    ``mask``: extra self-attention mask (the causal mask is always applied);
    ``encoder_mask``: mask on the encoder positions (Whisper passes none).
    Returns ``y`` or ``(y, {"self": A_self, "cross": A_cross})``.
    """
    if w.cross_attn is None or w.norm_cross is None:
        raise ValueError("whisper_decoder_layer needs LayerWeights with cross_attn and norm_cross (kind 'decoder')")
    z = w.norm_attn(x)  # LN_1(x)
    a, A_self = multi_head_attention(z, z, w.self_attn, causal=True, mask=mask, return_weights=True)
    h1 = x + a  # h1 = x + MHA_self(LN_1(x))
    c, A_cross = multi_head_attention(w.norm_cross(h1), encoder_states, w.cross_attn,
                                      mask=encoder_mask, return_weights=True)  # MHA_cross(LN_2(h1), e)
    h2 = h1 + c  # h2 = h1 + MHA_cross(LN_2(h1), e)
    y = h2 + w.ffn(w.norm_ffn(h2))  # y = h2 + FFN(LN_3(h2))
    return (y, {"self": A_self, "cross": A_cross}) if return_weights else y


def run_layer(w: LayerWeights, x: torch.Tensor, encoder_states: Optional[torch.Tensor] = None,
              mask: Optional[torch.Tensor] = None, encoder_mask: Optional[torch.Tensor] = None,
              return_weights: bool = False):
    """Dispatch on ``w.kind``; see :func:`post_ln_layer`, :func:`pre_ln_layer`, :func:`whisper_decoder_layer`."""
    if w.kind == "post_ln":
        return post_ln_layer(x, w, mask=mask, return_weights=return_weights)
    if w.kind == "pre_ln":
        return pre_ln_layer(x, w, mask=mask, return_weights=return_weights)
    if w.kind == "decoder":
        if encoder_states is None:
            raise ValueError("a decoder layer needs encoder_states (the encoder output) for its cross-attention")
        return whisper_decoder_layer(x, encoder_states, w, mask=mask, encoder_mask=encoder_mask,
                                     return_weights=return_weights)
    raise ValueError(f"unknown layer kind {w.kind!r} (expected 'post_ln', 'pre_ln' or 'decoder')")


# ----------------------------------------------------------------------------------------------
# Reading a transformers layer
# ----------------------------------------------------------------------------------------------

SUPPORTED_LAYERS = {
    "Wav2Vec2EncoderLayer": "post_ln",
    "Wav2Vec2EncoderLayerStableLayerNorm": "pre_ln",
    "HubertEncoderLayer": "post_ln",
    "HubertEncoderLayerStableLayerNorm": "pre_ln",
    "WhisperEncoderLayer": "pre_ln",
    "WhisperDecoderLayer": "decoder",
}

# transformers activation classes -> names in ACTIVATIONS
_ACT_CLASSES = {
    "GELUActivation": "gelu",
    "GELU": "gelu",  # torch.nn.GELU(approximate='none'); 'tanh' handled below
    "NewGELUActivation": "gelu_tanh",
    "FastGELUActivation": "gelu_tanh",
    "GELUTanh": "gelu_tanh",
    "PytorchGELUTanh": "gelu_tanh",
    "AccurateGELUActivation": "gelu_tanh",
    "QuickGELUActivation": "quick_gelu",
    "ReLU": "relu",
    "SiLU": "silu",
    "SiLUActivation": "silu",
}


def _activation_name(module) -> str:
    cls = type(module).__name__
    if cls == "GELU" and getattr(module, "approximate", "none") == "tanh":
        return "gelu_tanh"
    if cls == "GELUActivation" and getattr(module, "act", None) is not None:
        act = module.act
        if type(act).__name__ == "GELU" and getattr(act, "approximate", "none") == "tanh":
            return "gelu_tanh"
    try:
        return _ACT_CLASSES[cls]
    except KeyError:
        raise LayerNotSupportedError(f"activation module {cls} is not reproduced from scratch "
                                     f"(known: {sorted(_ACT_CLASSES)})") from None


def _p(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.detach()


def _attention_params(attn) -> AttentionParams:
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        if not hasattr(attn, name):
            raise LayerNotSupportedError(f"attention module {type(attn).__name__} has no {name}")
    H = int(attn.num_heads)
    dh = attn.q_proj.weight.shape[0] // H
    scale = float(getattr(attn, "scaling", dh ** -0.5))
    return AttentionParams(
        W_q=_p(attn.q_proj.weight), b_q=_p(attn.q_proj.bias),
        W_k=_p(attn.k_proj.weight), b_k=_p(attn.k_proj.bias),
        W_v=_p(attn.v_proj.weight), b_v=_p(attn.v_proj.bias),
        W_o=_p(attn.out_proj.weight), b_o=_p(attn.out_proj.bias),
        num_heads=H,
        scale=scale,
        # WhisperAttention.forward: q = q_proj(x) * scaling, then the product with scaling=1.0
        scale_queries=type(attn).__name__.startswith("Whisper"),
    )


def _norm_params(ln) -> NormParams:
    if type(ln).__name__ != "LayerNorm":
        raise LayerNotSupportedError(f"expected an nn.LayerNorm, got {type(ln).__name__}")
    if ln.weight is None or ln.bias is None:
        raise LayerNotSupportedError("layer norm without affine weight/bias is not supported")
    return NormParams(gamma=_p(ln.weight), beta=_p(ln.bias), eps=float(ln.eps))


def extract_weights(layer) -> LayerWeights:
    """Read a ``transformers`` layer module into :class:`LayerWeights` (tensors are shared, detached).

    Supported: the classes in :data:`SUPPORTED_LAYERS`. Raises :class:`LayerNotSupportedError`
    (a ``ValueError``) for anything else, or for options it does not reproduce (attention adapters).
    """
    cls = type(layer).__name__
    kind = SUPPORTED_LAYERS.get(cls)
    if kind is None:
        raise LayerNotSupportedError(
            f"{cls} is not a supported layer type; supported: {sorted(SUPPORTED_LAYERS)}"
        )
    if getattr(layer, "adapter_layer", None) is not None:
        raise LayerNotSupportedError(f"{cls} with an attention adapter (config.adapter_attn_dim) is not supported")
    if cls.startswith("Whisper"):
        ffn = FFNParams(W1=_p(layer.fc1.weight), b1=_p(layer.fc1.bias), W2=_p(layer.fc2.weight),
                        b2=_p(layer.fc2.bias), activation=_activation_name(layer.activation_fn))
        return LayerWeights(
            kind=kind,
            self_attn=_attention_params(layer.self_attn),
            norm_attn=_norm_params(layer.self_attn_layer_norm),
            ffn=ffn,
            norm_ffn=_norm_params(layer.final_layer_norm),
            cross_attn=_attention_params(layer.encoder_attn) if kind == "decoder" else None,
            norm_cross=_norm_params(layer.encoder_attn_layer_norm) if kind == "decoder" else None,
            source=cls,
        )
    ff = layer.feed_forward
    ffn = FFNParams(W1=_p(ff.intermediate_dense.weight), b1=_p(ff.intermediate_dense.bias),
                    W2=_p(ff.output_dense.weight), b2=_p(ff.output_dense.bias),
                    activation=_activation_name(ff.intermediate_act_fn))
    return LayerWeights(
        kind=kind,
        self_attn=_attention_params(layer.attention),
        norm_attn=_norm_params(layer.layer_norm),
        ffn=ffn,
        norm_ffn=_norm_params(layer.final_layer_norm),
        source=cls,
    )


class FromScratchLayer:
    """A callable that reproduces a ``transformers`` layer from its weights with the equations above.

    ``layer(hidden_states, attention_mask=None, encoder_hidden_states=None,
    encoder_attention_mask=None, return_weights=False)`` takes the same tensors the transformers
    layer's ``forward`` receives (``[B, T, D]`` or ``[T, D]``; masks as transformers builds them:
    additive float ``[B, 1, Tq, Tk]`` or boolean) and returns its output (and the attention weights:
    ``[B, H, Tq, Tk]``, or a dict ``{"self", "cross"}`` for a decoder layer). Unbatched ``[T, D]``
    input runs as a batch of one and comes back unbatched (``[T, D]``, ``[H, Tq, Tk]``).

    ``dtype``: compute in another precision (e.g. ``torch.float64``) to measure the float32 rounding
    of the real layer; the output is returned in that dtype.
    """

    def __init__(self, weights: LayerWeights, dtype: Optional[torch.dtype] = None):
        self.weights = weights.to(dtype) if dtype is not None else weights
        self.dtype = dtype

    @property
    def kind(self) -> str:
        return self.weights.kind

    def __call__(self, hidden_states: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                 encoder_hidden_states: Optional[torch.Tensor] = None,
                 encoder_attention_mask: Optional[torch.Tensor] = None, return_weights: bool = False):
        cast = (lambda t: t if t is None or self.dtype is None or t.dtype == torch.bool else t.to(self.dtype))
        if hidden_states.dim() not in (2, 3):
            raise ValueError(f"hidden_states must be [T, D] or [B, T, D], got shape {tuple(hidden_states.shape)}")
        D = self.weights.self_attn.d_model
        if hidden_states.shape[-1] != D:
            raise ValueError(f"hidden_states last dim {hidden_states.shape[-1]} != model dimension {D}")
        if self.kind == "decoder" and encoder_hidden_states is None:
            raise ValueError("a Whisper decoder layer needs encoder_hidden_states")
        # A decoder layer applies causality itself; transformers also passes its causal mask as
        # ``attention_mask``: applying both is the same mask (masked scores stay at -inf / min_float).
        unbatched = hidden_states.dim() == 2  # [T, D]: run as a batch of one, return [T, D]
        if unbatched:
            hidden_states = hidden_states[None]
            if encoder_hidden_states is not None and encoder_hidden_states.dim() == 2:
                encoder_hidden_states = encoder_hidden_states[None]
        with torch.no_grad():
            res = run_layer(self.weights, cast(hidden_states), encoder_states=cast(encoder_hidden_states),
                            mask=cast(attention_mask), encoder_mask=cast(encoder_attention_mask),
                            return_weights=return_weights)
        if not unbatched:
            return res
        if not return_weights:
            return res[0]
        y, A = res
        return y[0], ({k: v[0] for k, v in A.items()} if isinstance(A, dict) else A[0])

    def __repr__(self) -> str:
        a = self.weights.self_attn
        return (f"FromScratchLayer({self.weights.source}, kind={self.kind!r}, D={a.d_model}, H={a.num_heads}, "
                f"D_ff={self.weights.ffn.W1.shape[0]}, act={self.weights.ffn.activation!r}, "
                f"eps={self.weights.norm_attn.eps})")


def from_scratch_layer(hf_layer, dtype: Optional[torch.dtype] = None) -> FromScratchLayer:
    """``from_scratch_layer(model.encoder.layers[3])(x) ~= model.encoder.layers[3](x)`` (float32: <= 1e-5).

    See :class:`FromScratchLayer` for the call signature and :func:`extract_weights` for the
    supported module classes.
    """
    return FromScratchLayer(extract_weights(hf_layer), dtype=dtype)


# ----------------------------------------------------------------------------------------------
# Comparing with the real layers on real inputs
# ----------------------------------------------------------------------------------------------

_FORWARD_INPUTS = ("attention_mask", "encoder_hidden_states", "encoder_attention_mask")


@dataclass
class LayerIO:
    """What one transformers layer received and returned during a model run (batch as given)."""

    module: object  # the transformers layer module
    index: int  # position in the ``layers`` list given to :func:`capture_layer_io`
    hidden_states: torch.Tensor  # the layer input [B, T, D]
    inputs: dict  # attention_mask / encoder_hidden_states / encoder_attention_mask it received
    output: torch.Tensor  # the layer output [B, T, D]

    @property
    def layer_type(self) -> str:
        return type(self.module).__name__


def capture_layer_io(layers: Sequence, run: Callable[[], object]) -> list:
    """Run ``run()`` (e.g. ``lambda: model(x)``) with forward hooks on ``layers`` and return one
    :class:`LayerIO` per layer call: each layer's *true* input (the hidden states, masks and encoder
    output the model passed it) and its output. Hooks are removed afterwards; runs under no_grad.
    The records are kept on the CPU whatever device the model runs on (``run`` gives the model its
    inputs on the model's device, e.g. with :func:`ctxmix_lite.internals.capture.to_device`);
    :func:`compare_with_transformers` runs each layer where its module is.
    """
    records = []
    index = {id(m): k for k, m in enumerate(layers)}

    def hook(module, args, kwargs, out):
        bound = inspect.signature(module.forward).bind(*args, **kwargs).arguments
        out = out[0] if isinstance(out, tuple) else out
        inputs = {k: bound[k] for k in _FORWARD_INPUTS if k in bound and bound[k] is not None}
        inputs = {k: v.detach().clone().cpu() for k, v in inputs.items()}
        records.append(LayerIO(module, index[id(module)], bound["hidden_states"].detach().clone().cpu(), inputs,
                               out.detach().clone().cpu()))

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in layers]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return records


def compare_with_transformers(records: Sequence[LayerIO], float64: bool = True) -> list:
    """For each captured layer: the from-scratch output on the same input vs the real output.

    Returns one dict per layer: ``layer_type``, ``index``, ``kind``, ``max_abs_diff`` (float32
    from-scratch vs transformers), ``max_abs_out`` (largest |output|), ``scaled_diff``
    (``max |diff| / max(1, |out|)`` elementwise: the error in units of the float32 spacing scale),
    and with ``float64=True`` also ``f64_vs_transformers`` / ``f64_vs_ours``: how far the real
    layer and our float32 layer are from the same equations computed in float64. When
    ``f64_vs_transformers`` is as large as ``max_abs_diff``, the difference is float32 rounding
    of the real layer itself (typical where the residual stream is large: |h| ~ 500 in Whisper's
    encoder from layer 4 on, where float32 numbers are 3e-5 apart).
    """
    rows = []
    for r in records:
        dev = next(r.module.parameters()).device  # the from-scratch layer computes with its weights
        x, inputs = r.hidden_states.to(dev), {k: v.to(dev) for k, v in r.inputs.items()}
        f = from_scratch_layer(r.module)
        y = f(x, **inputs).cpu()
        ref = r.output
        d = (y.double() - ref.double()).abs()
        row = dict(layer_type=r.layer_type, index=r.index, kind=f.kind, max_abs_diff=d.max().item(),
                   max_abs_out=ref.abs().max().item(),
                   scaled_diff=(d / ref.double().abs().clamp_min(1.0)).max().item())
        if float64:
            y64 = from_scratch_layer(r.module, dtype=torch.float64)(x, **inputs).cpu()
            row["f64_vs_transformers"] = (y64 - ref.double()).abs().max().item()
            row["f64_vs_ours"] = (y64 - y.double()).abs().max().item()
        rows.append(row)
    return rows
