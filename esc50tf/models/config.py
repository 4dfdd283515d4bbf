"""ModelConfig: the model's own hyperparameters, saved with every run (Keras-free)."""

from __future__ import annotations

import dataclasses

from esc50tf.config import Config, choice, setting

NORMALIZATIONS = ("frequency", "instance", "batch", "none")
CLASSIC_FEATURES = ("stats", "image", "embeddings")
HYBRID_BACKBONES = ("densenet121", "cnn14", "cnn14_16k")
IMAGE_CHANNELS = (1, 3)


def _positive(value):
    return value >= 1


@dataclasses.dataclass(frozen=True)
class ModelConfig(Config):
    """Model hyperparameters. None means "the model's own default".

    Args:
        name: str. A registered model name (`esc50tf models`).
        dropout: float or None. Dropout of the dense head.
        dense_units: int or None. Width of the dense head (CNN, RNN, hybrid).
        rnn_units: int. Units per direction of the recurrent layers. Defaults to 64.
        attention_units: int. Size of the additive attention (hybrid). Defaults to 64.
        l2: float or None. L2 penalty on dense-head kernels.
        weights: str or None. Local weights file for the CNN backbone (e.g.
            ImageNet weights for keras.applications); for a PANNs trunk (`cnn14`...,
            `hybrid` with a CNN14 `backbone`, `classic_features="embeddings"`) a
            checkpoint name from the cache or a converted weights file
            (`esc50tf.pretrained`); None trains from scratch.
        freeze_backbone: bool. Keep the backbone's weights fixed.
        backbone: str or None. The hybrid's trunk: "densenet121" (None, the
            default) or a PANNs CNN14 ("cnn14", "cnn14_16k"; with `weights`
            the AudioSet-pretrained one).
        image_size: int or None. Resize the spectrogram to a square image of
            this size (the study used 224) before a CNN; None keeps its own
            `[frames, bins]` shape.
        image_channels: int or None. 1 or 3; None means 3 when `weights` is
            given (ImageNet backbones need 3), else 1.
        normalization: str. "frequency" (per-frequency mean/std from the
            training folds, stored in the model), "instance", "batch" or "none".
        classic_features: str. For knn/svm/random_forest/logreg: "stats" (per-band
            mean/std of log-Mel and MFCC), "image" (the study's flattened,
            standardised spectrogram image) or "embeddings" (a pretrained PANNs
            model's fc1 embedding, from `weights`: a linear probe).
        knn_neighbors: int. Defaults to 5 (the study).
        svm_c: float. Defaults to 1.0 (the study: linear kernel, C=1).
        n_trees: int. Random-forest size. Defaults to 100 (the study).
        logreg_c: float. Inverse L2 strength of `logreg`. Defaults to 1.0.
    """

    label = "model"

    name: str = "hybrid"
    dropout: float | None = setting(
        None, flag="--dropout", type=float, help="dropout of the dense head",
        search={"type": "float", "min": 0.1, "max": 0.5, "step": 0.1},
        check=lambda v: 0 <= v < 1, allowed="a number in [0, 1)")
    dense_units: int | None = setting(
        None, flag="--dense-units", type="positive_int", help="width of the dense head",
        search=choice([128, 256, 512]), check=_positive, allowed="an integer >= 1")
    rnn_units: int = setting(64, flag="--rnn-units", type="positive_int",
                             help="recurrent units per direction (default 64)",
                             search=choice([32, 64, 128]), check=_positive,
                             allowed="an integer >= 1")
    attention_units: int = setting(64, flag="--attention-units", type="positive_int",
                                   help="attention size of the hybrid (default 64)",
                                   search=choice([32, 64, 128]), check=_positive,
                                   allowed="an integer >= 1")
    l2: float | None = None
    weights: str | None = setting(
        None, flag="--weights", metavar="NAME|FILE",
        help="pretrained weights: for cnn14*, hybrid --backbone cnn14 and --classic-features "
        "embeddings a PANNs checkpoint name (esc50tf pretrained list) or converted file; for "
        "keras.applications backbones a local weights file (e.g. ImageNet notop .h5)")
    # Searched only when --weights names pretrained backbone weights.
    freeze_backbone: bool = setting(False, search={"type": "boolean"}, note="only with --weights")
    # With PANNs --weights: the hybrid's trunk, pretrained CNN14 or DenseNet121 from scratch.
    backbone: str | None = setting(
        None, flag="--backbone", choices=HYBRID_BACKBONES,
        help="hybrid trunk (default densenet121; cnn14: the PANNs conv blocks, pretrained "
        "with --weights)", search=choice(["densenet121", "cnn14"]),
        note="only with PANNs --weights")
    image_size: int | None = setting(
        None, flag="--image-size", type="positive_int",
        help="resize the spectrogram to a square image (the study: 224)")
    image_channels: int | None = setting(
        None, flag="--image-channels", type=int, choices=IMAGE_CHANNELS,
        help="image channels (default 3 with --weights, else 1)")
    normalization: str = setting(
        "frequency", flag="--normalization", choices=NORMALIZATIONS,
        help="feature normalisation (default: per-frequency stats from the training folds)")
    classic_features: str = setting(
        "stats", flag="--classic-features", choices=CLASSIC_FEATURES,
        help="knn/svm/random_forest/logreg input: band statistics, the study's image, or "
        "PANNs embeddings of --weights (a linear probe)")
    knn_neighbors: int = 5
    svm_c: float = 1.0
    n_trees: int = 100
    logreg_c: float = setting(1.0, flag="--logreg-c", type="positive_float",
                              help="inverse L2 strength of logreg (default 1)")

    def __post_init__(self):
        self.check(self.dropout is None or 0 <= self.dropout < 1, "dropout", self.dropout,
                   "a number in [0, 1) or None")
        for field in ("dense_units", "rnn_units", "attention_units", "knn_neighbors", "n_trees"):
            value = getattr(self, field)
            self.check(value is None or (isinstance(value, int) and value >= 1), field, value,
                       "a positive integer")
        self.check(self.l2 is None or self.l2 >= 0, "l2", self.l2, "a number >= 0 or None")
        self.check(self.image_size is None or (isinstance(self.image_size, int)
                                               and self.image_size >= 32),
                   "image_size", self.image_size, "an integer >= 32 or None")
        self.check(self.image_channels is None or self.image_channels in IMAGE_CHANNELS,
                   "image_channels", self.image_channels,
                   ", ".join(map(str, IMAGE_CHANNELS)) + " or None")
        self.check(self.normalization in NORMALIZATIONS, "normalization", self.normalization,
                   ", ".join(NORMALIZATIONS))
        self.check(self.classic_features in CLASSIC_FEATURES, "classic_features",
                   self.classic_features, ", ".join(CLASSIC_FEATURES))
        self.check(self.backbone is None or self.backbone in HYBRID_BACKBONES, "backbone",
                   self.backbone, ", ".join(HYBRID_BACKBONES) + " or None")
        self.check(self.svm_c > 0, "svm_c", self.svm_c, "a number > 0")
        self.check(self.logreg_c > 0, "logreg_c", self.logreg_c, "a number > 0")

    def channels(self):
        """Input channels of an image backbone: `image_channels`, else 3 with `weights`, else 1."""
        if self.image_channels is not None:
            return self.image_channels
        return 3 if self.weights else 1
