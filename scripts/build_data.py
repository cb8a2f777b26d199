#!/usr/bin/env python
"""Build (or load from the cache) the offline French homophony set and print its report.

    python scripts/build_data.py                 # 1,000 items (the notebooks' default)
    python scripts/build_data.py --smoke         # 24 items, for CI
    python scripts/build_data.py --n 200 --seed 1
    python scripts/build_data.py --check         # + Whisper-base transcription check (slow on CPU)
    python scripts/build_data.py --check --edge-silence-effect 160   # + the same 160 items
                                                 # transcribed without their edge silence
    python scripts/build_data.py --export-check  # write data/checks/<model>.tsv from the cache
    python scripts/build_data.py --commonvoice ~/cv-corpus-11.0/fr --split test --n 50

The build goes to ``ctxmix_lite.course.paths.data_dir()/homophony/<key>`` (``data/build/`` in a checkout,
``$CTXMIX_DATA`` if set); the key hashes every input, so running it again only rebuilds when the
word lists, the code, the voices or the parameters changed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="24 items (CI)")
    ap.add_argument("--n", type=int, default=None, help="number of items (even; default 1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1, help="synthesis processes")
    ap.add_argument("--force", action="store_true", help="rebuild even if cached")
    ap.add_argument("--out", type=Path, default=None, help="build folder (default: cache key)")
    ap.add_argument("--check", action="store_true",
                    help="run the Whisper-base transcription check and store whisper_ok")
    ap.add_argument("--edge-silence-effect", type=int, default=0, metavar="N",
                    help="transcribe the first N items of the check order with and without "
                         "their edge silence and report both ok-rates (edge_silence_effect.json "
                         "in the build folder); with --check, before the check")
    ap.add_argument("--export-check", action="store_true",
                    help="write the cached transcripts of this build's items to "
                         "data/checks/<model>.tsv (the committed check; partial if the check "
                         "was interrupted)")
    ap.add_argument("--commonvoice", type=Path, default=None,
                    help="import a local Common Voice French folder instead")
    ap.add_argument("--split", default=None, help="Common Voice TSV (validated, test...)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    from ctxmix_lite.corpus import homophony as H

    t0 = time.perf_counter()
    if args.commonvoice is not None:
        from ctxmix_lite.corpus import commonvoice as CV

        out = args.out or Path(H.build_dir("commonvoice"))
        ds, rep = CV.import_common_voice(args.commonvoice, split=args.split, max_items=args.n,
                                         out_dir=out, progress=not args.quiet)
        print(f"Common Voice items: {len(ds)} -> {out}")
        print(json.dumps({k: rep[k] for k in ("rows_read", "items", "matches", "skipped")},
                         indent=1, ensure_ascii=False))
        return 0
    n = args.n if args.n is not None else (H.SMOKE_ITEMS if args.smoke else H.DEFAULT_ITEMS)
    ds = H.build_offline(n_items=n, seed=args.seed, workers=args.workers, force=args.force,
                         out_dir=args.out, progress=not args.quiet)
    wall = time.perf_counter() - t0
    build = Path(ds._ctxmix_build_dir)
    rep = H.build_report(ds)
    if args.check or args.export_check or args.edge_silence_effect:
        model, processor = H.default_model()
        name = H.model_fingerprint(model)
        order = check_order(ds)
    if args.edge_silence_effect:  # before the check: its items are the check's first ones
        eff = edge_silence_effect(ds, order[: args.edge_silence_effect], model, processor, rep,
                                  progress=not args.quiet)
        (build / "edge_silence_effect.json").write_text(
            json.dumps(eff, indent=1, ensure_ascii=False))
        print("edge silence effect:", json.dumps(eff["summary"], ensure_ascii=False))
    if args.check:
        t1 = time.perf_counter()
        # in the stratified order, so that an interrupted check covers every group evenly
        H.transcription_check(ds.select(order), model, processor, save=False,
                              progress=not args.quiet)
        print(f"whisper check: {time.perf_counter() - t1:.0f} s for {len(ds)} items")
        ds = H.transcription_check(ds, model, processor, progress=False)  # all cached: saves
        wc = json.loads((build / "whisper_check.json").read_text())
        rep["whisper_check"] = {"model": wc["model"], "ok": wc["ok"], "checked": wc["checked"]}
        print("whisper check by template (ok, checked):", wc["by_template"])
    if args.check or args.export_check:
        path = H.export_check_seed(name, ds)
        n_lines = sum(1 for x in path.read_text().splitlines() if x and not x.startswith("#"))
        print(f"committed-check file: {path} ({n_lines} of {len(ds)} items)")
    print(f"data: {build}")
    print(f"  dataset: {build / 'dataset'}  (datasets.load_from_disk, or "
          f"ctxmix_lite.corpus.homophony.load_homophony('offline', n={n}))")
    print(f"  clips:   {build / 'clips'}  (16-bit WAV copies)")
    print(f"  report:  {build / 'report.json'}")
    print(f"ready in {wall:.1f} s (build itself: {rep.get('build_seconds')} s when it was built)")
    print(H.format_report(rep))
    return 0


def check_order(ds):
    """Item indices in a stratified order: pairs together, every (template, cue distance) group
    spread evenly over the order (pair k of a group of n at position (k + 0.5) / n), so that the
    first part of an interrupted check is a sample of every group."""
    import numpy as np

    rng = np.random.default_rng(0)
    groups = {}
    for i, (p, t, d) in enumerate(zip(ds["pair_id"], ds["template"], ds["cue_distance"])):
        groups.setdefault((t, d), {}).setdefault(p, []).append(i)
    keyed = []
    for g, pairs in sorted(groups.items()):
        ids = list(pairs)
        for k, j in enumerate(rng.permutation(len(ids))):
            keyed.append(((k + 0.5) / len(ids), g, ids[j], pairs[ids[j]]))
    keyed.sort(key=lambda x: (x[0], x[1]))
    return [i for *_, idx in keyed for i in idx]


def edge_silence_effect(ds, idx, model, processor, report, progress=True) -> dict:
    """The Whisper check on items ``idx`` with their edge silence (as built) and without it (the
    same audio with the pause cut off, sample-exact: the build's report records it per pair)."""
    import numpy as np

    from ctxmix_lite.corpus import homophony as H
    from ctxmix_lite.corpus import whisper_check as WC

    sub = ds.select(idx)
    t0 = time.perf_counter()
    with_ = H.transcription_check(sub, model, processor, save=False, progress=progress)
    t_with = time.perf_counter() - t0
    edges = report["edge_silence_samples"]
    rows = []
    for r in sub:
        lead, tail = edges[r["pair_id"]]
        a = np.asarray(r["audio"]["array"], np.float32)
        assert not a[:lead].any() and not a[len(a) - tail:].any()
        rows.append({"audio": {"array": a[lead: len(a) - tail], "sampling_rate": 16000}})
    keys = [WC._audio_key(x["audio"]["array"]) for x in rows]
    name = H.model_fingerprint(model)
    known = WC._load_check_cache(name)
    todo = [i for i, k in enumerate(keys) if k not in known]
    new = {}
    t0 = time.perf_counter()
    model.eval()
    with WC._fast_attention(model):
        WC._transcribe_into(new, todo, keys, rows, model, processor, 8, progress, name)
    t_without = time.perf_counter() - t0
    known.update(new)
    items = []
    for r, k in zip(sub, keys):
        tw, tn = with_._ctxmix_transcripts[r["item_id"]], known[k]
        items.append({"item_id": r["item_id"], "template": r["template"],
                      "cue_distance": r["cue_distance"], "ok_with": H.whisper_item_ok(tw, r),
                      "ok_without": H.whisper_item_ok(tn, r), "with": tw, "without": tn})
    n = len(items)
    ok_w = sum(x["ok_with"] for x in items)
    ok_n = sum(x["ok_without"] for x in items)
    summary = {"items": n, "ok_with_edge_silence": ok_w, "ok_without": ok_n,
               "ok_only_with": sum(x["ok_with"] and not x["ok_without"] for x in items),
               "ok_only_without": sum(x["ok_without"] and not x["ok_with"] for x in items),
               "seconds_with": round(t_with, 1), "seconds_without": round(t_without, 1)}
    by = {}
    for x in items:
        g = by.setdefault("adjacent" if x["cue_distance"] == 1 else "non-adjacent", [0, 0, 0])
        g[0] += x["ok_with"]
        g[1] += x["ok_without"]
        g[2] += 1
    summary["by_distance (ok with, ok without, items)"] = by
    return {"summary": summary, "items": items}


if __name__ == "__main__":
    raise SystemExit(main())
