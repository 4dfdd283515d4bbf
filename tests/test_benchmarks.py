"""The benchmark scripts: each one's --quick run, its report's structure, its helpers."""

import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = sorted(p.stem for p in BENCHMARKS.glob("*.py")
                 if p.stem not in ("__init__", "common"))


def _load(name):
    return importlib.import_module(f"benchmarks.{name}")


def _run(script, *args, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("KERAS_BACKEND", None)  # the TensorFlow backend, as installed here
    proc = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{script}", *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _check_report(path, script, reference):
    report = json.loads(path.read_text())
    assert report["schema_version"] == 1
    assert report["benchmark"] == script and report["mode"] == "quick"
    assert path.name == f"{script}-quick-{report['device']['label']}.json"
    assert report["device"]["label"] in ("cpu", "gpu", "tpu")
    assert report["environment"]["versions"]["keras"]
    assert report["environment"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert report["reference"] == reference
    results = report["results"]
    assert results
    names = [r["name"] for r in results]
    assert len(names) == len(set(names)), "result names must be unique"
    for r in results:
        assert isinstance(r["name"], str) and r["name"]
        assert math.isfinite(r["clips_per_s"]) and r["clips_per_s"] > 0, r
        assert r["clips"] > 0 and r["repeats"] >= 1 and len(r["wall_s"]) == r["repeats"]
        assert r["ratio_to_reference"] is None or r["ratio_to_reference"] > 0
    md = path.with_suffix(".md").read_text()
    assert "| name | clips/s | x reference |" in md
    return report, md


@pytest.mark.slow
def test_bench_pipeline_quick(tmp_path):
    proc = _run("bench_pipeline", "--quick", "--clips", "40", "--ref-clips", "6",
                "--out", str(tmp_path))
    report, md = _check_report(tmp_path / "bench_pipeline-quick-cpu.json", "bench_pipeline",
                               "esc50tf-host-mel-cold")
    by_name = {r["name"]: r for r in report["results"]}
    for name in ("esc50tf-read-decode-cold", "esc50tf-read-decode-cached",
                 "esc50tf-read-decode-readers1-cold", "esc50tf-host-mel-cold",
                 "esc50tf-host-mel-cached", "esc50tf-host-mel-callsautotune-cold",
                 "esc50tf-host-mel-int16-cold", "esc50tf-host-mel-before-cached",
                 "esc50tf-host-mel-nojit-cold",
                 "librosa-single", "librosa-pool", "seed-png",
                 "keras-melspectrogram-tfdata"):
        assert name in by_name, name
        assert f"`{name}`" in md and f"`{name}`" in proc.stdout
    assert by_name["esc50tf-host-mel-cold"]["ratio_to_reference"] == 1.0
    # 40 clips = 8 classes x 5; the slow references ran on the subset only.
    assert report["config"]["clips"] == 40
    assert by_name["esc50tf-host-mel-cold"]["clips"] == 40
    assert by_name["librosa-pool"]["clips"] == 40
    assert by_name["librosa-single"]["clips"] == 6 and by_name["librosa-single"]["subset"]
    assert by_name["seed-png"]["clips"] == 6
    assert report["config"]["n_mels"] == 128 and report["config"]["hop_length"] == 512
    targets = {(t["target"], t["esc50tf_variant"]) for t in report["targets"]}
    assert ("esc50tf decode + host features >= 20x seed-png", "esc50tf-host-mel-cold") in targets
    stages = {s["stage"] for s in report["profile"]["stages"]}
    assert "host log-Mel as shipped (make_host_featurizer: XLA, banded Mel)" in stages


@pytest.mark.slow
def test_bench_frontend_quick(tmp_path):
    proc = _run("bench_frontend", "--quick", "--batch-sizes", "2", "--out", str(tmp_path))
    (path,) = tmp_path.glob("bench_frontend-quick-*.json")
    report, md = _check_report(path, "bench_frontend", "esc50tf-mel-float32-xla")
    variants = {r["variant"] for r in report["results"]}
    for kind in ("stft", "mel", "mfcc"):
        for suffix in ("", "-xla"):
            assert f"esc50tf-{kind}-float32{suffix}" in variants
            assert f"esc50tf-{kind}-mixed_bfloat16{suffix}" in variants
    assert "keras-melspectrogram-float32" in variants
    assert "keras-melspectrogram-float32-xla" in variants
    for r in report["results"]:
        assert r["batch_size"] == 2 and r["name"] == f"{r['variant']}-b2"
        assert r["flops_per_clip"] == report["flops_per_clip"][
            "mel" if r["layer"] == "keras-melspectrogram" else r["layer"].split("-")[1]]["total"]
        assert r["gflops_per_s"] > 0
    ref = next(r for r in report["results"] if r["variant"] == "esc50tf-mel-float32-xla")
    assert ref["ratio_to_reference"] == 1.0
    peak = report["device"]["peak_fp32_gflops"]
    if peak:
        assert 0 < ref["fraction_of_peak"] == pytest.approx(ref["gflops_per_s"] / peak, rel=1e-3)
    assert "## clips/s by batch size" in md and "`esc50tf-mel-float32-xla`" in proc.stdout


def test_frontend_script_imports_no_tensorflow():
    # The JAX GPU machine has no TensorFlow: importing the script and --help must not need it.
    code = (
        "import importlib, sys\n"
        "m = importlib.import_module('benchmarks.bench_frontend')\n"
        "try:\n    m.parse_args(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [k for k in ('tensorflow', 'keras', 'jax') if k in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=ROOT)


def test_every_benchmark_runs_as_a_module_of_the_package():
    # `python -m benchmarks.NAME` from the repository root, no sys.path edits: the
    # checkout's esc50tf and `benchmarks.common` are found because the root is on the path.
    assert SCRIPTS and "device_check" in SCRIPTS and "bench_train" in SCRIPTS
    for name in SCRIPTS + ["common"]:
        assert "sys.path" not in (BENCHMARKS / f"{name}.py").read_text(), name
    code = (
        "import runpy, sys\n"
        f"for name in {SCRIPTS!r}:\n"
        "    sys.argv = [name, '--help']\n"
        "    try:\n"
        "        runpy.run_module('benchmarks.' + name, run_name='__main__')\n"
        "    except SystemExit as e:\n"
        "        assert not e.code, (name, e.code)\n"
        "    else:\n"
        "        raise AssertionError(name + ' --help did not exit')\n"
        "    print('usage ok', name, flush=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [line.split()[2] for line in proc.stdout.splitlines()
            if line.startswith("usage ok")] == SCRIPTS
    assert proc.stdout.count("usage:") == len(SCRIPTS)


def test_flops_per_clip_counts_each_step():
    bench = _load("bench_frontend")
    frames = 1 + 220500 // 512
    mel = bench.flops_per_clip("mel", 220500)
    assert mel["frames"] == frames == 431
    assert mel["steps"]["fft"] == int(frames * 5 * 2048 * 11)
    assert mel["steps"]["mel_matmul"] == frames * 2 * 1025 * 128
    assert mel["total"] == sum(mel["steps"].values())
    mfcc = bench.flops_per_clip("mfcc", 220500)
    assert mfcc["total"] - mel["total"] == frames * 2 * 128 * 20
    stft = bench.flops_per_clip("stft", 220500)
    assert "mel_matmul" not in stft["steps"] and stft["steps"]["log"] == frames * 1025 * 3


def test_global_policy_is_restored_even_after_an_error():
    import keras

    bench = _load("bench_frontend")
    before = keras.mixed_precision.global_policy().name
    with pytest.raises(RuntimeError):
        with bench.global_policy("mixed_bfloat16"):
            assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
            raise RuntimeError("boom")
    assert keras.mixed_precision.global_policy().name == before


def test_summarise_and_ratios():
    common = _load("common")
    timings = [common.Timing(clips=100, wall_s=2.0, cpu_s=3.0),
               common.Timing(clips=100, wall_s=1.0, cpu_s=1.5),
               common.Timing(clips=100, wall_s=4.0, cpu_s=1.0)]
    entry = common.summarise("a", timings, note="x")
    assert entry["clips_per_s"] == 100.0 and entry["clips_per_s_median"] == 50.0
    assert entry["cpu_ms_per_clip"] == 10.0 and entry["note"] == "x"
    other = common.summarise("b", [common.Timing(clips=100, wall_s=0.5)])
    results = [entry, other]
    common.add_ratios(results, "a")
    assert [r["ratio_to_reference"] for r in results] == [1.0, 2.0]


def test_cpu_peak_estimate_states_its_assumption():
    common = _load("common")
    cpu = common.cpu_description()
    assert cpu["logical_cpus"] >= 1 and "peak" in cpu["peak_assumption"]
    if cpu["mhz"] and cpu["fp32_flops_per_cycle_per_cpu"]:
        expected = cpu["logical_cpus"] * cpu["mhz"] * cpu["fp32_flops_per_cycle_per_cpu"] / 1e3
        assert cpu["peak_fp32_gflops"] == pytest.approx(expected, rel=1e-3)
    assert common.gpu_peak_gflops("NVIDIA H100 PCIe") == 51200.0
    assert common.gpu_peak_gflops("NVIDIA H200") == 66900.0
    assert common.gpu_peak_gflops("Mystery Accelerator") is None


@pytest.mark.slow
def test_bench_train_quick(tmp_path):
    proc = _run("bench_train", "--quick", "--models", "cnn_small", "--jit", "off,on",
                "--batch-sizes", "4", "--steps", "2", "--warmup", "1", "--clips", "50",
                "--out", str(tmp_path))
    report, md = _check_report(tmp_path / "bench_train-quick-cpu.json", "bench_train", "memory")
    cfg = report["config"]
    assert cfg["num_samples"] == 44100 and cfg["shorter_than_esc50"]  # quick: 1 s clips
    assert cfg["features"] == {"kind": "mel", "n_fft": 2048, "hop_length": 512, "n_mels": 128}
    assert cfg["epochs"] == 100 and cfg["num_classes"] == 50
    by_name = {r["name"]: r for r in report["results"]}
    for jit in ("noxla", "xla"):
        for feed in ("memory", "tfrecord"):
            name = f"cnn_small-float32-{jit}-b4-{feed}"
            assert name in by_name and f"`{name}`" in md and f"`{name}`" in proc.stdout
            r = by_name[name]
            assert r["jit_compile"] == (jit == "xla") and r["feed"] == feed
            assert r["timed_steps"] == 2 and r["step_ms_median"] > 0
            assert r["examples_per_s"] == pytest.approx(4000 / r["step_ms_median"], rel=1e-2)
            assert r["epoch_steps"] == 400
            assert r["cv5_projected_s"] == pytest.approx(
                5 * 100 * r["epoch_s"], rel=1e-3, abs=1.0)
        assert by_name[f"cnn_small-float32-{jit}-b4-memory"]["ratio_to_reference"] == 1.0
    assert "PROJECTION" in md


@pytest.mark.slow
def test_bench_train_times_the_ctrl_c_check(tmp_path):
    _run("bench_train", "--quick", "--models", "gru", "--jit", "off", "--feeds",
         "memory,fit,fit-nocheck", "--batch-sizes", "4", "--steps", "2", "--warmup", "1",
         "--clips", "50", "--out", str(tmp_path))
    report = json.loads((tmp_path / "bench_train-quick-cpu.json").read_text())
    by_name = {r["name"]: r for r in report["results"]}
    assert set(by_name) == {f"gru-float32-noxla-b4-{f}" for f in ("memory", "fit", "fit-nocheck")}
    fit, nocheck = by_name["gru-float32-noxla-b4-fit"], by_name["gru-float32-noxla-b4-fit-nocheck"]
    for r in (fit, nocheck):
        assert r["timed_steps"] == 2 and r["step_ms_median"] > 0 and r["clips"] == 8
    assert "check_us_per_batch" not in nocheck
    assert fit["check_fraction_of_step"] == pytest.approx(
        fit["check_us_per_batch"] / (1000 * fit["step_ms_median"]), rel=1e-2, abs=1e-6)


def test_train_script_imports_no_tensorflow():
    # The JAX GPU machine has no TensorFlow: importing the script and --help must not need it.
    code = (
        "import importlib, sys\n"
        "m = importlib.import_module('benchmarks.bench_train')\n"
        "try:\n    m.parse_args(['--help'])\nexcept SystemExit:\n    pass\n"
        "a = m.parse_args(['--quick'])\n"
        "assert a.batch_sizes == (8,) and a.clip_seconds == 1.0 and a.policies == ('float32',)\n"
        "heavy = [k for k in ('tensorflow', 'keras', 'jax') if k in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=ROOT)


@pytest.mark.slow
def test_panns_parity_reports_every_fixture(tmp_path):
    _run("panns_parity", "--out", str(tmp_path))
    report = json.loads((tmp_path / "panns_parity-full-cpu.json").read_text())
    assert report["benchmark"] == "panns_parity" and report["config"]["logmel_range_db"] == 80.0
    rows = {r["name"]: r for r in report["results"]}
    assert sorted(rows) == sorted(f"{a}-{f}" for a in ("cnn14", "cnn14_16k", "cnn14_sed")
                                  for f in ("zip", "legacy"))
    for name, r in rows.items():
        # Every bin compared; the clamp (peak - 80 dB) holds some of them (near-silent ones).
        assert 0 < r["logmel_max_db"] < 0.01 and 0 < r["logmel_bins_at_the_floor"] < 0.5, r
        assert r["convert_seconds"] > 0 and r["peak_rss_mb"] > 0, r
        for key in ("embedding", "logits", "clipwise"):
            assert 0 < r[f"{key}_relative"] < 1e-4, (name, key)
        assert (r["framewise_relative"] is None) == (r["arch"] != "cnn14_sed")
        # Both formats hold the same tensors: the same figures.
        other = rows[name.replace("zip", "legacy")]
        assert r["embedding_relative"] == other["embedding_relative"]


def test_recipe_experiment_pairs_each_baseline_and_runs_the_family_recipe():
    from benchmarks import recipe_experiment as rx
    from esc50tf import presets
    from esc50tf.models import registry

    accs = {("old", 0): 0.2, ("old", 1): 0.4, ("new", 0): 0.3, ("new", 1): 0.1,
            ("family", 0): 0.5, ("family", 1): 0.3}
    runs = [{"model": "gru", "size": 6, "recipe": r, "seed": s, "accuracy": a, "macro_f1": a,
             "epochs_run": 3, "wall_s": 1.0, "reported_model": "last"}
            for (r, s), a in accs.items()]
    rows = rx.summarise(runs, ("gru",), ("old", "new", "family"), (6,), ("old", "new"))
    family = next(r for r in rows if r["recipe"] == "family")
    assert family["minus_old_mean"] == pytest.approx(0.1)  # +0.3, -0.1
    assert family["minus_new_mean"] == pytest.approx(0.2)
    assert (family["wins_over_old"], family["wins_over_new"]) == ("1/2", "2/2")
    assert family["accuracy_std"] == pytest.approx(0.1)
    # "family" is what --preset default gives (the hop scaled to the short clips); the
    # other recipes sit on the plain default preset.
    recipe = registry.family("rnn").recipe
    fam = rx.run_config("gru", "family", 0, "d", "o", 3)
    plain = rx.run_config("gru", "new", 0, "d", "o", 3)
    assert fam.train.family_recipe == "rnn" and plain.train.family_recipe == ""
    assert (fam.train.lr, fam.augment.mix) == (recipe["train"]["lr"], recipe["augment"]["mix"])
    assert plain.features.hop_length == rx.FEATURES["hop_length"]
    scale = recipe["features"]["hop_length"] / presets.preset("default")["features"]["hop_length"]
    assert fam.features.hop_length == rx.FEATURES["hop_length"] * scale
    assert rx.run_config("cnn_small", "family", 0, "d", "o", 3) == rx.run_config(
        "cnn_small", "new", 0, "d", "o", 3)
