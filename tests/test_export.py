"""esc50tf.export: SavedModel and TFLite exports with the front end inside.

The trained run (conftest.trained_run) is exported once per format in this
module; each export is then loaded with its runtime alone (TensorFlow's
`tf.saved_model.load`, LiteRT's interpreter) and compared with the run's
Keras model on the test clips.
"""

import json
import shutil

import numpy as np
import pytest

from esc50tf.errors import Esc50Error

from conftest import EXPORT_VARIANTS as VARIANTS


@pytest.fixture(scope="module")
def fold1_clips(trained_run):
    """The run's test clips, its Keras model's probabilities on them, and its accuracy."""
    import keras

    from esc50tf.data import splits
    from esc50tf.data.dataset import DatasetOptions, TFRecordFolder

    run, _, tfr = trained_run
    index = splits.load_index(tfr)
    split = splits.test_fold_split(index, 1)
    xs, ys = [], []
    for x, y in TFRecordFolder(tfr).dataset(split.test, DatasetOptions(batch_size=32)):
        xs.append(x.numpy())
        ys.append(y.numpy())
    x, y = np.concatenate(xs), np.concatenate(ys)
    model = keras.models.load_model(run / "fold1" / "model.keras")
    probs = np.asarray(model.predict(x, verbose=0), np.float64)
    accuracy = json.loads((run / "fold1" / "result.json").read_text())["accuracy"]
    return x, y, probs, accuracy


def _tflite_probs(path, x):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    probs = []
    for clip in x:  # one clip per call, as on a device
        interpreter.set_tensor(inp["index"], clip[None].astype(np.float32))
        interpreter.invoke()
        probs.append(interpreter.get_tensor(out["index"])[0].copy())
    return np.asarray(probs, np.float64), interpreter


def _ops(interpreter):
    return {d["op_name"] for d in interpreter._get_ops_details()}


@pytest.mark.slow
def test_fixture_model_is_trained(fold1_clips):
    x, y, probs, accuracy = fold1_clips
    assert len(x) == 60
    assert accuracy >= 0.75  # int8's "within 2 points" means something only for a real model
    assert np.mean(probs.argmax(1) == y) == pytest.approx(accuracy)


@pytest.mark.slow
def test_savedmodel_matches_keras_with_tensorflow_alone(exports, fold1_clips):
    import tensorflow as tf

    x, _, ref, _ = fold1_clips
    loaded = tf.saved_model.load(str(exports["savedmodel"] / "saved_model"))
    got = np.asarray(loaded.serve(tf.constant(x)), np.float64)
    assert np.abs(got - ref).max() <= 1e-5
    assert (got.argmax(1) == ref.argmax(1)).all()


@pytest.mark.slow
def test_float_tflite_parity_and_builtin_ops(exports, fold1_clips):
    x, _, ref, _ = fold1_clips
    got, interpreter = _tflite_probs(exports["float"] / "model.tflite", x)
    assert np.abs(got - ref).max() <= 1e-4
    assert (got.argmax(1) == ref.argmax(1)).all()
    ops = _ops(interpreter)
    assert "RFFT2D" in ops and "LOG" in ops  # the front end is inside
    assert not any(o.startswith("Flex") or o == "CUSTOM" for o in ops)


@pytest.mark.slow
def test_float16_tflite_parity(exports, fold1_clips):
    x, _, ref, _ = fold1_clips
    got, interpreter = _tflite_probs(exports["float16"] / "model.tflite", x)
    assert np.abs(got - ref).max() <= 1e-2
    assert "DEQUANTIZE" in _ops(interpreter)  # float16 weights, dequantized once


@pytest.mark.slow
def test_float16_front_end_constants_stay_float32(exports):
    """The classifier's constants are float16, the front end's float32 (no DEQUANTIZE)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(exports["float16"] / "model.tflite"))
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    dequantized = [tensors[op["outputs"][0]]["name"] for op in interpreter._get_ops_details()
                   if op["op_name"] == "DEQUANTIZE"]
    assert dequantized and not [n for n in dequantized if "/frontend" in n]
    assert any("classifier" in n for n in dequantized)


@pytest.mark.slow
def test_int8_tflite_agreement_and_accuracy(exports, fold1_clips):
    x, y, ref, accuracy = fold1_clips
    got, interpreter = _tflite_probs(exports["int8"] / "model.tflite", x)
    assert np.mean(got.argmax(1) == ref.argmax(1)) >= 0.95
    assert abs(np.mean(got.argmax(1) == y) - accuracy) <= 0.02 + 1e-9
    kinds = {}
    for d in interpreter._get_ops_details():
        dtype = interpreter._get_tensor_details(d["outputs"][0], 0)["dtype"]
        kinds.setdefault(d["op_name"], set()).add(np.dtype(dtype).name)
    assert kinds["CONV_2D"] == {"int8"}  # the classifier runs in int8
    assert kinds["RFFT2D"] == {"complex64"} and kinds["LOG"] == {"float32"}  # front end float
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    assert not any(o.startswith("Flex") or o == "CUSTOM" for o in kinds)


@pytest.mark.slow
def test_sizes_shrink_with_quantization(exports):
    sizes = {n: (exports[n] / "model.tflite").stat().st_size for n in ("float", "float16", "int8")}
    assert sizes["int8"] < sizes["float16"] < sizes["float"]
    assert sizes["float16"] < 0.6 * sizes["float"]


@pytest.mark.slow
def test_model_card_and_labels(exports, trained_run, fold1_clips):
    from esc50tf.data import splits

    run, _, tfr = trained_run
    classes = [c["category"] for c in json.loads((run / "classes.json").read_text())]
    _, _, _, accuracy = fold1_clips
    for name, (fmt, quantize) in VARIANTS.items():
        folder = exports[name]
        card = json.loads((folder / "model_card.json").read_text())
        assert (folder / "labels.txt").read_text().splitlines() == classes
        assert card["classes"] == classes and card["format"] == fmt
        assert card["quantization"] == quantize
        assert card["input"]["sample_rate"] == 16000 and card["input"]["shape"] == [None, 16000]
        assert card["front_end"]["kind"] == "mel" and card["front_end"]["inside_model"]
        assert card["source_run"]["accuracy"] == pytest.approx(accuracy)
        assert card["training"]["protocol"] == "test-fold"
        path = folder / card["file"]
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        size = sum(p.stat().st_size for p in files)
        assert card["size_bytes"] == size
        parity = card["parity"]
        assert parity["clips"] == 60
        limit = {"savedmodel": 1e-5, "float": 1e-4, "float16": 1e-2, "int8": 1.0}[name]
        assert parity["max_abs_prob_diff"] <= limit
        assert parity["accuracy_reference"] == pytest.approx(accuracy)
        assert not list(folder.parent.glob(".*staging*"))
    calib = json.loads((exports["int8"] / "model_card.json").read_text())["calibration"]
    index = splits.load_index(tfr)
    split = splits.test_fold_split(index, 1)
    train_side = set(split.train.rows(index)["filename"])
    held = set(split.test.rows(index)["filename"]) | set(split.val.rows(index)["filename"])
    assert calib["clips"] == len(calib["filenames"]) == min(200, len(train_side))
    assert set(calib["filenames"]) <= train_side and not set(calib["filenames"]) & held


@pytest.mark.parametrize("kind", ["stft", "mel", "mfcc"])
@pytest.mark.parametrize("n_fft", [400, 512])
def test_matmul_stft_equals_the_fft_front_end(kind, n_fft):
    from esc50tf.frontend import FeatureConfig, build_frontend

    x = (0.3 * np.random.default_rng(n_fft).standard_normal((2, 8000))).astype(np.float32)
    config = FeatureConfig(kind=kind, sample_rate=16000, n_fft=n_fft, hop_length=160, n_mels=40,
                           deltas=1 if kind == "mfcc" else 0)
    fft = np.asarray(build_frontend(config)(x))
    matmul_layer = build_frontend(config, stft_impl="matmul")
    matmul = np.asarray(matmul_layer(x))
    assert fft.shape == matmul.shape
    assert np.abs(fft - matmul).max() <= (2e-3 if kind == "stft" else 5e-5)  # dB
    restored = type(matmul_layer).from_config(matmul_layer.get_config())
    assert restored.stft_impl == "matmul"


@pytest.mark.slow
def test_non_power_of_two_fft_exports_to_builtin_tflite(tmp_path):
    """RFFT2D takes powers of two only: n_fft=400 gets the DFT convolution instead."""
    from esc50tf.augment import AugmentConfig
    from esc50tf.export import build_export_model, convert_tflite, write_savedmodel
    from esc50tf.frontend import FeatureConfig
    from esc50tf.models import ModelConfig
    from esc50tf.models.build import build_model
    from esc50tf.tasks import get_task

    features = FeatureConfig(kind="mel", sample_rate=8000, n_fft=400, hop_length=160, n_mels=32)
    model = build_model(ModelConfig(name="cnn_small"), features, 3, 8000, AugmentConfig())
    exported = build_export_model([model])
    assert exported.get_layer("frontend").stft_impl == "matmul"
    content = convert_tflite(write_savedmodel(exported, tmp_path / "sm", get_task("cnn_small")))
    (tmp_path / "m.tflite").write_bytes(content)
    x = (0.2 * np.random.default_rng(0).standard_normal((4, 8000))).astype(np.float32)
    got, interpreter = _tflite_probs(tmp_path / "m.tflite", x)
    assert np.abs(got - model.predict(x, verbose=0)).max() <= 1e-4
    ops = _ops(interpreter)
    assert "RFFT2D" not in ops and "CONV_2D" in ops


# --- bad input ---------------------------------------------------------------------------


def _export(run, out, **kwargs):
    from esc50tf.export import ExportConfig, export_run

    return export_run(run, ExportConfig(out=str(out), **kwargs), log=lambda _: None)


@pytest.mark.slow
def test_run_without_a_model(trained_run, tmp_path):
    run, _, _ = trained_run
    empty = tmp_path / "run"
    empty.mkdir()
    shutil.copy(run / "config.json", empty / "config.json")
    (empty / "fold1").mkdir()
    with pytest.raises(Esc50Error, match="no split has a model.keras"):
        _export(empty, tmp_path / "out")
    with pytest.raises(Esc50Error, match="no config.json"):
        _export(empty / "fold1", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_scikit_learn_run_cannot_be_exported(tiny_tfrecords, tmp_path):
    from esc50tf.run_config import resolve_config
    from esc50tf.train import train

    cfg = resolve_config("knn", overrides={"train": {
        "protocol": "test-fold", "test_fold": 1, "data": str(tiny_tfrecords),
        "out": str(tmp_path / "knn")}, "features": {"n_fft": 256, "hop_length": 128,
                                                    "n_mels": 32}})
    train(cfg, verbose=0)
    with pytest.raises(Esc50Error, match="scikit-learn run"):
        _export(tmp_path / "knn", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_bad_settings(trained_run, tmp_path):
    from esc50tf.export import ExportConfig

    run, _, _ = trained_run
    with pytest.raises(Esc50Error, match="applies to --format tflite only"):
        ExportConfig(out="x", format="savedmodel", quantize="int8")
    with pytest.raises(Esc50Error, match="format 'onnx'"):
        ExportConfig(out="x", format="onnx")
    with pytest.raises(Esc50Error, match="no such trained split.*fold1"):
        _export(run, tmp_path / "out", split="fold3")
    (tmp_path / "taken").mkdir()
    with pytest.raises(Esc50Error, match="already exists"):
        _export(run, tmp_path / "taken")


@pytest.mark.slow
def test_int8_without_calibration_data(trained_run, tmp_path):
    run, _, _ = trained_run
    with pytest.raises(Esc50Error, match="int8 calibration needs the run's training clips.*"
                                         "nowhere"):
        _export(run, tmp_path / "out", quantize="int8", data=str(tmp_path / "nowhere"))
    with pytest.raises(Esc50Error, match="parity check needs"):
        _export(run, tmp_path / "out", data=str(tmp_path / "nowhere"))
    assert list(tmp_path.iterdir()) == []


def test_cross_validation_average_has_no_calibration_clips(tiny_tfrecords):
    from esc50tf.data import splits
    from esc50tf.data.splits import calibration_set

    index = splits.load_index(tiny_tfrecords)
    with pytest.raises(Esc50Error, match="share none.*--split"):
        calibration_set(index, splits.cv_splits(index), 100)
    one = splits.test_fold_split(index, 2)
    names = calibration_set(index, [one], 5, seed=1)
    assert len(names) == 5 and set(names) <= set(one.train.rows(index)["filename"])


@pytest.mark.slow
def test_failed_conversion_leaves_nothing(trained_run, tmp_path, monkeypatch):
    from esc50tf import export

    def broken(*args, **kwargs):
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(export, "convert_tflite", broken)
    run, _, _ = trained_run
    with pytest.raises(Esc50Error, match="TFLite conversion failed.*exploded"):
        _export(run, tmp_path / "out", parity=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_average_of_splits_shares_one_front_end(trained_run, fold1_clips):
    """Several splits: one front end feeding each classifier, probabilities averaged."""
    import keras

    from esc50tf.export import build_export_model, keras_reference

    run, _, _ = trained_run
    x = fold1_clips[0][:8]
    a = keras.models.load_model(run / "fold1" / "model.keras")
    b = keras.models.load_model(run / "fold1" / "model.keras")
    dense = b.get_layer("predictions")
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * 0.5, bias + np.linspace(-1, 1, len(bias))])  # another "split"
    assert np.abs(a.predict(x, verbose=0) - b.predict(x, verbose=0)).max() > 1e-2
    model = build_export_model([a, b])
    assert len([l for l in model.layers if l.name == "frontend"]) == 1
    assert np.abs(model.predict(x, verbose=0) - keras_reference([a, b], x)).max() <= 1e-5
    c = keras.models.load_model(run / "fold1" / "model.keras")
    c.get_layer("frontend").hop_length = 128  # a different front end cannot be shared
    with pytest.raises(Esc50Error, match="different front ends"):
        build_export_model([a, c])


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["float", "float16", "int8"])
def test_every_tflite_export_is_right_on_silent_padded_and_clipped_clips(exports, fold1_clips,
                                                                         trained_run, variant):
    """Digital silence (all zeros, half zeros, 7/8 zeros), a near-silent hiss and a clip driven
    into clipping: every TFLite variant gives finite probabilities close to the Keras model's.
    A DC offset and a pure tone too, whose empty bins only a float32 window keeps at the
    floor. (Before, float16 gave all-NaN on any input with silence and max |dp| 0.42 on a
    constant input.)"""
    from esc50tf.exported import edge_clips

    x, _, _, _ = fold1_clips
    clips = edge_clips(x.shape[1], x[0])
    clips["test_clip_padded_3_4"] = np.concatenate([x[1][:x.shape[1] // 4],
                                                    np.zeros(x.shape[1] - x.shape[1] // 4)])
    batch = np.stack(list(clips.values())).astype(np.float32)
    import keras

    run, _, _ = trained_run
    model = keras.models.load_model(run / "fold1" / "model.keras")
    ref = np.asarray(model.predict(batch, verbose=0), np.float64)
    got, _ = _tflite_probs(exports[variant] / "model.tflite", batch)
    assert np.isfinite(got).all()
    tolerance = {"float": 1e-4, "float16": 2e-2, "int8": 0.25}[variant]
    assert np.abs(got - ref).max() <= tolerance, dict(zip(clips, np.abs(got - ref).max(1)))
    card = json.loads((exports[variant] / "model_card.json").read_text())
    assert set(card["edge_cases"]) == {"silent", "near_silent", "clipped", "zero_padded_half",
                                       "zero_padded_7_8", "dc_offset", "tone"}
    assert all(e["finite"] for e in card["edge_cases"].values())


def test_float16_rounding_keeps_the_log_floor_of_every_front_end():
    """The constants a float16 export rounds (the log's floor and offsets) stay non-zero, and
    the layer's features of silence are the floor librosa gives (-100 dB, ln 1e-6)."""
    from esc50tf.frontend.spectrogram import MelSpectrogram, Spectrogram

    silence = np.zeros((1, 4000), np.float32)
    for layer, floor in [(MelSpectrogram(sample_rate=8000, n_fft=256, hop_length=64, n_mels=16),
                          -100.0),
                         (Spectrogram(n_fft=256, hop_length=64, power=1.0), -100.0),
                         (Spectrogram(n_fft=256, hop_length=64, log="ln"), np.log(1e-6))]:
        out = np.asarray(layer(silence))
        np.testing.assert_allclose(out, floor, atol=1e-3)
    from esc50tf.frontend.filters import AMIN
    from esc50tf.frontend.spectrogram import LOG_GAIN_BITS

    assert np.float16(AMIN) == 0  # why the gain is there
    assert np.float16(AMIN * 2.0 ** (2 * LOG_GAIN_BITS)) > 0.1
    assert np.isfinite(np.float16(2.0 ** LOG_GAIN_BITS))


def test_parity_check_refuses_non_finite_and_low_agreement():
    from esc50tf.exported import check_parity

    ok = {"silent": {"finite": True}}
    check_parity({"clips": 10, "non_finite_clips": 0, "max_abs_prob_diff": 0.01,
                  "top1_agreement": 0.9}, ok, 0.9)
    with pytest.raises(Esc50Error, match="non-finite probabilities on silent"):
        check_parity(None, {"silent": {"finite": False}}, 0.9)
    with pytest.raises(Esc50Error, match="non-finite probabilities on 3 of 10 test clips"):
        check_parity({"clips": 10, "non_finite_clips": 3, "max_abs_prob_diff": float("nan"),
                      "top1_agreement": 0.7}, ok, 0.5)
    with pytest.raises(Esc50Error, match=r"70\.0% of 10 test clips, below --min-agreement 0\.9"):
        check_parity({"clips": 10, "non_finite_clips": 0, "max_abs_prob_diff": 0.5,
                      "top1_agreement": 0.7}, ok, 0.9)


@pytest.mark.slow
def test_export_below_the_agreement_threshold_fails_and_leaves_nothing(trained_run, tmp_path,
                                                                       monkeypatch, capsys):
    """A model whose top class is another than the Keras model's (probabilities rolled by one
    class) agrees on 0% of the test clips: export exits 1 and writes nothing, and passes with
    --min-agreement 0."""
    from esc50tf import cli, exported

    real = exported.TFLiteRunner.__call__
    monkeypatch.setattr(exported.TFLiteRunner, "__call__",
                        lambda self, batch: np.roll(real(self, batch), 1, axis=1))
    run, _, _ = trained_run
    out = tmp_path / "rolled"
    assert cli.main(["export", str(run), "--out", str(out)]) == 1
    assert "below --min-agreement 0.9; nothing is written" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    assert cli.main(["export", str(run), "--out", str(out), "--min-agreement", "0"]) == 0
    assert json.loads((out / "model_card.json").read_text())["parity"]["min_agreement"] == 0


@pytest.mark.slow
def test_export_with_nan_outputs_fails_and_leaves_nothing(trained_run, tmp_path, monkeypatch,
                                                          capsys):
    """An export whose model gives NaN (as float16 did on silence) exits 1, writes nothing."""
    from esc50tf import cli, exported

    real = exported.TFLiteRunner.__call__

    def nan_on_silence(self, batch):
        out = real(self, batch)
        out[~np.asarray(batch).any(axis=1)] = np.nan
        return out

    monkeypatch.setattr(exported.TFLiteRunner, "__call__", nan_on_silence)
    run, _, _ = trained_run
    out = tmp_path / "f16"
    assert cli.main(["export", str(run), "--quantize", "float16", "--out", str(out)]) == 1
    assert "non-finite probabilities on silent" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_predict_reads_export_folders_for_single_clips(exports, trained_run, tmp_path, capsys):
    """`predict EXPORT clip.wav` (no --timeline) gives the Keras run's top class."""
    import soundfile as sf

    from esc50tf import cli

    run, esc50, _ = trained_run
    wav = sorted((esc50 / "audio").glob("1-*.wav"))[0]
    assert cli.main(["predict", str(run), str(wav), "--json"]) == 0
    want = json.loads(capsys.readouterr().out)["results"][0]["top"][0]["class"]
    for variant in ("float", "float16", "savedmodel"):
        assert cli.main(["predict", str(exports[variant]), str(wav), "--json"]) == 0
        got = json.loads(capsys.readouterr().out)["results"][0]["top"]
        assert got[0]["class"] == want and np.isfinite(got[0]["probability"])
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000), 16000)
    assert cli.main(["predict", str(exports["float16"] / "model.tflite"), str(silent),
                     "--json"]) == 0
    top = json.loads(capsys.readouterr().out)["results"][0]["top"]
    assert all(np.isfinite(t["probability"]) for t in top)


def test_predict_names_every_kind_of_model_it_reads(tmp_path):
    from esc50tf.predict import load_predictor

    with pytest.raises(Esc50Error, match="no model_card.json \\(an export folder\\)"):
        load_predictor(tmp_path)


@pytest.mark.slow
def test_timeline_refuses_non_finite_probabilities(exports, trained_run, tmp_path,
                                                   monkeypatch, capsys):
    """A model giving NaN leaves no timeline (timeline.json would not be valid JSON)."""
    from esc50tf import exported
    from esc50tf.timeline import run_timelines

    _, esc50, _ = trained_run
    wav = sorted((esc50 / "audio").glob("1-*.wav"))[0]
    monkeypatch.setattr(exported.TFLiteRunner, "__call__",
                        lambda self, batch: np.full((len(batch), 10), np.nan))
    assert run_timelines(exports["float"], [wav], tmp_path / "tl", progress=False) == 1
    assert "non-finite probabilities for the window at 0.00 s" in capsys.readouterr().err
    assert not (tmp_path / "tl" / wav.stem).exists()
