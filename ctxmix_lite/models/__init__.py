"""Real speech Transformers: loading them trained or random (:mod:`.loading`), where each
architecture keeps its parts (:mod:`.architectures`, one adapter table), and the packaged
Whisper-base weights (:mod:`.whisper_offline`).

A new model family is one entry in :data:`.architectures.ARCHITECTURES` (and, for random
baselines, a config in :mod:`.loading`).
"""
from .loading import (ALIASES, AttentionImplementationError, HubUnavailableError, ModelNotSupportedError,
                      ModelSpec, UnknownModelError, attn_implementation, build_config, check_analysis_state,
                      check_config_overrides, config_keys, ensure_eager, hub_offline, load_model, model_family,
                      model_summary, prepare_model, resolve_device, resolve_name, set_eager)

__all__ = ["ALIASES", "AttentionImplementationError", "HubUnavailableError", "ModelNotSupportedError", "ModelSpec",
           "UnknownModelError", "attn_implementation", "build_config", "check_analysis_state",
           "check_config_overrides", "config_keys", "ensure_eager", "hub_offline", "load_model", "model_family",
           "model_summary", "prepare_model", "resolve_device", "resolve_name", "set_eager"]
