"""`esc50tf tune`: hyperparameter search with KerasTuner that never sees the test fold.

    DATA, test fold K
    -> splits.test_fold_split(K): training folds, validation carved from them by src_file
    -> KerasTuner (random search, Bayesian optimisation or Hyperband) over a
       search space of optimizer, learning rate, weight decay, batch size,
       model, front end, augmentation strengths, dropout and model-specific
       sizes; each trial's values become a full esc50tf RunConfig, the model
       is built, fitted on the training side and scored on the validation side
    -> trials.csv / trials.md / objective.png, best_hyperparameters.json
    -> the best RunConfig retrained with esc50tf.train.train into OUT/best_run/
       and tested on fold K (or with k-fold CV, `cv=True`)

Only the training folds' shards are opened during the search: the test fold
first appears in the retraining's final prediction. With `cv=True` the best
settings are also scored by k-fold CV; the folds other than K helped choose
them, so only fold K's score is free of the search (an unbiased CV estimate
would need a search per fold, i.e. nested CV).

The search space (`DEFAULT_SPACE`, see `PARAMS` for what each name sets) can
be changed with a JSON (or, with PyYAML installed, YAML) file of entries like

    {"lr": {"type": "float", "min": 1e-4, "max": 1e-2, "sampling": "log"},
     "optimizer": {"type": "choice", "values": ["adam", "sgd"]},
     "n_mels": {"type": "fixed", "value": 64},
     "dropout": null}

where `null` takes the name out of the search (the preset's value is used).
A flag such as `--lr` or `--n-mels` fixes the setting it names the same way.

The KerasTuner project lives in OUT/search/: a search interrupted by Ctrl-C
or a crash continues with `resume=True` (finished trials are kept, the
interrupted one runs again with the same values), and a trial that raises
(out of memory, a bad combination of settings...) is recorded as failed while
the search goes on, until `max_failures` trials in a row have failed.

Example:
>>> cfg = TuneConfig(data="tfrecords", out="tune-gru", models=("gru",), max_trials=20,
...                  epochs=30, test_fold=1)
>>> summary = tune(cfg)          # OUT/trials.md, OUT/best_run/report.md
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, ClassVar

from esc50tf import cleanup
from esc50tf.augment import registry as augment_registry
from esc50tf.config import Config
from esc50tf.errors import Esc50Error
from esc50tf.frontend import KINDS, kinds_reading
from esc50tf.io import atomic_path, read_json, write_json, write_text

TUNERS = ("random", "bayesian", "hyperband")
OBJECTIVES = ("val_accuracy", "val_loss")
SAMPLINGS = ("linear", "log", "reverse_log")
PROJECT = "search"  # KerasTuner project folder inside OUT
BEST_RUN = "best_run"
TRIAL_META = "esc50tf.json"

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
    """

    name: str
    section: str
    key: str
    kind: str
    check: Callable
    allowed: str
    default: dict | None
    when: tuple | None = None


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _choice(values):
    return {"type": "choice", "values": list(values)}


PARAMS = {p.name: p for p in [
    # Parents first: conditions refer to them.
    Param("model", "model", "name", "str", lambda v: True, "a Keras model name", None),
    Param("optimizer", "train", "optimizer", "str",
          lambda v: v in ("adam", "adamw", "sgd", "adagrad"), "adam, adamw, sgd, adagrad",
          _choice(["adam", "adamw", "sgd", "adagrad"])),
    Param("features", "features", "kind", "str", lambda v: v in KINDS,
          ", ".join(KINDS), _choice(KINDS)),
    Param("lr", "train", "lr", "real", lambda v: v > 0, "a number > 0",
          {"type": "float", "min": 1e-4, "max": 1e-2, "sampling": "log"}),
    Param("weight_decay", "train", "weight_decay", "real", lambda v: v >= 0, "a number >= 0",
          {"type": "float", "min": 1e-6, "max": 1e-2, "sampling": "log"},
          when=("optimizer", ("adamw", "sgd"))),
    Param("momentum", "train", "momentum", "real", lambda v: 0 <= v < 1, "a number in [0, 1)",
          _choice([0.8, 0.9, 0.95]), when=("optimizer", ("sgd",))),
    Param("batch_size", "train", "batch_size", "int", lambda v: v >= 1, "an integer >= 1",
          _choice([16, 32, 64])),
    Param("n_mels", "features", "n_mels", "int", lambda v: v >= 1, "an integer >= 1",
          _choice([64, 128]), when=("features", kinds_reading("n_mels"))),
    Param("n_mfcc", "features", "n_mfcc", "int", lambda v: v >= 1, "an integer >= 1",
          _choice([20, 40]), when=("features", kinds_reading("n_mfcc"))),
    Param("n_fft", "features", "n_fft", "int", lambda v: v >= 16, "an integer >= 16",
          _choice([1024, 2048])),
    Param("hop_length", "features", "hop_length", "int", lambda v: v >= 1, "an integer >= 1",
          _choice([256, 512])),
    *(Param(**p) for p in augment_registry.search_params()),  # esc50tf.augment.registry
    Param("dropout", "model", "dropout", "real", lambda v: 0 <= v < 1, "a number in [0, 1)",
          {"type": "float", "min": 0.1, "max": 0.5, "step": 0.1}),
    Param("rnn_units", "model", "rnn_units", "int", lambda v: v >= 1, "an integer >= 1",
          _choice([32, 64, 128])),
    Param("attention_units", "model", "attention_units", "int", lambda v: v >= 1,
          "an integer >= 1", _choice([32, 64, 128])),
    Param("dense_units", "model", "dense_units", "int", lambda v: v >= 1, "an integer >= 1",
          _choice([128, 256, 512])),
    # Searched only when --weights names pretrained backbone weights.
    Param("freeze_backbone", "model", "freeze_backbone", "bool", lambda v: True, "true or false",
          {"type": "boolean"}),
    # With PANNs --weights: the hybrid's trunk, pretrained CNN14 or DenseNet121 from scratch.
    Param("backbone", "model", "backbone", "str", lambda v: v in ("densenet121", "cnn14", "cnn14_16k"),
          "densenet121, cnn14, cnn14_16k", _choice(["densenet121", "cnn14"])),
    # With --weights: how much slower the pretrained trunk learns than the new head.
    Param("trunk_lr_scale", "train", "trunk_lr_scale", "real", lambda v: 0 < v <= 1,
          "a number in (0, 1]", _choice([0.03, 0.1, 0.3, 1.0]),
          when=("optimizer", ("adam", "adamw"))),
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
        if not _is_int(value):
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


def _snr_pair(value):
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
            ok = (_is_int(step) if kind == "int" else
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
        notes += [_NOTES[name]] if name in _NOTES else []
        notes = f" ({'; '.join(notes)})" if notes else ""
        rows.append(f"| {name} | {p.section}.{p.key} | {_entry_text(entry)}{notes} |")
    return "\n".join(rows)


_NOTES = {"noise_snr": "SNR range in dB; off: no noise", "mixup_alpha": "0: no mixup",
          "freeze_backbone": "only with --weights", "backbone": "only with PANNs --weights",
          "trunk_lr_scale": "only with --weights; PANNs trunks"}


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


# --------------------------------------------------------------------------
# The search space as KerasTuner hyperparameters, and back to RunConfigs
# --------------------------------------------------------------------------


class SearchSpace:
    """Declares the space on a `keras_tuner.HyperParameters` and maps values to RunConfigs.

    Args:
        space: dict. A resolved space (`resolve_space`).
        models: tuple of str. Candidate Keras models; more than one adds a
            "model" choice.
        base: dict. Config sections every trial starts from (flags, data, protocol).
        preset: str. "default" or "seed".
    """

    def __init__(self, space, models, base, preset="default"):
        from esc50tf.run_config import resolve_config

        self.space = dict(space)
        self.models = tuple(models)
        self.base = copy.deepcopy(base)
        self.preset = preset
        self._resolve = resolve_config
        # Values a setting takes when it is not searched, per model (preset + flags).
        self._base_configs = {m: resolve_config(m, preset, base=self.base) for m in self.models}
        self.base_config = self._base_configs[self.models[0]]
        if not any(c.model.weights for c in self._base_configs.values()):
            # Only pretrained backbones are frozen or learn more slowly than the head.
            for name in ("freeze_backbone", "backbone", "trunk_lr_scale"):
                self.space.pop(name, None)

    def _candidates(self, name):
        """Every value `name` can take in this search."""
        if name == "model":
            return list(self.models)
        entry = self.space.get(name)
        if entry is not None:
            if entry["type"] == "choice":
                return list(entry["values"])
            if entry["type"] == "fixed":
                return [entry["value"]]
            return None  # a range: never a parent
        p = PARAMS[name]
        return sorted({getattr(getattr(c, p.section), p.key) for c in self._base_configs.values()},
                      key=str)

    def condition(self, name):
        """None (always searched), False (never: cannot apply) or `(parent, values)`."""
        when = condition_of(name)
        if when is None:
            return None
        parent, wanted = when
        candidates = self._candidates(parent)
        active = [v for v in candidates if v in wanted]
        if not active:
            return False
        if len(active) == len(candidates):
            return None
        if parent in self.space or (parent == "model" and len(self.models) > 1):
            return parent, active
        return None  # the parent varies with the model's preset: apply it anyway

    def declare(self, hp):
        """Declares every hyperparameter on `hp`; returns the active values by name."""
        values = {}
        if len(self.models) > 1:
            values["model"] = hp.Choice("model", list(self.models), default=self.models[0])
        for name, entry in self.space.items():
            cond = self.condition(name)
            if cond is False:
                continue
            kw = {"parent_name": cond[0], "parent_values": list(cond[1])} if cond else {}
            kind = entry["type"]
            if kind == "float":
                value = hp.Float(name, entry["min"], entry["max"], step=entry.get("step"),
                                 sampling=entry.get("sampling", "linear"),
                                 default=entry.get("default"), **kw)
            elif kind == "int":
                value = hp.Int(name, entry["min"], entry["max"], step=entry.get("step"),
                               sampling=entry.get("sampling", "linear"),
                               default=entry.get("default"), **kw)
            elif kind == "choice":
                value = hp.Choice(name, entry["values"], default=entry.get("default"), **kw)
            elif kind == "fixed":
                value = hp.Fixed(name, entry["value"], **kw)
            else:
                value = hp.Boolean(name, default=entry.get("default", False), **kw)
            if value is not None:  # None: inactive in this trial
                values[name] = value
        return values

    def run_config(self, values, **train):
        """The full RunConfig of a trial's values.

        Args:
            values: dict name -> value (from `declare`, or a trial's values).
            **train: further train settings (out, epochs, protocol...).
        """
        model = values.get("model", self.models[0])
        base = copy.deepcopy(self.base)
        base.setdefault("train", {}).update(train)
        base_mix = self._base_configs.get(model, self._base_configs[self.models[0]]).augment.mix
        over = {"train": {}, "model": {}, "features": {}, "augment": {}}
        for name, value in values.items():
            p = PARAMS.get(name)
            if p is None or name == "model":
                continue  # e.g. Hyperband's tuner/epochs
            if p.kind == "int":
                value = int(value)
            elif p.kind == "real":
                value = _round(value)
            elif p.kind == "bool":
                value = bool(value)
            if name == "noise_snr":
                value = _snr_pair(value)
            if name == "mixup_alpha":
                if value == 0:
                    over["augment"]["mix"] = "none"
                else:
                    over["augment"]["mix"] = base_mix if base_mix != "none" else "mixup"
                    over["augment"]["mixup_alpha"] = value
                continue
            over[p.section][p.key] = value
        _fit_trunk(model, base, over)
        return self._resolve(model, self.preset, base=base, overrides=over)

    def default_values(self):
        """The values of a trial at every entry's default (for an early sanity check)."""
        import keras_tuner as kt

        return self.declare(kt.HyperParameters())


def _fit_trunk(model, base, over):
    """Drops trial values a PANNs trunk cannot take (in place).

    A PANNs trunk has its own front end, so searched front-end settings do not
    apply to it; a hybrid on DenseNet121 trains from scratch when the weights
    are PANNs weights (they fit the CNN14 trunk only), at one learning rate.
    """
    from esc50tf.models import panns

    backbone = over["model"].get("backbone", base.get("model", {}).get("backbone"))
    if panns.architecture_for(model, backbone) is not None:
        over["features"] = {}
        base.pop("features", None)
    elif model == "hybrid" and panns.is_panns_weights(base.get("model", {}).get("weights")):
        over["model"]["weights"] = None
        over["model"].pop("freeze_backbone", None)
        over["train"].pop("trunk_lr_scale", None)  # no pretrained trunk to slow


# --------------------------------------------------------------------------
# Running trials
# --------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class _TrialRunner:
    """Builds and fits one trial's model, and keeps the per-trial records and progress lines.

    KerasTuner calls `build` and `fit` through a HyperModel and `trial_begun`
    / `trial_ended` through the tuner's hooks. It only ever holds the split's
    training and validation selections.
    """

    space: SearchSpace
    data: str
    split: object  # train and val only: the test side is None
    folder: object  # the opened TFRecordFolder of `data`
    num_classes: int
    strategy: object
    kind: str
    policy: str
    out: Path
    epochs: int
    objective: str
    max_trials: int | None
    max_failures: int
    verbose: int
    trial_id: str | None = dataclasses.field(default=None, init=False)
    config: object = dataclasses.field(default=None, init=False)
    meta: dict = dataclasses.field(default_factory=dict, init=False)
    started: float | None = dataclasses.field(default=None, init=False)

    def __post_init__(self):
        self.out = Path(self.out)

    @property
    def manifest(self):
        return self.folder.manifest

    # HyperModel.build
    def build(self, hp):
        import keras

        from esc50tf import distribute, tasks
        from esc50tf.models.panns import check_sample_rate

        trial_dir = self.out / PROJECT / f"trial_{self.trial_id}"
        cfg = self.space.run_config(self.space.declare(hp), out=str(trial_dir), epochs=self.epochs)
        self.config = cfg
        self.meta = {"config": cfg.to_dict()}
        check_sample_rate(cfg.model, self.manifest, self.data)  # a PANNs trunk's own rate
        # KerasTuner clears the Keras session before every build, and with it the dtype policy.
        keras.mixed_precision.set_global_policy(self.policy)
        t = cfg.train
        global_batch = distribute.global_batch_size(t.batch_size, self.strategy)
        steps = len(self.split.train.rows(self.folder.index)) // global_batch
        # As a run builds it: normalisation adapted on the training side only, then compiled.
        model, _ = tasks.get_task(cfg.model.name).build_compiled(
            cfg, self.split.train, self.folder, self.num_classes,
            distribute.num_replicas(self.strategy), steps_per_epoch=steps)
        return model

    # HyperModel.fit
    def fit(self, hp, model, callbacks=(), epochs=None, initial_epoch=0, **kwargs):
        from esc50tf import distribute, recipe, tasks

        cfg = self.config  # set by build() for this trial
        t = cfg.train
        task = tasks.get_task(cfg.model.name)
        global_batch = distribute.global_batch_size(t.batch_size, self.strategy)
        cfg_global = dataclasses.replace(cfg, train=dataclasses.replace(t, batch_size=global_batch))
        # TPUs need static shapes, so whole validation batches there.
        train_ds, val_ds = task.build_inputs(cfg_global, self.split, self.folder,
                                             one_hot=recipe.soft_labels(cfg),
                                             drop_val_remainder=self.kind == "tpu")
        history = task.fit(model, train_ds, val_ds, cfg, epochs=epochs,
                           initial_epoch=initial_epoch, verbose=self.verbose,
                           callbacks=task.search_callbacks(cfg, callbacks))
        self.meta["epochs_run"] = len(history.history.get("loss", []))
        return history

    # Tuner hooks
    def trial_begun(self, trial):
        self.trial_id = trial.trial_id
        self.meta = {}
        self.started = time.perf_counter()

    def trial_ended(self, tuner, trial):
        wall = time.perf_counter() - (self.started or time.perf_counter())
        trial = tuner.oracle.get_trial(trial.trial_id)
        failed = trial.status != "COMPLETED"
        meta = dict(self.meta, status=trial.status, wall_seconds=wall,
                    error=_last_line(trial.message) if failed else None,
                    traceback=trial.message if failed else None)
        write_json(Path(tuner.get_trial_dir(trial.trial_id)) / TRIAL_META, meta)
        oracle = tuner.oracle
        done = [oracle.trials[i] for i in oracle.end_order]
        total = f"/{self.max_trials}" if self.max_trials else ""
        name = self.objective
        if trial.status == "COMPLETED":
            best = oracle.get_best_trials(1)[0]
            what = (f"{name} {trial.score:.4f} (best {best.score:.4f}, trial {best.trial_id}), "
                    f"{meta.get('epochs_run', '?')} epoch(s)")
        else:
            what = f"FAILED: {meta['error']}"
        values = ", ".join(f"{k}={_fmt(v)}" for k, v in trial.hyperparameters.values.items()
                           if not k.startswith("tuner/"))
        _log(f"[trial {trial.trial_id}, {len(done)}{total}] {what}, {wall:.1f} s; {values}")
        failures = 0
        for ended in reversed(done):
            if ended.status != "FAILED":
                break
            failures += 1
        if self.max_failures and failures >= self.max_failures:
            raise Esc50Error(f"{failures} trials in a row failed; the search stopped. Last error: "
                             f"{meta['error']} (see {self.out}/trials.md; fix the cause and "
                             "continue with --resume)")


class _SearchMixin:
    """Hooks mixed in before KerasTuner's RandomSearch / BayesianOptimization / Hyperband."""

    runner: _TrialRunner = None

    def _populate_initial_space(self):
        # KerasTuner builds the model repeatedly here to find conditional
        # hyperparameters; our space declares every one of them up front.
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def on_trial_begin(self, trial):
        self.runner.trial_begun(trial)
        super().on_trial_begin(trial)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)  # the oracle records the result and saves its state
        self.runner.trial_ended(self, trial)


def _make_tuner(kind, runner, objective, max_trials, seed, out, strategy):
    import keras_tuner as kt

    class Esc50HyperModel(kt.HyperModel):
        def declare_hyperparameters(self, hp):
            runner.space.declare(hp)

        def build(self, hp):
            return runner.build(hp)

        def fit(self, hp, model, *args, **kwargs):
            return runner.fit(hp, model, **kwargs)

    base = {"random": kt.RandomSearch, "bayesian": kt.BayesianOptimization,
            "hyperband": kt.Hyperband}[kind]
    cls = type(f"Esc50{base.__name__}", (_SearchMixin, base), {"runner": runner})
    direction = "max" if objective == "val_accuracy" else "min"
    kwargs = dict(hypermodel=Esc50HyperModel(name="esc50tf"),
                  objective=kt.Objective(objective, direction), seed=seed,
                  # Our hooks count consecutive failures after the state is saved.
                  max_consecutive_failed_trials=None,
                  directory=str(out), project_name=PROJECT, overwrite=False,
                  distribution_strategy=strategy)
    if kind == "hyperband":
        kwargs["max_epochs"] = runner.epochs
    else:
        kwargs["max_trials"] = max_trials
    with contextlib.redirect_stdout(sys.stderr):  # "Reloading Tuner from ..."
        tuner = cls(**kwargs)
    if kind == "hyperband" and max_trials:
        tuner.oracle.max_trials = max_trials  # caps Hyperband's own schedule
    tuner.oracle.verbose = 0  # one progress line per trial is ours
    return tuner


# --------------------------------------------------------------------------
# tune()
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TuneConfig(Config):
    """A hyperparameter search; saved (less `out`) as OUT/tune.json.

    Args:
        data: str. TFRecord folder.
        out: str. Output folder.
        models: tuple of str. Candidate models, or ("auto",) for every Keras model.
        tuner: str. "random", "bayesian" or "hyperband".
        max_trials: int or None. Trials in all (None: 10; Hyperband: its own schedule).
        epochs: int. Epochs per trial (Hyperband: the most a trial trains).
        final_epochs: int or None. Epochs of the retraining; None: `epochs`.
        objective: str. "val_accuracy" (maximised) or "val_loss" (minimised).
        test_fold: int or None. Fold held out from the search; None: the first.
        cv: bool. Evaluate the best settings with k-fold CV instead of on `test_fold`.
        split_ratio: float or None. Instead of a test fold, hold out the test
            side of a grouped, stratified ratio split (e.g. 0.8), for data
            whose folds are uneven or a single fold.
        preset: str. Preset every trial starts from.
        space: dict or None. Search-space entries overriding DEFAULT_SPACE.
        overrides: dict or None. Config sections set by flags; a searched
            setting given here is fixed.
        max_failures: int. Stop after this many failed trials in a row (0: never).
        retrain: bool. Retrain and test the best settings into OUT/best_run.
    """

    data: str
    out: str
    models: tuple = ("hybrid",)
    tuner: str = "random"
    max_trials: int | None = None
    epochs: int = 20
    final_epochs: int | None = None
    objective: str = "val_accuracy"
    test_fold: int | None = None
    cv: bool = False
    split_ratio: float | None = None
    preset: str = "default"
    space: dict | None = None
    overrides: dict | None = None
    max_failures: int = 3
    retrain: bool = True

    label: ClassVar[str] = "tune"

    def __post_init__(self):
        self.check(self.tuner in TUNERS, "tuner", self.tuner, ", ".join(TUNERS))
        self.check(self.objective in OBJECTIVES, "objective", self.objective, ", ".join(OBJECTIVES))
        self.check(_is_int(self.epochs) and self.epochs >= 1, "epochs", self.epochs,
                   "an integer >= 1")
        self.check(self.max_trials is None or _is_int(self.max_trials) and self.max_trials >= 1,
                   "max_trials", self.max_trials, "an integer >= 1")
        self.check(self.final_epochs is None or _is_int(self.final_epochs)
                   and self.final_epochs >= 1, "final_epochs", self.final_epochs,
                   "an integer >= 1")
        self.check(_is_int(self.max_failures) and self.max_failures >= 0, "max_failures",
                   self.max_failures, "an integer >= 0")
        if self.split_ratio is not None and (self.cv or self.test_fold is not None):
            raise Esc50Error("--split holds out a ratio split's test side; it cannot go with "
                             "--test-fold or --cv")


_NOT_COMPARED = ("out", "max_trials", "final_epochs", "cv", "max_failures", "retrain")


def _prepare_out(out, settings, resume, overwrite):
    """Creates OUT, or checks that a search to resume there has the same settings."""
    out = Path(out)
    saved = out / "tune.json"
    if out.exists() and not out.is_dir():
        raise Esc50Error(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if overwrite:
            shutil.rmtree(out)
        elif not resume:
            raise Esc50Error(f"{out}: folder is not empty; pass --resume to continue the search "
                             "in it, --overwrite to start again, or choose another --out")
        elif not saved.is_file():
            raise Esc50Error(f"{out}: not an esc50tf tune folder (no tune.json); "
                             "choose another --out or pass --overwrite")
        else:
            old = _flatten(json.loads(saved.read_text()))
            new = _flatten(settings)
            diff = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                    if k.split(".")[0] not in _NOT_COMPARED and old.get(k) != new.get(k)]
            if diff:
                raise Esc50Error(f"{out}: holds a search with other settings ({'; '.join(diff[:3])}"
                                 f"{'; ...' if len(diff) > 3 else ''}); resume it with the same "
                                 "settings, or pass --overwrite")
            write_json(saved, settings)
            return True
    out.mkdir(parents=True, exist_ok=True)
    write_json(saved, settings)
    return False


def tune(config, resume=False, overwrite=False, callbacks=(), verbose=1):
    """Runs the search, writes its results and retrains the best settings.

    Args:
        config: TuneConfig.
        resume: bool. Continue the search in an existing OUT.
        overwrite: bool. Delete an existing OUT first.
        callbacks: extra Keras callbacks for every trial's fit (deep-copied
            by KerasTuner).
        verbose: int. Keras fit verbosity.

    Returns:
        dict: "best_trial", "objective", "best_config" (RunConfig dict),
        "trials" (rows as in trials.csv), "report" (retraining report or None).
    """
    from esc50tf import distribute
    from esc50tf.data import splits
    from esc50tf.data import tfrecords as tfr
    from esc50tf.data.dataset import TFRecordFolder

    c = config
    out = Path(c.out)
    if tfr.is_remote(c.out):
        raise Esc50Error(f"{c.out}: tune writes its folder locally; give a local --out")
    # Settings first: a bad model, space entry or flag fails before anything runs.
    overrides = copy.deepcopy(c.overrides or {})
    models = resolve_models(c.models)
    fixed = fixed_by_flags(overrides)
    space = resolve_space(c.space, fixed=fixed)
    folder = TFRecordFolder(c.data)
    manifest, index = folder.manifest, folder.index
    folds = sorted(int(f) for f in index["fold"].unique())
    test_fold = folds[0] if c.test_fold is None else int(c.test_fold)
    protocol = dict(protocol="test-fold", test_fold=test_fold)
    if c.split_ratio is not None:
        test_fold, protocol = None, dict(protocol="split", split_ratio=c.split_ratio)
    base = copy.deepcopy(overrides)
    base.setdefault("train", {}).update(data=str(c.data), **protocol)
    base.setdefault("features", {})["sample_rate"] = int(manifest["config"]["sample_rate"])
    search_space = SearchSpace(space, models, base, c.preset)
    from esc50tf.models.panns import check_sample_rate

    for model in models:  # each model with every entry at its default makes a valid config
        cfg = search_space.run_config({**search_space.default_values(), "model": model})
        check_sample_rate(cfg.model, manifest, c.data)
    t = search_space.base_config.train
    distribute.check_options(t.strategy, tpu=t.tpu, devices=t.devices,
                             mixed_precision=t.mixed_precision, jit_compile=t.jit_compile,
                             deterministic=t.deterministic)
    if t.strategy == "multiworker":
        raise Esc50Error("tune runs on one machine (KerasTuner's distribution_strategy supports "
                         "single-worker strategies only); use --strategy mirrored, tpu or auto")
    if t.val_fraction <= 0:
        raise Esc50Error("tuning scores trials on a validation set carved from the training "
                         "folds; --val-fraction must be > 0")
    if test_fold is None:
        split = splits.ratio_split(index, c.split_ratio, t.val_fraction, t.seed)
    else:
        split = splits.test_fold_split(index, test_fold, t.val_fraction, t.seed)
        for line in splits.fold_warnings(index):
            _log(f"tune: warning: {line}")
    sizes = splits.check_disjoint(split, index)
    data = c.data if tfr.is_remote(c.data) else str(Path(c.data).resolve())
    settings = json.loads(json.dumps({**dataclasses.asdict(c), "data": data, "models": models,
                                      "test_fold": test_fold, "space": space}))
    created = cleanup.make_dirs(out)
    try:
        resumed = _prepare_out(out, settings, resume, overwrite)
    except BaseException:
        cleanup.remove_created(created)
        raise
    try:
        return _search_and_retrain(c, out, resumed, models, fixed, space, folder,
                                   search_space, split, sizes, test_fold, verbose, callbacks)
    except BaseException:
        if not resumed and not _ended_trials(out):
            # Nothing a --resume would use: leave no folder that blocks the next command.
            cleanup.discard(out, created)
        raise


def _ended_trials(out):
    """True when OUT holds a trial that ended (completed or failed: trials.md reports it)."""
    for path in Path(out).glob("*/trial_*/trial.json"):
        try:
            if json.loads(path.read_text()).get("status") in ("COMPLETED", "FAILED", "INVALID"):
                return True
        except (OSError, ValueError):
            continue
    return False


def _search_and_retrain(c, out, resumed, models, fixed, space, folder, search_space,
                        split, sizes, test_fold, verbose, callbacks):
    import keras

    from esc50tf import distribute

    t = search_space.base_config.train
    write_json(out / "space.json", space)
    max_trials = c.max_trials or (None if c.tuner == "hyperband" else 10)

    if t.deterministic:
        distribute.enable_determinism()  # left on: the whole search and the retrain are deterministic
    strategy, kind = distribute.make_strategy(t.strategy, tpu=t.tpu, devices=t.devices)
    distribute.check_strategy(strategy, kind, jit_compile=t.jit_compile)
    policy = distribute.resolve_precision(t.mixed_precision, kind)
    # The search sees the training side only: no test Selection exists in it.
    search_split = dataclasses.replace(split, test=None)
    runner = _TrialRunner(search_space, c.data, search_split, folder,
                          folder.num_classes, strategy, kind, policy, out, c.epochs,
                          c.objective, max_trials, c.max_failures, verbose)
    _log(f"tune: {c.tuner} search over {', '.join(models)}, "
         f"{max_trials or 'Hyperband'} trial(s) of up to {c.epochs} epoch(s), objective "
         f"{c.objective}; training folds {','.join(map(str, split.train.folds))} "
         f"({sizes['train']} clips, validation {sizes['val']} carved by src_file), "
         f"{_held_out(test_fold)} ({sizes['test']} clips) held out; {kind} strategy, "
         f"{distribute.num_replicas(strategy)} replica(s), precision {policy}"
         + (" (resuming)" if resumed else ""))
    tuner = None
    try:
        tuner = _make_tuner(c.tuner, runner, c.objective, max_trials, t.seed + 1, out,
                            None if kind == "default" else strategy)
        tuner.search(callbacks=list(callbacks))
    finally:
        keras.mixed_precision.set_global_policy("float32")
        if tuner is not None:  # also after Ctrl-C or a stopped search: what is known so far
            rows = write_results(out, tuner.oracle, c.objective, models, space, test_fold, c.cv,
                                 fixed)
    done = [r for r in rows if r["status"] == "completed"]
    if not done:
        raise Esc50Error(f"no trial completed, so there are no best settings; see {out}/trials.md")
    best = done[0]
    train_over = {"out": str(out / BEST_RUN), "epochs": c.final_epochs or c.epochs}
    if c.cv:
        train_over.update(protocol="cv", test_fold=None)
    from esc50tf.run_config import used_config

    best_cfg = used_config(search_space.run_config(
        tuner.oracle.get_trial(best["trial"]).hyperparameters.values, **train_over), log=_log)
    write_json(out / "best_hyperparameters.json", best_cfg.to_dict())
    _log(f"tune: best trial {best['trial']} ({c.objective} {best[c.objective]:.4f}); settings in "
         f"{out}/best_hyperparameters.json")
    report = None
    if c.retrain:
        report = _retrain(best_cfg, out / BEST_RUN, verbose)
        _append_test_result(out, report, c.cv, test_fold)
    return {"best_trial": best["trial"], "objective": best[c.objective],
            "best_config": best_cfg.to_dict(), "trials": rows, "report": report}


def _retrain(cfg, run_dir, verbose):
    """esc50tf.train.train of the best settings, replacing a retraining of other settings."""
    from esc50tf import train as train_mod

    saved = run_dir / "config.json"
    wanted = json.loads(json.dumps(cfg.to_dict()))
    same = saved.is_file() and json.loads(saved.read_text()) == wanted
    t = cfg.train
    how = ("with k-fold CV over every fold" if t.protocol == "cv" else
           f"on the training folds, then testing on fold {t.test_fold}"
           if t.protocol == "test-fold" else
           f"on the training side of the {t.split_ratio:g} ratio split, then testing on its test side")
    _log(f"tune: retraining the best settings {how}, into {run_dir}")
    return train_mod.train(cfg, overwrite=not same, verbose=verbose)


# --------------------------------------------------------------------------
# Results: trials.csv, trials.md, objective.png
# --------------------------------------------------------------------------


_STATUS = {"COMPLETED": "completed", "FAILED": "failed", "INVALID": "failed",
           "RUNNING": "interrupted", "IDLE": "interrupted"}


def trial_rows(oracle, objective, project_dir):
    """One dict per trial, best first (failed and interrupted trials last)."""
    rows = []
    for trial_id in sorted(oracle.trials, key=int):
        trial = oracle.trials[trial_id]
        try:
            meta = read_json(Path(project_dir) / f"trial_{trial_id}" / TRIAL_META, default={})
        except Esc50Error as err:  # one damaged record must not cost the whole search's table
            _log(f"warning: {err}; trial {trial_id} is listed without its record")
            meta = {}
        status = _STATUS.get(trial.status, str(trial.status).lower())
        score = trial.score if status == "completed" else None
        rows.append({
            "trial": trial_id, "status": status, objective: score,
            "epochs": meta.get("epochs_run") if status == "completed" else None,
            "wall_seconds": meta.get("wall_seconds"),
            "values": {k: _round(v) if isinstance(v, float) else v
                       for k, v in trial.hyperparameters.values.items()
                       if not k.startswith("tuner/")},
            "error": meta.get("error") or (_last_line(trial.message)
                                           if status == "failed" else None),
        })
    sign = -1 if objective == "val_accuracy" else 1
    rows.sort(key=lambda r: (r[objective] is None, sign * (r[objective] or 0), int(r["trial"])))
    return rows


def write_results(out, oracle, objective, models, space, test_fold, cv, fixed=None):
    """Writes trials.csv, trials.md and objective.png; returns the rows."""
    out = Path(out)
    rows = trial_rows(oracle, objective, out / PROJECT)
    names = [n for n in PARAMS if any(n in r["values"] for r in rows)]
    with atomic_path(out / "trials.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["rank", "trial", "status", objective, "epochs", "wall_seconds", *names,
                         "error"])
        for rank, r in enumerate(rows, 1):
            writer.writerow([rank, r["trial"], r["status"], _csv(r[objective]), _csv(r["epochs"]),
                             _csv(r["wall_seconds"]), *(_csv(r["values"].get(n)) for n in names),
                             r["error"] or ""])
    _write_markdown(out, rows, names, objective, models, space, test_fold, cv, fixed or {})
    _plot_objective(out / "objective.png", rows, objective)
    return rows


def _write_markdown(out, rows, names, objective, models, space, test_fold, cv, fixed):
    counts = {s: sum(r["status"] == s for r in rows)
              for s in ("completed", "failed", "interrupted")}
    lines = [f"# Hyperparameter search: {', '.join(models)}", "",
             f"- objective: {objective} ({'max' if objective == 'val_accuracy' else 'min'}) on a "
             f"validation set carved by src_file from the training folds; "
             f"{_held_out(test_fold)} was not read during the search",
             f"- trials: {len(rows)} ({', '.join(f'{v} {k}' for k, v in counts.items() if v)})"]
    done = [r for r in rows if r["status"] == "completed"]
    if done:
        lines.append(f"- best: trial {done[0]['trial']}, {objective} {done[0][objective]:.4f} "
                     "-> best_hyperparameters.json (`esc50tf train --config` repeats it)")
    if cv:
        lines.append(f"- evaluation: k-fold CV of the best settings; all folds but {test_fold} were "
                     f"also used to choose them, so only fold {test_fold}'s score is untouched by "
                     "the search")
    lines += ["", "| rank | trial | status | " + objective + " | epochs | wall s | "
              + " | ".join(names) + " | error |",
              "| " + " | ".join(["---"] * (7 + len(names))) + " |"]
    for rank, r in enumerate(rows, 1):
        wall = "" if r["wall_seconds"] is None else f"{r['wall_seconds']:.1f}"
        cells = [str(rank), r["trial"], r["status"], _fmt(r[objective]), _fmt(r["epochs"]), wall,
                 *(_fmt(r["values"].get(n)) for n in names),
                 (r["error"] or "").replace("|", "\\|")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Search space", "", describe_space(space, models), ""]
    if fixed:
        lines += ["Fixed by flags: " + ", ".join(f"{k}={v}" for k, v in fixed.items()), ""]
    write_text(out / "trials.md", "\n".join(lines))


def _append_test_result(out, report, cv, test_fold):
    where = "k-fold CV" if cv else _held_out(test_fold)
    text = (f"\n## Best settings retrained\n\n{where}: accuracy {100 * report['accuracy']:.1f}%"
            + (f" +- {100 * report['accuracy_std']:.1f}" if cv else "")
            + f", macro F1 {report['macro_f1']:.3f} ({BEST_RUN}/report.md)\n")
    own = [f for f in report.get("folds", []) if f.get("split") == f"fold{test_fold}"]
    if cv and own:
        text += (f"\nfold {test_fold}, the one the search never read: accuracy "
                 f"{100 * own[0]['accuracy']:.1f}%, macro F1 {own[0]['macro_f1']:.3f}\n")
    with open(out / "trials.md", "a") as f:
        f.write(text)


def _held_out(test_fold):
    return f"test fold {test_fold}" if test_fold is not None else "the ratio split's test side"


def _plot_objective(path, rows, objective):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    ordered = sorted(rows, key=lambda r: int(r["trial"]))
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [int(r["trial"]) for r in ordered if r[objective] is not None]
    ys = [r[objective] for r in ordered if r[objective] is not None]
    if xs:
        best, running = [], None
        better = max if objective == "val_accuracy" else min
        for y in ys:
            running = y if running is None else better(running, y)
            best.append(running)
        ax.plot(xs, ys, "o", label=f"trial {objective}")
        ax.step(xs, best, where="post", label="best so far")
    failed = [int(r["trial"]) for r in ordered if r["status"] != "completed"]
    if failed:
        for x in failed:
            ax.axvline(x, color="tab:red", alpha=0.3, linestyle=":")
        ax.plot([], [], color="tab:red", alpha=0.5, linestyle=":", label="failed / interrupted")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(objective)
    ax.set_title(f"{objective} over trials")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def _last_line(message):
    lines = [ln.strip() for ln in (message or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else None


def _fmt(value, digits=4):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _round(value):
    """Drops float noise of stepped ranges (0.30000000000000004 -> 0.3)."""
    return float(f"{float(value):.10g}")


def _csv(value):
    return "" if value is None else value


def _flatten(d, prefix=""):
    """{"a": {"b": 1}} -> {"a.b": 1}, for naming what differs."""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
