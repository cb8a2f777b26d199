"""DEVICE plumbing: every path that feeds a model gives it its inputs on the model's device, and
what is stored or compared comes back to the CPU.

No GPU here: the model is moved to PyTorch's ``meta`` device (shapes only, no data), and forward
pre-hooks record the device of what each module receives, then stop the run. Left on the CPU, the
inputs would be recorded as ``cpu`` (the failure these tests catch). The CUDA test at the end
compares real runs on the GPU with the CPU when one is visible.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ctxmix_lite import attribution as A
from ctxmix_lite import capture as C
from ctxmix_lite import layer as L
from ctxmix_lite import study as S
from ctxmix_lite.models import load_model

META = torch.device("meta")


class _Stop(Exception):
    pass


def _spy(seen: dict, name: str, stop: bool = True):
    def hook(module, args, kwargs):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        tensors += [v for v in kwargs.values() if isinstance(v, torch.Tensor)]
        seen[name] = {t.device.type for t in tensors}
        if stop:
            raise _Stop

    return hook


def _devices_seen(module, run, name: str = "module") -> set:
    """The device types of what ``module`` receives when ``run()`` executes (stopped right there)."""
    seen = {}
    h = module.register_forward_pre_hook(_spy(seen, name), with_kwargs=True)
    try:
        with pytest.raises(_Stop):
            run()
    finally:
        h.remove()
    return seen[name]


def _noise(seconds=1.0, seed=0):
    return (np.random.default_rng(seed).standard_normal(int(16000 * seconds)) * 0.1).astype(np.float32)


@pytest.fixture(scope="module")
def whisper_meta():
    m, p = load_model("openai/whisper-base", pretrained=False,
                      config_overrides={"encoder_layers": 1, "decoder_layers": 1})
    return m.to(META), p


@pytest.fixture(scope="module")
def wav2vec2_meta():
    m, p = load_model("facebook/wav2vec2-base", pretrained=False, config_overrides={"num_hidden_layers": 1})
    return m.to(META), p


def test_model_device_and_the_helpers_are_no_ops_on_the_cpu():
    lin = torch.nn.Linear(2, 2)
    assert C.model_device(lin) == torch.device("cpu")
    assert C.model_device(lin.to(META)) == META
    x = torch.ones(3)
    assert C.to_device(x, "cpu") is x  # no copy: CPU runs are bit for bit what they were

    def fn(a):
        return a

    assert C.on_device(fn, "cpu") is fn
    batch = C.to_device({"a": x, "b": [x, 1], "c": "text"}, META)
    assert batch["a"].device == META and batch["b"][0].device == META and batch["b"][1] == 1
    assert batch["c"] == "text"


def test_on_device_sends_the_arguments_and_brings_the_result_home():
    seen = {}

    def post(resid, attn_out):
        seen["args"] = (resid.device.type, attn_out.device.type)
        return torch.zeros(2, 3, device=resid.device).new_zeros(2, 3, device="cpu") + 1.0

    out = C.on_device(post, META)(torch.ones(2, 3), torch.ones(2, 3))
    assert seen["args"] == ("meta", "meta") and out.device.type == "cpu"


def test_transcribe_generates_from_features_on_the_model_device(whisper_meta, monkeypatch):
    m, p = whisper_meta
    seen = {}

    def generate(features, **kwargs):
        seen["features"] = features.device.type
        raise _Stop

    monkeypatch.setattr(m, "generate", generate)
    with pytest.raises(_Stop):
        C.transcribe(m, p, _noise(), sampling_rate=16000)
    assert seen["features"] == "meta"


@pytest.mark.parametrize("path", ["capture", "rows_capture", "target_log_prob", "integrated_gradients"])
def test_whisper_paths_feed_the_encoder_on_the_model_device(whisper_meta, path):
    m, p = whisper_meta
    audio = _noise()
    run = {
        "capture": lambda: C.capture(m, p, audio, transcription="bonjour", sampling_rate=16000),
        "rows_capture": lambda: S.whisper_rows_capture(m, p, audio, [1, 2, 3], [0, 1]),
        "target_log_prob": lambda: A.target_log_prob(m, torch.zeros(1, 80, 3000), [1, 2, 3], [2]),
        "integrated_gradients": lambda: A.integrated_gradients(m, p, audio, [1, 2, 3], [2], steps=1,
                                                               batch_size=1),
    }[path]
    encoder, _ = C.whisper_parts(m)
    assert _devices_seen(encoder, run) == {"meta"}


def test_nb01_layer_io_feeds_features_and_token_ids_on_the_model_device(whisper_meta):
    """Notebook 01's true layer inputs: the model receives its features and decoder ids on its device."""
    from ctxmix_lite.exercises import nb01

    m, p = whisper_meta
    assert _devices_seen(m, lambda: nb01.whisper_layer_io(m, p, _noise(), "bonjour")) == {"meta"}


@pytest.mark.parametrize("path", ["capture", "rows_capture", "target_log_prob"])
def test_whisper_paths_feed_the_decoder_on_the_model_device(whisper_meta, path):
    """The encoder runs on ``meta`` (shapes only); the decoder's token ids must be there too."""
    m, p = whisper_meta
    audio = _noise()
    run = {
        "capture": lambda: C.capture(m, p, audio, decoder_input_ids=[50258, 50265, 50359, 50363, 1, 2],
                                     sampling_rate=16000),
        "rows_capture": lambda: S.whisper_rows_capture(m, p, audio, [1, 2, 3], [0, 1]),
        "target_log_prob": lambda: A.target_log_prob(m, torch.zeros(1, 80, 3000), [1, 2, 3], [2]),
    }[path]
    _, decoder = C.whisper_parts(m)
    assert _devices_seen(decoder, run) == {"meta"}


@pytest.mark.parametrize("path", ["capture", "ctc_transcribe", "nb01_layer_io"])
def test_wav2vec2_paths_feed_the_model_on_its_device(wav2vec2_meta, path):
    from ctxmix_lite.exercises import nb01

    m, p = wav2vec2_meta
    audio = _noise()
    run = {"capture": lambda: C.capture(m, p, audio, sampling_rate=16000),
           "ctc_transcribe": lambda: S.core._ctc_transcribe(m, p, audio),
           "nb01_layer_io": lambda: nb01.wav2vec2_layer_io(m, audio)}[path]
    assert _devices_seen(m, run) == {"meta"}


def test_compare_with_transformers_runs_each_layer_where_its_module_is(monkeypatch):
    """LayerIO records are kept on the CPU; the from-scratch layer is fed on its module's device."""
    module = torch.nn.Linear(4, 4).to(META)
    x, y = torch.randn(1, 3, 4), torch.randn(1, 3, 4)
    rec = L.LayerIO(module, 0, x, {"attention_mask": torch.zeros(1, 1, 3, 3)}, y)
    seen = []

    def fake_from_scratch(mod, dtype=None):
        class F:
            kind = "pre_ln"

            def __call__(self, h, **inputs):
                seen.append({h.device.type} | {v.device.type for v in inputs.values()})
                return y.clone()  # a CPU result, as ``.cpu()`` of a real one

        return F()

    monkeypatch.setattr(L, "from_scratch_layer", fake_from_scratch)
    row = L.compare_with_transformers([rec], float64=True)[0]
    assert seen == [{"meta"}, {"meta"}] and row["max_abs_diff"] == 0.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_runs_match_the_cpu_and_return_cpu_tensors():
    from ctxmix_lite.attention_norm import attention_norm
    from ctxmix_lite.value_zeroing import value_zeroing

    audio = _noise(2.0)
    ov = {"encoder_layers": 2, "decoder_layers": 2}
    mc, p = load_model("openai/whisper-base", pretrained=False, config_overrides=ov)
    mg, _ = load_model("openai/whisper-base", pretrained=False, config_overrides=ov, device="cuda")
    ids = [50258, 50265, 50359, 50363, 1, 2, 3]
    cc = C.capture(mc, p, audio, decoder_input_ids=ids, sampling_rate=16000)
    cg = C.capture(mg, p, audio, decoder_input_ids=ids, sampling_rate=16000)
    for comp in ("encoder", "decoder", "cross"):
        for a, b in zip(cc[comp], cg[comp]):
            for name in ("weights", "values", "resid", "attn_out", "out"):
                t = getattr(b, name)
                assert t.device.type == "cpu", (comp, name)
                assert torch.allclose(getattr(a, name), t, atol=1e-3, rtol=1e-3), (comp, name)
            assert b.post(b.resid[:3], b.attn_out[:3]).device.type == "cpu"
            assert torch.allclose(b.rerun([0])[:5], a.rerun([0])[:5], atol=1e-3, rtol=1e-3)
            assert torch.allclose(attention_norm(a, rows=[0, 1]), attention_norm(b, rows=[0, 1]),
                                  atol=1e-3, rtol=1e-3)
            assert torch.allclose(value_zeroing(a, rows=[0, 1], method="fast"),
                                  value_zeroing(b, rows=[0, 1], method="fast"), atol=1e-3, rtol=1e-3)
    rc = S.whisper_rows_capture(mc, p, audio, ids, [0, 1, 2])
    rg = S.whisper_rows_capture(mg, p, audio, ids, [0, 1, 2])
    for comp in ("encoder", "decoder", "cross"):
        for a, b in zip(rc[comp], rg[comp]):
            assert b.out.device.type == "cpu" and torch.allclose(a.out, b.out, atol=1e-3, rtol=1e-3)
            assert torch.allclose(value_zeroing(a, rows=[0, 1], method="fast"),
                                  value_zeroing(b, rows=[0, 1], method="fast"), atol=1e-3, rtol=1e-3)
    assert C.transcribe(mg, p, audio, sampling_rate=16000)[1] == C.transcribe(mc, p, audio, sampling_rate=16000)[1]
    x = torch.zeros(1, 80, 3000)
    assert torch.allclose(A.target_log_prob(mg, x, ids, [5]), A.target_log_prob(mc, x, ids, [5]), atol=1e-3)
    feats = C.whisper_features(p, audio)
    dec = torch.tensor([ids])
    recs = L.capture_layer_io(list(C.whisper_parts(mg)[0].layers),
                              lambda: mg(input_features=feats.cuda(), decoder_input_ids=dec.cuda()))
    assert recs and all(r.hidden_states.device.type == "cpu" and r.output.device.type == "cpu" for r in recs)
    assert all(row["scaled_diff"] < 1e-4 for row in L.compare_with_transformers(recs))
