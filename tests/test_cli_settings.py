"""Settings declared once on their config fields, the CLI as data, one flag vocabulary.

- A setting declared on a config field (`esc50tf.config.setting`) gets its CLI
  option and its tune search parameter with no change anywhere else.
- No choice list is written in the CLI; each one lives with its setting.
- Every command takes `--verbose` (after a subcommand too); every command that
  shows progress takes `--quiet`, and the flag reaches the library.
- train, tune and study start from the same preset and resume the same way.
"""

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from esc50tf import cli
from esc50tf.cli import options
from esc50tf.errors import Esc50Error

ROOT = Path(__file__).resolve().parents[1]

# A new setting, declared once on a subclass of a section's config, then swapped in.
NEW_SETTING = """
import dataclasses, json, sys
from esc50tf.config import choice, setting
from esc50tf.run_config import RunConfig

section, name = sys.argv[1], sys.argv[2]
base = RunConfig.nested[section]

@dataclasses.dataclass(frozen=True)
class WithNewSetting(base):
    conv_width: int = setting(8, flag="--conv-width", type="positive_int",
                              help="width of the new layer", search=choice([8, 16]),
                              check=lambda v: v >= 1, allowed="an integer >= 1")

RunConfig.nested[section] = WithNewSetting

from esc50tf import cli, tune
from esc50tf.cli import options
from esc50tf.errors import Esc50Error

parser = cli.build_parser()
sub = next(a for a in parser._actions if a.dest == "command").choices
out = {"help": {c: "--conv-width" in sub[c].format_help() for c in ("train", "tune", "study")}}
args = sub["train"].parse_args(["--model", "cnn_small", "--conv-width", "16"])
out["overrides"] = options.overrides(args, *options.OPTIONS.values()).get(section)
try:
    sub["train"].parse_args(["--model", "cnn_small", "--conv-width", "0"])
except SystemExit:
    out["bad_flag_refused"] = True
p = tune.PARAMS["conv_width"]
out["param"] = [p.section, p.key, p.kind, tune.DEFAULT_SPACE["conv_width"]]
try:
    tune.validate_entry("conv_width", {"type": "choice", "values": [0]})
except Esc50Error as err:
    out["space_error"] = str(err)
out["fixed_by_flag"] = tune.fixed_by_flags({section: {"conv_width": 16}})
print(json.dumps(out))
"""


@pytest.mark.parametrize("section", ["model", "features", "train", "augment"])
def test_a_setting_declared_on_its_field_gets_its_flag_and_tune_parameter(section):
    import json

    done = subprocess.run([sys.executable, "-c", NEW_SETTING, section, "conv_width"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["help"] == {"train": True, "tune": True, "study": True}
    assert out["overrides"] == {"conv_width": 16}
    assert out["bad_flag_refused"]
    assert out["param"] == [section, "conv_width", "int", {"type": "choice", "values": [8, 16]}]
    assert "value 0 is not allowed; allowed: an integer >= 1" in out["space_error"]
    assert out["fixed_by_flag"] == {"conv_width": 16}


def test_no_choice_list_is_written_in_the_cli():
    found = []
    for path in sorted((ROOT / "esc50tf" / "cli").glob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"choices\s*=\s*[\[(]", line):
                found.append(f"{path.name}:{number}: {line.strip()}")
    assert found == [], found


def test_each_choice_list_exists_once():
    """The CLI's choices are the constants the configs check against."""
    from esc50tf import distribute, presets, recipe
    from esc50tf.frontend import config as frontend_config
    from esc50tf.models import config as model_config
    from esc50tf.run_config import OPTIMIZERS

    table = {o[0]: o[3].get("choices") for o in
             [o for t in options.OPTIONS.values() for o in t]}
    assert table["--optimizer"] == list(OPTIMIZERS)
    assert table["--strategy"] == list(distribute.STRATEGIES)
    assert table["--mixed-precision"] == list(distribute.PRECISIONS)
    assert table["--schedule"] == list(recipe.SCHEDULES)
    assert table["--normalization"] == list(model_config.NORMALIZATIONS)
    assert table["--backbone"] == list(model_config.HYBRID_BACKBONES)
    assert table["--log"] == ["none", "db", "ln"]  # LOGS, None spelled none
    assert table["--window"] == list(frontend_config.WINDOWS)
    sub = _commands(cli.build_parser())
    from esc50tf.data import tfrecords

    build = {a.option_strings[0]: a for a in sub["build-tfrecords"]._actions if a.option_strings}
    assert build["--compression"].choices == list(tfrecords.COMPRESSIONS)
    assert build["--sample-rate"].default == tfrecords.BuildConfig().sample_rate  # the field's
    for command in ("train", "tune", "study"):
        preset = next(a for a in sub[command]._actions if "--preset" in a.option_strings)
        assert list(preset.choices) == list(presets.PRESETS), command


def test_none_choices_are_spelled_none_on_the_command_line():
    sub = _commands(cli.build_parser())
    args = sub["train"].parse_args(["--model", "cnn_small", "--norm", "none", "--log", "none",
                                    "--fmax", "none"])
    over = options.overrides(args, options.FEATURE_OPTIONS)["features"]
    assert over == {"norm": None, "log": None}  # --fmax none: None, the default, not set


def _commands(parser):
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def _leaves(parser):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [parser]
    return [leaf for p in subs[0].choices.values() for leaf in _leaves(p)]


def test_every_command_and_subcommand_takes_verbose():
    sub = _commands(cli.build_parser())
    assert sorted(sub) == sorted(c.name for c in cli.commands())
    for name, p in sub.items():
        for leaf in _leaves(p):
            assert "--verbose" in leaf._option_string_actions, leaf.prog
    parser = cli.build_parser()
    for argv in (["pretrained", "--verbose", "list"], ["pretrained", "list", "--verbose"],
                 ["pretrained", "download", "cnn14", "--verbose"],
                 ["data-service", "worker", "--dispatcher", "h:1", "--verbose"]):
        assert parser.parse_args(argv).verbose is True, argv
    assert not hasattr(parser.parse_args(["pretrained", "list"]), "verbose")


QUIET = {"download": [], "build-tfrecords": ["--data-dir", "d", "--out", "o"],
         "train": ["--model", "gru"], "tune": ["--data", "d", "--out", "o"],
         "study": ["--data", "d", "--out", "o"], "predict": ["m", "a.wav"],
         "embed": ["cnn14", "a.wav", "--out", "e.npz"]}


def test_every_command_that_shows_progress_takes_quiet():
    parser = cli.build_parser()
    progress = {c.name for c in cli.commands() if c.progress}
    assert progress == set(QUIET)
    for name, argv in QUIET.items():
        assert parser.parse_args([name, *argv, "--quiet"]).quiet is True, name
        assert parser.parse_args([name, *argv]).quiet is False, name
    for name in ("build-tfrecords", "embed"):  # the old spelling still works
        assert parser.parse_args([name, *QUIET[name], "--no-progress"]).quiet is True
    assert parser.parse_args(["pretrained", "download", "cnn14", "--quiet"]).quiet is True


def test_quiet_reaches_the_library(monkeypatch):
    from esc50tf.data import build, download

    seen = {}
    monkeypatch.setattr(build, "build_tfrecords",
                        lambda *a, **kw: seen.setdefault("build", kw["progress"]))
    monkeypatch.setattr(download, "download",
                        lambda *a, **kw: seen.setdefault("download", kw["progress"]))
    monkeypatch.setattr("esc50tf.startup.quiet_tensorflow", lambda: None)
    assert cli.main(["build-tfrecords", "--data-dir", "d", "--out", "o", "--quiet"]) == 0
    assert cli.main(["download", "--dest", "d", "--quiet"]) == 0
    assert seen == {"build": False, "download": False}


def test_commands_that_run_tensorflow_say_so():
    """The hand-kept list this replaces missed export, embed and pretrained."""
    parser = cli.build_parser()
    by_name = {c.name: c for c in cli.commands()}
    for argv in (["export", "run", "--out", "x"], ["embed", "cnn14", "a.wav", "--out", "e.npz"],
                 ["pretrained", "download", "cnn14"], ["train", "--model", "gru"],
                 ["inspect", "d", "--verify"]):
        assert by_name[argv[0]].runs_tensorflow(parser.parse_args(argv)), argv
    for argv in (["inspect", "d"], ["pretrained", "list"], ["compare", "r"], ["models"]):
        assert not by_name[argv[0]].runs_tensorflow(parser.parse_args(argv)), argv


def test_train_tune_and_study_start_from_the_same_preset():
    parser = cli.build_parser()
    tune_args = parser.parse_args(["tune", "--data", "d", "--out", "o"])
    study_args = parser.parse_args(["study", "--data", "d", "--out", "o"])
    train_cfg = cli.train_config_from_args(
        parser.parse_args(["train", "--model", "gru", "--data", "d", "--out", "o"]))
    assert tune_args.preset == study_args.preset == train_cfg.train.preset == "default"


def test_help_lists_every_registered_family():
    from esc50tf.models import registry

    families = {s.family for s in registry.specs()}
    assert "panns" in families
    sub = _commands(cli.build_parser())
    for command in ("models", "study"):
        text = " ".join(sub[command].format_help().split())
        for family in families:
            assert family in text, (command, family)


def test_a_search_folder_resumes_like_a_run_folder(tmp_path):
    """Same settings: it resumes (no --resume); other settings: refused unless --overwrite."""
    from esc50tf.tune import run as tune

    out = tmp_path / "search"
    settings = {"epochs": 1, "models": ["gru"]}
    assert tune._prepare_out(out, settings, overwrite=False) is False  # created
    (out / "search").mkdir()
    assert tune._prepare_out(out, settings, overwrite=False) is True  # resumes by itself
    with pytest.raises(Esc50Error, match=r"epochs 1 -> 3.*--overwrite"):
        tune._prepare_out(out, {**settings, "epochs": 3}, overwrite=False)
    assert (out / "search").is_dir()  # nothing deleted
    assert tune._prepare_out(out, {**settings, "epochs": 3}, overwrite=True) is False
    assert not (out / "search").exists()
