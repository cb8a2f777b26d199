"""The measures dispatch: same numbers as the per-concept modules, shapes, causality, errors."""
import pytest
import torch

from _hand_captures import all_tiny_captures, real_capture
from ctxmix_lite.attention_norm import attention_norm
from ctxmix_lite.capture_types import Capture
from ctxmix_lite.measures import MEASURES, attention, component_measure, layer_measure
from ctxmix_lite.value_zeroing import value_zeroing


@pytest.fixture(scope="module")
def tiny():
    return all_tiny_captures(seed=4, final=False)


def test_dispatch_equals_modules(tiny):
    cap = tiny["whisper_encoder"]
    rows, spans = [1, 4], [(0, 3), (7, 9)]
    assert torch.equal(layer_measure(cap, "attention_norm", rows=rows, spans=spans), attention_norm(cap, rows=rows, spans=spans))
    assert torch.equal(layer_measure(cap, "value_zeroing", rows=rows, spans=spans), value_zeroing(cap, rows=rows, spans=spans))
    a = layer_measure(cap, "attention")
    assert torch.allclose(a, cap.weights.mean(0)) and torch.allclose(a.sum(-1), torch.ones(a.shape[0]))
    ah = layer_measure(cap, "attention", per_head=True, rows=rows, spans=spans)
    assert ah.shape == (cap.num_heads, 2, 2)
    assert torch.allclose(ah[:, :, 1], cap.weights[:, rows, 7:10].sum(-1))  # span = summed mass
    vz = layer_measure(cap, "value_zeroing", method="reference", normalize=False)
    assert torch.allclose(vz, value_zeroing(cap, normalize=False), atol=1e-7)


def test_causal_zero_above_diagonal_all_measures(tiny):
    cap = tiny["whisper_decoder"]
    for m in MEASURES:
        out = layer_measure(cap, m)
        assert torch.all(torch.triu(out, 1) == 0), m
        assert torch.all(torch.diagonal(out) > 0), m
    assert torch.all(torch.triu(layer_measure(cap, "attention", per_head=True), 1) == 0)


def test_component_measure(tiny):
    caps = [tiny["whisper_encoder"], tiny["whisper_encoder"]]
    cap = Capture("tiny", "whisper", {"encoder": caps}, n_frames=30, frame_duration=0.02, window=0.6, audio_duration=0.6)
    for m in MEASURES:
        out = component_measure(cap, "encoder", m, rows=[0, 5])
        assert out.shape == (2, 2, 30)
        assert torch.equal(out[1], layer_measure(caps[1], m, rows=[0, 5]))
    assert component_measure(cap, "encoder", "attention", layers=[1]).shape == (1, 30, 30)
    with pytest.raises(KeyError):
        component_measure(cap, "decoder", "attention")
    with pytest.raises(ValueError, match="layer"):
        component_measure(cap, "encoder", "attention", layers=[5])


def test_errors(tiny):
    cap = tiny["whisper_encoder"]
    with pytest.raises(ValueError, match="unknown measure"):
        layer_measure(cap, "gradient")
    with pytest.raises(ValueError, match="per-head"):
        layer_measure(cap, "value_zeroing", per_head=True)
    with pytest.raises(ValueError, match="options"):
        layer_measure(cap, "attention", method="fast")


@pytest.mark.slow
def test_real_whisper_components(french_clip):
    cap = real_capture("whisper-base trained", french_clip)
    Tq = len(cap["decoder"][0].weights[0])
    for comp in ("decoder", "cross"):
        for m in MEASURES:
            rows = list(range(cap.prefix_length - 1, Tq))
            spans = [(0, 20), (21, 60), (61, 1499)] if comp == "cross" else None
            out = component_measure(cap, comp, m, rows=rows, spans=spans)
            assert out.shape[:2] == (len(cap[comp]), len(rows))
            assert torch.isfinite(out).all() and (out >= 0).all()
            if comp == "decoder":
                r = torch.tensor(rows)
                assert torch.all(out[:, torch.arange(Tq)[None, :] > r[:, None]] == 0)
