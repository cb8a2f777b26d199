"""``python -m ctxmix_lite.study``: the whole study without a notebook.

Part of the homophony study (:mod:`ctxmix_lite.study`)."""
from __future__ import annotations

import time


from .core import prompt_mass_summary, run_study, summarize, summarize_by_distance
from .runs import ModelRun, StudyOptions, course_items, default_model_runs, n_items_arg


# ================================================================================================
# command line: the whole study without a notebook
# ================================================================================================
def main(argv=None) -> int:
    """``python -m ctxmix_lite.study --n-items all --threads 2`` -- run (or resume) the study and
    write the tidy table, the exclusions and the per-layer summary as CSV under ``outputs/``."""
    import argparse

    from ctxmix_lite.course.paths import outputs_dir

    ap = argparse.ArgumentParser(prog="python -m ctxmix_lite.study", description="The homophony study: cue contribution per layer (cached, resumable).")
    ap.add_argument("--data", default="offline", help="'offline' (synthetic), 'hub' or a local path")
    ap.add_argument("--n-items", default=200, type=n_items_arg,
                    help="number of items (>= 1), or 'all' (1,000 offline)")
    ap.add_argument("--models", nargs="+", default=None,
                    help="name:init pairs (default: Whisper-base trained + random, XLSR-53 random)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep-misrecognised", action="store_true", help="do not apply the paper's exclusion rule")
    ap.add_argument("--whisper-ok-only", action="store_true",
                    help="draw the items from those the data's Whisper-base check passed (what the exclusion "
                         "rule keeps; saves transcribing the rest): study.course_items(checked_only=True)")
    ap.add_argument("--decoder-scoring", choices=("paper", "word_pooled"), default="paper",
                    help="decoder self-attention definition of the main table (all are computed and saved)")
    ap.add_argument("--skip-special-tokens", action="store_true",
                    help="the paper's --SKIP_SPECIAL_TOKENS: drop the first 3 decoder positions, renormalise")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    options = StudyOptions(args.decoder_scoring, args.skip_special_tokens)
    n = args.n_items  # None: all
    items = course_items(args.data, n, smoke=args.smoke, seed=args.seed, checked_only=args.whisper_ok_only)
    runs = ([ModelRun(*m.split(":")) for m in args.models] if args.models
            else default_model_runs(smoke=args.smoke))
    t0 = time.perf_counter()
    res = run_study(items, runs, exclude_misrecognised=not args.keep_misrecognised, threads=args.threads,
                    options=options)
    out = outputs_dir()
    res.table.to_csv(out / "study_cue_contribution.csv", index=False)
    res.exclusions.to_csv(out / "study_exclusions.csv", index=False)
    summ = res.summary()
    summ.to_csv(out / "study_summary.csv", index=False)
    summarize_by_distance(res.table).to_csv(out / "study_summary_by_distance.csv", index=False)
    vs = summarize(res.variants, by=("model_label", "init", "component", "measure", "layer", "definition", "distance_group"))
    vs.to_csv(out / "study_decoder_definitions_by_distance.csv", index=False)
    res.variant_summary().to_csv(out / "study_decoder_definitions.csv", index=False)
    prompt_mass_summary(res.decoder_mass).to_csv(out / "study_decoder_prompt_mass.csv")
    print(f"{len(items)} items, {res.table['item'].nunique()} analyses kept, {res.n_excluded} excluded "
          f"(decoder definition: {options.decoder_definition}); "
          f"{time.perf_counter() - t0:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in res.timings.items())})")
    print("exclusions by reason:\n" + res.exclusion_counts().to_string(index=False))
    print("analyses by cue distance:\n" + res.items[~res.items["excluded"]]["distance_group"].value_counts().to_string())
    piv = summ[summ["measure"] == "value_zeroing"].pivot_table(index="layer", columns=["model_label", "component"], values="mean")
    print("value zeroing, mean cue contribution per layer:\n" + piv.round(3).to_string())
    vpiv = res.variant_summary().query("measure == 'value_zeroing'").pivot_table(
        index="layer", columns=["model_label", "definition"], values="mean")
    print("decoder, value zeroing, by definition:\n" + vpiv.round(3).to_string())
    print("tables written to", out)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
