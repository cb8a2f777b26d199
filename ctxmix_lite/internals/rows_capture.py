"""The rows-only Whisper capture of the study: one forward pass with the model's own kernel, the rows the study reads recomputed with the eager formula and verified.

Part of the homophony study (:mod:`ctxmix_lite.study`)."""
from __future__ import annotations

import contextlib
from typing import Optional, Sequence

import numpy as np
import torch

from ctxmix_lite.internals.capture_types import LayerCapture
from ctxmix_lite.internals.layer_blocks import merge_heads, split_heads


# ================================================================================================
# attention implementation switch and the rows-only Whisper capture
# ================================================================================================
@contextlib.contextmanager
def attention_implementation(model, impl: str):
    """Temporarily run ``model`` with another attention kernel (e.g. ``"sdpa"`` for a plain forward
    or generation, where no weights are read), restoring the previous one afterwards."""
    old = getattr(model.config, "_attn_implementation", None) or "eager"
    if old == impl:
        yield model
        return
    model.set_attn_implementation(impl)
    try:
        yield model
    finally:
        model.set_attn_implementation(old)


def _heads(x: torch.Tensor, H: int) -> torch.Tensor:
    """``[T, H*dh]`` -> ``[H, T, dh]`` (contiguous)."""
    return split_heads(x, H).contiguous()


def _no_rerun(positions):
    raise NotImplementedError(
        "a rows-only capture has no reference re-run; use ctxmix_lite.internals.capture.capture() for "
        "method='reference'"
    )


def _softmax_scores(q: torch.Tensor, k: torch.Tensor, query_pos=None) -> torch.Tensor:
    """``softmax(q_i k_j)`` per head ``[H, R, Tk]`` from scaled queries ``[H, R, dh]`` and keys
    ``[H, Tk, dh]``. ``query_pos``: the rows' positions for a causal mask (keys after the query
    get probability 0)."""
    scores = torch.matmul(q, k.transpose(1, 2))  # [H, R, Tk]
    if query_pos is not None:
        qp = torch.as_tensor(query_pos)[:, None]
        future = torch.arange(k.shape[1])[None, :] > qp  # j > i
        scores = scores.masked_fill(future[None], float("-inf"))
    return torch.softmax(scores, dim=-1)


def _eager_rows(q_rows: torch.Tensor, k: torch.Tensor, scaling: float, H: int, query_pos=None) -> torch.Tensor:
    """Eager attention weights of some query rows: ``softmax((q_i * s) K^T)`` per head ``[H, R, Tk]``
    (Whisper scales the query projection before the product, as transformers does)."""
    return _softmax_scores(_heads(q_rows * scaling, H), _heads(k, H), query_pos)


def _decoder_self_post(layer, k_enc: torch.Tensor, v_enc: torch.Tensor, final_norm):
    """``post`` of a Whisper decoder layer's self-attention block:
    :func:`~ctxmix_lite.internals.capture.whisper_decoder_rest` (the one implementation of the
    rest of the layer), its cross-attention over the keys / values recorded in the forward pass
    (``k_enc``, ``v_enc`` ``[Tk, D]``) instead of projecting 1,500 encoder states again per call.
    Same numbers as :func:`ctxmix_lite.internals.capture.capture`'s ``post`` (tested)."""
    from ctxmix_lite.internals.capture import whisper_decoder_rest

    ca = layer.encoder_attn
    H = ca.num_heads
    kh, vh = _heads(k_enc, H), _heads(v_enc, H)  # [H, Tk, dh]

    def cross(x):  # x = LN2(h1) [N, D]
        a = _softmax_scores(_heads(ca.q_proj(x) * ca.scaling, H), kh)  # [H, N, Tk]
        return ca.out_proj(merge_heads(torch.matmul(a, vh)))

    def post(resid, attn_out):
        return whisper_decoder_rest(layer, resid + attn_out, cross, final_norm)

    return post


def _rows_record(s: dict, q_rows=None) -> dict:
    """What the rows capture reads of one :class:`~ctxmix_lite.internals.capture.Recorder` entry
    (batch 0): the attention block's ``attn_out``, ``q`` (only the rows ``q_rows``), ``k``, ``v``,
    and for a layer the input ``in`` and output ``out``."""
    out = {"attn_out": s["attn_out"][0], "k": s["k_proj"][0], "v": s["v_proj"][0],
           "q": s["q_proj"][0] if q_rows is None else s["q_proj"][0, q_rows]}
    if "args" in s:
        out["in"] = (s["args"][0] if s["args"] else s["kwargs"]["hidden_states"])[0].detach()
        out["out"] = s["layer_out"][0]
    return out


def whisper_rows_capture(model, processor, audio: np.ndarray, decoder_ids: Optional[Sequence[int]],
                         encoder_rows: Sequence[int], attn_implementation: str = "sdpa"):
    """One forward pass of a Whisper model (its default attention kernel) with hooks; returns
    ``{"encoder": [LayerCapture], "decoder": [...], "cross": [...], "encoder_hidden": [L+1, R, D],
    "decoder_hidden": [L+1, T, D]}``.

    Encoder captures hold only the query rows ``encoder_rows`` (``weights [H, R, 1500]``, ``resid``,
    ``attn_out``, ``out`` ``[R, D]``); values, ``W_O`` and ``post`` are those of the full layer, so
    :func:`~ctxmix_lite.measures.attention_norm.attention_norm` and the fast
    :func:`~ctxmix_lite.measures.value_zeroing.value_zeroing` give exactly the rows of the full matrices.
    Decoder and cross-attention captures hold every decoder position (a few dozen). Weights are
    recomputed from the recorded queries and keys with the eager formula; ``rerun`` is not
    available (use :func:`ctxmix_lite.internals.capture.capture` for the reference loop).

    ``attn_implementation``: the kernel the forward pass runs with (default ``"sdpa"``, the
    transformers default; no weights are read from it), restored afterwards. Every capture is
    then verified (:func:`verify_recomputed_weights`): the weights recomputed from q and k must
    rebuild the kernel's own attention output row by row, else a ``CaptureError`` is raised -- the
    weights the measures read are provably the ones the forward pass applied.
    """
    from ctxmix_lite.internals.capture import (
        Recorder,
        hooked,
        output_projection,
        post_whisper_ffn,
        whisper_parts,
        model_device,
        on_device,
        whisper_features,
        whisper_ffn_parts,
    )

    from ctxmix_lite.models.loading import check_analysis_state

    check_analysis_state(model)  # eval mode everywhere, float32
    encoder, decoder = whisper_parts(model)
    rows = torch.as_tensor(list(encoder_rows), dtype=torch.long)
    if rows.numel() == 0:
        raise ValueError("encoder_rows is empty")
    dev = model_device(model)  # the model runs there; the captures are returned on the CPU
    feats = whisper_features(processor, audio).to(dev)
    rec = Recorder()
    for i, layer in enumerate(encoder.layers):
        rec.layer(("encoder", i), layer)
        rec.attention(("encoder", i), layer.self_attn)
    need_dec = decoder_ids is not None
    if need_dec:
        for i, layer in enumerate(decoder.layers):
            rec.layer(("decoder", i), layer)
            rec.attention(("decoder", i), layer.self_attn)
            rec.attention(("cross", i), layer.encoder_attn)
    with hooked(rec), torch.no_grad(), attention_implementation(model, attn_implementation):
        enc = encoder(feats).last_hidden_state
        if need_dec:
            decoder(input_ids=torch.tensor([list(decoder_ids)], device=dev), encoder_hidden_states=enc, use_cache=False)
    # as recorded (batch 0), on the model's device (the cross-attention keys / values for post)
    store = {key: _rows_record(s, rows if key[0] == "encoder" else None) for key, s in rec.store.items()}
    on_model = store
    if dev.type != "cpu":
        store = {k: {n: v.cpu() for n, v in d.items()} for k, d in store.items()}

    out: dict = {}
    n_enc, n_dec = len(encoder.layers), len(decoder.layers)
    caps, hidden = [], []
    with torch.no_grad():
        for i, layer in enumerate(encoder.layers):
            s = store[("encoder", i)]
            attn = layer.self_attn
            fn = encoder.layer_norm if i == n_enc - 1 else None
            lo = s["out"][rows]
            if fn is not None:
                lo = on_device(fn, dev)(lo)
            if i == 0:
                hidden.append(s["in"][rows])
            hidden.append(lo)
            caps.append(LayerCapture(
                component="encoder", layer=i,
                weights=_eager_rows(s["q"], s["k"], attn.scaling, attn.num_heads),
                values=_heads(s["v"], attn.num_heads),
                **output_projection(attn),
                resid=s["in"][rows], attn_out=s["attn_out"][rows], out=lo,
                post=on_device(post_whisper_ffn(layer, fn), dev), rerun=_no_rerun,
                causal=False, final_norm_applied=fn is not None, ffn=whisper_ffn_parts(layer, fn) if dev.type == "cpu" else None,
            ))
        out["encoder"] = caps
        out["encoder_hidden"] = torch.stack(hidden)
        if need_dec:
            dcaps, ccaps, dhidden = [], [], []
            T = len(decoder_ids)
            for i, layer in enumerate(decoder.layers):
                sd, sc = store[("decoder", i)], store[("cross", i)]
                fn = decoder.layer_norm if i == n_dec - 1 else None
                lo = sd["out"] if fn is None else on_device(fn, dev)(sd["out"])
                if i == 0:
                    dhidden.append(sd["in"])
                dhidden.append(lo)
                sa, ca = layer.self_attn, layer.encoder_attn
                dcaps.append(LayerCapture(
                    component="decoder", layer=i,
                    weights=_eager_rows(sd["q"], sd["k"], sa.scaling, sa.num_heads, query_pos=torch.arange(T)),
                    values=_heads(sd["v"], sa.num_heads), **output_projection(sa),
                    resid=sd["in"], attn_out=sd["attn_out"], out=lo,
                    post=on_device(_decoder_self_post(layer, on_model[("cross", i)]["k"],
                                                      on_model[("cross", i)]["v"], fn), dev), rerun=_no_rerun,
                    causal=True, final_norm_applied=fn is not None,
                ))
                ccaps.append(LayerCapture(
                    component="cross", layer=i,
                    weights=_eager_rows(sc["q"], sc["k"], ca.scaling, ca.num_heads),
                    values=_heads(sc["v"], ca.num_heads), **output_projection(ca),
                    resid=sd["in"] + sd["attn_out"],  # x + SelfAttn(LN1(x)) enters the cross block
                    attn_out=sc["attn_out"], out=lo,
                    post=on_device(post_whisper_ffn(layer, fn), dev), rerun=_no_rerun,
                    causal=False, final_norm_applied=fn is not None, ffn=whisper_ffn_parts(layer, fn) if dev.type == "cpu" else None,
                ))
            out["decoder"], out["cross"] = dcaps, ccaps
            out["decoder_hidden"] = torch.stack(dhidden)
        for comp in ("encoder", "decoder", "cross"):
            for lc in out.get(comp, []):
                verify_recomputed_weights(lc, attn_implementation)
    return out


#: how far the attention output rebuilt from the recomputed weights may be from the kernel's own
#: output, relative to that output's largest entry (float32 kernels differ by ~1e-6)
RECOMPUTE_RTOL = 1e-4


def verify_recomputed_weights(lc: LayerCapture, kernel: str = "sdpa") -> float:
    """Check that the weights recomputed with the eager formula are the ones the attention kernel
    applied: ``(sum_j alpha_ij^h v_j^h) W_O + b_O`` must give back the block output the forward
    pass produced, for every captured row. Returns the relative error; raises
    :class:`ctxmix_lite.internals.capture.CaptureError` when it exceeds :data:`RECOMPUTE_RTOL` (a kernel that
    masks, scales or mixes differently: run the reference :func:`ctxmix_lite.internals.capture.capture`,
    which reads the weights from the eager path)."""
    from ctxmix_lite.internals.capture import CaptureError

    rebuilt = merge_heads(torch.matmul(lc.weights, lc.values)) @ lc.W_O.T  # Concat_h(A^h V^h) W_O^T
    if lc.b_O is not None:
        rebuilt = rebuilt + lc.b_O
    scale = float(lc.attn_out.abs().max().clamp_min(1e-12))
    err = float((rebuilt - lc.attn_out).abs().max()) / scale
    if not err <= RECOMPUTE_RTOL:
        raise CaptureError(
            f"{lc.component} layer {lc.layer}: the attention weights recomputed from q and k do not "
            f"reproduce the {kernel} kernel's attention output (relative error {err:.1e} > "
            f"{RECOMPUTE_RTOL:.0e}); use ctxmix_lite.internals.capture.capture (eager attention) for this model")
    return err


