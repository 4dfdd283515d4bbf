"""The pretrained architectures as data: front end, sizes, classes, family.

`ARCHITECTURES` holds the PANNs ones (conv widths, embedding size); the
EfficientAT `mn` family's table is in `esc50tf.pretrained.efficientat`, and
`get`, `names`, `family` and `feature_settings` answer for both.
Keras-free: what a converted weights file records about its model, what a
checkpoint's front end is checked against, and the FeatureConfig fields a
run on a pretrained trunk takes. The Keras models built from these settings
are in `esc50tf.models.<family>` (`panns`, `efficientat`).

>>> get("cnn14_16k")["sample_rate"], feature_settings("cnn14_16k")["hop_length"]
(16000, 160)
"""

from __future__ import annotations

from esc50tf.errors import Esc50Error

__all__ = ["ARCHITECTURES", "family", "feature_settings", "get", "names"]

_CNN14 = dict(widths=(64, 128, 256, 512, 1024, 2048), embedding_size=2048, classes_num=527,
              n_mels=64, fmin=50.0, normalization="its own bn0")
ARCHITECTURES = {
    "cnn14": dict(_CNN14, sample_rate=32000, n_fft=1024, hop_length=320, fmax=14000.0,
                  sed=False, paper="Cnn14 (32 kHz)"),
    "cnn14_16k": dict(_CNN14, sample_rate=16000, n_fft=512, hop_length=160, fmax=8000.0,
                      sed=False, paper="Cnn14_16k"),
    "cnn14_sed": dict(_CNN14, sample_rate=32000, n_fft=1024, hop_length=320, fmax=14000.0,
                      sed=True, paper="Cnn14_DecisionLevelMax"),
}
"""Architecture name -> settings: front end, conv widths per block, fc1 size, classes."""


def _all():
    # The EfficientAT mn family's table lives with its conversion (pretrained.efficientat).
    from esc50tf.pretrained import efficientat

    return {**ARCHITECTURES, **efficientat.ARCHITECTURES}


def names():
    """Every pretrained architecture: the PANNs ones, then EfficientAT's `mn04` ... `mn40`."""
    return tuple(_all())


def family(name):
    """The model family (`esc50tf.models.<family>`) of pretrained architecture `name`."""
    return get(name).get("family", "panns")


def get(name):
    """The settings of `name` (PANNs or EfficientAT); Esc50Error listing the valid names otherwise."""
    known = _all()
    if name not in known:
        raise Esc50Error(f"unknown pretrained architecture {name!r}; valid: {', '.join(known)}")
    return known[name]


def feature_settings(name):
    """The FeatureConfig fields that reproduce the reference front end of `name`."""
    a = get(name)
    if "features" in a:  # an architecture that records its front end as fields (EfficientAT)
        return dict(a["features"])
    return dict(kind="mel", sample_rate=a["sample_rate"], n_fft=a["n_fft"],
                hop_length=a["hop_length"], win_length=None, window="hann", center=True,
                pad_mode="reflect", n_mels=a["n_mels"], fmin=a["fmin"], fmax=a["fmax"],
                mel_scale="slaney", norm="slaney", power=2.0, log="db", top_db=None, ref=1.0)
