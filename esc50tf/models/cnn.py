"""CNNs on the spectrogram image: the study's AlexNet and keras.applications backbones.

Heads follow the study's own models: AlexNet 4096-4096 with L2 1e-3 and
dropout 0.5; VGG16 GAP + 4096 x2 + dropout 0.5, L2 1e-3; ResNet50 and
DenseNet121 GAP + Dense 128 + dropout 0.5. Backbones start from `weights=None`
unless `--weights PATH` names a local weights file (e.g. ImageNet "notop"
weights), which needs 3 input channels.
"""

from __future__ import annotations

from esc50tf.errors import Esc50Error
from esc50tf.models.build import image_input
from esc50tf.models.registry import register, register_family

# The keras.applications backbones (their ImageNet weights are read with --weights).
APPLICATIONS = ("vgg16", "resnet50", "densenet121")


def _resolve(merged, overrides=None):
    """The study froze ImageNet backbones: the seed preset does too, given weights.

    A random backbone is never frozen by a preset.
    """
    model = merged["model"]
    if (merged["train"].get("preset") == "seed" and model.get("weights")
            and model["name"] in APPLICATIONS):
        model.setdefault("freeze_backbone", True)


register_family("cnn", "cnn", "tab:blue", resolve=_resolve)


def _regularizer(l2):
    import keras

    return keras.regularizers.L2(l2) if l2 else None


def _dense_head(x, widths, dropout, l2, prefix="head"):
    import keras

    for i, width in enumerate(widths):
        x = keras.layers.Dense(width, activation="relu", kernel_regularizer=_regularizer(l2),
                               name=f"{prefix}_dense{i + 1}")(x)
        x = keras.layers.Dropout(dropout, name=f"{prefix}_dropout{i + 1}")(x)
    return x


@register("alexnet", "cnn",
          "the study's AlexNet from scratch: 5 conv + dense 4096-4096, L2 1e-3, dropout 0.5, 224x224 input",
          settings=("dense_units", "dropout", "l2", "image_size", "image_channels"))
def build_alexnet(x, config, num_classes):
    import keras

    x = image_input(x, config, default_size=224)
    reg = _regularizer(1e-3 if config.l2 is None else config.l2)
    conv = dict(activation="relu", padding="same", kernel_regularizer=reg)
    x = keras.layers.Conv2D(96, 11, strides=4, name="conv1", **conv)(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    x = keras.layers.Conv2D(256, 5, name="conv2", **conv)(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool2")(x)
    x = keras.layers.Conv2D(384, 3, name="conv3", **conv)(x)
    x = keras.layers.Conv2D(384, 3, name="conv4", **conv)(x)
    x = keras.layers.Conv2D(256, 3, name="conv5", **conv)(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool5")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    width = config.dense_units or 4096
    return _dense_head(x, [width, width], 0.5 if config.dropout is None else config.dropout,
                       1e-3 if config.l2 is None else config.l2)


def backbone(app_name, x, config):
    """Runs a keras.applications backbone (no top) on the spectrogram image."""
    import keras

    if config.weights and config.channels() != 3:
        raise Esc50Error(
            f"--weights needs 3 input channels for {app_name}; got image_channels={config.channels()}"
        )
    app = getattr(keras.applications, app_name)
    try:
        net = app(include_top=False, weights=config.weights, input_shape=tuple(x.shape[1:]))
    except (ValueError, OSError) as err:
        raise Esc50Error(f"cannot build {app_name} with weights {config.weights!r}: {err}") from None
    net.trainable = not config.freeze_backbone
    # A frozen backbone also keeps its BatchNorm statistics fixed.
    return net(x, training=False) if config.freeze_backbone else net(x)


# What `_application` reads (`backbone`: weights, freeze_backbone; `image_input`: the image).
_APPLICATION_SETTINGS = ("dense_units", "dropout", "l2", "weights", "freeze_backbone",
                         "image_size", "image_channels")


def _application(app_name, x, config, head_widths, default_dropout, default_l2):
    import keras

    x = image_input(x, config)
    x = backbone(app_name, x, config)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    dropout = default_dropout if config.dropout is None else config.dropout
    l2 = default_l2 if config.l2 is None else config.l2
    return _dense_head(x, head_widths, dropout, l2)


@register("vgg16", "cnn", "keras.applications VGG16 + GAP + dense 4096 x2, dropout 0.5, L2 1e-3 (study head)",
          settings=_APPLICATION_SETTINGS)
def build_vgg16(x, config, num_classes):
    width = config.dense_units or 4096
    return _application("VGG16", x, config, [width, width], 0.5, 1e-3)


@register("resnet50", "cnn", "keras.applications ResNet50 + GAP + dense 128, dropout 0.5 (study head)",
          settings=_APPLICATION_SETTINGS)
def build_resnet50(x, config, num_classes):
    return _application("ResNet50", x, config, [config.dense_units or 128], 0.5, 0.0)


@register("densenet121", "cnn", "keras.applications DenseNet121 + GAP + dense 128, dropout 0.5 (study head)",
          settings=_APPLICATION_SETTINGS)
def build_densenet121(x, config, num_classes):
    return _application("DenseNet121", x, config, [config.dense_units or 128], 0.5, 0.0)


@register("cnn_small", "cnn",
          "not from the study: compact 4-block CNN (32-256 filters, BN, GAP) for quick runs and the demo",
          settings=("dropout", "image_size", "image_channels"))
def build_cnn_small(x, config, num_classes):
    import keras

    x = image_input(x, config)  # [b, frames, bins, C]
    for i, filters in enumerate((32, 64, 128, 256), 1):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        # Momentum 0.9: moving statistics settle within the few hundred steps of small data.
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = keras.layers.Activation("relu", name=f"relu{i}")(x)
        if i < 4:
            x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.layers.Dropout(0.3 if config.dropout is None else config.dropout,
                                name="head_dropout1")(x)
