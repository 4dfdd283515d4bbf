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

A field is declared once, with :func:`setting`: its default and, in the
field's metadata (a :class:`Setting`), its help, choices, command-line flag
and type, and its search space when `esc50tf tune` may search it.
:func:`cli_options` and :func:`search_params` derive the CLI's options and
tune's parameters from those declarations (Model Garden's `params_dict` idea),
so a new field with a `flag` gets its option, and one with a `search` entry
its tune parameter, without a change anywhere else.

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

__all__ = ["Config", "Setting", "about", "choice", "cli_options", "field_names", "search_params",
           "setting"]


def field_names(cls) -> list[str]:
    """The dataclass fields of `cls`, in declaration order."""
    return [f.name for f in dataclasses.fields(cls)]


@dataclasses.dataclass(frozen=True)
class Setting:
    """What a config field says about itself besides its default (`setting()` builds it).

    Args:
        help: str. One line for `--help` (and the docs).
        flag: str or None. The command-line option, e.g. `"--n-mels"`; None: no flag.
        type: str or callable or None. The option's value type: `int`, `float`,
            or the name of a parser the CLI supplies (`"positive_int"`,
            `"positive_float"`, `"ratio"`, `"fraction"`, `"pair"`, `"optional_float"`).
        choices: tuple or None. The allowed values; the option's choices, the
            search parameter's check and its message come from it. A `None`
            among them is spelled `none` on the command line.
        metavar: str or None. Shown in the help.
        action: str or None. An argparse action instead of a value (e.g.
            `"store_const"`: the flag alone sets True).
        search: dict or None. The default search-space entry of `esc50tf tune`
            (e.g. `{"type": "choice", "values": [64, 128]}`); None: not searched
            unless a space file names it (then `searchable` must be True).
        searchable: bool. Tune may search it (a space file may name it) even
            without a default entry. True whenever `search` is given.
        check: callable or None. `check(value) -> bool` for a searched value;
            None: membership in `choices` (or any value of the field's type).
        allowed: str. What `check` accepts, for messages; from `choices` when empty.
        when: tuple or None. `(parent_name, values)`: searched (and applied)
            only while the parent search parameter takes one of `values`.
        search_name: str or None. The name in space files and trials.csv when
            it is not the field's.
        search_kind: str or None. The searched value's kind when the field's
            annotation does not say it (`"snr"`: a range "lo,hi" in dB, or "off").
        note: str. A remark for the table of the search space (`trials.md`).
    """

    help: str = ""
    flag: str | None = None
    type: Any = None
    choices: tuple | None = None
    metavar: str | None = None
    action: str | None = None
    search: dict | None = None
    searchable: bool = False
    check: Any = None
    allowed: str = ""
    when: tuple | None = None
    search_name: str | None = None
    search_kind: str | None = None
    note: str = ""


def setting(default=dataclasses.MISSING, *, default_factory=dataclasses.MISSING, **about):
    """A dataclass field that declares its setting once: `about` are `Setting`'s arguments.

    >>> @dataclasses.dataclass(frozen=True)
    ... class Window(Config):
    ...     size: int = setting(4, help="frames per window", flag="--size", type=int)
    >>> cli_options(Window, "window")[0][:3]
    ('--size', 'window', 'size')
    """
    about = Setting(**about)
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"setting": about})


def choice(values):
    """A search-space entry choosing among `values`."""
    return {"type": "choice", "values": list(values)}


def about(field) -> Setting:
    """The `Setting` of a dataclass field (an empty one for a plain field)."""
    return field.metadata.get("setting", Setting())


def _shown(value):
    return "none" if value is None else value


def cli_options(cls, section):
    """`(flag, section, key, add_argument keywords)` of every field of `cls` that has a flag.

    The choices come from the field's `Setting.choices` (`None` shown as
    `none`); `type` may still be a parser name for the CLI to look up.
    """
    out = []
    for f in dataclasses.fields(cls):
        s = about(f)
        if s.flag is None:
            continue
        kwargs: dict[str, Any] = {"help": s.help}
        if s.action is not None:
            kwargs.update(action=s.action, const=True)
        if s.type is not None:
            kwargs["type"] = s.type
        if s.choices is not None:
            kwargs["choices"] = [_shown(c) for c in s.choices]
        if s.metavar is not None:
            kwargs["metavar"] = s.metavar
        out.append((s.flag, section, f.name, kwargs))
    return out


_KIND_OF_TYPE = {"int": "int", "float": "real", "str": "str", "bool": "bool"}


def search_params(cls, section):
    """Keyword dicts of `esc50tf.tune.Param` for every field of `cls` tune may search.

    The value kind comes from the field's annotation (int, float, str, bool),
    the check and its message from `Setting.check`/`allowed`, else from
    `Setting.choices`.
    """
    out = []
    for f in dataclasses.fields(cls):
        s = about(f)
        if s.search is None and not s.searchable:
            continue
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        base = annotation.split("|")[0].strip()  # "int | None" -> "int"
        kind = s.search_kind or _KIND_OF_TYPE.get(base)
        if kind is None:
            raise TypeError(f"{cls.__name__}.{f.name}: a searched setting needs an int, float, "
                            f"str or bool annotation, not {f.type!r}")
        check, allowed = s.check, s.allowed
        if check is None and s.choices is not None:
            choices = tuple(s.choices)
            check = choices.__contains__
            allowed = allowed or ", ".join(str(_shown(c)) for c in choices)
        elif check is None:
            check = _anything
            allowed = allowed or "true or false"
        out.append({"name": s.search_name or f.name, "section": section, "key": f.name,
                    "kind": kind, "check": check, "allowed": allowed, "default": s.search,
                    "when": s.when, "note": s.note})
    return out


def _anything(value):
    return True


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
