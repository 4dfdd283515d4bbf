"""ModelConfig: the model's own hyperparameters, saved with every run."""

from __future__ import annotations

import dataclasses

from esc50tf.errors import Esc50Error

NORMALIZATIONS = ("frequency", "instance", "batch", "none")
CLASSIC_FEATURES = ("stats", "image", "embeddings")
HYBRID_BACKBONES = ("densenet121", "cnn14", "cnn14_16k")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
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
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise Esc50Error(f"dropout must be in [0, 1), got {self.dropout!r}")
        for field in ("dense_units", "rnn_units", "attention_units", "knn_neighbors", "n_trees"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise Esc50Error(f"{field} must be a positive integer, got {value!r}")
        if self.l2 is not None and self.l2 < 0:
            raise Esc50Error(f"l2 must be >= 0, got {self.l2!r}")
        if self.image_size is not None and (not isinstance(self.image_size, int)
                                            or self.image_size < 32):
            raise Esc50Error(f"image_size must be an integer >= 32, got {self.image_size!r}")
        if self.image_channels not in (None, 1, 3):
            raise Esc50Error(f"image_channels must be 1 or 3, got {self.image_channels!r}")
        if self.normalization not in NORMALIZATIONS:
            raise Esc50Error(
                f"normalization must be one of {', '.join(NORMALIZATIONS)}, "
                f"got {self.normalization!r}"
            )
        if self.classic_features not in CLASSIC_FEATURES:
            raise Esc50Error(
                f"classic_features must be one of {', '.join(CLASSIC_FEATURES)}, "
                f"got {self.classic_features!r}"
            )
        if self.backbone is not None and self.backbone not in HYBRID_BACKBONES:
            raise Esc50Error(f"backbone must be one of {', '.join(HYBRID_BACKBONES)}, "
                             f"got {self.backbone!r}")
        if not self.svm_c > 0:
            raise Esc50Error(f"svm_c must be > 0, got {self.svm_c!r}")
        if not self.logreg_c > 0:
            raise Esc50Error(f"logreg_c must be > 0, got {self.logreg_c!r}")

    def channels(self):
        if self.image_channels is not None:
            return self.image_channels
        return 3 if self.weights else 1

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise Esc50Error(
                f"unknown model setting(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}"
            )
        return cls(**values)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)
