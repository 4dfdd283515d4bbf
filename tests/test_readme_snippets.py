"""The README's code blocks marked `<!-- readme-snippet: demo-run -->` run as written.

Each marked block is run in a scratch folder where `demo/run` is the shared demo-like
trained run (tests/conftest.py `demo_run`, standing in for `esc50tf demo --out demo`, whose
line is the one not run) and the audio files the snippets name are clips of that run's
data: shell blocks by bash with the installed `esc50tf` command, Python blocks by this
interpreter, in README order.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

README = Path(__file__).resolve().parents[1] / "README.md"
MARK = "<!-- readme-snippet: demo-run"
_BLOCK = re.compile(r"^" + re.escape(MARK) + r"[^\n]*\n```(bash|python)\n(.*?)^```",
                    re.S | re.M)


def snippets(text=None):
    """(language, code) of every marked block of the README, in order."""
    return [(m.group(1), m.group(2)) for m in _BLOCK.finditer(text or README.read_text())]


def test_marked_snippets_are_found():
    found = snippets()
    assert [lang for lang, _ in found] == ["bash", "python"]
    assert "esc50tf export demo/run" in found[0][1]
    assert snippets("x\n" + MARK + " -->\n```bash\necho hi\n```\n") == [("bash", "echo hi\n")]


@pytest.mark.slow
def test_readme_snippets_run_against_a_demo_like_run(demo_run, tmp_path):
    run, esc50, _ = demo_run
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "run").symlink_to(run, target_is_directory=True)
    clips = sorted((esc50 / "audio").glob("1-*.wav"))
    wave, rate = sf.read(clips[0], dtype="float32")
    sf.write(tmp_path / "clip.wav", wave, rate)
    long = np.concatenate([sf.read(c, dtype="float32")[0] for c in clips[:4]])
    sf.write(tmp_path / "forest-night.wav", long, rate)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for lang, code in snippets():
        if lang == "bash":
            lines = [line for line in code.splitlines()
                     if not line.startswith("esc50tf demo")]  # demo/run stands for it
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(lines)],
                                  cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=1200)
        else:
            done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{lang} snippet failed:\n{code}\n{done.stderr[-3000:]}"
        if lang == "python":
            labels = (tmp_path / "export" / "float" / "labels.txt").read_text().splitlines()
            printed = done.stdout.split()
            assert len(printed) == 2 and set(printed) <= set(labels)
    assert (tmp_path / "tl" / "forest-night" / "timeline.json").is_file()
