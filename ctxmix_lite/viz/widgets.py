"""Small interactive viewers that work on ipywidgets 7 (Colab) and 8 (JupyterLab 4).

Only APIs present in both versions are used: ``Dropdown``, ``IntSlider``, ``Output``, ``Image``,
``HBox``, ``VBox``, ``.observe(handler, names="value")`` and ``IPython.display.clear_output``;
figures are drawn with matplotlib and shown as PNG bytes in ``Image`` widgets (no ipympl, which
Colab lacks).

A viewer is a plain *update function* plus controls::

    def show(item, layer):                 # draws with matplotlib; no widget code inside
        plot_matrix(weights[item][layer], title=f"item {item}, layer {layer}")

    viewer(show, item=["le livre", "les livres"], layer=range(6))

* a list or tuple of values (or ``(label, value)`` pairs) becomes a ``Dropdown``;
* a ``range`` becomes an ``IntSlider`` (step kept);
* a ready-made widget with a ``value`` is used as is.

Because the update function knows nothing about widgets, it runs headlessly: tests (and CI,
where no browser exists) call :meth:`Viewer.run_all` to draw every option of every control.
"""
from __future__ import annotations

import itertools
import re
from typing import Callable, Optional

import numpy as np


def ipywidgets_version() -> Optional[tuple]:
    """Installed ipywidgets version as ``(major, minor, patch)``, or ``None`` when not installed."""
    try:
        import ipywidgets
    except ImportError:
        return None
    nums = [int(x) for x in re.findall(r"\d+", ipywidgets.__version__)[:3]]
    return tuple(nums + [0] * (3 - len(nums)))


def _is_pair(option) -> bool:
    return isinstance(option, tuple) and len(option) == 2 and isinstance(option[0], str)


def control_values(spec) -> list:
    """Every value a control can take (what :meth:`Viewer.run_all` iterates over)."""
    if isinstance(spec, range):
        values = list(spec)
    elif isinstance(spec, (list, tuple)):
        values = [o[1] if _is_pair(o) else o for o in spec]
    elif hasattr(spec, "options"):  # a Dropdown-like widget
        values = [o[1] if _is_pair(o) else o for o in spec.options]
    elif all(hasattr(spec, a) for a in ("min", "max", "value")):  # a slider widget
        step = getattr(spec, "step", 1) or 1
        values = list(range(spec.min, spec.max + 1, step))
    else:
        raise TypeError(f"cannot tell the values of control {spec!r}: give a list/tuple "
                        "(dropdown), a range (slider) or an ipywidgets widget")
    if not values:
        raise ValueError(f"control {spec!r} has no values")
    return values


def make_control(name: str, spec):
    """The widget for one control spec (see the module docstring)."""
    import ipywidgets as W

    style = {"description_width": "initial"}
    if isinstance(spec, range):
        if len(spec) == 0:
            raise ValueError(f"control {name!r}: empty range {spec!r}")
        return W.IntSlider(value=spec[0], min=spec[0], max=spec[-1], step=abs(spec.step),
                           description=name, continuous_update=False, style=style)
    if isinstance(spec, (list, tuple)):
        if len(spec) == 0:
            raise ValueError(f"control {name!r}: no options")
        options = list(spec)
        first = options[0][1] if _is_pair(options[0]) else options[0]
        return W.Dropdown(options=options, value=first, description=name, style=style)
    if hasattr(spec, "value") and hasattr(spec, "observe"):
        return spec
    raise TypeError(f"control {name!r}: expected a list/tuple (dropdown), a range (slider) or a "
                    f"widget, got {type(spec).__name__}")


class Viewer:
    """Controls + an ``Output`` redrawn by ``update_fn(**values)`` whenever a control changes.

    Display it as the last expression of a cell. ``run_all()`` draws every option headlessly.
    """

    def __init__(self, update_fn: Callable, controls: dict, draw: bool = True):
        import ipywidgets as W

        if not callable(update_fn):
            raise TypeError("update_fn must be callable")
        if not controls:
            raise ValueError("viewer needs at least one control, e.g. item=range(10)")
        self.update_fn = update_fn
        self.specs = dict(controls)
        self.controls = {name: make_control(name, spec) for name, spec in controls.items()}
        self.output = W.Output()  # what update_fn displays besides figures (audio, text)
        self.figures = W.VBox([])  # the figures, as PNG bytes in Image widgets (see refresh)
        self.static_html = None  # the first drawing as HTML: what static views of the notebook show
        for widget in self.controls.values():
            widget.observe(self._on_change, names="value")
        self.widget = W.VBox([W.HBox(list(self.controls.values())), self.output, self.figures])
        if draw:
            self.refresh()

    def values(self) -> dict:
        return {name: widget.value for name, widget in self.controls.items()}

    def _on_change(self, change=None):
        self.refresh()

    def refresh(self):
        """Redraw with the current control values.

        ``update_fn`` runs first, with its displays (audio, text) captured; then the output area
        is cleared and those displays replayed in one go, and the open figures are rendered to PNG
        bytes here and put into ``Image`` widgets (``self.figures``). Figures never travel as the
        inline backend's display messages through the ``Output`` widget: on JupyterLab 4 +
        ipywidgets 8 (ipykernel 7) that path showed blank or missing figures after a slow redraw.
        """
        import matplotlib.pyplot as plt
        from IPython.display import clear_output
        from IPython.utils.capture import capture_output

        values = self.values()
        pngs, error = [], None
        try:
            with capture_output() as shown:
                self.update_fn(**values)
            pngs = [_figure_png(plt.figure(num)) for num in plt.get_fignums()]
            if self.static_html is None:
                self.static_html = _static_html(values)
        except Exception as err:  # shown in the output area below, as a cell's error would be
            error = err
        finally:
            plt.close("all")
        self._show_figures(pngs)
        with self.output:
            clear_output(wait=error is None and bool(shown.outputs or shown.stdout or shown.stderr))
            if error is not None:
                raise error
            if shown.stdout:
                print(shown.stdout, end="")
            if shown.stderr:
                import sys

                print(shown.stderr, end="", file=sys.stderr)
            for out in shown.outputs:
                out.display()

    def _show_figures(self, pngs: list):
        import ipywidgets as W

        images = list(self.figures.children)
        while len(images) < len(pngs):
            images.append(W.Image(format="png"))
        for image, png in zip(images, pngs):
            image.value = png
        self.figures.children = tuple(images[:len(pngs)])

    def run_all(self, mode: str = "each", max_calls: int = 200) -> int:
        """Call ``update_fn`` headlessly for every option; returns the number of calls.

        ``mode="each"``: each control through all its values, the others at their first value;
        ``mode="product"``: every combination (at most ``max_calls``). Figures are closed.
        """
        return run_headless(self.update_fn, mode=mode, max_calls=max_calls, **self.specs)

    def _ipython_display_(self, **kwargs):
        """The widget, plus an HTML copy of its first drawing for renderers without a widget
        manager (a static site, nbconvert, GitHub); Jupyter front ends show the live widget."""
        from IPython.display import display

        model_id = getattr(self.widget, "model_id", None) or getattr(self.widget, "_model_id", None)
        if model_id is None or self.static_html is None:
            display(self.widget)
            return
        display({"text/plain": repr(self.widget),
                 "text/html": self.static_html,
                 "application/vnd.jupyter.widget-view+json":
                     {"version_major": 2, "version_minor": 0, "model_id": model_id}}, raw=True)


def _figure_png(fig) -> bytes:
    """The figure as PNG bytes, as the inline backend renders it (tight bounding box)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _static_html(values: dict) -> str:
    """The open matplotlib figures as inline PNGs, with the control values and a note."""
    import base64
    import html
    import io

    import matplotlib.pyplot as plt

    imgs = []
    for num in plt.get_fignums():
        buf = io.BytesIO()
        plt.figure(num).savefig(buf, format="png", dpi=72, bbox_inches="tight")
        imgs.append('<img src="data:image/png;base64,%s"/>' % base64.b64encode(buf.getvalue()).decode())
    shown = ", ".join(f"{html.escape(str(k))} = {html.escape(str(v))}" for k, v in values.items())
    return ('<div class="ctxmix-static-viewer"><p><em>Interactive viewer, shown here as its first view '
            f'({shown}). Run the notebook in Jupyter or on Colab to operate its controls.</em></p>'
            + "".join(imgs) + "</div>")


def viewer(update_fn: Callable, draw: bool = True, **controls) -> Viewer:
    """Build a :class:`Viewer`: ``viewer(show, item=names, layer=range(6))``."""
    return Viewer(update_fn, controls, draw=draw)


def iter_control_values(mode: str = "each", **controls):
    """Yield keyword dicts covering the controls' values (see :meth:`Viewer.run_all`)."""
    values = {name: control_values(spec) for name, spec in controls.items()}
    if mode == "product":
        names = list(values)
        for combo in itertools.product(*(values[n] for n in names)):
            yield dict(zip(names, combo))
    elif mode == "each":
        base = {name: vals[0] for name, vals in values.items()}
        yield dict(base)
        for name, vals in values.items():
            for v in vals[1:]:
                yield {**base, name: v}
    else:
        raise ValueError(f"mode must be 'each' or 'product', got {mode!r}")


def run_headless(update_fn: Callable, mode: str = "each", max_calls: int = 200, **controls) -> int:
    """Run ``update_fn`` for the controls' values without any widget; returns the call count."""
    import matplotlib.pyplot as plt

    n = 0
    for kwargs in iter_control_values(mode=mode, **controls):
        if n >= max_calls:
            break
        try:
            update_fn(**kwargs)
        except Exception as err:
            raise RuntimeError(f"update function failed for {kwargs}: "
                               f"{type(err).__name__}: {err}") from err
        finally:
            plt.close("all")
        n += 1
    return n


def audio_player(audio, sr: int):
    """An ``IPython.display.Audio`` player for a mono clip (numpy array or torch tensor)."""
    from IPython.display import Audio

    if hasattr(audio, "detach"):
        audio = audio.detach().cpu().numpy()
    arr = np.asarray(audio, dtype=np.float32)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"audio_player needs a non-empty 1-D clip, got shape {arr.shape}")
    if not (isinstance(sr, (int, np.integer)) and sr > 0):
        raise ValueError(f"sampling rate must be a positive integer (Hz), got {sr!r}")
    return Audio(data=arr, rate=int(sr), normalize=True)
