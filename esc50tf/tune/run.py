"""`tune()`: the search's settings, its output folder, the search and the retraining."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import ClassVar

from esc50tf import cleanup, rundir
from esc50tf.config import Config
from esc50tf.errors import Esc50Error
from esc50tf.io import log, write_json
from esc50tf.lock import holds_lock
from esc50tf.models import registry
from esc50tf.run_config import used_config
from esc50tf.tune.hyperparameters import SearchSpace
from esc50tf.tune.results import BEST_RUN, append_test_result, held_out, write_results
from esc50tf.tune.space import fixed_by_flags, is_int, resolve_models, resolve_space
from esc50tf.tune.trials import TrialRunner, make_tuner

TUNERS = ("random", "bayesian", "hyperband")
OBJECTIVES = ("val_accuracy", "val_loss")


@dataclasses.dataclass(frozen=True)
class TuneConfig(Config):
    """A hyperparameter search; saved (less `out`) as OUT/tune.json.

    Args:
        data: str. TFRecord folder.
        out: str. Output folder.
        models: tuple of str. Candidate models, or ("auto",) for every Keras model.
        tuner: str. "random", "bayesian" or "hyperband".
        max_trials: int or None. Trials in all (None: 10; Hyperband: its own schedule).
        epochs: int. Epochs per trial (Hyperband: the most a trial trains).
        final_epochs: int or None. Epochs of the retraining; None: `epochs`.
        objective: str. "val_accuracy" (maximised) or "val_loss" (minimised).
        test_fold: int or None. Fold held out from the search; None: the first.
        cv: bool. Evaluate the best settings with k-fold CV instead of on `test_fold`.
        split_ratio: float or None. Instead of a test fold, hold out the test
            side of a grouped, stratified ratio split (e.g. 0.8), for data
            whose folds are uneven or a single fold.
        preset: str. Preset every trial starts from.
        space: dict or None. Search-space entries overriding DEFAULT_SPACE.
        overrides: dict or None. Config sections set by flags; a searched
            setting given here is fixed.
        max_failures: int. Stop after this many failed trials in a row (0: never).
        retrain: bool. Retrain and test the best settings into OUT/best_run.
    """

    data: str
    out: str
    models: tuple = ("hybrid",)
    tuner: str = "random"
    max_trials: int | None = None
    epochs: int = 20
    final_epochs: int | None = None
    objective: str = "val_accuracy"
    test_fold: int | None = None
    cv: bool = False
    split_ratio: float | None = None
    preset: str = "default"
    space: dict | None = None
    overrides: dict | None = None
    max_failures: int = 3
    retrain: bool = True

    label: ClassVar[str] = "tune"

    def __post_init__(self):
        self.check(self.tuner in TUNERS, "tuner", self.tuner, ", ".join(TUNERS))
        self.check(self.objective in OBJECTIVES, "objective", self.objective, ", ".join(OBJECTIVES))
        self.check(is_int(self.epochs) and self.epochs >= 1, "epochs", self.epochs,
                   "an integer >= 1")
        self.check(self.max_trials is None or is_int(self.max_trials) and self.max_trials >= 1,
                   "max_trials", self.max_trials, "an integer >= 1")
        self.check(self.final_epochs is None or is_int(self.final_epochs)
                   and self.final_epochs >= 1, "final_epochs", self.final_epochs,
                   "an integer >= 1")
        self.check(is_int(self.max_failures) and self.max_failures >= 0, "max_failures",
                   self.max_failures, "an integer >= 0")
        if self.split_ratio is not None and (self.cv or self.test_fold is not None):
            raise Esc50Error("--split holds out a ratio split's test side; it cannot go with "
                             "--test-fold or --cv")


_NOT_COMPARED = ("out", "max_trials", "final_epochs", "cv", "max_failures", "retrain")


def _same_search(old, new):
    return not rundir.differences(old, new, ignore=_NOT_COMPARED)


def _search_diff(old, new):
    return rundir.first_differences(old, new, ignore=_NOT_COMPARED)


def _prepare_out(out, settings, overwrite):
    """Creates OUT, or checks that the search it holds has the same settings (it resumes)."""
    return rundir.prepare(out, "tune.json", settings, what="search", overwrite=overwrite,
                          same=_same_search, describe=_search_diff, resave=True)


@holds_lock("tune", lambda config, *a, **k: config.out)
def tune(config, overwrite=False, callbacks=(), verbose=1):
    """Runs the search, writes its results and retrains the best settings.

    Args:
        config: TuneConfig.
        overwrite: bool. Delete an existing OUT first; without it, an OUT holding
            a search with the same settings continues it (one with other settings
            is refused), as `esc50tf.train.train` does with a run folder.
        callbacks: extra Keras callbacks for every trial's fit (deep-copied
            by KerasTuner).
        verbose: int. Keras fit verbosity.

    Returns:
        dict: "best_trial", "objective", "best_config" (RunConfig dict),
        "trials" (rows as in trials.csv), "report" (retraining report or None).
    """
    from esc50tf import distribute
    from esc50tf.data import splits
    from esc50tf.data import tfrecords as tfr
    from esc50tf.data.dataset import TFRecordFolder

    c = config
    out = Path(c.out)
    if tfr.is_remote(c.out):
        raise Esc50Error(f"{c.out}: tune writes its folder locally; give a local --out")
    # Settings first: a bad model, space entry or flag fails before anything runs.
    overrides = copy.deepcopy(c.overrides or {})
    models = resolve_models(c.models)
    fixed = fixed_by_flags(overrides)
    space = resolve_space(c.space, fixed=fixed)
    folder = TFRecordFolder(c.data)
    manifest, index = folder.manifest, folder.index
    folds = sorted(int(f) for f in index["fold"].unique())
    test_fold = folds[0] if c.test_fold is None else int(c.test_fold)
    protocol = dict(protocol="test-fold", test_fold=test_fold)
    if c.split_ratio is not None:
        test_fold, protocol = None, dict(protocol="split", split_ratio=c.split_ratio)
    base = copy.deepcopy(overrides)
    base.setdefault("train", {}).update(data=str(c.data), **protocol)
    base.setdefault("features", {})["sample_rate"] = int(manifest["config"]["sample_rate"])
    search_space = SearchSpace(space, models, base, c.preset)
    for model in models:  # each model with every entry at its default makes a valid config
        cfg = search_space.run_config({**search_space.default_values(), "model": model})
        registry.check_data(cfg.model, manifest, c.data)
    t = search_space.base_config.train
    distribute.check_options(t.strategy, tpu=t.tpu, devices=t.devices,
                             mixed_precision=t.mixed_precision, jit_compile=t.jit_compile,
                             deterministic=t.deterministic)
    if t.strategy == "multiworker":
        raise Esc50Error("tune runs on one machine (KerasTuner's distribution_strategy supports "
                         "single-worker strategies only); use --strategy mirrored, tpu or auto")
    if t.val_fraction <= 0:
        raise Esc50Error("tuning scores trials on a validation set carved from the training "
                         "folds; --val-fraction must be > 0")
    (split,) = splits.protocol_splits(t, index)  # train's split function: one split here
    if t.protocol == "test-fold":
        for line in splits.fold_warnings(index):
            log(f"tune: warning: {line}")
    sizes = splits.check_disjoint(split, index)
    data = c.data if tfr.is_remote(c.data) else str(Path(c.data).resolve())
    settings = json.loads(json.dumps({**dataclasses.asdict(c), "data": data, "models": models,
                                      "test_fold": test_fold, "space": space}))
    created = cleanup.make_dirs(out)
    try:
        resumed = _prepare_out(out, settings, overwrite)
    except BaseException:
        cleanup.remove_created(created)
        raise
    try:
        return _search_and_retrain(c, out, resumed, models, fixed, space, folder,
                                   search_space, split, sizes, test_fold, verbose, callbacks)
    except BaseException:
        if not resumed and not _ended_trials(out):
            # Nothing a resume would use: leave no folder that blocks the next command.
            cleanup.discard(out, created)
        raise


def _ended_trials(out):
    """True when OUT holds a trial that ended (completed or failed: trials.md reports it)."""
    for path in Path(out).glob("*/trial_*/trial.json"):
        try:
            if json.loads(path.read_text()).get("status") in ("COMPLETED", "FAILED", "INVALID"):
                return True
        except (OSError, ValueError):
            continue
    return False


def _search_and_retrain(c, out, resumed, models, fixed, space, folder, search_space,
                        split, sizes, test_fold, verbose, callbacks):
    import keras

    from esc50tf import distribute

    t = search_space.base_config.train
    write_json(out / "space.json", space)
    max_trials = c.max_trials or (None if c.tuner == "hyperband" else 10)

    if t.deterministic:
        distribute.enable_determinism()  # left on: the whole search and the retrain are deterministic
    strategy, kind = distribute.make_strategy(t.strategy, tpu=t.tpu, devices=t.devices)
    distribute.check_strategy(strategy, kind, jit_compile=t.jit_compile)
    policy = distribute.resolve_precision(t.mixed_precision, kind)
    # The search sees the training side only: no test Selection exists in it.
    search_split = dataclasses.replace(split, test=None)
    runner = TrialRunner(search_space, c.data, search_split, folder,
                          folder.num_classes, strategy, kind, policy, out, c.epochs,
                          c.objective, max_trials, c.max_failures, verbose)
    log(f"tune: {c.tuner} search over {', '.join(models)}, "
         f"{max_trials or 'Hyperband'} trial(s) of up to {c.epochs} epoch(s), objective "
         f"{c.objective}; training folds {','.join(map(str, split.train.folds))} "
         f"({sizes['train']} clips, validation {sizes['val']} carved by src_file), "
         f"{held_out(test_fold)} ({sizes['test']} clips) held out; {kind} strategy, "
         f"{distribute.num_replicas(strategy)} replica(s), precision {policy}"
         + (" (resuming)" if resumed else ""))
    tuner = None
    try:
        tuner = make_tuner(c.tuner, runner, c.objective, max_trials, t.seed + 1, out,
                            None if kind == "default" else strategy)
        tuner.search(callbacks=list(callbacks))
    finally:
        keras.mixed_precision.set_global_policy("float32")
        if tuner is not None:  # also after Ctrl-C or a stopped search: what is known so far
            rows = write_results(out, tuner.oracle, c.objective, models, space, test_fold, c.cv,
                                 fixed)
    done = [r for r in rows if r["status"] == "completed"]
    if not done:
        raise Esc50Error(f"no trial completed, so there are no best settings; see {out}/trials.md")
    best = done[0]
    train_over = {"out": str(out / BEST_RUN), "epochs": c.final_epochs or c.epochs}
    if c.cv:
        train_over.update(protocol="cv", test_fold=None)
    best_cfg = used_config(search_space.run_config(
        tuner.oracle.get_trial(best["trial"]).hyperparameters.values, **train_over), log=log)
    write_json(out / "best_hyperparameters.json", best_cfg.to_dict())
    log(f"tune: best trial {best['trial']} ({c.objective} {best[c.objective]:.4f}); settings in "
         f"{out}/best_hyperparameters.json")
    report = None
    if c.retrain:
        report = _retrain(best_cfg, out / BEST_RUN, verbose)
        append_test_result(out, report, c.cv, test_fold)
    return {"best_trial": best["trial"], "objective": best[c.objective],
            "best_config": best_cfg.to_dict(), "trials": rows, "report": report}


def _retrain(cfg, run_dir, verbose):
    """esc50tf.train.train of the best settings, replacing a retraining of other settings."""
    from esc50tf import train as train_mod

    saved = run_dir / "config.json"
    wanted = json.loads(json.dumps(cfg.to_dict()))
    same = saved.is_file() and json.loads(saved.read_text()) == wanted
    t = cfg.train
    how = ("with k-fold CV over every fold" if t.protocol == "cv" else
           f"on the training folds, then testing on fold {t.test_fold}"
           if t.protocol == "test-fold" else
           f"on the training side of the {t.split_ratio:g} ratio split, then testing on its test side")
    log(f"tune: retraining the best settings {how}, into {run_dir}")
    return train_mod.train(cfg, overwrite=not same, verbose=verbose)
