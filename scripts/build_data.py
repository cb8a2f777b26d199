#!/usr/bin/env python
"""Build (or load from the cache) the offline French homophony set and print its report.

    python scripts/build_data.py                 # 1,000 items (the notebooks' default)
    python scripts/build_data.py --smoke         # 24 items, for CI
    python scripts/build_data.py --n 200 --seed 1
    python scripts/build_data.py --check         # + Whisper-base transcription check (slow on CPU)
    python scripts/build_data.py --commonvoice ~/cv-corpus-11.0/fr --split test --n 50

The build goes to ``ctxmix_lite.paths.data_dir()/homophony/<key>`` (``data/build/`` in a checkout,
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
    ap.add_argument("--commonvoice", type=Path, default=None,
                    help="import a local Common Voice French folder instead")
    ap.add_argument("--split", default=None, help="Common Voice TSV (validated, test...)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    from ctxmix_lite import homophony as H

    t0 = time.perf_counter()
    if args.commonvoice is not None:
        from ctxmix_lite import commonvoice as CV

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
    if args.check:
        ds = H.transcription_check(ds, progress=not args.quiet)  # saves whisper_check.json
        wc = json.loads((build / "whisper_check.json").read_text())
        rep["whisper_check"] = {"model": wc["model"], "ok": wc["ok"], "checked": wc["checked"]}
        print("whisper check by template (ok, checked):", wc["by_template"])
    print(f"data: {build}")
    print(f"  dataset: {build / 'dataset'}  (datasets.load_from_disk, or "
          f"ctxmix_lite.homophony.load_homophony('offline', n={n}))")
    print(f"  clips:   {build / 'clips'}  (16-bit WAV copies)")
    print(f"  report:  {build / 'report.json'}")
    print(f"ready in {wall:.1f} s (build itself: {rep.get('build_seconds')} s when it was built)")
    print(H.format_report(rep))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
