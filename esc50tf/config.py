"""The one base for esc50tf's typed configs.

Every config (features, augmentation, model, training, a whole run, a TFRecord
build, a search, an export) is a frozen dataclass that derives from
:class:`Config`. It gets, once for all of them:

- `to_dict()`: a JSON-ready dict (tuples become lists, nested configs dicts);
- `from_dict(values)`: the inverse; missing keys take the defaults and an
  unknown key raises :class:`Esc50Error` naming it and listing the allowed ones;
- `replace(**changes)`: a copy with some fields changed (validated again);
- `check(ok, name, value, allowed)`: the shared way a `__post_init__` refuses a
  value, with a message that names the setting, the value and what is allowed.

Keras-free on purpose: `config.json` files are read and compared (by `compare`,
`study`, `predict`) without importing TensorFlow or Keras.

Example:

>>> @dataclasses.dataclass(frozen=True)
... class Window(Config):
...     size: int = 4
...     def __post_init__(self):
...         self.check(self.size >= 1, "size", self.size, "an integer >= 1")
>>> Window.from_dict({"size": 8}).to_dict()
{'size': 8}
>>> Window.from_dict({"sise": 8})
Traceback (most recent call last):
esc50tf.errors.Esc50Error: Window: unknown setting(s) sise; allowed: size.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from esc50tf.errors import Esc50Error

__all__ = ["Config", "field_names"]


def field_names(cls) -> list[str]:
    """The dataclass fields of `cls`, in declaration order."""
    return [f.name for f in dataclasses.fields(cls)]


def _plain(value):
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class Config:
    """Mixin for frozen dataclass configs (see the module docstring).

    Subclasses are declared `@dataclasses.dataclass(frozen=True)`. A subclass
    may set `label` (the name used in error messages; the class name if
    empty) and `nested` (field name -> Config class, for sections that are
    configs themselves, as in a run's config).
    """

    label: ClassVar[str] = ""
    nested: ClassVar[dict[str, type]] = {}

    @classmethod
    def _label(cls) -> str:
        return cls.label or cls.__name__

    def check(self, ok, name, value, allowed):
        """Raises `Esc50Error` unless `ok`: "<Label>.<name>=<value> is not allowed; allowed: ..."."""
        if not ok:
            raise Esc50Error(
                f"{self._label()}.{name}={value!r} is not allowed; allowed: {allowed}."
            )

    def set_field(self, name, value):
        """Normalises a field inside `__post_init__` (the dataclass is frozen)."""
        object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-serialisable dict."""
        return {name: _plain(getattr(self, name)) for name in field_names(self)}

    @classmethod
    def from_dict(cls, values):
        """Builds a config from a dict; missing keys take the defaults.

        Raises:
            Esc50Error: `values` is not a dict, or has a key that is not a
                field (the message names it and lists the allowed ones).
        """
        if isinstance(values, cls):
            return values
        if not isinstance(values, dict):
            raise Esc50Error(
                f"{cls._label()}: expected a dict of settings; received "
                f"{type(values).__name__}."
            )
        names = field_names(cls)
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise Esc50Error(
                f"{cls._label()}: unknown setting(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(names)}."
            )
        kwargs = dict(values)
        for name, sub in cls.nested.items():
            if name in kwargs:
                kwargs[name] = sub.from_dict(kwargs[name])
        return cls(**kwargs)

    def replace(self, **changes):
        """A copy with `changes` applied (validated like a new config)."""
        return dataclasses.replace(self, **changes)
