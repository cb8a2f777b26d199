"""Hand-made :class:`LayerCapture` objects built straight from real ``transformers`` layer modules
(Whisper encoder / decoder layers, wav2vec2 post-LN and stable-LN layers) with forward hooks.

Independent of ``ctxmix_lite.capture`` on purpose: the measure tests check the measures against
these, and the capture tests (lead) check capture against the modules.  ``post`` is written here from
the layer's forward code; ``rerun`` re-runs the real layer with a hook that zeroes value rows.
Test-only helper (owned by helper measures).
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from ctxmix_lite.capture_types import FeedForwardParts, LayerCapture


@contextlib.contextmanager
def _hooks(pairs):
    handles = [m.register_forward_hook(fn) for m, fn in pairs]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _zero_hook(positions):
    pos = torch.as_tensor(list(positions), dtype=torch.long)

    def hook(module, inputs, output):
        output = output.clone()
        output[:, pos] = 0.0  # value vectors after v_proj (bias included), all heads
        return output

    return hook


def _record(store, key):
    def hook(module, inputs, output):
        store[key] = output

    return hook


def causal_mask(T: int) -> torch.Tensor:
    m = torch.full((T, T), torch.finfo(torch.float32).min).triu(1)
    return m[None, None]


def _split(t, H):
    # [1, T, H*dh] -> [H, T, dh]
    T = t.shape[1]
    return t[0].reshape(T, H, -1).permute(1, 0, 2).contiguous()


def _make(component, layer_idx, attn, run, post, resid, final_norm, causal, kv_len=None, ffn=None):
    """Run ``run()`` (the full layer) once with recording hooks and build the capture."""
    H = attn.num_heads
    st = {}
    with torch.no_grad(), _hooks(
        [
            (attn.v_proj, _record(st, "v")),
            (attn.q_proj, _record(st, "q")),
            (attn.k_proj, _record(st, "k")),
            (attn, _record(st, "attn")),
        ]
    ):
        out = run()
    attn_out, weights = st["attn"][0], st["attn"][1]
    assert weights is not None and weights.numel() > 0, "eager attention needed"

    def rerun(positions):
        with torch.no_grad(), _hooks([(attn.v_proj, _zero_hook(positions))]):
            o = run()[0]
            return final_norm(o) if final_norm is not None else o

    def post_fn(res, att):
        with torch.no_grad():
            o = post(res, att)
            return final_norm(o) if final_norm is not None else o

    out = out[0]
    if final_norm is not None:
        with torch.no_grad():
            out = final_norm(out)
    return LayerCapture(
        component=component,
        layer=layer_idx,
        weights=weights[0].detach(),
        values=_split(st["v"], H),
        W_O=attn.out_proj.weight.detach(),
        b_O=None if attn.out_proj.bias is None else attn.out_proj.bias.detach(),
        resid=resid.detach(),
        attn_out=attn_out[0].detach(),
        out=out.detach(),
        post=post_fn,
        rerun=rerun,
        causal=causal,
        final_norm_applied=final_norm is not None,
        queries=_split(st["q"], H),
        keys=_split(st["k"], H),
        ffn=ffn,
    )


def whisper_encoder(layer, x, final_norm=None, layer_idx=0) -> LayerCapture:
    """``layer``: a ``WhisperEncoderLayer`` (pre-LN); ``x``: ``[1, T, D]`` layer input."""

    def run():
        return layer(x, None)

    def post(res, att):
        h = res + att
        return h + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(h))))

    ffn = FeedForwardParts(layer.final_layer_norm, layer.fc1, layer.activation_fn, layer.fc2, False,
                           (final_norm,) if final_norm is not None else ())
    return _make("encoder", layer_idx, layer.self_attn, run, post, x[0], final_norm, False, ffn=ffn)


def wav2vec2(layer, x, final_norm=None, layer_idx=0) -> LayerCapture:
    """``layer``: ``Wav2Vec2EncoderLayer`` (post-LN) or ``...StableLayerNorm`` (pre-LN)."""
    stable = "StableLayerNorm" in type(layer).__name__

    def run():
        return layer(x, attention_mask=None)

    if stable:

        def post(res, att):
            h = res + att
            return h + layer.feed_forward(layer.final_layer_norm(h))

    else:

        def post(res, att):
            h = layer.layer_norm(res + att)
            h = h + layer.feed_forward(h)
            return layer.final_layer_norm(h)

    ff = layer.feed_forward
    if stable:
        parts = FeedForwardParts(layer.final_layer_norm, ff.intermediate_dense, ff.intermediate_act_fn,
                                 ff.output_dense, False, (final_norm,) if final_norm is not None else ())
    else:
        parts = FeedForwardParts(layer.layer_norm, ff.intermediate_dense, ff.intermediate_act_fn,
                                 ff.output_dense, True,
                                 (layer.final_layer_norm,) + ((final_norm,) if final_norm is not None else ()))
    return _make("encoder", layer_idx, layer.attention, run, post, x[0], final_norm, False, ffn=parts)


def whisper_decoder(layer, x, enc, final_norm=None, layer_idx=0):
    """``layer``: ``WhisperDecoderLayer``; ``x`` ``[1, T, D]`` decoder stream, ``enc`` ``[1, F, D]``.
    Returns ``(self_capture, cross_capture)``."""
    T = x.shape[1]
    mask = causal_mask(T)

    def run():
        return layer(x, attention_mask=mask, encoder_hidden_states=enc, use_cache=False)

    def cross_block(h):
        a, _ = layer.encoder_attn(layer.encoder_attn_layer_norm(h)[None], key_value_states=enc)
        return h + a[0]

    def ffn(h):
        return h + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(h))))

    def post_self(res, att):
        return ffn(cross_block(res + att))  # cross-attention is position-wise in the decoder rows

    with torch.no_grad():
        sa, _ = layer.self_attn(layer.self_attn_layer_norm(x), attention_mask=mask)
        mid = x + sa  # stream after the self-attention block = residual of the cross block

    def post_cross(res, att):
        return ffn(res + att)

    self_cap = _make("decoder", layer_idx, layer.self_attn, run, post_self, x[0], final_norm, True)
    parts = FeedForwardParts(layer.final_layer_norm, layer.fc1, layer.activation_fn, layer.fc2, False,
                             (final_norm,) if final_norm is not None else ())
    cross_cap = _make("cross", layer_idx, layer.encoder_attn, run, post_cross, mid[0], final_norm, False,
                      ffn=parts)
    return self_cap, cross_cap


# ----------------------------------------------------------------------------- small random layers
def tiny_whisper_config(**kw):
    from transformers import WhisperConfig

    cfg = dict(
        d_model=64,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        encoder_layers=2,
        decoder_layers=2,
        vocab_size=100,
        num_mel_bins=8,
        max_source_positions=64,
        max_target_positions=32,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    cfg.update(kw)
    c = WhisperConfig(**cfg)
    c._attn_implementation = "eager"
    return c


def tiny_wav2vec2_config(stable: bool, **kw):
    from transformers import Wav2Vec2Config

    cfg = dict(
        hidden_size=64,
        num_attention_heads=4,
        intermediate_size=128,
        num_hidden_layers=2,
        do_stable_layer_norm=stable,
        hidden_act="gelu",
    )
    cfg.update(kw)
    c = Wav2Vec2Config(**cfg)
    c._attn_implementation = "eager"
    return c


def _perturb_biases(module: nn.Module, gen: torch.Generator, scale=0.3):
    """Random init leaves biases at 0 and LN at (1, 0); give them values so that tests exercise them."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias") or "layer_norm.weight" in name:
                p.add_(scale * torch.randn(p.shape, generator=gen))


def all_tiny_captures(seed=0, T=24, F=30, final=True, with_modules=False):
    """Every layer type on a small random layer: dict name -> LayerCapture
    (``with_modules``: also dict name -> the transformers layer module)."""
    from transformers.models.wav2vec2.modeling_wav2vec2 import (
        Wav2Vec2EncoderLayer,
        Wav2Vec2EncoderLayerStableLayerNorm,
    )
    from transformers.models.whisper.modeling_whisper import WhisperDecoderLayer, WhisperEncoderLayer

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    caps = {}
    mods = {}
    wc = tiny_whisper_config()
    enc_layer = WhisperEncoderLayer(wc).eval()
    _perturb_biases(enc_layer, gen)
    fn = nn.LayerNorm(64).eval()
    _perturb_biases(fn, gen)
    x = torch.randn(1, F, 64, generator=gen)
    caps["whisper_encoder"] = whisper_encoder(enc_layer, x)
    mods["whisper_encoder"] = mods["whisper_encoder_last"] = enc_layer
    if final:
        caps["whisper_encoder_last"] = whisper_encoder(enc_layer, x, final_norm=fn)
    dec_layer = WhisperDecoderLayer(wc, layer_idx=0).eval()
    _perturb_biases(dec_layer, gen)
    y = torch.randn(1, T, 64, generator=gen)
    enc = torch.randn(1, F, 64, generator=gen)
    caps["whisper_decoder"], caps["whisper_cross"] = whisper_decoder(dec_layer, y, enc)
    for k in ("whisper_decoder", "whisper_cross", "whisper_decoder_last", "whisper_cross_last"):
        mods[k] = dec_layer
    if final:
        caps["whisper_decoder_last"], caps["whisper_cross_last"] = whisper_decoder(dec_layer, y, enc, final_norm=fn)
    for stable in (False, True):
        c = tiny_wav2vec2_config(stable)
        lay = (Wav2Vec2EncoderLayerStableLayerNorm if stable else Wav2Vec2EncoderLayer)(c).eval()
        _perturb_biases(lay, gen)
        name = "w2v_stable" if stable else "w2v_postln"
        caps[name] = wav2vec2(lay, x)
        mods[name] = mods[name + "_last"] = lay
        if final and stable:
            caps[name + "_last"] = wav2vec2(lay, x, final_norm=fn)
    return (caps, mods) if with_modules else caps


# ----------------------------------------------------------------------------- real models (lead's capture)
REAL_MODELS = {
    # key: (name, pretrained, config_overrides)
    "whisper-base trained": ("openai/whisper-base", True, None),
    "whisper-base random": ("openai/whisper-base", False, {"encoder_layers": 2, "decoder_layers": 2}),
    "wav2vec2-base random (post-LN)": ("facebook/wav2vec2-base", False, {"num_hidden_layers": 2}),
    "XLSR-53 random (pre-LN)": ("facebook/wav2vec2-large-xlsr-53", False, {"num_hidden_layers": 2}),
    "HuBERT-base random (post-LN)": ("facebook/hubert-base-ls960", False, {"num_hidden_layers": 2}),
}
_MODEL_CACHE: dict = {}
_CAPTURE_CACHE: dict = {}
TRANSCRIPT = "Elle a perdu les livres dans le train."


def real_model(key):
    if key not in _MODEL_CACHE:
        from ctxmix_lite.models import load_model

        name, pretrained, ov = REAL_MODELS[key]
        if pretrained:
            _MODEL_CACHE[key] = load_model(name)
        else:
            _MODEL_CACHE[key] = load_model(name, pretrained=False, seed=0, config_overrides=ov)
    return _MODEL_CACHE[key]


def real_capture(key, audio):
    """Lead's ``capture`` of one clip by a real model (cached per process): ``(model, capture)``."""
    if key not in _CAPTURE_CACHE:
        from ctxmix_lite.capture import capture

        model, proc = real_model(key)
        kw = {"transcription": TRANSCRIPT} if "whisper" in key else {}
        _CAPTURE_CACHE[key] = capture(model, proc, audio, sampling_rate=16000, **kw)
    return _CAPTURE_CACHE[key]
