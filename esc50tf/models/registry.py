"""The model registry: names -> builders, filled by a decorator.

Family modules (`classic`, `cnn`, `rnn`, `hybrid`, `panns`) register their
builders at import time and import Keras only inside the builders, so listing
the models (for `--help` and error messages) stays instant. An entry also
says which task trains the model (`esc50tf.tasks`: "keras" or "sklearn") and
which ModelConfig settings its builder reads, so the search space of `tune`
follows from the registry. Every module of `esc50tf.models` other than the
support modules (`_SUPPORT_MODULES`) is imported when the registry is first
read, so a new model is one new module with its `register` call; a module that
starts a new family also calls `register_family`, whose `FamilySpec` carries
everything the rest of the package knows about the family: its display colour
and label (`esc50tf compare`), and the hooks that resolve a run's config for
it, check the data it reads, and say which sample rate it needs. Commands ask
the registry (`resolve_settings`, `check_data`, `required_sample_rate`...),
never a family module or a model name.

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

# The built-in family modules, in display order; a family registered by another
# module (`register_family`) comes after them.
FAMILIES = ("classic", "cnn", "rnn", "hybrid", "panns")
TASKS = ("keras", "sklearn")
# Modules of esc50tf.models without register calls (some import Keras at the top).
_SUPPORT_MODULES = ("build", "config", "layers", "optimizers", "registry")
_loaded = False
_REGISTRY: dict[str, "ModelSpec"] = {}
_FAMILIES: dict[str, "FamilySpec"] = {}


def _no_preset(model, preset, base, overrides):
    return preset


def _nothing(*args):
    return None


@dataclasses.dataclass(frozen=True)
class FamilySpec:
    """A model family: how it is shown and the hooks that replace name checks elsewhere.

    Every hook is called for every run, whatever its model, and does nothing
    when the run is not its business (a PANNs trunk can sit under a model of
    another family: `hybrid --backbone cnn14`).

    Args:
        name: str. The family name (`ModelSpec.family`).
        label: str. Its name in legends and tables (`esc50tf compare`).
        colour: str. Its matplotlib colour (`esc50tf compare`).
        preset: callable. `preset(model, preset, base, overrides) -> preset name`:
            the preset a run really uses (e.g. "finetune" for "default" on
            pretrained weights). Config dicts as in `run_config.resolve_config`.
        resolve: callable. `resolve(merged, overrides)`: fixes settings of a
            merged config dict in place (a pretrained trunk's front end), or
            raises Esc50Error for flags the family cannot take.
        check_data: callable. `check_data(model_config, manifest, data)`:
            Esc50Error when the TFRecords at `data` do not suit the model.
        sample_rate: callable. `sample_rate(model, model_settings) -> int or None`:
            the rate a model's TFRecords must hold, None when any rate does.
        converted_weights: callable. `converted_weights(model_config) -> bool`:
            whether `--weights` names converted weights (a cache name or an
            .npz from `esc50tf pretrained`) rather than a Keras weights file.
        trial: callable. `trial(model, base, over)`: drops the values of a tune
            trial (config dicts, in place) that the model cannot take.
        embedder: callable. `embedder(weights) -> (keras.Model [b, samples] -> [b, D],
            architecture name)`, or None when `weights` (a cache name or file) are not
            of this family (`esc50tf embed`, `--classic-features embeddings`).
        recipe: dict or None. The family's default training recipe: overrides of the
            `default` preset, in its sections (`{"train": {...}, "augment": {...}}`),
            that `--preset default` applies to the family's models
            (`esc50tf.presets.preset`); None: the `default` preset as it is.
        finetune: dict or None. The family's own `--preset finetune` (whole
            sections, replacing `esc50tf.presets`' PANNs recipe), e.g. a
            reference's fine-tuning recipe; None: the PANNs one.
    """

    name: str
    label: str
    colour: str
    preset: Callable = _no_preset
    resolve: Callable = _nothing
    check_data: Callable = _nothing
    sample_rate: Callable = _nothing
    converted_weights: Callable = _nothing
    trial: Callable = _nothing
    embedder: Callable = _nothing
    recipe: dict | None = None
    finetune: dict | None = None


def register_family(name, label, colour, **hooks):
    """Registers a model family (arguments: see FamilySpec); call it before its `register`s."""
    if name in _FAMILIES:
        raise ValueError(f"family {name!r} is registered twice")
    _FAMILIES[name] = FamilySpec(name, label, colour, **hooks)
    return _FAMILIES[name]


def unregister_family(name):
    """Removes family `name` and its models (for tests that register a family of their own)."""
    for model in [m for m, s in _REGISTRY.items() if s.family == name]:
        _REGISTRY.pop(model)
    _FAMILIES.pop(name, None)


def families():
    """Every registered FamilySpec, built-in families first (FAMILIES order)."""
    _load()
    return sorted(_FAMILIES.values(), key=_family_order)


def _family_order(spec):
    # Built-in families in FAMILIES order, then the others in registration order.
    names = list(_FAMILIES)
    if spec.name in FAMILIES:
        return FAMILIES.index(spec.name)
    return len(FAMILIES) + names.index(spec.name)


def family(name):
    """The FamilySpec of family `name`; Esc50Error listing the valid ones otherwise."""
    _load()
    if name not in _FAMILIES:
        raise Esc50Error(f"unknown model family {name!r}; valid families: "
                         f"{', '.join(_FAMILIES)}")
    return _FAMILIES[name]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    Args:
        name: str. The name users pass to `--model`.
        family: str. A registered family (`register_family`).
        description: str. One line for `esc50tf models`.
        builder: callable. Keras task: `builder(x, config, num_classes) -> tensor`,
            where `x` is the normalised (and augmented) spectrogram tensor
            `[b, frames, bins]` and `config` a ModelConfig; it returns the
            head's input `[b, D]` (or, with `own_head`, the class
            probabilities), and `models.build.build_model` adds the rest.
            sklearn task: `builder(config, seed=0) -> sklearn estimator`.
        task: str. The `esc50tf.tasks` task that trains it: "keras" or "sklearn".
        pretrained: str or None. The pretrained architecture (`pretrained.architectures.names()`:
            PANNs, EfficientAT) whose converted checkpoints `--weights` loads; it fixes
            the front end and the sample rate. None for models without one.
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
    if family not in _FAMILIES and family in FAMILIES:
        importlib.import_module(f"esc50tf.models.{family}")  # registers the built-in family
    if family not in _FAMILIES:
        raise ValueError(f"family must be a registered one ({', '.join(_FAMILIES)}), "
                         f"got {family!r}")

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
    order = {f.name: i for i, f in enumerate(families())}
    return [s.name for s in sorted(_REGISTRY.values(), key=lambda s: order[s.family])]


def get(name):
    """The ModelSpec of `name`; Esc50Error listing the valid names otherwise."""
    _load()
    if name not in _REGISTRY:
        raise Esc50Error(f"unknown model {name!r}; valid models: {', '.join(names())}")
    return _REGISTRY[name]


def specs():
    return [get(n) for n in names()]


def trunk_module(architecture):
    """The module of `esc50tf.models` that builds pretrained `architecture` (its family's).

    It has `build_reference`, `load_pretrained` and `freeze_trunk`.
    """
    from esc50tf.pretrained import architectures

    family(architectures.family(architecture))  # registered (loads the family modules)
    return importlib.import_module(f"esc50tf.models.{architectures.family(architecture)}")


# --- what commands ask about a run, answered by the families' hooks -------------------

def resolve_preset(model, preset, base=None, overrides=None):
    """The preset a run of `model` really uses (FamilySpec.preset of every family)."""
    for f in families():
        preset = f.preset(model, preset, base, overrides)
    return preset


def resolve_settings(merged, overrides=None):
    """Lets every family fix or refuse settings of a merged config dict (FamilySpec.resolve)."""
    for f in families():
        f.resolve(merged, overrides)


def check_data(model_config, manifest, data):
    """Esc50Error when the TFRecords at `data` (manifest given) do not suit the model."""
    for f in families():
        f.check_data(model_config, manifest, data)


def required_sample_rate(model, model_settings=None):
    """The sample rate a run of `model` needs its TFRecords at, or None when any rate does."""
    for f in families():
        rate = f.sample_rate(model, model_settings or {})
        if rate is not None:
            return rate
    return None


def reads_converted_weights(model_config):
    """Whether the model's `--weights` names converted weights (FamilySpec.converted_weights)."""
    return any(f.converted_weights(model_config) for f in families())


def fit_trial(model, base, over):
    """Drops tune trial values the model cannot take (FamilySpec.trial), in place."""
    for f in families():
        f.trial(model, base, over)


def build_embedder(weights):
    """`(embedder, architecture)` of pretrained `weights` from the family they belong to."""
    for f in families():
        found = f.embedder(weights)
        if found is not None:
            return found
    raise Esc50Error(f"{weights}: no model family makes embeddings of these weights "
                     f"(families: {', '.join(f.name for f in families())})")
