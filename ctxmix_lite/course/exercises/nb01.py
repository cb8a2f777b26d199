"""Notebook 01 (the Transformer layer): checks, their references and the notebook's helpers.

The readable solutions, written from the equations, live in the notebook (collapsed cells tagged
``solution``). The references here are thin wrappers around :mod:`ctxmix_lite.internals.layer` with the
signatures the learner writes: an independent formulation that a solution -- the notebook's or the
learner's -- is compared with, within float32 tolerance (atol 1e-5, rtol 1e-4): another order of
operations, scaling q before or after the product, ``F.layer_norm`` or the explicit formula all
pass. Each ``check_*`` compares a learner's function with the reference on *real* inputs: the hidden states that a real Whisper-base layer receives on
a French sentence, that layer's trained weights, and a wav2vec2-base (post-LN) layer. Before the
comparison, the learner's output is matched against a catalogue of classic mistakes
(:mod:`ctxmix_lite.course.exercises.nb01_mistakes`: softmax over the wrong axis, no
``1/sqrt(d_h)``, value bias forgotten, pre-/post-LN order swapped, ...) so that a failing check
names the mistake instead of only "values differ".

Exercise data: :func:`exercise_data` builds it from the notebook's model and clip;
:func:`default_exercise_data` builds (once) the same from the offline Whisper-base and a
synthesised sentence, and is what a check uses when it is given no data.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import torch

from ctxmix_lite.internals import layer as L
from ctxmix_lite.course.exercises import case, check_function, diagnose_mistakes, mistake_hints
from ctxmix_lite.course.exercises.nb01_mistakes import (ADD_NORM_MISTAKES, ATTENTION_INVARIANTS,
                                                        ATTENTION_MISTAKES, ATTENTION_PROPERTIES,
                                                        FFN_MISTAKES, LAYER_MISTAKES, LN_MISTAKES,
                                                        MHA_MISTAKES)
from ctxmix_lite.viz.plotting import layer_label

SENTENCE = "Elle a perdu les livres dans le train."
WHISPER_PREFIX = ("<|startoftranscript|>", "<|fr|>", "<|transcribe|>", "<|notimestamps|>")

# ----------------------------------------------------------------------------------------------
# References of the checks (signatures of the notebook's exercises; the readable solutions are
# in the notebook)
# ----------------------------------------------------------------------------------------------


def attention_weights(q: torch.Tensor, k: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """``A = softmax(q k^T / sqrt(d_h))`` over keys; ``q [..., Tq, d_h]``, ``k [..., Tk, d_h]``;
    ``causal``: query ``i`` sees keys ``j <= i`` only."""
    return L.attention_weights(q, k, causal=causal)


def multi_head_attention(x_q, x_kv, p: L.AttentionParams, causal: bool = False):
    """``Concat_h(softmax(q^h k^h^T / sqrt(d_h)) v^h) W_o^T + b_o`` with the projections of ``p``
    (``p.W_q, p.b_q, ..., p.W_o, p.b_o, p.num_heads``); biases may be ``None``. (The library reads
    the block's own scaling, ``p.scale`` = ``1/sqrt(d_h)`` = 1/8 in every model here: the same bits.)"""
    return L.multi_head_attention(x_q, x_kv, p, causal=causal)


def layer_norm(x, gamma, beta, eps=1e-5):
    """``gamma * (x - mu) / sqrt(sigma^2 + eps) + beta`` over the last axis (biased variance)."""
    return L.layer_norm(x, gamma, beta, eps)


def add_and_norm(x, sublayer_out, gamma, beta, eps=1e-5):
    """Post-LN "Add & Norm": ``LN(x + sublayer(x))``."""
    return L.layer_norm(x + sublayer_out, gamma, beta, eps)  # LN(x + Sublayer(x))


def feed_forward(x, W1, b1, W2, b2):
    """``GELU(x W1^T + b1) W2^T + b2`` with the exact (erf) GELU."""
    return L.feed_forward(x, W1, b1, W2, b2, activation="gelu")


def post_ln_layer(x, w: L.LayerWeights):
    """``h = LN_1(x + MHA(x))``, ``y = LN_2(h + FFN(h))`` (wav2vec2-base)."""
    return L.post_ln_layer(x, w)


def pre_ln_layer(x, w: L.LayerWeights):
    """``h = x + MHA(LN_1(x))``, ``y = h + FFN(LN_2(h))`` (Whisper, XLSR-53)."""
    return L.pre_ln_layer(x, w)


# ----------------------------------------------------------------------------------------------
# Exercise data: real weights, real hidden states
# ----------------------------------------------------------------------------------------------


@dataclass
class ExerciseData:
    """Real inputs for the checks (all float32, unbatched ``[T, D]``)."""

    x_enc: torch.Tensor  # input of a Whisper encoder layer (first n_frames frames)
    w_enc: L.LayerWeights  # that layer's trained weights (pre-LN)
    x_dec: torch.Tensor  # input of a Whisper decoder layer (teacher-forced tokens)
    enc_out: torch.Tensor  # the encoder output the decoder attends to (first n_frames frames)
    w_dec: L.LayerWeights  # that decoder layer's weights
    x_post: torch.Tensor  # input of a wav2vec2-base (post-LN) layer
    w_post: L.LayerWeights  # its weights (random init from the config, biases perturbed)
    description: str = ""


def whisper_decoder_ids(processor, text: str = SENTENCE) -> torch.Tensor:
    """``<|startoftranscript|><|fr|><|transcribe|><|notimestamps|>`` + the text's tokens, ``[1, N]``."""
    tok = processor.tokenizer
    prefix = tok.convert_tokens_to_ids(list(WHISPER_PREFIX))
    return torch.tensor([prefix + tok.encode(" " + text.strip(), add_special_tokens=False)])


def whisper_layer_io(model, processor, audio, text: str = SENTENCE) -> list:
    """Every Whisper encoder and decoder layer's true input and output on ``audio`` (padded to
    30 s), the decoder teacher-forced on ``text``: a list of :class:`ctxmix_lite.internals.layer.LayerIO`
    (encoder layers first)."""
    from ctxmix_lite.internals.capture import model_device

    dev = model_device(model)  # fed on the model's device (DEVICE); capture_layer_io keeps its records on the CPU
    feats = processor.feature_extractor(audio, sampling_rate=16000, return_tensors="pt").input_features.to(dev)
    ids = whisper_decoder_ids(processor, text).to(dev)
    base = model.model if hasattr(model, "model") else model
    layers = list(base.encoder.layers) + list(base.decoder.layers)
    return L.capture_layer_io(layers, lambda: model(input_features=feats, decoder_input_ids=ids))


def wav2vec2_layer_io(model, audio) -> list:
    """Every encoder layer's true input and output of a wav2vec2 / XLSR / HuBERT model on ``audio``
    (normalised to zero mean, unit variance as the feature extractor does)."""
    from ctxmix_lite.internals.capture import model_device

    x = torch.as_tensor(audio, dtype=torch.float32)
    x = ((x - x.mean()) / (x.std() + 1e-7))[None].to(model_device(model))
    base = getattr(model, "wav2vec2", None) or getattr(model, "hubert", None) or model
    return L.capture_layer_io(list(base.encoder.layers), lambda: model(x))


def perturb_biases_(module, seed: int = 0, scale: float = 0.1):
    """Add seeded noise to every bias / layer-norm vector of ``module`` (in place). Random-init
    layers have all biases 0 and layer norms (1, 0): a check could not see a forgotten bias."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() == 1:
                p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def exercise_data(whisper_records: Sequence[L.LayerIO], post_ln_records: Sequence[L.LayerIO],
                  enc_layer: int = 1, dec_layer: int = 1, n_frames: int = 300) -> ExerciseData:
    """Exercise data from captured layers (:func:`whisper_layer_io`, :func:`wav2vec2_layer_io`).

    ``n_frames``: encoder frames kept (from the start; 300 = 6 s, the speech and some padding).
    The wav2vec2 layer's biases are perturbed (copy of the weights; the model is not touched).
    """
    enc = [r for r in whisper_records if r.layer_type == "WhisperEncoderLayer"]
    dec = [r for r in whisper_records if r.layer_type == "WhisperDecoderLayer"]
    if not enc or not dec:
        raise ValueError("whisper_records must hold Whisper encoder and decoder layers (whisper_layer_io)")
    post = [r for r in post_ln_records if L.SUPPORTED_LAYERS.get(r.layer_type) == "post_ln"]
    if not post:
        raise ValueError("post_ln_records must hold post-LN layers (wav2vec2-base / HuBERT base)")
    re_, rd, rp = enc[enc_layer], dec[dec_layer], post[0]
    w_post = copy.deepcopy(rp.module)
    perturb_biases_(w_post, seed=1)
    enc_out = rd.inputs["encoder_hidden_states"][0, :n_frames]
    return ExerciseData(
        x_enc=re_.hidden_states[0, :n_frames].clone(), w_enc=L.extract_weights(re_.module),
        x_dec=rd.hidden_states[0].clone(), enc_out=enc_out.clone(), w_dec=L.extract_weights(rd.module),
        x_post=rp.hidden_states[0].clone(), w_post=L.extract_weights(w_post),
        description=(f"Whisper {layer_label(enc_layer, 'encoder')} ({n_frames} frames), "
                     f"{layer_label(dec_layer, 'decoder')} ({rd.hidden_states.shape[1]} tokens), "
                     f"{rp.layer_type} {layer_label(0)}"),
    )


_DEFAULT: dict = {}


def synthesize_clip(text: str = SENTENCE):
    """``(audio, words)``: the sentence by an MBROLA French voice (espeak-ng fallback), 16 kHz."""
    from ctxmix_lite.corpus import synth

    voices = synth.default_voices()
    clip = synth.synthesize(text, voice=voices[0])
    return clip.audio, clip.words


def default_exercise_data() -> ExerciseData:
    """Built once per session: offline Whisper-base + random wav2vec2-base (2 layers) on
    :data:`SENTENCE`."""
    if "data" not in _DEFAULT:
        from ctxmix_lite.models.loading import load_model

        audio, _ = synthesize_clip()
        wm, wp = load_model("openai/whisper-base")
        vm, _ = load_model("facebook/wav2vec2-base", pretrained=False, seed=0,
                           config_overrides={"num_hidden_layers": 1})
        _DEFAULT["data"] = exercise_data(whisper_layer_io(wm, wp, audio), wav2vec2_layer_io(vm, audio))
    return _DEFAULT["data"]


# ----------------------------------------------------------------------------------------------
# Checks (the mistakes they recognise: nb01_mistakes)
# ----------------------------------------------------------------------------------------------


def _qk(data: ExerciseData, which: str):
    """Per-head queries and keys ``[H, T, d_h]`` of a real attention block (no scaling)."""
    if which == "encoder":
        w, z = data.w_enc, data.w_enc.norm_attn(data.x_enc)
        a, zq, zk = w.self_attn, z, z
    elif which == "decoder":
        w, z = data.w_dec, data.w_dec.norm_attn(data.x_dec)
        a, zq, zk = w.self_attn, z, z
    else:  # cross: queries from the decoder stream, keys from the encoder output
        w = data.w_dec
        a, zq, zk = w.cross_attn, w.norm_cross(data.x_dec), data.enc_out
    q = L.split_heads(L.linear(zq, a.W_q, a.b_q), a.num_heads)
    k = L.split_heads(L.linear(zk, a.W_k, a.b_k), a.num_heads)
    return q, k


def _with_ref(c, ref):
    c.reference = ref
    return c


def attention_cases(data: ExerciseData) -> list:
    qe, ke = _qk(data, "encoder")
    qd, kd = _qk(data, "decoder")
    qc, kc = _qk(data, "cross")
    return [_with_ref(c, attention_weights) for c in (
        case(qe, ke, label=f"Whisper encoder self-attention, {qe.shape[0]} heads x {qe.shape[1]} frames"),
        case(qd, kd, causal=True, label=f"Whisper decoder self-attention, causal, {qd.shape[1]} tokens"),
        case(qc, kc, label=f"Whisper cross-attention: {qc.shape[1]} tokens -> {kc.shape[1]} frames"),
    )]


def check_attention_weights(fn, data: Optional[ExerciseData] = None, strict=None) -> bool:
    """``attention_weights(q, k, causal=False)`` on real per-head queries/keys of Whisper-base."""
    data = data or default_exercise_data()
    cases = attention_cases(data)
    found = diagnose_mistakes(fn, cases, ATTENTION_MISTAKES, ATTENTION_PROPERTIES)
    generic = {"shape": "A has one row per query and one column per key: [H, Tq, Tk] = "
                        "q @ k.transpose(-1, -2) (the cross-attention case has Tq != Tk).",
               "value": "A = softmax(q k^T / sqrt(d_h)) with the softmax over the keys (last axis)."}
    return check_function(fn, attention_weights, cases, "attention_weights", atol=1e-5, rtol=1e-4,
                          hints=mistake_hints(found, generic), strict=strict, properties=ATTENTION_INVARIANTS)


def mha_cases(data: ExerciseData) -> list:
    de, dd = data.w_enc, data.w_dec
    ze, zd = de.norm_attn(data.x_enc), dd.norm_attn(data.x_dec)
    zc = dd.norm_cross(data.x_dec)
    zp = data.x_post
    return [_with_ref(c, multi_head_attention) for c in (
        case(ze, ze, de.self_attn, label="Whisper encoder self-attention (no key bias: b_k is None)"),
        case(zd, zd, dd.self_attn, causal=True, label="Whisper decoder self-attention, causal"),
        case(zc, data.enc_out, dd.cross_attn, label="Whisper cross-attention (Tq != Tk)"),
        case(zp, zp, data.w_post.self_attn, label="wav2vec2-base self-attention (with a key bias b_k)"),
    )]


def check_multi_head_attention(fn, data: Optional[ExerciseData] = None, strict=None) -> bool:
    """``multi_head_attention(x_q, x_kv, p, causal=False)`` (``p``: a layer's
    :class:`ctxmix_lite.internals.layer.AttentionParams`) on real Whisper-base / wav2vec2-base layers."""
    data = data or default_exercise_data()
    cases = mha_cases(data)
    found = diagnose_mistakes(fn, cases, MHA_MISTAKES)
    generic = {"error": "b_k can be None (Whisper's keys have no bias): add a bias only when it is "
                        "not None. Read the error line above.",
               "shape": "the output has the shape of x_q: [Tq, D].",
               "value": "follow the equations: q, k, v projections (x W^T + b), split into heads, "
                        "softmax(q k^T / sqrt(d_h)) v per head, concatenate, x W_o^T + b_o."}
    return check_function(fn, multi_head_attention, cases, "multi_head_attention", atol=1e-5, rtol=1e-4,
                          hints=mistake_hints(found, generic), strict=strict)


def layer_norm_cases(data: ExerciseData) -> list:
    ne, np_ = data.w_enc.norm_attn, data.w_post.norm_attn
    quiet = 1e-2 * data.x_enc[:50]  # small variance: eps matters
    return [_with_ref(c, layer_norm) for c in (
        case(data.x_enc, ne.gamma, ne.beta, ne.eps, label="Whisper encoder hidden states, eps=1e-5"),
        case(quiet, ne.gamma, ne.beta, 1e-3, label="small-variance input, eps=1e-3 (eps matters)"),
        case(data.x_post[None], np_.gamma, np_.beta, np_.eps, label="a batch [1, T, D] of wav2vec2 states"),
    )]


def check_layer_norm(fn, data: Optional[ExerciseData] = None, strict=None) -> bool:
    """``layer_norm(x, gamma, beta, eps)`` over the last axis, on real hidden states."""
    data = data or default_exercise_data()
    cases = layer_norm_cases(data)
    found = diagnose_mistakes(fn, cases, LN_MISTAKES)
    generic = {"value": "mu and sigma^2 over the last axis (features) of each position, biased "
                        "variance, eps inside the square root, then gamma * x_hat + beta."}
    return check_function(fn, layer_norm, cases, "layer_norm", atol=1e-5, rtol=1e-4,
                          hints=mistake_hints(found, generic), strict=strict)


def check_add_and_norm(fn, data: Optional[ExerciseData] = None, strict=None) -> bool:
    """``add_and_norm(x, sublayer_out, gamma, beta, eps)`` = ``LN(x + sublayer_out)``."""
    data = data or default_exercise_data()
    w = data.w_post
    a = L.multi_head_attention(data.x_post, data.x_post, w.self_attn)
    cases = [_with_ref(case(data.x_post, a, w.norm_attn.gamma, w.norm_attn.beta, w.norm_attn.eps,
                            label="wav2vec2-base layer: input + its self-attention output"), add_and_norm)]
    found = diagnose_mistakes(fn, cases, ADD_NORM_MISTAKES)
    return check_function(fn, add_and_norm, cases, "add_and_norm", atol=1e-5, rtol=1e-4,
                          hints=mistake_hints(found, {"value": "LN(x + sublayer_out) with your layer_norm."}),
                          strict=strict)


def check_feed_forward(fn, data: Optional[ExerciseData] = None, strict=None) -> bool:
    """``feed_forward(x, W1, b1, W2, b2)`` with exact GELU, on a real Whisper FFN block."""
    data = data or default_exercise_data()
    w = data.w_enc
    z = w.norm_attn(data.x_enc)
    h = data.x_enc + L.multi_head_attention(z, z, w.self_attn)
    f = w.ffn
    cases = [_with_ref(case(w.norm_ffn(h), f.W1, f.b1, f.W2, f.b2,
                            label="Whisper encoder feed-forward on its real (normalised) input"), feed_forward),
             _with_ref(case(data.x_post, data.w_post.ffn.W1, data.w_post.ffn.b1, data.w_post.ffn.W2,
                            data.w_post.ffn.b2, label="wav2vec2-base feed-forward"), feed_forward)]
    found = diagnose_mistakes(fn, cases, FFN_MISTAKES)
    generic = {"shape": "W1 is [D_ff, D] and W2 is [D, D_ff] (torch's [out, in]): x @ W1.T, then @ W2.T.",
               "value": "FFN(x) = GELU(x W1^T + b1) W2^T + b2 with the exact (erf) GELU."}
    return check_function(fn, feed_forward, cases, "feed_forward", atol=1e-5, rtol=1e-4,
                          hints=mistake_hints(found, generic), strict=strict)


def check_post_ln_layer(fn, data: Optional[ExerciseData] = None, strict=None) -> bool:
    """``post_ln_layer(x, w)`` on a wav2vec2-base layer, and with Whisper's weights in post-LN order."""
    data = data or default_exercise_data()
    cases = [_with_ref(case(data.x_post, data.w_post, label="wav2vec2-base layer (post-LN)"), post_ln_layer),
             _with_ref(case(data.x_enc[:100], replace(data.w_enc, kind="post_ln"),
                            label="Whisper encoder weights wired post-LN"), post_ln_layer)]
    found = diagnose_mistakes(fn, cases, LAYER_MISTAKES)
    generic = {"value": "h = LN_1(x + MHA(x)); y = LN_2(h + FFN(h)), with w.norm_attn = LN_1 and "
                        "w.norm_ffn = LN_2."}
    return check_function(fn, post_ln_layer, cases, "post_ln_layer", atol=1e-5, rtol=1e-4,
                          hints=mistake_hints(found, generic), strict=strict)


def check_pre_ln_layer(fn, data: Optional[ExerciseData] = None, strict=None) -> bool:
    """``pre_ln_layer(x, w)`` on a real Whisper-base encoder layer, and wav2vec2 weights pre-LN."""
    data = data or default_exercise_data()
    cases = [_with_ref(case(data.x_enc, data.w_enc, label="Whisper-base encoder layer (pre-LN)"), pre_ln_layer),
             _with_ref(case(data.x_post, replace(data.w_post, kind="pre_ln"),
                            label="wav2vec2-base weights wired pre-LN"), pre_ln_layer)]
    found = diagnose_mistakes(fn, cases, LAYER_MISTAKES)
    generic = {"value": "h = x + MHA(LN_1(x)); y = h + FFN(LN_2(h)), with w.norm_attn = LN_1 and "
                        "w.norm_ffn = LN_2."}
    return check_function(fn, pre_ln_layer, cases, "pre_ln_layer", atol=1e-5, rtol=1e-4,
                          hints=mistake_hints(found, generic), strict=strict)


# ----------------------------------------------------------------------------------------------
# Real layers: tables and a figure
# ----------------------------------------------------------------------------------------------


def real_layer_table(records: Sequence[L.LayerIO], model_label: str, float64: bool = True) -> list:
    """:func:`ctxmix_lite.internals.layer.compare_with_transformers` rows, tagged with the model's label and
    ``layer``: the layer's 0-based index within its own stack (Whisper: encoder 0-5, decoder 0-5);
    :func:`print_real_layer_table` prints it 1-based ("layer 1" = the first)."""
    rows, seen = [], {}
    for row in L.compare_with_transformers(records, float64=float64):
        row["layer"] = seen.get(row["layer_type"], 0)  # index within its stack (encoder / decoder)
        seen[row["layer_type"]] = row["layer"] + 1
        rows.append(dict(model=model_label, **row))
    return rows


def print_real_layer_table(rows: Sequence[dict]) -> None:
    """One line per layer: max abs diff, max |out|, scaled diff, float64 distances."""
    head = (f"{'model':<28} {'layer type':<36} {'#':>2} {'max|diff|':>9} {'max|out|':>8} "
            f"{'scaled':>8} {'hf-f64':>8} {'ours-f64':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['model']:<28} {r['layer_type']:<36} {r['layer'] + 1:>2} {r['max_abs_diff']:9.1e} "
              f"{r['max_abs_out']:8.1f} {r['scaled_diff']:8.1e} {r.get('f64_vs_transformers', math.nan):8.1e} "
              f"{r.get('f64_vs_ours', math.nan):8.1e}")


def plot_head_attention(A_head, frame_duration: float = 0.02, words=None, max_time: Optional[float] = None,
                        ax=None, title: Optional[str] = None):
    """One head's attention map ``[T, T]`` with both axes in seconds (frame k covers
    ``[k, k+1) * frame_duration``), word boundaries as dotted lines and word labels on the keys."""
    import matplotlib.pyplot as plt

    A = A_head.detach().cpu().double().numpy() if torch.is_tensor(A_head) else A_head
    n = A.shape[-1]
    if max_time is not None:
        n = min(n, int(math.ceil(max_time / frame_duration)))
        A = A[:n, :n]
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 5.5))
    T = n * frame_duration
    img = ax.imshow(A, extent=(0, T, T, 0), aspect="equal", cmap="viridis", interpolation="nearest")
    ax.set_xlabel("key time j (s)")
    ax.set_ylabel("query time i (s)")
    ax.figure.colorbar(img, ax=ax, pad=0.02, fraction=0.046).set_label("attention weight A[i, j]")
    for w in words or []:
        for t in (w["start"], w["end"]):
            if t <= T:
                ax.axvline(t, color="white", lw=0.5, ls=":", alpha=0.7)
                ax.axhline(t, color="white", lw=0.5, ls=":", alpha=0.7)
    if words:
        sec = ax.secondary_xaxis("top")
        sec.set_xticks([(w["start"] + w["end"]) / 2 for w in words if w["end"] <= T])
        sec.set_xticklabels([w["word"] for w in words if w["end"] <= T], rotation=60, fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


__all__ = [
    "attention_weights", "multi_head_attention", "layer_norm", "add_and_norm", "feed_forward",
    "post_ln_layer", "pre_ln_layer", "ExerciseData", "exercise_data", "default_exercise_data",
    "whisper_layer_io", "wav2vec2_layer_io", "whisper_decoder_ids", "synthesize_clip", "perturb_biases_",
    "check_attention_weights", "check_multi_head_attention", "check_layer_norm", "check_add_and_norm",
    "check_feed_forward", "check_post_ln_layer", "check_pre_ln_layer", "real_layer_table",
    "print_real_layer_table", "plot_head_attention",
]
