"""The search space of `esc50tf tune`: the searchable settings (`PARAMS`), the default
space, and reading and checking search-space files (format: see `esc50tf.tune`).

Pure data and checks: no Keras, no KerasTuner.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Callable

from esc50tf.config import search_params
from esc50tf.errors import Esc50Error
from esc50tf.run_config import RunConfig

SAMPLINGS = ("linear", "log", "reverse_log")
_TYPES_FOR_KIND = {
    "real": ("float", "choice", "fixed"),
    "int": ("int", "choice", "fixed"),
    "str": ("choice", "fixed"),
    "bool": ("boolean", "choice", "fixed"),
    "snr": ("choice", "fixed"),
}
_FIELDS = {  # type -> (required, optional)
    "float": (("min", "max"), ("step", "sampling", "default")),
    "int": (("min", "max"), ("step", "sampling", "default")),
    "choice": (("values",), ("default",)),
    "fixed": (("value",), ()),
    "boolean": ((), ("default",)),
}


@dataclasses.dataclass(frozen=True)
class Param:
    """One searchable setting.

    Args:
        name: str. The name in the search space (space files, trials.csv).
        section: str. RunConfig section it sets: train, model, features, augment.
        key: str. The setting in that section.
        kind: str. Value kind: "real", "int", "str", "bool" or "snr" (an SNR
            range "lo,hi" in dB, or "off").
        check: callable. `check(value) -> bool` for a normalised value.
        allowed: str. What `check` accepts, for error messages.
        default: dict or None. The default search-space entry; None means not
            searched by default.
        when: tuple or None. `(parent_name, values)`: only searched (and only
            applied) when the parent setting takes one of `values`. A model
            setting (section "model") has none here: the models it applies to
            come from the registry (`applies_to`).
        note: str. A remark for the space's table (`describe_space`).
    """

    name: str
    section: str
    key: str
    kind: str
    check: Callable
    allowed: str
    default: dict | None
    when: tuple | None = None
    note: str = ""


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


# The model is chosen with --model; every other parameter is declared on its config field
# (`esc50tf.config.setting(search=...)`), section by section in RunConfig's order.
PARAMS = {p.name: p for p in [
    Param("model", "model", "name", "str", lambda v: True, "a Keras model name", None),
    *(Param(**p) for section, cls in RunConfig.nested.items()
      for p in search_params(cls, section)),
]}

DEFAULT_SPACE = {name: p.default for name, p in PARAMS.items() if p.default is not None}
"""The default search space: name -> entry (see the module docstring for the format)."""


def applies_to(name):
    """The Keras models a search-space setting applies to (registry order); None: every one.

    A model setting applies to the models whose registry entry searches it
    (`ModelSpec.searches`: the ModelConfig settings their builder reads), so a
    new model is searched over its own settings without a change here.
    """
    from esc50tf.models import registry

    p = PARAMS[name]
    if p.section != "model" or name == "model":
        return None
    keras_specs = [s for s in registry.specs() if s.keras]
    models = tuple(s.name for s in keras_specs if s.searches(p.key))
    return None if len(models) == len(keras_specs) else models


def condition_of(name):
    """`(parent_name, values)` a setting is searched under, or None (always)."""
    models = applies_to(name)
    return ("model", models) if models is not None else PARAMS[name].when


# --------------------------------------------------------------------------
# Search-space files and validation
# --------------------------------------------------------------------------


def read_space_file(path):
    """Reads a search-space file: JSON always, YAML when PyYAML is installed.

    Returns:
        dict of name -> entry (or None), not yet validated.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise Esc50Error(f"{path}: cannot read the search-space file ({err.strerror})") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise Esc50Error(f"{path}: YAML search-space files need PyYAML (pip install pyyaml); "
                             "or write the space as JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise Esc50Error(f"{path}: not valid YAML ({err})") from None
    else:
        try:
            data = json.loads(text)
        except ValueError as err:
            raise Esc50Error(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise Esc50Error(f"{path}: expected an object mapping setting names to search-space "
                         f"entries, got {type(data).__name__}")
    return data


def _normalise_value(name, param, value):
    """A value of `param` in canonical form; Esc50Error naming `name` otherwise."""
    bad = Esc50Error(f"search space {name!r}: value {value!r} is not allowed; allowed: "
                     f"{param.allowed}")
    if param.kind == "real":
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value)):
            raise bad
        value = float(value)
    elif param.kind == "int":
        if not is_int(value):
            raise bad
    elif param.kind == "str":
        if not isinstance(value, str):
            raise bad
    elif param.kind == "bool":
        if not isinstance(value, bool):
            raise bad
    elif param.kind == "snr":
        return _normalise_snr(value, bad)
    if not param.check(value):
        raise bad
    return value


def _normalise_snr(value, bad):
    if value is None or value == "off":
        return "off"
    if isinstance(value, str):
        parts = value.split(",")
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise bad
    try:
        lo, hi = (float(v) for v in parts)
    except (TypeError, ValueError):
        raise bad from None
    if not -30 <= lo <= hi <= 100:
        raise bad
    return f"{lo:g},{hi:g}"


def snr_pair(value):
    return None if value == "off" else [float(v) for v in value.split(",")]


def validate_entry(name, entry):
    """Checks one search-space entry; returns it normalised (or None: not searched)."""
    if name not in PARAMS or name == "model":
        hint = "; choose the models with --model" if name == "model" else ""
        raise Esc50Error(f"search space: unknown setting {name!r}{hint}; allowed: "
                         f"{', '.join(n for n in PARAMS if n != 'model')}")
    if entry is None:
        return None
    param = PARAMS[name]
    types = _TYPES_FOR_KIND[param.kind]
    if not isinstance(entry, dict) or "type" not in entry:
        raise Esc50Error(f"search space {name!r}: expected an object with a \"type\" "
                         f"({', '.join(types)}) or null, got {entry!r}")
    kind = entry["type"]
    if kind not in types:
        raise Esc50Error(f"search space {name!r}: type {kind!r} is not allowed for this setting; "
                         f"allowed: {', '.join(types)}")
    required, optional = _FIELDS[kind]
    unknown = sorted(set(entry) - {"type", *required, *optional})
    if unknown:
        raise Esc50Error(f"search space {name!r}: unknown field(s) {', '.join(unknown)} for type "
                         f"{kind!r}; allowed: {', '.join(('type',) + required + optional)}")
    missing = [f for f in required if f not in entry]
    if missing:
        raise Esc50Error(f"search space {name!r}: type {kind!r} needs {', '.join(missing)}")
    out = {"type": kind}
    if kind in ("float", "int"):
        lo = _normalise_value(name, param, entry["min"])
        hi = _normalise_value(name, param, entry["max"])
        if lo > hi:
            raise Esc50Error(f"search space {name!r}: min {lo!r} is larger than max {hi!r}")
        out.update(min=lo, max=hi)
        sampling = entry.get("sampling", "linear")
        if sampling not in SAMPLINGS:
            raise Esc50Error(f"search space {name!r}: sampling {sampling!r} is not allowed; "
                             f"allowed: {', '.join(SAMPLINGS)}")
        if sampling != "linear" and lo <= 0:
            raise Esc50Error(f"search space {name!r}: {sampling} sampling needs min > 0, "
                             f"got {lo!r}")
        out["sampling"] = sampling
        if "step" in entry:
            step = entry["step"]
            ok = (is_int(step) if kind == "int" else
                  isinstance(step, (int, float)) and not isinstance(step, bool))
            if not ok or step <= 0:
                raise Esc50Error(f"search space {name!r}: step {step!r} is not allowed; "
                                 f"allowed: a{'n integer' if kind == 'int' else ' number'} > 0")
            out["step"] = step
    elif kind == "choice":
        values = entry["values"]
        if not isinstance(values, list) or not values:
            raise Esc50Error(f"search space {name!r}: values must be a non-empty list, "
                             f"got {values!r}")
        normalised = []
        for v in values:
            v = _normalise_value(name, param, v)
            if v not in normalised:
                normalised.append(v)
        out["values"] = normalised
    elif kind == "fixed":
        out["value"] = _normalise_value(name, param, entry["value"])
    if "default" in entry:
        default = _normalise_value(name, param, entry["default"])
        if kind == "choice" and default not in out["values"]:
            raise Esc50Error(f"search space {name!r}: default {default!r} is not one of the values")
        if kind in ("float", "int") and not out["min"] <= default <= out["max"]:
            raise Esc50Error(f"search space {name!r}: default {default!r} is outside "
                             f"[{out['min']}, {out['max']}]")
        out["default"] = default
    return out


def resolve_space(user=None, fixed=()):
    """The search space: DEFAULT_SPACE <- `user` entries, minus `fixed` names.

    Args:
        user: dict or None. Entries from a space file (None values remove a name).
        fixed: names set by flags; they are not searched.

    Returns:
        dict name -> normalised entry, in PARAMS order.
    """
    merged = dict(DEFAULT_SPACE)
    for name, entry in (user or {}).items():
        merged[name] = validate_entry(name, entry)
    return {name: validate_entry(name, merged[name]) for name in PARAMS
            if merged.get(name) is not None and name not in fixed}


def fixed_by_flags(overrides):
    """Names of the space that `overrides` (sections of flag values) set, with their values."""
    out = {}
    by_target = {(p.section, p.key): name for name, p in PARAMS.items() if name != "model"}
    for section, values in (overrides or {}).items():
        for key, value in values.items():
            if (section, key) in by_target:
                out[by_target[section, key]] = value
    augment = (overrides or {}).get("augment", {})
    if augment.get("mix") == "none":
        out["mixup_alpha"] = 0.0
    return out


def resolve_models(models):
    """`("auto",)` -> every Keras model; other names checked against the registry."""
    from esc50tf.models import registry

    names = [m.strip() for m in models if m.strip()]
    if not names:
        raise Esc50Error("no model given; use --model NAME[,NAME...] or auto")
    if "auto" in names:
        if len(names) > 1:
            raise Esc50Error("--model auto searches every Keras model; do not list others with it")
        return tuple(s.name for s in registry.specs() if s.keras)
    out = []
    for name in names:
        spec = registry.get(name)  # unknown names fail here, listing the valid ones
        if not spec.keras:
            keras_names = ", ".join(s.name for s in registry.specs() if s.keras)
            raise Esc50Error(f"model {name!r} is a scikit-learn model and has nothing to tune "
                             f"here; tune searches Keras models: {keras_names}")
        if name not in out:
            out.append(name)
    return tuple(out)


def describe_space(space, models):
    """Markdown table of a resolved space (for trials.md and the README)."""
    rows = ["| name | sets | search |", "| --- | --- | --- |"]
    if len(models) > 1:
        rows.append(f"| model | model.name | choice: {', '.join(models)} |")
    for name, entry in space.items():
        p = PARAMS[name]
        when = condition_of(name)
        notes = [f"when {when[0]} is {', '.join(when[1])}"] if when else []
        notes += [p.note] if p.note else []
        notes = f" ({'; '.join(notes)})" if notes else ""
        rows.append(f"| {name} | {p.section}.{p.key} | {_entry_text(entry)}{notes} |")
    return "\n".join(rows)


def _entry_text(entry):
    kind = entry["type"]
    if kind in ("float", "int"):
        text = f"{kind} {entry['min']:g}..{entry['max']:g}"
        if entry.get("sampling", "linear") != "linear":
            text += f", {entry['sampling']}"
        if entry.get("step"):
            text += f", step {entry['step']:g}"
        return text
    if kind == "choice":
        return "choice: " + ", ".join(str(v) for v in entry["values"])
    if kind == "fixed":
        return f"fixed: {entry['value']}"
    return "true or false"


def round_value(value):
    """Drops float noise of stepped ranges (0.30000000000000004 -> 0.3)."""
    return float(f"{float(value):.10g}")
