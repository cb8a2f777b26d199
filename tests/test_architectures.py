"""The architecture table: every model family the course loads finds its stacks, layers,
attentions and norms through one entry (ctxmix_lite.models.architectures)."""
import pytest

from ctxmix_lite.models import architectures as A
from ctxmix_lite.models import load_model


@pytest.fixture(scope="module")
def models():
    tiny_w = load_model("openai/whisper-base", pretrained=False, config_overrides=dict(
        encoder_layers=2, decoder_layers=2, d_model=64, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=128, decoder_ffn_dim=128))[0]
    tiny_x = load_model("facebook/wav2vec2-large-xlsr-53", pretrained=False, config_overrides=dict(
        num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128))[0]
    return {"whisper": tiny_w, "wav2vec2": tiny_x}


def test_every_family_finds_its_parts(models):
    for family, model in models.items():
        arch = A.architecture_of(model)
        assert arch.family == family
        for comp, attr in arch.attention.items():
            layers = A.layer_stack(model, comp).layers
            assert len(layers) == 2
            assert all(hasattr(layer, attr) for layer in layers), (family, comp, attr)
            assert hasattr(layers[0], arch.block_norm)
    assert A.post_ln(models["wav2vec2"]) is not bool(models["wav2vec2"].config.do_stable_layer_norm)
    assert A.post_ln(models["whisper"]) is False
    assert A.layer_stack(models["whisper"], "cross") is A.layer_stack(models["whisper"], "decoder")


def test_unknown_parts_are_refused(models):
    with pytest.raises(ValueError, match="components"):
        A.layer_stack(models["wav2vec2"], "decoder")

    class Other:
        class config:
            model_type = "bert"

    with pytest.raises(ValueError, match="unsupported model type 'bert'"):
        A.architecture_of(Other())
