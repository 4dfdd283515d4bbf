"""A run's configuration: TrainConfig, RunConfig, and how flags, presets and files resolve into one.

A run is described by one `RunConfig` with four sections, each a frozen
config on the `esc50tf.config.Config` base:

- `train`: `TrainConfig` (protocol, optimizer, schedule, precision, ...);
- `model`: `esc50tf.models.config.ModelConfig`;
- `features`: `esc50tf.frontend.FeatureConfig`;
- `augment`: `esc50tf.augment.AugmentConfig`.

Keras-free: configs are resolved, read and compared without TensorFlow.

`resolve_config` layers the defaults, a preset (`esc50tf.presets`), a saved
`config.json` and the flags the user set, in that order. Every run writes the
result as `RUN/config.json`; `comparable` and `config_diff` decide whether a
folder holds the same run (so it resumes) and say what differs when not.

Example:

>>> cfg = resolve_config("gru", "seed", overrides={"train": {"epochs": 3}})
>>> cfg.train.optimizer, cfg.train.epochs, cfg.features.n_mels
('adam', 3, 128)
>>> RunConfig.from_dict(cfg.to_dict()) == cfg
True
"""

from __future__ import annotations

import dataclasses
import math
import json
import os

from esc50tf import recipe
from esc50tf.augment import AugmentConfig
from esc50tf.config import Config, choice, setting
from esc50tf.distribute import PRECISIONS, STRATEGIES
from esc50tf.errors import Esc50Error
from esc50tf.frontend import FeatureConfig
from esc50tf.models.config import ModelConfig

__all__ = ["OPTIMIZERS", "PROTOCOLS", "RunConfig", "TrainConfig", "WHERE_KEYS",
           "check_weights_flag", "comparable", "config_diff", "resolve_config", "used_config"]

PROTOCOLS = ("cv", "test-fold", "split")
OPTIMIZERS = ("adam", "adamw", "sgd", "adagrad")
# The optimizers that can give a pretrained trunk its own, smaller learning rate.
TRUNK_LR_OPTIMIZERS = ("adam", "adamw")
FEATURES_ON = ("device", "host")
# Where a run executes, not what it computes: changing these does not block a resume.
WHERE_KEYS = ("out", "tpu", "data_service", "data_service_timeout")


@dataclasses.dataclass(frozen=True)
class TrainConfig(Config):
    """How a run trains. Model, feature and augmentation settings sit in their own configs.

    Args:
        data: str. TFRecord folder.
        out: str. Run folder.
        preset: str. "default", "seed" or "finetune" (recorded; already applied).
        family_recipe: str. The model family whose recipe `default` applied on top of the
            preset (`FamilySpec.recipe`; recorded, already applied); "" for none.
        protocol: str. "cv", "test-fold" or "split".
        test_fold: int or None. For protocol "test-fold".
        split_ratio: float or None. For protocol "split", e.g. 0.9.
        val_fraction: float. Validation share of the training side (grouped by src_file).
        epochs, batch_size: ints. batch_size is per replica.
        optimizer: str. adam, adamw, sgd (with momentum) or adagrad.
        lr, weight_decay, momentum: floats.
        trunk_lr_scale: float in (0, 1]. Learning-rate factor of a pretrained PANNs
            trunk (adam/adamw only); the new head learns at `lr`. 1.0: one rate.
        lr_factor, lr_patience, min_lr: ReduceLROnPlateau (the study: 0.2, 5, 1e-5).
        early_stopping_patience: int. EarlyStopping on validation loss (the study: 10);
            0 = off. The best-val-accuracy checkpoint is kept too.
        schedule: str. "plateau" (ReduceLROnPlateau, the study's), "cosine" (decay to
            min_lr over the epoch budget), "constant" or "rampdown" (EfficientAT's
            exponential warm-up and linear ramp down). See esc50tf.recipe.
        warmup_epochs: float. Linear warmup from 0 to lr (cosine and constant), at most
            half the epoch budget.
        min_val_per_class: float. Validation clips per class (mean) below which early
            stopping, plateau cuts and best-epoch restore are off; 0 = always on.
        final_weights: str. The evaluated and saved model: "best" (by validation loss,
            restored by early stopping), "last", "ema" or "swa".
        ema_momentum: float. For final_weights "ema" (Keras optimizer `use_ema`).
        swa_fraction: float. For final_weights "swa": share of the epochs at the end
            whose weights are averaged.
        clipnorm: float. Clip each gradient tensor to this L2 norm before the update
            (the Keras optimizers' `clipnorm`); 0 = off.
        label_smoothing: float. Cross-entropy label smoothing (0 = off).
        balance: str. "none" or "class_weights" (n / (k * count) per class).
        mixed_precision: str. auto, off, bf16 or fp16.
        strategy: str. See esc50tf.distribute.STRATEGIES.
        devices: str or None. Devices for mirrored / one_device, e.g. "gpu:0,gpu:1".
        tpu: str or None. TPU name, or "local" on a TPU VM (strategy tpu or auto).
        data_service: str or None. tf.data service dispatcher "grpc://host:port" that
            runs the training input pipeline.
        data_service_timeout: float. Seconds without a training batch from the
            tf.data service (a lost worker or dispatcher) after which training
            stops with a named error; the run resumes from its last finished
            epoch. Defaults to 300.
        scale_lr: bool. Multiply lr by the number of replicas (linear scaling rule).
        jit_compile: bool. XLA-compile the train step.
        features_on: str. "device" (in the model) or "host" (in tf.data).
        seed: int.
        deterministic: bool. Enable TensorFlow op determinism: bit-identical reruns,
            somewhat slower.
        export: bool. Also write a SavedModel per split.
    """

    label = "train"

    data: str = ""
    out: str = ""
    preset: str = "default"
    family_recipe: str = ""
    protocol: str = "cv"
    test_fold: int | None = None
    split_ratio: float | None = None
    val_fraction: float = setting(
        0.1, flag="--val-fraction", type=float,
        help="validation share carved from the training side by src_file (default 0.1; 0: "
        "train on all of it)")
    epochs: int = setting(100, flag="--epochs", type="positive_int",
                          help="maximum epochs (early stopping may end sooner)")
    batch_size: int = setting(32, flag="--batch-size", type="positive_int",
                              help="batch size per replica", search=choice([16, 32, 64]),
                              check=lambda v: v >= 1, allowed="an integer >= 1")
    optimizer: str = setting("adamw", flag="--optimizer", choices=OPTIMIZERS, help="optimizer",
                             search=choice(OPTIMIZERS))
    lr: float = setting(1e-3, flag="--lr", type="positive_float", help="learning rate",
                        search={"type": "float", "min": 1e-4, "max": 1e-2, "sampling": "log"},
                        check=lambda v: v > 0, allowed="a number > 0")
    weight_decay: float = setting(
        1e-4, flag="--weight-decay", type=float, help="decoupled weight decay (adamw, sgd)",
        search={"type": "float", "min": 1e-6, "max": 1e-2, "sampling": "log"},
        check=lambda v: v >= 0, allowed="a number >= 0", when=("optimizer", ("adamw", "sgd")))
    momentum: float = setting(0.9, flag="--momentum", type=float,
                              help="SGD momentum (default 0.9)", search=choice([0.8, 0.9, 0.95]),
                              check=lambda v: 0 <= v < 1, allowed="a number in [0, 1)",
                              when=("optimizer", ("sgd",)))
    # With --weights: how much slower the pretrained trunk learns than the new head.
    trunk_lr_scale: float = setting(
        1.0, flag="--trunk-lr-scale", type="positive_float",
        help="learning-rate factor of a pretrained PANNs trunk, in (0, 1] (adam/adamw; the "
        "finetune preset: 0.1)", search=choice([0.03, 0.1, 0.3, 1.0]),
        check=lambda v: 0 < v <= 1, allowed="a number in (0, 1]",
        when=("optimizer", TRUNK_LR_OPTIMIZERS), note="only with --weights; PANNs trunks")
    lr_factor: float = 0.2
    lr_patience: int = setting(5, flag="--lr-patience", type="positive_int",
                               help="ReduceLROnPlateau patience (default 5, factor 0.2)")
    min_lr: float = setting(1e-5, flag="--min-lr", type=float,
                            help="floor of the cosine, plateau and rampdown schedules "
                            "(default 1e-5)")
    early_stopping_patience: int = setting(
        10, flag="--early-stopping-patience", type=int,
        help="EarlyStopping patience on validation loss; 0: off (default preset: 0; seed: 10)")
    # Defaults reproduce runs from before these fields; the default preset sets its own.
    schedule: str = setting(
        "plateau", flag="--schedule", choices=tuple(recipe.SCHEDULES),
        help="learning rate: plateau (ReduceLROnPlateau on validation), cosine decay over the "
        "epoch budget, constant, or rampdown (EfficientAT's: exponential warm-up, linear ramp "
        "down to min_lr) (default preset: cosine; seed: plateau)")
    warmup_epochs: float = setting(
        0.0, flag="--warmup-epochs", type=float,
        help="warmup epochs before cosine or constant (linear) or rampdown (exponential)")
    min_val_per_class: float = setting(
        0.0, flag="--min-val-per-class", type=float,
        help="validation clips per class below which early stopping and plateau cuts are off "
        "(default preset: 5; seed: 0)")
    final_weights: str = setting(
        "best", flag="--final-weights", choices=tuple(recipe.FINAL_WEIGHTS),
        help="the evaluated and saved model: best by validation, last epoch, ema or swa "
        "average (default preset: swa; seed: best)")
    ema_momentum: float = setting(0.99, flag="--ema-momentum", type=float,
                                  help="momentum of --final-weights ema (default 0.99)")
    swa_fraction: float = setting(
        0.25, flag="--swa-fraction", type=float,
        help="share of the last epochs averaged by --final-weights swa (default 0.25)")
    clipnorm: float = setting(
        0.0, flag="--clipnorm", type=float,
        help="clip each gradient to this L2 norm (Keras optimizer clipnorm); 0: off",
        check=lambda v: v >= 0, allowed="a number >= 0 (0: off)")
    label_smoothing: float = setting(0.0, flag="--label-smoothing", type=float,
                                     help="cross-entropy label smoothing (default 0)")
    balance: str = setting(
        "none", flag="--balance", choices=tuple(recipe.BALANCE),
        help="class_weights: weight classes by n / (k * count) for unbalanced data "
        "(default none)")
    mixed_precision: str = setting(
        "auto", flag="--mixed-precision", choices=PRECISIONS,
        help="auto: bf16 on TPUs and GPUs that support it, off on CPU")
    strategy: str = setting("auto", flag="--strategy", choices=STRATEGIES,
                            help="tf.distribute strategy (default auto)")
    devices: str | None = setting(
        None, flag="--devices", metavar="DEVICES",
        help="devices for mirrored / one_device, e.g. gpu:0,gpu:1 (default: all local GPUs)")
    tpu: str | None = setting(
        None, flag="--tpu", metavar="NAME|local",
        help="TPU to use with --strategy tpu or auto: its name, or local on a TPU VM")
    data_service: str | None = setting(
        None, flag="--data-service", metavar="grpc://HOST:PORT",
        help="run the training input pipeline on this tf.data service (see esc50tf "
        "data-service)")
    data_service_timeout: float = setting(
        300.0, flag="--data-service-timeout", type="positive_float", metavar="SECONDS",
        help="with --data-service: stop with an error after this many seconds without a batch "
        "from the service (default 300)")
    scale_lr: bool = setting(
        False, flag="--scale-lr", action="store_const",
        help="multiply the learning rate by the number of replicas (linear scaling rule)")
    jit_compile: bool = False
    features_on: str = setting(
        "device", flag="--features-on", choices=FEATURES_ON,
        help="compute features in the model (device) or in tf.data (host)")
    seed: int = setting(
        0, flag="--seed", type=int,
        help="random seed (splits, shuffling, augmentation, initialisation)")
    deterministic: bool = False
    export: bool = True

    def __post_init__(self):
        checks = [
            (self.protocol in PROTOCOLS, "protocol", self.protocol, ", ".join(PROTOCOLS)),
            (self.optimizer in OPTIMIZERS, "optimizer", self.optimizer, ", ".join(OPTIMIZERS)),
            (self.features_on in FEATURES_ON, "features_on", self.features_on, ", ".join(FEATURES_ON)),
            (isinstance(self.epochs, int) and self.epochs >= 1, "epochs", self.epochs, "an integer >= 1"),
            (isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size",
             self.batch_size, "an integer >= 1"),
            (math.isfinite(self.lr) and self.lr > 0, "lr", self.lr, "a finite number > 0"),
            (math.isfinite(self.weight_decay) and self.weight_decay >= 0, "weight_decay",
             self.weight_decay, "a finite number >= 0"),
            (isinstance(self.seed, int) and 0 <= self.seed < 2**31, "seed", self.seed,
             "an integer in 0..2147483647"),
            (0 <= self.val_fraction <= 0.5, "val_fraction", self.val_fraction, "[0, 0.5]"),
            (0 < self.trunk_lr_scale <= 1, "trunk_lr_scale", self.trunk_lr_scale, "(0, 1]"),
            (self.trunk_lr_scale == 1 or self.optimizer in TRUNK_LR_OPTIMIZERS, "optimizer",
             self.optimizer, " or ".join(TRUNK_LR_OPTIMIZERS) + " with trunk_lr_scale < 1"),
            (isinstance(self.early_stopping_patience, int) and self.early_stopping_patience >= 0,
             "early_stopping_patience", self.early_stopping_patience, "an integer >= 0 (0: off)"),
            (self.schedule in recipe.SCHEDULES, "schedule", self.schedule,
             ", ".join(recipe.SCHEDULES)),
            (self.warmup_epochs >= 0, "warmup_epochs", self.warmup_epochs, "a number >= 0"),
            (self.schedule != "plateau" or self.warmup_epochs == 0, "warmup_epochs",
             self.warmup_epochs, "0 with --schedule plateau (warm up with cosine or constant)"),
            (self.min_val_per_class >= 0, "min_val_per_class", self.min_val_per_class,
             "a number >= 0"),
            (self.final_weights in recipe.FINAL_WEIGHTS, "final_weights", self.final_weights,
             ", ".join(recipe.FINAL_WEIGHTS)),
            (0 < self.ema_momentum < 1, "ema_momentum", self.ema_momentum, "(0, 1)"),
            (0 < self.swa_fraction <= 1, "swa_fraction", self.swa_fraction, "(0, 1]"),
            (math.isfinite(self.clipnorm) and self.clipnorm >= 0, "clipnorm", self.clipnorm,
             "a finite number >= 0 (0: off)"),
            (0 <= self.label_smoothing < 1, "label_smoothing", self.label_smoothing, "[0, 1)"),
            (self.balance in recipe.BALANCE, "balance", self.balance, ", ".join(recipe.BALANCE)),
            (math.isfinite(self.data_service_timeout) and self.data_service_timeout > 0,
             "data_service_timeout", self.data_service_timeout, "a number of seconds > 0"),
        ]
        # "schedule 'linear' is not allowed; ...": the flag's name and value, as the CLI says them.
        for ok, name, value, allowed in checks:
            if not ok:
                raise Esc50Error(f"{name} {value!r} is not allowed; allowed: {allowed}")
        if self.protocol == "test-fold" and self.test_fold is None:
            raise Esc50Error("protocol test-fold needs --test-fold K")
        if self.protocol == "split" and self.split_ratio is None:
            raise Esc50Error("protocol split needs --split RATIO, e.g. 0.9")


@dataclasses.dataclass(frozen=True)
class RunConfig(Config):
    """Everything a run needs; saved as RUN/config.json.

    Args:
        train: TrainConfig. How the run trains and where it writes.
        model: ModelConfig. The model and its hyperparameters.
        features: FeatureConfig. The front end.
        augment: AugmentConfig. Augmentation of the training batches.
    """

    label = "config"
    nested = {"train": TrainConfig, "model": ModelConfig, "features": FeatureConfig,
              "augment": AugmentConfig}

    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    features: FeatureConfig = dataclasses.field(default_factory=FeatureConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)

    def __post_init__(self):
        if isinstance(self.augment, AugmentConfig) and isinstance(self.features, FeatureConfig):
            check_frontend_augmentation(self.augment, self.features)


def check_frontend_augmentation(augment, features):
    """Esc50Error unless the front end takes the band-edge jitter asked for, with edges it can hold."""
    from esc50tf.frontend.config import check_edge_jitter

    if not augment.edge_jitter_enabled:
        return
    if not features.spec.edge_jitter:
        raise Esc50Error(f"--fmin-jitter/--fmax-jitter ({augment.fmin_jitter_hz}, "
                         f"{augment.fmax_jitter_hz}) move the band edges of the kaldi_mel front "
                         f"end (the EfficientAT models'); this run's front end is "
                         f"{features.kind!r}. Leave them at 0.")
    check_edge_jitter(features.sample_rate, features.fmin, features.fmax,
                      augment.fmin_jitter_hz, augment.fmax_jitter_hz, Esc50Error, "augment")


def resolve_config(model, preset="default", base=None, overrides=None, use_family_recipe=True):
    """Builds a RunConfig: defaults <- preset <- base (a config dict) <- overrides.

    Args:
        model: str. Registered model name.
        preset: str. "default", "seed" or "finetune" ("default" becomes "finetune"
            for a PANNs model given pretrained weights).
        base: dict or None. A saved config.json (sections train/model/...).
        overrides: dict or None. Same sections; only keys the user set.
        use_family_recipe: bool. Whether "default" carries the model family's recipe
            (`esc50tf.presets.preset`); False: the plain preset (experiments).
    """
    from esc50tf import presets
    from esc50tf.models import registry

    registry.get(model)  # unknown names fail here, listing the valid ones
    preset = registry.resolve_preset(model, preset, base, overrides)
    merged = {"train": {}, "model": {}, "features": {}, "augment": {}}
    for layer in (presets.preset(preset, model, use_family_recipe), base or {}, overrides or {}):
        for section, values in layer.items():
            if section not in merged:
                raise Esc50Error(f"unknown config section {section!r}")
            merged[section].update(values)
    merged["model"]["name"] = model
    merged["train"]["preset"] = preset
    registry.resolve_settings(merged, overrides)  # each family's rules (FamilySpec.resolve)
    return RunConfig.from_dict(merged)


def check_weights_flag(cfg):
    """Refuses `--weights` for a model with no backbone or pretrained trunk to load them into.

    Keras models that read `weights` take it; a scikit-learn model takes it only with
    `classic_features="embeddings"` (the PANNs model whose embeddings it learns from).
    """
    from esc50tf.models import registry

    spec = registry.get(cfg.model.name)
    if "weights" in spec.settings and (spec.keras or cfg.model.classic_features == "embeddings"):
        return
    takers = [s.name for s in registry.specs() if s.keras and "weights" in s.settings]
    raise Esc50Error(
        f"--weights loads a backbone or a pretrained trunk, which {cfg.model.name} does not "
        f"have; models that take it: {', '.join(takers)}, and the classic models with "
        "--classic-features embeddings")


def used_config(cfg, log=None):
    """The configuration as a run uses and records it (train, and tune's best settings).

    The data folder becomes an absolute path (so `evaluate` and `export` find
    it from any folder), and a warm-up longer than half the epochs is cut to
    half, with a warning through `log`, so config.json and the report state
    what ran. Applying it twice changes nothing more.
    """
    t = cfg.train
    data = t.data if not t.data or "://" in t.data else os.path.abspath(t.data)
    warmup = recipe.warmup_epochs(t)
    if warmup != t.warmup_epochs and log is not None:
        log(f"warning: --warmup-epochs {t.warmup_epochs:g} is more than half of --epochs "
            f"{t.epochs}; warming up for {warmup:g} epochs (recorded in config.json)")
    return dataclasses.replace(cfg, train=dataclasses.replace(t, data=data, warmup_epochs=warmup))


def comparable(d):
    """A config dict reduced to what the run computes, for "is this the same run?".

    Train settings a `config.json` from before they existed lacks take their
    defaults, and `WHERE_KEYS` (where the run executes) are dropped.
    """
    d = json.loads(json.dumps(d))
    train_section = d.setdefault("train", {})
    for f in dataclasses.fields(TrainConfig):
        train_section.setdefault(f.name, f.default)
    for key in WHERE_KEYS:
        train_section.pop(key, None)
    data = train_section.get("data")
    if data and "://" not in data:  # older runs recorded the path as typed
        train_section["data"] = os.path.abspath(data)
    return d


def config_diff(old, new):
    """The first settings that differ between two config dicts, e.g. "train.lr 0.001 -> 0.01"."""
    old, new = comparable(old), comparable(new)
    out = []
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section, {}), new.get(section, {})
        for k in sorted(set(a) | set(b)):
            if k not in WHERE_KEYS and a.get(k) != b.get(k):
                out.append(f"{section}.{k} {a.get(k)!r} -> {b.get(k)!r}")
    return "; ".join(out[:4]) + ("; ..." if len(out) > 4 else "")
