"""Every preset in one place: the training presets (`--preset`), the demo's and the study's.

A training preset is a dict of overrides on the configs' defaults, per model:
`{"train": {...}, "model": {...}, "features": {...}, "augment": {...}}`.
Flags and `--config` files override the preset (`esc50tf.run_config.
resolve_config`). Besides `default`, `seed` and `finetune` (below), this
module holds, as plain data, the settings of `esc50tf demo` (`DEMO_*`: its
synthetic data and its recipe) and of `esc50tf study` (`STUDY_AUGMENT`, the
study's audio augmentation; `STUDY_GRID_OPTIMIZERS` x `STUDY_GRID_LRS`, its
optimizer x learning-rate grid).

default: log-Mel (128 bands, 2048-point FFT, hop 512) with per-frequency
normalisation from the training folds; SpecAugment (Park et al., 2019: two
frequency masks of up to 16 bands and two time masks of up to 40 frames), a
random circular time shift of up to 0.5 s, and mixup with alpha 0.2 (Zhang
et al., 2018), the augmentation set PANNs (Kong et al., 2020) and AST (Gong
et al., 2021) trained ESC-50-class audio with; AdamW (Loshchilov & Hutter,
2019) at 1e-3 with weight decay 1e-4, batch 32, and a fixed budget of 100
epochs: 5 epochs of linear warmup, then cosine decay to 1e-5 (Loshchilov &
Hutter, 2017), no early stopping, and the model reported and saved is the
average of the weights at the end of each of the last 25 % of the epochs with
batch-norm statistics recomputed (stochastic weight averaging, Izmailov et
al., 2018; AST and PaSST average weights too). Validation (10 % of the
training side, by recording) draws the curves; it decides something (early
stopping, plateau cuts) only when asked and only with >= 5 clips per class.
The fixed schedule exists because a plateau schedule and early stopping
driven by a validation side of under one clip per class stopped runs at half
their budget with the learning rate cut 25-fold (issue 13). `--crop-seconds S`
trains on random crops and evaluates on 5 evenly spaced ones (`test_crops`).
A model family may carry its own recipe on top of `default`
(`FamilySpec.recipe`, declared where the family registers, e.g. the rnn
family's in `esc50tf.models.rnn`): `preset("default", model)` applies it and
records its name (`train.family_recipe`), and the report says "default (rnn
recipe)". Which families have one, and the experiment that chose it:
README, "Training recipe".

seed: the settings of the study esc50tf grew out of, per model (recorded
here, in `_SEED_COMMON` and `_SEED_PER_MODEL`): Mel 128 in dB
relative to each clip's max, the 9:1 split (grouped by recording here),
AlexNet with SGD 0.01 / momentum 0.9, 80 epochs, 224x224 input and image
augmentation; VGG16 Adam 1e-4, 50 epochs; ResNet50 / DenseNet121 Adam 50
epochs, 224x224 RGB input, frozen backbones when weights are given; the RNNs
with Adam (Bi-GRU with the study's shift + noise audio augmentation, now on
the fly and on training batches only); the hybrid with Adam, 100 epochs;
KNN / SVM / random forest on the flattened 224x224 spectrogram image.

finetune: fine-tuning an AudioSet-pretrained PANNs trunk (chosen
automatically for `default` when a PANNs model gets `--weights`): the
model's own front end and bn0 (no other normalisation), a new head trained
at 1e-3 while the pretrained layers learn 10x slower (1e-4, the rate Kong
et al. fine-tuned with), Adam(W) without weight decay, batch 32, 30 epochs,
and PANNs' augmentation: SpecAugment with two time masks of up to 64
frames and two frequency masks of up to 8 bins, and mixup with alpha 1.0.
Like `default`, a fixed budget: 2 epochs of warmup, cosine decay to 1e-5,
no early stopping, and validation deciding nothing when it is too small; the
last epoch's weights are reported (no SWA: its batch-norm pass would move
the statistics of a frozen trunk). A family with a fine-tuning recipe of its
own (`FamilySpec.finetune`: the EfficientAT `mn` models take their
reference's, `esc50tf.models.efficientat.FINETUNE`) gets that instead.
"""

from __future__ import annotations

from esc50tf.errors import Esc50Error

PRESETS = ("default", "seed", "finetune")

# `esc50tf demo`: small enough for about 16 minutes on 2 shared CPU cores, large enough to mean
# something. Its data: synthetic classes x clips (esc50tf.data.synth).
DEMO_CLASSES = 10
DEMO_CLIPS_PER_CLASS = 40
DEMO_SAMPLE_RATE = 16000
DEMO_SECONDS = 5.0
# Its model and recipe, over the default preset: 64 Mel bands at hop 256 (16 ms), 30 epochs.
DEMO_MODEL = "cnn_small"
DEMO_TRAIN = {"protocol": "test-fold", "test_fold": 1, "epochs": 30, "batch_size": 16,
              "deterministic": True}
DEMO_FEATURES = {"n_fft": 1024, "hop_length": 256, "n_mels": 64}
DEMO_AUGMENT = {"mix": "none"}

# The study's audio augmentation: a circular shift of up to +-0.1 s and noise of factor
# 0.05. The study made one augmented copy of every clip offline (and, a flaw, also of
# the test clips); here the same transforms run on the fly, on training batches only.
STUDY_AUGMENT = {"time_shift_seconds": 0.1, "study_noise_factor": 0.05}
# The study's grid (`esc50tf study --grid`): every Keras model at each optimizer x rate.
STUDY_GRID_OPTIMIZERS = ("adam", "sgd", "adagrad")
STUDY_GRID_LRS = (1e-2, 1e-3, 1e-4)

_DEFAULT = {
    "train": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "epochs": 100,
              "batch_size": 32, "schedule": "cosine", "warmup_epochs": 5.0, "min_lr": 1e-5,
              "early_stopping_patience": 0, "min_val_per_class": 5.0, "final_weights": "swa",
              "swa_fraction": 0.25},
    "features": {"kind": "mel", "n_mels": 128, "n_fft": 2048, "hop_length": 512},
    "model": {"normalization": "frequency"},
    "augment": {"time_shift_seconds": 0.5, "freq_mask_param": 16, "time_mask_param": 40,
                "num_freq_masks": 2, "num_time_masks": 2, "mix": "mixup", "mixup_alpha": 0.2,
                "test_crops": 5},
}

_FINETUNE = {
    "train": {"optimizer": "adamw", "lr": 1e-3, "trunk_lr_scale": 0.1, "weight_decay": 0.0,
              "epochs": 30, "batch_size": 32, "schedule": "cosine", "warmup_epochs": 2.0,
              "min_lr": 1e-5, "early_stopping_patience": 0, "min_val_per_class": 5.0,
              "final_weights": "last"},
    "features": {},  # the architecture's own (esc50tf.pretrained.architectures.feature_settings)
    "model": {"normalization": "none"},
    "augment": {"freq_mask_param": 8, "time_mask_param": 64, "num_freq_masks": 2,
                "num_time_masks": 2, "mix": "mixup", "mixup_alpha": 1.0},
}

_SEED_COMMON = {
    "train": {"protocol": "split", "split_ratio": 0.9, "optimizer": "adam", "lr": 1e-3,
              "weight_decay": 0.0, "epochs": 50, "batch_size": 32},
    "features": {"kind": "mel", "n_mels": 128, "n_fft": 2048, "hop_length": 512, "ref": "max"},
    "model": {"normalization": "instance"},
    "augment": {},
}

_SEED_PER_MODEL = {
    "alexnet": {
        "train": {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "epochs": 80},
        "model": {"image_size": 224, "l2": 1e-3, "dropout": 0.5},
        "augment": {"image_rotation_degrees": 10.0, "image_flip_horizontal": True,
                    "image_noise_stddev": 0.05},
    },
    "vgg16": {"train": {"lr": 1e-4}, "model": {"image_size": 224, "image_channels": 3}},
    "resnet50": {"model": {"image_size": 224, "image_channels": 3}},
    "densenet121": {"model": {"image_size": 224, "image_channels": 3}},
    "bigru": {"augment": STUDY_AUGMENT},
    "hybrid": {"train": {"epochs": 100}},
    "hybrid_seed": {"train": {"epochs": 100}},
    "knn": {"model": {"classic_features": "image", "image_size": 224}},
    "svm": {"model": {"classic_features": "image", "image_size": 224}},
    "random_forest": {"model": {"classic_features": "image", "image_size": 224}},
}


def _finetune(model):
    """`_FINETUNE`, or the model family's own fine-tuning recipe (`FamilySpec.finetune`)."""
    from esc50tf.models import registry

    if model not in registry.names():
        return _FINETUNE
    return registry.family(registry.get(model).family).finetune or _FINETUNE


def preset(name, model=None, use_family_recipe=True):
    """The overrides of preset `name` for `model` (a registered name).

    `default` for a model whose family declares a recipe (`FamilySpec.recipe`,
    e.g. the rnn family's in `esc50tf.models.rnn`) is `_DEFAULT` with that
    recipe on top, and its train section records the recipe's name
    (`TrainConfig.family_recipe`); `use_family_recipe=False` (or no model) gives
    the plain `default` preset.
    """
    if name not in PRESETS:
        raise Esc50Error(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    if name == "default":
        out = {k: dict(v) for k, v in _DEFAULT.items()}
        family = _family_with_recipe(model) if model and use_family_recipe else None
        if family is not None:
            for section, values in family.recipe.items():
                out[section].update(values)
            out["train"]["family_recipe"] = family.name
        return out
    if name == "finetune":
        return {k: dict(v) for k, v in _finetune(model).items()}
    out = {k: dict(v) for k, v in _SEED_COMMON.items()}
    for section, values in _SEED_PER_MODEL.get(model, {}).items():
        out[section].update(values)
    return out


def _family_with_recipe(model):
    from esc50tf.models import registry

    family = registry.family(registry.get(model).family)
    return family if family.recipe else None


def recipe_label(train):
    """The recipe a run used, in words, from its train config dict: "default (rnn recipe)"."""
    name = train.get("preset", "default")
    return f"{name} ({train['family_recipe']} recipe)" if train.get("family_recipe") else name
