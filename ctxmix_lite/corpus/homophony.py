"""The French homophony data: spoken sentences whose target word sounds the same in the singular
and the plural, preceded by a cue word that carries number audibly.

Three templates, as in the study (Mohebbi et al., EMNLP 2023):

* ``Det_Noun``       -- "Elle a perdu **les** **livres** dans le train."    cue = determiner, target = noun
* ``Pronoun_Verb``   -- "**Ils** **aiment** la musique."                    cue = pronoun (liaison /z/),
  target = verb (vowel-initial, so that ils /ilz/ differs from il /il/)
* ``Det_Noun_Verb``  -- "**Les** **chats** **jouent** dans le jardin."      cue = determiner, target = noun,
  ``target_word_2`` = verb (the label is the verb's number)

Cue and target are adjacent in the examples above; the offline build also makes *non-adjacent*
items (:data:`VARIANTS`), whose intervening words keep number inaudible: pre-nominal adjectives
and degree adverbs in the noun phrase ("Elle a perdu **les** très jolis petits **livres**...";
the plural -s makes no liaison before the consonant-initial noun) and the object clitics *en*/*y*
after the pronoun ("**Ils** en **mangent** beaucoup."; the clitic starts with a vowel, so the
liaison /z/ is kept). Each item records its cue distance in words (``cue_distance`` =
``target_index - cue_index``, 1 = adjacent) and in decoder tokens (``cue_token_distance``, see
:func:`token_distance`).

Every item has a *minimal pair*: the same sentence, voice and prosody with the other number.

Offline default (:func:`build_offline`): sentences from the word lists and frames in ``data/``,
spoken by libespeak-ng + MBROLA (:mod:`ctxmix_lite.corpus.synth`) with exact word times. Checks, each
counted in the build report:

1. lexicon: ``merge(phon(sg)) == merge(phon(pl))`` in Lexique 3.82 for every target
   (:mod:`ctxmix_lite.corpus.lexicon`);
2. synthesiser: the target's phones are identical in both members of the pair, and so are the
   phones of every word except the cue;
3. cue audible: the cue's phones differ between the members; for Pronoun_Verb the plural cue ends
   in the liaison /z/ and the singular one does not;
3b. intervening words (non-adjacent items): each is a homophone of its counterpart in Lexique
   (invariant words: the same, known word) and has identical phones in both members;
4. audio: no sample clipped; word times inside the clip and in order; cue before target.

Real data: :func:`load_homophony` with ``"hub"`` (``hosein-m/french_homophone_asr``) or a local
path, mapped onto the same schema (:func:`normalize_external`); Common Voice French through
:mod:`ctxmix_lite.corpus.commonvoice`.

Every offline clip starts and ends with a pause (:data:`EDGE_SILENCE`, drawn per pair, the same for
both members), as real recordings do; word and phone times include it.

Schema (:func:`features`): ``item_id, audio{array, sampling_rate, path}, transcription, cue_word,
target_word, target_word_2, alignment[{start, end, word}], template, label, voice, pair_id,
cue_index, target_index, target_index_2, cue_distance, cue_token_distance, whisper_ok,
phones[{start, end, phone, word_index}]``.

The code lives in one module per concept; this module re-exports their public names (the course,
the notebooks and the scripts import them from here, or from ``ctxmix_lite.corpus.homophony``):

* :mod:`.items`         -- the schema (:func:`features`), accessors, :func:`check_item`;
* :mod:`.tokens`        -- Whisper decoder tokens, :func:`token_distance`;
* :mod:`.wordlists`     -- the word lists and frames in ``data/`` (:func:`load_word_lists`);
* :mod:`.pairs`         -- the design, candidate minimal pairs, quotas, pair checks, build rows;
* :mod:`.build`         -- the build key, :func:`build_offline`, build folders and reports;
* :mod:`.whisper_check` -- the Whisper transcription check (``whisper_ok``);
* :mod:`.external`      -- hub / local data -> the schema, :func:`load_homophony`.

A test that monkeypatches one of these names patches the module that owns it.
"""
from __future__ import annotations

from .build import (CODE_VERSION, DEFAULT_ITEMS, SMOKE_ITEMS, BuildOptions, build_dir,
                    build_offline, build_report, format_report)
from .external import (HUB_DATASET, HubDataUnavailable, balanced_subset, load_homophony,
                       normalize_external)
from .items import (FIELDS, LABELS, PLURAL_CUES, PRONOUNS, SAMPLE_RATE, SINGULAR_CUES, TEMPLATES,
                    HomophonyDataError, as_interval_list, check_item, check_schema,
                    cue_target_indices, features, find_cue_target, item_alignment, item_audio,
                    norm_word, to_dataset)
from .pairs import (DEFAULT_MIX, DEFAULT_VARIANT_MIX, EDGE_SILENCE, MAX_ROUNDS, PITCH_RANGE,
                    RANGE_RANGE, RATE_RANGE, VARIANT_GAP, VARIANTS, PairSpec, candidate_pairs,
                    check_pair_synthesis, far_share, pad_edges, report_counts, template_quotas,
                    variant_quotas)
from .tokens import decoder_tokenizer, text_token_ids, token_distance, tokenizer_identity
from .whisper_check import (DEFAULT_CHECK_MODEL, default_model, export_check_seed,
                            model_fingerprint, transcript_words, transcription_check,
                            whisper_item_ok)
from .wordlists import (WORDLIST_FILES, Adjective, Adverb, CliticVerb, Frame, Noun, Verb,
                        WordListError, WordLists, consonant_initial, load_word_lists,
                        vowel_initial, wordlist_dir)

__all__ = [
    "CODE_VERSION", "DEFAULT_ITEMS", "SMOKE_ITEMS", "BuildOptions", "build_dir", "build_offline",
    "build_report", "format_report",
    "HUB_DATASET", "HubDataUnavailable", "balanced_subset", "load_homophony", "normalize_external",
    "FIELDS", "LABELS", "PLURAL_CUES", "PRONOUNS", "SAMPLE_RATE", "SINGULAR_CUES", "TEMPLATES",
    "HomophonyDataError", "as_interval_list", "check_item", "check_schema", "cue_target_indices",
    "features", "find_cue_target", "item_alignment", "item_audio", "norm_word", "to_dataset",
    "DEFAULT_MIX", "DEFAULT_VARIANT_MIX", "EDGE_SILENCE", "MAX_ROUNDS", "PITCH_RANGE",
    "RANGE_RANGE", "RATE_RANGE", "VARIANT_GAP", "VARIANTS", "PairSpec", "candidate_pairs",
    "check_pair_synthesis", "far_share", "pad_edges", "report_counts", "template_quotas",
    "variant_quotas",
    "decoder_tokenizer", "text_token_ids", "token_distance", "tokenizer_identity",
    "DEFAULT_CHECK_MODEL", "default_model", "export_check_seed", "model_fingerprint",
    "transcript_words", "transcription_check", "whisper_item_ok",
    "WORDLIST_FILES", "Adjective", "Adverb", "CliticVerb", "Frame", "Noun", "Verb",
    "WordListError", "WordLists", "consonant_initial", "load_word_lists", "vowel_initial",
    "wordlist_dir",
]
