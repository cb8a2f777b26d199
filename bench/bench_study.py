"""Cost of the homophony study per item against one plain forward pass of the same model.

For every item and model, in one run, interleaved (plain, study, plain, study, ...) so that both
see the same machine load:

* **plain**: feature extraction + one forward pass of the model with its default attention kernel
  (``sdpa``): Whisper encoder + decoder teacher-forced on the item's cached transcription;
  wav2vec2 / XLSR encoder.
* **study**: :func:`ctxmix_lite.study.item_distributions` -- the same forward pass with hooks, then
  all three measures (Attention, Attention-Norm, Value Zeroing in rows-only fast mode) for every
  component (Whisper: encoder, decoder, cross-attention) and every layer, word-level pooling and
  the probe features. Transcriptions are generated once beforehand (cached), as in the study.

The ratio per item is ``min(study) / min(plain)`` over ``--repeats`` interleaved runs (the runs
least disturbed by other processes; the ratio of medians and of CPU times are printed beside
it); the target is <= 2. Beside the times, per item: the encoder's value-zeroing work, ``pairs``
= target frames x words per layer against the ``frames`` of one forward, and the floating-point
operations of both calls counted by ``torch.utils.flop_counter`` (matrix products and
convolutions), whose ratio is what the time ratio follows once the study is bound by arithmetic.
Usage::

    python bench/bench_study.py --items 6 --repeats 5 --threads 2
    python bench/bench_study.py --models openai/whisper-base:trained openai/whisper-base:random \
        facebook/wav2vec2-large-xlsr-53:random
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SENTENCES = [  # (text, cue index, target index, target_2 index, template, label)
    ("Elle a perdu les livres dans le train.", 3, 4, None, "Det_Noun", "plural"),
    ("Elle a perdu le livre dans le train.", 3, 4, None, "Det_Noun", "singular"),
    ("Ils aiment la musique de ce groupe.", 0, 1, None, "Pronoun_Verb", "plural"),
    ("Elle aime la musique de ce groupe.", 0, 1, None, "Pronoun_Verb", "singular"),
    ("Les enfants jouent dans le jardin.", 0, 1, 2, "Det_Noun_Verb", "plural"),
    ("Nous avons vu les voitures devant la maison.", 3, 4, None, "Det_Noun", "plural"),
]


def synthetic_items(n: int) -> list:
    from ctxmix_lite.corpus import synth

    out = []
    for k in range(n):
        text, c, t, t2, tpl, lab = SENTENCES[k % len(SENTENCES)]
        s = synth.synthesize(text, voice=["mb-fr1", "mb-fr2", "mb-fr4"][k % 3], rate=130)
        out.append(dict(audio=dict(array=s.audio, sampling_rate=s.sampling_rate, path=None), transcription=text,
                        alignment=s.words, cue_index=c, target_index=t, target_index_2=t2, template=tpl, label=lab,
                        voice=s.voice, pair_id=k // 2, id=f"bench{k}"))
    return out


def load_items(n: int) -> list:
    try:
        from ctxmix_lite.corpus.homophony import load_homophony

        ds = load_homophony("offline", smoke=True, progress=False)
        idx = np.linspace(0, len(ds) - 1, min(n, len(ds))).round().astype(int)  # every template
        return [dict(ds[int(k)]) for k in idx]
    except Exception as err:  # data module not built here: synthesise a few sentences
        print(f"(offline homophony set unavailable: {err}; synthesising {n} sentences)")
        return synthetic_items(n)


def encoder_work(model, item, audio) -> str:
    """``R x W pairs / T frames``: the encoder's (target frame, word) pairs that value zeroing runs
    through the rest of each layer, against the frames one forward pass runs through it."""
    from ctxmix_lite import study
    from ctxmix_lite.corpus.audio import words_to_frame_spans
    from ctxmix_lite.internals.capture import encoder_frames
    from ctxmix_lite.models import model_family

    n_frames, window = (1500, 30.0) if model_family(model) == "whisper" else encoder_frames(model, audio)
    spans = words_to_frame_spans(study.alignment_of(item), n_frames, window, len(audio) / 16000)
    rows = {f for u in study.item_uses(item) for f in range(spans[u.target][0], spans[u.target][1] + 1)}
    return f"{len(rows)} x {len(spans)} = {len(rows) * len(spans)} pairs / {n_frames} frames"


def flop_ratio(plain, full, k) -> float:
    """Floating-point operations of the study over those of the plain pass (one call each)."""
    from torch.utils.flop_counter import FlopCounterMode

    counts = []
    for fn in (plain, full):
        with FlopCounterMode(display=False) as fc:
            fn(k)
        counts.append(fc.get_total_flops())
    return counts[1] / counts[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=["openai/whisper-base:trained", "openai/whisper-base:random"])
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from ctxmix_lite import study
    from ctxmix_lite.internals.capture import whisper_features, whisper_prefix_ids
    from ctxmix_lite.models import model_family

    items = load_items(args.items)
    audios = [study.audio_of(it) for it in items]
    keys = [study.item_key(it, a) for it, a in zip(items, audios)]
    print(f"torch threads: {torch.get_num_threads()}, items: {len(items)}, repeats: {args.repeats}")
    results = []
    for spec in args.models:
        name, init = spec.split(":") if ":" in spec else (spec, "trained")
        run = study.ModelRun(name, init)
        model, processor = run.load()
        fam = model_family(model)
        dec = [None] * len(items)
        if fam == "whisper":
            tr = study.get_transcriptions(study.ModelRun(name, "trained"), items, keys, progress=False,
                                          **({} if init != "trained" else dict(model=model, processor=processor)))
            dec = [whisper_prefix_ids(processor) + tr[k]["ids"] for k in keys]

        def plain(k):
            with torch.no_grad(), study.attention_implementation(model, "sdpa"):
                if fam == "whisper":
                    feats = whisper_features(processor, audios[k])
                    model(input_features=feats, decoder_input_ids=torch.tensor([dec[k]]))
                else:
                    fe = getattr(processor, "feature_extractor", processor)
                    model(fe(audios[k], sampling_rate=16000, return_tensors="pt").input_values.float())

        def full(k):
            study.item_distributions(model, processor, items[k], decoder_ids=dec[k], audio=audios[k])

        plain(0), full(0)  # warm-up
        for k in range(len(items)):
            work = encoder_work(model, items[k], audios[k])
            flops = flop_ratio(plain, full, k)
            tp, ts, cp, cs = [], [], [], []
            for _ in range(args.repeats):
                c, t = time.process_time(), time.perf_counter(); plain(k)
                tp.append(time.perf_counter() - t); cp.append(time.process_time() - c)
                c, t = time.process_time(), time.perf_counter(); full(k)
                ts.append(time.perf_counter() - t); cs.append(time.process_time() - c)
            # min over repeats: the run least disturbed by other processes (shared machines);
            # the median is printed beside it
            p, s = min(tp), min(ts)
            pm, sm = statistics.median(tp), statistics.median(ts)
            pc, sc = min(cp), min(cs)
            iid = str(items[k].get("item_id", items[k].get("id", k)))
            results.append((run.label, iid, len(audios[k]) / 16000, p, s, s / p, sc / pc, sm / pm, flops))
            print(f"{run.label:32s} {iid:>22s} ({len(audios[k]) / 16000:4.1f} s): plain {p:6.3f} s  "
                  f"study {s:6.3f} s  ratio {s / p:5.2f}  (median ratio {sm / pm:5.2f}, CPU-time ratio {sc / pc:5.2f}; "
                  f"FLOP ratio {flops:4.2f}; encoder {work})", flush=True)
        del model
    print("\nper model, over items: ratio of best times, median (max) | ratio of median times, median | "
          "CPU-time ratio, median | FLOP ratio, median (max)   [target <= 2.00]")
    for label in dict.fromkeys(r[0] for r in results):
        rs = [r[5] for r in results if r[0] == label]
        rc = [r[6] for r in results if r[0] == label]
        rm = [r[7] for r in results if r[0] == label]
        rf = [r[8] for r in results if r[0] == label]
        print(f"  {label:40s} {statistics.median(rs):5.2f} ({max(rs):5.2f}) | {statistics.median(rm):5.2f} | "
              f"{statistics.median(rc):5.2f} | {statistics.median(rf):5.2f} ({max(rf):5.2f})")
    try:
        print("load average during the run:", open("/proc/loadavg").read().split()[:3])
    except OSError:
        pass
    return results


if __name__ == "__main__":
    main()
