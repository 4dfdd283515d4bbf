"""Front-end throughput: esc50tf's STFT / Mel / MFCC layers on the present device.

Clips per second of the layers that `esc50tf.frontend.build_frontend` makes
(log-STFT, log-Mel 128, MFCC 20; n_fft 2048, hop 512; 5 s clips at 44.1 kHz)
on in-memory random waveforms already on the device, for batch sizes 32 to
1024: float32 against the `mixed_bfloat16` and `mixed_float16` policies (the
global policy is restored afterwards), each without and with XLA, and
`keras.layers.MelSpectrogram` with the same settings in the same run. Each
entry also gives the analytic FLOPs per clip and the fraction of the device's
FP32 peak that they reach.

Runs on the Keras backend in use (`KERAS_BACKEND`):

- tensorflow: "without XLA" is `tf.function` (a graph), "with XLA" is
  `tf.function(jit_compile=True)` around the layer call; device from
  `tf.config`.
- jax: "without XLA" is eager, op by op; "with XLA" is `jax.jit` around the
  layer call; device from `jax.devices()`. TensorFlow is neither imported nor
  needed.

Usage:
    python -m benchmarks.bench_frontend --quick               # < 2 min on 2 CPU cores
    python -m benchmarks.bench_frontend                       # batches 32..1024
    KERAS_BACKEND=jax python -m benchmarks.bench_frontend     # JAX, e.g. on a GPU

Writes `OUT/bench_frontend-<quick|full>-<device>.json` and `.md` (OUT defaults
to benchmarks/results; device is cpu, gpu or tpu) and prints the tables.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import common

SCRIPT = "bench_frontend"
REFERENCE = "esc50tf-mel-float32-xla"
KINDS = ("stft", "mel", "mfcc")
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
FEATURES = dict(n_fft=2048, hop_length=512, n_mels=128, n_mfcc=20)
SAMPLE_RATE = 44100
CLIP_SECONDS = 5.0
FULL_BATCHES = (32, 64, 128, 256, 512, 1024)
QUICK_BATCHES = (32,)
# Seconds one timed repeat should last at least (calls are repeated to fill it).
MIN_REPEAT_S = {True: 0.05, False: 0.5}  # quick, full
# Host memory a batch may use on CPU, as a share of MemAvailable; the
# un-fused STFT holds several [frames, n_fft] float32 copies per clip.
CPU_MEMORY_SHARE = 0.5
STFT_COPIES = 6


def parse_args(argv=None):
    parser = common.make_parser(
        __doc__.split("\n\n")[0],
        full_help="batch sizes 32..1024, 3 timed repeats of >= 0.5 s.",
        quick_help="batch size 32, 1 timed repeat.",
        data_help="Its sample rate and clip length, and (where TensorFlow is installed) "
                  "its first clips as input. Default: random 5 s waveforms at 44.1 kHz.",
    )
    parser.add_argument("--batch-sizes", default=None,
                        help="Comma-separated batch sizes. Default: 32,64,128,256,512,1024 "
                             "(full), 32 (quick).")
    parser.add_argument("--peak-gflops", type=float, default=None,
                        help="The device's FP32 peak in GFLOP/s, when it is not known "
                             "(CPUs are estimated from /proc/cpuinfo, common GPUs from a table).")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    common.check_positive(parser, "--repeats", args.repeats)
    if args.batch_sizes is None:
        args.batch_sizes = QUICK_BATCHES if args.quick else FULL_BATCHES
    else:
        try:
            args.batch_sizes = tuple(sorted({int(b) for b in args.batch_sizes.split(",") if b}))
        except ValueError:
            parser.error(
                f"--batch-sizes must be comma-separated integers, got {args.batch_sizes!r}")
        if not args.batch_sizes or min(args.batch_sizes) < 1:
            parser.error("--batch-sizes must be positive integers")
    if args.data is not None and not (Path(args.data) / "manifest.json").is_file():
        parser.error(f"--data {args.data}: no manifest.json (not a `build-tfrecords` folder)")
    return args


# --------------------------------------------------------------------------
# Backends and devices
# --------------------------------------------------------------------------


class Backend:
    """Device detection, placement, compilation and synchronisation per backend."""

    def __init__(self):
        import keras

        self.name = keras.backend.backend()
        if self.name not in ("tensorflow", "jax"):
            raise SystemExit(
                f"bench_frontend supports KERAS_BACKEND=tensorflow or jax; got {self.name!r}"
            )

    def device(self):
        """{"label": cpu/gpu/tpu, "kind", "name", "count", ...}."""
        if self.name == "jax":
            import jax

            devices = jax.devices()
            platform = devices[0].platform.lower()
            name = devices[0].device_kind
            count = len(devices)
        else:
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            tpus = tf.config.list_logical_devices("TPU")
            if gpus:
                platform, count = "gpu", len(gpus)
                details = tf.config.experimental.get_device_details(gpus[0])
                name = details.get("device_name", "GPU")
            elif tpus:
                platform, name, count = "tpu", "TPU", len(tpus)
            else:
                platform, name, count = "cpu", None, 1
        label = {"cuda": "gpu", "rocm": "gpu"}.get(platform, platform)
        out = {"label": label, "kind": label.upper(), "count": count,
               "backend": self.name, "used": "the first device only"}
        if label == "cpu":
            cpu = common.cpu_description()
            out.update(cpu, name=cpu["model"])
        else:
            out["name"] = name
            peak = common.gpu_peak_gflops(name) if label == "gpu" else None
            out["peak_fp32_gflops"] = peak
            out["peak_assumption"] = (
                "vendor FP32 (non-tensor-core) peak of the named GPU; the front end's FFT, "
                "filterbank and log run in float32 under every policy"
                if peak else "unknown device: pass --peak-gflops"
            )
        return out

    def put(self, array):
        """A device copy of the numpy `array`."""
        if self.name == "jax":
            import jax

            return jax.device_put(array)
        import tensorflow as tf

        device = "/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0"
        with tf.device(device):
            return tf.identity(tf.constant(array))

    def compile(self, fn, xla):
        """`fn` as it will be timed; the second value says how it runs."""
        if self.name == "jax":
            import jax

            return (jax.jit(fn), "jax.jit") if xla else (fn, "eager, op by op")
        import tensorflow as tf

        if xla:
            return tf.function(fn, jit_compile=True), "tf.function(jit_compile=True)"
        return tf.function(fn, jit_compile=False), "tf.function (graph, no XLA)"

    def sync(self, out):
        """Waits until `out` is computed (without copying it to the host)."""
        if self.name == "jax":
            import jax

            jax.block_until_ready(out)
        else:
            import tensorflow as tf

            tf.test.experimental.sync_devices()
            out.shape  # noqa: B018  (eager tensors are ready once synced)

    def is_out_of_memory(self, error):
        text = f"{type(error).__name__}: {error}"
        return any(k in text for k in ("RESOURCE_EXHAUSTED", "ResourceExhausted",
                                       "out of memory", "OOM", "MemoryError"))

    def versions(self):
        import keras

        out = {"keras": keras.__version__}
        if self.name == "jax":
            import jax

            out["jax"] = jax.__version__
        else:
            import tensorflow as tf

            out["tensorflow"] = tf.__version__
        return out


@contextlib.contextmanager
def global_policy(name):
    """Sets the Keras global dtype policy; restores the previous one on exit."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


# --------------------------------------------------------------------------
# Layers, FLOPs
# --------------------------------------------------------------------------


def make_layer(variant, sample_rate):
    """The layer of `variant` ("esc50tf-<kind>" or "keras-melspectrogram")."""
    import keras

    from esc50tf.frontend import FeatureConfig, build_frontend

    if variant == "keras-melspectrogram":
        return keras.layers.MelSpectrogram(
            fft_length=FEATURES["n_fft"], sequence_stride=FEATURES["hop_length"],
            sequence_length=FEATURES["n_fft"], num_mel_bins=FEATURES["n_mels"],
            sampling_rate=sample_rate, min_freq=0.0, max_freq=sample_rate / 2,
        )
    kind = variant.split("-", 1)[1]
    return build_frontend(FeatureConfig(kind=kind, sample_rate=sample_rate, **FEATURES))


def flops_per_clip(kind, num_samples):
    """Analytic FLOPs of one clip, by step.

    Per frame (frames = 1 + samples // hop, centred): window n_fft
    multiplies; FFT 5 N log2 N (the usual complex-FFT count; a real FFT needs
    about half); |X|^2 3 per bin; Mel matmul 2 x bins x n_mels; dB 3 per
    output value (floor, log, scale); DCT 2 x n_mels x n_mfcc. Padding and
    framing move data and count as 0.
    """
    n = FEATURES["n_fft"]
    frames = 1 + num_samples // FEATURES["hop_length"]
    bins = n // 2 + 1
    steps = {
        "window": frames * n,
        "fft": frames * 5 * n * math.log2(n),
        "power": frames * bins * 3,
    }
    if kind == "stft":
        steps["log"] = frames * bins * 3
    else:
        steps["mel_matmul"] = frames * 2 * bins * FEATURES["n_mels"]
        steps["log"] = frames * FEATURES["n_mels"] * 3
    if kind == "mfcc":
        steps["dct"] = frames * 2 * FEATURES["n_mels"] * FEATURES["n_mfcc"]
    steps = {k: int(v) for k, v in steps.items()}
    return {"total": sum(steps.values()), "frames": frames, "steps": steps}


def estimated_bytes(batch, num_samples):
    """Rough peak working set of one batch through an un-fused STFT."""
    overlap = FEATURES["n_fft"] / FEATURES["hop_length"]
    return int(batch * num_samples * 4 * overlap * STFT_COPIES)


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------


def time_calls(backend, fn, x, repeats, min_repeat_s):
    """First call (compile + run) and `repeats` timed repeats of `fn(x)`.

    Each repeat makes enough calls to last `min_repeat_s`, estimated from a
    second, untimed call. Returns (first_call_s, [(calls, wall_s, cpu_s)]).
    """
    t0 = time.perf_counter()
    backend.sync(fn(x))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    backend.sync(fn(x))
    one = max(time.perf_counter() - t0, 1e-6)
    calls = max(1, math.ceil(min_repeat_s / one))
    runs = []
    for _ in range(repeats):
        with common.timed() as t:
            for _ in range(calls):
                out = fn(x)
            backend.sync(out)
        runs.append((calls, t.wall_s, t.cpu_s))
    return first, runs


def run_variant(backend, variant, policy, xla, inputs, args, device, flops, skipped):
    """Times one (layer, policy, XLA) variant at every batch size."""
    import keras

    name = f"{variant}-{policy}" + ("-xla" if xla else "")
    results = []
    with global_policy(policy):
        try:
            layer = make_layer(variant, inputs["sample_rate"])
            # Build eagerly, outside any trace.
            out_dtype = keras.backend.standardize_dtype(
                layer(inputs["x"][inputs["batches"][0]][:1]).dtype)
        except Exception as error:  # a layer that cannot run under this policy
            skipped.append({"variant": name, "reason": f"{type(error).__name__}: {error}"[:300]})
            return results
        fn, execution = backend.compile(lambda x: layer(x), xla)
        for batch in inputs["batches"]:
            x = inputs["x"][batch]
            try:
                first, runs = time_calls(backend, fn, x, args.repeats, MIN_REPEAT_S[args.quick])
            except Exception as error:
                reason = "out of memory" if backend.is_out_of_memory(error) else (
                    f"{type(error).__name__}: {error}"[:300])
                skipped.append({"variant": name, "batch_size": batch, "reason": reason})
                if backend.is_out_of_memory(error):
                    break
                continue
            timings = [common.Timing(clips=c * batch, wall_s=w, cpu_s=u) for c, w, u in runs]
            entry = common.summarise(
                f"{name}-b{batch}", timings, variant=name, layer=variant, policy=policy,
                xla=xla, execution=execution, batch_size=batch, output_dtype=out_dtype,
                calls_per_repeat=runs[0][0],
                first_call_s=round(first, 4),
            )
            if device["label"] != "cpu":
                entry.pop("cpu_ms_per_clip", None)  # host CPU time says nothing here
            kind = "mel" if variant == "keras-melspectrogram" else variant.split("-", 1)[1]
            per_clip = flops[kind]["total"]
            gflops = per_clip * entry["clips_per_s"] / 1e9
            entry["flops_per_clip"] = per_clip
            entry["gflops_per_s"] = round(gflops, 2)
            peak = device.get("peak_fp32_gflops")
            entry["fraction_of_peak"] = round(gflops / peak, 5) if peak else None
            entry["description"] = (
                f"{variant} under {policy}, {execution}, batch {batch}"
            )
            results.append(entry)
            common.log(f"{entry['name']}: {entry['clips_per_s']:.1f} clips/s")
    return results


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------


def load_inputs(args, backend, device):
    """Waveforms on the device for each batch size, and what they are."""
    sample_rate, num_samples, origin = SAMPLE_RATE, int(SAMPLE_RATE * CLIP_SECONDS), "random"
    real = None
    if args.data:
        manifest = json.loads((Path(args.data) / "manifest.json").read_text())
        sample_rate = int(manifest["config"]["sample_rate"])
        num_samples = int(manifest["config"]["num_samples"])
        real, origin = read_clips(args.data, max(args.batch_sizes))
    batches, skipped = [], []
    available = common.memory_available_bytes()
    for b in args.batch_sizes:
        need = estimated_bytes(b, num_samples)
        if device["label"] == "cpu" and available and need > CPU_MEMORY_SHARE * available:
            skipped.append({"batch_size": b, "reason": (
                f"needs about {need / 2**30:.1f} GiB, more than {CPU_MEMORY_SHARE:.0%} of the "
                f"{available / 2**30:.1f} GiB of host memory available")})
            continue
        batches.append(b)
    if not batches:
        raise SystemExit(f"no batch size fits in memory: {skipped}")
    rng = np.random.default_rng(0)
    largest = max(batches)
    if real is not None:
        reps = math.ceil(largest / len(real))
        waves = np.tile(real, (reps, 1))[:largest]
    else:
        waves = (0.1 * rng.standard_normal((largest, num_samples))).astype(np.float32)
    x = {b: backend.put(waves[:b]) for b in batches}
    return {"x": x, "batches": batches, "sample_rate": sample_rate,
            "num_samples": num_samples, "origin": origin}, skipped


def read_clips(tfrecord_dir, n):
    """Up to `n` float32 clips from TFRecords (needs TensorFlow), else None."""
    if importlib.util.find_spec("tensorflow") is None:
        return None, "random (TensorFlow, which reads TFRecords, is not installed)"
    from esc50tf.data.dataset import DatasetOptions, TFRecordFolder
    from esc50tf.data.splits import Selection

    folder = TFRecordFolder(tfrecord_dir)
    ds = folder.dataset(Selection(folds=tuple(folder.folds)),
                        DatasetOptions(batch_size=min(n, 256), cache=False))
    clips = []
    for x, _ in ds.as_numpy_iterator():
        clips.append(x)
        if sum(len(c) for c in clips) >= n:
            break
    origin = f"the first clips of {tfrecord_dir} (repeated to fill a batch)"
    return np.concatenate(clips)[:n], origin


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def render_markdown(payload):
    dev = payload["device"]
    cfg = payload["config"]
    env = payload["environment"]
    results = payload["results"]
    batches = cfg["batch_sizes"]
    variants = list(dict.fromkeys(r["variant"] for r in results))
    best = []
    for v in variants:
        rows = [r for r in results if r["variant"] == v]
        best.append(max(rows, key=lambda r: r["clips_per_s"]))
    peak = dev.get("peak_fp32_gflops")
    columns = [
        ("name", lambda r: f"`{r['name']}`"),
        ("clips/s", lambda r: r["clips_per_s"]),
        ("x reference", lambda r: r.get("ratio_to_reference")),
        ("GFLOP/s", lambda r: r["gflops_per_s"]),
        ("% of peak", lambda r: None if r["fraction_of_peak"] is None
         else 100.0 * r["fraction_of_peak"]),
        ("first call s", lambda r: r["first_call_s"]),
        ("how", lambda r: r["execution"]),
    ]
    if dev["label"] == "cpu":
        # Other load on a shared CPU moves clips/s much more than CPU time.
        columns.insert(3, ("CPU ms/clip", lambda r: r.get("cpu_ms_per_clip")))
    lines = [
        f"# bench_frontend ({payload['mode']}, {dev['label'].upper()})",
        "",
        f"{payload['created']}; {dev['name']} ({dev['kind']}), Keras backend "
        f"{env['keras_backend']}; " + ", ".join(f"{k} {v}" for k, v in cfg["versions"].items())
        + f"; load average {env['loadavg_at_start']} at start.",
        "",
        f"Input: {cfg['input']} waveforms on the device, {cfg['num_samples']} samples "
        f"({cfg['num_samples'] / cfg['sample_rate']:g} s at {cfg['sample_rate']} Hz). "
        f"n_fft {FEATURES['n_fft']}, hop {FEATURES['hop_length']}, {FEATURES['n_mels']} Mels, "
        f"{FEATURES['n_mfcc']} MFCCs. clips/s is the best of {cfg['repeats']} repeat(s). "
        f"FP32 peak: {peak if peak is not None else 'unknown'} GFLOP/s ({dev['peak_assumption']}).",
        "",
        f"Ratios are to `{payload['reference']}` at the same batch size.",
        "",
        "## Each variant at its best batch size",
        "",
        common.markdown_table(best, columns),
        "",
        "## clips/s by batch size",
        "",
        common.markdown_table(variants, [("variant", lambda v: f"`{v}`")] + [
            (str(b), lambda v, b=b: next((r["clips_per_s"] for r in results
                                          if r["variant"] == v and r["batch_size"] == b), None))
            for b in batches
        ]),
    ]
    if dev["label"] == "cpu":
        lines += [
            "",
            "## CPU ms per clip by batch size (all threads; robust to other load)",
            "",
            common.markdown_table(variants, [("variant", lambda v: f"`{v}`")] + [
                (str(b), lambda v, b=b: next((r.get("cpu_ms_per_clip") for r in results
                                              if r["variant"] == v and r["batch_size"] == b),
                                             None))
                for b in batches
            ]),
        ]
    lines += [
        "",
        "## FLOPs per clip (analytic)",
        "",
        common.markdown_table(list(payload["flops_per_clip"].items()), [
            ("kind", lambda kv: kv[0]),
            ("MFLOP/clip", lambda kv: kv[1]["total"] / 1e6),
            ("of which", lambda kv: ", ".join(
                f"{k} {v / 1e6:.1f}" for k, v in kv[1]["steps"].items())),
        ]),
    ]
    if payload["skipped"]:
        lines += ["", "## Skipped", ""] + [
            f"- {s.get('variant', 'all variants')}"
            + (f" at batch {s['batch_size']}" if "batch_size" in s else "")
            + f": {s['reason']}" for s in payload["skipped"]
        ]
    return "\n".join(lines)


def main(argv=None):
    args, environment = common.start(parse_args, argv)
    backend = Backend()
    device = backend.device()
    if args.peak_gflops:
        device["peak_fp32_gflops"] = args.peak_gflops
        device["peak_assumption"] = "given with --peak-gflops"
    inputs, skipped = load_inputs(args, backend, device)
    flops = {k: flops_per_clip(k, inputs["num_samples"]) for k in KINDS}
    common.log(f"{backend.name} on {device['name']} ({device['label']}); "
               f"batches {inputs['batches']}")

    results = []
    for variant in [f"esc50tf-{k}" for k in KINDS] + ["keras-melspectrogram"]:
        for policy in POLICIES:
            for xla in (False, True):
                results += run_variant(backend, variant, policy, xla, inputs, args, device,
                                       flops, skipped)
    if not results:
        raise SystemExit(f"no variant ran: {skipped}")
    common.add_ratios(results, REFERENCE, match=("batch_size",))

    payload = common.backend_payload(SCRIPT, args, argv, device, environment, backend, {
        "batch_sizes": inputs["batches"],
        "repeats": args.repeats,
        "min_repeat_s": MIN_REPEAT_S[args.quick],
        "sample_rate": inputs["sample_rate"],
        "num_samples": inputs["num_samples"],
        "input": inputs["origin"],
        "features": FEATURES,
        "policies": list(POLICIES),
    })
    payload.update({
        "reference": REFERENCE,
        "flops_per_clip": flops,
        "results": results,
        "skipped": skipped,
        "notes": [
            "clips/s = best repeat; a repeat is as many calls as fill min_repeat_s, timed "
            "until the last output is computed (not copied to the host).",
            "first_call_s = the first call of a batch size: tracing and compilation included.",
            "fraction_of_peak = flops_per_clip x clips/s / FP32 peak; the FFT count is "
            "5 N log2 N per frame (complex-FFT convention), so real FFTs do about half the "
            "counted work.",
            "Mixed policies: esc50tf layers keep the waveform, FFT, filterbank and log in "
            "float32 and cast only the output to the compute dtype; output_dtype says what "
            "each layer returned.",
            "keras.layers.MelSpectrogram keeps its defaults (top_db=80) except the FFT, hop, "
            "Mel bands, rate and min/max frequency, which match esc50tf's log-Mel.",
        ],
    })
    common.write_report(args.out, device["label"], payload, render_markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
