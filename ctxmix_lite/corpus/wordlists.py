"""The word lists and frames in ``data/`` that the offline homophony set is made from: nouns,
determiners, verbs, adjectives, adverbs, clitic verbs and sentence frames, read and validated by
:func:`load_word_lists` (a malformed line is a :class:`WordListError` naming file and line).

Part of :mod:`ctxmix_lite.corpus`; the public names are also importable from :mod:`.homophony`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .items import PLURAL_CUES, SINGULAR_CUES, norm_word

_VOWELS = set("aeiouyàâäéèêëîïôöùûüÿœæh")


class WordListError(ValueError):
    """A word list or frame file in data/ is malformed (the message names file and line)."""


# ---------------------------------------------------------------------------------------------
# word lists
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Noun:
    sg: str
    pl: str
    gender: str
    category: str
    where: str


@dataclass(frozen=True)
class Verb:
    sg: str
    pl: str
    tag: Tuple[str, ...]  # tense (Pronoun_Verb) or subject categories (Det_Noun_Verb)
    continuations: Tuple[str, ...]
    where: str


@dataclass(frozen=True)
class Adjective:
    forms: Dict[Tuple[str, str], str]  # (gender m|f, number sg|pl) -> form
    categories: Tuple[str, ...]
    combine: str  # "first" | "second" | "-"
    where: str

    def form(self, gender: str, plural: bool) -> str:
        return self.forms[(gender, "pl" if plural else "sg")]


@dataclass(frozen=True)
class Adverb:
    word: str
    determiners: Tuple[str, ...]  # singular determiners it goes with, or ("*",)
    where: str


@dataclass(frozen=True)
class CliticVerb:
    clitic: str
    sg: str
    pl: str
    tense: str
    continuations: Tuple[str, ...]
    where: str


@dataclass(frozen=True)
class Frame:
    key: str  # category / tense / "" (Det_Noun_Verb)
    text: str
    where: str


@dataclass
class WordLists:
    nouns: List[Noun]
    determiners: List[Tuple[str, str, str, Tuple[str, ...]]]  # (gender, sg, pl, categories)
    verbs_pronoun: List[Verb]
    verbs_subject: List[Verb]
    frames_det_noun: Dict[str, List[Frame]]
    frames_pronoun_verb: Dict[str, List[Frame]]
    frames_det_noun_verb: List[Frame]
    sources: Dict[str, str]  # relative file name -> text (for the cache key)
    adjectives: List[Adjective] = field(default_factory=list)
    adverbs: List[Adverb] = field(default_factory=list)
    verbs_clitic: List[CliticVerb] = field(default_factory=list)


WORDLIST_FILES = ("lexicon/nouns.txt", "lexicon/determiners.txt", "lexicon/verbs_pronoun.txt",
                  "lexicon/verbs_subject.txt", "frames/det_noun.txt", "frames/pronoun_verb.txt",
                  "frames/det_noun_verb.txt", "lexicon/adjectives.txt", "lexicon/adverbs.txt",
                  "lexicon/verbs_clitic.txt")


def wordlist_dir() -> Path:
    """``$CTXMIX_WORDLISTS``, else ``<checkout>/data``."""
    env = os.environ.get("CTXMIX_WORDLISTS", "").strip()
    if env:
        return Path(env).expanduser()
    here = Path(__file__).resolve().parents[2] / "data"
    if (here / "lexicon" / "nouns.txt").is_file():
        return here
    raise WordListError(
        "The word lists (data/lexicon/*.txt, data/frames/*.txt) are not found: run from a clone "
        "of the course repository (pip install -e .) or set CTXMIX_WORDLISTS to its data/ folder.")


def _lines(path: Path, rel: str):
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        s = line.strip()
        if s and not s.startswith("#"):
            yield f"data/{rel}:{no}", s


def consonant_initial(word: str) -> bool:
    """Whether ``word`` starts with a consonant letter (no liaison or elision before it)."""
    w = norm_word(word)
    return bool(w) and w[0].isalpha() and w[0] not in _VOWELS


def vowel_initial(word: str) -> bool:  # vowel or (mute) h
    """Whether ``word`` starts with a vowel or (mute) h."""
    w = norm_word(word)
    return bool(w) and w[0] in _VOWELS and w[0] != "y"


# The data-generating functions (_generating_code) call these by their old private names; their
# source is hashed into the data build key (_build_key), so they keep them: a rename there would
# rebuild the data. Other modules use the public names.
_consonant_initial, _vowel_initial = consonant_initial, vowel_initial


def load_word_lists(folder: Optional[Path] = None) -> WordLists:
    """Read and validate the word lists and frames. Raises WordListError naming file:line."""
    folder = Path(folder) if folder else wordlist_dir()
    sources = {}
    for rel in WORDLIST_FILES:
        p = folder / rel
        if not p.is_file():
            raise WordListError(f"missing word list {p}")
        sources[rel] = p.read_text(encoding="utf-8")

    def fail(where, msg):
        raise WordListError(f"{where}: {msg}")

    nouns = []
    for where, s in _lines(folder / WORDLIST_FILES[0], WORDLIST_FILES[0]):
        parts = s.split()
        if len(parts) != 4:
            fail(where, f"expected 'singular plural gender category', got {s!r}")
        sg, pl, g, cat = parts
        if g not in ("m", "f"):
            fail(where, f"gender must be m or f, got {g!r}")
        if not (_consonant_initial(sg) and _consonant_initial(pl)):
            fail(where, f"{sg}/{pl}: nouns must start with a consonant (no elision, no liaison "
                        "with the determiner)")
        if sg == pl:
            fail(where, f"{sg}: invariant noun (singular and plural spelled alike)")
        nouns.append(Noun(sg, pl, g, cat, where))

    dets = []
    for where, s in _lines(folder / WORDLIST_FILES[1], WORDLIST_FILES[1]):
        parts = s.split()
        if len(parts) != 4 or parts[0] not in ("m", "f"):
            fail(where, f"expected 'gender singular plural categories', got {s!r}")
        if parts[1].lower() not in SINGULAR_CUES or parts[2].lower() not in PLURAL_CUES:
            fail(where, f"{parts[1]}/{parts[2]} is not a known singular/plural determiner pair")
        dets.append((parts[0], parts[1], parts[2], tuple(parts[3].split(","))))

    def verbs(rel, kind):
        out = []
        for where, s in _lines(folder / rel, rel):
            if "|" not in s:
                fail(where, "expected 'singular plural tag | continuation; ...'")
            head, rest = s.split("|", 1)
            parts = head.split()
            if len(parts) != 3:
                fail(where, f"expected 'singular plural tag' before '|', got {head.strip()!r}")
            sg, pl, tag = parts
            conts = tuple(c.strip() for c in rest.split(";") if c.strip())
            if not conts:
                fail(where, "no continuation after '|'")
            if kind == "pronoun":
                if tag not in ("present", "imperfect"):
                    fail(where, f"tense must be present or imperfect, got {tag!r}")
                if not (_vowel_initial(sg) and _vowel_initial(pl)):
                    fail(where, f"{sg}/{pl}: Pronoun_Verb needs vowel-initial verbs (liaison /z/)")
                tags = (tag,)
            else:
                if not (_consonant_initial(sg) and _consonant_initial(pl)):
                    fail(where, f"{sg}/{pl}: Det_Noun_Verb needs consonant-initial verbs")
                tags = tuple(t for t in tag.split(",") if t)
            for c in conts:
                if not _consonant_initial(c.split()[0]):
                    fail(where, f"continuation {c!r} must start with a consonant (liaison trap "
                                f"after the plural verb, e.g. 'aiment une')")
            out.append(Verb(sg, pl, tags, conts, where))
        return out

    v_pron = verbs(WORDLIST_FILES[2], "pronoun")
    v_subj = verbs(WORDLIST_FILES[3], "subject")

    def frames(rel, placeholders, keyed):
        out = {} if keyed else []
        for where, s in _lines(folder / rel, rel):
            key, text = "", s
            if keyed:
                if "|" not in s:
                    fail(where, "expected 'key | frame'")
                key, text = (x.strip() for x in s.split("|", 1))
            for ph in placeholders:
                if text.count(ph) != 1:
                    fail(where, f"frame must contain {ph} exactly once: {text!r}")
            after = text.split(placeholders[-1], 1)[1].strip()
            if after and after[0].isalpha() and not _consonant_initial(after.split()[0]):
                fail(where, f"the word after {placeholders[-1]} must start with a consonant: "
                            f"{text!r}")
            fr = Frame(key, text, where)
            if keyed:
                out.setdefault(key, []).append(fr)
            else:
                out.append(fr)
        return out

    f_dn = frames(WORDLIST_FILES[4], ("{NP}",), True)
    f_pv = frames(WORDLIST_FILES[5], ("{PRON}", "{VERB}", "{REST}"), True)
    f_dnv = frames(WORDLIST_FILES[6], ("{NP}", "{VERB}", "{REST}"), False)
    for n in nouns:
        if n.category not in f_dn:
            fail(n.where, f"category {n.category!r} has no frame in data/frames/det_noun.txt")
    for v in v_pron:
        if v.tag[0] not in f_pv:
            fail(v.where, f"tense {v.tag[0]!r} has no frame in data/frames/pronoun_verb.txt")
    for v in v_subj:
        for cat in v.tag:
            if not any(n.category == cat for n in nouns):
                fail(v.where, f"subject category {cat!r} has no noun")
    for n in nouns:
        if not _dets_for(dets, n):
            fail(n.where, f"no determiner in data/{WORDLIST_FILES[1]} for a {n.gender} "
                          f"{n.category}")

    cats = {n.category for n in nouns}
    adjs = []
    for where, s in _lines(folder / WORDLIST_FILES[7], WORDLIST_FILES[7]):
        parts = s.split()
        if len(parts) != 6:
            fail(where, "expected 'masc-sg masc-pl fem-sg fem-pl categories combine', got "
                        f"{s!r}")
        ms, mp, fs, fp, cat, comb = parts
        for w in (ms, mp, fs, fp):
            if not _consonant_initial(w):
                fail(where, f"{w}: adjectives must start with a consonant (no elision of le/la, "
                            "no liaison after les)")
        if comb not in ("first", "second", "-"):
            fail(where, f"combine must be first, second or -, got {comb!r}")
        c = tuple(x for x in cat.split(",") if x)
        bad = [x for x in c if x not in cats]
        if bad:
            fail(where, f"unknown noun categories {bad} (known: {sorted(cats)})")
        adjs.append(Adjective({("m", "sg"): ms, ("m", "pl"): mp, ("f", "sg"): fs,
                               ("f", "pl"): fp}, c, comb, where))
    advs = []
    for where, s in _lines(folder / WORDLIST_FILES[8], WORDLIST_FILES[8]):
        if "|" not in s:
            fail(where, "expected 'adverb | determiners'")
        w, d = (x.strip() for x in s.split("|", 1))
        if len(w.split()) != 1 or not _consonant_initial(w):
            fail(where, f"{w!r}: one consonant-initial word expected (no liaison before the "
                        "adjective)")
        ds = tuple(x.strip() for x in d.split(",") if x.strip())
        sg_dets = {x[1] for x in dets}
        if not ds or any(x != "*" and x not in sg_dets for x in ds):
            fail(where, f"determiners must be * or singular determiners of "
                        f"data/{WORDLIST_FILES[1]}, got {d!r}")
        advs.append(Adverb(w, ds, where))
    v_clit = []
    for where, s in _lines(folder / WORDLIST_FILES[9], WORDLIST_FILES[9]):
        if "|" not in s:
            fail(where, "expected 'clitic singular plural tense | continuation; ...'")
        head, rest = s.split("|", 1)
        parts = head.split()
        if len(parts) != 4:
            fail(where, f"expected 'clitic singular plural tense' before '|', got {head.strip()!r}")
        cl, sg, pl, tense = parts
        if not (cl.lower() in ("en", "y") or _vowel_initial(cl)):
            fail(where, f"clitic {cl!r} must start with a vowel (ils/elles keep the liaison /z/)")
        if tense not in f_pv:
            fail(where, f"tense {tense!r} has no frame in data/{WORDLIST_FILES[5]}")
        conts = tuple(c.strip() for c in rest.split(";") if c.strip())
        if not conts:
            fail(where, "no continuation after '|'")
        for c in conts:
            if not _consonant_initial(c.split()[0]):
                fail(where, f"continuation {c!r} must start with a consonant (liaison trap "
                            f"after the plural verb)")
        v_clit.append(CliticVerb(cl, sg, pl, tense, conts, where))
    return WordLists(nouns, dets, v_pron, v_subj, f_dn, f_pv, f_dnv, sources, adjs, advs, v_clit)


def _dets_for(dets, noun: Noun):
    return [d for d in dets if d[0] == noun.gender and ("*" in d[3] or noun.category in d[3])]


#: Determiner rows ``(gender, singular, plural, categories)`` of ``dets`` that go with ``noun``
#: (the private name is the one hashed into the data build key).
dets_for = _dets_for
