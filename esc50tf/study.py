"""`esc50tf study`: train every model x front end (x optimizer x learning rate), then compare.

Layout of a study folder OUT:

    OUT/study.json        the latest plan: settings and every run's name
    OUT/runs/<name>/      one `esc50tf train` run folder per grid point
    OUT/failures.json     runs of the latest invocation that raised, with the error
    OUT/comparison.md ... `esc50tf.compare` over every OUT/runs/* with a report

Run names encode the grid point: `<model>-<features>-<preset>` (e.g.
`bigru-mel-seed`), plus `-<optimizer>-lr<lr>` with the optimizer x learning
rate grid (`gru-mfcc-seed-sgd-lr0.01`). The scikit-learn models do not use
the front-end kind (their input is ModelConfig.classic_features: the study's
Mel image, or Mel + MFCC band statistics) nor an optimizer, so they run once
per study, named after their input (`svm-image-seed`).

Grid. Without `grid`, each model trains once per feature kind at its
preset's own settings (`seed`: the study's optimizer and learning rate for
that model). With `grid`, every Keras model trains at every optimizer x
learning rate of the study (Adam, SGD, Adagrad x 0.01, 0.001, 0.0001: nine
runs per model and feature kind).

Resuming. A run whose folder holds `report.json` is done and skipped; a run
started but not finished resumes through `esc50tf train`'s own resume (its
finished splits are kept, the interrupted one continues from its last
epoch). A run folder holding another configuration (other flags than
before) stops the study before anything trains, unless `overwrite`.
A run that raises is recorded in `failures.json` and the study goes on.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import sys
import time
import traceback
from pathlib import Path

from esc50tf import cleanup
from esc50tf.config import Config
from esc50tf.errors import Esc50Error
from esc50tf.frontend import KINDS
from esc50tf.io import read_json, write_json
from esc50tf.lock import holds_lock
from esc50tf.presets import STUDY_GRID_LRS, STUDY_GRID_OPTIMIZERS
from esc50tf.io import log as _log  # `log` is the name of a parameter here

FEATURE_KINDS = KINDS


@dataclasses.dataclass(frozen=True)
class StudyRun(Config):
    """One grid point of a study.

    Args:
        name: str. Folder name under OUT/runs.
        model: str. Registered model name.
        family: str. The model's family.
        features: str. Front-end kind (mel, mfcc, stft), or the classic
            models' input (image, stats).
        optimizer: str or None. The grid's optimizer; None: the preset's.
        lr: float or None. The grid's learning rate; None: the preset's.
        config: esc50tf.run_config.RunConfig. Fully resolved.
    """

    name: str
    model: str
    family: str
    features: str
    optimizer: str | None
    lr: float | None
    config: object

    @property
    def keras(self):
        """Whether the model trains through the Keras task (it has an optimizer and epochs)."""
        from esc50tf.models import registry

        return registry.get(self.model).keras

    def to_dict(self):
        """The grid point as a dict; `config` as the run's config.json holds it."""
        out = super().to_dict()
        if self.config is not None:
            out["config"] = self.config.to_dict()
        return out

    @classmethod
    def from_dict(cls, values):
        """Inverse of `to_dict` (the config section read as a RunConfig)."""
        from esc50tf.run_config import RunConfig

        run = super().from_dict(values)
        if isinstance(run.config, dict):
            run = run.replace(config=RunConfig.from_dict(run.config))
        return run


@dataclasses.dataclass
class StudyResult:
    """What a study did: run names trained now, skipped as done, and failures."""

    trained: list
    skipped: list
    failed: list
    comparison: object = None


def select_models(spec="all"):
    """`"all"`, or comma-separated model names and family names -> model names, in order.

    Raises:
        Esc50Error: an unknown name, listing the valid models and families.
    """
    from esc50tf.models import registry

    names = spec if isinstance(spec, (list, tuple)) else str(spec).split(",")
    out = []
    for token in (n.strip() for n in names):
        if not token:
            continue
        if token == "all":
            chosen = registry.names()
        elif token in (families := [f.name for f in registry.families()]):
            chosen = [s.name for s in registry.specs() if s.family == token]
        else:
            try:
                chosen = [registry.get(token).name]
            except Esc50Error:
                raise Esc50Error(
                    f"unknown model {token!r}; valid: all, a family ({', '.join(families)})"
                    f" or a model ({', '.join(registry.names())})") from None
        out += [n for n in chosen if n not in out]
    if not out:
        raise Esc50Error(f"no model selected by {spec!r}")
    return out


def parse_kinds(spec):
    """`"mel,mfcc"` -> ["mel", "mfcc"]; Esc50Error for anything else."""
    kinds = spec if isinstance(spec, (list, tuple)) else str(spec).split(",")
    out = []
    for k in (k.strip() for k in kinds):
        if k not in FEATURE_KINDS:
            raise Esc50Error(f"unknown feature kind {k!r}; allowed: {', '.join(FEATURE_KINDS)}")
        if k not in out:
            out.append(k)
    if not out:
        raise Esc50Error(f"no feature kind given in {spec!r}; allowed: {', '.join(FEATURE_KINDS)}")
    return out


def run_name(model, features, preset, optimizer=None, lr=None):
    """`gru-mel-seed`, or `gru-mel-seed-sgd-lr0.01` at a grid point."""
    name = f"{model}-{features}-{preset}"
    if optimizer is not None:
        name += f"-{optimizer}-lr{lr:g}"
    return name


def plan_study(data, out, models="all", preset="seed", kinds=None, grid=False,
               optimizers=STUDY_GRID_OPTIMIZERS, lrs=STUDY_GRID_LRS, overrides=None,
               no_augment=False):
    """Resolves every run of a study; nothing is written. Returns a list of StudyRun.

    Args:
        data: str. TFRecord folder (its manifest is read here).
        out: str. Study folder.
        models: str or list. "all", model names and/or family names.
        preset: str. "seed" or "default".
        kinds: list of str or None. Front-end kinds; None: the preset's (mel).
        grid: bool. Expand Keras models over `optimizers` x `lrs`.
        optimizers, lrs: the grid's axes. Default to the study's.
        overrides: dict. Config sections set by the user (train options,
            model, features, augment), applied over the preset for every run.
        no_augment: bool. Switch every augmentation off.

    Raises:
        Esc50Error: a bad setting (unknown model, kind, optimizer; a value the
            configs reject), naming the run it concerns.
    """
    from esc50tf import presets, run_config
    from esc50tf.data import tfrecords as tfr
    from esc50tf.models import registry

    from esc50tf.augment import AugmentConfig

    if not data:
        raise Esc50Error("no --data TFRecord folder given")
    if not out:
        raise Esc50Error("no --out study folder given")
    manifest = tfr.read_manifest(data)
    overrides = json.loads(json.dumps(overrides or {}))
    user_train = overrides.get("train", {})
    if grid and ({"optimizer", "lr"} & set(user_train)):
        raise Esc50Error("--optimizer / --lr fix one optimizer and learning rate for every run; "
                         "they cannot be combined with --grid (use --grid-optimizers / --grid-lrs)")
    if grid:
        bad = [o for o in optimizers if o not in run_config.OPTIMIZERS]
        if bad:
            raise Esc50Error(f"unknown grid optimizer(s) {', '.join(bad)}; "
                             f"allowed: {', '.join(run_config.OPTIMIZERS)}")
        if not lrs or any(not lr > 0 for lr in lrs):
            raise Esc50Error(f"grid learning rates must be numbers > 0, got {list(lrs)!r}")
    if preset not in presets.PRESETS:
        raise Esc50Error(f"unknown preset {preset!r}; choose one of {', '.join(presets.PRESETS)}")
    # train() sets the rate from the manifest; doing it here too makes the planned
    # config equal to the config.json train writes (the resume check compares them).
    overrides.setdefault("features", {})["sample_rate"] = int(manifest["config"]["sample_rate"])
    overrides.setdefault("train", {})["data"] = str(data)
    runs = []
    named = set(models if isinstance(models, (list, tuple)) else str(models).split(","))
    for model in select_models(models):
        spec = registry.get(model)
        rate = registry.required_sample_rate(model)
        if rate and model not in named and rate != int(manifest["config"]["sample_rate"]):
            _log(f"study: {model} left out: it takes {rate} Hz audio, {data} holds "
                 f"{manifest['config']['sample_rate']} Hz clips (name it to see how to rebuild)")
            continue
        if spec.pretrained:
            model_kinds = ["mel"]  # its own log-Mel front end (esc50tf.models.panns)
            points = ([(o, lr) for o in optimizers for lr in lrs] if grid else [(None, None)])
        elif spec.keras:
            model_kinds = kinds or [presets.preset(preset, model)["features"].get("kind", "mel")]
            points = ([(o, lr) for o in optimizers for lr in lrs] if grid else [(None, None)])
        else:
            model_kinds, points = [None], [(None, None)]
        for kind in model_kinds:
            for optimizer, lr in points:
                over = json.loads(json.dumps(overrides))
                if kind is not None:
                    over["features"]["kind"] = kind
                if optimizer is not None:
                    over["train"].update(optimizer=optimizer, lr=float(lr))
                try:
                    cfg = run_config.resolve_config(model, preset, overrides=over)
                    registry.check_data(cfg.model, manifest, data)
                except Esc50Error as err:
                    raise Esc50Error(f"{model} ({kind or 'classic'}): {err}") from None
                label = kind if kind is not None else cfg.model.classic_features
                name = run_name(model, label, preset, optimizer, lr)
                cfg = dataclasses.replace(
                    cfg, train=dataclasses.replace(cfg.train, out=str(Path(out) / "runs" / name)))
                if no_augment:
                    cfg = dataclasses.replace(cfg, augment=AugmentConfig())
                runs.append(StudyRun(name, model, spec.family, label, optimizer,
                                     None if lr is None else float(lr), cfg))
    return runs


def check_run_folders(runs):
    """Esc50Error if a run folder holds another configuration than planned (`rundir.state`)."""
    from esc50tf import rundir
    from esc50tf.run_config import config_diff
    from esc50tf.train import same_config

    clashes = []
    for run in runs:
        found, detail = rundir.state(run.config.train.out, "config.json", run.config.to_dict(),
                                     same=same_config, describe=config_diff)
        if found == rundir.FOREIGN:
            clashes.append(f"{run.name}: folder is not an esc50tf run")
        elif found == rundir.UNREADABLE:
            clashes.append(f"{run.name}: unreadable config.json ({detail})")
        elif found == rundir.OTHER:
            clashes.append(f"{run.name}: {detail}")
    if clashes:
        shown = "\n  ".join(clashes[:5]) + (f"\n  ... and {len(clashes) - 5} more"
                                           if len(clashes) > 5 else "")
        raise Esc50Error("the study folder holds run(s) made with other settings:\n  " + shown
                         + "\nrerun with the same flags, pass --overwrite to redo every run, "
                         "or choose another --out")


def estimate_seconds(pending, durations):
    """Time left for `pending` runs: each at the mean time of finished runs of its model,
    or of all finished runs when none of its model has finished. None before any finished."""
    everything = [s for times in durations.values() for s in times]
    if not everything:
        return None
    overall = sum(everything) / len(everything)
    total = 0.0
    for run in pending:
        own = durations.get(run.model)
        total += sum(own) / len(own) if own else overall
    return total


def format_duration(seconds):
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min"


@holds_lock("study", lambda runs, out, *a, **k: out)
def run_study(runs, out, overwrite=False, verbose=2, log=_log, compare=True):
    """Trains every planned run not yet done, records failures, then compares.

    Args:
        runs: list of StudyRun from `plan_study`.
        out: str. The study folder (the runs' folders are under OUT/runs).
        overwrite: bool. Redo every run, finished or not.
        verbose: int. Keras fit verbosity per run (1 progress bars, 2 one line per epoch).
        log: callable taking a str (progress lines).
        compare: bool. Write the comparison into OUT when done.

    Returns:
        StudyResult.
    """
    from esc50tf import compare as compare_lib
    from esc50tf.train import train

    out = Path(out)
    if not overwrite:
        check_run_folders(runs)
    created = cleanup.make_dirs(out / "runs")
    first = runs[0].config.train if runs else None
    write_json(out / "study.json", {
        "data": first.data if first else None,
        "preset": first.preset if first else None,
        "runs": [{"name": r.name, "model": r.model, "family": r.family, "features": r.features,
                  "optimizer": r.optimizer, "lr": r.lr} for r in runs],
        "started": _now(),
    })
    failures_path = out / "failures.json"
    result = StudyResult([], [], [])
    failures = []
    write_json(failures_path, failures)
    durations = {}  # model -> seconds of its finished runs (for the estimate)
    n = len(runs)
    for i, run in enumerate(runs, 1):
        run_dir = Path(run.config.train.out)
        tag = f"study [{i}/{n}] {run.name}"
        if not overwrite and (run_dir / "report.json").is_file():
            report = read_json(run_dir / "report.json")
            seconds = report.get("wall_time_s")
            if seconds:
                durations.setdefault(run.model, []).append(float(seconds))
            result.skipped.append(run.name)
            log(f"{tag}: already done (accuracy {100 * report.get('accuracy', 0):.1f}%), skipped")
            continue
        resuming = (run_dir / "config.json").is_file() and not overwrite
        log(f"{tag}: {'resuming' if resuming else 'training'} ({_describe(run)})")
        start = time.perf_counter()
        try:
            report = train(run.config, overwrite=overwrite, verbose=verbose)
        except Exception as err:  # noqa: BLE001 - one failed run must not stop the study
            failures.append({
                "name": run.name, "model": run.model, "features": run.features,
                "optimizer": run.optimizer, "lr": run.lr, "run_dir": str(run_dir),
                "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc(), "time": _now(),
            })
            write_json(failures_path, failures)
            result.failed.append(run.name)
            log(f"{tag}: FAILED after {format_duration(time.perf_counter() - start)}: "
                f"{type(err).__name__}: {err} (recorded in {failures_path}; continuing)")
        except BaseException:  # Ctrl-C stops the study; a study this command began and
            # that has no run folder yet (train removes one without a finished epoch) goes too.
            if out in created and not any((out / "runs").iterdir()):
                cleanup.discard(out, created)
            raise
        else:
            seconds = time.perf_counter() - start
            durations.setdefault(run.model, []).append(seconds)
            result.trained.append(run.name)
            log(f"{tag}: accuracy {100 * report['accuracy']:.1f}%, macro F1 "
                f"{report['macro_f1']:.3f}, {format_duration(seconds)}")
        finally:
            _free_keras_memory()
        pending = runs[i:]
        if pending:
            left = estimate_seconds(pending, durations)
            finished = sum(len(v) for v in durations.values())
            log(f"study: {len(pending)} run(s) left; "
                + (f"about {format_duration(left)} (estimated from the mean time of "
                   f"{finished} finished run(s))" if left is not None
                   else "no estimate until a run finishes"))
    log(f"study: {n} run(s): {len(result.trained)} trained, {len(result.skipped)} already done, "
        f"{len(result.failed)} failed" + (f" (see {failures_path})" if result.failed else ""))
    if compare:
        try:
            result.comparison = compare_lib.compare([out], out, log=lambda m: log(f"study: {m}"))
        except Esc50Error as err:
            if not result.failed:
                raise
            log(f"study: no comparison ({err})")
        else:
            log(f"study: comparison of {len(result.comparison.rows)} run(s) in "
                f"{out / 'comparison.md'}")
    return result


def _describe(run):
    c = run.config
    t = c.train
    parts = [f"{run.family}", f"features {run.features}"]
    if run.keras:
        parts += [f"{t.optimizer} lr {t.lr:g}", f"{t.epochs} epochs max"]
    parts.append(t.protocol + (f" {t.test_fold}" if t.protocol == "test-fold" else "")
                 + (f" {t.split_ratio:g}" if t.protocol == "split" else ""))
    return ", ".join(parts)


def _free_keras_memory():
    # Many models in one process: drop the previous model's graph and memory.
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
