"""Interactive explorer of the homophony study (notebook 05): one item, one model, one component,
one layer, one measure -> the word x word matrix and the frame x frame (or token x token) matrix,
over the waveform with its word boundaries, and the clip's audio.

Built on :mod:`ctxmix_lite.viz.widgets` (ipywidgets 7 and 8): the drawing is a plain update function
:meth:`Explorer.show` that knows nothing about widgets, so tests and CI call it headlessly for every
option (:meth:`Explorer.run_all`).

What each view holds (same definitions as :mod:`ctxmix_lite.study`, so the target row of the word
view *is* the study's target row and its cue cell the cue contribution):

==========  ==========================================  =========================================
component   frame / token view ``[rows, columns]``      word view ``[W, W]``
==========  ==========================================  =========================================
encoder     speech frames x speech frames (20 ms);      rows: mean over the row word's frames;
            value zeroing: columns of ``vz_chunk``      columns: mean over the column word's
            frames zeroed at once                       frames (VZ: the whole word zeroed)
decoder     tokens x tokens (teacher-forced, causal)    rows: positions predicting the word's
                                                        tokens; columns: the word's tokens summed
                                                        (the paper's definition: each row's share
                                                        of *all* decoder positions, prompt
                                                        included, so a row sums to <= 1;
                                                        ``decoder="word_pooled"``: renormalised
                                                        over the words)
cross       tokens x speech frames                      rows as decoder; columns as encoder
==========  ==========================================  =========================================

The word view is not computed here: it is the study's scoring
(:func:`ctxmix_lite.study.scoring.word_rows`) asked for every word as the target. The frame /
token view is row-normalised over what it shows (Whisper's padding frames are left out). One rows-only forward pass per (item, model) is kept in memory (the last one only).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ctxmix_lite.course.options import Options
from ctxmix_lite.internals.rows_capture import whisper_rows_capture
from ctxmix_lite.measures.registry import MEASURE_LABELS, MEASURES

from .runs import alignment_of, audio_of, item_uses
from .runs import StudyOptions
from .scoring import keys_upto, sum_normalize, word_rows
from .transcripts import decoder_positions

__all__ = ["LayerView", "ViewOptions", "layer_view", "Explorer"]


@dataclass
class LayerView:
    """The two matrices of one (item, model, component, layer, measure)."""

    word: np.ndarray  # [W, W] rows normalised over aligned words
    frame: np.ndarray  # [R, C]
    words: list  # word labels (cue / target marked)
    row_axis: str
    col_axis: str
    row_labels: Optional[list]
    col_labels: Optional[list]
    row_spans: Optional[list]  # word spans along the frame view's rows (for outlines)
    col_spans: Optional[list]
    cue_contribution: float  # share of the target row on the cue words


def _speech_frames(spans) -> int:
    return max(l for _, l in spans) + 1


def _raw(lc, measure, rows=None, spans=None):
    """Raw scores ``[R, C]`` of one measure for the frame / token view (registry: attention as the
    head mean, span columns summed; value zeroing not normalised -- the view normalises rows)."""
    from ctxmix_lite.measures.registry import layer_measure

    opts = {"normalize": False} if measure == "value_zeroing" else {}
    return layer_measure(lc, measure, rows=rows, spans=spans, **opts).double().numpy()


def _chunks(n: int, size: int) -> list:
    return [(a, min(n, a + size) - 1) for a in range(0, n, size)]


@dataclass(frozen=True)
class ViewOptions(Options):
    """How :func:`layer_view` draws.

    vz_chunk: encoder frames zeroed at once in the frame view's value-zeroing columns.
    use: which use of the item marks cue and target (default: its first).
    decoder: the decoder definition of the word view, one of :data:`DECODER_DEFINITIONS`
        (default ``"paper"``, the study's; the same as ``StudyOptions``).
    """

    vz_chunk: int = 2
    use: Optional[str] = None
    decoder: str = "paper"

    def __post_init__(self):
        if int(self.vz_chunk) < 1:
            raise ValueError(f"vz_chunk must be >= 1, got {self.vz_chunk}")
        StudyOptions.make(self.decoder)  # a clear error for an unknown definition


def layer_view(caps: dict, item, component: str, layer: int, measure: str,
               options: Optional[ViewOptions] = None, **settings) -> LayerView:
    """Word and frame views of one layer (see the module docstring).

    caps: ``{"encoder": [LayerCapture], "decoder": [...], "cross": [...]}`` whose encoder captures
    hold the speech frames' rows ``0..K-1`` (:func:`~ctxmix_lite.study.whisper_rows_capture` with
    ``encoder_rows=range(K)``, or a full capture), with ``"positions"``: the decoder positions of
    each aligned word (:func:`~ctxmix_lite.study.decoder_positions`; needed for decoder / cross) and
    optionally ``"token_strings"`` (the decoder input, for labels), ``"n_frames"``, ``"window"``.
    options / settings: a :class:`ViewOptions` or its fields (``vz_chunk``, ``use``, ``decoder``).

    The word view is the study's own scoring (:func:`~ctxmix_lite.study.scoring.word_rows`) asked
    for every word as the target: its target row is the study's row, its cue cell the cue
    contribution."""
    from ctxmix_lite.corpus.audio import words_to_frame_spans

    o = ViewOptions.resolve(options, settings, where="layer_view")
    vz_chunk = int(o.vz_chunk)
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; choose from {MEASURES}")
    if component not in caps:
        raise ValueError(f"component {component!r} not available; have {sorted(k for k in caps if k in ('encoder', 'decoder', 'cross'))}")
    al = alignment_of(item)
    audio_dur = len(audio_of(item)) / 16000
    uses = item_uses(item)
    u = uses[0] if o.use is None else next(x for x in uses if x.name == o.use)
    W = len(al)
    spans = words_to_frame_spans(al, caps.get("n_frames", 1500), caps.get("window", 30.0), audio_dur)
    K = _speech_frames(spans)
    words = [w["word"] + (" [cue]" if k in u.cue else " [target]" if k == u.target else "") for k, w in enumerate(al)]
    vz = measure == "value_zeroing"  # its frame view zeroes chunks of vz_chunk frames
    vz_spans = [(f // vz_chunk, l // vz_chunk) for f, l in spans]
    vz_axis = f"encoder frames zeroed ({vz_chunk} x 20 ms)"
    lc = caps[component][layer]
    if component == "encoder":
        lc = keys_upto(lc, K)
        rows = list(range(K))
        fr = sum_normalize(_raw(lc, measure, rows, _chunks(K, vz_chunk) if vz else None))
        word = np.stack(word_rows(lc, "encoder", measure, [list(range(f, l + 1)) for f, l in spans], spans))
        return _finish(LayerView(word, fr, words, "encoder frame (query)", vz_axis if vz else "encoder frame (key)",
                                 None, None, spans, vz_spans if vz else spans, 0.0), u)
    positions = caps.get("positions")
    if positions is None:
        raise ValueError("decoder / cross views need the decoder positions of the aligned words")
    if any(p is None for p in positions):
        missing = [al[k]["word"] for k, p in enumerate(positions) if p is None]
        if any(k in u.cue or k == u.target for k, p in enumerate(positions) if p is None):
            raise ValueError(f"the transcript lacks the cue or target ({missing}): no decoder view")
    # the rows of word k: the decoder positions that predict its tokens (one before each token)
    groups = [None if p is None else [t - 1 for t in p] for p in positions]
    have = [k for k, g in enumerate(groups) if g]
    token_strings = caps.get("token_strings")
    if component == "decoder":
        fr = sum_normalize(_raw(lc, measure))  # token x token (causal zeros above the diagonal)
        scores = word_rows(lc, "decoder", measure, [groups[k] for k in have], word_tokens=positions,
                           options=o.decoder)
        col_axis, col_labels, col_spans = "decoder token (key)", token_strings, None
    else:  # cross
        lc = keys_upto(lc, K)
        fr = sum_normalize(_raw(lc, measure, None, _chunks(K, vz_chunk) if vz else None))
        scores = word_rows(lc, "cross", measure, [groups[k] for k in have], spans)
        col_axis, col_labels, col_spans = (vz_axis if vz else "encoder frame (key)"), None, (vz_spans if vz else spans)
    word = np.zeros((W, W))
    for k, row in zip(have, scores):
        word[k] = row
    return _finish(LayerView(word, fr, words, "decoder position (query)", col_axis, token_strings, col_labels,
                             None, col_spans, 0.0), u)


def _finish(view: LayerView, u) -> LayerView:
    view.cue_contribution = float(view.word[u.target, list(u.cue)].sum())
    return view


class Explorer:
    """Notebook 05's explorer.

    ``Explorer(items, models)`` with ``models = {label: (model, processor)}``;
    ``transcripts = {label: {item index: decoder input ids}}`` optionally (default: the trained
    Whisper's own transcription, computed once per item, shared by the random twin);
    ``decoder``: the decoder definition of the word view (default ``"paper"``, the study's default;
    pass the study's ``StudyOptions(...).decoder_definition`` to match another run).
    ``explorer.widget()`` returns the interactive viewer; ``explorer.show(...)`` draws one view.
    """

    def __init__(self, items: Sequence, models: dict, transcripts: Optional[dict] = None, vz_chunk: int = 2,
                 language: str = "fr", decoder: str = "paper"):
        if not items:
            raise ValueError("the explorer needs at least one item")
        if not models:
            raise ValueError("the explorer needs at least one model: {label: (model, processor)}")
        self.items = [dict(it) for it in items]
        self.models = dict(models)
        self.transcripts = {k: dict(v) for k, v in (transcripts or {}).items()}
        self.view_options = ViewOptions(vz_chunk=vz_chunk, decoder=decoder)
        self.language = language
        self._caps_key = None
        self._caps = None

    # -- data ------------------------------------------------------------------------------------
    def item_labels(self) -> list:
        out = []
        for k, it in enumerate(self.items):
            al = alignment_of(it)
            out.append((f"{k}: {' '.join(w['word'] for w in al)} ({it.get('label', '?')})", k))
        return out

    def family(self, model_label: str) -> str:
        from ctxmix_lite.models.loading import model_family

        return model_family(self.models[model_label][0])

    def components(self, model_label: str) -> list:
        return ["encoder", "decoder", "cross"] if self.family(model_label) == "whisper" else ["encoder"]

    def n_layers(self, model_label: str) -> int:
        c = self.models[model_label][0].config
        return c.encoder_layers if self.family(model_label) == "whisper" else c.num_hidden_layers

    def decoder_ids(self, model_label: str, index: int) -> list:
        from ctxmix_lite.internals.capture import transcribe, whisper_prefix_ids
        from ctxmix_lite.internals.rows_capture import attention_implementation

        mt = self.transcripts.setdefault(model_label, {})
        if index in mt:
            return mt[index]
        # share the trained model's transcription with every Whisper model of the explorer
        for other, tr in self.transcripts.items():
            if index in tr and self.family(other) == "whisper":
                mt[index] = tr[index]
                return mt[index]
        model, proc = self.models[model_label]
        trained = [lbl for lbl in self.models if "random" not in lbl and self.family(lbl) == "whisper"]
        src_model, src_proc = self.models[trained[0]] if trained else (model, proc)
        with attention_implementation(src_model, "sdpa"):
            _, ids = transcribe(src_model, src_proc, audio_of(self.items[index]), language=self.language, sampling_rate=16000)
        mt[index] = whisper_prefix_ids(proc, self.language) + list(ids)
        return mt[index]

    def captures(self, model_label: str, index: int) -> dict:
        """One forward pass for (item, model): encoder rows = the speech frames (kept: last one)."""
        from ctxmix_lite.corpus.audio import words_to_frame_spans

        key = (model_label, index)
        if self._caps_key == key:
            return self._caps
        model, proc = self.models[model_label]
        it = self.items[index]
        audio = audio_of(it)
        al = alignment_of(it)
        if self.family(model_label) == "whisper":
            ids = self.decoder_ids(model_label, index)
            K = max(l for _, l in words_to_frame_spans(al, 1500, 30.0, len(audio) / 16000)) + 1
            caps = whisper_rows_capture(model, proc, audio, ids, list(range(K)))
            caps["positions"] = decoder_positions(al, ids[4:], proc.tokenizer, 4)
            caps["token_strings"] = [proc.tokenizer.decode([t]) for t in ids]
            caps["n_frames"], caps["window"] = 1500, 30.0
        else:
            from ctxmix_lite.internals.capture import capture

            cap = capture(model, proc, audio, sampling_rate=16000)
            caps = dict(cap.components)
            caps["positions"] = None
            caps["n_frames"], caps["window"] = cap.n_frames, cap.window
        self._caps_key, self._caps = key, caps
        return caps

    def view(self, item: int, model: str, component: str, layer: int, measure: str) -> LayerView:
        caps = self.captures(model, item)
        if component not in caps:
            raise ValueError(f"{model} has no {component!r} component; it has {self.components(model)}")
        nl = len(caps[component])
        if not 0 <= layer < nl:
            raise ValueError(f"layer must lie in [0, {nl - 1}] for {model} {component}, got {layer}")
        return layer_view(caps, self.items[item], component, layer, measure, options=self.view_options)

    # -- drawing ---------------------------------------------------------------------------------
    def show(self, item: int = 0, model: Optional[str] = None, component: str = "encoder", layer: int = 0,
             measure: str = "value_zeroing", audio: bool = True):
        """Draw one view: waveform + words, word x word, frame x frame. Layers count from 0 here
        (figure titles say ``layer l+1 of L``). Components a model lacks fall back to the encoder."""
        import matplotlib.pyplot as plt

        from ctxmix_lite.viz.plotting import mark_spans, plot_matrix, plot_waveform_words

        model = model or next(iter(self.models))
        if component not in self.components(model):
            component = "encoder"
        layer = min(layer, self.n_layers(model) - 1)
        it = self.items[item]
        al = alignment_of(it)
        wav = audio_of(it)
        u = item_uses(it)[0]
        try:
            v = self.view(item, model, component, layer, measure)
        except ValueError as err:  # e.g. the transcript the decoder reads lacks the cue or the target
            if component == "encoder":
                raise
            fig, ax0 = plt.subplots(figsize=(13, 3.2))
            plot_waveform_words(wav, 16000, al, ax=ax0,
                                title=f"{model}: item {item} ({it.get('template', '')}, {it.get('label', '')})")
            ax0.text(0.5, -0.45, f"No {component} view for this item: {err}.\nThe decoder reads the trained "
                     "model's transcription; choose the encoder, or another item.", transform=ax0.transAxes,
                     ha="center", va="top", fontsize=11, color="tab:red")
            fig.tight_layout()
            return fig
        fig = plt.figure(figsize=(13, 8.5))
        gs = fig.add_gridspec(2, 2, height_ratios=[1, 2.6])
        ax0 = fig.add_subplot(gs[0, :])
        plot_waveform_words(wav, 16000, al, ax=ax0,
                            title=f"{model}: item {item} ({it.get('template', '')}, {it.get('label', '')})")
        for k, color in [(u.target, "tab:red")] + [(c, "tab:green") for c in u.cue]:
            ax0.axvspan(al[k]["start"], al[k]["end"], color=color, alpha=0.15)
        ax1 = fig.add_subplot(gs[1, 0])
        plot_matrix(v.word, v.words, v.words, xlabel="contributing word (key)", ylabel="receiving word (query)",
                    title=f"word level, {component} layer {layer + 1}/{self.n_layers(model)}\n"
                          f"{MEASURE_LABELS[measure]}: cue contribution {v.cue_contribution:.2f}",
                    ax=ax1, annotate=len(v.words) <= 12, colorbar_label="share of the row")
        ax2 = fig.add_subplot(gs[1, 1])
        fr = v.frame
        big = fr.shape[0] > 40 or fr.shape[1] > 40
        plot_matrix(fr, None if (v.row_labels is None or big) else v.row_labels,
                    None if (v.col_labels is None or big) else v.col_labels,
                    xlabel=v.col_axis, ylabel=v.row_axis, ax=ax2, title=f"{MEASURE_LABELS[measure]}, frame / token level",
                    colorbar_label="share of the row")
        if v.col_spans is not None:
            mark_spans(ax2, v.col_spans, [w["word"] for w in al], axis="x")
        if v.row_spans is not None:
            mark_spans(ax2, v.row_spans, [w["word"] for w in al], axis="y")
        fig.tight_layout()
        if audio:
            try:
                from IPython.display import display

                from ctxmix_lite.viz.widgets import audio_player

                display(audio_player(wav, 16000))
            except Exception:  # pragma: no cover - no IPython
                pass
        return fig

    def controls(self) -> dict:
        from ctxmix_lite.viz.plotting import layer_options  # "layer 1" ... "layer L", 0-based values

        first = next(iter(self.models))
        return dict(item=self.item_labels(), model=list(self.models), component=["encoder", "decoder", "cross"],
                    layer=layer_options(self.n_layers(first)), measure=[(MEASURE_LABELS[m], m) for m in MEASURES])

    def widget(self, draw: bool = True):
        """The interactive viewer (ipywidgets 7 and 8)."""
        from ctxmix_lite.viz.widgets import viewer

        return viewer(self.show, draw=draw, **self.controls())

    def run_all(self, mode: str = "each", max_calls: int = 200) -> int:
        """Headless: call :meth:`show` for every option of every control (figures closed)."""
        from ctxmix_lite.viz.widgets import run_headless

        def show(**kw):
            self.show(audio=False, **kw)

        return run_headless(show, mode=mode, max_calls=max_calls, **self.controls())
