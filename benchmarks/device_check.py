"""One time-budgeted check of esc50tf on the present device (made for a lent GPU).

Runs on the JAX backend (`KERAS_BACKEND=jax`) and needs no TensorFlow. On
in-memory random waveforms of ESC-50 size (5 s at each model's default-recipe
sample rate: 44.1 kHz, or 32 kHz for the pretrained models), it measures, in
this order of priority:

1. the front end (esc50tf's STFT, log-Mel 128 and MFCC 20 layers; n_fft 2048,
   hop 512) in clips/s at several batch sizes, under the float32 and
   mixed_bfloat16 policies, jitted (`bench_frontend.run_variant`);
2. every registered Keras model, trained as `fit` trains it on JAX (Keras'
   own `model.train_step`, jitted, with the default recipe's optimizer):
   step time and examples/s, inference clips/s (`model.stateless_call`,
   jitted), the step's FLOPs (XLA cost analysis of the lowered step) and
   the fraction of the device's dense peak they reach, the compiled step's
   memory (XLA memory analysis) and the device's peak memory, and derived
   from the step time one ESC-50 epoch and a 5-fold cross-validation
   projected at the model's default-recipe epochs. Passes: mixed_bfloat16
   then float32 at the first batch size, then both at the second;
3. a peer: PANNs' PyTorch CNN14 (`panns_inference`) trained and run at the
   same batch size and precision, when `torch` and `panns_inference` import
   and esc50tf registers `cnn14`; else skipped with a note.

`--budget-s` (default 480) bounds the whole run: work whose estimated time no
longer fits is skipped and listed, and a watchdog ends a task still running
when the budget is spent, writing what was measured. Every result is appended
to `OUT/device_check-<mode>-<device>.jsonl` as it is measured, and the JSON
and markdown reports are rewritten after every task, so a run cut short
still returns its measurements (a run the watchdog ended exits with status 3).

Usage (repository root):
    KERAS_BACKEND=jax python -m benchmarks.device_check --out OUT    # the device
    KERAS_BACKEND=jax python -m benchmarks.device_check --quick      # CI: ~35 s of CPU
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import threading
import time

import numpy as np

from benchmarks import common

SCRIPT = "device_check"
POLICIES = ("mixed_bfloat16", "float32")
FRONTEND_KINDS = ("stft", "mel", "mfcc")
NUM_CLASSES = 50
PEER_MODEL = "cnn14"
FULL = dict(frontend_batch_sizes=(32, 128, 512), batch_sizes=(32, 128), clip_seconds=5.0,
            steps=10, warmup=2, repeats=2, models=None)
# Quick (CI on a CPU): the code paths, not the numbers.
QUICK = dict(frontend_batch_sizes=(2,), batch_sizes=(2,), clip_seconds=1.0,
             steps=2, warmup=1, repeats=1, models=("cnn_small", "gru"))
WATCHDOG_EXIT = 3


def parse_args(argv=None):
    parser = common.make_parser(
        __doc__.split("\n\n")[0],
        full_help="front end at batches 32,128,512; every Keras model at batches 32 and 128; "
                  "5 s clips; 2 warm-up + 2 x 10 timed steps.",
        quick_help="front end at batch 2; cnn_small and gru at batch 2; 1 s clips; "
                   "1 warm-up + 2 timed steps.",
        data_help=None,
    )
    parser.add_argument("--budget-s", type=float, default=480.0,
                        help="Wall-clock seconds the whole run may take; what does not fit is "
                             "skipped and listed. Default: 480.")
    parser.add_argument("--models", default=None,
                        help="Comma-separated registered Keras models. Default: all (full), "
                             f"{','.join(QUICK['models'])} (quick).")
    parser.add_argument("--batch-sizes", default=None,
                        help="Training batch sizes, comma-separated. Default: 32,128 (full), "
                             "2 (quick).")
    parser.add_argument("--frontend-batch-sizes", default=None,
                        help="Default: 32,128,512 (full), 2 (quick).")
    parser.add_argument("--policies", default=",".join(POLICIES),
                        help=f"Comma-separated of {','.join(POLICIES)}. Default: both.")
    parser.add_argument("--skip", default="",
                        help="Comma-separated sections to leave out: frontend, train, peer.")
    parser.add_argument("--steps", type=int, default=None,
                        help="Timed training steps per repeat. Default: 10 (full), 2 (quick).")
    parser.add_argument("--warmup", type=int, default=None,
                        help="Untimed steps after compilation. Default: 2 (full), 1 (quick).")
    parser.add_argument("--clip-seconds", type=float, default=None,
                        help="Clip length. Default: 5 (ESC-50; full), 1 (quick).")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for name in ("steps", "warmup", "repeats", "clip_seconds"):
        if getattr(args, name) is None:
            setattr(args, name, preset[name])
    for name in ("steps", "repeats"):
        common.check_positive(parser, "--" + name, getattr(args, name))
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    if not args.clip_seconds > 0:
        parser.error(f"--clip-seconds must be positive, got {args.clip_seconds}")
    if not args.budget_s > 0:
        parser.error(f"--budget-s must be positive, got {args.budget_s}")
    for flag, cast in (("models", str), ("batch_sizes", int), ("frontend_batch_sizes", int)):
        value = getattr(args, flag)
        setattr(args, flag, preset[flag] if value is None else common.parse_csv(
            parser, "--" + flag.replace("_", "-"), value, cast=cast))
    args.policies = common.parse_csv(parser, "--policies", args.policies, POLICIES)
    args.skip = common.parse_csv(parser, "--skip", args.skip, ("frontend", "train", "peer")) \
        if args.skip else ()
    return args


# --------------------------------------------------------------------------
# Budget and partial reports
# --------------------------------------------------------------------------


class Budget:
    """Wall-clock budget: which task still fits, judged from similar tasks.

    A task's estimate is the longest earlier task with the same key (e.g. the
    same model), else the median of earlier tasks of its section, else 0 (the
    first of a section always starts while time is left).

    Args:
        seconds: float. The whole budget.
        clock: callable returning seconds. Defaults to `time.perf_counter`.
    """

    def __init__(self, seconds, clock=time.perf_counter):
        self.seconds = float(seconds)
        self.clock = clock
        self.start = clock()
        self.durations = []  # (section, key, seconds)

    def elapsed(self):
        return self.clock() - self.start

    def left(self):
        return self.seconds - self.elapsed()

    def estimate(self, section, key):
        same = [d for s, k, d in self.durations if s == section and k == key]
        if same:
            return max(same)
        alike = [d for s, _, d in self.durations if s == section]
        return statistics.median(alike) if alike else 0.0

    def fits(self, section, key):
        """(fits, estimate): whether the task's estimate is within what is left."""
        estimate = self.estimate(section, key)
        return self.left() > 0 and estimate <= self.left(), estimate

    def record(self, section, key, seconds):
        self.durations.append((section, key, seconds))


class Report:
    """The run's payload, appended to as tasks finish; thread-safe writes.

    Each result and skip goes to the JSONL file at once; `write()` rewrites
    the JSON and markdown reports (`common.write_report`).
    """

    def __init__(self, out_dir, label, payload, render):
        self.out_dir, self.label, self.payload, self.render = out_dir, label, payload, render
        self.lock = threading.RLock()
        base = common.report_path(out_dir, payload, label)
        base.parent.mkdir(parents=True, exist_ok=True)
        self.jsonl = base.with_suffix(".jsonl")
        self.jsonl.write_text("")
        self.current = None  # the task running now: (section, name)

    def add(self, kind, row):
        with self.lock:
            self.payload[kind].append(row)
            common.append_jsonl(self.jsonl, {"record": kind, **row})

    def write(self, echo=False):
        with self.lock:
            self.payload["budget"]["elapsed_s"] = round(self.payload["budget"]["clock"](), 1)
            payload = {k: v for k, v in self.payload.items() if k != "budget"}
            payload["budget"] = {k: v for k, v in self.payload["budget"].items() if k != "clock"}
            return common.write_report(self.out_dir, self.label, payload,
                                       self.render(payload), echo=echo)


def start_watchdog(budget, report):
    """Ends the process when the budget is spent, after writing what was measured.

    The task still running is listed as cut. A daemon thread; XLA compilation
    releases the GIL, so it fires during long compiles too.
    """

    def fire():
        with report.lock:
            if report.current is not None:
                section, name = report.current
                report.add("skipped", {"section": section, "name": name,
                                       "reason": f"cut: still running when the "
                                                 f"{budget.seconds:g} s budget ran out"})
            report.payload["budget"]["cut_by_watchdog"] = True
            report.write(echo=True)
            common.log(f"budget of {budget.seconds:g} s spent: stopped")
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(WATCHDOG_EXIT)

    timer = threading.Timer(max(budget.left(), 0.0), fire)
    timer.daemon = True
    timer.start()
    return timer


def run_task(budget, report, section, key, name, fn):
    """Runs `fn()` if its estimate fits the budget; records results or why not."""
    fits, estimate = budget.fits(section, key)
    if not fits:
        report.add("skipped", {"section": section, "name": name, "reason": (
            f"did not fit: estimated {estimate:.0f} s, {max(budget.left(), 0):.0f} s of the "
            f"{budget.seconds:g} s budget left")})
        return
    common.log(f"{name} ({budget.left():.0f} s left)")
    report.current = (section, name)
    t0 = budget.clock()
    try:
        rows = fn()
    except Exception as error:  # noqa: BLE001 - recorded; the other tasks still run
        rows = []
        report.add("skipped", {"section": section, "name": name,
                               "reason": f"{type(error).__name__}: {error}"[:400]})
    finally:
        report.current = None
    budget.record(section, key, budget.clock() - t0)
    for row in rows:
        report.add("results", {"section": section, **row})
    report.write()


# --------------------------------------------------------------------------
# Device facts
# --------------------------------------------------------------------------


def device_facts(backend):
    """The device (bench_frontend's description), versions, peaks, memory support."""
    import jax

    device = backend.device()
    dev = jax.devices()[0]
    device["jax_device_kind"] = dev.device_kind
    device["platform"] = dev.platform
    device["dense_peak_tflops"] = {p: common.dense_peak_tflops(device["name"], p)
                                   for p in POLICIES}
    device["dense_peak_source"] = (
        common.PEAK_SOURCE if any(device["dense_peak_tflops"].values())
        else "unknown for this device (CPUs and GPUs missing from the table)")
    device["memory_stats"] = memory_stats() is not None
    return device


def memory_stats():
    """The first device's allocator statistics (GPU/TPU), or None (e.g. CPU)."""
    import jax

    try:
        return jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - unsupported on this platform
        return None


def step_flops(lowered):
    """FLOPs of one call of a lowered jax function (XLA cost analysis), or None.

    The analysis of the lowered (unoptimised) HLO counts each dot and
    convolution as written: 2 FLOPs per multiply-add.
    """
    try:
        cost = lowered.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend answers
        return None
    if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops is not None and flops >= 0 else None


def compiled_bytes(compiled):
    """Device memory XLA plans for one call: arguments + outputs + temporaries - aliased."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)


def _mib(n):
    return None if n is None else round(n / 2**20, 1)


# --------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------


def frontend_task(backend, kind, policy, inputs, args, device, flops):
    """clips/s of one esc50tf front-end layer under `policy`, jitted, at each batch size."""
    from benchmarks import bench_frontend

    skipped = []
    rows = bench_frontend.run_variant(
        backend, f"esc50tf-{kind}", policy, True, inputs,
        argparse.Namespace(repeats=args.repeats, quick=args.quick), device, flops, skipped)
    if skipped:
        raise RuntimeError("; ".join(f"batch {s.get('batch_size')}: {s['reason']}"
                                     for s in skipped))
    return rows


def train_task(backend, name, policy, batch, args, device):
    """Keras' jitted train step and jitted inference of model `name`."""
    from benchmarks import bench_frontend
    from benchmarks import bench_train
    import jax
    import keras

    from esc50tf.run_config import resolve_config

    recipe = resolve_config(name, "default")
    sample_rate = recipe.features.sample_rate
    num_samples = int(round(args.clip_seconds * sample_rate))
    t0 = time.perf_counter()
    model, _, _ = bench_train.build(name, policy, True, num_samples, sample_rate, NUM_CLASSES)
    rng = np.random.default_rng(0)
    x = jax.device_put((0.1 * rng.standard_normal((batch, num_samples))).astype(np.float32))
    y = jax.device_put(np.eye(NUM_CLASSES, dtype=np.float32)[
        rng.integers(0, NUM_CLASSES, batch)])
    # What `fit` builds before its first step: the optimizer and compiled loss/metrics.
    model._symbolic_build(data_batch=(x, y, None))
    build_s = time.perf_counter() - t0
    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.optimizer.variables],
        [v.value for v in model.metrics_variables],
    )
    t0 = time.perf_counter()
    lowered = jax.jit(model.train_step, donate_argnums=0).lower(state, (x, y))
    flops = step_flops(lowered)
    step = lowered.compile()
    compile_s = time.perf_counter() - t0
    step_bytes = compiled_bytes(step)
    for _ in range(args.warmup):
        logs, state = step(state, (x, y))
    jax.block_until_ready(state)
    per_step, windows = [], []
    for _ in range(args.repeats):
        with common.timed(clips=0) as window:
            for _ in range(args.steps):
                t = time.perf_counter()
                logs, state = step(state, (x, y))
                jax.block_until_ready((logs, state))
                per_step.append(time.perf_counter() - t)
                window.clips += batch
        windows.append(window)
    loss = float(logs["loss"])
    if not np.isfinite(loss):
        raise FloatingPointError(f"{name}: training loss is {loss} after "
                                 f"{args.warmup + args.steps * args.repeats} steps")
    step_s = statistics.median(per_step)
    # Inference: the trained weights, training=False, one jitted forward pass.
    tv, ntv = state[0], state[1]

    def forward(inputs):
        return model.stateless_call(tv, ntv, inputs, training=False)[0]

    infer_lowered = jax.jit(forward).lower(x)
    infer_flops = step_flops(infer_lowered)
    infer = infer_lowered.compile()
    first, runs = bench_frontend.time_calls(
        backend, infer, x, args.repeats, bench_frontend.MIN_REPEAT_S[args.quick])
    infer_rate = max(c * batch / w for c, w, _ in runs)
    stats = memory_stats() or {}
    peak = common.dense_peak_tflops(device["name"], policy) if device["label"] == "gpu" else None
    achieved = None if flops is None else flops / step_s / 1e12
    row = common.summarise(
        f"{name}-{policy}-b{batch}", windows, model=name, policy=policy, batch_size=batch,
        jit_compile=True, sample_rate=sample_rate, num_samples=num_samples,
        step_ms_median=round(1000 * step_s, 3), step_ms_min=round(1000 * min(per_step), 3),
        step_ms_max=round(1000 * max(per_step), 3),
        examples_per_s=round(batch / step_s, 2), timed_steps=len(per_step),
        loss_after=round(loss, 4), build_s=round(build_s, 2), compile_s=round(compile_s, 2),
        step_gflops=None if flops is None else round(flops / 1e9, 3),
        achieved_tflops=None if achieved is None else round(achieved, 3),
        peak_tflops=peak,
        fraction_of_peak=None if achieved is None or not peak else round(achieved / peak, 5),
        step_memory_mib=_mib(step_bytes),
        device_peak_mib=_mib(stats.get("peak_bytes_in_use")),
        infer_clips_per_s=round(infer_rate, 2), infer_first_call_s=round(first, 3),
        infer_gflops_per_clip=None if infer_flops is None else round(infer_flops / batch / 1e9, 4),
        recipe_epochs=recipe.train.epochs,
        **common.cv_projection(batch, step_s, recipe.train.epochs),
    )
    if device["label"] != "cpu":
        row.pop("cpu_ms_per_clip", None)
    del model, state, step, infer
    keras.backend.clear_session()
    return [row]


def peer_status(models):
    """(runs, reason): whether the PyTorch CNN14 peer can run here."""
    missing = [m for m in ("torch", "panns_inference") if importlib.util.find_spec(m) is None]
    if missing:
        return False, f"skipped: {' and '.join(missing)} not importable here"
    from esc50tf.models import registry

    if PEER_MODEL not in registry.names():
        return False, f"skipped: esc50tf registers no {PEER_MODEL!r} Keras model yet"
    if PEER_MODEL not in models:
        return False, f"skipped: {PEER_MODEL!r} is not among the models checked (--models)"
    return True, None


def peer_task(policy, batch, args):
    """PANNs' PyTorch CNN14 (panns_inference), trained and run like esc50tf's cnn14.

    Eager PyTorch, as its users run it: AdamW, cross-entropy on 50 classes
    over log-probabilities of its sigmoid clip output; mixed_bfloat16 is
    `torch.autocast(bfloat16)`. 32 kHz, window 1024, hop 320, 64 Mels.
    """
    import torch
    from panns_inference.models import Cnn14

    device = "cuda" if torch.cuda.is_available() else "cpu"
    sample_rate = 32000
    num_samples = int(round(args.clip_seconds * sample_rate))
    net = Cnn14(sample_rate=sample_rate, window_size=1024, hop_size=320, mel_bins=64,
                fmin=50, fmax=14000, classes_num=NUM_CLASSES).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(0)
    x = (0.1 * torch.randn(batch, num_samples, generator=gen)).to(device)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=gen).to(device)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=policy == "mixed_bfloat16")

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def train_step():
        opt.zero_grad(set_to_none=True)
        with autocast:
            prob = net(x)["clipwise_output"].float()
        loss = torch.nn.functional.nll_loss(torch.log(prob.clamp_min(1e-7)), y)
        loss.backward()
        opt.step()
        return loss

    net.train()
    for _ in range(max(args.warmup, 1)):
        train_step()
    sync()
    per_step, windows = [], []
    for _ in range(args.repeats):
        with common.timed(clips=0) as window:
            for _ in range(args.steps):
                t = time.perf_counter()
                loss = train_step()
                sync()
                per_step.append(time.perf_counter() - t)
                window.clips += batch
        windows.append(window)
    step_s = statistics.median(per_step)
    net.eval()
    with torch.no_grad(), autocast:
        net(x)
        sync()
        t = time.perf_counter()
        calls = 0
        while calls < 3 or time.perf_counter() - t < 0.5:
            net(x)
            calls += 1
        sync()
        infer_rate = calls * batch / (time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    row = common.summarise(
        f"peer-panns-cnn14-{policy}-b{batch}", windows, model="panns_inference Cnn14 (PyTorch)",
        policy=policy, batch_size=batch, execution=f"PyTorch {torch.__version__} eager, {device}",
        sample_rate=sample_rate, num_samples=num_samples,
        step_ms_median=round(1000 * step_s, 3), examples_per_s=round(batch / step_s, 2),
        timed_steps=len(per_step), loss_after=round(float(loss), 4),
        infer_clips_per_s=round(infer_rate, 2), device_peak_mib=_mib(peak),
    )
    del net, opt
    if device == "cuda":
        torch.cuda.empty_cache()
    return [row]


def add_peer_ratios(results):
    """esc50tf cnn14 / peer: train examples/s and inference clips/s at the same batch and policy."""
    for peer in (r for r in results if r.get("section") == "peer"):
        ours = next((r for r in results if r.get("model") == PEER_MODEL
                     and r["policy"] == peer["policy"]
                     and r["batch_size"] == peer["batch_size"]), None)
        peer["esc50tf_train_ratio"] = (None if ours is None else
                                       round(ours["examples_per_s"] / peer["examples_per_s"], 3))
        peer["esc50tf_infer_ratio"] = (None if ours is None else round(
            ours["infer_clips_per_s"] / peer["infer_clips_per_s"], 3))


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def _percent_of_peak(row):
    return None if row["fraction_of_peak"] is None else 100.0 * row["fraction_of_peak"]


def render_markdown(payload):
    dev, cfg, env, budget = (payload["device"], payload["config"], payload["environment"],
                             payload["budget"])
    results = payload["results"]
    front = [r for r in results if r["section"] == "frontend"]
    train = [r for r in results if r["section"] == "train"]
    peer = [r for r in results if r["section"] == "peer"]
    peaks = dev["dense_peak_tflops"]
    lines = [
        f"# device_check ({payload['mode']}, {dev['label'].upper()}: {dev['name']})",
        "",
        f"{payload['created']}; {dev['name']} ({dev['kind']}, jax device kind "
        f"`{dev['jax_device_kind']}`, {dev['count']} device(s), the first used); Keras backend "
        f"{env['keras_backend']}; " + ", ".join(f"{k} {v}" for k, v in cfg["versions"].items())
        + f"; python {env['python']}.",
        "",
        f"Budget {budget['seconds']:g} s, {budget['elapsed_s']:g} s used"
        + (" (cut by the watchdog)" if budget.get("cut_by_watchdog") else "") + ". Dense peak: "
        + ", ".join(f"{p} {v if v else 'unknown'} TFLOP/s" for p, v in peaks.items())
        + f" ({dev['dense_peak_source']}); front-end FP32 peak "
        f"{dev.get('peak_fp32_gflops') or 'unknown'} GFLOP/s ({dev['peak_assumption']}).",
        "",
        f"Input: random waveforms on the device, {cfg['clip_seconds']:g} s at each model's "
        f"recipe sample rate"
        + (" - SHORTER than ESC-50's 5 s clips (quick mode)" if cfg["clip_seconds"] < 5 else "")
        + f"; {NUM_CLASSES} classes.",
    ]
    if front:
        lines += ["", "## Front end (jit)", "", common.markdown_table(front, [
            ("name", lambda r: f"`{r['name']}`"),
            ("clips/s", lambda r: r["clips_per_s"]),
            ("GFLOP/s", lambda r: r["gflops_per_s"]),
            ("% of FP32 peak", _percent_of_peak),
            ("first call s", lambda r: r["first_call_s"]),
            ("output", lambda r: r["output_dtype"]),
        ])]
    if train:
        lines += ["", "## Keras models: Keras' train step, jitted", "", common.markdown_table(
            train, [
                ("name", lambda r: f"`{r['name']}`"),
                ("step ms", lambda r: r["step_ms_median"]),
                ("train ex/s", lambda r: r["examples_per_s"]),
                ("infer clips/s", lambda r: r["infer_clips_per_s"]),
                ("GFLOP/step", lambda r: r["step_gflops"]),
                ("% of peak", _percent_of_peak),
                ("step MiB (XLA)", lambda r: r["step_memory_mib"]),
                ("device peak MiB", lambda r: r["device_peak_mib"]),
                ("compile s", lambda r: r["compile_s"]),
                ("epoch s", lambda r: r["epoch_s"]),
                ("5-fold CV h (projected)", lambda r: r["cv5_projected_h"]),
                ("epochs", lambda r: r["recipe_epochs"]),
            ])]
    if peer:
        lines += ["", "## Peer: PANNs CNN14 in PyTorch", "", common.markdown_table(peer, [
            ("name", lambda r: f"`{r['name']}`"),
            ("step ms", lambda r: r["step_ms_median"]),
            ("train ex/s", lambda r: r["examples_per_s"]),
            ("infer clips/s", lambda r: r["infer_clips_per_s"]),
            ("esc50tf cnn14 x (train)", lambda r: r.get("esc50tf_train_ratio")),
            ("esc50tf cnn14 x (infer)", lambda r: r.get("esc50tf_infer_ratio")),
            ("how", lambda r: r["execution"]),
        ])]
    if payload["skipped"]:
        lines += ["", "## Skipped or not finished", ""] + [
            f"- {s['section']}: {s['name']}: {s['reason']}" for s in payload["skipped"]]
    return "\n".join(lines)


NOTES = [
    "Training step = Keras' own `model.train_step` (forward, loss, backward, optimizer "
    "update, metrics) under `jax.jit` with the state donated, as `fit` runs it on JAX; each "
    "step is synchronised (`jax.block_until_ready`); step ms is the median. The first call "
    "(compilation, `compile_s`) and the warm-up steps are not timed.",
    "Inference = `model.stateless_call(training=False)` under `jax.jit`, repeated for at "
    "least the front end's minimum repeat time; clips/s is the best repeat.",
    "GFLOP/step = XLA's cost analysis of the lowered (unoptimised) step: 2 FLOPs per "
    "multiply-add of every dot and convolution, forward and backward. % of peak = "
    "GFLOP/step / step time / the dense tensor-core peak of the policy's precision "
    "(bfloat16 for mixed_bfloat16, TF32 for float32); unknown on CPUs.",
    "step MiB = XLA's memory analysis of the compiled step (arguments + outputs + "
    "temporaries - donated). device peak MiB = the allocator's peak_bytes_in_use since the "
    "process started (monotone over the run; absent where the platform has no memory "
    "statistics, e.g. CPU).",
    "epoch_s = floor(1600 / batch) x median step; cv5_projected = 5 folds x the model's "
    "default-recipe epochs x epoch_s: a PROJECTION, without early stopping, validation, "
    "augmentation or compilation.",
    "Front end: esc50tf's layers compute the FFT, filterbank and log in float32 under every "
    "policy (no half-precision FFT kernels; a bfloat16 dB scale is 0.5 dB coarse); "
    "mixed_bfloat16 changes only their output dtype. FLOPs are bench_frontend's analytic "
    "counts; % is of the FP32 (non-tensor-core) peak.",
    "mixed_bfloat16 on a CPU is emulated: it says nothing about accelerators.",
    "JAX allocates device memory on demand here (XLA_PYTHON_CLIENT_PREALLOCATE=false unless "
    "set), so the PyTorch peer in the same process finds free memory.",
]


def main(argv=None):
    args = parse_args(argv)
    budget = Budget(args.budget_s)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # JAX would take 75% of the GPU at start: allocate on demand, so the PyTorch peer
    # in the same process finds memory and peak_bytes_in_use is what the models use.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    environment = common.environment()
    from benchmarks import bench_frontend

    backend = bench_frontend.Backend()
    if backend.name != "jax":
        raise SystemExit(f"device_check runs on the JAX backend; KERAS_BACKEND is "
                         f"{backend.name!r}: run it with KERAS_BACKEND=jax")
    from esc50tf.models import registry

    keras_models = [s.name for s in registry.specs() if s.keras]
    models = args.models or tuple(keras_models)
    bad = [m for m in models if m not in keras_models]
    if bad:
        raise SystemExit(f"--models: not registered Keras models: {', '.join(bad)}; "
                         f"choose from {', '.join(keras_models)}")
    device = device_facts(backend)
    payload = common.new_payload(SCRIPT, args.quick)
    payload.update({
        "device": device,
        "environment": environment,
        "config": {
            "backend": backend.name, "versions": backend.versions(), "models": list(models),
            "batch_sizes": list(args.batch_sizes),
            "frontend_batch_sizes": list(args.frontend_batch_sizes),
            "policies": list(args.policies), "steps": args.steps, "warmup": args.warmup,
            "repeats": args.repeats, "clip_seconds": args.clip_seconds,
            "num_classes": NUM_CLASSES, "skip": list(args.skip),
            "command": common.command_line(argv),
        },
        "budget": {"seconds": args.budget_s, "elapsed_s": 0.0, "clock": budget.elapsed},
        "results": [], "skipped": [], "notes": NOTES,
    })
    report = Report(args.out, device["label"], payload, render_markdown)
    report.write()
    watchdog = start_watchdog(budget, report)
    common.log(f"{device['name']} ({device['label']}); budget {args.budget_s:g} s; models "
               f"{','.join(models)}; batches {args.batch_sizes}; policies {args.policies}")

    if "frontend" not in args.skip:
        inputs, too_big = bench_frontend.load_inputs(
            argparse.Namespace(data=None, batch_sizes=args.frontend_batch_sizes),
            backend, device)
        for s in too_big:
            report.add("skipped", {"section": "frontend", "name": f"batch {s['batch_size']}",
                                   "reason": s["reason"]})
        flops = {k: bench_frontend.flops_per_clip(k, inputs["num_samples"])
                 for k in FRONTEND_KINDS}
        for kind in FRONTEND_KINDS:
            for policy in args.policies:
                run_task(budget, report, "frontend", kind, f"esc50tf-{kind}-{policy}",
                         lambda k=kind, p=policy: frontend_task(backend, k, p, inputs, args,
                                                                device, flops))
        del inputs

    peer_runs, peer_reason = peer_status(models)
    if "peer" in args.skip:
        peer_runs, peer_reason = False, "skipped: --skip peer"
    for i, batch in enumerate(args.batch_sizes):
        for policy in args.policies:
            for name in models:
                if "train" in args.skip:
                    break
                run_task(budget, report, "train", name, f"{name}-{policy}-b{batch}",
                         lambda n=name, p=policy, b=batch: train_task(backend, n, p, b, args,
                                                                      device))
            if i == 0 and peer_runs:
                run_task(budget, report, "peer", PEER_MODEL, f"peer-panns-cnn14-{policy}-b{batch}",
                         lambda p=policy, b=batch: peer_task(p, b, args))
    if not peer_runs:
        report.add("skipped", {"section": "peer", "name": "PANNs CNN14 (PyTorch)",
                               "reason": peer_reason})
    watchdog.cancel()
    with report.lock:
        add_peer_ratios(payload["results"])
        common.finish_environment(environment)
        report.write(echo=True)
    if not payload["results"]:
        raise SystemExit("device_check measured nothing; see the Skipped section")
    return 0


if __name__ == "__main__":
    sys.exit(main())
