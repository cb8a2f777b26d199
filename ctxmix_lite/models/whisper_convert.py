"""The CTranslate2 WhisperSpec -> transformers' ``WhisperForConditionalGeneration``: config and weights.

:func:`convert_ct2` maps every variable of the parsed ``model.bin``
(:mod:`~ctxmix_lite.models.whisper_format`) onto the transformers state dict (float32). The only
non-trivial parts are the fused projections::

    self-attention  linear_0 = [W_q; W_k; W_v]  (rows)  -> q_proj, k_proj, v_proj
    cross-attention linear_0 = W_q,  linear_1 = [W_k; W_v] -> q_proj | k_proj, v_proj
    linear_1 (self) / linear_2 (cross)             -> out_proj
    b_k == 0 is checked (HF's k_proj has no bias: softmax(q.(k + b_k)) = softmax(q.k) per row)

and the tied output projection (alias ``decoder/projection/weight -> decoder/embeddings/weight``).
:func:`whisper_config_from_ct2` reads the ``WhisperConfig`` off the variables' shapes and settings;
:func:`build_model` loads the state dict strictly into an eager, float32 model.

Part of :mod:`ctxmix_lite.models.whisper_offline` (the entry point).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import torch

from .whisper_format import CT2FormatError, OfflineWhisperError, parse_ct2, read_model_bin
from .whisper_tokenizer import ENDOFTEXT, SOT

CT2_GELU = 3  # ctranslate2 ActivationType: RELU 0, GELUTanh 1, Swish 2, GELU 3, GELUSigmoid 4, Tanh 5


def _layer_count(variables: Mapping[str, Any], prefix: str) -> int:
    # "encoder/layer_norm/gamma" shares the "layer_" prefix: only count "layer_<digits>/".
    idx = set()
    for k in variables:
        if k.startswith(prefix + "/layer_"):
            head = k[len(prefix) + 7 :].split("/", 1)[0]
            if head.isdigit():
                idx.add(int(head))
    if idx != set(range(len(idx))):
        raise CT2FormatError(f"{prefix} layers are not numbered 0..n-1: {sorted(idx)}")
    return len(idx)


def _scalar(variables: Mapping[str, np.ndarray], name: str) -> int:
    if name not in variables:
        raise CT2FormatError(f"setting {name} missing from model.bin")
    return int(np.asarray(variables[name]).reshape(()))


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's encoder position table: ``[sin(t * w_k), cos(t * w_k)]``, ``w_k = T^(-k/(C/2-1))``."""
    log_inc = math.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-log_inc * torch.arange(channels // 2, dtype=torch.float64))  # w_k
    t = torch.arange(length, dtype=torch.float64)[:, None] * inv[None, :]  # t * w_k
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1).float()


def whisper_config_from_ct2(variables: Mapping[str, np.ndarray], files: Optional[Mapping[str, Path]] = None):
    """A ``WhisperConfig`` read off the variables' shapes and settings (checked, not assumed).

    For the packaged model: d_model 512, 6 + 6 layers, 8 heads, FFN 2048, vocab 51865, 80 mels,
    1500 encoder / 448 decoder positions, GELU, pre-norm, no embedding scaling.
    """
    from transformers import WhisperConfig

    for name, want in (("decoder/pre_norm", 1), ("decoder/activation", CT2_GELU), ("decoder/alibi", 0),
                       ("decoder/scale_embeddings", 0), ("decoder/start_from_zero_embedding", 0)):
        got = _scalar(variables, name)
        if got != want:
            raise OfflineWhisperError(f"unsupported Whisper variant: {name} = {got}, expected {want}")
    vocab, d_model = variables["decoder/embeddings/weight"].shape
    n_mels = variables["encoder/conv1/weight"].shape[1]
    heads_enc, heads_dec = _scalar(variables, "encoder/num_heads"), _scalar(variables, "decoder/num_heads")
    suppress, begin_suppress = None, [220, ENDOFTEXT]
    if files is not None:
        cfg = json.loads(Path(files["config.json"]).read_text())
        suppress, begin_suppress = list(cfg["suppress_ids"]), list(cfg["suppress_ids_begin"])
    config = WhisperConfig(
        vocab_size=int(vocab),
        num_mel_bins=int(n_mels),
        d_model=int(d_model),
        encoder_layers=_layer_count(variables, "encoder"),
        decoder_layers=_layer_count(variables, "decoder"),
        encoder_attention_heads=heads_enc,
        decoder_attention_heads=heads_dec,
        encoder_ffn_dim=int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(variables["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(variables["decoder/position_encodings/encodings"].shape[0]),
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        pad_token_id=ENDOFTEXT,
        bos_token_id=ENDOFTEXT,
        eos_token_id=ENDOFTEXT,
        decoder_start_token_id=SOT,
        suppress_tokens=suppress,
        begin_suppress_tokens=begin_suppress,
        median_filter_width=7,
        use_cache=True,
    )
    return config


def convert_ct2(path_or_bytes=None, *, check_sinusoids: bool = True) -> Dict[str, torch.Tensor]:
    """CTranslate2 Whisper ``model.bin`` -> float32 state dict of ``WhisperForConditionalGeneration``.

    ``path_or_bytes``: as :func:`read_ct2_model` (None = the installed wheels). Every stored
    variable is used exactly once (an unmapped one raises); ``proj_out.weight`` is the *same*
    tensor as ``model.decoder.embed_tokens.weight`` (tied, from the CT2 alias).
    """
    m = parse_ct2(read_model_bin() if path_or_bytes is None else path_or_bytes)
    if m.spec != "WhisperSpec":
        raise CT2FormatError(f"model.bin holds a {m.spec!r}, not a 'WhisperSpec'")
    V = m.variables
    used = set()
    sd: Dict[str, torch.Tensor] = {}

    def take(name: str) -> torch.Tensor:
        if name not in V:
            raise CT2FormatError(f"variable {name} missing from model.bin")
        arr = V[name]
        if arr.dtype.kind != "f":
            raise OfflineWhisperError(f"{name} is {arr.dtype}, expected a float weight (quantised models are not supported)")
        used.add(name)
        return torch.from_numpy(np.array(arr, dtype=np.float32))  # fp16 -> fp32 (exact), own memory

    def split_rows(t: torch.Tensor, n: int, name: str):
        if t.shape[0] % n:
            raise CT2FormatError(f"{name}: {t.shape[0]} rows cannot be split into {n} equal parts")
        return torch.chunk(t, n, dim=0)

    def copy(ct2: str, hf: str) -> None:  # Linear / LayerNorm / Conv: weights already [out, in, ...]
        for a, b in (("weight", "weight"), ("bias", "bias"), ("gamma", "weight"), ("beta", "bias")):
            if f"{ct2}/{a}" in V:
                sd[f"{hf}.{b}"] = take(f"{ct2}/{a}")

    def fused(ct2: str, hf: str, names: Sequence[str]) -> None:
        """Rows of a fused projection [W_a; W_b; ...] -> one HF Linear per name; k has no bias."""
        ws = split_rows(take(f"{ct2}/weight"), len(names), f"{ct2}/weight")
        bs = split_rows(take(f"{ct2}/bias"), len(names), f"{ct2}/bias")
        for n, w, b in zip(names, ws, bs):
            sd[f"{hf}.{n}.weight"] = w.contiguous()
            if n == "k_proj":
                if torch.count_nonzero(b):
                    raise OfflineWhisperError(
                        f"{ct2}/bias: the key slice is not zero (max |b_k| = {b.abs().max():.3g}); "
                        "HF Whisper's k_proj has no bias, so this conversion would change the model"
                    )
            else:
                sd[f"{hf}.{n}.bias"] = b.contiguous()

    def ffn(ct2: str, hf: str) -> None:
        copy(f"{ct2}/layer_norm", f"{hf}.final_layer_norm")
        copy(f"{ct2}/linear_0", f"{hf}.fc1")
        copy(f"{ct2}/linear_1", f"{hf}.fc2")

    # Encoder: two convolutions, sinusoid positions, pre-norm layers, final layer norm.
    copy("encoder/conv1", "model.encoder.conv1")
    copy("encoder/conv2", "model.encoder.conv2")
    pos = take("encoder/position_encodings/encodings")
    if check_sinusoids:
        ref = sinusoids(*pos.shape)
        err = (pos - ref).abs().max().item()
        if err > 1e-3:  # stored in fp16: |error| <= 2^-11 for values in [-1, 1]
            raise OfflineWhisperError(f"encoder positions are not Whisper's sinusoids (max diff {err:.3g})")
    sd["model.encoder.embed_positions.weight"] = pos
    for i in range(_layer_count(V, "encoder")):
        c, h = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        copy(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
        fused(f"{c}/self_attention/linear_0", f"{h}.self_attn", ("q_proj", "k_proj", "v_proj"))
        copy(f"{c}/self_attention/linear_1", f"{h}.self_attn.out_proj")
        ffn(f"{c}/ffn", h)
    copy("encoder/layer_norm", "model.encoder.layer_norm")

    # Decoder: token embeddings (tied with the output projection), learned positions.
    sd["model.decoder.embed_tokens.weight"] = take("decoder/embeddings/weight")
    sd["model.decoder.embed_positions.weight"] = take("decoder/position_encodings/encodings")
    for i in range(_layer_count(V, "decoder")):
        c, h = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        copy(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
        fused(f"{c}/self_attention/linear_0", f"{h}.self_attn", ("q_proj", "k_proj", "v_proj"))
        copy(f"{c}/self_attention/linear_1", f"{h}.self_attn.out_proj")
        copy(f"{c}/attention/layer_norm", f"{h}.encoder_attn_layer_norm")
        copy(f"{c}/attention/linear_0", f"{h}.encoder_attn.q_proj")
        fused(f"{c}/attention/linear_1", f"{h}.encoder_attn", ("k_proj", "v_proj"))
        copy(f"{c}/attention/linear_2", f"{h}.encoder_attn.out_proj")
        ffn(f"{c}/ffn", h)
    copy("decoder/layer_norm", "model.decoder.layer_norm")

    # Tied output projection: logits = h @ E^T.
    if m.aliases.get("decoder/projection/weight") != "decoder/embeddings/weight":
        raise OfflineWhisperError(
            f"expected the alias decoder/projection/weight -> decoder/embeddings/weight, got {m.aliases}"
        )
    sd["proj_out.weight"] = sd["model.decoder.embed_tokens.weight"]

    leftover = sorted(k for k, v in V.items() if v.ndim > 0 and k not in used)
    if leftover:
        raise OfflineWhisperError(f"{len(leftover)} model.bin variables were not mapped: {leftover[:5]}")
    return sd


def build_model(state_dict: Mapping[str, torch.Tensor], config):
    """``WhisperForConditionalGeneration`` (eager attention, float32, eval) with a strict load."""
    from transformers import WhisperForConditionalGeneration

    with torch.device("meta"):  # no random init: every tensor comes from state_dict
        model = WhisperForConditionalGeneration._from_config(config, attn_implementation="eager", dtype=torch.float32)
    expected = set(model.state_dict())
    missing, unexpected = expected - set(state_dict), set(state_dict) - expected
    if missing or unexpected:
        raise OfflineWhisperError(f"conversion does not match the HF model: missing {sorted(missing)[:5]}, "
                                  f"unexpected {sorted(unexpected)[:5]}")
    model.load_state_dict(dict(state_dict), strict=True, assign=True)
    model.tie_weights()  # proj_out.weight is embed_tokens.weight (same Parameter)
    if model.proj_out.weight is not model.model.decoder.embed_tokens.weight:
        raise OfflineWhisperError("output projection is not tied to the token embeddings")
    model.model.encoder.embed_positions.requires_grad_(False)  # as transformers' own init does
    for n, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.device.type == "meta":
            raise OfflineWhisperError(f"{n} was not loaded")
    return model.eval()

