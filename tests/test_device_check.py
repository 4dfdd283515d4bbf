"""benchmarks/device_check.py and the no-TensorFlow path it needs (the GPU machine has none).

The subprocess tests block `import tensorflow` with a meta-path finder, so they
prove what works where TensorFlow is absent even though it is installed here.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Makes `import tensorflow` (and its submodules) fail as if it were not installed.
NO_TENSORFLOW = textwrap.dedent("""
    import importlib.abc, sys

    class _NoTensorFlow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                raise ImportError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.meta_path.insert(0, _NoTensorFlow())
""")

# The test's numbers are not timed: a cheaper XLA CPU build keeps compilation short.
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def _jax_env(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": FAST_XLA,
           "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "KERAS_HOME": str(tmp_path / "keras_home")}
    return env


def _run_without_tensorflow(code, tmp_path, timeout=1800):
    pytest.importorskip("jax")
    proc = subprocess.run([sys.executable, "-c", NO_TENSORFLOW + textwrap.dedent(code)],
                          env=_jax_env(tmp_path), cwd=tmp_path, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _load_device_check():
    return importlib.import_module("benchmarks.device_check")


def test_blocker_really_blocks_tensorflow(tmp_path):
    proc = _run_without_tensorflow("""
        try:
            import tensorflow
        except ImportError as e:
            print("blocked:", e)
    """, tmp_path)
    assert "blocked:" in proc.stdout


def test_device_check_module_imports_nothing_heavy(tmp_path):
    # Run as `python -m benchmarks.device_check` on the GPU machine (JAX, no TensorFlow):
    # importing it and parsing its flags imports no TensorFlow, Keras or JAX.
    proc = _run_without_tensorflow("""
        import importlib, sys
        dc = importlib.import_module("benchmarks.device_check")
        assert dc.parse_args(["--quick"]).quick
        print("HEAVY", [k for k in ("tensorflow", "keras", "jax") if k in sys.modules])
    """, tmp_path)
    assert "HEAVY []" in proc.stdout


def _width_variants():
    """{model: the model standing in for it under JAX}: the other widths of one pretrained
    network (EfficientAT's mn04 ... mn40, dymn04 ... dymn20) are the same builder with
    other channel counts (tests/test_models.py runs each width under TensorFlow), so the
    narrowest of each network trains the step here; each full-size width costs an XLA
    compilation of a minute on 2 CPU cores."""
    from esc50tf import models
    from esc50tf.pretrained import architectures

    networks = {}
    for spec in models.specs():
        arch = architectures.get(spec.pretrained) if spec.keras and spec.pretrained else {}
        if "network" in arch and "width" in arch:
            networks.setdefault((arch["family"], arch["network"]), []).append(
                (arch["width"], spec.name))
    return {name: min(members)[1] for members in networks.values()
            for _width, name in members if name != min(members)[1]}


def _keras_model_shards(count=2):
    """The registered Keras models (one of each network's widths) in `count` groups, one
    subprocess each (xdist runs them side by side): those on a large backbone (`weights`
    setting: keras.applications, PANNs trunks), whose XLA compilation is most of the time,
    dealt out first."""
    from esc50tf import models

    variants = _width_variants()
    specs = sorted((s for s in models.specs() if s.keras and s.name not in variants),
                   key=lambda s: "weights" not in s.settings)
    return [tuple(s.name for s in specs[i::count]) for i in range(count)]


def test_the_shards_cover_every_keras_model():
    from esc50tf import models

    shards = _keras_model_shards()
    names = [n for shard in shards for n in shard]
    variants = _width_variants()
    assert sorted(names + list(variants)) == sorted(s.name for s in models.specs() if s.keras)
    assert len(names) == len(set(names)) >= 10 and all(shards)
    assert set(variants.values()) == {"mn04", "dymn04"} <= set(names)
    assert {"mn10", "mn40", "dymn20"} <= set(variants)


@pytest.mark.slow
@pytest.mark.parametrize("shard", _keras_model_shards(), ids=lambda names: "+".join(names))
def test_every_keras_model_trains_a_step_under_jax_without_tensorflow(shard, tmp_path):
    # Small inputs (16 kHz, 0.5 s, hop 64: 126 frames x 32 Mels; images of 32 px, the
    # smallest keras.applications takes, for the CNNs on its backbones, 64 px for the
    # others, which need more than 32): a jitted forward, backward and an optimizer
    # update of each model. The hybrids' DenseNet keeps 126 // 32 = 3 time steps, so
    # their attention has a softmax to learn (over 1 step its gradients are 0).
    proc = _run_without_tensorflow(f"names = {list(shard)!r}\n" + textwrap.dedent("""
        import dataclasses, sys, time
        import numpy as np
        import keras
        from esc50tf import models
        from esc50tf.models.build import build_model
        from esc50tf.run_config import resolve_config
        from esc50tf.tasks.keras_task import make_optimizer

        assert keras.backend.backend() == "jax"
        assert all(models.get(name).keras for name in names)
        rng = np.random.default_rng(0)
        for name in names:
            cpu0 = time.process_time()
            cfg = resolve_config(name, "default")
            if models.get(name).pretrained:
                # PANNs models keep their own front end (fixed, full-size trunk); 64 hops
                # leave their trunk 2 time steps.
                features, config = cfg.features, cfg.model
                length = 64 * features.hop_length
            else:
                features = dataclasses.replace(cfg.features, n_fft=256, hop_length=64,
                                               n_mels=32, sample_rate=16000)
                config = models.ModelConfig(
                    name=name, dense_units=16, rnn_units=8, attention_units=8,
                    image_size=(32 if "weights" in models.get(name).settings else 64)
                    if models.get(name).family == "cnn" else None)
                length = 8000
            model = build_model(config, features, 5, length)
            # A constant rate: the default warmup starts at 0, and every weight must move.
            train_cfg = dataclasses.replace(cfg.train, schedule="constant", warmup_epochs=0.0)
            model.compile(make_optimizer(train_cfg, steps_per_epoch=10),
                          loss="categorical_crossentropy",
                          jit_compile=True)
            x = (0.1 * rng.standard_normal((2, length))).astype("float32")
            y = np.eye(5, dtype="float32")[[0, 3]]
            probs = np.asarray(model.predict_on_batch(x))  # jitted, as device_check infers
            assert probs.shape == (2, 5) and np.allclose(probs.sum(-1), 1, atol=1e-4), name
            before = [np.array(v) for v in model.trainable_variables]
            loss = float(model.train_on_batch(x, y))
            unchanged = {v.path for v, b in zip(model.trainable_variables, before)
                         if np.array_equal(np.array(v), b)}
            changed = len(before) - len(unchanged)
            assert np.isfinite(loss), (name, loss)
            # Every trainable weight gets a step (AdamW moves each one), except in
            # hybrid_seed, whose attention runs over the one step its global pooling
            # leaves (the study's design): no gradient there, and weight decay cannot
            # move the zero-initialised score bias.
            expected = {"attention_pool/b"} if name == "hybrid_seed" else set()
            assert unchanged == expected, (name, sorted(unchanged))
            print("trained", name, round(loss, 3), changed,
                  f"cpu {time.process_time() - cpu0:.1f} s", flush=True)
            keras.backend.clear_session()
        assert "tensorflow" not in sys.modules
        print("MODELS", ",".join(names))
    """), tmp_path)
    trained = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("trained")]
    assert trained == proc.stdout.split("MODELS ")[1].split()[0].split(",") == list(shard)


@pytest.mark.slow
def test_device_check_quick_runs_without_tensorflow(tmp_path):
    out = tmp_path / "out"
    _run_without_tensorflow(f"""
        import runpy, sys
        sys.argv = ["device_check", "--quick", "--out", {str(out)!r}]
        try:
            runpy.run_module("benchmarks.device_check", run_name="__main__")
        except SystemExit as e:
            assert not e.code, e.code
        assert "tensorflow" not in sys.modules
    """, tmp_path)
    report = json.loads((out / "device_check-quick-cpu.json").read_text())
    assert report["benchmark"] == "device_check" and report["mode"] == "quick"
    assert report["config"]["backend"] == "jax"
    assert report["environment"]["versions"]["jax"]
    assert report["device"]["dense_peak_tflops"] == {"mixed_bfloat16": None, "float32": None}
    results = report["results"]
    front = {r["name"] for r in results if r["section"] == "frontend"}
    for kind in ("stft", "mel", "mfcc"):
        for policy in ("float32", "mixed_bfloat16"):
            assert f"esc50tf-{kind}-{policy}-xla-b2" in front
    train = {r["name"]: r for r in results if r["section"] == "train"}
    assert set(train) == {f"{m}-{p}-b2" for m in ("cnn_small", "gru")
                          for p in ("float32", "mixed_bfloat16")}
    for r in train.values():
        assert r["step_ms_median"] > 0 and r["examples_per_s"] > 0
        assert r["infer_clips_per_s"] > 0 and r["step_gflops"] > 0
        assert r["step_memory_mib"] > 0 and r["fraction_of_peak"] is None  # CPU: unknown
        assert r["epoch_steps"] == 800 and r["recipe_epochs"] == 100
        assert r["cv5_projected_s"] == pytest.approx(5 * 100 * 800 * r["step_ms_median"] / 1000,
                                                     rel=1e-3, abs=0.1)
    # Mixed precision does the same arithmetic as float32.
    assert train["gru-mixed_bfloat16-b2"]["step_gflops"] == pytest.approx(
        train["gru-float32-b2"]["step_gflops"], rel=0.05)
    skipped = report["skipped"]
    assert any(s["section"] == "peer" and "skipped" in s["reason"] for s in skipped)
    lines = [json.loads(x) for x in (out / "device_check-quick-cpu.jsonl").read_text().splitlines()]
    assert [x["name"] for x in lines if x["record"] == "results"] == [r["name"] for r in results]
    md = (out / "device_check-quick-cpu.md").read_text()
    assert "## Front end (jit)" in md and "`gru-float32-b2`" in md and "PANNs" in md


def test_budget_skips_what_does_not_fit():
    dc = _load_device_check()
    now = [0.0]
    budget = dc.Budget(100, clock=lambda: now[0])
    assert budget.fits("train", "a") == (True, 0.0)  # nothing known yet
    budget.record("train", "a", 30.0)
    budget.record("train", "b", 50.0)
    now[0] = 60.0
    assert budget.fits("train", "a") == (True, 30.0)  # the same model took 30 s
    assert budget.fits("train", "b") == (False, 50.0)  # 50 s > 40 s left
    assert budget.fits("train", "c") == (True, 40.0)  # median of its section
    assert budget.fits("frontend", "mel") == (True, 0.0)
    now[0] = 100.0
    assert budget.fits("frontend", "mel")[0] is False  # nothing is left


def test_run_task_lists_what_did_not_fit_and_failures(tmp_path):
    dc = _load_device_check()
    now = [0.0]
    budget = dc.Budget(10, clock=lambda: now[0])
    payload = {"benchmark": "device_check", "mode": "quick", "results": [], "skipped": [],
               "budget": {"seconds": 10, "clock": budget.elapsed}}
    report = dc.Report(tmp_path, "cpu", payload, lambda p: "# report")

    def slow():
        now[0] += 8.0
        return [{"name": "a-1", "clips_per_s": 1.0}]

    def broken():
        raise RuntimeError("boom")

    dc.run_task(budget, report, "train", "a", "a-1", slow)
    dc.run_task(budget, report, "train", "a", "a-2", slow)  # 8 s estimated, 2 s left
    dc.run_task(budget, report, "peer", "b", "b-1", broken)  # a section of its own
    assert [r["name"] for r in payload["results"]] == ["a-1"]
    reasons = {s["name"]: s["reason"] for s in payload["skipped"]}
    assert reasons["a-2"].startswith("did not fit: estimated 8 s, 2 s")
    assert reasons["b-1"] == "RuntimeError: boom"
    saved = json.loads((tmp_path / "device_check-quick-cpu.json").read_text())
    assert [s["name"] for s in saved["skipped"]] == ["a-2", "b-1"]
    assert "clock" not in saved["budget"]
    records = [json.loads(x)["record"] for x in
               (tmp_path / "device_check-quick-cpu.jsonl").read_text().splitlines()]
    assert records == ["results", "skipped", "skipped"]


def test_watchdog_writes_what_was_measured_and_stops_a_task_past_the_budget(tmp_path):
    code = textwrap.dedent(f"""
        import importlib, time
        dc = importlib.import_module("benchmarks.device_check")
        budget = dc.Budget(1.5)
        payload = {{"benchmark": "device_check", "mode": "quick", "results": [],
                    "skipped": [], "budget": {{"seconds": 1.5, "clock": budget.elapsed}}}}
        report = dc.Report({str(tmp_path)!r}, "cpu", payload, lambda p: "# partial")
        dc.start_watchdog(budget, report)
        dc.run_task(budget, report, "frontend", "mel", "mel-1", lambda: [{{"name": "mel-1"}}])
        dc.run_task(budget, report, "train", "x", "x-1", lambda: time.sleep(60))
        print("not reached")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 3, proc.stderr
    assert "not reached" not in proc.stdout and "# partial" in proc.stdout
    saved = json.loads((tmp_path / "device_check-quick-cpu.json").read_text())
    assert [r["name"] for r in saved["results"]] == ["mel-1"]
    assert saved["skipped"][0]["name"] == "x-1" and saved["skipped"][0]["reason"].startswith("cut")
    assert saved["budget"]["cut_by_watchdog"] is True and saved["budget"]["elapsed_s"] < 10


def test_step_flops_counts_a_matmul_and_peaks_are_by_precision():
    jax = pytest.importorskip("jax")
    dc = _load_device_check()
    lowered = jax.jit(lambda a, b: a @ b).lower(jax.numpy.ones((64, 32)), jax.numpy.ones((32, 16)))
    assert dc.step_flops(lowered) == 2 * 64 * 32 * 16
    assert dc.compiled_bytes(lowered.compile()) == 4 * (64 * 32 + 32 * 16 + 64 * 16)
    from benchmarks import common
    assert common.dense_peak_tflops("NVIDIA H200", "mixed_bfloat16") == 989.5
    assert common.dense_peak_tflops("NVIDIA H200", "float32") == 494.7
    assert common.dense_peak_tflops("NVIDIA A100-SXM4-80GB", "float32") == 156.0
    assert common.dense_peak_tflops("cpu", "float32") is None


def test_cv_projection():
    from benchmarks import common

    p = common.cv_projection(32, 0.1, 100)
    assert p == {"epoch_steps": 50, "epoch_s": 5.0, "cv5_projected_s": 2500.0,
                 "cv5_projected_h": 0.694}


def test_peer_is_skipped_with_a_reason_without_torch_or_cnn14():
    dc = _load_device_check()
    runs, reason = dc.peer_status(("cnn_small",))
    assert runs is False and reason.startswith("skipped:")
    if importlib.util.find_spec("torch") and importlib.util.find_spec("panns_inference"):
        assert "cnn14" in reason
    else:
        assert "not importable" in reason


def test_device_check_rejects_bad_flags(capsys):
    dc = _load_device_check()
    for argv in (["--budget-s", "0"], ["--policies", "float16"], ["--batch-sizes", "0"],
                 ["--skip", "everything"]):
        with pytest.raises(SystemExit) as e:
            dc.parse_args(argv)
        assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--budget-s must be positive" in err and "float16" in err and "everything" in err


@pytest.mark.slow
def test_device_wheels_script_makes_a_small_set(tmp_path):
    dest = tmp_path / "whl"
    proc = subprocess.run(["bash", str(ROOT / "tools" / "device_wheels.sh"), str(dest)],
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0 and "No matching distribution" in proc.stderr + proc.stdout:
        pytest.skip("no package index reachable")
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheels = sorted(p.name.split("-")[0] for p in dest.glob("*.whl"))
    assert wheels == ["esc50tf", "keras", "namex", "optree"]
    assert sum(p.stat().st_size for p in dest.glob("*.whl")) < 16 * 2**20
    assert any("cp312" in p.name and "manylinux" in p.name for p in dest.glob("optree-*.whl"))
