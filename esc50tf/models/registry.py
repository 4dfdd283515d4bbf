"""The model registry: names -> builders, filled by a decorator.

Family modules (`classic`, `cnn`, `rnn`, `hybrid`) register their builders at
import time and import Keras only inside the builders, so listing the models
(for `--help` and error messages) stays instant.

Example:
>>> from esc50tf import models
>>> models.get("hybrid").family
'hybrid'
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable

from esc50tf.errors import Esc50Error

FAMILIES = ("classic", "cnn", "rnn", "hybrid", "panns")
_FAMILY_MODULES = tuple(f"esc50tf.models.{f}" for f in FAMILIES)
_REGISTRY: dict[str, "ModelSpec"] = {}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    Args:
        name: str. The name users pass to `--model`.
        family: str. One of FAMILIES.
        description: str. One line for `esc50tf models`.
        builder: callable. Keras families: `builder(config, num_classes,
            num_samples) -> keras.Model`, where `config` is a ModelConfig;
            classic: `builder(config) -> sklearn estimator`.
        keras: bool. Whether it is a Keras model (else scikit-learn).
        pretrained: str or None. The PANNs architecture (`pretrained.architectures.ARCHITECTURES`)
            whose converted checkpoints `--weights` loads; it fixes the front end and
            the sample rate. None for models without one.
        own_head: bool. The builder returns the class probabilities itself
            (layer "predictions"), e.g. the SED model's max over time steps.
        backbone: bool. Whether it runs a keras.applications backbone (or the
            hybrid's trunk), which reads `--weights` and `--freeze-backbone`.
    """

    name: str
    family: str
    description: str
    builder: Callable
    keras: bool = True
    pretrained: str | None = None
    own_head: bool = False
    backbone: bool = False


def register(name, family, description, keras=True, pretrained=None, own_head=False,
             backbone=False):
    """Decorator registering a builder under `name`."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")

    def wrap(fn):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(name, family, description, fn, keras, pretrained, own_head,
                                    backbone)
        return fn

    return wrap


def _load():
    for module in _FAMILY_MODULES:
        importlib.import_module(module)


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
