"""Consistent labels across the notebooks (issue 14): every intro says "notebook N of 8" with its
file name and links the glossary and the instructor's guide; every notebook that loads a model has
a DEVICE parameter, resolved with ``resolve_device`` and passed to ``load_model``."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]
# load_model calls that stay on the CPU on purpose (with the reason)
ON_CPU = {
    # 01's optional XLSR-53 deep dive: a random model checked layer by layer on CPU tensors
    "01_transformer_layer": ('load_model("facebook/wav2vec2-large-xlsr-53", pretrained=False, seed=SEED, '
                             'config_overrides={"num_hidden_layers": XLSR_LAYERS})',),
}


def _cells(path):
    return nbformat.read(path, as_version=4).cells


def test_eight_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(8)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_intro_label_and_links(path):
    intro = _cells(path)[1].source
    n = int(path.name[:2])
    assert intro.startswith(f"# {path.name[:2]} · "), intro.splitlines()[0]
    assert f"**notebook {n + 1} of 8** (`{path.stem}`;" in intro
    assert len(re.findall(r"notebook \d of 8", intro, re.IGNORECASE)) == 1
    assert "[glossary](GLOSSARY.md)" in intro and "[instructor's guide](INSTRUCTORS.md)" in intro
    for target in re.findall(r"\]\(([^)#]+\.(?:md|ipynb))\)", intro):  # relative links resolve
        assert (path.parent / target).is_file(), target
    glossary = (path.parent / "GLOSSARY.md").read_text(encoding="utf-8")
    for anchor in re.findall(r"\]\(GLOSSARY\.md#([^)]+)\)", intro):  # ... and so do their anchors
        assert f'<a id="{anchor}"></a>' in glossary, f"GLOSSARY.md has no anchor {anchor!r}"


def test_glossary_anchors_unique():
    text = (ROOT / "notebooks" / "GLOSSARY.md").read_text(encoding="utf-8")
    anchors = re.findall(r'<a id="([^"]+)"></a>', text)
    assert len(anchors) >= 40 and len(anchors) == len(set(anchors))
    for term in ("teacher-forcing", "eager-sdpa", "cka", "js-divergence", "alti", "attention-norm",
                 "value-zeroing", "rollout", "cue-contribution", "homophone", "minimal-pair", "probe",
                 "integrated-gradients", "frame-token-word", "cad"):
        assert term in anchors, term


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_device_parameter_where_a_model_runs(path):
    cells = _cells(path)
    code = "\n".join(c.source for c in cells if c.cell_type == "code")
    (params,) = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    if "load_model(" not in code and "DEVICE" not in params.source:
        pytest.skip("runs no model")
    assert re.search(r'^DEVICE = "auto" +# "auto": CUDA when available, else CPU', params.source, re.M)
    assert "resolve_device(DEVICE)" in code
    calls = re.findall(r"load_model\((?:[^()]|\([^()]*\))*\)", code)
    calls = [" ".join(c.split()) for c in calls]
    without = [c for c in calls if "device=DEVICE" not in c and c not in ON_CPU.get(path.stem, ())]
    assert not without, f"load_model without device=DEVICE: {without}"
