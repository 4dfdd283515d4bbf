"""esc50tf.timeline with frame-wise outputs: the SED model's per-step probabilities."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

RATE = 32000
FIXTURES = Path(__file__).parent / "fixtures" / "panns"


@pytest.fixture(scope="module")
def sed_keras(tmp_path_factory):
    """A reduced-width cnn14_sed classifier (5 classes, 1 s windows) saved as .keras."""
    from esc50tf.frontend import FeatureConfig
    from esc50tf.models import ModelConfig, panns
    from esc50tf.models.build import build_model
    from esc50tf.pretrained import architectures, store

    folder = tmp_path_factory.mktemp("sed")
    weights = folder / "cnn14_sed.npz"
    store.convert_checkpoint("cnn14_sed", FIXTURES / "cnn14_sed.zip.pth", weights,
                             build=panns.build_reference, log=lambda _: None)
    cfg = ModelConfig(name="cnn14_sed", weights=str(weights), normalization="none")
    model = build_model(cfg, FeatureConfig(**architectures.feature_settings("cnn14_sed")),
                        num_classes=5, num_samples=RATE)
    model.save(folder / "model.keras")
    return folder / "model.keras"


def _recording(path, seconds=3.3):
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * RATE)) / RATE
    x = 0.01 * rng.standard_normal(len(t))
    x += np.where((t > 1.0) & (t < 2.0), 0.5 * np.sin(2 * np.pi * 880 * t), 0.0)
    sf.write(path, x.astype(np.float32), RATE, subtype="FLOAT")
    return x.astype(np.float32)


def _csv_rows(folder, names):
    with open(folder / "windows.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][-len(names) - 1:] == ["output"] + names
    return rows[1:], np.array([[float(v) for v in r[-len(names):]] for r in rows[1:]])


def test_sed_timeline_is_per_step_and_averages_overlapping_windows(sed_keras, tmp_path):
    import keras

    from esc50tf.models.build import framewise_model
    from esc50tf.timeline import load_window_model, timeline

    model = load_window_model(sed_keras, sample_rate=RATE)
    assert model.step_samples == 32 * 320  # 32 frames of the 10 ms hop: 0.32 s
    x = _recording(tmp_path / "rec.wav")
    summary = timeline(model, tmp_path / "rec.wav", tmp_path / "tl", hop=0.5, progress=False)
    step = model.step_samples / RATE
    # A hop of half a window goes onto the steps' grid: 2 steps, finer rows.
    assert summary["output"] == "framewise" and summary["step"] == pytest.approx(step)
    assert summary["hop"] == pytest.approx(2 * step) and step < summary["hop"]
    doc = json.loads((tmp_path / "tl" / "timeline.json").read_text())
    assert doc["output"] == "framewise" and len(doc["windows"]) == summary["num_rows"]
    rows, probs = _csv_rows(tmp_path / "tl", model.class_names)
    assert {r[-len(model.class_names) - 1] for r in rows} == {"framewise"}
    starts = np.array([float(r[0]) for r in rows])
    ends = np.array([float(r[1]) for r in rows])
    n_steps = int(np.ceil(len(x) / model.step_samples))
    np.testing.assert_allclose(starts, np.arange(n_steps) * step, atol=1e-4)
    np.testing.assert_allclose(ends[:-1] - starts[:-1], step, atol=1e-4)
    assert ends[-1] == pytest.approx(len(x) / RATE, abs=1e-4)

    # The same numbers directly from the sub-model, window by window, averaged per step.
    keras_model = keras.models.load_model(sed_keras)
    sub, step_n = framewise_model(keras_model)
    hop_n = int(round(summary["hop"] * RATE))
    total = np.zeros((n_steps, len(model.class_names)))
    count = np.zeros(n_steps)
    window_starts = range(0, len(x), hop_n)
    for s in window_starts:
        w = np.zeros(RATE, np.float32)
        w[:len(x[s:s + RATE])] = x[s:s + RATE]
        per_step = np.asarray(sub.predict_on_batch(w[None]))[0]
        for j, p in enumerate(per_step):
            if s + j * step_n < len(x):
                total[s // step_n + j] += p
                count[s // step_n + j] += 1
        if s + RATE >= len(x):
            break
    assert count.min() >= 1 and count.max() == 2  # overlapping windows were averaged
    np.testing.assert_allclose(probs, total / count[:, None], atol=1e-5)

    # The sub-model is the classifier's own graph: softmax of the steps' max is its output.
    logits = keras.Model(keras_model.inputs, keras_model.get_layer("segment_logits").output)
    w = x[None, :RATE]
    z = np.asarray(logits.predict_on_batch(w))  # [1, steps, classes]
    np.testing.assert_allclose(np.asarray(sub.predict_on_batch(w)),
                               np.exp(z) / np.exp(z).sum(-1, keepdims=True), atol=1e-6)
    clip = np.exp(z.max(1)) / np.exp(z.max(1)).sum(-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(keras_model.predict_on_batch(w)), clip, atol=1e-6)


def test_a_model_without_frame_wise_outputs_gives_per_window_rows(tmp_path):
    import keras

    from esc50tf.timeline import load_window_model, timeline

    inputs = keras.Input((RATE,), name="waveform")
    h = keras.layers.Reshape((100, RATE // 100))(inputs)
    h = keras.layers.GlobalAveragePooling1D()(h)
    out = keras.layers.Dense(3, activation="softmax", name="predictions")(h)
    keras.Model(inputs, out).save(tmp_path / "plain.keras")
    model = load_window_model(tmp_path / "plain.keras", sample_rate=RATE)
    assert model.steps is None
    _recording(tmp_path / "rec.wav")
    summary = timeline(model, tmp_path / "rec.wav", tmp_path / "tl", hop=0.5, progress=False)
    assert summary["output"] == "window" and summary["step"] is None
    assert summary["hop"] == 0.5 and summary["num_rows"] == summary["num_windows"] == 6
    rows, _ = _csv_rows(tmp_path / "tl", model.class_names)
    assert [float(r[0]) for r in rows] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert {r[-4] for r in rows} == {"window"}
