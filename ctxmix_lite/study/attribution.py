"""Context mixing vs feature attribution, and a faithfulness check of both (notebook 07).

Question: which parts of the *input* does Whisper use to write the target word (``livres``)?
Three answers, one per family of methods, all on the same item:

* **Gradient x input** -- ``a_t = sum_mel x[mel, t] * d f / d x[mel, t]`` for every 10 ms log-mel
  frame ``t`` of the (30 s padded) input features ``x``;
* **Integrated gradients** (Sundararajan et al. 2017) from a *silence* baseline ``x'`` (the log-mel
  features of an all-zero waveform of the same length)::

      a_t = sum_mel (x - x')[mel, t] * mean_{k=1..m} d f / d x [x' + (k - 1/2)/m (x - x')]

  (midpoint Riemann sum; completeness ``sum_t a_t ~= f(x) - f(x')`` is reported);
* **Value-zeroing rollout** (*this course's construction*, not a method of the paper or of the
  value-zeroing papers) -- context mixing instead of gradients: the encoder's value-zeroing
  matrices over the speech frames (chunks of ``chunk_frames`` 20 ms frames, padding excluded and
  rows renormalised), rolled out through the encoder layers in the authors' value-zeroing form
  (plain product, no identity added: :mod:`ctxmix_lite.measures.rollout`, form ``"plain"``), then read from
  the target's decoder rows through the cross-attention value-zeroing rows averaged over the
  decoder layers: ``a = mean_l c_l  R_enc`` (one score per chunk).  It **ignores** the decoder's
  self-attention (what the target's rows take from earlier tokens, the cue token included: that
  mass is dropped, and each cross-attention row is renormalised over the speech chunks), the order
  of the decoder layers (a plain mean instead of a chain), and the residual stream around each
  cross-attention block.

``f`` is the probability of the target word given the audio and the teacher-forced transcript
before it: ``p(target) = prod_k p(token_k | audio, tokens before k)`` over the target's subword
tokens. Gradients are taken **with respect to the log-mel input features** (what the network
reads; the waveform -> log-mel step is numpy preprocessing in transformers), summed over the 80
mel bins. Scores are then summed per aligned word for comparison with the blank-out test.

Faithfulness (*blank-out*): silence one word's samples in the waveform and measure the drop of
``p(target)`` (the decoder still teacher-forced on the original transcript); doing this for every
word gives a deletion profile that each method's per-word scores should rank the same way
(Spearman correlation). The decoder side has its own test: replace the cue *token* in the
teacher-forced transcript by the other number's form (``les`` -> ``le``) and measure the change
of ``p(target)`` with the audio untouched.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from ctxmix_lite.course.options import Options

__all__ = [
    "Attribution",
    "IGSettings",
    "RolloutSettings",
    "DeletionSettings",
    "CueReplacement",
    "target_positions",
    "target_log_prob",
    "target_probability",
    "gradient_x_input",
    "integrated_gradients",
    "vz_rollout",
    "word_scores",
    "blank_out",
    "blank_spans",
    "word_deletion",
    "flip_number",
    "replace_decoder_word",
    "cue_token_replacement",
    "faithfulness",
]

MEL_HOP = 0.01  # seconds per log-mel frame (Whisper: hop 160 samples at 16 kHz)


def _require_whisper(model):
    from ctxmix_lite.models.loading import model_family

    if model_family(model) != "whisper":
        raise ValueError("attribution of a target token's probability needs a decoder: use a Whisper model")


@dataclass
class Attribution:
    """Scores over input time: ``scores[k]`` for the interval ``[times[k], times[k] + step)``."""

    method: str
    scores: np.ndarray
    times: np.ndarray
    step: float
    value: float  # f(x): the target's probability
    extra: dict = field(default_factory=dict)

    def clip(self, duration: float) -> "Attribution":
        """Only the intervals that start inside the clip (drops Whisper's padding)."""
        keep = self.times < duration
        return Attribution(self.method, self.scores[keep], self.times[keep], self.step, self.value, dict(self.extra))


# ------------------------------------------------------------------------------------------------
# the target
# ------------------------------------------------------------------------------------------------
def target_positions(processor, decoder_ids: Sequence[int], alignment: Sequence[dict], target_index: int,
                     prefix_length: int = 4) -> list:
    """Decoder *input* positions of the target word's tokens in ``decoder_ids`` (prefix + transcript).
    Raises ValueError when the transcript lacks the word."""
    from .transcripts import decoder_positions

    pos = decoder_positions(alignment, list(decoder_ids)[prefix_length:], processor.tokenizer, prefix_length)
    if pos[target_index] is None:
        raise ValueError(f"the transcript does not contain the target word {alignment[target_index]['word']!r}")
    return pos[target_index]


def _features(processor, audio) -> torch.Tensor:
    from ctxmix_lite.internals.capture import whisper_features

    return whisper_features(processor, np.asarray(audio, dtype=np.float32))


def target_log_prob(model, input_features: torch.Tensor, decoder_ids: Sequence[int], positions: Sequence[int]) -> torch.Tensor:
    """``log p(target) = sum_k log softmax(logits[p_k - 1])[id(p_k)]`` for each batch row ``[B]``
    (differentiable; the logits at position ``p - 1`` predict the token at ``p``). The model runs on
    its own device; the result comes back to ``input_features``' device (gradients flow through)."""
    from ctxmix_lite.internals.capture import model_device

    device = model_device(model)
    B = input_features.shape[0]
    ids = torch.tensor([list(decoder_ids)] * B, device=device)
    logits = model(input_features=input_features.to(device), decoder_input_ids=ids,
                   use_cache=False).logits  # [B, T, V]
    pos = torch.as_tensor(list(positions), device=device)
    logp = torch.log_softmax(logits[:, pos - 1, :].float(), dim=-1)  # [B, K, V]
    tok = ids[0, pos]
    return logp[:, torch.arange(len(pos), device=device), tok].sum(-1).to(input_features.device)


def target_probability(model, processor, audio, decoder_ids, positions) -> float:
    """``p(target)`` for one waveform (no gradient, fastest attention kernel)."""
    from ctxmix_lite.internals.rows_capture import attention_implementation

    _require_whisper(model)
    with torch.no_grad(), attention_implementation(model, "sdpa"):
        return float(target_log_prob(model, _features(processor, audio), decoder_ids, positions).exp()[0])


# ------------------------------------------------------------------------------------------------
# gradient methods
# ------------------------------------------------------------------------------------------------
def _mel_times(n: int) -> np.ndarray:
    return np.arange(n) * MEL_HOP


def gradient_x_input(model, processor, audio, decoder_ids, positions) -> Attribution:
    """Gradient x input of ``p(target)`` w.r.t. the log-mel features, summed over mel bins."""
    from ctxmix_lite.internals.rows_capture import attention_implementation

    _require_whisper(model)
    x = _features(processor, audio).clone().requires_grad_(True)
    with attention_implementation(model, "sdpa"):
        f = target_log_prob(model, x, decoder_ids, positions).exp()[0]
        (g,) = torch.autograd.grad(f, x)
    a = (g * x)[0].detach()  # [80, 3000]
    return Attribution("gradient x input", a.sum(0).numpy(), _mel_times(a.shape[1]), MEL_HOP, float(f.detach()),
                       dict(per_mel=a.numpy()))


@dataclass(frozen=True)
class IGSettings(Options):
    """:func:`integrated_gradients`: ``steps`` points on the path (midpoint rule), evaluated
    ``batch_size`` at a time, from the ``baseline`` (``"silence"`` or ``"zeros"``)."""

    steps: int = 16
    batch_size: int = 2
    baseline: str = "silence"


def integrated_gradients(model, processor, audio, decoder_ids, positions,
                         options: Optional[IGSettings] = None, **settings) -> Attribution:
    """Integrated gradients of ``p(target)`` w.r.t. the log-mel features (see module docstring).

    settings: the fields of :class:`IGSettings` (or pass ``options=``). baseline: ``"silence"``
    (features of zeros of the clip's length: what the model sees for silence) or ``"zeros"``
    (all-zero features). ``extra["completeness_gap"]`` = ``sum a - (f(x) - f(x'))``: small when
    ``steps`` is enough."""
    from ctxmix_lite.internals.rows_capture import attention_implementation

    o = IGSettings.resolve(options, settings, where="integrated_gradients")
    steps, batch_size, baseline = o.steps, o.batch_size, o.baseline
    _require_whisper(model)
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}")
    x = _features(processor, audio)
    if baseline == "silence":
        xb = _features(processor, np.zeros(len(audio), dtype=np.float32))
    elif baseline == "zeros":
        xb = torch.zeros_like(x)
    else:
        raise ValueError(f"baseline must be 'silence' or 'zeros', got {baseline!r}")
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    grad_sum = torch.zeros_like(x[0])
    with attention_implementation(model, "sdpa"):
        for k in range(0, steps, batch_size):
            a = alphas[k : k + batch_size].view(-1, 1, 1)
            xi = (xb + a * (x - xb)).requires_grad_(True)  # [B, 80, 3000]
            f = target_log_prob(model, xi, decoder_ids, positions).exp().sum()
            (g,) = torch.autograd.grad(f, xi)
            grad_sum += g.sum(0)
        with torch.no_grad():
            fx = float(target_log_prob(model, x, decoder_ids, positions).exp()[0])
            fb = float(target_log_prob(model, xb, decoder_ids, positions).exp()[0])
    attr = ((x - xb)[0] * grad_sum / steps).detach()
    gap = float(attr.sum()) - (fx - fb)
    return Attribution("integrated gradients", attr.sum(0).numpy(), _mel_times(attr.shape[1]), MEL_HOP, fx,
                       dict(per_mel=attr.numpy(), baseline_value=fb, completeness_gap=gap, steps=steps))


# ------------------------------------------------------------------------------------------------
# value-zeroing rollout
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RolloutSettings(Options):
    """:func:`vz_rollout`: encoder frames per chunk (``chunk_frames``, 20 ms each), the encoder
    rollout's identity share (``residual``), a ``progress`` bar."""

    chunk_frames: int = 2
    residual: float = 0.0
    progress: bool = False


def vz_rollout(model, processor, audio, decoder_ids, positions, options: Optional[RolloutSettings] = None,
               **settings) -> Attribution:
    """Value-zeroing rollout from the target's decoder rows to input time (see module docstring):
    the course's own construction; the decoder's self-attention is left out. settings: the fields
    of :class:`RolloutSettings` (or pass ``options=``).

    ``residual``: the encoder rollout's identity share -- 0 (default) is the authors' value-zeroing
    rollout (``res=False``), 0.5 Abnar & Zuidema's attention-rollout form.

    The encoder part covers the clip's frames (Whisper's padding frames are left out and every row
    renormalised over the speech frames), pooled into chunks of ``chunk_frames`` encoder frames
    (20 ms each): value zeroing zeroes a whole chunk at once, rows are averaged over the chunk.
    Cost: ``(n_chunks)^2`` position-wise layer evaluations per encoder layer."""
    from ctxmix_lite.internals.capture import capture
    from ctxmix_lite.measures.rollout import rollout
    from .scoring import keys_upto
    from ctxmix_lite.measures.value_zeroing import value_zeroing

    o = RolloutSettings.resolve(options, settings, where="vz_rollout")
    chunk_frames, residual, progress = o.chunk_frames, o.residual, o.progress
    _require_whisper(model)
    audio = np.asarray(audio, dtype=np.float32)
    dur = len(audio) / 16000
    K = min(1500, int(np.ceil(dur / 0.02)) + 1)  # encoder frames touching the clip
    C = int(np.ceil(K / chunk_frames))
    spans = [(c * chunk_frames, min(K, (c + 1) * chunk_frames) - 1) for c in range(C)]
    cap = capture(model, processor, audio, decoder_input_ids=list(decoder_ids), components=["encoder", "cross"],
                  sampling_rate=16000)
    pred = [p - 1 for p in positions]
    enc = []
    with torch.no_grad():
        for lc in cap["encoder"]:
            lc = keys_upto(lc, K)
            m = value_zeroing(lc, rows=list(range(K)), spans=spans, normalize=False, progress=progress).double()  # [K, C]
            m = torch.stack([m[f : l + 1].mean(0) for f, l in spans])  # rows pooled per chunk: [C, C]
            enc.append(m)
        enc = torch.stack(enc)  # [L, C, C] per-layer chunk matrices (rows not yet normalised)
        R = rollout(enc, residual=residual)[-1].double()  # [C, C] chunks after the encoder
        cross = []
        for lc in cap["cross"]:
            lc = keys_upto(lc, K)
            m = value_zeroing(lc, rows=pred, spans=spans, normalize=False).double()  # [R, C]
            s = m.sum(-1, keepdim=True)
            cross.append(torch.where(s > 0, m / s.clamp_min(1e-300), torch.zeros_like(m)).mean(0))
        c = torch.stack(cross).mean(0)  # [C]
        a = (c @ R).numpy()
    times = np.array([f * 0.02 for f, _ in spans])
    return Attribution("value-zeroing rollout", a, times, 0.02 * chunk_frames, float("nan"),
                       dict(cross=c.numpy(), encoder_rollout=R.numpy(), encoder_layers=enc.numpy(),
                            chunk_frames=chunk_frames, residual=residual,
                            construction="course: encoder VZ rollout x cross-attention VZ (mean over decoder "
                                         "layers); decoder self-attention ignored"))


# ------------------------------------------------------------------------------------------------
# words, blank-out, decoder token replacement
# ------------------------------------------------------------------------------------------------
def word_scores(attr: Attribution, alignment: Sequence[dict], absolute: bool = False) -> np.ndarray:
    """Sum of the attribution over each aligned word's time span: ``[W]`` (an interval counts for a
    word when its centre lies in ``[start, end)``). ``absolute``: sum of ``|a|``."""
    centres = attr.times + attr.step / 2
    s = np.abs(attr.scores) if absolute else attr.scores
    out = np.zeros(len(alignment))
    for w, seg in enumerate(alignment):
        m = (centres >= float(seg["start"])) & (centres < float(seg["end"]))
        out[w] = s[m].sum()
    return out


def blank_spans(audio: np.ndarray, spans_seconds, fill: str = "zeros", seed: int = 0) -> np.ndarray:
    """A float32 copy of 16 kHz ``audio`` with the given ``(start, end)`` spans (seconds) blanked:
    ``fill="zeros"`` silences them, ``fill="noise"`` puts low noise there (seeded by ``seed``)."""
    out = np.array(audio, dtype=np.float32, copy=True)
    rng = np.random.default_rng(seed)
    for s, e in spans_seconds:
        a, b = max(0, int(round(s * 16000))), min(len(out), int(round(e * 16000)))
        if b <= a:
            raise ValueError(f"span ({s}, {e}) s covers no sample of the clip")
        if fill == "zeros":
            out[a:b] = 0.0
        elif fill == "noise":  # low noise at the clip's own quiet level
            out[a:b] = rng.standard_normal(b - a).astype(np.float32) * 1e-3
        else:
            raise ValueError(f"fill must be 'zeros' or 'noise', got {fill!r}")
    return out


def blank_out(model, processor, audio, decoder_ids, positions, spans_seconds, fill: str = "zeros") -> dict:
    """Silence the given time spans (seconds) and compare ``p(target)`` before and after:
    ``{"p": p, "p_blanked": p', "drop": p - p', "relative_drop": (p - p') / p}``."""
    p = target_probability(model, processor, audio, decoder_ids, positions)
    pb = target_probability(model, processor, blank_spans(audio, spans_seconds, fill), decoder_ids, positions)
    return dict(p=p, p_blanked=pb, drop=p - pb, relative_drop=(p - pb) / p if p > 0 else float("nan"))


@dataclass(frozen=True)
class DeletionSettings(Options):
    """:func:`word_deletion`: what fills a blanked word (``fill``: ``"zeros"`` or ``"noise"``,
    see :func:`blank_spans`), a ``progress`` bar."""

    fill: str = "zeros"
    progress: bool = False


def word_deletion(model, processor, audio, alignment, decoder_ids, positions,
                  options: Optional[DeletionSettings] = None, **settings):
    """Blank every aligned word in turn: a ``pandas.DataFrame`` with ``word, start, end, p,
    p_blanked, drop, relative_drop`` (one forward pass per word). settings: the fields of
    :class:`DeletionSettings` (or pass ``options=``)."""
    import pandas as pd
    from tqdm.auto import tqdm

    o = DeletionSettings.resolve(options, settings, where="word_deletion")
    fill, progress = o.fill, o.progress

    p = target_probability(model, processor, audio, decoder_ids, positions)
    rows = []
    for w, seg in enumerate(tqdm(alignment, desc="blank-out", disable=not progress)):
        pb = target_probability(model, processor, blank_spans(audio, [(seg["start"], seg["end"])], fill), decoder_ids, positions)
        rows.append(dict(index=w, word=seg["word"], start=seg["start"], end=seg["end"], p=p, p_blanked=pb,
                         drop=p - pb, relative_drop=(p - pb) / p if p > 0 else float("nan")))
    return pd.DataFrame(rows)


_SG_PL = {"le": "les", "la": "les", "l'": "les", "un": "des", "une": "des", "ce": "ces", "cet": "ces",
          "cette": "ces", "mon": "mes", "ma": "mes", "ton": "tes", "ta": "tes", "son": "ses", "sa": "ses",
          "notre": "nos", "votre": "vos", "leur": "leurs", "il": "ils", "elle": "elles"}
_PL_SG = {"les": "le", "des": "un", "ces": "ce", "mes": "mon", "tes": "ton", "ses": "son", "nos": "notre",
          "vos": "votre", "leurs": "leur", "ils": "il", "elles": "elle"}


def flip_number(word: str, partner: Optional[str] = None) -> str:
    """The other number's form of a cue word (``les`` -> ``le``, ``elle`` -> ``elles``), keeping an
    initial capital. ``partner``: the cue of the item's minimal pair, used when given (gender of
    ``les`` -> ``le``/``la`` cannot be guessed)."""
    from .transcripts import normalize_word

    w = normalize_word(word)
    if partner:
        new = normalize_word(partner)
    elif w in _SG_PL:
        new = _SG_PL[w]
    elif w in _PL_SG:
        new = _PL_SG[w]
    else:
        raise ValueError(f"{word!r} is not a number-marking cue this function knows; pass partner=...")
    return new[:1].upper() + new[1:] if word[:1].isupper() else new


def replace_decoder_word(processor, decoder_ids, alignment, word_index: int, replacement: str, prefix_length: int = 4):
    """Teacher-forced input with one transcript word replaced: returns ``(new_ids, new_positions)``
    where ``new_positions[w]`` are the decoder positions of aligned word ``w`` in the new input."""
    from .transcripts import decoder_positions, whitespace_word_tokens

    tok = processor.tokenizer
    text_ids = list(decoder_ids)[prefix_length:]
    pos = decoder_positions(alignment, text_ids, tok, prefix_length)
    if pos[word_index] is None:
        raise ValueError(f"word {word_index} ({alignment[word_index]['word']!r}) is not in the transcript")
    tw = whitespace_word_tokens(text_ids, tok)
    first_tok = pos[word_index][0] - prefix_length
    k = next(i for i, (_, toks) in enumerate(tw) if toks and toks[0] == first_tok)
    words = [w for w, _ in tw]
    words[k] = replacement + words[k][len(words[k].rstrip(".,;:!?")):]  # keep trailing punctuation
    new_ids = list(decoder_ids)[:prefix_length] + list(tok(" " + " ".join(words), add_special_tokens=False).input_ids)
    al = [dict(a) for a in alignment]
    al[word_index]["word"] = replacement
    return new_ids, decoder_positions(al, new_ids[prefix_length:], tok, prefix_length)


@dataclass(frozen=True)
class CueReplacement(Options):
    """What :func:`cue_token_replacement` replaces: the aligned words ``cue_indices`` by
    ``replacements`` (one each), and whose probability it reads (``target_index``, required);
    ``prefix_length``: Whisper's decoder prompt (4 tokens)."""

    cue_indices: Sequence[int] = ()
    target_index: Optional[int] = None
    replacements: Sequence[str] = ()
    prefix_length: int = 4


def cue_token_replacement(model, processor, audio, decoder_ids, alignment,
                          options: Optional[CueReplacement] = None, **settings) -> dict:
    """Replace the cue word(s) in the teacher-forced transcript (audio untouched) and compare
    ``p(target)``: ``{"p", "p_replaced", "drop", "relative_drop", "text"}``. settings: the fields
    of :class:`CueReplacement` (``cue_indices, target_index, replacements``, ``prefix_length``; or
    pass ``options=``)."""
    o = CueReplacement.resolve(options, settings, where="cue_token_replacement")
    if o.target_index is None:
        raise TypeError("cue_token_replacement() needs target_index (the word whose probability is read)")
    if len(o.cue_indices) != len(o.replacements):
        raise ValueError(f"cue_token_replacement(): {len(o.replacements)} replacements for "
                         f"{len(o.cue_indices)} cue words")
    cue_indices, target_index, replacements, prefix_length = o.cue_indices, o.target_index, o.replacements, o.prefix_length
    pos0 = target_positions(processor, decoder_ids, alignment, target_index, prefix_length)
    p = target_probability(model, processor, audio, decoder_ids, pos0)
    ids, al = list(decoder_ids), [dict(a) for a in alignment]
    for ci, rep in zip(cue_indices, replacements):
        ids, _ = replace_decoder_word(processor, ids, al, ci, rep, prefix_length)
        al[ci]["word"] = rep
    pos1 = target_positions(processor, ids, al, target_index, prefix_length)
    pr = target_probability(model, processor, audio, ids, pos1)
    text = processor.tokenizer.decode(ids[prefix_length:])
    return dict(p=p, p_replaced=pr, drop=p - pr, relative_drop=(p - pr) / p if p > 0 else float("nan"), text=text.strip())


def faithfulness(word_attr: dict, deletion, exclude: Sequence[int] = ()) -> "object":
    """Spearman correlation between each method's per-word scores and the blank-out drops:
    ``word_attr`` = ``{method: [W] scores}``, ``deletion`` = :func:`word_deletion` output.
    ``exclude``: word indices left out (e.g. the target itself, whose own audio dominates both:
    the question is which *context* words matter). ``same_top_word``: the method's highest word
    is the word whose blank-out hurts most. ``n_words``: how many words the correlation rests on
    (a clip of 4 words leaves 3: read such a correlation as a rank agreement on 3 numbers)."""
    import pandas as pd
    from scipy.stats import spearmanr

    keep = np.array([i for i in range(len(deletion)) if i not in set(exclude)])
    drops = deletion["drop"].to_numpy()[keep]
    rows = []
    for name, s in word_attr.items():
        s = np.asarray(s, dtype=float)[keep]
        rho = spearmanr(s, drops).statistic if np.std(s) > 0 and np.std(drops) > 0 else float("nan")
        top = int(np.argmax(s)) == int(np.argmax(drops))
        rows.append(dict(method=name, spearman=float(rho), same_top_word=top, n_words=int(len(keep))))
    return pd.DataFrame(rows)


def plot_side_by_side(audio, alignment, attributions: Sequence[Attribution], cue: Sequence[int] = (), target: Optional[int] = None,
                      title: Optional[str] = None):
    """Waveform with its words on top, then one panel per method (scores over time, each scaled to
    its own maximum |score|), cue (green) and target (red) spans shaded. Returns the figure."""
    import matplotlib.pyplot as plt

    from ctxmix_lite.viz.plotting import plot_waveform_words

    dur = len(audio) / 16000
    n = len(attributions)
    fig, axes = plt.subplots(n + 1, 1, figsize=(11, 2.1 * (n + 1)), sharex=True)
    plot_waveform_words(audio, 16000, alignment, ax=axes[0], title=title)
    for ax, a in zip(axes[1:], attributions):
        a = a.clip(dur)
        s = a.scores / (np.abs(a.scores).max() or 1.0)
        ax.bar(a.times, s, width=a.step, align="edge", color=np.where(s >= 0, "tab:blue", "tab:orange"))
        ax.axhline(0, color="0.4", lw=0.6)
        ax.set_ylabel("score / max|score|")
        ax.set_title(a.method, fontsize=10, loc="left")
    for ax in axes:
        for k in cue:
            ax.axvspan(alignment[k]["start"], alignment[k]["end"], color="tab:green", alpha=0.15)
        if target is not None:
            ax.axvspan(alignment[target]["start"], alignment[target]["end"], color="tab:red", alpha=0.12)
        ax.set_xlim(0, dur)
    axes[-1].set_xlabel("Time (s)")
    fig.tight_layout()
    return fig
