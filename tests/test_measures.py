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


# ----------------------------------------------------------------------------------------------
# the registry: one table, one signature
# ----------------------------------------------------------------------------------------------
def test_registry_lists_every_measure_with_its_rollout_form():
    from ctxmix_lite.measures import REGISTRY
    from ctxmix_lite.measures.rollout import rollout_form

    assert set(MEASURES) <= set(REGISTRY) and "alti" in REGISTRY
    for name, m in REGISTRY.items():
        assert m.name == name and m.label
        assert rollout_form(name) == m.rollout, name


def test_rollout_form_reads_the_registry_entry(monkeypatch):
    """One table: a measure's rollout form is its registry entry's, not a second list."""
    import dataclasses

    from ctxmix_lite.measures import REGISTRY
    from ctxmix_lite.measures.rollout import EXTRA_ROLLOUT_FORMS, rollout_form

    monkeypatch.setitem(REGISTRY, "attention", dataclasses.replace(REGISTRY["attention"], rollout="plain"))
    assert rollout_form("attention") == "plain"
    assert rollout_form("globenc") == EXTRA_ROLLOUT_FORMS["globenc"] == "plain"
    assert not set(EXTRA_ROLLOUT_FORMS) & set(REGISTRY)


def test_registry_refuses_what_a_measure_cannot_do(tiny):
    from ctxmix_lite.measures import get_measure

    cap = tiny["whisper_encoder"]
    with pytest.raises(ValueError, match="unknown measure 'attn'.*attention"):
        layer_measure(cap, "attn")
    with pytest.raises(ValueError, match="no spans"):
        layer_measure(cap, "alti", spans=[(0, 2)])
    with pytest.raises(ValueError, match="no option"):
        layer_measure(cap, "attention_norm", method="fast")
    with pytest.raises(ValueError, match="options"):
        get_measure("value_zeroing")(cap, chunk=3)


def test_alti_through_the_registry_equals_the_module(tiny):
    from ctxmix_lite.measures.decomposition import alti

    cap = tiny["whisper_encoder"]
    assert torch.equal(layer_measure(cap, "alti", rows=[0, 2]), alti(cap, rows=[0, 2]))


def test_adding_a_measure_is_one_module_and_one_entry(tiny):
    """The README's worked example: a measure of the common signature plus one registry entry
    works with layer_measure / component_measure, checked against an explicit loop."""
    from ctxmix_lite.measures import REGISTRY, Measure, register
    from ctxmix_lite.measures.utils import as_rows, as_spans, sum_over_spans

    def weighted_value_norm(cap, rows=None, spans=None, per_head=False):
        r = as_rows(rows, cap.weights.shape[1])
        norms = cap.projected_values().norm(dim=-1)  # ||v_j^h W_O^h||, [H, T]
        m = cap.weights[:, r, :] * norms[:, None, :]
        m = m if per_head else m.sum(0)
        return sum_over_spans(m, as_spans(spans, cap.weights.shape[-1])).float()

    register(Measure("weighted_value_norm", "Weighted value norm", weighted_value_norm, per_head=True,
                     spans=True, options=(), rollout="abnar_zuidema", reference="README example"))
    try:
        cap = tiny["whisper_encoder"]
        got = layer_measure(cap, "weighted_value_norm", rows=[1, 3])
        H, T = cap.num_heads, cap.weights.shape[-1]
        W = cap.W_O.reshape(cap.W_O.shape[0], H, -1)
        want = torch.zeros(2, T)
        for a, i in enumerate([1, 3]):
            for j in range(T):
                for h in range(H):
                    want[a, j] += cap.weights[h, i, j] * (W[:, h, :] @ cap.values[h, j]).norm()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        two = Capture("tiny", "whisper", {"encoder": [cap, cap]}, n_frames=T, frame_duration=0.02, window=0.6,
                      audio_duration=0.6)
        stack = component_measure(two, "encoder", "weighted_value_norm")
        assert stack.shape == (2, T, T)
        with pytest.raises(ValueError, match="already registered"):
            register(REGISTRY["weighted_value_norm"])
    finally:
        REGISTRY.pop("weighted_value_norm", None)
