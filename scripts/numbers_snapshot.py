"""The numbers the package computes, fingerprinted, so that a restructure can prove it moved none.

Issue 13 ("numbers do not move"): before the package was reorganised into subpackages this script
recorded, for a handful of offline items and every study model (Whisper-base trained and random,
XLSR-53 random with 4 layers), every measure's matrices per component and layer (attention,
Attention-Norm, value zeroing over word spans, ALTI, rollouts), the head-diversity and
diagonality numbers, and the study's own outputs for those items (the cue-contribution table, every
decoder definition, the prompt mass, the probe features). Each array is kept as the SHA-256 of
its float32 bytes plus a few float64 summaries; ``tests/test_numbers_unchanged.py`` recomputes them
and requires the same bytes (or, on another CPU type or library version where bit-identity cannot
be expected, the same summaries at 1e-5).

    python scripts/numbers_snapshot.py            # write tests/data/numbers_snapshot.json
    python scripts/numbers_snapshot.py --check    # compare with it (what the test does)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / "tests" / "data" / "numbers_snapshot.json"
N_ITEMS = 2


def platform_id() -> dict:
    import torch
    import transformers

    return dict(torch=torch.__version__, transformers=transformers.__version__, numpy=np.__version__,
                cpu=torch.backends.cpu.get_cpu_capability(), machine=platform.machine())


def fingerprint(x) -> dict:
    """SHA-256 of the array as contiguous float32 (or int64) bytes, its shape and float64 sums."""
    import torch

    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.dtype.kind in "OUS":  # labels
        text = "\n".join(map(str, a.ravel()))
        return dict(shape=list(a.shape), sha256=hashlib.sha256(text.encode()).hexdigest(), sum=0.0,
                    abs_sum=0.0, sample=[])
    a = a.astype(np.float32 if a.dtype.kind == "f" else np.int64)
    a = np.ascontiguousarray(a)
    f = a.astype(np.float64)
    flat = f.ravel()
    sample = flat[:: max(1, flat.size // 16)][:16] if flat.size else flat
    return dict(shape=list(a.shape), sha256=hashlib.sha256(a.tobytes()).hexdigest(),
                sum=float(np.nansum(f)), abs_sum=float(np.nansum(np.abs(f))),
                sample=[float(v) for v in sample])


def _frame(df, name) -> dict:
    """Every numeric column of a study table, in a stable row order."""
    out = {}
    if df is None or not len(df):
        return out
    keys = [c for c in df.columns if df[c].dtype == object] + [c for c in ("layer",) if c in df.columns]
    d = df.sort_values(keys, kind="mergesort").reset_index(drop=True) if keys else df
    for c in d.columns:
        if d[c].dtype.kind in "fiub":
            out[f"{name}/{c}"] = fingerprint(d[c].to_numpy())
    return out


def compute(progress: bool = False) -> dict:
    import torch

    from ctxmix_lite.corpus import audio as A
    from ctxmix_lite.internals import capture as C
    from ctxmix_lite.measures import decomposition, patterns, rollout
    from ctxmix_lite import measures
    from ctxmix_lite import study as S

    torch.set_num_threads(2)
    items = [dict(it) for it in S.course_items(smoke=True, n_items=None, progress=False)][:N_ITEMS]
    runs = S.default_model_runs(smoke=True)
    loaded = {r: r.load() for r in runs}
    out = {}
    for r in runs:
        model, proc = loaded[r]
        for k, item in enumerate(items):
            audio = S.audio_of(item)
            words = S.alignment_of(item)
            text = " ".join(w["word"] for w in words)
            if C.model_family(model) == "whisper":
                cap = C.capture(model, proc, audio, transcription=text, sampling_rate=A.SAMPLE_RATE)
            else:
                cap = C.capture(model, proc, audio, sampling_rate=A.SAMPLE_RATE)
            n_frames, window = C.encoder_frames(model, audio)
            spans = A.words_to_frame_spans(words, n_frames, window, A.duration(audio))
            for comp in cap.components:
                tag = f"{r.label}/item{k}/{comp}"
                key_spans = None if comp == "decoder" else spans
                n_rows = cap[comp][0].weights.shape[1]
                # value zeroing and ALTI read every row in the decoder and the cross-attention, and
                # ~60 rows spread over the clip in an encoder (all 1,500 Whisper frames take minutes)
                rows = None if comp != "encoder" else list(range(0, n_rows, max(1, n_rows // 60)))
                vz = measures.component_measure(cap, comp, "value_zeroing", spans=key_spans, rows=rows)
                out[f"{tag}/value_zeroing"] = fingerprint(vz)
                if comp == "decoder":
                    out[f"{tag}/value_zeroing/rollout"] = fingerprint(rollout.rollout_measure(vz, "value_zeroing"))
                for m in ("attention", "attention_norm"):
                    full = measures.component_measure(cap, comp, m)
                    out[f"{tag}/{m}"] = fingerprint(full)
                    if comp != "cross":
                        out[f"{tag}/{m}/rollout"] = fingerprint(rollout.rollout_measure(full, m))
                if comp != "cross" and n_rows <= 500:  # head diversity: ~90 s on 1,500 Whisper frames
                    div = patterns.head_diversity(cap[comp])["per_layer"]
                    out[f"{tag}/head_diversity"] = {kk: fingerprint(np.asarray(v, dtype=np.float64))
                                                    for kk, v in sorted(div.items())}
                if comp != "cross":
                    out[f"{tag}/alti"] = fingerprint(decomposition.component_alti(model, cap, comp, rows=rows))
                    out[f"{tag}/cad"] = fingerprint(torch.stack([patterns.cad(lc.weights) for lc in cap[comp]]))
            if progress:
                print(f"  {r.label} item {k}: {len(out)} arrays", file=sys.stderr)
    res = S.run_study(items, runs, cache=False, progress=False, threads=2, loaded=loaded,
                      exclude_misrecognised=False, teacher_forcing="reference")
    out.update(_frame(res.table, "study/table"))
    out.update(_frame(res.variants, "study/variants"))
    out.update(_frame(res.decoder_mass, "study/decoder_mass"))
    for (label, comp), p in sorted(res.probe.items()):
        out[f"study/probe/{label}/{comp}/X"] = fingerprint(p["X"])
        out[f"study/probe/{label}/{comp}/y"] = fingerprint(p["y"])
    return out


def compare(before: dict, after: dict, exact: bool, tol: float = 1e-5) -> list:
    """Differences as readable lines (empty: the numbers did not move)."""
    bad = []
    for k in sorted(set(before) | set(after)):
        if k not in after:
            bad.append(f"{k}: missing now")
            continue
        if k not in before:
            bad.append(f"{k}: new (not in the snapshot)")
            continue
        b, a = before[k], after[k]
        if "sha256" not in b:  # a group (head diversity)
            bad += compare({f"{k}/{kk}": v for kk, v in b.items()}, {f"{k}/{kk}": v for kk, v in a.items()},
                           exact, tol)
            continue
        if b["shape"] != a["shape"]:
            bad.append(f"{k}: shape {b['shape']} -> {a['shape']}")
        elif exact and b["sha256"] != a["sha256"]:
            bad.append(f"{k}: bytes differ (sum {b['sum']!r} -> {a['sum']!r})")
        elif not exact:
            for f in ("sum", "abs_sum"):
                if not np.isclose(b[f], a[f], rtol=tol, atol=tol):
                    bad.append(f"{k}: {f} {b[f]!r} -> {a[f]!r}")
            if not np.allclose(b["sample"], a["sample"], rtol=tol, atol=tol, equal_nan=True):
                bad.append(f"{k}: sampled values differ")
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed snapshot")
    a = ap.parse_args(argv)
    now = compute(progress=True)
    if a.check:
        snap = json.loads(SNAPSHOT.read_text())
        exact = snap["platform"] == platform_id()
        bad = compare(snap["arrays"], now, exact)
        print("\n".join(bad) or f"{len(now)} arrays: unchanged ({'bit-identical' if exact else 'within 1e-5'})")
        return 1 if bad else 0
    SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
    SNAPSHOT.write_text(json.dumps(dict(platform=platform_id(), n_items=N_ITEMS, arrays=now), indent=0,
                                   sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT} ({len(now)} arrays)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
