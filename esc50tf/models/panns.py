"""PANNs: AudioSet-pretrained CNN14 (32 kHz, 16 kHz and the decision-level-max SED variant).

Kong et al., "PANNs: Large-Scale Pretrained Audio Neural Networks for Audio
Pattern Recognition", IEEE/ACM TASLP 2020. The architecture follows the
reference implementation (`panns_inference.models.Cnn14` and
`Cnn14_DecisionLevelMax`) layer for layer:

    waveform [b, samples] at the architecture's rate
    -> log-Mel (esc50tf's MelSpectrogram: Hann, reflect-padded centre frames,
       power 2, Slaney Mel filterbank, 10 log10(max(S, 1e-10)), no top_db)
                                                               [b, frames, 64]
    -> bn0: batch norm over the 64 Mel bins                    [b, frames, 64]
    -> 6 conv blocks (3x3 conv-BN-ReLU x2, 2x2 average pool; the last
       block pools 1x1), dropout 0.2 after each               [b, T', F', 2048]
    -> mean over frequency                                     [b, T', 2048]
    -> CNN14: max + mean over time -> dropout 0.5 -> fc1 (ReLU) = embedding
       -> fc_audioset (sigmoid)                                [b, 527]
    -> SED: max_pool1d(3, 1, 1) + avg_pool1d(3, 1, 1) over time (PyTorch's
       average counts the zero padding), fc1 and fc_audioset per time step,
       clip output = max over time; frame output = each step repeated 32
       times, the last one repeated up to the number of frames.

Keras layer names are the PyTorch state_dict module paths with "." replaced
by "_" (`bn0`, `conv_block1_conv1`, `conv_block1_bn1`, ..., `fc1`,
`fc_audioset`), so a converted checkpoint loads by name
(`esc50tf.pretrained`). Batch norms use PyTorch's epsilon 1e-5 and momentum
0.1 (Keras momentum 0.9).

Each architecture's settings (front end, conv widths, fc1 size, classes)
are data in `esc50tf.pretrained.architectures`; this module builds the Keras
models from them and loads converted weights into them
(`esc50tf.pretrained.store`, `convert`), so the dependency points one way.

`build_reference` builds the AudioSet tagger itself (for parity tests and
`esc50tf embed`); the registered classifiers (`cnn14`, `cnn14_16k`,
`cnn14_sed`) reuse the same trunk up to fc1 and put a new head on it for the
dataset's classes (see `esc50tf.models.build`).
"""

from __future__ import annotations

from esc50tf.errors import Esc50Error
from esc50tf.models.registry import register, register_family
from esc50tf.pretrained import architectures

# The time axis shrinks 2x in each of the first five blocks.
SED_RATIO = 32
BN_EPSILON = 1e-5  # PyTorch's default, not Keras' 1e-3
BN_MOMENTUM = 0.9  # PyTorch momentum 0.1


def build_frontend(name, layer_name="frontend"):
    """esc50tf's MelSpectrogram set up as the reference's log-Mel front end."""
    from esc50tf import frontend as feat

    settings = {k: v for k, v in architectures.feature_settings(name).items() if k != "kind"}
    return feat.MelSpectrogram(**settings, name=layer_name)


def _batch_norm(name, axis=-1):
    import keras

    return keras.layers.BatchNormalization(axis=axis, epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
                                           name=name)


def conv_trunk(x, widths, dropout=0.2, last_pool=False):
    """bn0 and the conv blocks: log-Mel `[b, frames, mels]` -> `[b, T', F', widths[-1]]`.

    Args:
        x: tensor `[b, frames, mels]`, the log-Mel.
        widths: sequence of ints. Output channels of each conv block.
        dropout: float. Dropout after each block (0.2 in the reference).
        last_pool: bool. Whether the last block pools 2x2 too (the reference
            pools it 1x1, i.e. not at all). Defaults to False.
    """
    import keras

    from esc50tf import frontend as feat

    x = _batch_norm("bn0")(x)  # over the Mel bins, as PANNs' transposed BatchNorm2d
    x = feat.AddChannelAxis(name="channel_axis")(x)  # [b, frames, mels, 1]
    for i, width in enumerate(widths, 1):
        block = f"conv_block{i}"
        for j in (1, 2):
            x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False,
                                    name=f"{block}_conv{j}")(x)
            x = _batch_norm(f"{block}_bn{j}")(x)
            x = keras.layers.Activation("relu", name=f"{block}_relu{j}")(x)
        if i < len(widths) or last_pool:
            x = keras.layers.AveragePooling2D(2, name=f"{block}_pool")(x)
        x = keras.layers.Dropout(dropout, name=f"{block}_dropout")(x)
    return x  # [b, frames // 32, mels // 32, widths[-1]]


def _clip_embedding(x, embedding_size, dropout=0.5):
    """CNN14's pooling and fc1: `[b, T', F', C]` -> embedding `[b, D]`."""
    import keras

    from esc50tf.models.layers import MeanOverAxis, TimeMaxPlusMean

    x = MeanOverAxis(axis=2, name="frequency_pool")(x)  # [b, T', C]
    x = TimeMaxPlusMean(name="time_pool")(x)  # [b, C]
    x = keras.layers.Dropout(dropout, name="fc1_dropout")(x)
    return keras.layers.Dense(embedding_size, activation="relu", name="fc1")(x)  # [b, D]


def _segment_embeddings(x, embedding_size, dropout=0.5):
    """The SED variant's pooling and fc1 per time step: `[b, T', F', C]` -> `[b, T', D]`."""
    import keras

    from esc50tf.models.layers import MeanOverAxis, SEDSmoothing

    x = MeanOverAxis(axis=2, name="frequency_pool")(x)  # [b, T', C]
    x = SEDSmoothing(name="time_smoothing")(x)
    x = keras.layers.Dropout(dropout, name="fc1_dropout")(x)
    return keras.layers.Dense(embedding_size, activation="relu", name="fc1")(x)  # [b, T', D]


def build_reference(name, widths=None, embedding_size=None, classes_num=527, num_samples=None):
    """The reference AudioSet tagger of architecture `name`, for inference and parity.

    Args:
        name: str. A key of `esc50tf.pretrained.architectures.ARCHITECTURES`.
        widths: sequence of 6 ints or None. Conv widths per block (reduced
            widths for test fixtures); None: the architecture's.
        embedding_size: int or None. Width of fc1; None: the architecture's.
        classes_num: int. Outputs of fc_audioset. Defaults to 527 (AudioSet).
        num_samples: int or None. Fixed waveform length, or None for any length.

    Returns:
        A `keras.Model` taking waveforms `[b, samples]` at the architecture's
        sample rate and returning a dict: "logmel" `[b, frames, mels]`,
        "embedding" `[b, D]` (the fc1 output; for the SED variant, which has
        no clip embedding in the reference, the max over time of the
        per-step fc1 outputs), "clipwise" `[b, classes_num]` (sigmoid) and,
        for the SED variant, "framewise" `[b, frames, classes_num]`. Run it
        with `training=False` (the default of `model(x)` and `predict`).

    Example:
    >>> model = build_reference("cnn14", widths=(4, 4, 8, 8, 16, 16), embedding_size=16)
    >>> {k: v.shape for k, v in model(np.zeros((2, 32000), "float32")).items()}
    {'logmel': (2, 101, 64), 'embedding': (2, 16), 'clipwise': (2, 527)}
    """
    import keras

    from esc50tf.models.layers import FramewiseUpsample

    a = architectures.get(name)
    widths = _check_widths(a["widths"] if widths is None else widths)
    embedding_size = int(embedding_size or a["embedding_size"])
    inputs = keras.Input((num_samples,), name="waveform", dtype="float32")
    logmel = build_frontend(name)(inputs)  # [b, frames, mels]
    x = conv_trunk(logmel, widths)
    fc_audioset = keras.layers.Dense(classes_num, name="fc_audioset")
    outputs = {"logmel": keras.layers.Identity(name="logmel")(logmel)}
    if a["sed"]:
        segments = _segment_embeddings(x, embedding_size)  # [b, T', D]
        x = keras.layers.Dropout(0.5, name="fc1_out_dropout")(segments)
        seg_out = keras.layers.Activation("sigmoid", name="segmentwise")(fc_audioset(x))
        outputs["embedding"] = keras.layers.GlobalMaxPooling1D(name="embedding")(segments)
        outputs["clipwise"] = keras.layers.GlobalMaxPooling1D(name="clipwise")(seg_out)
        outputs["framewise"] = FramewiseUpsample(SED_RATIO, name="framewise")([seg_out, logmel])
    else:
        embedding = _clip_embedding(x, embedding_size)
        outputs["embedding"] = keras.layers.Identity(name="embedding")(embedding)
        x = keras.layers.Dropout(0.5, name="fc1_out_dropout")(embedding)
        outputs["clipwise"] = keras.layers.Activation("sigmoid", name="clipwise")(fc_audioset(x))
    return keras.Model(inputs, outputs, name=f"{name}_audioset")


def _check_widths(widths):
    widths = tuple(widths)
    if len(widths) != 6 or any(not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"widths must be 6 positive integers, got {widths!r}")
    return widths


# --- the registered classifiers ------------------------------------------------------

TRUNK_PREFIXES = ("bn0", "conv_block", "fc1")
"""Names (prefixes) of the pretrained layers; everything else is the new head."""


def is_trunk_layer(name):
    return name.startswith(TRUNK_PREFIXES) and not name.endswith("_dropout")


def architecture_of(model_config):
    """The PANNs architecture a ModelConfig is built on, or None (see `architecture_for`)."""
    return architecture_for(model_config.name, getattr(model_config, "backbone", None))


def architecture_for(model, backbone=None):
    """The pretrained architecture of model `model` with trunk `backbone`, or None.

    A registered model on a pretrained trunk (`cnn14`, `mn10`...) is its own;
    another model (the `hybrid`) is built on a PANNs one when `backbone` names one.
    """
    from esc50tf.models import registry

    spec = registry.get(model)
    if backbone is not None and "backbone" not in spec.settings:
        raise Esc50Error(f"backbone {backbone!r}: only the hybrid model takes a --backbone")
    if spec.pretrained:
        return spec.pretrained
    return backbone if backbone in architectures.ARCHITECTURES else None


def trunk_settings(model_config, arch):
    """(widths, embedding_size) of the trunk: the weights file's if `--weights`, else `arch`'s.

    A converted file records the architecture it holds, so reduced-width
    checkpoints (the test fixtures) build a trunk of their own size.
    """
    a = architectures.get(arch)
    if not model_config.weights:
        return tuple(a["widths"]), int(a["embedding_size"])
    _path, meta = _resolve(model_config, arch)
    held = meta.get("architecture") or {}
    return (_check_widths(held.get("widths", a["widths"])),
            int(held.get("embedding_size", a["embedding_size"])))


def _resolve(model_config, arch):
    from esc50tf.pretrained import store

    path, meta = store.resolve_weights(model_config.weights)
    source = meta.get("model")
    if source is not None and source != arch:
        raise Esc50Error(
            f"--weights {model_config.weights}: {path} holds {source} weights; model "
            f"{model_config.name} needs {arch} weights (e.g. --weights {arch})"
        )
    return path, meta


# --- run settings a PANNs trunk fixes ---------------------------------------------------

def _setting(section, key, *layers):
    """The last value of `section.key` among config layers (dicts or None)."""
    value = None
    for layer in layers:
        if layer and key in layer.get(section, {}):
            value = layer[section][key]
    return value


def run_architecture(model, model_settings):
    """The PANNs architecture a run of `model` with these model settings needs, or None.

    The registered PANNs models and `hybrid --backbone cnn14` are built on
    one; the classic models are when they read `embeddings`, from the
    architecture the `weights` file holds.
    """
    from esc50tf.models import registry

    if registry.get(model).keras:
        return architecture_for(model, model_settings.get("backbone"))
    if model_settings.get("classic_features") != "embeddings":
        return None
    weights = model_settings.get("weights")
    if not weights:
        raise Esc50Error(f"{model} on embeddings needs --weights NAME|FILE (a PANNs checkpoint "
                         "from `esc50tf pretrained list`, or a converted file)")
    from esc50tf.pretrained import store

    _path, meta = store.resolve_weights(weights)
    return meta.get("model")


def _of_family(arch, family):
    """Whether `arch` (any value) is a pretrained architecture of model family `family`."""
    return arch in architectures.names() and architectures.family(arch) == family


def holds_family_weights(weights, family="panns"):
    """Whether `weights` (a cache name or file) holds weights of `family`'s pretrained architectures.

    False for None and other files.
    """
    if not weights:
        return False
    from esc50tf.pretrained import catalog, store

    listed = catalog.checkpoints().get(str(weights))
    if listed is not None:
        return _of_family(listed.architecture, family)
    try:
        _path, meta = store.resolve_weights(weights)
    except Esc50Error:
        return False
    return _of_family(meta.get("model"), family)


def effective_preset(model, preset, base=None, overrides=None, family="panns"):
    """"finetune" for "default" when a Keras model on a `family` trunk gets pretrained weights."""
    from esc50tf.models import registry

    if preset != "default" or not registry.get(model).keras:
        return preset
    weights = _setting("model", "weights", base, overrides)
    backbone = _setting("model", "backbone", base, overrides)
    if weights and _of_family(architecture_for(model, backbone), family):
        return "finetune"
    return preset


def fix_settings(merged, overrides=None, family="panns", scales_trunk_lr=True):
    """Sets the front end and normalisation a pretrained trunk of `family` needs (merged config).

    The trunk was trained on its own log-Mel and normalises it itself (PANNs:
    bn0; EfficientAT: a fixed shift and scale), so the run's FeatureConfig
    becomes the architecture's and no other normalisation runs. Flags that
    ask for something else are refused (Esc50Error naming them) rather than
    silently ignored. `scales_trunk_lr`: whether `trunk_lr_scale` can slow
    this family's trunk (`TrunkScaledAdamW` knows the PANNs layer names only).
    """
    from esc50tf.models import registry

    arch = run_architecture(merged["model"]["name"], merged["model"])
    if arch is not None and not _of_family(arch, family):
        return None  # another family's trunk: its own hook checks it
    _check_trunk_lr_scale(merged, arch, scales_trunk_lr)
    if arch is None or not registry.get(merged["model"]["name"]).keras:
        return arch  # embeddings for the classic models resample to the trunk's rate themselves
    wanted = architectures.feature_settings(arch)
    asked = (overrides or {}).get("features", {})
    wrong = {k: v for k, v in asked.items() if k in wanted and k != "sample_rate" and v != wanted[k]}
    if wrong:
        key, value = sorted(wrong.items())[0]
        raise Esc50Error(
            f"{merged['model']['name']} uses the {arch} front end ({key}={wanted[key]!r}); "
            f"got {key}={value!r}: leave out the feature flags for this model"
        )
    norm = (overrides or {}).get("model", {}).get("normalization")
    if norm not in (None, "none"):
        raise Esc50Error(f"{merged['model']['name']} normalises its log-Mel with "
                         f"{architectures.get(arch)['normalization']}; got normalization="
                         f"{norm!r}: leave it out")
    if merged["model"].get("freeze_backbone") and not merged["model"].get("weights"):
        raise Esc50Error(f"--freeze-backbone without --weights would keep {arch}'s random trunk "
                         f"as it is; give pretrained weights (e.g. --weights {arch})")
    merged["features"] = dict(wanted)
    merged["model"]["normalization"] = "none"
    return arch


def _check_trunk_lr_scale(merged, arch, scales_trunk_lr=True):
    """Refuses a trunk learning-rate factor that would do nothing, or slow a random trunk."""
    from esc50tf.models import registry

    scale = merged["train"].get("trunk_lr_scale", 1.0)
    if scale == 1:
        return
    model = merged["model"]["name"]
    preset = merged["train"].get("preset")
    source = f" (set by --preset {preset})" if preset == "finetune" else ""
    if arch is None or not registry.get(model).keras:
        raise Esc50Error(
            f"trunk_lr_scale={scale:g}{source} applies to a pretrained PANNs trunk "
            f"({', '.join(architectures.ARCHITECTURES)}, or hybrid --backbone cnn14); {model} "
            "has none, so it would change nothing: leave it out")
    if not scales_trunk_lr:
        raise Esc50Error(
            f"trunk_lr_scale={scale:g}{source} applies to the PANNs trunks "
            f"({', '.join(architectures.ARCHITECTURES)}); it would change nothing on {model}'s "
            f"{arch} trunk: leave it out")
    if not merged["model"].get("weights"):
        raise Esc50Error(
            f"trunk_lr_scale={scale:g}{source} without --weights would only slow {arch}'s "
            f"random trunk; give pretrained weights (e.g. --weights {arch}) or leave it out")


def check_sample_rate(model_config, manifest, data, family="panns"):
    """Stops a run whose TFRecords are not at the sample rate of its trunk of `family`.

    The trunk's front end and filters are tied to its rate; clips at
    another rate would be read as the wrong frequencies without an error.
    Esc50Error gives the command that rebuilds the TFRecords at the right rate.
    (The classic models' embeddings resample the clips instead: `esc50tf.embed`.)
    """
    from esc50tf.models import registry

    if not registry.get(model_config.name).keras:
        return  # embeddings for the classic models are computed from resampled clips
    arch = run_architecture(model_config.name, model_config.to_dict())
    if not _of_family(arch, family):
        return
    wanted = architectures.get(arch)["sample_rate"]
    have = int(manifest["config"]["sample_rate"])
    if have == wanted:
        return
    source = manifest.get("source", {}).get("data_dir", "DATASET_DIR")
    build = manifest["config"]
    extra = f" --clip-seconds {build['clip_seconds']:g}" if "clip_seconds" in build else ""
    if build.get("compression", "none") != "none":
        extra += f" --compression {build['compression']}"
    out = f"{str(data).rstrip('/')}-{wanted // 1000}k"
    raise Esc50Error(
        f"{data} holds {have} Hz clips but {model_config.name}"
        f"{'' if arch == model_config.name else f' (on {arch})'} takes {wanted} Hz "
        f"audio; rebuild the TFRecords at its rate:\n  esc50tf build-tfrecords --data-dir "
        f"{source} --out {out} --sample-rate {wanted}{extra}\nthen pass --data {out}"
    )


def _sample_rate(model, model_settings, family="panns"):
    """The rate of the `family` trunk a Keras model is built on; None without one.

    The classic models' embeddings resample the clips themselves (`esc50tf.embed`).
    """
    from esc50tf.models import registry

    if not registry.get(model).keras:
        return None
    arch = architecture_for(model, model_settings.get("backbone"))
    return architectures.get(arch)["sample_rate"] if _of_family(arch, family) else None


def _converted_weights(model_config, family="panns"):
    """Whether `--weights` names converted weights of `family` (a cache name or an .npz file)."""
    from esc50tf.models import registry

    return (_of_family(registry.get(model_config.name).pretrained, family)
            or _of_family(model_config.backbone, family)
            or model_config.classic_features == "embeddings")


def _fit_trial(model, base, over, family="panns"):
    """Drops tune trial values a pretrained trunk of `family` cannot take (in place).

    A PANNs trunk has its own front end, so searched front-end settings do not
    apply to it; a model with a choice of trunk (the hybrid) on DenseNet121
    trains from scratch when the weights are PANNs weights (they fit the CNN14
    trunk only), at one learning rate.
    """
    from esc50tf.models import registry

    backbone = over["model"].get("backbone", base.get("model", {}).get("backbone"))
    if _of_family(architecture_for(model, backbone), family):
        over["features"] = {}
        base.pop("features", None)
    elif ("backbone" in registry.get(model).settings
          and holds_family_weights(base.get("model", {}).get("weights"), family)):
        over["model"]["weights"] = None
        over["model"].pop("freeze_backbone", None)
        over["train"].pop("trunk_lr_scale", None)  # no pretrained trunk to slow


def _embedder(weights):
    """build_embedder of PANNs weights; None for weights of another family."""
    from esc50tf.pretrained import store

    _path, meta = store.resolve_weights(weights)  # says how to get missing weights
    if meta.get("model") not in architectures.ARCHITECTURES:
        return None
    return build_embedder(weights)


def trunk_hooks(family, scales_trunk_lr=True):
    """The FamilySpec hooks of a family of pretrained trunks (`architectures.family`).

    The rules are the same for every trunk converted from an AudioSet
    checkpoint (its own front end and sample rate, `finetune` for pretrained
    weights...); each family registers them for its own architectures, and
    a hook does nothing for a run on another family's trunk. The embedder
    hook is the family's own. `scales_trunk_lr`: see `fix_settings`.
    """
    import functools

    def own(hook):
        return functools.partial(hook, family=family)

    return dict(preset=own(effective_preset),
                resolve=functools.partial(fix_settings, family=family,
                                          scales_trunk_lr=scales_trunk_lr),
                check_data=own(check_sample_rate), sample_rate=own(_sample_rate),
                converted_weights=own(_converted_weights), trial=own(_fit_trial))


register_family("panns", "panns", "tab:red", **trunk_hooks("panns"), embedder=_embedder)


# What the registered classifiers read (`freeze_backbone` through `build_model`).
_SETTINGS = ("dropout", "weights", "freeze_backbone")


def _classifier(x, config, name):
    """Trunk of `name` up to fc1 (the embedding) + dropout; build.py adds the head."""
    import keras

    widths, embedding_size = trunk_settings(config, name)
    x = conv_trunk(x, widths)
    x = _clip_embedding(x, embedding_size)  # [b, 2048]
    return keras.layers.Dropout(0.5 if config.dropout is None else config.dropout,
                                name="head_dropout1")(x)


@register("cnn14", "panns",
          "PANNs CNN14 (AudioSet-pretrained, 32 kHz, 79.7M-parameter trunk): conv blocks + fc1 "
          "embedding, new head",
          pretrained="cnn14", settings=_SETTINGS)
def build_cnn14(x, config, num_classes):
    return _classifier(x, config, "cnn14")


@register("cnn14_16k", "panns",
          "PANNs CNN14 at 16 kHz (512-point FFT, hop 160, 50-8000 Hz), new head",
          pretrained="cnn14_16k", settings=_SETTINGS)
def build_cnn14_16k(x, config, num_classes):
    return _classifier(x, config, "cnn14_16k")


@register("cnn14_sed", "panns",
          "PANNs CNN14 decision-level max (SED): per-step class scores, max over time, new head",
          pretrained="cnn14_sed", own_head=True, settings=_SETTINGS)
def build_cnn14_sed(x, config, num_classes):
    import keras

    widths, embedding_size = trunk_settings(config, "cnn14_sed")
    x = conv_trunk(x, widths)
    x = _segment_embeddings(x, embedding_size)  # [b, T', 2048]
    x = keras.layers.Dropout(0.5 if config.dropout is None else config.dropout,
                             name="head_dropout1")(x)
    x = keras.layers.Dense(num_classes, name="segment_logits", dtype="float32")(x)  # [b, T', K]
    x = keras.layers.GlobalMaxPooling1D(name="decision_max")(x)  # [b, K]
    return keras.layers.Activation("softmax", dtype="float32", name="predictions")(x)


def freeze_trunk(model, is_trunk=is_trunk_layer):
    """Makes the pretrained layers non-trainable (their batch norms then keep their statistics).

    `is_trunk(layer name) -> bool` says which they are (the PANNs trunk's by default).
    """
    frozen = 0
    for layer in model.layers:
        if is_trunk(layer.name):
            layer.trainable = False
            frozen += 1
    return frozen


def load_pretrained(model, model_config):
    """Loads `model_config.weights` (a cache name or a converted file) into the trunk by name.

    The file must hold the trunk's architecture (its metadata says which);
    the AudioSet head `fc_audioset` and the new head are left out. Returns
    the names of the layers loaded.
    """
    from esc50tf.pretrained import convert, store

    path, _meta = _resolve(model_config, architecture_of(model_config))
    converted, _meta = store.load_weights(path)
    names = [layer.name for layer in model.layers]
    skip = ["fc_audioset"] + [n for n in names if not is_trunk_layer(n)]
    if "fc1" not in names:  # the hybrid uses the conv blocks only
        skip.append("fc1")
    return convert.load_into(model, converted, skip=skip)


def build_embedder(weights):
    """(embedder model `[b, samples] -> [b, D]`, architecture name) for a weights name or file.

    The AudioSet tagger of the architecture the weights hold (`build_reference`),
    with the converted weights loaded, cut at its fc1 embedding.
    """
    return reference_embedder(
        weights, architectures.ARCHITECTURES, "PANNs",
        lambda name, held: build_reference(name, widths=held.get("widths"),
                                           embedding_size=held.get("embedding_size"),
                                           classes_num=held.get("classes_num", 527)))


def reference_embedder(weights, known, family_label, build):
    """(embedder model `[b, samples] -> [b, D]`, architecture name) of converted weights.

    Args:
        weights: str. A cache name or a converted weights file.
        known: the family's architecture names; weights of another are refused.
        family_label: str. The family, for that message.
        build: callable `(architecture, held) -> model` with an "embedding" output;
            `held` is the architecture settings the weights record (widths, classes).
    """
    import keras

    from esc50tf.pretrained import convert, store

    path, meta = store.resolve_weights(weights)
    name = meta.get("model")
    if name not in known:
        raise Esc50Error(f"{path}: weights of {name!r}, not a {family_label} architecture "
                         f"({', '.join(known)})")
    model = build(name, meta.get("architecture") or {})
    convert.load_into(model, store.load_weights(path)[0])
    return keras.Model(model.input, model.output["embedding"], name=f"{name}_embedder"), name
