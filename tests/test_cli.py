"""The command line: light imports, help on every command, inspect, synth, demo."""

import json
import subprocess
import sys

import pytest

from esc50tf.cli import build_parser, main


def test_import_and_help_do_not_load_tensorflow():
    code = (
        "import sys, esc50tf, esc50tf.cli\n"
        "from esc50tf.cli import build_parser\n"
        "build_parser()\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'pandas', 'sklearn') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _commands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sorted(sub.choices)


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: esc50tf {command}" in out and len(out) > 200


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "esc50tf.cli", "--version"], check=True,
                         capture_output=True, text=True).stdout
    assert out.startswith("esc50tf ")


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["nope"])
    assert exit_.value.code == 2


def test_inspect_shows_leak_free_splits(tiny_tfrecords, capsys):
    assert main(["inspect", str(tiny_tfrecords), "--verify", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["total"] == 40
    assert sorted(report["splits"]) == ["fold1", "fold2", "fold3", "fold4", "fold5"]
    for sizes in report["splits"].values():
        assert sizes["test"] == 8 and sizes["train"] + sizes["val"] == 32
    assert main(["inspect", str(tiny_tfrecords), "--split", "0.8"]) == 0
    assert "ratio0.8" in capsys.readouterr().out
    assert main(["inspect", str(tiny_tfrecords), "--test-fold", "9"]) == 1
    assert "test fold 9 is not in the data" in capsys.readouterr().err


def test_synth_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "s"
    args = ["synth", "--out", str(out), "--classes", "2", "--clips-per-class", "5",
            "--sample-rate", "8000", "--clip-seconds", "0.5"]
    assert main(args) == 0
    assert len(list((out / "audio").iterdir())) == 10
    assert main(args) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--seed", "3"]) == 0


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    err = capsys.readouterr().err
    assert "no src_file shared" in err and "demo finished" in err
    assert f"report in {tmp_path / 'demo' / 'run'}/report.md" in err
    manifest = json.loads((tmp_path / "demo" / "tfrecords" / "manifest.json").read_text())
    assert manifest["counts"]["total"] == 400
    report = json.loads((tmp_path / "demo" / "run" / "report.json").read_text())
    assert report["folds"][0]["split"] == "fold1" and report["folds"][0]["num_test_clips"] == 80
    assert report["accuracy"] >= 0.9, report["per_class_accuracy"]


def test_features_command_writes_npz_and_plot(tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    a, b = tmp_path / "a.wav", tmp_path / "b.flac"
    sf.write(a, rng.uniform(-0.3, 0.3, 16000), 16000)
    sf.write(b, rng.uniform(-0.3, 0.3, (8000, 2)), 16000, format="FLAC")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"nope" * 40)
    out, plot = tmp_path / "f.npz", tmp_path / "f.png"
    code = main(["features", str(a), str(bad), str(b), "--kind", "mfcc", "--n-mfcc", "13",
                 "--n-fft", "512", "--hop-length", "256", "--out", str(out), "--plot", str(plot)])
    assert code == 1 and "bad.wav" in capsys.readouterr().err
    data = np.load(out)
    assert data["features"].shape == (2, 1 + 16000 // 256, 13)
    assert list(data["filenames"]) == [str(a), str(b)]
    assert json.loads(str(data["config"]))["n_mfcc"] == 13
    assert plot.stat().st_size > 0
    assert main(["features", str(a), "--out", str(out)]) == 1  # no silent overwrite
    assert "--overwrite" in capsys.readouterr().err
