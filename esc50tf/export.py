"""`esc50tf export`: a trained run as one deployable model, front end inside.

    RUN (one .keras per split) -> the exported graph:
    waveform [batch, num_samples] float32 at the run's sample rate
    -> the run's front end (STFT / log-Mel / MFCC)               [batch, frames, bins]
    -> each exported split's classifier (normalisation .. softmax) [batch, classes]
    -> their average (one split: itself)

The front end is computed once and feeds every split's classifier (all
splits of a run share its feature configuration). With a power-of-two
`n_fft` it is the training layer itself (framing + RFFT, TFLite's builtin
RFFT2D); otherwise the STFT is rewritten as a strided convolution by the
windowed DFT basis (`stft_impl="matmul"`, equal within float32 rounding),
because RFFT2D takes powers of two only. Only builtin TFLite ops are allowed
(no Flex / Select TF ops); the export checks the op list of what it wrote.

Formats: `savedmodel` (the `serve` endpoint of a TF SavedModel) and `tflite`
with `--quantize none | float16 | int8`. `float16` stores the classifier's weights in
float16 and keeps the front end's constants (window, Mel filterbank, DFT basis)
in float32 (`frontend_in_float32`): rounded to float16 they gave NaN on
silence and wrong features of tones. `int8` is post-training integer quantization calibrated on clips from
the training side of the exported split(s) only (never a test or validation
clip; the chosen clips are listed in the model card): every op of the
classifier runs in int8, while the front end (whose power spectrum spans far
more than 8 bits and whose RFFT2D and LOG have no int8 kernels) and the
model's float32 input and output stay float.

The export folder holds the model (`saved_model/` or `model.tflite`),
`labels.txt` and `model_card.json` (classes, rate, input length, front end,
training data and protocol, accuracy of the source run, format, size,
quantization, calibration set, op list and parity figures measured on the test
clips of the exported split(s) against the run's Keras models). It is written
to a staging folder next to `--out` and moved into place when complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import shutil
import time
from pathlib import Path

import numpy as np

from esc50tf.config import Config, setting
from esc50tf.errors import Esc50Error
from esc50tf.exported import (CARD, check_parity, edge_clips, edge_parity, interpreter_of,
                              measure_parity, runner_for)
from esc50tf.io import atomic_dir, dumps_json
from esc50tf.io import log as _log  # `log` is the name of a parameter here
from esc50tf.lock import holds_lock

FORMATS = ("savedmodel", "tflite")
QUANTIZATIONS = ("none", "float16", "int8")
LABELS = "labels.txt"
TFLITE_FILE = "model.tflite"
SAVEDMODEL_DIR = "saved_model"
# Name scope of the front end's ops in the converted graph (its layer name).
FRONTEND = "frontend"


@dataclasses.dataclass(frozen=True)
class ExportConfig(Config):
    """What `export_run` writes.

    Args:
        out: str. The export folder (must not exist unless `overwrite`).
        format: str. "savedmodel" or "tflite".
        quantize: str. "none", "float16" or "int8" (TFLite only).
        split: str or None. Export this split's model (e.g. "fold1", or 1 for
            "fold1"); None exports the average of every split. Defaults to None.
        data: str or None. The run's TFRecord folder when it has moved; None
            reads it from the run's config.json.
        calibration_clips: int. At most this many training-side clips calibrate
            int8. Defaults to 200.
        parity: bool. Measure parity on the test clips (needs the TFRecords).
            The edge-case clips (`edge_clips`: silent, near-silent, clipped,
            zero-padded) are compared always. Defaults to True.
        min_agreement: float. The export fails (nothing is written) when the
            top-1 agreement with the Keras model on the test clips is below
            this, or any output is not finite. Defaults to 0.9.
        overwrite: bool. Replace an existing `out`. Defaults to False.
        seed: int. Seeds the choice of calibration clips. Defaults to 0.
    """

    out: str
    format: str = setting("tflite", flag="--format", choices=FORMATS, help="model format")
    quantize: str = setting(
        "none", flag="--quantize", choices=QUANTIZATIONS,
        help="TFLite only: float16 weights, or int8 post-training quantization calibrated on "
        "training-side clips")
    split: str | None = setting(
        None, flag="--split", help="export this split's model (e.g. fold1, or 1) instead of "
        "the average")
    data: str | None = setting(
        None, flag="--data", help="the run's TFRecord folder, or a folder holding it, if it "
        "moved (default: from the run's config)")
    calibration_clips: int = setting(200, flag="--calibration-clips", type="positive_int",
                                     help="int8: at most this many training-side clips")
    parity: bool = True
    min_agreement: float = setting(
        0.9, flag="--min-agreement", type="fraction",
        help="fail (writing nothing) below this top-1 agreement with the Keras model on the "
        "test clips, or on any non-finite output")
    overwrite: bool = setting(False, flag="--overwrite", action="store_const",
                              help="replace an existing OUT")
    seed: int = setting(0, flag="--seed", type=int, help="picks the calibration clips")

    def __post_init__(self):
        if self.format not in FORMATS:
            raise Esc50Error(f"format {self.format!r} is not allowed; "
                             f"allowed: {', '.join(FORMATS)}")
        if self.quantize not in QUANTIZATIONS:
            raise Esc50Error(f"quantize {self.quantize!r} is not allowed; "
                             f"allowed: {', '.join(QUANTIZATIONS)}")
        if self.format == "savedmodel" and self.quantize != "none":
            raise Esc50Error(f"--quantize {self.quantize} applies to --format tflite only; "
                             "a SavedModel is exported in float32")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise Esc50Error(f"min_agreement {self.min_agreement!r} is not allowed; "
                             "allowed: a fraction in [0, 1]")
        if not isinstance(self.calibration_clips, int) or self.calibration_clips < 1:
            raise Esc50Error(f"calibration_clips {self.calibration_clips!r} is not allowed; "
                             "allowed: an integer >= 1")


# --- reading a run -----------------------------------------------------------------------


@dataclasses.dataclass
class _Run:
    path: Path
    task: object  # the tasks.Task of its model: finds, loads and exports its split models
    config: object  # run_config.RunConfig
    config_dict: dict
    split_names: list
    class_names: list
    report: dict | None


def read_run(run, split=None):
    """Reads RUN's configuration and picks the split folders to export.

    Raises:
        Esc50Error: not a run folder, a scikit-learn run, no trained model, or
            an unknown split.
    """
    from esc50tf import models, tasks
    from esc50tf.run_config import RunConfig

    path = Path(run)
    cfg_path = path / "config.json"
    if not path.is_dir():
        raise Esc50Error(f"{path}: no such run folder")
    if not cfg_path.is_file():
        raise Esc50Error(f"{path}: no config.json; is it an esc50tf run folder?")
    try:
        config_dict = json.loads(cfg_path.read_text())
        config = RunConfig.from_dict(config_dict)
    except (ValueError, TypeError) as err:
        raise Esc50Error(f"{cfg_path}: not a valid run configuration ({err})") from None
    spec = models.get(config.model.name)
    if not spec.keras:
        raise Esc50Error(f"{path}: a scikit-learn run ({spec.name}); only Keras runs export to "
                         f"{' or '.join(FORMATS)}")
    task = tasks.get_task(spec)
    trained = sorted(d.name for d in path.iterdir() if d.is_dir() and task.saved_model(d))
    if not trained:
        raise Esc50Error(f"{path}: no split has a {task.MODEL_FILE} yet (unfinished run?)")
    if split is not None:
        name = str(split)
        if name not in trained and f"fold{name}" in trained:
            name = f"fold{name}"
        if name not in trained:
            raise Esc50Error(f"--split {split!r}: no such trained split in {path}; "
                             f"trained: {', '.join(trained)}")
        trained = [name]
    classes_path = path / "classes.json"
    class_names = None
    if classes_path.is_file():
        class_names = [c["category"] for c in json.loads(classes_path.read_text())]
    report_path = path / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else None
    return _Run(path, task, config, config_dict, trained, class_names, report)


def load_models(run):
    """The saved model of each chosen split, in `run.split_names` order (through its task)."""
    return [run.task.load(run.task.saved_model(run.path / name)) for name in run.split_names]


# --- the export graph --------------------------------------------------------------------


def _power_of_two(n):
    return n > 0 and n & (n - 1) == 0


def export_frontend(frontend):
    """The front end for export: the layer itself, or its DFT-as-convolution twin.

    TFLite's builtin RFFT2D takes power-of-two lengths only; any other
    `n_fft` gets the same layer with `stft_impl="matmul"` (same constants,
    same numbers within float32 rounding).
    """
    if _power_of_two(frontend.n_fft) or frontend.stft_impl == "matmul":
        return frontend
    config = dict(frontend.get_config(), stft_impl="matmul", name=FRONTEND)
    return type(frontend).from_config(config)


def build_export_model(models):
    """One Keras model: waveform -> shared front end -> each classifier -> average.

    Args:
        models: list of keras.Model, each with a layer named "frontend", all
            with the same front-end configuration and input length.
    """
    import keras

    first = models[0].get_layer(FRONTEND)
    config = first.get_config()
    for m in models[1:]:
        other = m.get_layer(FRONTEND).get_config()
        if {k: v for k, v in other.items() if k != "name"} != {
                k: v for k, v in config.items() if k != "name"}:
            raise Esc50Error("the run's split models have different front ends; "
                             "export one split with --split")
    num_samples = int(models[0].input_shape[-1])
    waveform = keras.Input((num_samples,), name="waveform", dtype="float32")
    features = export_frontend(first)(waveform)  # [batch, frames, bins]
    outputs = []
    for i, m in enumerate(models):
        frontend = m.get_layer(FRONTEND)
        classifier = keras.Model(frontend.output, m.output, name=f"classifier_{i}")
        outputs.append(classifier(features))
    probs = outputs[0] if len(outputs) == 1 else keras.layers.Average(name="average")(outputs)
    return keras.Model(waveform, probs, name=f"{models[0].name}_export")


def keras_reference(models, batch):
    """The run's own prediction: the mean of its models' probabilities."""
    return np.mean([np.asarray(m.predict_on_batch(batch), np.float64) for m in models], axis=0)


def write_savedmodel(model, path, task):
    """A TF SavedModel whose `serve` endpoint maps waveforms to probabilities (`task.export`)."""
    task.export(model, path)
    return Path(path)


def tflite_ops(model_content):
    """Sorted names of the operators in a TFLite flatbuffer (LiteRT's interpreter)."""
    interpreter = interpreter_of(model_content=model_content)
    return sorted({d["op_name"] for d in interpreter._get_ops_details()})


def convert_tflite(saved_model_dir, quantize="none", representative=None):
    """Converts a SavedModel to TFLite with builtin ops only.

    Args:
        saved_model_dir: path. From `write_savedmodel`.
        quantize: "none", "float16" or "int8".
        representative: for int8, a callable returning an iterator of
            `[waveform [1, num_samples] float32]` (training-side clips).

    Returns:
        The flatbuffer as bytes.
    """
    import tensorflow as tf

    def converter():
        c = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return c

    with _quiet():
        float_model = converter().convert()
        if quantize == "none":
            return float_model
        c = converter()
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            c.target_spec.supported_types = [tf.float16]
            return frontend_in_float32(c.convert(), float_model)
        # int8: everything after the front end. The front end's tensors are kept
        # float by name (they sit in the layer's name scope).
        c.representative_dataset = representative
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                       tf.lite.OpsSet.TFLITE_BUILTINS]
        interpreter = interpreter_of(model_content=float_model)
        front = sorted({
            interpreter._get_tensor_details(i, 0)["name"]
            for op in interpreter._get_ops_details() for i in op["outputs"]
            if f"/{FRONTEND}" in interpreter._get_tensor_details(i, 0)["name"]
        })
        options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=front)
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=c, debug_dataset=representative, debug_options=options)
        return debugger.get_nondebug_quantized_model()


def frontend_in_float32(model_content, float_content):
    """A float16-weight flatbuffer with the front end's constants put back in float32.

    The float16 converter rounds every constant, the front end's too: the
    Hann window then leaks -66 dB side lobes, which lift the empty bins of a
    tone or a DC offset from the -100 dB floor by 40 dB or more (max |dp|
    0.42 on a constant input). Each DEQUANTIZE of a front-end constant
    (window, Mel filterbank, DFT basis, scalars; tensors in the front end's
    name scope) is dropped and its output becomes that constant in float32,
    taken from the float32 conversion of the same SavedModel by tensor name.
    The classifier keeps its float16 weights.

    Args:
        model_content: bytes. The float16 conversion.
        float_content: bytes. The float32 conversion of the same SavedModel.

    Returns:
        The flatbuffer as bytes.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_content))
    reference = flatbuffer_utils.read_model_from_bytearray(bytearray(float_content))
    originals = {t.name: reference.buffers[t.buffer].data
                 for t in reference.subgraphs[0].tensors
                 if t.buffer and reference.buffers[t.buffer].data is not None}
    dequantize = {i for i, code in enumerate(model.operatorCodes)
                  if max(code.builtinCode, code.deprecatedBuiltinCode)
                  == schema.BuiltinOperator.DEQUANTIZE}
    scope = f"/{FRONTEND}".encode()
    for graph in model.subgraphs:
        kept = []
        for op in graph.operators:
            if op.opcodeIndex in dequantize:
                src, dst = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
                if scope in src.name and src.name in originals:
                    # The float16 tensor's buffer now holds the float32 values, for the
                    # DEQUANTIZE's output; buffer 0 is the schema's empty buffer.
                    model.buffers[src.buffer].data = originals[src.name]
                    dst.buffer, src.buffer = src.buffer, 0
                    continue
            kept.append(op)
        graph.operators = kept
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


@contextlib.contextmanager
def _quiet():
    import warnings

    from esc50tf.startup import quiet_native

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), quiet_native():
        # The quantization debugger builds a tf.lite.Interpreter internally.
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        yield


# --- clips from the run's TFRecords ------------------------------------------------------


def _data_dir(run, cfg):
    from esc50tf.data.dataset import locate_tfrecords

    identity = ((run.report or {}).get("dataset") or {}).get("identity")
    found = locate_tfrecords(run.config.train.data, cfg.data, identity)
    return None if found is None else Path(found)


def _run_splits(run, folder):
    from esc50tf.data import splits

    data, index = folder.path, folder.index
    chosen = {s.name: s for s in splits.protocol_splits(run.config.train, index)}
    missing = [n for n in run.split_names if n not in chosen]
    if missing:
        raise Esc50Error(f"{data}: the run's protocol has no split(s) {', '.join(missing)}; "
                         "is it the run's TFRecord folder?")
    return index, [chosen[n] for n in run.split_names]


def _clips(folder, folds_and_names):
    """Yields `(waveform [samples] float32, label, filename)` of the named clips."""
    from esc50tf.data.dataset import DatasetOptions
    from esc50tf.data.splits import Selection

    folds, names = folds_and_names
    ds = folder.dataset(Selection(tuple(sorted(folds)), frozenset(names)),
                        DatasetOptions(batch_size=32, with_metadata=True, cache=False))
    for x, y, meta in ds:
        for wave, label, name in zip(x.numpy(), y.numpy(), meta["filename"].numpy()):
            yield wave.astype(np.float32), int(label), name.decode()


def _folds_of(index, names):
    rows = index[index["filename"].isin(set(names))]
    return set(int(f) for f in rows["fold"]), list(names)


# --- the command -------------------------------------------------------------------------


def _source_accuracy(run):
    accs = []
    for name in run.split_names:
        f = run.path / name / "result.json"
        if f.is_file():
            accs.append(json.loads(f.read_text())["accuracy"])
    return float(np.mean(accs)) if len(accs) == len(run.split_names) else None


def _folder_size(path):
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@holds_lock("export", lambda run_path, cfg, *a, **k: cfg.out)
def export_run(run_path, cfg, log=_log):
    """Exports RUN per `cfg` (an ExportConfig); returns the model card dict."""
    import esc50tf
    from esc50tf.data.dataset import TFRecordFolder
    from esc50tf.data.splits import calibration_set

    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise Esc50Error(f"{out}: already exists; choose another --out or pass --overwrite")
    run = read_run(run_path, cfg.split)
    data = _data_dir(run, cfg)
    where = cfg.data or run.config.train.data
    if cfg.quantize == "int8" and data is None:
        raise Esc50Error(f"int8 calibration needs the run's training clips, but {where} holds "
                         "no TFRecords (manifest.json); pass --data DIR with the run's TFRecords")
    if cfg.parity and data is None:
        raise Esc50Error(f"the parity check needs the run's test clips, but {where} holds no "
                         "TFRecords (manifest.json); pass --data DIR, or --skip-parity")
    index = splits_ = folder = None
    if data is not None:
        folder = TFRecordFolder(data)
        index, splits_ = _run_splits(run, folder)
    calib_names = None
    if cfg.quantize == "int8":
        calib_names = calibration_set(index, splits_, cfg.calibration_clips, cfg.seed)
    log(f"export: loading {len(run.split_names)} split model(s) of {run.path}: "
        f"{', '.join(run.split_names)}")
    models = load_models(run)
    class_names = run.class_names or [str(i) for i in range(models[0].output_shape[-1])]
    model = build_export_model(models)
    frontend = model.get_layer(FRONTEND)
    num_samples = int(model.input_shape[-1])
    rate = int(run.config.features.sample_rate)
    with atomic_dir(out, overwrite=cfg.overwrite) as staging:
        t0 = time.perf_counter()
        if cfg.format == "savedmodel":
            log(f"export: writing a SavedModel into {out}")
            file_name = SAVEDMODEL_DIR
            write_savedmodel(model, staging / SAVEDMODEL_DIR, run.task)
            ops = None
        else:
            file_name = TFLITE_FILE
            tmp_sm = write_savedmodel(model, staging / ".saved_model", run.task)
            representative = None
            if calib_names is not None:
                log(f"export: calibrating int8 on {len(calib_names)} training-side clips")
                calib_waves = [w for w, _, _ in _clips(folder, _folds_of(index, calib_names))]
                # Digital silence and zero-padded stretches (common in ESC-50) put the
                # front end's output at its floor: the ranges must reach it.
                calib_waves += list(edge_clips(num_samples, calib_waves[0], cfg.seed).values())

                def representative():
                    for w in calib_waves:
                        yield [w[None]]

            log(f"export: converting to TFLite ({cfg.quantize}), builtin ops only")
            try:
                content = convert_tflite(tmp_sm, cfg.quantize, representative)
            except Exception as err:  # noqa: BLE001 - the converter raises many types
                raise Esc50Error(f"{run.path}: TFLite conversion failed ({err})") from None
            shutil.rmtree(tmp_sm)
            ops = tflite_ops(content)
            custom = [o for o in ops if o.startswith("Flex") or o == "CUSTOM"]
            if custom:
                raise Esc50Error(f"{run.path}: the TFLite model needs non-builtin ops "
                                 f"{', '.join(custom)}")
            (staging / TFLITE_FILE).write_bytes(content)
        convert_seconds = time.perf_counter() - t0
        (staging / LABELS).write_text("".join(f"{c}\n" for c in class_names))
        parity = None
        runner = runner_for(staging / file_name)
        first_clip = None
        if cfg.parity:
            log("export: measuring parity with the run's Keras model(s) on their test clips")
            names = sorted(set().union(*(set(s.test.rows(index)["filename"]) for s in splits_)))
            clips = list(_clips(folder, _folds_of(index, names)))
            waves = [w for w, _, _ in clips]
            labels = [y for _, y, _ in clips]
            first_clip = waves[0] if waves else None
            parity = measure_parity(lambda b: keras_reference(models, b), runner, waves, labels)
            parity["clips_from"] = ("test side of " + ", ".join(run.split_names)
                                    + (" (each clip was seen in training by the other splits' "
                                       "models: compare parity, not accuracy)"
                                       if len(splits_) > 1 else ""))
        edges = edge_parity(lambda b: keras_reference(models, b), runner,
                            edge_clips(num_samples, first_clip, cfg.seed))
        check_parity(parity, edges, cfg.min_agreement)
        if parity is not None:
            parity["min_agreement"] = cfg.min_agreement
        card = _card(run, cfg, class_names, rate, num_samples, frontend, file_name,
                     _folder_size(staging / file_name), ops, parity, calib_names, models,
                     convert_seconds, esc50tf.__version__)
        card["edge_cases"] = edges
        (staging / CARD).write_text(dumps_json(card) + "\n")
    msg = f"export: {out}/{file_name} ({card['size_bytes'] / 1e6:.2f} MB)"
    if parity:
        msg += (f"; parity on {parity['clips']} test clips: max |dp| "
                f"{parity['max_abs_prob_diff']:.2e}, top-1 agreement "
                f"{100 * parity['top1_agreement']:.1f}%, accuracy "
                f"{100 * parity['accuracy_export']:.1f}% (Keras "
                f"{100 * parity['accuracy_reference']:.1f}%)")
    log(msg)
    return card


def _card(run, cfg, class_names, rate, num_samples, frontend, file_name, size, ops, parity,
          calib_names, models, convert_seconds, version):
    t = run.config.train
    report = run.report or {}
    card = {
        "format": cfg.format,
        "quantization": cfg.quantize,
        "file": file_name,
        "size_bytes": int(size),
        "classes": class_names,
        "num_classes": len(class_names),
        "input": {"name": "waveform", "shape": [None, num_samples], "dtype": "float32",
                  "sample_rate": rate, "seconds": num_samples / rate,
                  "meaning": "mono waveform in [-1, 1] at sample_rate"},
        "output": {"shape": [None, len(class_names)], "dtype": "float32",
                   "meaning": "class probabilities (softmax), in the order of labels.txt"},
        "front_end": {**run.config.features.to_dict(), "stft_impl": frontend.stft_impl,
                      "inside_model": True},
        "model": run.config.model.to_dict(),
        "source_run": {
            "path": str(run.path.resolve()),
            "splits": run.split_names,
            "combined": "average of the splits' probabilities" if len(models) > 1 else "one split",
            "accuracy": _source_accuracy(run),
            "run_accuracy": report.get("accuracy"),
        },
        "training": {"data": t.data, "protocol": t.protocol, "test_fold": t.test_fold,
                     "split_ratio": t.split_ratio, "val_fraction": t.val_fraction,
                     "epochs": t.epochs, "seed": t.seed,
                     "dataset": report.get("dataset")},
        "parity": parity,
        "created_by": f"esc50tf {version}",
        "convert_seconds": round(convert_seconds, 2),
    }
    if ops is not None:
        card["tflite"] = {"ops": ops, "builtin_only": True,
                          "runtime": "ai_edge_litert.interpreter.Interpreter"}
    if cfg.quantize == "int8":
        card["calibration"] = {
            "clips": len(calib_names),
            "source": "training side (no validation or test clip) of "
                      + ", ".join(run.split_names),
            "seed": cfg.seed,
            "filenames": calib_names,
            "edge_clips": "plus the edge-case clips (export.edge_clips) made from the first "
                          "calibration clip: silence, near-silence, clipping, zero padding, "
                          "a DC offset and a tone",
            "float_parts": "front end (STFT / Mel / log) and the float32 input and output; "
                           "every op after the front end runs in int8",
        }
    return card
