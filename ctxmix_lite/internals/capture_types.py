"""Data types shared by capture and every measure.

A :class:`LayerCapture` holds, for one attention block of one layer of one model on one input
(batch size 1), everything a context-mixing measure needs:

* ``weights``  -- softmax attention probabilities per head ``[H, Tq, Tk]`` (float32, rows sum to 1)
* ``values``   -- value vectors per head, value bias included ``[H, Tk, dh]``
* ``W_O`` / ``b_O`` -- the output projection (``out_proj.weight`` ``[D, H*dh]``, bias ``[D]`` or None)
* ``resid``    -- the residual stream the attention block adds to ``[Tq, D]`` (for a plain layer:
  the layer input; for Whisper cross-attention: the stream after the decoder self-attention block)
* ``attn_out`` -- the attention block's output after ``out_proj`` (bias included), before it is
  added to ``resid`` ``[Tq, D]``
* ``out``      -- the layer output ``[Tq, D]``, with the model's final layer norm applied when this is
  the last layer and the model's last hidden state includes it (``final_norm_applied``)
* ``post(resid_rows, attn_out_rows)`` -- the position-wise rest of the layer, run by the model's own
  sub-modules: maps ``[N, D]`` residual rows and ``[N, D]`` attention-output rows to ``[N, D]`` layer
  outputs (final norm included where ``out`` has it). ``post(resid, attn_out) == out``.
* ``rerun(zero_positions)`` -- the *reference*: re-runs the real transformers layer module on its
  original inputs with the value vectors of the given key positions set to zero in all heads (after
  the value projection, bias included), returns the new ``out`` ``[Tq, D]``. Slow, obviously right.

* ``ffn``      -- optional :class:`FeedForwardParts`: the same rest of the layer as ``post``, given
  as the model's modules (layer norm, fc1, activation, fc2, norms after), when it has the plain
  ``norm -> fc1 -> act -> fc2`` shape. The fast value zeroing uses it to factor the layer norm and
  ``fc1`` (both linear in the zeroed vector up to the norm's scale) out of the per-pair work.

The identity used by the fast measures: with weights fixed, zeroing the values of key ``j`` changes
``attn_out[i]`` by exactly ``-sum_h weights[h, i, j] * values[h, j] @ W_O[:, h*dh:(h+1)*dh].T``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

COMPONENTS = ("encoder", "decoder", "cross")


@dataclass(frozen=True)
class FeedForwardParts:
    """The position-wise rest of a layer after its attention block, as the model's own modules.

    Two shapes (``h = resid + attn_out``)::

        pre-LN  (Whisper encoder / cross block, wav2vec2 "stable"):  out = h + fc2(act(fc1(norm(h))))
        post-LN (wav2vec2 base, HuBERT base):           n = norm(h);  out = n + fc2(act(fc1(n)))

    then ``out_norms`` in order (the post-LN block's final layer norm; the model's final norm on
    its last layer). Dropout is absent: only built for modules in eval mode, float32.
    """

    norm: torch.nn.LayerNorm
    fc1: torch.nn.Linear
    act: Callable[[torch.Tensor], torch.Tensor]
    fc2: torch.nn.Linear
    post_ln: bool = False
    out_norms: tuple = ()

    def __call__(self, resid: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        """The rest of the layer from these parts (equal to ``LayerCapture.post``; tested)."""
        h = resid + attn_out
        n = self.norm(h)
        out = (n if self.post_ln else h) + self.fc2(self.act(self.fc1(n)))
        for norm in self.out_norms:
            out = norm(out)
        return out


@dataclass
class LayerCapture:
    component: str  # "encoder" | "decoder" (self-attention, causal) | "cross" (decoder->encoder)
    layer: int
    weights: torch.Tensor
    values: torch.Tensor
    W_O: torch.Tensor
    b_O: Optional[torch.Tensor]
    resid: torch.Tensor
    attn_out: torch.Tensor
    out: torch.Tensor
    post: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = field(repr=False)
    rerun: Callable[[Sequence[int]], torch.Tensor] = field(repr=False)
    causal: bool = False
    final_norm_applied: bool = False
    # queries / keys per head (no scaling), for head-diversity measures: [H, Tq, dh], [H, Tk, dh]
    queries: Optional[torch.Tensor] = field(default=None, repr=False)
    keys: Optional[torch.Tensor] = field(default=None, repr=False)
    # the rest of the layer as modules, for the factored fast value zeroing (None: use ``post``)
    ffn: Optional[FeedForwardParts] = field(default=None, repr=False)

    @property
    def num_heads(self) -> int:
        return self.weights.shape[0]

    @property
    def head_dim(self) -> int:
        return self.values.shape[-1]

    def projected_values(self) -> torch.Tensor:
        """``v_j^h W_O^h`` for every head and key: ``[H, Tk, D]`` (output bias left out).

        Stored key-major: ``projected_values().transpose(0, 1)`` is a contiguous ``[Tk, H, D]``,
        so the measures can treat the ``H`` vectors of a key span as one matrix without a copy."""
        H, Tk, dh = self.values.shape
        W = self.W_O.reshape(self.W_O.shape[0], H, dh)  # [D, H, dh]
        return torch.einsum("hkd,ehd->khe", self.values, W).contiguous().transpose(0, 1)


@dataclass
class Capture:
    """Every layer of every component for one input. ``components[name]`` is a list over layers."""

    model_name: str
    family: str  # "whisper" | "wav2vec2" (wav2vec2, XLSR, HuBERT)
    components: dict  # str -> list[LayerCapture]
    n_frames: int  # encoder frames (Whisper: 1500 for the padded 30 s input)
    frame_duration: float  # seconds per encoder frame (Whisper 0.02; wav2vec2 ~0.02)
    window: float  # seconds covered by the encoder frames (Whisper 30.0; wav2vec2 clip duration)
    audio_duration: float  # seconds of real audio
    decoder_tokens: Optional[list] = None  # token ids fed to the decoder (teacher forcing), incl. prefix
    decoder_token_strings: Optional[list] = None
    prefix_length: int = 0  # number of decoder prefix tokens (<|startoftranscript|> ... <|notimestamps|>)
    transcription: Optional[str] = None
    embeddings: dict = field(default_factory=dict)  # component -> [T, D] input to layer 0

    def __getitem__(self, component: str) -> list:
        if component not in self.components:
            raise KeyError(
                f"component {component!r} was not captured; available: {sorted(self.components)}"
            )
        return self.components[component]

    @property
    def num_layers(self) -> dict:
        return {k: len(v) for k, v in self.components.items()}
