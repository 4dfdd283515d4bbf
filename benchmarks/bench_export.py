"""Exported models side by side: size and 1-thread CPU latency per clip of each format.

A trained run is exported with `esc50tf.export.export_run` to a SavedModel
and to TFLite float32, float16 and int8 (each with its parity figures,
measured on the run's test clips); then each is timed on one clip per call,
as on a device, in this process:

- `keras`: the run's `.keras` model, `predict_on_batch` (the source);
- `savedmodel`: `tf.saved_model.load(...).serve`;
- `tflite-float`, `tflite-float16`, `tflite-int8`: the LiteRT interpreter
  (`ai_edge_litert`) with `num_threads=1`.

TensorFlow is limited to one intra-op and one inter-op thread before it
starts, so every variant uses one CPU thread. Each variant is timed
`--repeats` times over `--clips` calls (after 3 warm-up calls), the repeats
interleaved across variants; the table gives the median and best ms per clip,
CPU ms per clip, clips/s and the ratio to `tflite-float`.

The run: `--run RUN` (e.g. `esc50tf demo --out D` makes D/run: cnn_small, 10
classes, 5 s at 16 kHz); otherwise one is trained here with the demo's
recipe: the demo itself in full mode (about 3 minutes on 2 CPU cores), or 1 s
clips and 2 epochs in quick mode (latency and size only: its parity says
little, the model barely learned).

Usage:
    python -m benchmarks.bench_export --quick          # < 2 min on 2 CPU cores
    python -m benchmarks.bench_export --run D/run      # an existing run
    python -m benchmarks.bench_export                  # trains the demo first

Writes `OUT/bench_export-<quick|full>-cpu.json` and `.md` (OUT defaults to
benchmarks/results) and prints the table.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import common

SCRIPT = "bench_export"
REFERENCE = "tflite-float"
VARIANTS = {  # name -> (format, quantize); keras is the source model
    "savedmodel": ("savedmodel", "none"),
    "tflite-float": ("tflite", "none"),
    "tflite-float16": ("tflite", "float16"),
    "tflite-int8": ("tflite", "int8"),
}
WARMUP = 3
QUICK = {"clips": 20, "repeats": 1}
FULL = {"clips": 100, "repeats": 3}
QUICK_DATA = {"num_classes": 10, "clips_per_class": 10, "clip_seconds": 1.0, "epochs": 2}


def parse_args(argv):
    parser = common.make_parser(
        __doc__.split("\n\n")[0], full_help=f"{FULL['clips']} clips x {FULL['repeats']} repeats.",
        quick_help=f"a 1 s-clip run trained 2 epochs, {QUICK['clips']} clips x 1 repeat.",
        data_help="With --data (and no --run), the run is trained on these TFRecords with "
                  "the demo's recipe (test fold 1). Default: the demo's synthetic data.")
    parser.add_argument("--run", metavar="RUN", default=None,
                        help="An existing Keras run folder to export and time.")
    parser.add_argument("--clips", type=int, default=None, help="Calls per timed repeat.")
    args = parser.parse_args(argv)
    common.check_positive(parser, "--repeats", args.repeats)
    common.check_positive(parser, "--clips", args.clips)
    mode = QUICK if args.quick else FULL
    args.repeats = args.repeats or mode["repeats"]
    args.clips = args.clips or mode["clips"]
    return args


def make_run(args, workdir):
    """The run to export: --run, or one trained here. Returns (run folder, origin)."""
    if args.run:
        return Path(args.run), f"given run {args.run}"
    from esc50tf.presets import DEMO_AUGMENT, DEMO_FEATURES, DEMO_MODEL, DEMO_SAMPLE_RATE, DEMO_TRAIN

    workdir = Path(workdir)
    if not args.quick and not args.data:
        from esc50tf.demo import run_demo

        common.log("training the demo run (esc50tf demo)")
        run_demo(workdir / "demo")
        return workdir / "demo" / "run", "esc50tf demo (cnn_small, 10 classes, 5 s at 16 kHz)"
    from esc50tf.run_config import resolve_config
    from esc50tf.train import train

    data, origin = args.data, f"TFRecords {args.data}"
    train_cfg = dict(DEMO_TRAIN)
    if data is None:
        from esc50tf.data.synth import SynthConfig, synthesize_tfrecords

        q = QUICK_DATA
        data = workdir / "tfr"
        synthesize_tfrecords(workdir / "esc50", data,
                             SynthConfig(num_classes=q["num_classes"],
                                         clips_per_class=q["clips_per_class"],
                                         sample_rate=DEMO_SAMPLE_RATE,
                                         clip_seconds=q["clip_seconds"]),
                             workers=1, progress=False, log=lambda _: None)
        train_cfg["epochs"] = q["epochs"]
        origin = (f"demo recipe on {q['num_classes']} synthetic classes x "
                  f"{q['clips_per_class']} clips of {q['clip_seconds']:g} s, {q['epochs']} epochs")
    common.log(f"training {DEMO_MODEL}: {origin}")
    cfg = resolve_config(DEMO_MODEL, overrides={
        "train": {**train_cfg, "data": str(data), "out": str(workdir / "run")},
        "features": DEMO_FEATURES, "augment": DEMO_AUGMENT})
    train(cfg, verbose=0)
    return workdir / "run", origin


def _size(path):
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(
        p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ["TF_NUM_INTRAOP_THREADS"] = "1"
    environment = common.environment()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    from esc50tf.export import ExportConfig, export_run, read_run
    from esc50tf.exported import SavedModelRunner, TFLiteRunner

    with tempfile.TemporaryDirectory(prefix="bench_export-") as workdir:
        run, origin = make_run(args, workdir)
        info = read_run(run)
        split = info.split_names[0]
        cards, runners, sizes = {}, {}, {}
        for name, (fmt, quantize) in VARIANTS.items():
            common.log(f"exporting {name}")
            out = Path(workdir) / "exports" / name
            cards[name] = export_run(run, ExportConfig(out=str(out), format=fmt,
                                                       quantize=quantize, split=split),
                                     log=common.log)
            path = out / cards[name]["file"]
            sizes[name] = _size(path)
            runners[name] = (SavedModelRunner(path) if fmt == "savedmodel"
                             else TFLiteRunner(path, num_threads=1))
        keras_path = run / split / "model.keras"
        model = keras.models.load_model(keras_path)
        runners = {"keras": lambda x: model.predict_on_batch(x), **runners}
        sizes["keras"] = _size(keras_path)
        card = cards["tflite-float"]
        n = card["input"]["shape"][-1]
        clips = np.random.default_rng(0).uniform(-0.5, 0.5, (args.clips, 1, n)).astype(np.float32)
        for fn in runners.values():
            for clip in clips[:WARMUP]:
                fn(clip)
        timings = {name: [] for name in runners}
        for repeat in range(args.repeats):
            for name, fn in runners.items():  # interleaved: load drifts hit every variant
                with common.timed(len(clips)) as t:
                    for clip in clips:
                        fn(clip)
                timings[name].append(t)
            common.log(f"repeat {repeat + 1}/{args.repeats} done")
        results = []
        for name, ts in timings.items():
            c = cards.get(name)
            parity = (c or {}).get("parity") or {}
            per_clip = sorted(1000 * t.wall_s / t.clips for t in ts)
            results.append(common.summarise(
                name, ts, format=(c or {}).get("format", "keras"),
                quantization=(c or {}).get("quantization", "none"),
                size_bytes=sizes[name], size_mb=round(sizes[name] / 1e6, 3),
                ms_per_clip=round(per_clip[len(per_clip) // 2], 3),
                ms_per_clip_best=round(per_clip[0], 3),
                max_abs_prob_diff=parity.get("max_abs_prob_diff"),
                top1_agreement=parity.get("top1_agreement"),
                accuracy=parity.get("accuracy_export"),
            ))
        keras_acc = cards["tflite-float"]["parity"]["accuracy_reference"]
        results[0]["accuracy"] = keras_acc
    common.add_ratios(results, REFERENCE)
    payload = common.new_payload(SCRIPT, args.quick)
    payload.update({
        "device": {"name": common.cpu_description()["model"], "kind": "CPU", "label": "cpu",
                   "cpu": common.cpu_description()},
        "environment": common.finish_environment(environment),
        "config": {
            "run": origin, "split": split, "model": card["model"]["name"],
            "sample_rate": card["input"]["sample_rate"], "num_samples": n,
            "clip_seconds": card["input"]["seconds"], "num_classes": card["num_classes"],
            "front_end": {k: card["front_end"][k] for k in ("kind", "n_fft", "hop_length",
                                                            "n_mels", "stft_impl")},
            "threads": 1, "clips": args.clips, "repeats": args.repeats, "warmup": WARMUP,
            "parity_clips": card["parity"]["clips"],
            "int8_calibration_clips": cards["tflite-int8"]["calibration"]["clips"],
            "command": common.command_line(argv),
        },
        "reference": REFERENCE,
        "results": results,
        "notes": [
            "One clip per call (batch 1), one CPU thread for every variant: TFLite "
            "interpreters with num_threads=1, TensorFlow with one intra-op and one inter-op "
            "thread. ms/clip = median over repeats of (repeat wall time / clips).",
            "Parity (max |p - p_keras|, top-1 agreement) and accuracy are measured by the "
            "export on the run's test clips and copied from each model_card.json.",
            "int8: the classifier runs in int8; the front end (framing, RFFT2D, Mel matmul, "
            "log) and the float32 input/output stay float (see esc50tf.export).",
            "Sizes: the .tflite file, the SavedModel folder, the .keras file.",
        ],
    })
    common.write_report(args.out, "cpu", payload, render_markdown(payload))
    return 0


def render_markdown(payload):
    cfg, env = payload["config"], payload["environment"]
    columns = [
        ("name", lambda r: f"`{r['name']}`"),
        ("clips/s", lambda r: r["clips_per_s"]),
        ("x reference", lambda r: r.get("ratio_to_reference")),
        ("ms/clip (median)", lambda r: r["ms_per_clip"]),
        ("CPU ms/clip", lambda r: r.get("cpu_ms_per_clip")),
        ("size MB", lambda r: r["size_mb"]),
        ("max abs prob diff", lambda r: r.get("max_abs_prob_diff")),
        ("top-1 agreement", lambda r: r.get("top1_agreement")),
        ("accuracy", lambda r: r.get("accuracy")),
    ]
    return "\n".join([
        f"# bench_export ({payload['mode']}, CPU)",
        "",
        f"{payload['created']}; {payload['device']['name']}; load average "
        f"{env['loadavg_at_start']} at start, {env.get('loadavg_at_end')} at end.",
        "",
        f"Run: {cfg['run']} ({cfg['model']}, {cfg['num_classes']} classes, split "
        f"{cfg['split']}); input {cfg['num_samples']} samples ({cfg['clip_seconds']:g} s at "
        f"{cfg['sample_rate']} Hz), front end {cfg['front_end']} inside every model. "
        f"{cfg['clips']} clips x {cfg['repeats']} repeat(s), batch 1, 1 thread; parity on "
        f"{cfg['parity_clips']} test clips; int8 calibrated on "
        f"{cfg['int8_calibration_clips']} training-side clips.",
        "",
        "`x reference` = clips/s / clips/s of `tflite-float`.",
        "",
        common.markdown_table(payload["results"], columns),
    ])


if __name__ == "__main__":
    sys.exit(main())
