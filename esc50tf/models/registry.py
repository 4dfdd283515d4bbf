"""The model registry: names -> builders, filled by a decorator.

Family modules (`classic`, `cnn`, `rnn`, `hybrid`, `panns`) register their
builders at import time and import Keras only inside the builders, so listing
the models (for `--help` and error messages) stays instant. An entry also
says which task trains the model (`esc50tf.tasks`: "keras" or "sklearn") and
which ModelConfig settings its builder reads, so the search space of `tune`
follows from the registry. Every module of `esc50tf.models` other than the
support modules (`_SUPPORT_MODULES`) is imported when the registry is first
read, so a new model is one new module with its `register` call (plus its
family's name in FAMILIES when it starts a new family).

Example:
>>> from esc50tf import models
>>> models.get("hybrid").family
'hybrid'
>>> "rnn_units" in models.get("gru").settings
True
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from pathlib import Path
from typing import Callable

from esc50tf.errors import Esc50Error
from esc50tf.models.config import ModelConfig

FAMILIES = ("classic", "cnn", "rnn", "hybrid", "panns", "efficientat")
TASKS = ("keras", "sklearn")
# Modules of esc50tf.models without register calls (some import Keras at the top).
_SUPPORT_MODULES = ("build", "config", "layers", "optimizers", "registry")
_loaded = False
_REGISTRY: dict[str, "ModelSpec"] = {}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    Args:
        name: str. The name users pass to `--model`.
        family: str. One of FAMILIES.
        description: str. One line for `esc50tf models`.
        builder: callable. Keras task: `builder(x, config, num_classes) -> tensor`,
            where `x` is the normalised (and augmented) spectrogram tensor
            `[b, frames, bins]` and `config` a ModelConfig; it returns the
            head's input `[b, D]` (or, with `own_head`, the class
            probabilities), and `models.build.build_model` adds the rest.
            sklearn task: `builder(config, seed=0) -> sklearn estimator`.
        task: str. The `esc50tf.tasks` task that trains it: "keras" or "sklearn".
        pretrained: str or None. The PANNs architecture (`pretrained.architectures.ARCHITECTURES`)
            whose converted checkpoints `--weights` loads; it fixes the front end and
            the sample rate. None for models without one.
        own_head: bool. The builder returns the class probabilities itself
            (layer "predictions"), e.g. the SED model's max over time steps.
        settings: tuple of str. The ModelConfig fields the builder reads
            (`dropout`, `dense_units`, `rnn_units`...): e.g. `weights` and
            `freeze_backbone` for a model on a keras.applications backbone or a
            PANNs trunk (the `--weights` flag is refused for the others).
            Settings every Keras model reads through `build_model`
            (`normalization`) are not listed.
        tuned: tuple of str or None. The subset of `settings` that `tune`
            searches for this model (when its search space has an entry for
            them); None: all of `settings`. A setting left out keeps the
            value of the preset (e.g. a head width that is part of a recipe).
    """

    name: str
    family: str
    description: str
    builder: Callable
    task: str = "keras"
    pretrained: str | None = None
    own_head: bool = False
    settings: tuple = ()
    tuned: tuple | None = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"{self.name}: task must be one of {TASKS}, got {self.task!r}")
        known = {f.name for f in dataclasses.fields(ModelConfig)} - {"name"}
        unknown = sorted(set(self.settings) - known)
        if unknown:
            raise ValueError(f"{self.name}: settings {unknown} are not ModelConfig fields; "
                             f"allowed: {', '.join(sorted(known))}")
        if self.tuned is not None and not set(self.tuned) <= set(self.settings):
            raise ValueError(f"{self.name}: tuned {list(self.tuned)} must be among its settings "
                             f"{list(self.settings)}")

    @property
    def keras(self):
        """Whether it is a Keras model (else scikit-learn)."""
        return self.task == "keras"

    def searches(self, setting):
        """Whether `tune` searches ModelConfig `setting` for this model."""
        return setting in (self.settings if self.tuned is None else self.tuned)


def register(name, family, description, task="keras", pretrained=None, own_head=False,
             settings=(), tuned=None):
    """Decorator registering a builder under `name` (arguments: see ModelSpec)."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")

    def wrap(fn):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(name, family, description, fn, task, pretrained, own_head,
                                    tuple(settings),
                                    None if tuned is None else tuple(tuned))
        return fn

    return wrap


def unregister(name):
    """Removes `name` (for tests that register a model of their own)."""
    _REGISTRY.pop(name, None)


def model_modules(folder=None):
    """Names of the modules in `folder` (esc50tf/models) that register models, in import order.

    The family modules come first, in FAMILIES order, then any other module
    (not a support module, not private) alphabetically.
    """
    folder = Path(folder or Path(__file__).parent)
    found = sorted(m.name for m in pkgutil.iter_modules([str(folder)]))
    others = [m for m in found if m not in FAMILIES and m not in _SUPPORT_MODULES
              and not m.startswith("_")]
    return [f for f in FAMILIES if f in found] + others


def _load():
    global _loaded
    if _loaded:
        return
    for module in model_modules():
        importlib.import_module(f"esc50tf.models.{module}")
    _loaded = True


def names():
    """Every registered model name, in family order."""
    _load()
    order = {f: i for i, f in enumerate(FAMILIES)}
    return [s.name for s in sorted(_REGISTRY.values(), key=lambda s: order[s.family])]


def get(name):
    """The ModelSpec of `name`; Esc50Error listing the valid names otherwise."""
    _load()
    if name not in _REGISTRY:
        raise Esc50Error(f"unknown model {name!r}; valid models: {', '.join(names())}")
    return _REGISTRY[name]


def specs():
    return [get(n) for n in names()]
