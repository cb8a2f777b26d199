"""ctxmix_lite.widgets: viewers run headlessly for every option, on ipywidgets 7 and 8 APIs.

This file also passes with Colab's ipywidgets 7.7.1 on the path (checked by hand with
``pip download ipywidgets==7.7.1 ipython_genutils --no-deps``, unzipped onto PYTHONPATH).
"""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ctxmix_lite import widgets  # noqa: E402

SOURCE = Path(widgets.__file__).read_text()


def test_ipywidgets_version():
    import ipywidgets

    v = widgets.ipywidgets_version()
    assert v is not None and len(v) == 3 and v[0] in (7, 8)
    assert ".".join(map(str, v)).startswith(ipywidgets.__version__.split("rc")[0][:3])


def test_control_values():
    assert widgets.control_values(range(0, 6, 2)) == [0, 2, 4]
    assert widgets.control_values(["a", "b"]) == ["a", "b"]
    assert widgets.control_values([("first item", 0), ("second", 1)]) == [0, 1]
    with pytest.raises(ValueError, match="no values"):
        widgets.control_values([])
    with pytest.raises(TypeError):
        widgets.control_values(3.5)


def test_iter_control_values_each_and_product():
    each = list(widgets.iter_control_values(item=["a", "b", "c"], layer=range(2)))
    assert each == [{"item": "a", "layer": 0}, {"item": "b", "layer": 0},
                    {"item": "c", "layer": 0}, {"item": "a", "layer": 1}]
    prod = list(widgets.iter_control_values(mode="product", item=["a", "b"], layer=range(3)))
    assert len(prod) == 6 and {"item": "b", "layer": 2} in prod
    with pytest.raises(ValueError, match="mode"):
        list(widgets.iter_control_values(mode="all", item=["a"]))


def test_viewer_builds_controls_and_redraws():
    import ipywidgets as W

    calls = []

    def show(item, layer):
        calls.append((item, layer))
        fig, ax = plt.subplots()
        ax.plot([0, layer])

    v = widgets.viewer(show, item=[("le livre", 0), ("les livres", 1)], layer=range(4))
    assert calls == [(0, 0)]  # drawn once on creation
    assert isinstance(v.controls["item"], W.Dropdown)
    assert isinstance(v.controls["layer"], W.IntSlider)
    assert (v.controls["layer"].min, v.controls["layer"].max) == (0, 3)
    assert isinstance(v.widget, W.VBox) and isinstance(v.output, W.Output)
    v.controls["layer"].value = 2  # what a user moving the slider does
    v.controls["item"].value = 1
    assert calls[-2:] == [(0, 2), (1, 2)]
    assert plt.get_fignums() == []  # every redraw closes its figures
    # the figure is shown as PNG bytes in an Image widget of the viewer (not through the Output)
    (image,) = v.figures.children
    assert v.figures in v.widget.children and isinstance(image, W.Image)
    assert image.format == "png" and bytes(image.value[:8]) == b"\x89PNG\r\n\x1a\n"
    png = bytes(image.value)
    v.controls["layer"].value = 3
    assert bytes(v.figures.children[0].value) != png  # the redraw replaced the picture
    assert v.run_all() == 1 + 1 + 3
    assert v.run_all(mode="product") == 8
    assert calls[-1] == (1, 3)


def test_viewer_errors():
    with pytest.raises(ValueError, match="at least one control"):
        widgets.viewer(lambda: None)
    with pytest.raises(TypeError, match="control 'x'"):
        widgets.viewer(lambda x: None, x=3.0)
    with pytest.raises(ValueError, match="empty range"):
        widgets.viewer(lambda x: None, x=range(0))

    def broken(item):
        raise KeyError(item)

    with pytest.raises(RuntimeError, match="update function failed for {'item': 'b'}"):
        widgets.run_headless(broken, item=["b"])


def test_viewer_accepts_ready_widgets():
    import ipywidgets as W

    seen = []
    w = W.Dropdown(options=["x", "y"], value="y")
    v = widgets.viewer(lambda choice: seen.append(choice), choice=w)
    assert v.controls["choice"] is w and seen == ["y"]
    assert widgets.run_headless(lambda choice: seen.append(choice), choice=w) == 2


def test_audio_player():
    from IPython.display import Audio

    a = widgets.audio_player(np.sin(np.linspace(0, 100, 8000)).astype(np.float32), 16000)
    assert isinstance(a, Audio) and a.data[:4] == b"RIFF"
    with pytest.raises(ValueError, match="1-D"):
        widgets.audio_player(np.zeros((2, 10)), 16000)
    with pytest.raises(ValueError, match="sampling rate"):
        widgets.audio_player(np.ones(10), 16000.5)


# ipywidgets 8-only names (absent in 7.7, Colab's version) and 7-only names removed in 8.
IPYWIDGETS8_ONLY = ["Stack", "TagsInput", "ColorsInput", "FloatsInput", "IntsInput",
                    "NaiveDatetimePicker", "TimePicker", "description_allow_html", "tooltip=",
                    "ipywidgets.widgets.widget_templates", "jupyterlab_widgets"]
IPYWIDGETS7_ONLY = ["description_tooltip"]  # removed in 8


@pytest.mark.parametrize("name", IPYWIDGETS8_ONLY + IPYWIDGETS7_ONLY)
def test_source_avoids_version_specific_apis(name):
    assert name not in SOURCE, f"widgets.py uses {name!r}, which is not in both ipywidgets 7 and 8"


def test_widget_classes_used_exist_in_ipywidgets_7():
    """Every `W.<Name>` used is in the set ipywidgets 7.7 exports (checked against that list)."""
    used = set(re.findall(r"\bW\.([A-Z]\w+)", SOURCE))
    in_7 = {"Dropdown", "IntSlider", "Output", "HBox", "VBox", "Layout", "Button", "Label",
            "FloatSlider", "Checkbox", "ToggleButtons", "SelectionSlider", "Text", "HTML",
            "Image", "interactive_output"}
    assert used and used <= in_7, used - in_7


def test_viewer_display_carries_a_static_copy_for_renderers_without_widgets():
    """Jupyter shows the live widget; a static site or nbconvert gets the first drawing as HTML."""
    from unittest import mock

    import matplotlib.pyplot as plt

    from ctxmix_lite.widgets import viewer

    def show(k):
        fig, ax = plt.subplots()
        ax.plot([0, k])

    v = viewer(show, k=[1, 2])
    with mock.patch("IPython.display.display") as disp:
        v._ipython_display_()
    (bundle,), kwargs = disp.call_args
    assert kwargs.get("raw") is True
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == v.widget.model_id
    assert bundle["text/html"].count('<img src="data:image/png;base64,') == 1
    assert "k = 1" in bundle["text/html"] and "Run the notebook" in bundle["text/html"]
