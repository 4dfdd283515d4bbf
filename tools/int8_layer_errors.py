"""Where a run's int8 TFLite export loses: per-op quantization error, and the agreement when
groups of ops stay float.

    python tools/int8_layer_errors.py RUN [--calibration-clips 200] [--out FILE.json]

What it does, on the run's own TFRecords and split (one split: `--split`):

1. The run's export graph (`esc50tf.export.build_export_model`) as a SavedModel,
   converted as `export` converts int8: calibrated on training-side clips
   (`esc50tf.data.splits.calibration_set`), the front end kept float.
2. TFLite's `QuantizationDebugger` on those calibration clips: for every
   quantized op, the error of its int8 output against the float one given the
   same float input, in units of the tensor's scale (RMSE about 0.29 is pure
   rounding; more is clipping or a poorly fitting range).
3. The int8 model with groups of ops kept float (`denylisted_nodes` by layer
   name; the front end always float), and the top-1 agreement of each with the
   run's Keras model on the CHECK clips: the training-side clips that did not
   calibrate (never validation or test clips), so choosing a group to keep
   float sees no test data. The run's test clips are scored once per variant
   too, for the report only. Also the 16x8 mode (int8 weights, int16
   activations; its front end quantized too, see below) and, for every
   variant, how sure the Keras model was (top-1 minus top-2 probability) on
   the clips where the export disagrees.

Writes a JSON with the worst ops, the per-group agreements, the sizes, and
prints a summary. CPU only; minutes for mn10.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

# Name fragments of the mn models' layer groups (esc50tf.models.efficientat layer names).
GROUPS = {
    "squeeze-excitation": ("conc_se_layers",),
    "stem and first blocks": ("features_0_", "features_1_", "features_2_", "features_3_"),
    "last conv and head": ("features_16_", "classifier_2", "classifier_3", "predictions"),
    "hard-swish blocks (7-15)": tuple(f"features_{i}_" for i in range(7, 16)),
}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a trained Keras run folder (one split)")
    p.add_argument("--split", default=None, help="the split to export (default: the only one)")
    p.add_argument("--calibration-clips", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top", type=int, default=12, help="worst ops listed (default 12)")
    p.add_argument("--out", default=None, help="JSON file to write")
    p.add_argument("--no-groups", action="store_true",
                   help="skip the variants with op groups kept float")
    p.add_argument("--no-layers", action="store_true", help="skip the per-op error statistics")
    return p.parse_args(argv)


def _clips(folder, index, names):
    """(waveforms [n, samples], labels [n]) of the named clips of a TFRecordFolder."""
    from esc50tf.data.dataset import DatasetOptions
    from esc50tf.data.splits import Selection

    folds = tuple(sorted(set(int(f) for f in index[index["filename"].isin(set(names))]["fold"])))
    ds = folder.dataset(Selection(folds, frozenset(names)),
                        DatasetOptions(batch_size=32, cache=False))
    waves, labels = [], []
    for x, y in ds:
        waves.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(waves).astype(np.float32), np.concatenate(labels)


def _margins(probs):
    """Top-1 minus top-2 probability of each row."""
    top = np.sort(probs, axis=1)
    return top[:, -1] - top[:, -2]


def _agreement(content, waves, reference):
    from esc50tf.exported import runner_for

    with tempfile.NamedTemporaryFile(suffix=".tflite") as f:
        f.write(content)
        f.flush()
        runner = runner_for(f.name, num_threads=2)
        got = np.concatenate([runner(waves[i:i + 1]) for i in range(len(waves))])
    flipped = got.argmax(1) != reference.argmax(1)
    return {"top1_agreement": float(1 - flipped.mean()), "flipped": int(flipped.sum()),
            "clips": len(waves),
            # How sure the Keras model was where int8 disagrees, against all its clips.
            "keras_margin_of_flipped": [round(float(m), 4) for m in
                                        sorted(_margins(reference)[flipped])],
            "keras_margin_median": round(float(np.median(_margins(reference))), 4),
            "max_abs_prob_diff": float(np.abs(got - reference).max()),
            "size_mb": round(len(content) / 1e6, 2)}


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from esc50tf.data import splits
    from esc50tf.data.dataset import TFRecordFolder
    from esc50tf.export import (FRONTEND, build_export_model, keras_reference, load_models,
                                read_run, write_savedmodel)

    run = read_run(args.run, args.split)
    if len(run.split_names) != 1:
        sys.exit(f"{args.run}: {len(run.split_names)} splits; pick one with --split")
    folder = TFRecordFolder(run.config.train.data)
    index = folder.index
    split = {s.name: s for s in splits.protocol_splits(run.config.train, index)}[
        run.split_names[0]]
    calib = splits.calibration_set(index, [split], args.calibration_clips, args.seed)
    train_side = splits.calibration_set(index, [split], 10 ** 9)
    check = sorted(set(train_side) - set(calib))
    test = sorted(split.test.rows(index)["filename"])
    models = load_models(run)
    model = build_export_model(models)
    calib_waves, _ = _clips(folder, index, calib)
    data = {"check": _clips(folder, index, check) if check else None,
            "test": _clips(folder, index, test)}
    reference = {k: keras_reference(models, v[0]) for k, v in data.items() if v is not None}
    accuracy = {k: float((reference[k].argmax(1) == v[1]).mean())
                for k, v in data.items() if v is not None}

    def representative():
        for w in calib_waves:
            yield [w[None]]

    with tempfile.TemporaryDirectory(prefix="int8_layers-") as work:
        saved = write_savedmodel(model, Path(work) / "sm", run.task)

        def converter():
            c = tf.lite.TFLiteConverter.from_saved_model(str(saved))
            c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            return c

        float_model = converter().convert()
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_content=float_model)
        names = sorted({interpreter._get_tensor_details(i, 0)["name"]
                        for op in interpreter._get_ops_details() for i in op["outputs"]})
        front = [n for n in names if f"/{FRONTEND}" in n]

        def quantized(keep_float=()):
            c = converter()
            c.optimizations = [tf.lite.Optimize.DEFAULT]
            c.representative_dataset = representative
            c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                           tf.lite.OpsSet.TFLITE_BUILTINS]
            deny = front + [n for n in names if any(f in n for f in keep_float)]
            options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=deny)
            return tf.lite.experimental.QuantizationDebugger(
                converter=c, debug_dataset=representative, debug_options=options)

        debugger = quantized()
        if not args.no_layers:
            debugger.run()
        stats_file = Path(work) / "stats.csv"
        rows = []
        if not args.no_layers:
            with open(stats_file, "w") as f:
                debugger.layer_statistics_dump(f)
            with open(stats_file) as f:
                rows = list(csv.DictReader(f))
        ops = []
        for r in rows:
            scale = float(r["scale"]) if r.get("scale") else 0.0
            if not scale:
                continue
            ops.append({"op": r["op_name"], "tensor": r["tensor_name"],
                        "rmse_over_scale": float(np.sqrt(float(r["mean_squared_error"]))) / scale,
                        "error_stddev_over_scale": float(r["stddev"]) / scale,
                        "max_abs_error_over_scale": float(r["max_abs_error"]) / scale})
        ops.sort(key=lambda o: -o["rmse_over_scale"])
        variants = {"int8 (front end float)": debugger.get_nondebug_quantized_model(),
                    "float": float_model}
        for group, fragments in ({} if args.no_groups else GROUPS).items():
            variants[f"int8, {group} float"] = quantized(fragments).get_nondebug_quantized_model()
        # 16x8 (int8 weights, int16 activations): the QuantizationDebugger makes int8 only
        # (asked for 16x8 it returns the int8 model), so the front end cannot be kept float
        # here: the plain converter quantizes it too.
        c = converter()
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = representative
        c.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS]
        variants["16x8, front end included"] = c.convert()
        results = {}
        for name, content in variants.items():
            results[name] = {k: _agreement(content, v[0], reference[k])
                             for k, v in data.items() if v is not None}
            print(f"{name}: " + ", ".join(f"{k} {r['top1_agreement']:.3f}"
                                          for k, r in results[name].items()), flush=True)
    payload = {
        "run": str(args.run), "split": run.split_names[0],
        "clips": {"calibration": len(calib), "check": len(check), "test": len(test)},
        "keras_accuracy": accuracy,
        "worst_ops": ops[:args.top],
        "ops_quantized": len(ops),
        "rmse_over_scale_median": (float(np.median([o["rmse_over_scale"] for o in ops]))
                                   if ops else None),
        "variants": results,
        "notes": ["rmse_over_scale: the QuantizationDebugger's per-op error on the calibration "
                  "clips, in units of the output's int8 step (0.29 = rounding only).",
                  "check: training-side clips that did not calibrate; test: the run's test "
                  "clips, reported, never used to choose."],
    }
    print(json.dumps({k: payload[k] for k in ("clips", "keras_accuracy")}, indent=1))
    for o in ops[:args.top]:
        print(f"{o['rmse_over_scale']:8.2f} {o['max_abs_error_over_scale']:9.1f}  {o['op']:<22} "
              f"{o['tensor'][:90]}")
    if args.out:
        Path(args.out).write_text(json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
