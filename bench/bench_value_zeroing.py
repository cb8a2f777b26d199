"""Benchmark: value zeroing, exact fast path vs the reference loop, in one run (not a test).

    PYTHONPATH=. .venv/bin/python bench/bench_value_zeroing.py              # a, b, c (full; ~1 h on 2 busy cores)
    PYTHONPATH=. .venv/bin/python bench/bench_value_zeroing.py --ref-columns 150   # quick: reference on 150 columns

Cases
  (a) Whisper-base (trained, offline weights) encoder, last layer (final layer norm included), a
      French clip padded to 30 s: the full 1,500 x 1,500 frame-level matrix.
  (b) an XLSR-53-size model (24 pre-LN layers, D=1024, 16 heads, FFN 4096; random init) on a 5 s
      clip (249 frames): the full matrix of a middle layer.
  (c) rows-only mode: the Whisper-base layer of (a), only the rows of the target word's frames,
      all 1,500 key columns; and (c') the same rows with one column per aligned word (span zeroing).

For each: wall time of the fast path and of the reference loop (one real layer re-run per column),
their ratio, the max abs difference of the row-normalised matrices, and the peak extra resident
memory of each call (RSS sampled every 10 ms above the level before the call; on CUDA the
allocator's peak).  With ``--ref-columns N`` the reference loop runs on N evenly spaced columns only
(its cost is exactly linear in the number of columns: one re-run each), its time is extrapolated to
all columns, and the difference is taken on those columns of the *unnormalised* distances.
"""
from __future__ import annotations

import argparse
import os
import platform
import threading
import time

import numpy as np
import torch


class PeakRSS:
    """Peak resident memory above the starting level while the block runs (sampled)."""

    def __init__(self, device="cpu", interval=0.01):
        self.device, self.interval = device, interval

    def __enter__(self):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        import psutil

        self.proc = psutil.Process()
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self.stop = False

        def run():
            while not self.stop:
                self.peak = max(self.peak, self.proc.memory_info().rss)
                time.sleep(self.interval)

        self.th = threading.Thread(target=run, daemon=True)
        self.th.start()
        return self

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.mb = (torch.cuda.max_memory_allocated() - self.base) / 2**20
            return
        self.stop = True
        self.th.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        self.mb = (self.peak - self.base) / 2**20


def timed(fn, device="cpu"):
    with PeakRSS(device) as mem:
        t = time.perf_counter()
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
    return out, dt, mem.mb


def clip_and_words(min_seconds=0.0, seed=0):
    """An offline synthetic French item (audio, alignment, target index); clips are concatenated
    (alignment shifted) until ``min_seconds`` is reached."""
    from ctxmix_lite.corpus.homophony import item_alignment, item_audio, load_homophony

    ds = load_homophony("offline", smoke=True, progress=False)
    item = ds[seed % len(ds)]
    audio, words = item_audio(item), item_alignment(item)
    target = int(item["target_index"])
    k = 1
    while len(audio) / 16000 < min_seconds:
        nxt = ds[(seed + k) % len(ds)]
        off = len(audio) / 16000
        audio = np.concatenate([audio, item_audio(nxt)])
        words = words + [dict(w, start=w["start"] + off, end=w["end"] + off) for w in item_alignment(nxt)]
        k += 1
    if min_seconds:
        n = int(min_seconds * 16000)
        audio = audio[:n]
        words = [w for w in words if w["end"] <= min_seconds]
    return audio, words, target


def run_case(label, lc, rows=None, spans=None, ref_columns=None, device="cpu", ref_cache=None):
    from ctxmix_lite.measures.value_zeroing import auto_chunk_size, value_zeroing

    H, Tq, Tk = lc.weights.shape
    C = Tk if spans is None else len(spans)
    R = Tq if rows is None else len(rows)
    chunk = auto_chunk_size(lc.out.shape[-1])
    fast, t_fast, m_fast = timed(lambda: value_zeroing(lc, rows=rows, spans=spans), device)
    if ref_columns is None or ref_columns >= C:
        if ref_cache is not None:  # rows of a full reference matrix already computed
            ref, t_ref, m_ref = ref_cache[0][rows], ref_cache[1], ref_cache[2]
        else:
            ref, t_ref, m_ref = timed(lambda: value_zeroing(lc, rows=rows, spans=spans, method="reference"), device)
        diff = float((fast - ref).abs().max())
        extrap = False
    else:
        cols = np.linspace(0, C - 1, ref_columns).round().astype(int).tolist()
        sub = [(c, c) for c in cols] if spans is None else [spans[c] for c in cols]
        ref, t_sub, m_ref = timed(lambda: value_zeroing(lc, rows=rows, spans=sub, method="reference", normalize=False), device)
        f_raw = value_zeroing(lc, rows=rows, spans=sub, normalize=False)
        diff = float((f_raw - ref).abs().max())
        t_ref = t_sub * C / len(cols)
        extrap = True
    res = dict(case=label, R=R, C=C, pairs=R * C, chunk=chunk, t_fast=t_fast, t_ref=t_ref, ratio=t_ref / t_fast,
               diff=diff, mem_fast=m_fast, mem_ref=m_ref, extrapolated=extrap)
    print(
        f"{label}: {R} rows x {C} cols | fast {t_fast:.1f} s | reference {t_ref:.1f} s"
        f"{' (extrapolated)' if extrap else ''} | ratio {t_ref / t_fast:.1f}x | max abs diff {diff:.1e}"
        f" | peak extra memory fast {m_fast:.0f} MB, reference {m_ref:.0f} MB",
        flush=True,
    )
    return res, (ref if not extrap else None), t_ref, m_ref


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="a,b,c", help="comma list of a, b, c")
    ap.add_argument("--ref-columns", type=int, default=None, help="reference on N columns only (extrapolated)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = set(args.cases.split(","))
    from ctxmix_lite.corpus.audio import words_to_frame_spans
    from ctxmix_lite.internals.capture import capture
    from ctxmix_lite.models import load_model

    dev = args.device
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"device {dev}, load average {os.getloadavg()[0]:.1f}", flush=True)
    results = []
    if cases & {"a", "c"}:
        model, proc = load_model("openai/whisper-base", device=dev)
        audio, words, target = clip_and_words()
        cap = capture(model, proc, audio, components="encoder", sampling_rate=16000)
        lc = cap["encoder"][-1]
        spans = words_to_frame_spans(words, cap.n_frames, cap.window, cap.audio_duration)
        ref_full = None
        if "a" in cases:
            res, ref, t_ref, m_ref = run_case("(a) Whisper-base encoder, 30 s window, full matrix", lc,
                                              ref_columns=args.ref_columns, device=dev)
            results.append(res)
            if ref is not None:
                ref_full = (ref, t_ref, m_ref)
        if "c" in cases:
            f, l = spans[target]
            rows = list(range(f, l + 1))
            res, *_ = run_case(f"(c) rows only: target word {words[target]['word']!r} ({len(rows)} frames), all frames",
                               lc, rows=rows, ref_columns=args.ref_columns, device=dev, ref_cache=ref_full)
            results.append(res)
            res, *_ = run_case(f"(c') rows only, one column per word ({len(spans)} word spans)", lc, rows=rows,
                               spans=spans, device=dev)
            results.append(res)
        del model, cap, lc
    if "b" in cases:
        model, proc = load_model("facebook/wav2vec2-large-xlsr-53", pretrained=False, seed=0, device=dev)
        audio, words, _ = clip_and_words(min_seconds=5.0)
        cap = capture(model, proc, audio, sampling_rate=16000)
        lc = cap["encoder"][len(cap["encoder"]) // 2]
        res, *_ = run_case(f"(b) XLSR-53-size random, 5 s clip, layer {lc.layer}, full matrix", lc,
                           ref_columns=args.ref_columns, device=dev)
        results.append(res)
    print("\n| case | rows x cols | fast (s) | reference (s) | speed-up | max abs diff | peak extra memory fast / ref (MB) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        star = "*" if r["extrapolated"] else ""
        print(f"| {r['case']} | {r['R']} x {r['C']} | {r['t_fast']:.1f} | {r['t_ref']:.1f}{star} | {r['ratio']:.1f}x | "
              f"{r['diff']:.1e} | {r['mem_fast']:.0f} / {r['mem_ref']:.0f} |")
    if any(r["extrapolated"] for r in results):
        print("\n* reference timed on a subset of columns and extrapolated (one layer re-run per column).")
    return results


if __name__ == "__main__":
    main()
