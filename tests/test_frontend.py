"""The front-end package's structure: Keras-free config, the registry of kinds, registered names.

The layers' numbers (against librosa) are tested in test_features.py; their
serialisation, tf.data, XLA and mixed precision in test_layers.py.
"""

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from esc50tf import frontend as F
from esc50tf.config import field_names
from esc50tf.errors import Esc50Error
from esc50tf.frontend.config import FRONTENDS, FrontendSpec, kinds_reading

FIXTURES = Path(__file__).parent / "fixtures"
# The rest of a run's report.json, for compare.run_row.
SCORES = {"folds": [], "classes": ["a"], "accuracy": 0.5, "accuracy_std": 0.0, "macro_f1": 0.5,
          "weighted_f1": 0.5}

LAYER_NAMES = ["Spectrogram", "MelSpectrogram", "MFCC", "KaldiMelSpectrogram", "AddChannelAxis",
               "ResizeToImage", "FrequencyNormalization", "InstanceNormalization"]


def test_config_and_registry_import_without_keras():
    code = (
        "import sys, esc50tf.frontend.config\n"
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules\n"
        "import esc50tf.frontend as F, esc50tf.compare, esc50tf.study\n"
        "c = F.FeatureConfig.from_dict({'kind': 'mfcc', 'n_mfcc': 13, 'deltas': 2})\n"
        "print(','.join(F.KINDS), c.n_bins, c.num_frames(44100))\n"
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules, "
        "sorted(m for m in sys.modules if m.startswith(('keras', 'tensorflow')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["mel,mfcc,stft,kaldi_mel", "39", "87"]


def test_layer_names_are_loaded_on_first_access():
    assert set(LAYER_NAMES) <= set(dir(F))
    assert set(LAYER_NAMES) <= set(F.__all__)
    with pytest.raises(AttributeError, match="no attribute 'Spectrogramm'"):
        F.Spectrogramm  # noqa: B018


def test_registered_names_are_those_of_saved_models():
    import keras

    layers = F.register_layers()
    assert sorted(layers) == sorted(LAYER_NAMES)
    for name in LAYER_NAMES:
        cls = getattr(F, name)
        assert layers[name] is cls
        assert keras.saving.get_registered_name(cls) == f"esc50tf>{name}"
        assert keras.saving.get_registered_object(f"esc50tf>{name}") is cls


def test_a_model_saved_before_the_package_loads_with_equal_outputs():
    # Saved by esc50tf.features (commit 6433ec6, the last with that module):
    # every front-end layer, its `module` recorded as "esc50tf.features".
    import keras

    F.register_layers()
    model = keras.models.load_model(FIXTURES / "frontend_pre_r14.keras")
    expected = np.load(FIXTURES / "frontend_pre_r14.npz")
    # (KaldiMelSpectrogram came later than this file.)
    assert {type(layer).__name__ for layer in model.layers} >= set(LAYER_NAMES) - {
        "KaldiMelSpectrogram"}
    out = model.predict(expected["x"], verbose=0)
    for key in ("image", "mfcc", "stft"):
        np.testing.assert_allclose(np.asarray(out[key]), expected[key], rtol=1e-5, atol=1e-4)


# --------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", F.KINDS)
def test_registry_entry_agrees_with_its_layer(kind):
    spec = F.frontend_spec(kind)
    assert spec.kind == kind and spec.description
    assert set(spec.fields) <= set(field_names(F.FeatureConfig)) - {"kind"}
    config = F.FeatureConfig(kind=kind, sample_rate=8000, n_fft=256, hop_length=64, n_mels=32,
                             n_mfcc=13, deltas=1 if kind == "mfcc" else 0, top_db=80.0)
    layer = F.build_frontend(config)
    assert type(layer) is spec.layer_class
    # The layer got every field the entry names, with the config's value.
    layer_config = layer.get_config()
    assert {name: layer_config[name] for name in spec.fields} == config.layer_kwargs()
    # ... and the Keras-free shape agrees with the layer's output.
    assert layer(np.zeros((2, 4000), "float32")).shape == (2, config.num_frames(4000),
                                                            config.n_bins)


def test_fields_a_kind_does_not_read_are_not_passed_to_its_layer():
    assert "n_mels" not in F.FeatureConfig(kind="stft").layer_kwargs()
    assert "n_mfcc" not in F.FeatureConfig(kind="mel").layer_kwargs()
    assert kinds_reading("n_mels") == ("mel", "mfcc", "kaldi_mel")
    assert kinds_reading("n_mfcc") == ("mfcc",)
    assert kinds_reading("n_fft") == F.KINDS
    with pytest.raises(Esc50Error,
                       match=r"unknown front end 'cqt'; allowed: mel, mfcc, stft, kaldi_mel"):
        F.frontend_spec("cqt")


def test_an_entry_added_to_the_registry_is_a_front_end(monkeypatch):
    """A new kind is one registry entry: config, layer, widths and compare follow."""
    from esc50tf import compare

    fields = ("n_fft", "hop_length", "log")
    spec = FrontendSpec("linear", "esc50tf.frontend.spectrogram:Spectrogram", fields,
                        lambda c: c.n_fft // 2 + 1, "linear-frequency spectrogram")
    monkeypatch.setitem(FRONTENDS, "linear", spec)
    config = F.FeatureConfig.from_dict({"kind": "linear", "n_fft": 128, "hop_length": 32,
                                        "log": "ln", "n_mels": 999})
    layer = F.build_frontend(config)
    assert isinstance(layer, F.Spectrogram) and (layer.n_fft, layer.log) == (128, "ln")
    assert layer(np.zeros((1, 1000), "float32")).shape == (1, config.num_frames(1000), 65)
    assert "linear" in kinds_reading("n_fft") and "linear" not in kinds_reading("n_mels")
    report = {"config": {"model": {"name": "gru"},
                         "features": {**config.to_dict()}},
              "dataset": {"num_samples": 1000, "sample_rate": 8000}, **SCORES}
    row = compare.run_row(compare.Run("r", Path("."), report))
    assert (row["input"], row["n_mels"], row["n_mfcc"]) == ("32x65", None, None)
    monkeypatch.delitem(FRONTENDS, "linear")
    with pytest.raises(Esc50Error, match="kind='linear' is not allowed"):
        F.FeatureConfig(kind="linear")


def test_cli_tune_and_study_take_their_choices_from_the_registry(capsys):
    from esc50tf import study, tune
    from esc50tf.cli import build_parser

    listed = ", ".join(repr(k) for k in F.KINDS)
    for argv in (["train", "--data", "d", "--out", "o", "--features", "cqt"],
                 ["features", "a.wav", "--kind", "cqt"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(argv)
        assert f"invalid choice: 'cqt' (choose from {listed})" in capsys.readouterr().err
    # tune draws the general front ends; kaldi_mel is the mn trunks' own (searched=False).
    assert tune.PARAMS["features"].default["values"] == list(F.SEARCHED_KINDS)
    assert F.SEARCHED_KINDS == tuple(k for k in F.KINDS if k != "kaldi_mel")
    assert tune.PARAMS["n_mels"].when == ("features", kinds_reading("n_mels"))
    assert tune.PARAMS["n_mfcc"].when == ("features", kinds_reading("n_mfcc"))
    assert tuple(study.FEATURE_KINDS) == F.KINDS
    with pytest.raises(Esc50Error, match="allowed: mel, mfcc, stft"):
        study.parse_kinds("mel,cqt")


@pytest.mark.parametrize("features, expected", [
    ({"kind": "stft", "n_fft": 256, "hop_length": 64, "sample_rate": 8000}, ("126x129", None)),
    ({"kind": "mfcc", "n_fft": 256, "hop_length": 64, "sample_rate": 8000, "n_mels": 32,
      "n_mfcc": 13, "deltas": 2, "center": False}, ("122x39", 32)),
    ({"kind": "cqt"}, ("?", None)),  # a front end this version does not know
])
def test_compare_takes_input_shapes_from_the_feature_config(features, expected):
    from esc50tf import compare

    report = {"config": {"model": {"name": "gru"}, "features": features},
              "dataset": {"num_samples": 8000, "sample_rate": 8000}, **SCORES}
    row = compare.run_row(compare.Run("r", Path("."), report))
    assert (row["input"], row["n_mels"]) == expected
    if features["kind"] in F.KINDS:
        config = F.FeatureConfig.from_dict(features)
        assert row["input"] == f"{config.num_frames(8000)}x{config.n_bins}"


def test_feature_config_is_a_frozen_config():
    from esc50tf.config import Config

    config = F.FeatureConfig(kind="mfcc", n_mels=40, n_mfcc=13)
    assert isinstance(config, Config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.n_mels = 64
    assert config.replace(n_mfcc=20).n_mfcc == 20
    with pytest.raises(Esc50Error, match="n_mfcc=41 is not allowed; allowed: at most n_mels=40"):
        config.replace(n_mfcc=41)
