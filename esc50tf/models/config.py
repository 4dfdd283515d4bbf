"""ModelConfig: the model's own hyperparameters, saved with every run (Keras-free)."""

from __future__ import annotations

import dataclasses

from esc50tf.config import Config

NORMALIZATIONS = ("frequency", "instance", "batch", "none")
CLASSIC_FEATURES = ("stats", "image", "embeddings")
HYBRID_BACKBONES = ("densenet121", "cnn14", "cnn14_16k")


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
    dropout: float | None = None
    dense_units: int | None = None
    rnn_units: int = 64
    attention_units: int = 64
    l2: float | None = None
    weights: str | None = None
    freeze_backbone: bool = False
    backbone: str | None = None
    image_size: int | None = None
    image_channels: int | None = None
    normalization: str = "frequency"
    classic_features: str = "stats"
    knn_neighbors: int = 5
    svm_c: float = 1.0
    n_trees: int = 100
    logreg_c: float = 1.0

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
        self.check(self.image_channels in (None, 1, 3), "image_channels", self.image_channels,
                   "1, 3 or None")
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
