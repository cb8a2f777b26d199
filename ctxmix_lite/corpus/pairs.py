"""Minimal pairs of the offline homophony set: the design (templates, variants, shares, prosody
ranges), the candidate pairs drawn from the word lists, the quotas, the checks on a synthesised
pair, and the rows of a build. :func:`generating_code` lists the functions whose source is hashed
into the data build key (:mod:`.build`): most are here, in one module, because they call each
other's private helpers by name (their source cannot change without rebuilding the data); the
rest are :func:`.wordlists.load_word_lists`, :data:`.tokens.HASHED_CODE`, :func:`.items.to_dataset`
and :func:`.items.features`. Part of :mod:`ctxmix_lite.corpus`; the public names are also
importable from :mod:`.homophony`.
"""
from __future__ import annotations

import math
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from . import tokens
from .items import (SAMPLE_RATE, TEMPLATES, HomophonyDataError, check_item, features, norm_word,
                    to_dataset)
from .tokens import decoder_tokenizer, token_distance
from .wordlists import Noun, WordLists, dets_for, load_word_lists

# _noun_phrase (hashed into the data build key) calls the word lists' helper by its old name.
_dets_for = dets_for

#: Share of pairs per template (the study has 720 / 257 / 23 of 1,000; Det_Noun_Verb gets more
#: here so that every analysis has enough of it).
DEFAULT_MIX = OrderedDict([("Det_Noun", 0.56), ("Pronoun_Verb", 0.30), ("Det_Noun_Verb", 0.14)])
#: Ways of putting words between cue and target, per template, with the number of words between:
#: ``adjacent`` (0), ``adj`` (1: "le petit chat"), ``adv_adj`` (2: "le très petit chat"),
#: ``adj_adj`` (2: "le joli petit chat"), ``adv_adj_adj`` (3: "le plus joli petit chat"),
#: ``clitic`` (1: "ils en mangent").
VARIANTS = OrderedDict([
    ("Det_Noun", ("adjacent", "adj", "adv_adj", "adj_adj", "adv_adj_adj")),
    ("Pronoun_Verb", ("adjacent", "clitic")),
    ("Det_Noun_Verb", ("adjacent", "adj", "adv_adj", "adj_adj", "adv_adj_adj")),
])
VARIANT_GAP = {"adjacent": 0, "adj": 1, "adv_adj": 2, "adj_adj": 2, "adv_adj_adj": 3, "clitic": 1}
#: Share of each template's pairs per variant. Half of the noun-phrase pairs have 2-3 words
#: between cue and target, which makes 35 % of the default build (>= 30 %: :func:`far_share`).
DEFAULT_VARIANT_MIX = {
    "Det_Noun": OrderedDict([("adjacent", 0.35), ("adj", 0.15), ("adv_adj", 0.25),
                             ("adj_adj", 0.10), ("adv_adj_adj", 0.15)]),
    "Pronoun_Verb": OrderedDict([("adjacent", 0.55), ("clitic", 0.45)]),
    "Det_Noun_Verb": OrderedDict([("adjacent", 0.35), ("adj", 0.15), ("adv_adj", 0.25),
                                  ("adj_adj", 0.10), ("adv_adj_adj", 0.15)]),
}
#: Pause added at the start and at the end of every offline clip, seconds (uniform, drawn per
#: pair; both members get the same).
EDGE_SILENCE = (0.2, 0.5)
#: Prosody ranges (espeak units): rate in words per minute, pitch and pitch range 0..100.
RATE_RANGE = (145, 185)
PITCH_RANGE = (35, 65)
RANGE_RANGE = (40, 70)


# ---------------------------------------------------------------------------------------------
# candidate pairs
# ---------------------------------------------------------------------------------------------
@dataclass
class PairSpec:
    template: str
    texts: Tuple[str, str]  # (singular, plural)
    cues: Tuple[str, str]
    targets: Tuple[str, str]
    targets_2: Tuple[str, str]  # ("", "") if none
    cue_index: int
    target_index: int
    target_index_2: int
    voice: str
    rate: int
    pitch: int
    pitch_range: int
    sources: Tuple[str, ...] = ()
    variant: str = "adjacent"
    between: Tuple[Tuple[str, str], ...] = ()  # (singular, plural) form of each word between
    lead: int = 0  # edge silence, samples at 16 kHz (start, end of the clip)
    tail: int = 0


def _fill(frame: str, values: Dict[str, str]) -> Tuple[str, Dict[str, int]]:
    """Fill the placeholders; return the text and the word index of each placeholder's first word.
    ``{NP}``: det + noun (indices of NP = det); a frame starting with a placeholder is capitalised."""
    from .synth import tokenize

    text, index = frame, {}
    # word index of a placeholder = number of words before it in the filled text
    order = sorted(values, key=lambda ph: frame.index(ph))
    for ph in order:
        before = text.split(ph, 1)[0]
        index[ph] = len(tokenize(before))
        text = text.replace(ph, values[ph], 1)
    if text[:1].islower():
        text = text[0].upper() + text[1:]
    return text, index


def _word_at(text: str, idx: int) -> str:
    """The word ``idx`` of ``text`` as written there (capitalised at the sentence start)."""
    from .synth import tokenize

    return tokenize(text)[idx][0]


class _Prosody:
    def __init__(self, rng, voices):
        self.rng, self.voices, self.k = rng, list(voices), 0
        self.order = list(rng.permutation(len(self.voices)))

    def next(self):
        if self.k == len(self.order):
            self.order, self.k = list(self.rng.permutation(len(self.voices))), 0
        v = self.voices[self.order[self.k]]
        self.k += 1
        r = self.rng
        lo, hi = (int(round(x * SAMPLE_RATE)) for x in EDGE_SILENCE)
        return dict(voice=v, rate=int(r.integers(RATE_RANGE[0], RATE_RANGE[1] + 1)),
                    pitch=int(r.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
                    pitch_range=int(r.integers(RANGE_RANGE[0], RANGE_RANGE[1] + 1)),
                    lead=int(r.integers(lo, hi + 1)), tail=int(r.integers(lo, hi + 1)))


#: Determiners not used before an adjective: careful French turns plural "des" into "de" there
#: ("de petits chats"), which would change the cue.
_NO_ADJ_DETS = ("un", "une")


def _noun_phrase(variant: str, noun: Noun, lists: WordLists, pick):
    """``(determiner row, [(singular, plural) of each word between determiner and noun])`` for a
    noun-phrase variant, or None when the lists offer no such phrase for this noun."""
    dets = _dets_for(lists.determiners, noun)
    if variant != "adjacent":
        dets = [d for d in dets if d[1] not in _NO_ADJ_DETS]
    if not dets:
        return None
    det = pick(dets)
    adjs = [a for a in lists.adjectives if noun.category in a.categories]
    g = noun.gender

    def forms(a):
        return (a.form(g, False), a.form(g, True))

    mods = []
    if variant in ("adv_adj", "adv_adj_adj"):
        advs = [a for a in lists.adverbs if "*" in a.determiners or det[1] in a.determiners]
        if not advs:
            return None
        w = pick(advs).word
        mods.append((w, w))
    if variant in ("adj", "adv_adj"):
        if not adjs:
            return None
        mods.append(forms(pick(adjs)))
    elif variant in ("adj_adj", "adv_adj_adj"):
        firsts = [a for a in adjs if a.combine == "first"]
        seconds = [a for a in adjs if a.combine == "second"]
        if not firsts or not seconds:
            return None
        mods += [forms(pick(firsts)), forms(pick(seconds))]
    elif variant != "adjacent":
        raise ValueError(f"unknown noun-phrase variant {variant!r}")
    return det, mods


MAX_ROUNDS = 400


def candidate_pairs(template: str, lists: WordLists, rng, voices, prosody=None,
                    variant: str = "adjacent") -> Iterator[PairSpec]:
    """Endless-until-exhausted stream of distinct minimal pairs for ``template`` and ``variant``
    (:data:`VARIANTS`; deterministic for a given numpy Generator). Words are visited round-robin
    so that a small build still uses many different targets. ``prosody``: a shared voice/prosody
    drawer (balances voices across templates); default: one of its own from ``rng``."""
    if template not in VARIANTS:
        raise ValueError(f"unknown template {template!r}; expected one of {TEMPLATES}")
    if variant not in VARIANTS[template]:
        raise ValueError(f"unknown variant {variant!r} of {template}; expected one of "
                         f"{VARIANTS[template]}")
    pros = prosody or _Prosody(rng, voices)
    seen = set()

    def pick(seq):
        return seq[int(rng.integers(len(seq)))]

    def np_text(det, mods, n, k):
        return " ".join([det[1 + k]] + [m[k] for m in mods] + [(n.sg, n.pl)[k]])

    if template == "Det_Noun":
        nouns = [lists.nouns[i] for i in rng.permutation(len(lists.nouns))]
        for _ in range(MAX_ROUNDS):
            for n in nouns:
                fr = pick(lists.frames_det_noun[n.category])
                npx = _noun_phrase(variant, n, lists, pick)
                if npx is None:
                    continue
                det, mods = npx
                key = (fr.text, det, tuple(mods), n.sg)
                if key in seen:
                    continue
                seen.add(key)
                (t_sg, ix), (t_pl, _) = (_fill(fr.text, {"{NP}": np_text(det, mods, n, 0)}),
                                         _fill(fr.text, {"{NP}": np_text(det, mods, n, 1)}))
                ci = ix["{NP}"]
                yield PairSpec(template, (t_sg, t_pl), (_word_at(t_sg, ci),
                               _word_at(t_pl, ci)), (n.sg, n.pl), ("", ""), ci,
                               ci + 1 + len(mods), -1, sources=(n.where, fr.where),
                               variant=variant, between=tuple(mods), **pros.next())
    elif template == "Pronoun_Verb" and variant == "adjacent":
        verbs = [lists.verbs_pronoun[i] for i in rng.permutation(len(lists.verbs_pronoun))]
        for _ in range(MAX_ROUNDS):
            for v in verbs:
                fr, rest = pick(lists.frames_pronoun_verb[v.tag[0]]), pick(v.continuations)
                pron = pick(("il", "elle"))
                key = (fr.text, rest, pron, v.sg)
                if key in seen:
                    continue
                seen.add(key)
                t_sg, ix = _fill(fr.text, {"{PRON}": pron, "{VERB}": v.sg, "{REST}": rest})
                t_pl, _ = _fill(fr.text, {"{PRON}": pron + "s", "{VERB}": v.pl, "{REST}": rest})
                ci, ti = ix["{PRON}"], ix["{VERB}"]
                yield PairSpec(template, (t_sg, t_pl), (_word_at(t_sg, ci),
                               _word_at(t_pl, ci)), (v.sg, v.pl), ("", ""), ci, ti, -1,
                               sources=(v.where, fr.where), **pros.next())
    elif template == "Pronoun_Verb":  # clitic: "ils en mangent"
        verbs = [lists.verbs_clitic[i] for i in rng.permutation(len(lists.verbs_clitic))]
        for _ in range(MAX_ROUNDS):
            for v in verbs:
                fr, rest = pick(lists.frames_pronoun_verb[v.tense]), pick(v.continuations)
                pron = pick(("il", "elle"))
                key = (fr.text, rest, pron, v.clitic, v.sg)
                if key in seen:
                    continue
                seen.add(key)
                t_sg, ix = _fill(fr.text, {"{PRON}": pron, "{VERB}": f"{v.clitic} {v.sg}",
                                           "{REST}": rest})
                t_pl, _ = _fill(fr.text, {"{PRON}": pron + "s", "{VERB}": f"{v.clitic} {v.pl}",
                                          "{REST}": rest})
                ci, ti = ix["{PRON}"], ix["{VERB}"] + 1
                yield PairSpec(template, (t_sg, t_pl), (_word_at(t_sg, ci),
                               _word_at(t_pl, ci)), (v.sg, v.pl), ("", ""), ci, ti, -1,
                               sources=(v.where, fr.where), variant=variant,
                               between=((v.clitic, v.clitic),), **pros.next())
    else:  # Det_Noun_Verb
        verbs = [lists.verbs_subject[i] for i in rng.permutation(len(lists.verbs_subject))]
        for _ in range(MAX_ROUNDS):
            for v in verbs:
                n = pick([x for x in lists.nouns if x.category in v.tag])
                npx = _noun_phrase(variant, n, lists, pick)
                if npx is None:
                    continue
                det, mods = npx
                fr, rest = pick(lists.frames_det_noun_verb), pick(v.continuations)
                key = (fr.text, rest, det, tuple(mods), n.sg, v.sg)
                if key in seen:
                    continue
                seen.add(key)
                t_sg, ix = _fill(fr.text, {"{NP}": np_text(det, mods, n, 0), "{VERB}": v.sg,
                                           "{REST}": rest})
                t_pl, _ = _fill(fr.text, {"{NP}": np_text(det, mods, n, 1), "{VERB}": v.pl,
                                          "{REST}": rest})
                ci = ix["{NP}"]
                yield PairSpec(template, (t_sg, t_pl), (_word_at(t_sg, ci),
                               _word_at(t_pl, ci)), (n.sg, n.pl), (v.sg, v.pl), ci,
                               ci + 1 + len(mods), ix["{VERB}"],
                               sources=(n.where, v.where, fr.where), variant=variant,
                               between=tuple(mods), **pros.next())


def template_quotas(n_pairs: int, mix=None) -> Dict[str, int]:
    """Pairs per template: largest-remainder rounding of ``n_pairs * share``, at least 1 each."""
    mix = OrderedDict(mix or DEFAULT_MIX)
    if set(mix) - set(TEMPLATES):
        raise ValueError(f"unknown templates in mix: {sorted(set(mix) - set(TEMPLATES))}")
    total = sum(mix.values())
    raw = {t: n_pairs * mix[t] / total for t in mix}
    q = {t: int(math.floor(raw[t])) for t in mix}
    for t in sorted(mix, key=lambda t: -(raw[t] - q[t]))[: n_pairs - sum(q.values())]:
        q[t] += 1
    for t in mix:  # every template present
        if q[t] == 0 and mix[t] > 0 and n_pairs >= len(mix):
            donor = max(q, key=q.get)
            q[donor] -= 1
            q[t] += 1
    return dict(q)


def _largest_remainder(n: int, shares: Dict[str, float]) -> Dict[str, int]:
    total = sum(shares.values())
    raw = {k: n * v / total for k, v in shares.items()}
    q = {k: int(math.floor(raw[k])) for k in shares}
    for k in sorted(shares, key=lambda k: -(raw[k] - q[k]))[: n - sum(q.values())]:
        q[k] += 1
    return q


def variant_quotas(n_pairs: int, mix=None, variant_mix=None) -> Dict[Tuple[str, str], int]:
    """Pairs per (template, variant): :func:`template_quotas`, then each template's pairs split
    over its variants (:data:`DEFAULT_VARIANT_MIX`) by largest-remainder rounding."""
    vm = variant_mix or DEFAULT_VARIANT_MIX
    out = OrderedDict()
    for t, n in template_quotas(n_pairs, mix).items():
        shares = OrderedDict(vm.get(t) or {"adjacent": 1.0})
        bad = [v for v in shares if v not in VARIANTS[t]]
        if bad:
            raise ValueError(f"unknown variants of {t}: {bad}; expected {VARIANTS[t]}")
        for v, k in _largest_remainder(n, shares).items():
            out[(t, v)] = k
    return dict(out)


def far_share(quotas: Dict[Tuple[str, str], int], lo: int = 2, hi: int = 4) -> float:
    """Share of pairs (= of items) with ``lo``..``hi`` words between cue and target."""
    n = sum(quotas.values())
    return sum(k for (t, v), k in quotas.items() if lo <= VARIANT_GAP[v] <= hi) / max(n, 1)


# ---------------------------------------------------------------------------------------------
# checks on a synthesised pair
# ---------------------------------------------------------------------------------------------
def check_pair_synthesis(spec: PairSpec, sg, pl) -> Optional[str]:
    """None if the pair passes the synthesiser checks, else the exclusion reason."""
    for s in (sg, pl):
        if s.clipped:
            return "clipping"
        n = len(s.words)
        if any(not (0 <= w["start"] <= w["end"] <= s.duration + 1e-6) for w in s.words) or any(
                s.words[k]["start"] < s.words[k - 1]["start"] for k in range(1, n)):
            return "alignment_invalid"
    if len(sg.words) != len(pl.words):
        return "alignment_invalid"
    idx = [spec.cue_index, spec.target_index] + (
        [spec.target_index_2] if spec.target_index_2 >= 0 else [])
    for s, cue, tgt, tgt2 in ((sg, spec.cues[0], spec.targets[0], spec.targets_2[0]),
                              (pl, spec.cues[1], spec.targets[1], spec.targets_2[1])):
        want = [cue, tgt] + ([tgt2] if spec.target_index_2 >= 0 else [])
        if [norm_word(s.words[i]["word"]) for i in idx] != [norm_word(w) for w in want]:
            return "alignment_invalid"
    if sg.word_phones(spec.target_index) != pl.word_phones(spec.target_index):
        return "synth_target_phones_differ"
    if spec.target_index_2 >= 0 and (sg.word_phones(spec.target_index_2)
                                     != pl.word_phones(spec.target_index_2)):
        return "synth_target2_phones_differ"
    for k in range(spec.cue_index + 1, spec.target_index):  # the words between cue and target
        if sg.word_phones(k) != pl.word_phones(k):
            return "synth_intervening_phones_differ"
    cue_sg, cue_pl = sg.word_phones(spec.cue_index), pl.word_phones(spec.cue_index)
    if cue_sg == cue_pl:
        return "cue_not_audible"
    if spec.template == "Pronoun_Verb" and not (cue_pl[-1:] == ["z"] and cue_sg[-1:] != ["z"]):
        return "cue_liaison_missing"
    for k in range(len(sg.words)):
        if k != spec.cue_index and sg.word_phones(k) != pl.word_phones(k):
            return "context_phones_differ"
    return None


def pad_edges(s, lead: int, tail: int):
    """A copy of Synthesis ``s`` with ``lead`` / ``tail`` samples of silence (zeros) at its start
    and end; word and phone times shifted by ``lead / sampling_rate``."""
    from dataclasses import replace

    if lead < 0 or tail < 0:
        raise ValueError(f"edge silence must be >= 0 samples, got {lead}, {tail}")
    dt = lead / s.sampling_rate
    audio = np.concatenate([np.zeros(lead, np.float32), np.asarray(s.audio, np.float32),
                            np.zeros(tail, np.float32)])
    words = [dict(w, start=w["start"] + dt, end=w["end"] + dt) for w in s.words]
    phones = [dict(p, start=p["start"] + dt, end=p["end"] + dt) for p in s.phones]
    return replace(s, audio=audio, words=words, phones=phones)


def _build_rows(n_items, seed, voices, mix, lists, workers, progress, tmp: Path, out: Path,
                variant_mix=None):
    from tqdm.auto import tqdm

    from . import lexicon, synth

    n_pairs = n_items // 2
    quotas = template_quotas(n_pairs, mix)
    vquotas = variant_quotas(n_pairs, mix, variant_mix)
    rng = np.random.default_rng(seed)
    rngs = dict(zip(TEMPLATES, rng.spawn(len(TEMPLATES))))
    rngs = {(t, v): r for t in TEMPLATES for v, r in zip(VARIANTS[t], rngs[t].spawn(
        len(VARIANTS[t])))}
    tok = decoder_tokenizer()
    prosody = _Prosody(rng, voices)  # shared: voices balanced over the whole set
    excluded, examples = Counter(), {}
    examined, examined_v, excluded_v = Counter(), Counter(), Counter()
    lex_checked, lex_failed = set(), {}
    between_checked, between_failed = set(), {}
    saturations = 0
    accepted: List[Tuple[PairSpec, object, object]] = []

    def exclude(reason, spec):
        excluded[reason] += 1
        excluded_v[f"{spec.template}/{spec.variant}/{reason}"] += 1
        ex = examples.setdefault(reason, [])
        if len(ex) < 5:
            ex.append(spec.texts[1])

    bar = tqdm(total=n_pairs, desc="homophony pairs", disable=not progress)
    pool = None
    if workers > 1:
        import multiprocessing as mp

        pool = mp.get_context("spawn").Pool(workers)
    try:
        for (template, variant), need in vquotas.items():
            if need == 0:
                continue
            stream = candidate_pairs(template, lists, rngs[(template, variant)], voices, prosody,
                                     variant=variant)
            got = 0
            while got < need:
                # a chunk of candidates that pass the lexicon check, synthesised together
                chunk = []
                while len(chunk) < min(64, (need - got) + max(1, (need - got) // 8)):
                    try:
                        spec = next(stream)
                    except StopIteration:
                        raise HomophonyDataError(
                            f"the word lists give only {got} valid {template}/{variant} pairs; "
                            f"{need} wanted. Add words/frames in data/ or lower n_items.") from None
                    chunk.append(spec)
                jobs = []
                for spec in chunk:
                    for k in (0, 1):
                        jobs.append(dict(text=spec.texts[k], voice=spec.voice, rate=spec.rate,
                                         pitch=spec.pitch, pitch_range=spec.pitch_range))
                lex = []
                for spec in chunk:
                    reason = None
                    for a, b in (spec.targets, spec.targets_2):
                        if a:
                            r = lexicon.check_pair(a, b)
                            lex_checked.add((a, b))
                            if r:
                                lex_failed[f"{a}/{b}"] = r.split(":")[0]
                                reason = reason or r.split(":")[0]
                    for a, b in spec.between:  # intervening words: homophones (or invariant)
                        r = lexicon.check_pair(a, b)
                        between_checked.add((a, b))
                        if r:
                            between_failed[f"{a}/{b}"] = r.split(":")[0]
                            reason = reason or "intervening_" + r.split(":")[0]
                    lex.append(reason)
                # only synthesise what passed the lexicon
                todo = [j for i, j in enumerate(jobs) if lex[i // 2] is None]
                if pool is not None:
                    res = pool.map(synth._safe, todo, chunksize=4)
                else:
                    res = [synth._safe(j) for j in todo]
                it = iter(res)
                for i, spec in enumerate(chunk):
                    if got >= need:
                        break  # candidates past the quota are not counted
                    examined[template] += 1
                    examined_v[f"{template}/{variant}"] += 1
                    if lex[i] is not None:
                        exclude(lex[i], spec)
                        continue
                    sg, pl = next(it), next(it)
                    if isinstance(sg, Exception) or isinstance(pl, Exception):
                        err = sg if isinstance(sg, Exception) else pl
                        if isinstance(err, synth.SynthesizerUnavailable):
                            raise err
                        exclude("synthesis_error", spec)
                        continue
                    reason = check_pair_synthesis(spec, sg, pl)
                    if reason:
                        exclude(reason, spec)
                        continue
                    saturations += sg.saturations + pl.saturations
                    accepted.append((spec, pad_edges(sg, spec.lead, spec.tail),
                                     pad_edges(pl, spec.lead, spec.tail)))
                    got += 1
                    bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()

    rows = []
    import soundfile as sf

    counters = Counter()
    edges, tok_fail = {}, 0
    for spec, sg, pl in accepted:
        counters[spec.template] += 1
        pair_id = f"{spec.template}-{counters[spec.template]:04d}"
        edges[pair_id] = [spec.lead, spec.tail]
        for k, (s, label) in enumerate(((sg, "singular"), (pl, "plural"))):
            words = [w["word"] for w in s.words]
            tdist = token_distance(s.text, words, spec.cue_index, spec.target_index, tok)
            tok_fail += tdist < 0
            item_id = f"{pair_id}-{'sg' if k == 0 else 'pl'}"
            sf.write(str(tmp / "clips" / f"{item_id}.wav"), s.audio, SAMPLE_RATE,
                     subtype="PCM_16")  # a 16-bit copy for listening / other tools
            row = {
                "item_id": item_id,
                "audio": {"array": s.audio, "sampling_rate": SAMPLE_RATE,
                          "path": str(out / "clips" / f"{item_id}.wav")},
                "transcription": s.text,
                "cue_word": spec.cues[k],
                "target_word": spec.targets[k],
                "target_word_2": spec.targets_2[k],
                "alignment": [dict(start=w["start"], end=w["end"], word=w["word"])
                              for w in s.words],
                "template": spec.template,
                "label": label,
                "voice": s.voice,
                "pair_id": pair_id,
                "cue_index": spec.cue_index,
                "target_index": spec.target_index,
                "target_index_2": spec.target_index_2,
                "cue_distance": spec.target_index - spec.cue_index,
                "cue_token_distance": tdist,
                "whisper_ok": None,
                "phones": [dict(start=p["start"], end=p["end"], phone=p["phone"],
                                word_index=p["word_index"]) for p in s.phones],
            }
            check_item(row, duration=s.duration)
            rows.append(row)
    report = {
        "n_items": len(rows), "n_pairs": len(accepted), "seed": seed, "quotas": quotas,
        "variant_quotas": {f"{t}/{v}": k for (t, v), k in vquotas.items()},
        "voices": list(voices),
        "counts": _counts(rows),
        "candidates_examined": dict(examined),
        "candidates_examined_by_variant": dict(examined_v),
        "excluded": dict(sorted(excluded.items())),
        "excluded_by_variant": dict(sorted(excluded_v.items())),
        "excluded_examples": examples,
        "edge_silence_samples": edges,
        "checks": {
            "lexicon_pairs_checked": len(lex_checked),
            "lexicon_failures": dict(sorted(lex_failed.items())),
            "intervening_lexicon_pairs_checked": len(between_checked),
            "intervening_lexicon_failures": dict(sorted(between_failed.items())),
            "intervening_words_checked": sorted(f"{a}/{b}" for a, b in between_checked),
            "pairs_with_identical_intervening_phones": sum(1 for s, _, _ in accepted
                                                           if s.between),
            "items_without_token_distance": tok_fail,
            "pairs_with_identical_target_phones": len(accepted),
            "pronoun_verb_plural_cue_ends_in_z": sum(
                1 for s, _, p in accepted if s.template == "Pronoun_Verb"
                and p.word_phones(s.cue_index)[-1:] == ["z"]),
            "pronoun_verb_singular_cue_without_z": sum(
                1 for s, g, _ in accepted if s.template == "Pronoun_Verb"
                and g.word_phones(s.cue_index)[-1:] != ["z"]),
            "items_clipped": 0,
            "mbrola_saturation_warnings": saturations,
        },
        "lexicon": {"source": lexicon.source_version(), "attribution": lexicon.ATTRIBUTION},
    }
    return rows, report


def report_counts(rows) -> dict:
    """The ``counts`` section of a build report: items by template, label, voice, cue distance
    (in words and tokens) and their combinations, and the clips' durations in seconds."""
    c = {"template": Counter(), "label": Counter(), "voice": Counter(), "template_label": Counter(),
         "cue_distance": Counter(), "template_distance_label": Counter(),
         "cue_token_distance": Counter()}
    dur = []
    for r in rows:
        c["cue_distance"][str(r["cue_distance"])] += 1
        c["cue_token_distance"][str(r["cue_token_distance"])] += 1
        c["template_distance_label"][f"{r['template']}/{r['cue_distance']}/{r['label']}"] += 1
        c["template"][r["template"]] += 1
        c["label"][r["label"]] += 1
        c["voice"][r["voice"]] += 1
        c["template_label"][f"{r['template']}/{r['label']}"] += 1
        dur.append(len(r["audio"]["array"]) / SAMPLE_RATE)
    out = {k: dict(sorted(v.items())) for k, v in c.items()}
    if dur:
        out["duration_s"] = {"total": round(float(np.sum(dur)), 1),
                             "mean": round(float(np.mean(dur)), 2),
                             "min": round(float(np.min(dur)), 2),
                             "max": round(float(np.max(dur)), 2)}
    return out


_counts = report_counts  # called so by _build_rows, whose source is hashed into the data build key


#: The public name of :func:`_build_rows` (its source, and so its name, is hashed into the build key).
build_rows = _build_rows


def generating_code() -> tuple:
    """The functions that make the offline data, in the order their source is hashed into the
    data build key (:func:`.build._build_key`): a change to any of them rebuilds the data."""
    return ((load_word_lists, _dets_for, _fill, _word_at, _Prosody, _noun_phrase, candidate_pairs,
             template_quotas, _largest_remainder, variant_quotas, check_pair_synthesis, pad_edges)
            + tokens.HASHED_CODE + (_build_rows, to_dataset, features))
