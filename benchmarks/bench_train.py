"""Training throughput: examples/s and step time of every registered Keras model.

Each Keras model of the registry is built as training builds it
(`build_model(ModelConfig(name), FeatureConfig(<default preset front end>),
50 classes, samples)`: waveform in, log-Mel 128 / n_fft 2048 / hop 512
inside the model), compiled with the default preset's optimizer (AdamW 1e-3,
weight decay 1e-4) and categorical cross-entropy on one-hot labels (the
default recipe mixes up), and trained with `model.train_on_batch` in a
manual loop, one synchronised step at a time:

- policies `float32` and `mixed_bfloat16` (on a CPU bfloat16 is emulated and
  usually slower: it says nothing about accelerators);
- `jit_compile` off and on (on the JAX backend "off" is eager op-by-op
  execution, so only "on" runs by default there);
- two batch sizes;
- two feeds: `memory` (one batch already on the device, repeated: the upper
  bound) and `tfrecord` (the real `TFRecordFolder.dataset` pipeline over TFRecords,
  shuffled, cached, prefetched). When the two match, the input pipeline keeps
  the device busy;
- on request (`--feeds fit,fit-nocheck`), the in-memory batch through `fit`
  as training runs it: `fit` is `KerasTask.fit` (with its per-batch Ctrl-C
  check, `cleanup.raise_if_interrupted`), `fit-nocheck` is `model.fit` with
  the same arguments and no check; their ratio is the check's cost. Each
  repeat is one `fit` of `--steps` steps, timed whole (epoch start and end
  included, the same in both).

The PANNs models (`cnn14`, `cnn14_16k`, `cnn14_sed`; esc50tf.models.panns)
run on their own front end at their own rate (32 or 16 kHz): their in-memory
batch is the data's clips cut to the model's length, and their `tfrecord` feed
runs only when `--data` holds clips at that rate (otherwise it is listed as
skipped). They are built at full size (80.8M parameters), from random weights
(pretrained weights cost the same per step), with every layer trainable.

The first steps (tracing, compilation, pipeline start) are warm-up and are not
timed. Each entry reports the median step time, examples/s, the time of one
ESC-50 training epoch (1,600 clips = 4 folds, `floor(1600 / batch)` steps)
and a PROJECTION of 5-fold cross-validation at the default recipe (100
epochs): `5 x 100 x steps/epoch x median step time` - no early stopping, no
validation or test passes, no augmentation layers.

Usage:
    python -m benchmarks.bench_train --quick         # < 2 min on 2 CPU cores
    python -m benchmarks.bench_train --models cnn_small,gru --batch-sizes 16,32
    KERAS_BACKEND=jax python -m benchmarks.bench_train   # JAX (no TensorFlow needed)

Writes `OUT/bench_train-<quick|full>-<device>.json` and `.md` (OUT defaults
to benchmarks/results; device is cpu, gpu or tpu) and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import common

SCRIPT = "bench_train"
REFERENCE = "memory"  # ratios: each feed against the in-memory feed of the same configuration
FEEDS = ("memory", "tfrecord", "fit", "fit-nocheck")
FIT_FEEDS = ("fit", "fit-nocheck")
POLICIES = ("float32", "mixed_bfloat16")
SAMPLE_RATE = 44100
NUM_CLASSES = 50
EPOCH_CLIPS = common.EPOCH_CLIPS
CV_FOLDS = common.CV_FOLDS
QUICK_MODELS = ("cnn_small", "gru", "alexnet")
# Quick: float32 only, batch 8, 1 s clips; XLA on as well for the first model only.
QUICK = dict(batch_sizes=(8,), policies=("float32",), jit=("off",), jit_on_for=("cnn_small",),
             clip_seconds=1.0, clips=100, steps=5, warmup=2, repeats=1)
FULL = dict(batch_sizes=(16, 32), policies=POLICIES, jit=("off", "on"), jit_on_for=None,
            clip_seconds=5.0, clips=300, steps=3, warmup=2, repeats=1)


_csv = common.parse_csv


def parse_args(argv=None):
    parser = common.make_parser(
        __doc__.split("\n\n")[0],
        full_help="every Keras model, float32 and mixed_bfloat16, jit off/on, batches 16 and "
                  "32, 5 s clips, 2 warm-up + 3 timed steps per repeat.",
        quick_help="cnn_small, gru and alexnet, float32, batch 8, jit off (and on for "
                   "cnn_small), 1 s clips, 2 warm-up + 5 timed steps.",
        data_help="Default: synthesise a few hundred clips (50 classes) into a temporary folder.",
    )
    parser.add_argument("--models", default=None,
                        help="Comma-separated registered Keras models. Default: all (full), "
                             f"{','.join(QUICK_MODELS)} (quick).")
    parser.add_argument("--batch-sizes", default=None,
                        help="Comma-separated. Default: 16,32 (full), 8 (quick).")
    parser.add_argument("--policies", default=None,
                        help="Comma-separated of float32,mixed_bfloat16. Default: both (full), "
                             "float32 (quick).")
    parser.add_argument("--jit", default=None,
                        help="Comma-separated of off,on. Default: off,on on TensorFlow; on on "
                             "JAX (off is eager there). Quick: off (and on for cnn_small).")
    parser.add_argument("--feeds", default="memory,tfrecord",
                        help="Comma-separated of memory,tfrecord,fit,fit-nocheck (fit: "
                             "KerasTask.fit with its per-batch Ctrl-C check; fit-nocheck: "
                             "model.fit without it). Default: memory,tfrecord.")
    parser.add_argument("--steps", type=int, default=None,
                        help="Timed steps per repeat. Default: 3 (full), 5 (quick).")
    parser.add_argument("--warmup", type=int, default=None,
                        help="Untimed steps first (tracing/compilation). Default: 2.")
    parser.add_argument("--clip-seconds", type=float, default=None,
                        help="Clip length of synthetic data and the model input. Default: 5 "
                             "(full), 1 (quick). Ignored with --data (its clips' length).")
    parser.add_argument("--epochs", type=int, default=None,
                        help="Epochs of the CV projection. Default: the default preset's (100).")
    # For tests: the number of synthetic clips.
    parser.add_argument("--clips", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    args.jit_on_for = preset["jit_on_for"] if args.jit is None and args.models is None else None
    args.jit_given = args.jit is not None
    if args.models is not None:
        args.models = _csv(parser, "--models", args.models)
    if args.batch_sizes is None:
        args.batch_sizes = preset["batch_sizes"]
    else:
        args.batch_sizes = _csv(parser, "--batch-sizes", args.batch_sizes, cast=int)
        if min(args.batch_sizes) < 1:
            parser.error("--batch-sizes must be positive")
    args.policies = (preset["policies"] if args.policies is None
                     else _csv(parser, "--policies", args.policies, POLICIES))
    args.jit = (None if args.jit is None else _csv(parser, "--jit", args.jit, ("off", "on")))
    args.feeds = _csv(parser, "--feeds", args.feeds, FEEDS)
    for name in ("steps", "warmup", "repeats", "clips", "clip_seconds"):
        if getattr(args, name) is None:
            setattr(args, name, preset[name])
    for name in ("steps", "repeats", "clips", "epochs"):
        common.check_positive(parser, "--" + name, getattr(args, name))
    if args.warmup < 1:
        parser.error("--warmup must be >= 1 (the first step traces and compiles)")
    if args.clip_seconds <= 0:
        parser.error("--clip-seconds must be positive")
    if args.data is not None and not (Path(args.data) / "manifest.json").is_file():
        parser.error(f"--data {args.data}: no manifest.json (not a `build-tfrecords` folder)")
    return args


def _frontend_module():
    """bench_frontend.py (same folder): device detection and the policy context."""
    from benchmarks import bench_frontend

    return bench_frontend


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


def have_tensorflow():
    return importlib.util.find_spec("tensorflow") is not None


def synthesize_tfrecords(clips, clip_seconds, workdir):
    """Synthetic TFRecords: 50 classes, >= 5 clips per class (every fold holds every class)."""
    from esc50tf.data.synth import SynthConfig, synthesize_tfrecords

    per_class = max(5, math.ceil(clips / NUM_CLASSES))
    out = Path(workdir) / "tfrecords"
    synthesize_tfrecords(Path(workdir) / "synth", out,
                         SynthConfig(num_classes=NUM_CLASSES, clips_per_class=per_class,
                                     sample_rate=SAMPLE_RATE, clip_seconds=clip_seconds),
                         progress=False, log=lambda _: None)
    return out


class TFRecordFeed:
    """`TFRecordFolder.dataset` over every fold: training mode, one-hot labels, repeated forever."""

    def __init__(self, folder, batch_size, backend_name):
        from esc50tf.data.dataset import DatasetOptions
        from esc50tf.data.splits import Selection

        self.ds = folder.dataset(Selection(folds=tuple(folder.folds)), DatasetOptions(
            training=True, batch_size=batch_size, seed=0, one_hot=True, repeat=True))
        self.it = (iter(self.ds) if backend_name == "tensorflow"
                   else self.ds.as_numpy_iterator())

    def __call__(self):
        return next(self.it)


# --------------------------------------------------------------------------
# One configuration
# --------------------------------------------------------------------------


def model_rate(name, sample_rate):
    """The rate `name` runs at: its own for a PANNs model, else the data's."""
    from esc50tf.models import panns
    from esc50tf.pretrained import architectures
    from esc50tf.run_config import resolve_config

    arch = panns.architecture_of(resolve_config(name, "default").model)
    return architectures.get(arch)["sample_rate"] if arch else sample_rate


def build(name, policy, jit, num_samples, sample_rate, num_classes):
    """The compiled model; the global policy is restored before returning."""
    from esc50tf.models.build import build_model
    from esc50tf.run_config import resolve_config
    from esc50tf.tasks.keras_task import make_optimizer

    cfg = resolve_config(name, "default")
    # The default preset's front end (log-Mel 128, n_fft 2048, hop 512) at the data's rate;
    # a PANNs model's own front end (resolve_config sets it) at its own rate.
    features = dataclasses.replace(cfg.features, sample_rate=model_rate(name, sample_rate))
    with _frontend_module().global_policy(policy):
        model = build_model(cfg.model, features, num_classes, num_samples)
        # The default recipe's schedule needs an epoch length; any count times the same steps.
        model.compile(make_optimizer(cfg.train, steps_per_epoch=100),
                      loss="categorical_crossentropy",
                      metrics=["accuracy"], jit_compile=jit)
    return model, features, cfg


def time_steps(model, next_batch, steps):
    """`steps` synchronised train steps: (per-step seconds, Timing of the whole window)."""
    per_step = []
    with common.timed() as window:
        for _ in range(steps):
            t0 = time.perf_counter()
            x, y = next_batch()  # a pipeline that cannot keep up shows here
            model.train_on_batch(x, y)  # returns numpy logs: the step has finished
            per_step.append(time.perf_counter() - t0)
            window.clips += int(y.shape[0])
    return per_step, window


def time_fit(model, fit, steps, batch):
    """One `fit(steps)` call timed whole: (its mean step time x steps, Timing)."""
    with common.timed(clips=steps * batch) as window:
        fit(steps)
    return [window.wall_s / steps] * steps, window


def fit_feeds(model, cfg, x, y, feeds):
    """{feed: fit(steps)} over the in-memory batch repeated, for the fit feeds in `feeds`."""
    import tensorflow as tf

    from esc50tf.tasks import get_task

    dataset = tf.data.Dataset.from_tensors((x, y)).repeat()
    task = get_task(cfg.model.name)
    runs = {
        "fit": lambda steps: task.fit(model, dataset, None, cfg, epochs=1,
                                      steps_per_epoch=steps, verbose=0),
        "fit-nocheck": lambda steps: model.fit(dataset, epochs=1, steps_per_epoch=steps,
                                               verbose=0, shuffle=False),
    }
    return {feed: runs[feed] for feed in FIT_FEEDS if feed in feeds}


def check_cost_us(model, calls=20000, rounds=5):
    """Microseconds per batch that Keras' callback dispatch spends on the Ctrl-C check:
    `on_train_batch_end` of a CallbackList with `KerasTask.fit`'s check minus one without
    (the fastest of `rounds` interleaved rounds of `calls` calls each)."""
    import keras

    from esc50tf.tasks.callbacks import interrupt_check

    logs = {"loss": 0.5, "accuracy": 0.5}
    lists = {"with": keras.callbacks.CallbackList([interrupt_check()], add_history=True,
                                                  model=model),
             "without": keras.callbacks.CallbackList([], add_history=True, model=model)}
    per_call = {name: math.inf for name in lists}
    for _ in range(rounds):
        for name, callback_list in lists.items():
            t0 = time.perf_counter()
            for batch in range(calls):
                callback_list.on_train_batch_end(batch, logs)
            per_call[name] = min(per_call[name], 1e6 * (time.perf_counter() - t0) / calls)
    return round(per_call["with"] - per_call["without"], 3)


def run_config(name, policy, jit, batch, data, args, backend, skipped):
    """Results of one (model, policy, jit, batch) for each feed."""
    import keras

    label = f"{name}-{policy}-{'xla' if jit else 'noxla'}-b{batch}"
    common.log(f"{label}: building")
    rate = model_rate(name, data["sample_rate"])
    num_samples = int(round(data["num_samples"] * rate / data["sample_rate"]))
    t0 = time.perf_counter()
    try:
        model, features, cfg = build(name, policy, jit, num_samples, data["sample_rate"],
                                     data["num_classes"])
    except Exception as e:  # noqa: BLE001 - recorded, the rest still runs
        skipped.append({"variant": label, "reason": f"build failed: {type(e).__name__}: {e}"})
        return [], None
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    if data["clips"] is not None:
        x = np.resize(data["clips"][:, :num_samples], (batch, num_samples)).astype(np.float32)
    else:
        x = (0.1 * rng.standard_normal((batch, num_samples))).astype(np.float32)
    y = np.eye(data["num_classes"], dtype=np.float32)[rng.integers(0, data["num_classes"], batch)]
    xm, ym = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)
    feeds = {}
    if "memory" in args.feeds:
        feeds["memory"] = lambda: (xm, ym)
    if "tfrecord" in args.feeds:
        if data["tfrecord_dir"] is None:
            skipped.append({"variant": f"{label}-tfrecord", "reason": data["tfrecord_reason"]})
        elif rate != data["sample_rate"]:
            skipped.append({"variant": f"{label}-tfrecord",
                            "reason": f"the TFRecords hold {data['sample_rate']} Hz clips; {name} "
                                      f"takes {rate} Hz (pass --data built with --sample-rate "
                                      f"{rate})"})
        else:
            try:
                feeds["tfrecord"] = TFRecordFeed(data["folder"], batch,
                                                 backend.name)
            except Exception as e:  # noqa: BLE001
                skipped.append({"variant": f"{label}-tfrecord",
                                "reason": f"{type(e).__name__}: {e}"})
    fits = {}
    if any(feed in args.feeds for feed in FIT_FEEDS):
        if backend.name != "tensorflow":
            skipped += [{"variant": f"{label}-{feed}", "reason": "KerasTask.fit trains under "
                         "TensorFlow (tf.data input)"} for feed in FIT_FEEDS if feed in args.feeds]
        else:
            fits = fit_feeds(model, cfg, x, y, args.feeds)
    try:
        # Warm-up: the first step traces and compiles; every feed is started.
        t0 = time.perf_counter()
        model.train_on_batch(xm, ym)
        first_step_s = time.perf_counter() - t0
        warm = {}
        for feed, fn in feeds.items():
            t0 = time.perf_counter()
            for _ in range(args.warmup - (1 if feed == "memory" else 0)):
                model.train_on_batch(*fn())
            warm[feed] = round(time.perf_counter() - t0, 3)
        for feed, fit in fits.items():  # fit traces its own train function
            t0 = time.perf_counter()
            fit(args.warmup)
            warm[feed] = round(time.perf_counter() - t0, 3)
        timers = {f: lambda fn=fn: time_steps(model, fn, args.steps) for f, fn in feeds.items()}
        timers.update({f: lambda fit=fit: time_fit(model, fit, args.steps, batch)
                       for f, fit in fits.items()})
        steps = {f: [] for f in timers}
        windows = {f: [] for f in timers}
        for _ in range(args.repeats):  # feeds interleaved
            for feed, timer in timers.items():
                per_step, window = timer()
                steps[feed] += per_step
                windows[feed].append(window)
        check_us = check_cost_us(model) if "fit" in fits else None
    except Exception as e:  # noqa: BLE001 - e.g. out of memory at a large batch
        skipped.append({"variant": label, "reason": f"{type(e).__name__}: {str(e)[:300]}"})
        return [], None
    finally:
        del model
        keras.backend.clear_session()
        gc.collect()
    results = []
    for feed in steps:
        step_s = statistics.median(steps[feed])
        projection = common.cv_projection(batch, step_s, args.epochs)
        results.append(common.summarise(
            f"{label}-{feed}", windows[feed],
            variant=feed, model=name, policy=policy, jit_compile=jit, batch_size=batch,
            feed=feed, step_ms_median=round(1000 * step_s, 2),
            step_ms_min=round(1000 * min(steps[feed]), 2),
            step_ms_max=round(1000 * max(steps[feed]), 2),
            examples_per_s=round(batch / step_s, 2),
            timed_steps=len(steps[feed]), warmup_steps=args.warmup,
            first_step_s=round(first_step_s, 3), warmup_s=warm[feed], build_s=round(build_s, 3),
            **projection,
        ))
        if feed == "fit":
            results[-1].update(check_us_per_batch=check_us,
                               check_fraction_of_step=round(check_us / (1e6 * step_s), 6))
        common.log(f"{label}-{feed}: {1000 * step_s:.1f} ms/step, {batch / step_s:.1f} ex/s, "
                   f"epoch {projection['epoch_s']:.1f} s, 5-fold CV x{args.epochs} ~ "
                   f"{projection['cv5_projected_h']:.2f} h")
    return results, features


def load_data(args, workdir):
    """Clip length, classes, the TFRecord folder (or why not) and a batch of real clips."""
    data = {"sample_rate": SAMPLE_RATE, "num_classes": NUM_CLASSES, "clips": None,
            "tfrecord_dir": None, "folder": None, "tfrecord_reason": None,
            "num_samples": int(round(args.clip_seconds * SAMPLE_RATE)), "origin": None}
    if not have_tensorflow():
        data["tfrecord_reason"] = ("skipped: TensorFlow (tf.data, TFRecords) is not installed; "
                                   "only the in-memory feed ran")
        data["origin"] = "random normal waveforms (std 0.1)"
        if args.data:
            common.log("--data ignored: TensorFlow is not installed")
        return data
    from esc50tf.data.dataset import DatasetOptions, TFRecordFolder
    from esc50tf.data.splits import Selection

    if args.data:
        tf_dir = Path(args.data)
        data["origin"] = f"--data {tf_dir}"
    else:
        common.log(f"synthesising {args.clips} clips of {args.clip_seconds:g} s")
        tf_dir = synthesize_tfrecords(args.clips, args.clip_seconds, workdir)
        data["origin"] = (f"synthetic: esc50tf.data.synth, 50 classes, "
                          f"{args.clip_seconds:g} s at {SAMPLE_RATE} Hz")
    folder = TFRecordFolder(tf_dir)
    manifest = folder.manifest
    data.update(tfrecord_dir=tf_dir, folder=folder,
                sample_rate=int(manifest["config"]["sample_rate"]),
                num_samples=int(manifest["config"]["num_samples"]),
                num_classes=int(manifest["num_classes"]))
    data["total_clips"] = int(sum(manifest["counts"]["per_fold"].values())) \
        if "counts" in manifest else None
    # The in-memory batch: the first clips of the data, repeated to fill it.
    ds = folder.dataset(Selection(folds=tuple(folder.folds)),
                        DatasetOptions(batch_size=64, cache=False))
    for x, _ in ds.take(1).as_numpy_iterator():
        data["clips"] = x
    return data


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def render_markdown(payload):
    dev, cfg, env = payload["device"], payload["config"], payload["environment"]
    results = payload["results"]
    columns = [
        ("name", lambda r: f"`{r['name']}`"),
        ("clips/s", lambda r: r["clips_per_s"]),
        ("x reference", lambda r: r.get("ratio_to_reference")),
        ("step ms (median)", lambda r: r["step_ms_median"]),
        ("examples/s (median step)", lambda r: r["examples_per_s"]),
        ("first step s", lambda r: r["first_step_s"]),
        ("epoch s", lambda r: r["epoch_s"]),
        (f"5-fold CV h (projected, {cfg['epochs']} ep)", lambda r: r["cv5_projected_h"]),
    ]
    if dev["label"] == "cpu":
        columns.insert(5, ("CPU ms/clip", lambda r: r.get("cpu_ms_per_clip")))
    seconds = cfg["num_samples"] / cfg["sample_rate"]
    lines = [
        f"# bench_train ({payload['mode']}, {dev['label'].upper()})",
        "",
        f"{payload['created']}; {dev['name']} ({dev['kind']}), Keras backend "
        f"{env['keras_backend']}; " + ", ".join(f"{k} {v}" for k, v in cfg["versions"].items())
        + f"; load average {env['loadavg_at_start']} at start, {env.get('loadavg_at_end')} "
        "at end.",
        "",
        f"Input: {cfg['num_samples']} samples ({seconds:g} s at {cfg['sample_rate']} Hz)"
        + (" - SHORTER than ESC-50's 5 s clips (quick mode)" if seconds < 5 else "")
        + f"; log-Mel {cfg['features']['n_mels']}, n_fft {cfg['features']['n_fft']}, "
        f"hop {cfg['features']['hop_length']} inside the model; {cfg['num_classes']} classes; "
        f"{cfg['optimizer']}; data: {cfg['data']}. {cfg['warmup']} warm-up step(s), then "
        f"{cfg['repeats']} repeat(s) of {cfg['steps']} timed step(s) per feed.",
        "",
        "`x reference` = clips/s of this feed / clips/s of the `memory` feed of the same "
        "model, policy, jit and batch: about 1 means the TFRecord pipeline keeps the device "
        "busy. clips/s = best repeat window; step ms and examples/s from the median step.",
        "",
        f"Epoch = {EPOCH_CLIPS} training clips (floor(1600 / batch) steps). 5-fold CV is a "
        f"PROJECTION: {CV_FOLDS} folds x {cfg['epochs']} epochs x steps/epoch x median step "
        "time (no early stopping, validation or test passes, augmentation or first-step "
        "compilation).",
        "",
        common.markdown_table(results, columns),
    ]
    if payload["skipped"]:
        lines += ["", "## Skipped", ""] + [f"- {s['variant']}: {s['reason']}"
                                          for s in payload["skipped"]]
    return "\n".join(lines)


def main(argv=None):
    args, environment = common.start(parse_args, argv)
    bf = _frontend_module()
    backend = bf.Backend()
    device = backend.device()
    from esc50tf.models import registry

    keras_models = [s.name for s in registry.specs() if s.keras]
    models = args.models or (QUICK_MODELS if args.quick else tuple(keras_models))
    bad = [m for m in models if m not in keras_models]
    if bad:
        raise SystemExit(f"--models: not registered Keras models: {', '.join(bad)}; "
                         f"choose from {', '.join(keras_models)}")
    if args.jit is None:
        args.jit = ("on",) if backend.name == "jax" else (
            QUICK["jit"] if args.quick else FULL["jit"])
    skipped = []
    if backend.name == "jax" and not args.jit_given:
        skipped.append({"variant": "jit_compile=off",
                        "reason": "JAX backend: without jit Keras runs eagerly op by op; "
                                  "pass --jit off,on to time it anyway"})
    common.log(f"{backend.name} on {device['name']} ({device['label']}); models "
               f"{','.join(models)}; batches {args.batch_sizes}; policies {args.policies}; "
               f"jit {args.jit}; feeds {args.feeds}")
    from esc50tf.run_config import resolve_config

    default = resolve_config(models[0], "default")
    args.epochs = args.epochs or default.train.epochs
    results, features = [], None
    with tempfile.TemporaryDirectory(prefix="bench_train-") as workdir:
        data = load_data(args, workdir)
        for name in models:
            jits = list(args.jit)
            if args.jit_on_for and name in args.jit_on_for and "on" not in jits \
                    and backend.name != "jax":
                jits.append("on")
            for policy in args.policies:
                for jit in jits:
                    for batch in args.batch_sizes:
                        out, f = run_config(name, policy, jit == "on", batch, data, args,
                                            backend, skipped)
                        results += out
                        features = features or f
    if not results:
        raise SystemExit(f"no configuration ran: {skipped}")
    common.add_ratios(results, REFERENCE, match=("model", "policy", "jit_compile", "batch_size"))
    epochs = args.epochs
    t = default.train
    payload = common.backend_payload(SCRIPT, args, argv, device, environment, backend, {
        "models": list(models),
        "batch_sizes": list(args.batch_sizes),
        "policies": list(args.policies),
        "jit_compile": list(args.jit),
        "jit_on_also_for": list(args.jit_on_for or ()),
        "feeds": list(args.feeds),
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "sample_rate": data["sample_rate"],
        "num_samples": data["num_samples"],
        "clip_seconds": data["num_samples"] / data["sample_rate"],
        "shorter_than_esc50": data["num_samples"] < 5 * data["sample_rate"],
        "num_classes": data["num_classes"],
        "data": data["origin"],
        "data_clips": data.get("total_clips"),
        "features": {k: getattr(features, k) for k in ("kind", "n_fft", "hop_length",
                                                       "n_mels")},
        "optimizer": f"{t.optimizer} lr {t.lr} weight decay {t.weight_decay} "
                     "(tasks.keras_task.make_optimizer, default preset)",
        "loss": "categorical_crossentropy (one-hot labels, as with mixup)",
        "epochs": epochs,
        "epoch_clips": EPOCH_CLIPS,
        "cv_folds": CV_FOLDS,
    })
    payload.update({
        "reference": REFERENCE,
        "results": results,
        "skipped": skipped,
        "notes": [
            "Step = one model.train_on_batch call (forward, backward, AdamW update, logs "
            "copied to the host, so every step is synchronised); tfrecord steps include "
            "taking the next batch from the prefetching tf.data iterator.",
            "fit / fit-nocheck (when asked for): one `fit` call of `steps` steps over the "
            "in-memory batch, timed whole, step = its time / steps; `fit` is KerasTask.fit "
            "(the per-batch Ctrl-C check), `fit-nocheck` model.fit without it. "
            "check_us_per_batch: the check's own cost per batch, timed apart (20,000 calls of "
            "Keras' on_train_batch_end with and without it), and its share of the median step.",
            "The first step (tracing/compilation) and the other warm-up steps are excluded; "
            "first_step_s records the first one.",
            "cv5_projected = 5 x epochs x floor(1600 / batch) x median step time: a "
            "projection, not a measured run. The default recipe stops early on a validation "
            "split (10 % of the training folds, so 1,440 clips are actually fitted), adds "
            "SpecAugment / time shift / mixup and evaluates every epoch; none of that is timed.",
            "Models are built without augmentation layers and without adapting the "
            "per-frequency normalisation (its statistics do not change the cost).",
            "mixed_bfloat16 on a CPU is emulated (no bfloat16 matmul units on most CPUs): "
            "it shows the cost here, not on accelerators.",
        ],
    })
    common.write_report(args.out, device["label"], payload, render_markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
