"""Shared pieces of the benchmark scripts: flags, timing, environment, output.

Every benchmark script builds its flags with :func:`make_parser`, times work
with :func:`timed` (wall clock and this process's CPU time, all threads),
aggregates repeats with :func:`summarise`, starts its report with
:func:`new_payload` and writes ``OUT/<script>-<quick|full>-<device>.json``
and ``.md`` with :func:`write_report`, which also prints the markdown.

Numbers on a shared machine are noisy, so each variant is timed
``--repeats`` times, interleaved with the other variants, and reported by its
best repeat (``clips_per_s``, the usual choice of ``timeit``) next to the
median; ``cpu_ms_per_clip`` (CPU time of all threads per clip) is much less
sensitive to other processes than wall-clock throughput.

Importing this module imports no TensorFlow, Keras or JAX.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from esc50tf.io import write_json, write_text

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"
SCHEMA_VERSION = 1

# Distributions whose versions every report records (absent ones are skipped).
PACKAGES = (
    "tensorflow", "keras", "jax", "jaxlib", "numpy", "scipy", "librosa",
    "soundfile", "matplotlib", "pillow", "numba", "esc50tf",
)

# FP32 peak of common accelerators in TFLOP/s (vendor figures, dense, no
# tensor cores): the front end's FFT and filterbank run in float32.
GPU_FP32_PEAK_TFLOPS = {
    "H200": 66.9,
    "H100 SXM": 66.9,
    "H100 PCIE": 51.2,
    "H100 NVL": 60.0,
    "H100": 66.9,
    "GH200": 66.9,
    "A100": 19.5,
    "A10G": 31.2,
    "A10": 31.2,
    "L40S": 91.6,
    "L40": 90.5,
    "L4": 30.3,
    "T4": 8.1,
    "V100": 15.7,
    "RTX 4090": 82.6,
}


def make_parser(description, *, full_help, quick_help,
                data_help="Default: synthesise ESC-50-sized data."):
    """Flags every benchmark script shares.

    `--quick` (a run of under two minutes on two CPU cores), `--data DIR`
    (existing TFRecords; left out when `data_help` is None), `--out DIR` and
    `--repeats`. Scripts add their own.
    """
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true",
                        help=f"Quick mode: {quick_help} Default: full mode, {full_help}")
    if data_help is not None:
        parser.add_argument("--data", metavar="DIR", default=None,
                            help="A folder of TFRecords made by `esc50tf build-tfrecords` "
                                 f"(e.g. the real ESC-50). {data_help}")
    parser.add_argument("--out", metavar="DIR", default=str(DEFAULT_OUT),
                        help="Where the JSON and markdown go. Default: benchmarks/results.")
    parser.add_argument("--repeats", type=int, default=None,
                        help="Times each variant is timed; the best is reported. "
                             "Default: 3 (full), 1 (quick).")
    return parser


def parse_csv(parser, flag, value, allowed=None, cast=str):
    """Comma-separated flag value -> tuple without repeats; `parser.error` if bad.

    `allowed` limits the values; `cast=int` also requires them positive.
    """
    try:
        items = tuple(dict.fromkeys(cast(v.strip()) for v in value.split(",") if v.strip()))
    except ValueError:
        parser.error(f"{flag}: expected comma-separated values, got {value!r}")
    if not items:
        parser.error(f"{flag}: empty")
    bad = [v for v in items if allowed is not None and v not in allowed]
    if bad:
        parser.error(f"{flag}: unknown {', '.join(map(str, bad))}; choose from "
                     f"{', '.join(allowed)}")
    if cast is int and min(items) < 1:
        parser.error(f"{flag}: must be positive, got {value!r}")
    return items


def check_positive(parser, name, value):
    if value is not None and value < 1:
        parser.error(f"{name} must be a positive integer, got {value}")


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Timing:
    """One timed run: `clips` processed in `wall_s` seconds using `cpu_s` of CPU."""

    clips: int
    wall_s: float
    cpu_s: float | None = None

    @property
    def clips_per_s(self):
        return self.clips / self.wall_s if self.wall_s > 0 else math.inf


@contextlib.contextmanager
def timed(clips=0):
    """Times the `with` block: wall clock and this process's CPU time.

    Yields a :class:`Timing` whose fields are filled when the block ends; set
    ``timing.clips`` inside the block if the count is known only then, and add
    CPU time spent in other processes to ``timing.cpu_s`` afterwards.
    """
    timing = Timing(clips=clips, wall_s=0.0, cpu_s=0.0)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        yield timing
    finally:
        timing.wall_s = time.perf_counter() - wall0
        timing.cpu_s = time.process_time() - cpu0


def summarise(name, timings, **fields):
    """One `results` entry from the repeats of a variant.

    ``clips_per_s`` is the best repeat, ``clips_per_s_median`` the median,
    ``cpu_ms_per_clip`` the least CPU time per clip of any repeat (other load
    only ever adds to it: cache misses, spinning thread pools).
    """
    if not timings:
        raise ValueError(f"{name}: no timings")
    best = max(timings, key=lambda t: t.clips_per_s)
    rates = [t.clips_per_s for t in timings]
    entry = {
        "name": name,
        "clips_per_s": round(best.clips_per_s, 2),
        "clips_per_s_median": round(statistics.median(rates), 2),
        "clips": best.clips,
        "repeats": len(timings),
        "wall_s": [round(t.wall_s, 4) for t in timings],
    }
    cpu = [1000.0 * t.cpu_s / max(t.clips, 1) for t in timings if t.cpu_s is not None]
    if cpu:
        entry["cpu_ms_per_clip"] = round(min(cpu), 3)
    entry.update(fields)
    return entry


def add_ratios(results, reference, key="ratio_to_reference", match=None):
    """Adds ``results[i][key] = clips_per_s / reference's clips_per_s``.

    Args:
        results: list of result dicts.
        reference: str. Name of the reference entry (or, with `match`, the
            reference's name up to the matched fields).
        key: str. Field to write.
        match: tuple of field names or None. When given, each entry is
            compared with the reference entry that has the same values of
            these fields (e.g. the same batch size).
    """
    refs = [r for r in results if r.get("variant", r["name"]) == reference]
    for r in results:
        candidates = [
            ref for ref in refs if not match or all(ref.get(f) == r.get(f) for f in match)
        ]
        if candidates and candidates[0]["clips_per_s"] > 0:
            r[key] = round(r["clips_per_s"] / candidates[0]["clips_per_s"], 4)
        else:
            r[key] = None


# --------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------


def package_versions():
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_commit():
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
            text=True, timeout=10, check=True,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
            capture_output=True, text=True, timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def usable_cpus():
    """Logical CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def environment():
    """Python, platform, library versions, Keras backend, commit, load."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "usable_cpus": usable_cpus(),
        "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "loadavg_at_start": loadavg(),
    }


def finish_environment(env):
    """Adds the load average at the end of the run to `environment()`'s dict."""
    env["loadavg_at_end"] = loadavg()
    return env


def _read_cpuinfo():
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    info = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, _, value = line.partition(":")
        key = key.strip()
        if key not in info:  # the first processor's entry
            info[key] = value.strip()
    return info


def cpu_description():
    """CPU model, logical CPUs, clock and an estimated FP32 peak.

    The peak is `logical CPUs x clock x FP32 FLOPs per cycle`, where FLOPs per
    cycle come from the instruction-set flags in /proc/cpuinfo: two FMA units
    of the widest vector width (AVX-512: 2 x 16 lanes x 2 = 64; AVX2 + FMA:
    32; AVX: 16; else SSE: 8), except AMD parts with AVX-512 but without
    `avx512_vp2intersect` (Zen 4), which execute 512-bit FMAs as two 256-bit
    halves (32). The clock is the one /proc/cpuinfo reports (not turbo, not
    the AVX-512 licence). Logical CPUs of a VM may be SMT siblings, which
    would halve the real peak. The dict states which of these it assumed.
    """
    info = _read_cpuinfo()
    flags = set(info.get("flags", "").split())
    model = info.get("model name") or platform.processor() or platform.machine()
    mhz = None
    try:
        mhz = float(info["cpu MHz"])
    except (KeyError, ValueError):
        pass
    amd = "AMD" in model or info.get("vendor_id") == "AuthenticAMD"
    if "avx512f" in flags and "fma" in flags:
        if amd and "avx512_vp2intersect" not in flags:
            isa, per_cycle = "avx512 (AMD Zen 4: 512-bit FMA as 2 x 256-bit)", 32
        else:
            isa, per_cycle = "avx512 + fma, 2 FMA units", 64
    elif "avx2" in flags and "fma" in flags:
        isa, per_cycle = "avx2 + fma, 2 FMA units", 32
    elif "avx" in flags:
        isa, per_cycle = "avx, 1 add + 1 mul unit", 16
    elif flags:
        isa, per_cycle = "sse, 1 add + 1 mul unit", 8
    else:
        isa, per_cycle = "unknown (no /proc/cpuinfo flags)", None
    cpus = usable_cpus()
    peak = None
    if mhz and per_cycle:
        peak = cpus * mhz * 1e6 * per_cycle
    return {
        "model": model,
        "logical_cpus": cpus,
        "mhz": mhz,
        "isa": isa,
        "fp32_flops_per_cycle_per_cpu": per_cycle,
        "peak_fp32_gflops": None if peak is None else round(peak / 1e9, 1),
        "peak_assumption": (
            "peak = logical CPUs x cpuinfo MHz x FP32 FLOPs/cycle from the ISA flags "
            f"({isa}); ignores turbo, AVX clock offsets and SMT siblings"
        ),
    }


# Dense (no structured sparsity) peaks in TFLOP/s by compute precision, from
# NVIDIA's datasheets: H100 SXM / H200 (same Hopper chip and clocks; the H200
# datasheet lists BF16 1,979 and TF32 989 TFLOP/s "with sparsity", half that
# dense), A100 SXM (BF16 312, TF32 156). XLA runs float32 matmuls and
# convolutions in TF32 on these GPUs under JAX's default precision.
GPU_DENSE_PEAK_TFLOPS = {
    "H200": {"bfloat16": 989.5, "tfloat32": 494.7},
    "H100": {"bfloat16": 989.5, "tfloat32": 494.7},
    "A100": {"bfloat16": 312.0, "tfloat32": 156.0},
}
PEAK_SOURCE = ("NVIDIA datasheets (H100/H200 SXM, A100 SXM), dense tensor-core rates: "
               "bfloat16 for mixed_bfloat16, TF32 for float32")


def dense_peak_tflops(device_name, policy):
    """Tensor-core peak of `device_name` for a Keras `policy`, or None if unknown.

    mixed_bfloat16 -> the bfloat16 rate; float32 -> the TF32 rate. CPUs and
    GPUs missing from `GPU_DENSE_PEAK_TFLOPS` give None.
    """
    precision = "bfloat16" if "bfloat16" in policy else "tfloat32"
    name = (device_name or "").upper()
    for key in sorted(GPU_DENSE_PEAK_TFLOPS, key=len, reverse=True):
        if key in name:
            return GPU_DENSE_PEAK_TFLOPS[key][precision]
    return None


def gpu_peak_gflops(device_name):
    """FP32 peak in GFLOP/s from `GPU_FP32_PEAK_TFLOPS`, or None if unknown."""
    name = device_name.upper()
    for key in sorted(GPU_FP32_PEAK_TFLOPS, key=len, reverse=True):
        if key in name:
            return GPU_FP32_PEAK_TFLOPS[key] * 1000.0
    return None


def memory_available_bytes():
    """MemAvailable from /proc/meminfo, or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def _fmt(value, digits=1):
    if value is None:
        return "-"
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}" if value >= 1 else f"{value:.3g}"
    return str(value)


def markdown_table(rows, columns):
    """A markdown table; `columns` is a list of (header, function(row) -> value).

    Numbers are right-aligned and rounded for reading (the JSON keeps them
    exact); None shows as "-".
    """
    values = [[fn(row) for _, fn in columns] for row in rows]
    numeric = [
        all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
            for v in (row[i] for row in values))
        for i in range(len(columns))
    ]
    lines = [
        "| " + " | ".join(h for h, _ in columns) + " |",
        "| " + " | ".join("---:" if n else "---" for n in numeric) + " |",
    ]
    for row in values:
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines)


EPOCH_CLIPS = 1600  # ESC-50: 4 training folds of 400 clips
CV_FOLDS = 5


def cv_projection(batch_size, step_s, epochs):
    """One ESC-50 training epoch and 5-fold cross-validation from a step time.

    An epoch is `floor(1600 / batch)` steps; 5-fold CV is 5 x `epochs` epochs.
    A projection, not a measured run: no early stopping, validation, test
    passes, augmentation or compilation.
    """
    epoch_steps = EPOCH_CLIPS // batch_size
    epoch_s = epoch_steps * step_s
    cv_s = CV_FOLDS * epochs * epoch_s
    return {"epoch_steps": epoch_steps, "epoch_s": round(epoch_s, 2),
            "cv5_projected_s": round(cv_s, 1), "cv5_projected_h": round(cv_s / 3600, 3)}


def start(parse_args, argv):
    """Parses the flags, quiets TensorFlow's C++ log lines and records the environment.

    Returns (args, environment); the environment is completed by
    :func:`finish_environment` once the work has imported its libraries.
    """
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return args, environment()


def backend_payload(script, args, argv, device, environment, backend, config):
    """`new_payload` plus the device, the environment and a config that starts with the
    Keras backend, its library versions and ends with the command line."""
    payload = new_payload(script, args.quick)
    payload.update({
        "device": device,
        "environment": finish_environment(environment),
        "config": {"backend": backend.name, "versions": backend.versions(), **config,
                   "command": command_line(argv)},
    })
    return payload


def new_payload(script, quick):
    """The fields every report starts with; scripts add theirs."""
    return {
        "schema_version": SCHEMA_VERSION,
        "benchmark": script,
        "mode": "quick" if quick else "full",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def report_path(out_dir, payload, device_label):
    """``OUT/<script>-<quick|full>-<device>`` (without a suffix)."""
    return Path(out_dir) / f"{payload['benchmark']}-{payload['mode']}-{device_label}"


def command_line(argv):
    """How the script was run, for the report's config."""
    return " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])])


def write_report(out_dir, device_label, payload, markdown, echo=True):
    """Writes `<script>-<mode>-<device>.json` and `.md` and prints the markdown.

    The payload's `notes` end the markdown as a "Notes" section. Both files go
    through temporary files, so a report never looks complete when it is not.
    `echo=False` writes without printing (a partial report). Returns the JSON
    path.
    """
    if payload.get("notes"):
        markdown = "\n".join([markdown.rstrip(), "", "## Notes", ""]
                             + [f"- {n}" for n in payload["notes"]])
    base = report_path(out_dir, payload, device_label)
    base.parent.mkdir(parents=True, exist_ok=True)
    json_path = base.with_suffix(".json")
    md_path = base.with_suffix(".md")
    write_json(json_path, payload, allow_nan=False)
    write_text(md_path, markdown.rstrip() + "\n")
    if echo:
        print(markdown.rstrip())
        print(f"\nwrote {json_path} and {md_path.name}", file=sys.stderr)
    return json_path



def write_parity_report(out, name, payload, rows, columns):
    """The JSON and markdown of a parity benchmark (esc50tf's conversion of reference
    fixtures against the reference's outputs): a title, the fixtures, one table."""
    markdown = "\n".join([
        f"# {name} (CPU)", "",
        f"{payload['created']}; esc50tf's conversion of the fixtures in "
        f"`{payload['config']['fixtures']}` against the reference outputs.", "",
        markdown_table(rows, columns)])
    write_report(out, "cpu", payload, markdown)

def append_jsonl(path, row):
    """Appends one JSON line and flushes it to disk: a run cut short keeps it."""
    with open(path, "a") as f:
        f.write(json.dumps(row, allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def log(message):
    """Progress line on stderr (stdout carries the table)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
