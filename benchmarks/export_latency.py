"""An mn model's TFLite exports against CNN14 and cnn_small: size and 1-thread latency.

The run given with `--run` (a model trained or fine-tuned from `mn10`) is
exported with `esc50tf.export.export_run` to TFLite float32, float16 and int8
(front end inside, builtin ops only; each with the top-1 agreement with the
Keras model that the export measures on the run's test clips). For scale,
CNN14 (32 kHz, 5 s) and cnn_small (the demo's model, 32 kHz, 5 s here) are
built with random weights and converted to float TFLite the same way
(`build_export_model` -> SavedModel -> `convert_tflite`): their latency and
size do not depend on training, their agreement is not measured.

`--calibration-clips 50,200,...` exports int8 once per calibration-set size
(training-side clips only, as `export` chooses them; the test clips only
measure). `--label NAME` names the report (`NAME-<mode>-cpu.json`), so the
run of a trained model does not overwrite another's; `--no-references`
skips CNN14 and cnn_small (agreement only). Each row records the run's test
accuracy, the export's, the agreement and the largest probability change.

Each .tflite is timed with the LiteRT interpreter at `num_threads=1`, one
clip per call: a 5 s clip and a 1 s window (the interpreter's input resized;
every model here pools globally over time). `--repeats` repeats of `--calls`
calls after 2 warm-up calls, median ms per call reported, and the ratio of
CNN14 float's 5 s latency to each model's.

Usage:
    python -m benchmarks.export_latency --run RUN [--quick] [--calibration-clips 50,200]
        [--label export_latency_trained] [--no-references]

Writes `OUT/export_latency-<quick|full>-cpu.json` and `.md` (OUT defaults to
benchmarks/results) and prints the table. On a shared CPU the other
processes' load shows in the numbers: the JSON records the load average.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import common

RATE = 32000
QUICK = {"calls": 5, "repeats": 1}
FULL = {"calls": 20, "repeats": 3}
MN_VARIANTS = (("float", "none"), ("float16", "float16"), ("int8", "int8"))


def parse_args(argv):
    parser = common.make_parser(__doc__.split("\n\n")[0], full_help=f"{FULL}.",
                                quick_help=f"{QUICK}.", data_help=None)
    parser.add_argument("--run", required=True, metavar="RUN",
                        help="a run of an mn model (e.g. train --model mn10 --weights mn10_as)")
    parser.add_argument("--calls", type=int, default=None)
    parser.add_argument("--calibration-clips", default="200", metavar="N[,N...]",
                        help="int8 calibration-set sizes, one export each (default 200, "
                        "export's)")
    parser.add_argument("--label", default="export_latency",
                        help="report name: LABEL-<mode>-cpu.json (default export_latency)")
    parser.add_argument("--no-references", action="store_true",
                        help="leave out the random CNN14 and cnn_small references")
    args = parser.parse_args(argv)
    args.calibration_clips = common.parse_csv(parser, "--calibration-clips",
                                              args.calibration_clips, cast=int)
    mode = QUICK if args.quick else FULL
    args.calls = args.calls or mode["calls"]
    args.repeats = getattr(args, "repeats", None) or mode["repeats"]
    return args


def _random_tflite(model_name, workdir):
    """A randomly initialised `model_name` (32 kHz, 5 s) as float TFLite; returns its path."""
    from esc50tf.export import build_export_model, convert_tflite, write_savedmodel
    from esc50tf.frontend import FeatureConfig
    from esc50tf.models import ModelConfig
    from esc50tf.models.build import build_model
    from esc50tf.pretrained import architectures
    from esc50tf.tasks import get_task

    if model_name == "cnn14":
        features = FeatureConfig(**architectures.feature_settings("cnn14"))
        config = ModelConfig(name="cnn14", normalization="none")
    else:
        features = FeatureConfig(sample_rate=RATE, n_fft=1024, hop_length=256, n_mels=64)
        config = ModelConfig(name=model_name, normalization="instance")
    model = build_model(config, features, num_classes=10, num_samples=5 * RATE)
    saved = write_savedmodel(build_export_model([model]), Path(workdir) / f"{model_name}_sm",
                             get_task(model_name))
    path = Path(workdir) / f"{model_name}.tflite"
    path.write_bytes(convert_tflite(saved))
    return path


def _time(runner, seconds, calls, repeats, seed=0):
    x = np.random.default_rng(seed).uniform(-0.3, 0.3, (1, int(seconds * RATE))).astype("float32")
    for _ in range(2):
        runner(x)
    medians = []
    for _ in range(repeats):
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            runner(x)
            times.append(time.perf_counter() - start)
        medians.append(float(np.median(times)))
    return 1000 * float(np.median(medians))


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env = common.environment()
    from esc50tf.export import ExportConfig, export_run
    from esc50tf.exported import TFLiteRunner

    rows = []
    with tempfile.TemporaryDirectory(prefix="export_latency-") as workdir:
        targets = []
        variants = [(label, quantize, None) for label, quantize in MN_VARIANTS[:2]]
        variants += [(f"int8 (calibration {n})" if len(args.calibration_clips) > 1 else "int8",
                      "int8", n) for n in args.calibration_clips]
        for i, (label, quantize, calibration) in enumerate(variants):
            common.log(f"exporting {args.run} ({label})")
            out = Path(workdir) / f"mn_{i}"
            extra = {} if calibration is None else {"calibration_clips": calibration}
            # min_agreement 0: the agreement is measured here, whatever it is.
            card = export_run(args.run, ExportConfig(out=str(out), quantize=quantize,
                                                     min_agreement=0.0, **extra),
                              log=lambda _: None)
            model = card.get("model")
            model = model.get("name") if isinstance(model, dict) else model
            parity = card.get("parity") or {}
            used = (card.get("calibration") or {}).get("clips")
            if calibration is not None and used != calibration:  # fewer training-side clips
                label = label.replace(f"calibration {calibration}", f"calibration {used}")
            targets.append((f"{model} {label}", out / card["file"], {
                "top1_agreement": parity.get("top1_agreement"),
                "agreement_clips": parity.get("clips"),
                "max_abs_prob_diff": parity.get("max_abs_prob_diff"),
                "accuracy_keras": parity.get("accuracy_reference"),
                "accuracy_export": parity.get("accuracy_export"),
                "calibration_clips": used}))
        if not args.no_references:
            for name in ("cnn14", "cnn_small"):
                common.log(f"converting a random {name}")
                targets.append((f"{name} float (random weights)",
                                _random_tflite(name, workdir), {}))
        for name, path, parity in targets:
            common.log(f"timing {name}")
            runner = TFLiteRunner(path, num_threads=1)
            rows.append({"name": name, "size_mb": round(path.stat().st_size / 1e6, 2),
                         "ms_per_5s_clip": round(_time(runner, 5.0, args.calls, args.repeats), 1),
                         "ms_per_1s_window": round(_time(runner, 1.0, args.calls, args.repeats),
                                                   1),
                         "top1_agreement": None, "agreement_clips": None, **parity})
    base = next((r for r in rows if r["name"].startswith("cnn14")), rows[0])["ms_per_5s_clip"]
    for r in rows:
        r["speedup_vs_cnn14_float"] = round(base / r["ms_per_5s_clip"], 1) \
            if not args.no_references else None
    payload = common.new_payload(args.label, args.quick)
    payload.update({
        "device": {"label": "cpu"}, "environment": common.finish_environment(env),
        "config": {"run": str(args.run), "calls": args.calls, "repeats": args.repeats,
                   "threads": 1, "calibration_clips": list(args.calibration_clips),
                   "command": common.command_line(argv)},
        "results": rows,
        "notes": ["LiteRT interpreter, num_threads=1, one clip per call, median ms; the "
                  "1 s window resizes the interpreter's input.",
                  "top1_agreement: the export's own parity check on the run's test clips "
                  "(export_run), None for the random-weight references."],
    })
    columns = [("model", lambda r: r["name"]), ("size MB", lambda r: r["size_mb"]),
               ("ms / 5 s clip", lambda r: r["ms_per_5s_clip"]),
               ("ms / 1 s window", lambda r: r["ms_per_1s_window"]),
               ("x faster than CNN14 float", lambda r: r["speedup_vs_cnn14_float"]),
               ("top-1 agreement", lambda r: r["top1_agreement"]),
               ("max abs dp", lambda r: r.get("max_abs_prob_diff")),
               ("accuracy Keras / export",
                lambda r: (f"{r['accuracy_keras']:.3f} / {r['accuracy_export']:.3f}"
                           if r.get("accuracy_keras") is not None else "-"))]
    markdown = "\n".join([f"# {args.label} (CPU, 1 thread)", "",
                          f"{payload['created']}; run `{args.run}`.", "",
                          common.markdown_table(rows, columns)])
    common.write_report(args.out, "cpu", payload, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
