"""ctxmix_lite.course.options: typed options objects, keywords read into them."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from ctxmix_lite.course.options import Options


@dataclass(frozen=True)
class Style(Options):
    cmap: str = "viridis"
    vmax: float | None = None

    def __post_init__(self):
        if self.vmax is not None and self.vmax <= 0:
            raise ValueError(f"vmax must be positive, got {self.vmax}")


def test_defaults_instance_dict_and_keywords():
    assert Style.resolve(where="f") == Style()
    s = Style(cmap="magma")
    assert Style.resolve(s, where="f") is s
    assert Style.resolve({"vmax": 2.0}, where="f") == Style(vmax=2.0)
    assert Style.resolve(s, {"vmax": 1.0}, where="f") == Style(cmap="magma", vmax=1.0)  # keywords win


def test_unknown_keyword_names_function_and_fields():
    with pytest.raises(TypeError, match=r"plot\(\) got unexpected keyword argument\(s\) \['cmpa'\].*'cmap'"):
        Style.resolve(None, {"cmpa": "magma"}, where="plot")
    with pytest.raises(TypeError, match="Style or a dict"):
        Style.resolve(3, where="plot")


def test_values_are_checked_by_the_dataclass():
    with pytest.raises(ValueError, match="vmax must be positive"):
        Style.resolve(None, {"vmax": -1.0}, where="plot")
    with pytest.raises(Exception):
        Style().cmap = "x"  # frozen
