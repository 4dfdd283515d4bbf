"""Assembling a complete Keras model: waveform in, class probabilities out.

    waveform [b, samples]
    -> waveform augmentation (training only; identity at inference)
    -> front end (STFT / log-Mel / MFCC on tf.signal, float32 inside;
       kaldi_mel's band-edge jitter in training calls)                   [b, frames, bins]
    -> normalisation (per-frequency stats from the training folds, instance, batch)
    -> spectrogram augmentation (SpecAugment, training only)
    -> the family's body (registry builder)                              [b, D]
    -> Dense(num_classes, softmax) in float32, also under mixed precision

Because the front end lives in the model, the saved `.keras` file and the
exported SavedModel take raw waveforms at the dataset's sample rate.
"""

from __future__ import annotations

import numpy as np

from esc50tf.errors import Esc50Error
from esc50tf.models import registry


def build_model(model_config, feature_config, num_classes, num_samples, augment_config=None,
                seed=0):
    """Builds the named Keras model around the front end.

    Args:
        model_config: ModelConfig. `model_config.name` picks the registry entry.
        feature_config: esc50tf.frontend.FeatureConfig.
        num_classes: int.
        num_samples: int. Waveform length the model takes.
        augment_config: esc50tf.augment.AugmentConfig or None (no augmentation).
        seed: int. Seeds augmentation layers and weight initialisation.

    Returns:
        A `keras.Model` named after the model, with layers named "frontend",
        "normalization" (unless none) and "predictions".
    """
    import keras

    from esc50tf import augment as aug
    from esc50tf import frontend as feat

    spec = registry.get(model_config.name)
    if not spec.keras:
        raise ValueError(f"{spec.name} is a scikit-learn model; use models.classic")
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((num_samples,), name="waveform", dtype="float32")
    x = inputs
    if augment_config is not None:
        wave_aug = aug.build_waveform_augmenter(augment_config, feature_config.sample_rate, seed)
        if wave_aug is not None:
            x = wave_aug(x)
    jitter = {} if augment_config is None else aug.frontend_augmentation(augment_config, seed)
    x = feat.build_frontend(feature_config, name="frontend", **jitter)(x)  # [b, frames, bins]
    x = normalization_layer(model_config.normalization)(x) if model_config.normalization != "none" else x
    if augment_config is not None:
        spec_aug = aug.build_spectrogram_augmenter(augment_config, seed + 1000)
        if spec_aug is not None:
            x = spec_aug(x)
    x = spec.builder(x, model_config, num_classes)
    outputs = x if spec.own_head else keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="predictions")(x)
    model = keras.Model(inputs, outputs, name=spec.name)
    _pretrained_trunk(model, model_config, feature_config)
    return model


def _pretrained_trunk(model, model_config, feature_config):
    """Pretrained trunks: check the front end, load `--weights`, apply `--freeze-backbone`.

    The architecture's family module (`esc50tf.models.panns`, `.efficientat`)
    loads and freezes its trunk.
    """
    from esc50tf.models import panns
    from esc50tf.pretrained import architectures

    arch = panns.architecture_of(model_config)
    if arch is None:
        return
    wanted = architectures.feature_settings(arch)
    wrong = {k: v for k, v in feature_config.to_dict().items() if k in wanted and wanted[k] != v}
    if wrong:
        raise ValueError(f"{model_config.name} on the {arch} trunk needs its own front end; "
                         f"got {wrong}, needs {({k: wanted[k] for k in wrong})}")
    family = registry.trunk_module(arch)
    if model_config.weights:
        family.load_pretrained(model, model_config)
    if model_config.freeze_backbone:
        family.freeze_trunk(model)


def normalization_layer(kind):
    import keras

    from esc50tf import frontend as feat

    if kind == "frequency":
        return feat.FrequencyNormalization(name="normalization")
    if kind == "instance":
        return feat.InstanceNormalization(name="normalization")
    if kind == "batch":
        return keras.layers.BatchNormalization(axis=-1, name="normalization")
    raise ValueError(f"unknown normalization {kind!r}")


def adapt_normalization(model, dataset, steps=None):
    """Fills per-frequency statistics from training batches (waveforms, labels).

    Only for `normalization="frequency"`; other kinds need nothing. The
    statistics come from the given dataset alone: pass the training side,
    never validation or test data.
    """
    try:
        norm = model.get_layer("normalization")
    except ValueError:
        return False
    if not hasattr(norm, "adapt"):
        return False
    norm.adapt(dataset, frontend=model.get_layer("frontend"), steps=steps)
    return True


def image_input(x, config, default_size=None):
    """Spectrogram `[b, frames, bins]` -> image `[b, H, W, C]` for 2-D CNNs."""
    import keras

    from esc50tf import frontend as feat

    size = config.image_size or default_size
    channels = config.channels()
    if size:
        return feat.ResizeToImage(size, size, channels, name="to_image")(x)
    x = feat.AddChannelAxis(name="channel_axis")(x)
    if channels == 3:
        x = keras.layers.Concatenate(axis=-1, name="to_rgb")([x, x, x])
    return x


def _crop_layer(model):
    from esc50tf.augment import RandomCrop

    if not hasattr(model, "_flatten_layers"):  # a scikit-learn split model
        return None
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, RandomCrop):
            return layer
    return None


def crop_starts(length, crop, num_crops):
    """Starts of `num_crops` evenly spaced windows of `crop` samples in `length`.

    One window is the centre crop `RandomCrop` takes at inference; several
    run from the start to the end of the clip. Clips no longer than the crop
    give one window.
    """
    room = max(0, int(length) - int(crop))
    if num_crops <= 1 or room == 0:
        return [room // 2]
    return sorted({int(round(s)) for s in np.linspace(0, room, num_crops)})


def crop_rolls(model, length=None, num_crops=None):
    """Circular shifts that put the model's centre crop on each evaluation window.

    `[0]` for a model without a crop layer or with one window; `predict_crops`
    and `predict_dataset` average the model over these shifts.
    `num_crops` defaults to the crop layer's `test_crops`.
    """
    layer = _crop_layer(model)
    length = int(length or model.input_shape[-1])
    if layer is None:
        return [0]
    centre = max(0, length - layer.num_samples) // 2
    starts = crop_starts(length, layer.num_samples, num_crops or layer.test_crops)
    return [centre - s for s in starts]


def test_crops(model, length=None):
    """How many windows `predict_crops` averages for `model` (1 without a crop layer)."""
    layer = _crop_layer(model)
    if layer is None:
        return 1
    length = length or model.input_shape[-1]
    return len(crop_starts(length, layer.num_samples, layer.test_crops))


def predict_crops(model, waveforms, num_crops=None):
    """Class probabilities averaged over evenly spaced crops, `[batch, classes]`.

    A model trained on random crops (`RandomCrop` in its waveform augmenter)
    sees only its centre crop at inference. Here the clip is rolled so that
    the centre crop falls on each of `num_crops` evenly spaced windows in turn
    (`crop_starts`), and the softmax outputs are averaged (multi-crop testing,
    Tokozume et al., 2017). Models without a crop give `model(waveforms)`.

    Args:
        model: keras.Model taking `[batch, samples]` waveforms.
        waveforms: array or tensor `[batch, samples]`.
        num_crops: int or None. Defaults to the crop layer's `test_crops`.
    """
    from keras import ops

    rolls = crop_rolls(model, waveforms.shape[1], num_crops)
    if rolls == [0]:
        return model(waveforms, training=False)
    probs = [model(ops.roll(waveforms, r, axis=1), training=False) for r in rolls]
    return ops.mean(ops.stack(probs, axis=0), axis=0)


def check_finite_outputs(probs, what):
    """Raises Esc50Error when `probs` holds NaN or infinity, naming `what` produced them.

    A model with non-finite outputs (diverged weights, or an input far outside
    what it was trained on) ranks NaNs as if they were probabilities; no
    metric, export or prediction made from them means anything.
    """
    probs = np.asarray(probs)
    bad = ~np.isfinite(probs)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0]) if probs.ndim > 1 else np.nonzero(bad)[0]
        raise Esc50Error(
            f"{what}: outputs are not finite (NaN or infinity) for {len(rows)} of "
            f"{len(probs)} input(s); refusing to use them (a diverged model, or input "
            "far outside the range it was trained on)")


def predict_dataset(model, dataset, verbose=1):
    """(labels, probabilities, filenames) of a `(x, y, meta)` dataset in its fixed order.

    The batched counterpart of `predict_crops`, used to score a test side
    (`esc50tf.train`, `esc50tf.evaluate`): the model runs through Keras'
    compiled, batched `predict` (progress bar with verbose=1), once per
    evaluation crop of a multi-crop model (`crop_rolls`), and the softmax
    outputs are averaged; labels and names come from a second, model-free pass.

    Args:
        model: keras.Model taking `[batch, samples]` waveforms.
        dataset: tf.data.Dataset of `(waveforms, labels, meta)` batches, with
            `meta["filename"]` (`DatasetOptions(with_metadata=True)`).
        verbose: int. Keras predict verbosity (1: a bar on a terminal, plain lines in a log:
            `esc50tf.progress.keras_verbose`).

    Returns:
        (y_true `[n]` int, y_prob `[n, classes]` float32, filenames list of str).
    """
    import tensorflow as tf

    from esc50tf.progress import keras_verbose

    waves = dataset.map(lambda x, y, meta: x)
    probs = 0.0
    rolls = crop_rolls(model, waves.element_spec.shape[-1])
    for shift in rolls:
        crop = waves.map(lambda x, s=shift: tf.roll(x, s, axis=1)) if shift else waves
        probs = probs + model.predict(crop, verbose=keras_verbose(verbose))
    probs = probs / len(rolls)
    ys, names = [], []
    for y, filenames in dataset.map(lambda x, y, meta: (y, meta["filename"])):
        ys.append(y.numpy())
        names.extend(n.decode() for n in filenames.numpy())
    return np.concatenate(ys), np.asarray(probs, dtype=np.float32), names


def framewise_model(model):
    """(sub-model giving per-step probabilities, samples per step), or None.

    For a Keras classifier whose graph holds the SED per-step head (a
    `segment_logits` layer with `[b, steps, classes]` output, as `cnn14_sed`):
    the same graph from the waveform to a softmax over each step's logits.
    A step is `SED_RATIO` (32) frames of the front end's hop.
    """
    import keras

    from esc50tf.models.panns import SED_RATIO

    try:
        logits = model.get_layer("segment_logits").output
    except (ValueError, AttributeError):
        return None
    hops = [layer.hop_length for layer in model.layers if hasattr(layer, "hop_length")]
    if len(logits.shape) != 3 or len(hops) != 1:
        return None
    probs = keras.layers.Softmax(axis=-1, dtype="float32", name="step_predictions")(logits)
    return keras.Model(model.inputs, probs, name=f"{model.name}_framewise"), SED_RATIO * hops[0]
