"""Notebook 07's analysis of a few items, in one place for the notebook and for the shipped results.

For items the trained Whisper transcribes with cue and target right (templates taken in turn):
gradient x input, integrated gradients and the value-zeroing rollout of ``p(target)`` over input
time (:mod:`ctxmix_lite.study.attribution`), the blank-out of every word, and three interventions on
the cue (silence its audio, replace its token in the teacher-forced transcript, both).
The faithfulness correlations are left to the notebook: they use the learner's
``word_attribution``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence

from tqdm.auto import tqdm

from . import attribution as A
from ctxmix_lite.course.options import Options
from ctxmix_lite.internals.capture import whisper_prefix_ids

__all__ = ["ExampleSettings", "ExamplesSettings", "choose_examples", "analyse_example", "interventions",
           "compute_examples"]


def choose_examples(items, transcripts: dict, keys: Sequence[str], tokenizer, n: int) -> list:
    """Indices of up to ``n`` items whose cue and target are in the transcription (first use),
    taking the templates in turn so that the examples mix them."""
    from .transcripts import check_use, decoder_positions
    from .runs import item_uses

    ok: dict = {}
    for k, it in enumerate(items):
        u = item_uses(it)[0]
        pos = decoder_positions(it["alignment"], transcripts[keys[k]]["ids"], tokenizer, 4)
        if check_use(pos, u) is None:
            ok.setdefault(it["template"], []).append(k)
    order = [k for group in zip(*ok.values()) for k in group] + [k for g in ok.values() for k in g]
    return list(dict.fromkeys(order))[:n], sum(len(v) for v in ok.values())


def interventions(model, proc, item, audio, ids, pos) -> dict:
    """``p(target)`` with the cue's audio silenced, the cue token replaced by the other number's
    form (audio untouched), and both."""
    from .runs import item_uses

    u = item_uses(item)[0]
    al = item["alignment"]
    cue_spans = [(al[c]["start"], al[c]["end"]) for c in u.cue]
    audio_b = A.blank_out(model, proc, audio, ids, pos, cue_spans)
    reps = [A.flip_number(al[c]["word"]) for c in u.cue]
    edit = A.CueReplacement(cue_indices=u.cue, target_index=u.target, replacements=reps)
    tok = A.cue_token_replacement(model, proc, audio, ids, al, options=edit)
    both = A.cue_token_replacement(model, proc, A.blank_spans(audio, cue_spans), ids, al, options=edit)
    return dict(item=item["item_id"], cue=" ".join(al[c]["word"] for c in u.cue), target=al[u.target]["word"],
                p=audio_b["p"], p_cue_audio_silenced=audio_b["p_blanked"], p_cue_token_replaced=tok["p_replaced"],
                p_both=both["p_replaced"], replaced_text=tok["text"])


@dataclass(frozen=True)
class ExampleSettings(Options):
    """What :func:`analyse_example` computes: the attribution ``methods`` (``"gxi"``, ``"ig"`` with
    ``ig_steps``, ``"vz"`` with ``vz_chunk`` encoder frames per chunk), the blank-out of every
    word (``with_deletion``) and the cue interventions (``with_interventions``)."""

    ig_steps: int = 16
    vz_chunk: int = 2
    methods: Sequence[str] = ("gxi", "ig", "vz")
    with_deletion: bool = True
    with_interventions: bool = True


@dataclass(frozen=True)
class ExamplesSettings(ExampleSettings):
    """:func:`compute_examples`: how many examples (``n_examples``), the model whose transcriptions
    choose them (``model_name``), a ``progress`` bar, and what each is analysed with (the fields
    of :class:`ExampleSettings`)."""

    n_examples: int = 3
    progress: bool = True
    model_name: str = "openai/whisper-base"


def analyse_example(model, proc, item, k: int, key: str, transcript_ids: Sequence[int],
                    options: Optional[ExampleSettings] = None, **settings) -> dict:
    """Everything notebook 07 shows for one item (see the module docstring). settings: the fields
    of :class:`ExampleSettings` (or pass ``options=``)."""
    from .runs import audio_of, item_uses

    o = ExampleSettings.resolve(options, settings, where="analyse_example")
    ig_steps, vz_chunk, methods = o.ig_steps, o.vz_chunk, o.methods
    with_deletion, with_interventions = o.with_deletion, o.with_interventions

    u = item_uses(item)[0]
    al, wav = item["alignment"], audio_of(item)
    ids = whisper_prefix_ids(proc) + list(transcript_ids)
    pos = A.target_positions(proc, ids, al, u.target)
    out = dict(k=k, key=key, item_id=item.get("item_id"), item=item, use=u, ids=ids, pos=pos, audio=wav,
               transcript_ids=[int(x) for x in transcript_ids])
    t = time.perf_counter()
    if "gxi" in methods:
        out["gxi"] = A.gradient_x_input(model, proc, wav, ids, pos)
    if "ig" in methods:
        out["ig"] = A.integrated_gradients(model, proc, wav, ids, pos, steps=ig_steps)
    if "vz" in methods:
        out["vz"] = A.vz_rollout(model, proc, wav, ids, pos, chunk_frames=vz_chunk)
    out["seconds"] = time.perf_counter() - t
    if with_deletion:
        out["deletion"] = A.word_deletion(model, proc, wav, al, ids, pos)
    if with_interventions:
        out["interventions"] = interventions(model, proc, item, wav, ids, pos)
    return out


def compute_examples(items, model, proc, transcripts: Optional[dict] = None,
                     options: Optional[ExamplesSettings] = None, **settings) -> list:
    """Choose the examples (:func:`choose_examples`, on the trained model's transcriptions, cached
    unless ``transcripts`` are given) and analyse each (:func:`analyse_example`). settings: the
    fields of :class:`ExamplesSettings` (or pass ``options=``)."""
    from .runs import ModelRun, item_key
    from .core import get_transcriptions

    o = ExamplesSettings.resolve(options, settings, where="compute_examples")
    n_examples, progress, model_name = o.n_examples, o.progress, o.model_name
    each = ExampleSettings(**{f: getattr(o, f) for f in ExampleSettings.field_names()})

    items = [dict(it) for it in items]
    keys = [item_key(it) for it in items]
    if transcripts is None:
        run = ModelRun(model_name, "trained")
        transcripts = get_transcriptions(run, items, keys, model, proc, progress=False)
    chosen, _ = choose_examples(items, transcripts, keys, proc.tokenizer, n_examples)
    return [analyse_example(model, proc, items[k], k, keys[k], transcripts[keys[k]]["ids"], options=each)
            for k in tqdm(chosen, desc="attribution examples", disable=not progress)]
