"""Word-level target rows: encoder, decoder (the paper's definition and its options) and cross-attention cue scores of one item.

Part of the homophony study (:mod:`ctxmix_lite.study`)."""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
import torch

from ctxmix_lite.course.options import Options
from ctxmix_lite.internals.capture_types import LayerCapture
from ctxmix_lite.measures.registry import MEASURES, layer_measure
from ctxmix_lite.internals.rows_capture import whisper_rows_capture
from .runs import DECODER_COMPONENTS, N_PROMPT, PAPER_SKIPPED_POSITIONS, PROMPT_MASS, Use, alignment_of, audio_of, item_uses
from .transcripts import check_use, decoder_positions


# ================================================================================================
# word-level target rows
# ================================================================================================
def sum_normalize(x: np.ndarray) -> np.ndarray:
    """Divide the last axis by its sum; an all-zero vector stays zero."""
    s = x.sum(-1, keepdims=True)
    return np.divide(x, s, out=np.zeros_like(x), where=s > 0)


def _span_mean_matrix(spans, n_keys: int) -> torch.Tensor:
    """``[Tk, W]`` with ``1/len(w)`` on the frames of word ``w``: ``M @ A`` = mean over each span."""
    m = torch.zeros(n_keys, len(spans))
    for w, (f, l) in enumerate(spans):
        m[f : l + 1, w] = 1.0 / (l - f + 1)
    return m


def keys_upto(lc: LayerCapture, n_keys: int) -> LayerCapture:
    """A view of ``lc`` with only its first ``n_keys`` keys (weights and values). Row-selected
    Attention, Attention-Norm and fast value zeroing of span columns inside ``[0, n_keys)`` are
    unchanged (``attn_out`` keeps the full attention; ``delta`` only reads the span's keys), and
    the ``v_j W_O`` products shrink from 1,500 Whisper frames to the speech part of the clip."""
    if n_keys >= lc.weights.shape[-1]:
        return lc
    return dataclasses.replace(lc, weights=lc.weights[..., :n_keys], values=lc.values[:, :n_keys])


def _with_cached_pv(lc: LayerCapture) -> LayerCapture:
    """Compute ``v_j^h W_O^h`` once per layer for all the measures and uses that read it."""
    pv = lc.projected_values()
    lc.projected_values = lambda: pv  # an instance attribute shadows the method
    return lc


def _encoder_rows(lc: LayerCapture, rows, groups, spans, measure: str) -> list:
    """Encoder (frame-keyed, rows pooled): one ``s[w]`` over aligned words per group of rows.

    ``rows``: query rows of ``lc`` (the union of every use's target frames); ``groups``: for each
    use, positions in ``rows`` of its target's frames. Scores are computed once for all rows::

        attention:       S_h[w] = mean_{i in target} mean_{j in w} alpha^h_ij, normalised per head, mean over h
        attention_norm:  S[w]   = mean_{i in target} mean_{j in w} AN_ij,      normalised
        value_zeroing:   S[w]   = mean_{i in target} VZ_i(w zeroed at once),   normalised
    """
    Tk = lc.weights.shape[-1]
    r = torch.as_tensor(rows, dtype=torch.long)
    if measure == "attention":
        a = (lc.weights[:, r, :] @ _span_mean_matrix(spans, Tk)).double().numpy()  # [H, R, W]
        return [sum_normalize(a[:, g].mean(1)).mean(0) for g in groups]  # rows pooled, per-head norm, head mean
    m = _raw_span_scores(lc, r, spans, measure)
    return [sum_normalize(m[g].mean(0)) for g in groups]


def _raw_span_scores(lc: LayerCapture, r: torch.Tensor, spans, measure: str) -> np.ndarray:
    """``[R, W]`` raw scores of a registry measure over word spans: Attention-Norm as span *means*
    (the registry's span sums / span length), value zeroing with the whole word zeroed at once."""
    _check_study_measure(measure)
    if measure == "attention_norm":
        lens = torch.tensor([l - f + 1 for f, l in spans], dtype=torch.float32)
        return (layer_measure(lc, measure, rows=r, spans=spans) / lens).double().numpy()  # span sums -> means
    return layer_measure(lc, measure, rows=r, spans=spans, method="fast", normalize=False).double().numpy()


def _check_study_measure(measure: str) -> None:
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; choose from {MEASURES}")


def _per_row_words(m: np.ndarray, word_cols) -> np.ndarray:
    """``[..., R, Tk]`` token scores -> ``[..., R, W]`` summed over each word's columns."""
    out = np.zeros(m.shape[:-1] + (len(word_cols),))
    for w, cols in enumerate(word_cols):
        if cols:
            out[..., w] = m[..., cols].sum(-1)
    return out


def _decoder_rows(lc: LayerCapture, rows, groups, word_tokens, measure: str, m: Optional[np.ndarray] = None) -> list:
    """Decoder self-attention, the course's **word-pooled** variant (option
    ``decoder_scoring="word_pooled"``; not the paper's): rows = positions predicting the target
    tokens, columns = the aligned words' tokens (summed; prompt and unaligned tokens dropped), each
    row renormalised over the words, then the mean over a use's rows. ``m``: the raw ``[R, T]``
    scores if already computed (:func:`_decoder_token_scores`)."""
    cols = [list(t) if t else [] for t in word_tokens]
    if m is None:
        m = _decoder_token_scores(lc, rows, measure)
    words = sum_normalize(_per_row_words(m, cols))  # [R, W]
    return [words[g].mean(0) for g in groups]


def _decoder_token_scores(lc: LayerCapture, rows, measure: str) -> np.ndarray:
    """``[R, T]`` raw decoder scores of some query rows over every decoder input position, as the
    paper builds them: attention averaged over heads (softmax rows over all positions),
    Attention-Norm (``summedNorms``), value zeroing one token at a time (the paper fills only the
    columns ``j <= i``: ``vz_dec_matrix[l, t:, t]``; later columns are 0)."""
    _check_study_measure(measure)
    r = torch.as_tensor(rows, dtype=torch.long)
    if measure == "attention":
        m = lc.weights[:, r, :].mean(0).double().numpy()
    elif measure == "attention_norm":
        m = layer_measure(lc, measure, rows=r).double().numpy()
    else:
        m = layer_measure(lc, measure, rows=r, method="fast", normalize=False).double().numpy()
        m = np.where(np.arange(m.shape[-1])[None, :] > r.numpy()[:, None], 0.0, m)  # causal, as the paper
    return m


def paper_decoder_rows(m: np.ndarray, groups, word_tokens, skip_special_tokens: bool = False,
                       n_prompt: int = N_PROMPT) -> tuple:
    """The paper's decoder definition on raw token scores ``m`` ``[R, T]`` (rows = the positions
    predicting the target tokens): each row normalised over **all** ``T`` input positions (with
    ``skip_special_tokens``: the first :data:`PAPER_SKIPPED_POSITIONS` dropped first); returns
    ``(per_word, prompt)``: for each group of rows (a use's target tokens), ``[W]`` the mean over
    its rows of the row's mass on each aligned word's tokens -- the cue contribution is the sum over
    the cue words, ``mean_r sum_{j in cue tokens} m_rj``, i.e. ``cue_alignment.py``'s dot product
    with the binary cue vector -- and ``[n_prompt]`` the mean mass on each prompt position."""
    m = np.array(m, dtype=np.float64, copy=True)
    if skip_special_tokens:
        m[:, :PAPER_SKIPPED_POSITIONS] = 0.0
    p = sum_normalize(m)  # over all positions
    words = _per_row_words(p, [list(t) if t else [] for t in word_tokens])
    per_word = [words[g].mean(0) for g in groups]
    prompt = [p[g][:, :n_prompt].mean(0) for g in groups]
    return per_word, prompt


def _cross_rows(lc: LayerCapture, rows, groups, spans, measure: str) -> list:
    """Cross-attention: decoder rows, aligned words' encoder frames as columns (mean over frames;
    value zeroing: the word zeroed at once), each row normalised, mean over a use's rows."""
    Tk = lc.weights.shape[-1]
    r = torch.as_tensor(rows, dtype=torch.long)
    if measure == "attention":
        a = sum_normalize((lc.weights[:, r, :] @ _span_mean_matrix(spans, Tk)).double().numpy())  # [H, R, W]
        return [a[:, g].mean(0).mean(0) for g in groups]
    m = sum_normalize(_raw_span_scores(lc, r, spans, measure))
    return [m[g].mean(0) for g in groups]


def _frame_spans(alignment, n_frames: int, window: float, duration: float) -> list:
    from ctxmix_lite.corpus.audio import words_to_frame_spans

    return words_to_frame_spans(alignment, n_frames, window, duration)


@dataclasses.dataclass(frozen=True)
class ScoringSettings(Options):
    """What :func:`item_distributions` scores: the ``components`` (default: all the model has),
    the ``measures`` (default: all) and the decoder's ``prefix_length`` (Whisper's prompt, 4
    tokens: start of transcript, language, task, no timestamps)."""

    prefix_length: int = 4
    components: Optional[Sequence[str]] = None
    measures: Sequence[str] = MEASURES


def item_distributions(model, processor, item, uses: Optional[Sequence[Use]] = None,
                       decoder_ids: Optional[Sequence[int]] = None, audio: Optional[np.ndarray] = None,
                       options: Optional[ScoringSettings] = None, **settings) -> dict:
    """Everything the study keeps about one item and one model, from one forward pass.

    Returns ``{"dist": {(use, component, measure): [L, W] target-row scores per aligned word},
    "probe": {(use, component): [L+1, D] mean hidden state of the target (encoder)
    or of the positions predicting it (decoder)}, "positions": decoder positions per word,
    "n_frames": ..., "window": ...}``. ``decoder_ids``: full decoder input (prefix + transcript
    tokens) for Whisper's decoder and cross-attention; None -> encoder only.

    Components of ``dist``: ``"encoder"`` and ``"cross"`` (rows normalised over the aligned words);
    ``"decoder"`` (the paper's definition: each row normalised over *all* decoder positions, so a
    word's entry is its share of the whole row and the entries do not sum to 1),
    ``"decoder[skip_special_tokens]"``, ``"decoder[word_pooled]"`` (see :class:`StudyOptions`) and
    ``"decoder[prompt_mass]"`` (``[L, prefix_length]``: the paper-normalised mass on each prompt
    position). ``audio``: the item's samples when already decoded (default: read from ``item``).
    settings: the fields of :class:`ScoringSettings` (or pass ``options=``).
    """
    from ctxmix_lite.models.loading import model_family

    o = ScoringSettings.resolve(options, settings, where="item_distributions")
    prefix_length, components, measures = o.prefix_length, o.components, o.measures

    family = model_family(model)
    audio = audio_of(item) if audio is None else audio
    alignment = alignment_of(item)
    uses = item_uses(item) if uses is None else list(uses)
    dur = len(audio) / 16000
    bad = [m for m in measures if m not in MEASURES]
    if bad:
        raise ValueError(f"unknown measure(s) {bad}; choose from {MEASURES}")
    if family == "whisper":
        comps = list(components or ("encoder", "decoder", "cross"))
        n_frames, window = 1500, 30.0
    else:
        comps = list(components or ("encoder",))
        if any(c != "encoder" for c in comps):
            raise ValueError(f"{family} models have only an encoder; asked for {comps}")
        from ctxmix_lite.internals.capture import encoder_frames

        n_frames, window = encoder_frames(model, audio)
    spans = _frame_spans(alignment, n_frames, window, dur)
    result = {"dist": {}, "probe": {}, "n_frames": n_frames, "window": window, "spans": spans}

    # rows of every use's target, once
    enc_rows = sorted({f for u in uses for f in range(spans[u.target][0], spans[u.target][1] + 1)})
    local = {f: k for k, f in enumerate(enc_rows)}
    want_dec = family == "whisper" and decoder_ids is not None and any(c in comps for c in ("decoder", "cross"))
    positions = None
    if want_dec:
        text_ids = list(decoder_ids)[prefix_length:]
        positions = decoder_positions(alignment, text_ids, processor.tokenizer, prefix_length)
    result["positions"] = positions

    if family == "whisper":
        caps = whisper_rows_capture(model, processor, audio, list(decoder_ids) if want_dec else None, enc_rows)
        enc_caps, enc_hidden = caps["encoder"], caps["encoder_hidden"]
        row_of = local
    else:
        from ctxmix_lite.internals.capture import capture

        cap = capture(model, processor, audio, sampling_rate=16000)
        enc_caps = cap["encoder"]
        r = torch.tensor(enc_rows)
        enc_hidden = torch.stack([enc_caps[0].resid[r]] + [lc.out[r] for lc in enc_caps])
        row_of = {f: f for f in enc_rows}

    K = max(l for _, l in spans) + 1  # keys past the last aligned word are never read
    with torch.no_grad():
        if "encoder" in comps:
            frames = {u.name: list(range(spans[u.target][0], spans[u.target][1] + 1)) for u in uses}
            pos_in = {f: k for k, f in enumerate(enc_rows)}
            groups = [[pos_in[f] for f in frames[u.name]] for u in uses]
            lrows = [row_of[f] for f in enc_rows]
            per = {m: [] for m in measures}
            for lc in enc_caps:
                lc = _with_cached_pv(keys_upto(lc, K))
                for m in measures:
                    per[m].append(_encoder_rows(lc, lrows, groups, spans, m))
            for gi, u in enumerate(uses):
                for m in measures:
                    result["dist"][(u.name, "encoder", m)] = np.stack([x[gi] for x in per[m]]).astype(np.float32)
                hr = [local[f] for f in frames[u.name]]
                result["probe"][(u.name, "encoder")] = enc_hidden[:, hr].mean(1).numpy().astype(np.float32)
        ok = [u for u in uses if want_dec and check_use(positions, u) is None]
        if ok:
            pred = {u.name: [p - 1 for p in positions[u.target]] for u in ok}  # the position before each target token
            drows = sorted({r for u in ok for r in pred[u.name]})
            dpos = {r: k for k, r in enumerate(drows)}
            groups = [[dpos[r] for r in pred[u.name]] for u in ok]
            for comp in ("decoder", "cross"):
                if comp not in comps:
                    continue
                if comp == "decoder":  # every definition from the same raw token scores
                    per = {(c, m): [] for c in (*DECODER_COMPONENTS.values(), PROMPT_MASS) for m in measures}
                    for lc in caps[comp]:
                        lc = _with_cached_pv(lc)
                        for m in measures:
                            raw = _decoder_token_scores(lc, drows, m)
                            words, prompt = paper_decoder_rows(raw, groups, positions, False, prefix_length)
                            per[(DECODER_COMPONENTS["paper"], m)].append(words)
                            per[(PROMPT_MASS, m)].append(prompt)
                            per[(DECODER_COMPONENTS["paper+skip_special_tokens"], m)].append(
                                paper_decoder_rows(raw, groups, positions, True, prefix_length)[0])
                            per[(DECODER_COMPONENTS["word_pooled"], m)].append(
                                _decoder_rows(lc, drows, groups, positions, m, m=raw))
                else:
                    per = {(comp, m): [] for m in measures}
                    for lc in caps[comp]:
                        lc = _with_cached_pv(keys_upto(lc, K))
                        for m in measures:
                            per[(comp, m)].append(_cross_rows(lc, drows, groups, spans, m))
                for gi, u in enumerate(ok):
                    for (c, m), v in per.items():
                        result["dist"][(u.name, c, m)] = np.stack([x[gi] for x in v]).astype(np.float32)
            if "decoder" in comps:
                for u in ok:
                    result["probe"][(u.name, "decoder")] = caps["decoder_hidden"][:, pred[u.name]].mean(1).numpy().astype(np.float32)
    return result


def cue_contribution(dist: np.ndarray, cue: Sequence[int]) -> np.ndarray:
    """Share of the target row's mass on the cue word(s): ``sum_{w in cue} s[..., w]``."""
    dist = np.asarray(dist)
    return dist[..., list(cue)].sum(-1)




def word_rows(lc: LayerCapture, component: str, measure: str, groups, spans=None, word_tokens=None,
              options=None) -> list:
    """The study's word scores for groups of query rows of one layer: for each group of row indices
    of ``lc``, the ``[W]`` scores over the aligned words that :func:`item_distributions` computes for
    a target made of those rows (the explorer's word view asks it for every word).

    ``spans``: the words' encoder frame spans (encoder, cross); ``word_tokens``: the decoder
    positions of each word's tokens (decoder); ``options``: a :class:`StudyOptions` (or a
    definition name) choosing the decoder definition (default: the paper's)."""
    from .runs import StudyOptions

    _check_study_measure(measure)
    rows = sorted({int(r) for g in groups for r in g})
    at = {r: k for k, r in enumerate(rows)}
    local = [[at[int(r)] for r in g] for g in groups]
    if any(not g for g in local):
        raise ValueError("every group needs at least one query row")
    if component == "encoder":
        return _encoder_rows(lc, rows, local, spans, measure)
    if component == "cross":
        return _cross_rows(lc, rows, local, spans, measure)
    if component == "decoder":
        o = StudyOptions.make(options)
        raw = _decoder_token_scores(lc, rows, measure)
        if o.decoder_scoring == "word_pooled":
            return _decoder_rows(lc, rows, local, word_tokens, measure, m=raw)
        return paper_decoder_rows(raw, local, word_tokens, o.skip_special_tokens)[0]
    raise ValueError(f"component must be 'encoder', 'decoder' or 'cross', got {component!r}")
