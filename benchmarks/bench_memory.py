"""Estimated peak memory against the peak resident memory `esc50tf train` reaches.

For each configuration, a fresh Python process opens the TFRecords, takes
`esc50tf.models.memory.estimate_memory` of the configuration (the model built
symbolically, nothing trained), then runs `esc50tf.train.train` on the same
configuration for one epoch (test fold 1, no export) and reports its own peak
resident set (`ru_maxrss`): the estimate and the measurement come from the
same process, after the same imports. The data: synthetic ESC-50-layout
clips (6 classes x 5 clips of 5 s at 22.05 kHz).

Configurations (`name: model, front end, batch`):

- `cnn_small mel64 b16`: the demo's model and front end;
- `hybrid mel64 b16`: DenseNet121 on a 64-band log-Mel image;
- `hybrid stft b4`: DenseNet121 on the STFT (1025 bins), the setting of
  tune's first random trial that the OOM killer ended at 10 GB at batch 16
  (44.1 kHz clips); at batch 4 here so that the measurement stays well inside
  this shared machine's memory. Its estimate at batch 16 and 44.1 kHz is
  printed too (not run).

Usage:
    python -m benchmarks.bench_memory            # about 5 min on 2 CPU cores
    python -m benchmarks.bench_memory --quick    # the first two only

Writes `OUT/bench_memory-<quick|full>-cpu.json` and `.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import common

SCRIPT = "bench_memory"
RATE = 22050
SECONDS = 5.0
CONFIGS = {  # name -> (model, features overrides, batch size)
    "cnn_small mel64 b16": ("cnn_small", {"kind": "mel", "n_mels": 64}, 16),
    "hybrid mel64 b16": ("hybrid", {"kind": "mel", "n_mels": 64}, 16),
    "hybrid stft b4": ("hybrid", {"kind": "stft"}, 4),
}
QUICK_CONFIGS = ("cnn_small mel64 b16", "hybrid mel64 b16")
NOT_RUN = {"hybrid stft b16 44.1 kHz": ("hybrid", {"kind": "stft"}, 16, 44100)}


def parse_args(argv):
    parser = common.make_parser(__doc__.split("\n\n")[0], full_help="3 configurations.",
                                quick_help="2 configurations.", data_help=None)
    parser.add_argument("--measure", metavar="JSON", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_config(model, features, batch, data, out, rate):
    from esc50tf.run_config import resolve_config

    return resolve_config(model, overrides={
        "train": {"data": str(data), "out": str(out), "epochs": 1, "batch_size": batch,
                  "protocol": "test-fold", "test_fold": 1, "export": False, "seed": 0},
        "features": {**features, "sample_rate": rate}})


def measure(spec):
    """In the child process: the estimate, then one epoch of training; prints one JSON line."""
    import resource

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from esc50tf.data.dataset import TFRecordFolder
    from esc50tf.data.splits import protocol_splits
    from esc50tf.models.memory import estimate_memory
    from esc50tf.train import train

    cfg = run_config(spec["model"], spec["features"], spec["batch"], spec["data"], spec["out"],
                     RATE)
    folder = TFRecordFolder(spec["data"])
    (split,) = protocol_splits(cfg.train, folder.index)
    num_clips = len(split.train.rows(folder.index))
    n = int(folder.manifest["config"]["num_samples"])
    classes = len(folder.manifest["classes"])
    estimate = estimate_memory(cfg, n, classes, num_clips)
    extra = {}
    for name, (model, features, batch, rate) in (spec.get("not_run") or {}).items():
        other = run_config(model, features, batch, spec["data"], spec["out"], rate)
        e = estimate_memory(other, int(rate * SECONDS), classes, num_clips)
        extra[name] = {"estimate_bytes": e.total, "parts": e.parts}
    report = train(cfg, verbose=0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"estimate_bytes": estimate.total, "parts": estimate.parts,
                      "peak_rss_bytes": peak, "train_clips": num_clips,
                      "accuracy": report["accuracy"], "not_run": extra}))


def main(argv=None):
    args, environment = common.start(parse_args, argv)
    if args.measure:
        measure(json.loads(args.measure))
        return 0
    from esc50tf.data.synth import SynthConfig, synthesize_tfrecords
    from esc50tf.data.tfrecords import BuildConfig

    names = QUICK_CONFIGS if args.quick else tuple(CONFIGS)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_memory-") as workdir:
        data = Path(workdir) / "tfr"
        synthesize_tfrecords(Path(workdir) / "esc50", data,
                             SynthConfig(num_classes=6, clips_per_class=5, sample_rate=RATE,
                                         clip_seconds=SECONDS, seed=0),
                             BuildConfig(sample_rate=RATE, clip_seconds=SECONDS,
                                         shards_per_fold=1),
                             workers=1, progress=False, log=lambda _: None)
        for i, name in enumerate(names):
            model, features, batch = CONFIGS[name]
            spec = {"model": model, "features": features, "batch": batch, "data": str(data),
                    "out": str(Path(workdir) / f"run{i}"),
                    "not_run": NOT_RUN if name == "hybrid stft b4" else {}}
            common.log(f"{name}: estimate, then one epoch of training")
            proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_memory", "--measure",
                                   json.dumps(spec)], capture_output=True, text=True,
                                  cwd=common.REPO_ROOT)
            if proc.returncode != 0:
                raise SystemExit(f"{name}: the measuring process failed:\n{proc.stderr[-3000:]}")
            m = json.loads(proc.stdout.strip().splitlines()[-1])
            row = {"name": name, "model": model, "features": features, "batch_size": batch,
                   "estimate_gb": round(m["estimate_bytes"] / 1e9, 2),
                   "peak_rss_gb": round(m["peak_rss_bytes"] / 1e9, 2),
                   "ratio": round(m["estimate_bytes"] / m["peak_rss_bytes"], 2),
                   "parts_gb": {k: round(v / 1e9, 3) for k, v in m["parts"].items()},
                   "train_clips": m["train_clips"]}
            results.append(row)
            common.log(f"{name}: estimate {row['estimate_gb']} GB, peak RSS "
                       f"{row['peak_rss_gb']} GB")
            for other, e in m["not_run"].items():
                results.append({"name": other, "model": NOT_RUN[other][0],
                                "features": NOT_RUN[other][1], "batch_size": NOT_RUN[other][2],
                                "estimate_gb": round(e["estimate_bytes"] / 1e9, 2),
                                "peak_rss_gb": None, "ratio": None,
                                "parts_gb": {k: round(v / 1e9, 3) for k, v in e["parts"].items()},
                                "train_clips": m["train_clips"]})
    payload = common.new_payload(SCRIPT, args.quick)
    payload.update({
        "device": {"name": common.cpu_description()["model"], "kind": "CPU", "label": "cpu",
                   "cpu": common.cpu_description()},
        "environment": common.finish_environment(environment),
        "config": {"data": f"synthetic, 6 classes x 5 clips of {SECONDS:g} s at {RATE} Hz",
                   "protocol": "test fold 1, 1 epoch, default preset, float32",
                   "command": common.command_line(argv)},
        "results": results,
        "notes": [
            "estimate: esc50tf.models.memory.estimate_memory in the measuring process "
            "(base = its resident set after the imports); peak RSS: that process's ru_maxrss "
            "after `train` (one epoch, test side predicted).",
            "ratio = estimate / peak RSS (above 1: the estimate is on the safe side).",
            "Rows without a peak were estimated only (not run on this shared machine).",
        ],
    })
    common.write_report(args.out, "cpu", payload, render_markdown(payload))
    return 0


def render_markdown(payload):
    columns = [
        ("configuration", lambda r: r["name"]),
        ("estimate GB", lambda r: r["estimate_gb"]),
        ("peak RSS GB", lambda r: r["peak_rss_gb"]),
        ("estimate / peak", lambda r: r["ratio"]),
        ("activations GB", lambda r: r["parts_gb"].get("activations")),
        ("base GB", lambda r: r["parts_gb"].get("base")),
        ("front end GB", lambda r: r["parts_gb"].get("front end")),
        ("parameters GB", lambda r: r["parts_gb"].get("parameters")),
        ("data GB", lambda r: r["parts_gb"].get("data")),
        ("graph GB", lambda r: r["parts_gb"].get("graph")),
    ]
    cfg = payload["config"]
    return "\n".join([
        f"# bench_memory ({payload['mode']}, CPU)", "",
        f"{payload['created']}; {payload['device']['name']}. Data: {cfg['data']}; "
        f"{cfg['protocol']}.", "",
        common.markdown_table(payload["results"], columns),
    ])


if __name__ == "__main__":
    sys.exit(main())
