"""Read every layer's internals from a real speech Transformer in one forward pass.

``capture(model, processor, audio)`` runs the model once with forward hooks on the transformers
modules themselves (no forked modelling code) and returns a :class:`~ctxmix_lite.internals.capture_types.Capture`:
for every layer of every component, the layer input, the attention weights and value vectors per
head, the output projection, the attention output and the layer output, plus two closures:

* ``post(resid, attn_out)`` -- the rest of the layer after attention, run by the model's own
  sub-modules (residual, layer norms, feed-forward; Whisper's decoder self-attention block also
  runs the cross-attention, which is position-wise for fixed encoder states), with the model's
  final layer norm on the last layer where the model's last hidden state includes it;
* ``rerun(positions)`` -- the real transformers layer called again on its recorded inputs with the
  value vectors of ``positions`` zeroed in every head (a hook on ``v_proj``): the reference for
  value zeroing.

Components: ``"encoder"`` (Whisper encoder or wav2vec2/XLSR/HuBERT encoder), ``"decoder"``
(Whisper decoder self-attention, causal) and ``"cross"`` (decoder -> encoder attention). The
decoder is teacher-forced on a transcription (by default the model's own greedy one) after the
prefix ``<|startoftranscript|><|fr|><|transcribe|><|notimestamps|>``.

Only the eager attention path exposes weights and values: anything else is refused
(:class:`~ctxmix_lite.models.AttentionImplementationError`), and every captured tensor is
checked (shape, rows summing to 1) before it is returned.
"""
from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch

from ctxmix_lite.corpus.audio import SAMPLE_RATE, check_duration, duration, load_audio, wav2vec2_num_frames
from ctxmix_lite.course.options import Options
from .capture_types import COMPONENTS, Capture, FeedForwardParts, LayerCapture
from .layer_blocks import split_heads
from ctxmix_lite.models.loading import check_analysis_state, ensure_eager, model_family

WHISPER_MAX_SECONDS = 30.0
WHISPER_FRAMES = 1500


class CaptureError(RuntimeError):
    """The forward pass did not deliver what a measure needs (never returned silently)."""


# ----------------------------------------------------------------------------------------------
# devices: the model runs where its weights are; what is returned lives on the CPU
# ----------------------------------------------------------------------------------------------
def model_device(model) -> torch.device:
    """The device of the model's weights (``next(model.parameters()).device``; CPU without any)."""
    p = next(model.parameters(), None) if hasattr(model, "parameters") else None
    return p.device if p is not None else torch.device("cpu")


def to_device(x, device):
    """``x`` (a tensor, or a dict / list / tuple / ``BatchFeature`` of them) on ``device``; anything
    else unchanged. A tensor already there is returned as is (no copy: CPU runs are unchanged)."""
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, Mapping):  # a dict, transformers' BatchFeature (returned as a dict)
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device) for v in x)
    return x


def on_device(fn: Callable, device) -> Callable:
    """``fn`` (which runs model modules on ``device``) taking and returning tensors where the caller
    keeps them: its tensor arguments go to ``device``, its result comes back to the first tensor
    argument's device. On the CPU it is ``fn`` itself."""
    device = torch.device(device)
    if device.type == "cpu":
        return fn

    def run(*args):
        home = next((a.device for a in args if isinstance(a, torch.Tensor)), torch.device("cpu"))
        return to_device(fn(*(to_device(a, device) for a in args)), home)

    run.__wrapped__ = fn
    return run


def _cpu(t):
    return None if t is None else t.cpu()


def output_projection(attn) -> dict:
    """``{"W_O", "b_O"}`` of an attention block's ``out_proj`` on the CPU (``b_O`` None without bias)."""
    b = attn.out_proj.bias
    return {"W_O": attn.out_proj.weight.detach().cpu(), "b_O": None if b is None else b.detach().cpu()}


# ----------------------------------------------------------------------------------------------
# model anatomy
# ----------------------------------------------------------------------------------------------
def whisper_parts(model):
    """``(encoder, decoder)`` of a Whisper model (:mod:`ctxmix_lite.models.architectures`)."""
    from ctxmix_lite.models.architectures import layer_stack

    return layer_stack(model, "encoder"), layer_stack(model, "decoder")


def _wav2vec2_encoder(model):
    from ctxmix_lite.models.architectures import layer_stack

    try:
        encoder = layer_stack(model, "encoder")
    except ValueError:
        encoder = None
    if encoder is None or not hasattr(encoder, "layers"):
        raise CaptureError(f"cannot find the transformer encoder of {type(model).__name__}")
    return encoder


def _is_stable(encoder) -> bool:
    return "StableLayerNorm" in type(encoder).__name__


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``[1, T, H*dh]`` -> ``[H, T, dh]`` (contiguous)."""
    return split_heads(x[0], num_heads).contiguous()


def _zero_hook(positions: Sequence[int]):
    idx = torch.as_tensor(list(positions), dtype=torch.long)

    def hook(module, args, output):
        out = output.clone()
        out[:, idx.to(out.device), :] = 0.0  # v_j = 0 in every head (after the projection, bias included)
        return out

    return hook


class Recorder:
    """Forward hooks that record, per attention block, what a LayerCapture needs: ``layer()`` the
    layer's inputs (``args``, ``kwargs``) and output (``layer_out``), ``attention()`` the block's
    output and weights and its ``q_proj`` / ``k_proj`` / ``v_proj`` outputs (used by :func:`capture`
    and the study's rows capture)."""

    def __init__(self):
        self.handles = []
        self.store: dict = {}

    def _put(self, key, name, value):
        self.store.setdefault(key, {})[name] = value

    def layer(self, key, layer_module):
        def pre(module, args, kwargs):
            self._put(key, "args", args)
            self._put(key, "kwargs", dict(kwargs))

        def post(module, args, kwargs, output):
            out = output[0] if isinstance(output, tuple) else output
            self._put(key, "layer_out", out.detach())

        self.handles.append(layer_module.register_forward_pre_hook(pre, with_kwargs=True))
        self.handles.append(layer_module.register_forward_hook(post, with_kwargs=True))

    def attention(self, key, attn_module):
        def hook(module, args, kwargs, output):
            if not isinstance(output, tuple) or len(output) < 2:
                raise CaptureError(
                    f"{type(module).__name__} returned {type(output).__name__}; expected "
                    "(attn_output, attn_weights): this transformers version is not supported"
                )
            self._put(key, "attn_out", output[0].detach())
            self._put(key, "weights", None if output[1] is None else output[1].detach())

        self.handles.append(attn_module.register_forward_hook(hook, with_kwargs=True))
        for proj in ("q_proj", "k_proj", "v_proj"):
            self.handles.append(
                getattr(attn_module, proj).register_forward_hook(
                    lambda m, a, o, _p=proj: self._put(key, _p, o.detach())
                )
            )

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []


@contextlib.contextmanager
def hooked(recorder: Recorder):
    """``with hooked(rec):`` the recorder's hooks are removed on the way out, whatever happens."""
    try:
        yield recorder
    finally:
        recorder.remove()


# ----------------------------------------------------------------------------------------------
# the position-wise rest of each layer type, run by the model's own sub-modules
# ----------------------------------------------------------------------------------------------
def _as_batch(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(0) if x.dim() == 2 else x


def whisper_ffn(layer, h: torch.Tensor) -> torch.Tensor:
    """The feed-forward block of a Whisper layer (encoder, or decoder after its cross-attention),
    pre-norm with its residual: ``h + fc2(act(fc1(final_layer_norm(h))))``."""
    return h + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(h))))


def whisper_decoder_rest(layer, h: torch.Tensor, cross_attention: Callable, final_norm=None) -> torch.Tensor:
    """The rest of a Whisper decoder layer after its self-attention, for fixed encoder states
    (position-wise): ``h`` is ``h1 = x + SelfAttn(LN1(x))``; ``h2 = h1 + CrossAttn(LN2(h1))``;
    ``out = h2 + FFN(LN3(h2))`` (+ ``final_norm``). ``cross_attention(LN2(h1))`` is the
    cross-attention output: the model's own module on the encoder states (:func:`capture`) or the
    rows capture's attention over the keys / values recorded in its forward pass. Any leading
    shape (``[N, D]`` or ``[1, N, D]``)."""
    h = h + cross_attention(layer.encoder_attn_layer_norm(h))
    out = whisper_ffn(layer, h)
    return out if final_norm is None else final_norm(out)


def post_whisper_ffn(layer, final_norm):
    """``post`` of a Whisper encoder layer, and of a decoder layer's cross-attention block (the same
    computation): ``h = x + Attn(...)``; ``out = h + FFN(LN(h))`` (+ the stack's final norm on its
    last layer), by the layer's own modules."""
    @torch.no_grad()
    def post(resid, attn_out):
        out = whisper_ffn(layer, _as_batch(resid + attn_out))
        if final_norm is not None:
            out = final_norm(out)  # the encoder's / decoder's last layer norm
        return out[0]

    return post


def _post_whisper_decoder_self(layer, enc_states, final_norm):
    def cross(x):  # the model's cross-attention module on the encoder states
        return layer.encoder_attn(x, key_value_states=enc_states)[0]

    @torch.no_grad()
    def post(resid, attn_out):
        return whisper_decoder_rest(layer, _as_batch(resid + attn_out), cross, final_norm)[0]

    return post


def _post_w2v_postln(layer):
    @torch.no_grad()
    def post(resid, attn_out):
        h = layer.layer_norm(_as_batch(resid + attn_out))  # h = LN1(x + Attn(x))
        return layer.final_layer_norm(h + layer.feed_forward(h))[0]  # out = LN2(h + FFN(h))

    return post


def _post_w2v_stable(layer, final_norm):
    @torch.no_grad()
    def post(resid, attn_out):
        h = _as_batch(resid + attn_out)  # h = x + Attn(LN1(x))
        out = h + layer.feed_forward(layer.final_layer_norm(h))  # out = h + FFN(LN2(h))
        if getattr(layer, "adapter_layer", None) is not None:
            out = out + layer.adapter_layer(out)
        if final_norm is not None:
            out = final_norm(out)  # the encoder's layer norm after the last layer
        return out[0]

    return post


def _usable(*modules) -> bool:
    """Modules in eval mode with float32 weights (dropout off, no fp16 clamping)."""
    return all(not m.training for m in modules if isinstance(m, torch.nn.Module)) and all(
        p.dtype == torch.float32 for m in modules if isinstance(m, torch.nn.Module) for p in m.parameters())


def whisper_ffn_parts(layer, final_norm=None):
    """:class:`FeedForwardParts` of a Whisper encoder layer or of the block after a decoder layer's
    cross-attention: ``out = h + fc2(act(fc1(final_layer_norm(h))))`` (+ the final norm)."""
    if not _usable(layer, final_norm):  # the layer holds its norm, fc1 and fc2
        return None
    return FeedForwardParts(layer.final_layer_norm, layer.fc1, layer.activation_fn, layer.fc2, False,
                            (final_norm,) if final_norm is not None else ())


def wav2vec2_ffn_parts(layer, stable: bool, final_norm=None):
    """:class:`FeedForwardParts` of a wav2vec2 / XLSR / HuBERT encoder layer (None with an adapter)."""
    ff = layer.feed_forward
    if getattr(layer, "adapter_layer", None) is not None or not _usable(layer, final_norm):
        return None
    if stable:  # out = h + FFN(LN2(h)) (+ the encoder's final norm)
        return FeedForwardParts(layer.final_layer_norm, ff.intermediate_dense, ff.intermediate_act_fn,
                                ff.output_dense, False, (final_norm,) if final_norm is not None else ())
    # h = LN1(x + attn); out = LN2(h + FFN(h))
    return FeedForwardParts(layer.layer_norm, ff.intermediate_dense, ff.intermediate_act_fn, ff.output_dense,
                            True, (layer.final_layer_norm,))


def _make_rerun(layer_module, v_proj, args, kwargs, final_norm) -> Callable:
    def rerun(positions: Sequence[int]) -> torch.Tensor:
        handle = v_proj.register_forward_hook(_zero_hook(positions))
        try:
            with torch.no_grad():
                out = layer_module(*args, **kwargs)
        finally:
            handle.remove()
        out = out[0] if isinstance(out, tuple) else out
        if final_norm is not None:
            with torch.no_grad():
                out = final_norm(out)
        return out[0].cpu()  # the layer ran where the model is; the capture lives on the CPU

    return rerun


# ----------------------------------------------------------------------------------------------
def _check(cap: LayerCapture, model_name: str):
    where = f"{model_name} {cap.component} layer {cap.layer}"
    w = cap.weights
    if w is None or w.numel() == 0:
        raise CaptureError(f"{where}: no attention weights were returned (non-eager attention?)")
    H, Tq, Tk = w.shape
    if cap.values.shape[:2] != (H, Tk):
        raise CaptureError(f"{where}: values {tuple(cap.values.shape)} do not match weights {tuple(w.shape)}")
    sums = w.sum(-1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
        raise CaptureError(f"{where}: attention rows do not sum to 1 (max error {float((sums - 1).abs().max()):.2e})")
    if not torch.isfinite(cap.out).all():
        raise CaptureError(f"{where}: the layer output contains NaN/inf")


def _build(key, rec, component, layer_idx, layer_module, attn_module, post, final_norm, causal, ffn=None):
    """One LayerCapture, on the CPU whatever the model's device (``post`` and ``rerun`` run the
    model's modules where they are and return to the CPU; ``ffn`` only for a model on the CPU, as
    the factored value zeroing multiplies its weights with the captured tensors)."""
    s = rec.store.get(key)
    if s is None or "weights" not in s:
        raise CaptureError(f"{component} layer {layer_idx} was not run by the forward pass")
    H = attn_module.num_heads
    if component == "cross":
        resid = s["args"][0][0] if s["args"] else s["kwargs"]["hidden_states"][0]
        # the residual stream entering the cross-attention block: x + SelfAttn(LN1(x))
        resid = rec.store[("decoder", layer_idx)]["attn_out"][0] + resid
    else:
        resid = (s["args"][0] if s["args"] else s["kwargs"]["hidden_states"])[0]
    out = s["layer_out"]
    if final_norm is not None:
        with torch.no_grad():
            out = final_norm(out)
    device = out.device
    cap = LayerCapture(
        component=component,
        layer=layer_idx,
        weights=_cpu(s["weights"][0].float()),
        values=_cpu(_heads(s["v_proj"], H)),
        **output_projection(attn_module),
        resid=_cpu(resid.detach()),
        attn_out=_cpu(s["attn_out"][0]),
        out=_cpu(out[0].detach()),
        post=on_device(post, device),
        rerun=_make_rerun(layer_module, attn_module.v_proj, s["args"], s["kwargs"], final_norm),
        causal=causal,
        final_norm_applied=final_norm is not None,
        queries=_cpu(_heads(s["q_proj"], H)),
        keys=_cpu(_heads(s["k_proj"], H)),
        ffn=ffn if device.type == "cpu" else None,
    )
    return cap


def _want(components, available):
    if components is None:
        return list(available)
    if isinstance(components, str):
        components = [components]
    bad = [c for c in components if c not in available]
    if bad:
        raise ValueError(f"unknown component(s) {bad}; this model has {list(available)}")
    return list(components)


# ----------------------------------------------------------------------------------------------
# Whisper
# ----------------------------------------------------------------------------------------------
def whisper_prefix_ids(processor, language: str = "fr", task: str = "transcribe") -> list[int]:
    tok = processor.tokenizer
    names = ["<|startoftranscript|>", f"<|{language}|>", f"<|{task}|>", "<|notimestamps|>"]
    ids = tok.convert_tokens_to_ids(names)
    if any(i is None or i == tok.unk_token_id for i in ids):
        raise ValueError(f"the tokenizer does not know one of {names} (language {language!r}?)")
    return list(ids)


def whisper_features(processor, audio: np.ndarray) -> torch.Tensor:
    check_duration(audio, WHISPER_MAX_SECONDS, "Whisper")
    feats = processor.feature_extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt")
    return feats.input_features.float()


def transcribe(model, processor, audio, language: str = "fr", task: str = "transcribe", sampling_rate=None):
    """Greedy transcription with forced language and task. Returns ``(text, token_ids)`` where
    ``token_ids`` are the text tokens only (no prefix, no timestamps, no end-of-text)."""
    if model_family(model) != "whisper":
        raise ValueError("transcribe() is for Whisper models")
    check_analysis_state(model)
    audio = load_audio(audio, sampling_rate)
    feats = whisper_features(processor, audio).to(model_device(model))
    with torch.no_grad():
        seq = model.generate(feats, language=language, task=task, do_sample=False, num_beams=1)
    seq = seq.sequences if hasattr(seq, "sequences") else seq
    eot = processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    ids = [int(t) for t in seq[0].tolist() if int(t) < eot]
    text = processor.tokenizer.decode(ids, skip_special_tokens=True).strip()
    return text, ids


def _text_ids(processor, text: str) -> list[int]:
    text = text if text.startswith(" ") else " " + text  # Whisper's own transcripts start with a space
    return list(processor.tokenizer(text, add_special_tokens=False).input_ids)


def _capture_whisper(model, processor, audio, transcription, decoder_input_ids, components, language, task, name):
    want = _want(components, COMPONENTS)
    device = model_device(model)
    feats = whisper_features(processor, audio).to(device)
    encoder, decoder = whisper_parts(model)
    need_decoder = any(c in want for c in ("decoder", "cross"))
    prefix = whisper_prefix_ids(processor, language, task)
    text_ids = None
    if need_decoder:
        if decoder_input_ids is not None:
            ids = [int(i) for i in (decoder_input_ids.tolist() if hasattr(decoder_input_ids, "tolist") else decoder_input_ids)]
            text_ids = ids[len(prefix):] if ids[: len(prefix)] == prefix else ids
        elif transcription is not None:
            text_ids = _text_ids(processor, transcription)
        else:
            transcription, text_ids = transcribe(model, processor, audio, language, task, sampling_rate=SAMPLE_RATE)
        if len(text_ids) == 0:
            raise ValueError("the transcription is empty: nothing to teacher-force the decoder on")
        max_len = model.config.max_target_positions
        if len(prefix) + len(text_ids) > max_len:
            raise ValueError(f"the transcription has {len(text_ids)} tokens; Whisper takes at most {max_len - len(prefix)}")
    rec = Recorder()
    n_enc, n_dec = len(encoder.layers), len(decoder.layers)
    with hooked(rec):
        for i, layer in enumerate(encoder.layers):
            rec.layer(("encoder", i), layer)
            rec.attention(("encoder", i), layer.self_attn)
        if need_decoder:
            for i, layer in enumerate(decoder.layers):
                rec.layer(("decoder", i), layer)
                rec.layer(("cross", i), layer)
                rec.attention(("decoder", i), layer.self_attn)
                rec.attention(("cross", i), layer.encoder_attn)
        with torch.no_grad():
            if need_decoder:
                dec_ids = torch.tensor([prefix + text_ids], device=device)
                enc = encoder(feats).last_hidden_state
                decoder(input_ids=dec_ids, encoder_hidden_states=enc, use_cache=False)
            else:
                enc = encoder(feats).last_hidden_state
    comps = {}
    if "encoder" in want:
        comps["encoder"] = [
            _build(("encoder", i), rec, "encoder", i, layer, layer.self_attn,
                   post_whisper_ffn(layer, encoder.layer_norm if i == n_enc - 1 else None),
                   encoder.layer_norm if i == n_enc - 1 else None, False,
                   whisper_ffn_parts(layer, encoder.layer_norm if i == n_enc - 1 else None))
            for i, layer in enumerate(encoder.layers)
        ]
    for comp in ("decoder", "cross"):
        if comp not in want:
            continue
        caps = []
        for i, layer in enumerate(decoder.layers):
            fn = decoder.layer_norm if i == n_dec - 1 else None
            if comp == "decoder":
                post, attn = _post_whisper_decoder_self(layer, enc, fn), layer.self_attn
            else:
                post, attn = post_whisper_ffn(layer, fn), layer.encoder_attn
            ffn = whisper_ffn_parts(layer, fn) if comp == "cross" else None  # self: cross-attn follows
            caps.append(_build((comp, i), rec, comp, i, layer, attn, post, fn, comp == "decoder", ffn))
        comps[comp] = caps
    tok = processor.tokenizer
    all_ids = prefix + (text_ids or [])
    return Capture(
        model_name=name,
        family="whisper",
        components=comps,
        n_frames=WHISPER_FRAMES,
        frame_duration=WHISPER_MAX_SECONDS / WHISPER_FRAMES,
        window=WHISPER_MAX_SECONDS,
        audio_duration=duration(audio),
        decoder_tokens=all_ids if need_decoder else None,
        decoder_token_strings=[tok.decode([t]) for t in all_ids] if need_decoder else None,
        prefix_length=len(prefix),
        transcription=transcription,
        embeddings={"encoder_out": _cpu(enc[0])},
    )


# ----------------------------------------------------------------------------------------------
# wav2vec2 / XLSR / HuBERT
# ----------------------------------------------------------------------------------------------
def _capture_wav2vec2(model, processor, audio, components, name):
    _want(components, ("encoder",))
    wav2vec2_num_frames(len(audio), model.config.conv_kernel, model.config.conv_stride)  # too short: AudioError
    fe = getattr(processor, "feature_extractor", processor)
    inputs = fe(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt")
    encoder = _wav2vec2_encoder(model)
    stable = _is_stable(encoder)
    n = len(encoder.layers)
    rec = Recorder()
    with hooked(rec):
        for i, layer in enumerate(encoder.layers):
            rec.layer(("encoder", i), layer)
            rec.attention(("encoder", i), layer.attention)
        with torch.no_grad():
            kw = {"input_values": inputs.input_values.float()}
            if "attention_mask" in inputs:
                kw["attention_mask"] = inputs.attention_mask
            model(**to_device(kw, model_device(model)))
    caps = []
    for i, layer in enumerate(encoder.layers):
        fn = encoder.layer_norm if (stable and i == n - 1) else None
        post = _post_w2v_stable(layer, fn) if stable else _post_w2v_postln(layer)
        caps.append(_build(("encoder", i), rec, "encoder", i, layer, layer.attention, post, fn, False,
                           wav2vec2_ffn_parts(layer, stable, fn)))
    T = caps[0].weights.shape[-1]
    c = model.config
    expected = wav2vec2_num_frames(len(audio), c.conv_kernel, c.conv_stride)
    if T != expected:
        raise CaptureError(f"encoder has {T} frames but the feature encoder should give {expected}")
    d = duration(audio)
    return Capture(
        model_name=name,
        family="wav2vec2",
        components={"encoder": caps},
        n_frames=T,
        frame_duration=d / T,
        window=d,
        audio_duration=d,
    )


# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CaptureOptions(Options):
    """The settings of :func:`capture` (its defaults live here only).

    components: subset of ``("encoder", "decoder", "cross")`` (None: all the model has; one name
        may be given as a string).
    language, task: the Whisper decoder prefix ``<|startoftranscript|><|language|><|task|><|notimestamps|>``.
    sampling_rate: the rate of an ``audio`` array (None for a path or a datasets audio dict);
        resampled to 16 kHz mono.
    """

    components: Optional[Union[str, Sequence[str]]] = None
    language: str = "fr"
    task: str = "transcribe"
    sampling_rate: Optional[int] = None


def capture(model, processor, audio, transcription: str | None = None, decoder_input_ids=None, *,
            options: Optional[CaptureOptions] = None, **settings) -> Capture:
    """One eager forward pass with hooks; every layer of every requested component.

    audio: path, array (+ ``sampling_rate``) or datasets audio dict; resampled to 16 kHz mono.
    transcription / decoder_input_ids: what the Whisper decoder is teacher-forced on (text tokens,
        with or without the prefix); both None -> the model's own greedy transcription.
    settings: the fields of :class:`CaptureOptions` as keywords (``components``, ``language``,
        ``task``, ``sampling_rate``), or ``options=CaptureOptions(...)``.
    """
    o = CaptureOptions.resolve(options, settings, where="capture")
    family = model_family(model)
    ensure_eager(model)
    check_analysis_state(model)  # every submodule in eval mode, float32 weights
    audio = load_audio(audio, o.sampling_rate)
    name = getattr(model.config, "_name_or_path", "") or type(model).__name__
    if family == "whisper":
        cap = _capture_whisper(model, processor, audio, transcription, decoder_input_ids, o.components, o.language,
                               o.task, name)
    else:
        cap = _capture_wav2vec2(model, processor, audio, o.components, name)
    for layers in cap.components.values():
        for lc in layers:
            _check(lc, name)
    return cap


def encoder_frames(model, audio) -> tuple[int, float]:
    """``(n_frames, window_seconds)`` of the encoder for this clip, without running the model."""
    audio = load_audio(audio, SAMPLE_RATE) if not isinstance(audio, np.ndarray) else audio
    if model_family(model) == "whisper":
        return WHISPER_FRAMES, WHISPER_MAX_SECONDS
    c = model.config
    return wav2vec2_num_frames(len(audio), c.conv_kernel, c.conv_stride), duration(audio)
