#!/usr/bin/env python
"""Write the README's "Results" block from the shipped results (data/results/), so that every number
the README states is the shipped study's (one place for each fact).

    python scripts/readme_results.py           # rewrite README.md between the results markers
    python scripts/readme_results.py --check   # exit 1 if the README block differs (a test runs it)
    python scripts/readme_results.py --print   # print the block

The probe numbers are the shipped probe scores (notebook 06's ``probe.probe_study`` and
``probe.probe_by_distance`` with its seed, computed with the study).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BEGIN, END = "<!-- results:begin (scripts/readme_results.py) -->", "<!-- results:end -->"


def _f(x, nd=2):
    return "–" if x is None or x != x else f"{x:.{nd}f}"


def _short(label: str) -> str:
    return (label.replace("whisper-base", "Whisper-base").replace("wav2vec2-large-xlsr-53", "XLSR-53 architecture")
            .replace(" (trained)", " trained").replace(" (random)", " random"))


def block() -> str:
    from ctxmix_lite.study import probe, shipped
    from ctxmix_lite import study

    res = shipped.load_study()
    prov = res.provenance
    summ = res.summary()
    vs = res.variant_summary()
    runs = res.runs
    w_tr = next(r.label for r in runs if "whisper" in r.name and r.init == "trained")
    w_rd = next(r.label for r in runs if "whisper" in r.name and r.init == "random")
    xl = [r.label for r in runs if "whisper" not in r.name]
    n_an = res.table["item"].nunique()
    ex = res.exclusion_counts()
    n_items = prov["data"]["n_items"]
    dist = res.items[~res.items["excluded"]]["distance_group"].value_counts()
    out = []
    out.append(
        f"Shipped study (`data/results/{shipped.STUDY_BUNDLE}`, created {prov['created'][:10]} at commit "
        f"`{str(prov['code']['git_commit'])[:10]}` by `{prov['command']}`): the notebooks' default run, "
        f"{n_items} items drawn from those the data's Whisper-base check passed (offline build "
        f"`{prov['data']['build_key']}`, seed {prov['settings']['seed']}), Whisper-base trained and random, the "
        f"XLSR-53 architecture random; the paper's exclusion rule applied by the study with its own "
        f"transcriptions → **{n_an} analyses** (Det_Noun_Verb counted twice; "
        + ", ".join(f"{int(n)} {c} ({s})" for c, s, n in ex[["reason_code", "scope", "n"]].itertuples(index=False))
        + (" excluded" if len(ex) else "no exclusion") + "); "
        + ", ".join(f"{int(v)} {k}" for k, v in dist.items()) + ". Decoder by the paper's definition unless named.")
    out.append("")
    out.append("Mean cue contribution per layer (1-based), **Value Zeroing**:")
    out.append("")
    L = int(summ[summ["model_label"] == w_tr]["layer"].max())
    out.append("| model, component | " + " | ".join(f"L{i}" for i in range(1, L + 1)) + " |")
    out.append("|---|" + "---:|" * L)

    def row(label, comp, name, src=summ, definition=None):
        s = src[(src["model_label"] == label) & (src["component"] == comp) & (src["measure"] == "value_zeroing")]
        if definition is not None:
            s = s[s["definition"] == definition]
        vals = [s[s["layer"] == i]["mean"] for i in range(1, L + 1)]
        out.append(f"| {name} | " + " | ".join(_f(float(v.iloc[0])) if len(v) else "–" for v in vals) + " |")

    for label in (w_tr, w_rd):
        row(label, "encoder", f"{_short(label)}, encoder")
        row(label, "cross", f"{_short(label)}, cross-attention")
        row(label, "decoder", f"{_short(label)}, decoder, **paper (default)**", vs, "paper")
        row(label, "decoder", f"{_short(label)}, decoder, `skip_special_tokens`", vs, "paper+skip_special_tokens")
        row(label, "decoder", f"{_short(label)}, decoder, `word_pooled` (the course's earlier definition)", vs, "word_pooled")
    out.append("")
    for label in xl:
        s = summ[(summ["model_label"] == label) & (summ["measure"] == "value_zeroing")].sort_values("layer")
        n = len(s)
        lo, hi = s["mean"].iloc[: n // 2].mean(), s["mean"].iloc[n // 2:].mean()
        out.append(f"{_short(label)}, encoder ({n} layers): {_f(s['mean'].min(), 3)}–{_f(s['mean'].max(), 3)} in every "
                   f"layer (lower half {_f(lo, 3)}, upper half {_f(hi, 3)}).")
    others = []
    for meas, name in (("attention", "Attention"), ("attention_norm", "Attention-Norm")):
        s = vs[(vs["model_label"] == w_tr) & (vs["component"] == "decoder") & (vs["measure"] == meas) & (vs["layer"] == L)]
        p = float(s[s["definition"] == "paper"]["mean"].iloc[0])
        w = float(s[s["definition"] == "word_pooled"]["mean"].iloc[0])
        e = summ[(summ["model_label"] == w_tr) & (summ["component"] == "encoder") & (summ["measure"] == meas)]
        others.append(f"{name}: trained decoder, last layer {_f(p)} (word-pooled {_f(w)}), trained encoder "
                      f"{_f(e['mean'].min())}–{_f(e['mean'].max())}")
    out.append("Other measures: " + "; ".join(others) + ".")
    out.append("")
    pm = study.prompt_mass_summary(res.decoder_mass, "value_zeroing")
    tr = pm.xs(w_tr, level="model_label").xs("value_zeroing", level="measure")["prompt total"]
    rd = pm.xs(w_rd, level="model_label").xs("value_zeroing", level="measure")["prompt total"]
    out.append("Where the decoder's mass goes (paper normalisation, Value Zeroing, mean mass of the rows predicting "
               "the target on the four prompt tokens), layers 1–" + str(L) + ": trained "
               + ", ".join(_f(v) for v in tr.tolist()) + "; random " + ", ".join(_f(v) for v in rd.tolist()) + ".")
    out.append("")
    sd = study.summarize_by_distance(res.table)
    sd = sd[(sd["measure"] == "value_zeroing") & (sd["model_label"].isin([w_tr, w_rd]))]
    groups = sorted(set(sd["distance_group"]), key=lambda g: (g != "adjacent", g))
    if len(groups) >= 2:
        out.append("**By cue distance** (Value Zeroing, mean over items per layer; adjacent = cue right before the "
                   "target, non-adjacent = 1–3 words between):")
        out.append("")
        out.append("| model, component, cue | n | " + " | ".join(f"L{i}" for i in range(1, L + 1)) + " |")
        out.append("|---|---:|" + "---:|" * L)
        for label in (w_tr, w_rd):
            for comp, cname in (("encoder", "encoder"), ("cross", "cross-attention"), ("decoder", "decoder")):
                for g in groups:
                    s = sd[(sd["model_label"] == label) & (sd["component"] == comp) & (sd["distance_group"] == g)]
                    if not len(s):
                        continue
                    vals = [s[s["layer"] == i]["mean"] for i in range(1, L + 1)]
                    out.append(f"| {_short(label)}, {cname}, {g} | {int(s['n'].max())} | "
                               + " | ".join(_f(float(v.iloc[0])) if len(v) else "–" for v in vals) + " |")
        out.append("")
    table = res.shipped_frames.get("probe_scores")  # notebook 06's probe, shipped with the study
    if table is None:
        table = probe.probe_study(res, seed=0, progress=False)
    if len(table):
        chance = float(table["chance"].iloc[0]) if "chance" in table else float("nan")
        n = int(table["n"].iloc[0]) if "n" in table else None
        out.append(f"**Number probe** (notebook 06's code on the shipped features: 3-fold accuracy, {n} analyses, "
                   f"majority class {_f(chance)}; state 0 = the input to layer 1):")
        out.append("")
        S = int(table[table["model_label"] == w_tr]["layer"].max())
        out.append("| model, component | " + " | ".join(["0 (input)"] + [str(i) for i in range(1, S + 1)]) + " |")
        out.append("|---|" + "---:|" * (S + 1))
        for label in (w_tr, w_rd):
            for comp in ("encoder", "decoder"):
                s = table[(table["model_label"] == label) & (table["component"] == comp)].sort_values("layer")
                if len(s):
                    out.append(f"| {_short(label)}, {comp} | " + " | ".join(_f(v) for v in s["accuracy"]) + " |")
        for label in xl:
            s = table[table["model_label"] == label]
            if len(s):
                out.append("")
                out.append(f"({_short(label)}: {_f(s['accuracy'].min())}–{_f(s['accuracy'].max())} in all {len(s)} states.)")
        try:
            bd = res.shipped_frames.get("probe_by_distance")
            if bd is None:
                from ctxmix_lite.study import course_items

                d = res.provenance["settings"]
                items = course_items(res.provenance["data"]["source"], d["n_items"], seed=d["seed"], progress=False,
                                     checked_only=d["checked_only"])
                bd, _ = probe.probe_by_distance(res, items, seed=0)
            s = bd[(bd["model_label"] == w_tr) & (bd["component"] == "encoder")]
            parts = []
            for g, gg in s.groupby("distance_group"):
                gg = gg.sort_values("layer")
                parts.append(f"{g}: {_f(gg['accuracy'].iloc[0])} (input) → best {_f(gg['accuracy'].max())} "
                             f"(last layer {_f(gg['accuracy'].iloc[-1])}, n = {int(gg['n'].iloc[0])})")
            out.append("")
            out.append("The trained encoder's probe by cue distance (`probe.probe_by_distance`, notebook 06): "
                       + "; ".join(parts) + ".")
        except Exception as err:  # the data build is needed to split by distance
            out.append("")
            out.append(f"(Probe by cue distance not computed here: {type(err).__name__}.)")
        merged, corr = probe.relate_to_cue(table, res.summary())
        c = corr[(corr["model_label"] == w_tr) & (corr["component"] == "encoder")]
        if len(c):
            col = next((k for k in ("spearman", "rho", "spearman_rho") if k in c.columns), None)
            if col:
                out.append("")
                out.append(f"Across the trained encoder's layers, probe accuracy and Value Zeroing cue contribution: "
                           f"Spearman {_f(float(c[col].iloc[0]))}.")
        out.append("")
    cmp = study.paper_comparison(res.summary(), runs, probe_results=table if len(table) else None,
                                 decoder_definition=res.options.decoder_definition)
    out.append("Beside the paper (`study.paper_comparison`, computed from these numbers; Value Zeroing, decoder by "
               "the paper's definition):")
    out.append("")
    out.append("| finding | paper | here | verdict |")
    out.append("|---|---|---|---|")
    for r in cmp.itertuples(index=False):
        out.append(f"| {r.finding} | {r.paper} | {r.ours} | {r.verdict} |")
    try:
        ex_list, aprov = shipped.load_attribution()
        out.append("")
        parts = []
        for e in ex_list:
            i = e["interventions"]
            parts.append(f"*{i['cue']} … {i['target']}*: p(target) {_f(i['p'])}, cue audio silenced "
                         f"{_f(i['p_cue_audio_silenced'])}, cue token replaced {_f(i['p_cue_token_replaced'])}, both "
                         f"{_f(i['p_both'])}")
        out.append(f"Interventions (notebook 07, the {len(ex_list)} shipped examples, `data/results/"
                   f"{shipped.ATTRIBUTION_BUNDLE}`): " + "; ".join(parts) + ".")
    except shipped.ShippedResultsError:
        pass
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--print", action="store_true")
    args = ap.parse_args(argv)
    text = block()
    if args.print:
        print(text)
        return 0
    readme = ROOT / "README.md"
    src = readme.read_text()
    if BEGIN not in src or END not in src:
        print(f"README.md has no {BEGIN} ... {END} block")
        return 1
    head, rest = src.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = head + BEGIN + "\n" + text + "\n" + END + tail
    if args.check:
        same = new == src
        print("README results are up to date" if same else "README results differ from the shipped results: "
              "run python scripts/readme_results.py")
        return 0 if same else 1
    readme.write_text(new)
    print("README.md results block rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
