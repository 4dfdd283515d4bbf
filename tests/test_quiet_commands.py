"""Every command's cheapest real path writes no TensorFlow, LiteRT or converter noise to
stderr unless --verbose: absl's preamble, oneDNN and CUDA start-up lines, C++ log lines,
tf.function retracing warnings of the host featurizer, LiteRT's XNNPACK line and the int8
quantizer's settings. Each command runs in its own process, as a user runs it."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

PANNS = Path(__file__).parent / "fixtures" / "panns"
NOISE = [
    "absl::InitializeLog", "oneDNN custom operations", "cudart_stub", "Could not find cuda",
    "cuInit", "triggered tf.function retracing", "XNNPACK delegate", "fully_quantize",
    "use_unbounded_threadpool", "rebuild TensorFlow with the appropriate compiler flags",
]
_CPP_LOG = re.compile(r"^[IWEF]\d{4} ", re.M)
SMALL = ["--n-fft", "256", "--hop-length", "64", "--n-mels", "32"]


def _run(*args, verbose=False):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "ESC50TF_VERBOSE")}
    cmd = [sys.executable, "-m", "esc50tf", *map(str, args)] + (["--verbose"] if verbose else [])
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{args}: {done.stderr[-3000:]}"
    return done.stderr


def noise_in(stderr):
    """The noise lines of a command's stderr."""
    return [line for line in stderr.splitlines()
            if _CPP_LOG.match(line) or any(n in line for n in NOISE)]


def test_noise_patterns_catch_what_tensorflow_prints():
    sample = ("WARNING: All log messages before absl::InitializeLog() is called are written to "
              "STDERR\nI0000 00:00:1796638479.937018   11305 port.cc:153] oneDNN custom "
              "operations are on.\nINFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
              "export: writing\n")
    assert len(noise_in(sample)) == 3


@pytest.mark.slow
def test_commands_print_no_tensorflow_noise(demo_run, exports, tiny_tfrecords, tmp_path):
    run, esc50, _ = demo_run
    wav = sorted((esc50 / "audio").glob("1-*.wav"))[0]
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000), 16000)
    weights = tmp_path / "w.weights.npz"
    commands = {
        "features": ["features", wav, "--out", tmp_path / "f.npz"],
        "predict": ["predict", run, wav],
        "predict export": ["predict", exports["float16"], wav, silent],
        "predict timeline": ["predict", exports["int8"], wav, "--timeline", "--out",
                             tmp_path / "tl"],
        "evaluate": ["evaluate", run],
        "export int8": ["export", run, "--quantize", "int8", "--out", tmp_path / "int8",
                        "--calibration-clips", "8"],
        "pretrained convert": ["pretrained", "convert", "cnn14_16k",
                               PANNS / "cnn14_16k.legacy.pth", "--out", weights],
        "embed": ["embed", weights, wav, "--out", tmp_path / "e.npz"],
        "train svm": ["train", "--model", "svm", "--data", tiny_tfrecords, "--out",
                      tmp_path / "svm", "--cv", "--quiet", *SMALL],
        "study": ["study", "--data", tiny_tfrecords, "--out", tmp_path / "study", "--models",
                  "svm", "--protocol", "test-fold", "1", "--epochs", "1", "--quiet", *SMALL],
    }
    noisy = {name: noise_in(_run(*args)) for name, args in commands.items()}
    assert {k: v for k, v in noisy.items() if v} == {}
    # --verbose shows TensorFlow's own lines again.
    assert noise_in(_run("features", wav, "--out", tmp_path / "g.npz", verbose=True))
