"""Typed options objects: how a function with many settings takes them.

The rule (issue 13): a public function names at most :data:`MAX_PARAMS` parameters. A function with
more settings keeps its data arguments (the tensors, the items, the axes) and reads the rest from
one frozen dataclass defined beside it, a subclass of :class:`Options`; its defaults live there
and nowhere else. A caller passes either the object or its fields as keywords::

    plot_matrix(M, options=MatrixStyle(cmap="magma", vmax=1.0))
    plot_matrix(M, cmap="magma", vmax=1.0)          # the same call: keywords are the fields

Keywords are read into the same dataclass (:meth:`Options.resolve`), so an unknown one is a
``TypeError`` naming the function, the keyword and the fields it could have meant, as Python's own
error would; a value the dataclass refuses (``__post_init__``) is refused the same way. Keywords
given beside an ``options`` object override its fields (``dataclasses.replace``).
"""
from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any, Optional, TypeVar

#: the most parameters a public function names (``self``/``cls`` and ``**settings`` not counted).
MAX_PARAMS = 7

O = TypeVar("O", bound="Options")


@dataclasses.dataclass(frozen=True)
class Options:
    """Base of the course's options objects (subclass it with ``@dataclass(frozen=True)``)."""

    @classmethod
    def field_names(cls) -> tuple:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def resolve(cls: type[O], options: Any = None, settings: Optional[Mapping] = None, *, where: str) -> O:
        """``options`` (``None`` = defaults, an instance, or a dict of fields) with the keyword
        ``settings`` applied on top. ``where`` names the calling function in errors."""
        if options is None:
            base = cls()
        elif isinstance(options, cls):
            base = options
        elif isinstance(options, Mapping):
            cls._check_names(options, where)
            base = cls(**dict(options))
        else:
            raise TypeError(f"{where}(): options must be a {cls.__name__} or a dict of its fields, "
                            f"got {type(options).__name__}")
        if settings:
            cls._check_names(settings, where)
            base = dataclasses.replace(base, **dict(settings))
        return base

    @classmethod
    def _check_names(cls, given: Mapping, where: str) -> None:
        names = cls.field_names()
        unknown = [k for k in given if k not in names]
        if unknown:
            close = {k: difflib.get_close_matches(k, names, n=1) for k in unknown}
            hint = "; ".join(f"{k!r}: did you mean {c[0]!r}?" for k, c in close.items() if c)
            raise TypeError(f"{where}() got unexpected keyword argument(s) {unknown}"
                            + (f" ({hint})" if hint else "")
                            + f"; the settings of {cls.__name__} are {list(names)}")
