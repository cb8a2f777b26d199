"""Model registry: offline real weights, seeded random baselines, clear errors."""
import pytest
import torch

from ctxmix_lite import models as M


def test_unknown_name_lists_known_models():
    with pytest.raises(M.UnknownModelError) as err:
        M.load_model("openai/whisper-gigantic")
    msg = str(err.value)
    for name in M.KNOWN_MODELS:
        assert name in msg


def test_aliases_resolve():
    assert M.resolve_name("xlsr-53").name == "facebook/wav2vec2-large-xlsr-53"


@pytest.mark.parametrize(
    "name, stable, hidden, heads",
    [
        ("facebook/wav2vec2-base", False, 768, 12),
        ("facebook/wav2vec2-large-xlsr-53", True, 1024, 16),
        ("jonatasgrosman/wav2vec2-large-xlsr-53-french", True, 1024, 16),
        ("facebook/hubert-base-ls960", False, 768, 12),
    ],
)
def test_configs_built_in_code(name, stable, hidden, heads):
    cfg = M.build_config(name)
    assert cfg.do_stable_layer_norm is stable
    assert cfg.hidden_size == hidden and cfg.num_attention_heads == heads


@pytest.mark.parametrize(
    "name, d, layers, heads",
    [("openai/whisper-tiny", 384, 4, 6), ("openai/whisper-base", 512, 6, 8),
     ("openai/whisper-small", 768, 12, 12), ("openai/whisper-medium", 1024, 24, 16)],
)
def test_whisper_configs(name, d, layers, heads):
    cfg = M.build_config(name)
    assert (cfg.d_model, cfg.encoder_layers, cfg.decoder_layers, cfg.encoder_attention_heads) == (d, layers, layers, heads)
    assert cfg.vocab_size == 51865 and cfg.max_source_positions == 1500


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_random_init_is_seeded():
    kw = dict(pretrained=False, config_overrides={"num_hidden_layers": 1})
    a, _ = M.load_model("facebook/wav2vec2-base", seed=0, **kw)
    b, _ = M.load_model("facebook/wav2vec2-base", seed=0, **kw)
    c, _ = M.load_model("facebook/wav2vec2-base", seed=1, **kw)
    assert torch.equal(_params(a), _params(b))
    assert not torch.equal(_params(a), _params(c))


def test_random_model_is_ready_for_analysis():
    m, fe = M.load_model("facebook/wav2vec2-large-xlsr-53", pretrained=False, config_overrides={"num_hidden_layers": 1})
    assert M.attn_implementation(m) == "eager" and not m.training
    assert all(p.dtype == torch.float32 for p in m.parameters())
    assert fe.return_attention_mask is True  # layer-norm feature encoder, as the XLSR checkpoints
    assert M.model_summary(m)["layer_norm"] == "pre-LN (stable)"


def test_hub_only_model_offline_says_what_to_do():
    with pytest.raises(M.HubUnavailableError, match="pretrained=False"):
        M.load_model("jonatasgrosman/wav2vec2-large-xlsr-53-french")


def test_config_overrides_need_random_init():
    with pytest.raises(ValueError, match="randomly initialised"):
        M.load_model("facebook/wav2vec2-base", config_overrides={"num_hidden_layers": 1})


def test_bad_source():
    with pytest.raises(ValueError, match="source"):
        M.load_model("openai/whisper-base", source="ftp")


def test_unsupported_class():
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64))
    with pytest.raises(M.ModelNotSupportedError, match="not supported"):
        M.prepare_model(bert)


def test_sdpa_model_is_switched_or_refused():
    m, _ = M.load_model("facebook/hubert-base-ls960", pretrained=False, config_overrides={"num_hidden_layers": 1})
    m.set_attn_implementation("sdpa")
    with pytest.raises(M.AttentionImplementationError, match="sdpa"):
        M.ensure_eager(m)
    M.prepare_model(m)
    M.ensure_eager(m)


def test_offline_whisper_base_is_the_trained_model(whisper_base):
    model, processor = whisper_base
    assert M.attn_implementation(model) == "eager" and not model.training
    assert sum(p.numel() for p in model.parameters()) == 72_593_920
    assert processor.tokenizer.convert_tokens_to_ids("<|fr|>") == 50265


def test_random_whisper_reuses_the_offline_processor():
    m, p = M.load_model("openai/whisper-base", pretrained=False, config_overrides={"encoder_layers": 1, "decoder_layers": 1})
    assert M.model_family(m) == "whisper"
    assert p.tokenizer.convert_tokens_to_ids("<|notimestamps|>") == 50363


#: every public name ctxmix_lite.models.whisper_offline held before it was split into
#: whisper_format / whisper_convert / whisper_tokenizer / whisper_cache (issue 13)
WHISPER_OFFLINE_NAMES = [
    'AUX_FILES', 'CACHE_NAME', 'CONVERTER_VERSION', 'CT2FormatError', 'CT2Model', 'CT2_BINARY_VERSION', 'CT2_DTYPES',
    'CT2_DTYPE_NAMES', 'CT2_GELU', 'ENDOFTEXT', 'FIRST_LANGUAGE', 'FIRST_MERGE', 'INSTALL_HINT', 'MARKER_NAME',
    'MODEL_BIN_SIZE', 'NAMED_SPECIAL_IDS', 'NO_SPEECH', 'NO_TIMESTAMPS', 'N_LANGUAGES', 'N_PARAMETERS',
    'N_TIMESTAMPS', 'OfflineWhisperError', 'PART_DISTRIBUTIONS', 'PART_FILES', 'PART_PACKAGES', 'PathLike',
    'REQUIRED_FILES', 'SOT', 'SOT_LM', 'SOT_PREV', 'TIMESTAMP_BEGIN', 'TRANSCRIBE', 'TRANSLATE', 'VOCAB_SIZE',
    'WeightsNotInstalledError', 'available', 'build_whisper_base_offline', 'convert_ct2', 'default_cache_dir',
    'language_probabilities', 'load_whisper_base_offline', 'load_whisper_processor_offline', 'read_ct2_model',
    'sinusoids', 'source_files', 'whisper_config_from_ct2',
]


def test_whisper_offline_keeps_its_public_names():
    """The entry point re-exports the steps' names (also under the flat alias), the very objects
    of their home modules, and lists every one of them in __all__."""
    import importlib

    from ctxmix_lite.models import whisper_cache, whisper_convert, whisper_format, whisper_tokenizer
    from ctxmix_lite.models import whisper_offline as W

    assert importlib.import_module("ctxmix_lite.whisper_offline") is W
    missing = [n for n in WHISPER_OFFLINE_NAMES if not hasattr(W, n)]
    assert not missing, f"no longer importable from ctxmix_lite.models.whisper_offline: {missing}"
    assert set(WHISPER_OFFLINE_NAMES) <= set(W.__all__) and all(hasattr(W, n) for n in W.__all__)
    homes = (whisper_cache, whisper_convert, whisper_format, whisper_tokenizer)
    for n in WHISPER_OFFLINE_NAMES:
        owners = [m for m in homes if n in vars(m)]
        assert all(getattr(m, n) is getattr(W, n) for m in owners), n  # re-exported, not copied
    assert W.OfflineWhisperError is whisper_format.OfflineWhisperError
    assert issubclass(W.CT2FormatError, W.OfflineWhisperError) and issubclass(W.WeightsNotInstalledError, ImportError)
