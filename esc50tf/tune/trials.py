"""Running trials: a KerasTuner tuner whose trials build and fit esc50tf models.

KerasTuner calls `TrialRunner.build` and `fit` through a HyperModel, and its
hooks through `_SearchMixin`; every trial is an esc50tf RunConfig trained by
the model's task on the training side of the split only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from pathlib import Path

from esc50tf.errors import Esc50Error
from esc50tf.io import log, write_json
from esc50tf.models import registry
from esc50tf.tune.hyperparameters import SearchSpace
from esc50tf.tune.results import PROJECT, TRIAL_META, fmt, last_line


@dataclasses.dataclass(eq=False)
class TrialRunner:
    """Builds and fits one trial's model, and keeps the per-trial records and progress lines.

    KerasTuner calls `build` and `fit` through a HyperModel and `trial_begun`
    / `trial_ended` through the tuner's hooks. It only ever holds the split's
    training and validation selections.
    """

    space: SearchSpace
    data: str
    split: object  # train and val only: the test side is None
    folder: object  # the opened TFRecordFolder of `data`
    num_classes: int
    strategy: object
    kind: str
    policy: str
    out: Path
    epochs: int
    objective: str
    max_trials: int | None
    max_failures: int
    verbose: int
    trial_id: str | None = dataclasses.field(default=None, init=False)
    config: object = dataclasses.field(default=None, init=False)
    meta: dict = dataclasses.field(default_factory=dict, init=False)
    started: float | None = dataclasses.field(default=None, init=False)

    def __post_init__(self):
        self.out = Path(self.out)

    @property
    def manifest(self):
        return self.folder.manifest

    # HyperModel.build
    def build(self, hp):
        import keras

        from esc50tf import distribute, tasks

        trial_dir = self.out / PROJECT / f"trial_{self.trial_id}"
        cfg = self.space.run_config(self.space.declare(hp), out=str(trial_dir), epochs=self.epochs)
        registry.check_data(cfg.model, self.manifest, self.data)  # e.g. a trunk's own rate
        # KerasTuner clears the Keras session before every build, and with it the dtype policy.
        keras.mixed_precision.set_global_policy(self.policy)
        cfg = self._fit_memory(cfg)
        self.config = cfg
        self.meta.update(config=cfg.to_dict())
        task = tasks.get_task(cfg.model.name)
        steps = len(self.split.train.rows(self.folder.index)) // task.global_batch(cfg, self.strategy)
        # As a run builds it: normalisation adapted on the training side only, then compiled.
        model, _ = task.build_compiled(
            cfg, self.split.train, self.folder, self.num_classes,
            distribute.num_replicas(self.strategy), steps_per_epoch=steps)
        return model

    def _fit_memory(self, cfg):
        """`cfg`, its batch halved until the estimated peak fits (`models.memory`), or a
        skipped trial (FailedTrialError); the note goes into the trial's record and table."""
        import keras_tuner as kt

        from esc50tf.models import memory

        cfg, note = memory.shrink_to_fit(
            cfg, self.folder.num_samples, self.num_classes,
            len(self.split.train.rows(self.folder.index)), limit=memory.host_limit(self.kind))
        if note:
            self.meta["skipped" if cfg is None else "memory"] = note
            log(f"[trial {self.trial_id}] {note}")
        if cfg is None:
            raise kt.errors.FailedTrialError(note)
        return cfg

    # HyperModel.fit
    def fit(self, hp, model, callbacks=(), epochs=None, initial_epoch=0, **kwargs):
        from esc50tf import recipe, tasks

        cfg = self.config  # set by build() for this trial
        task = tasks.get_task(cfg.model.name)
        # TPUs need static shapes, so whole validation batches there.
        train_ds, val_ds = task.build_inputs(cfg, self.split, self.folder,
                                             batch_size=task.global_batch(cfg, self.strategy),
                                             one_hot=recipe.soft_labels(cfg),
                                             drop_val_remainder=self.kind == "tpu")
        history = task.fit(model, train_ds, val_ds, cfg, epochs=epochs,
                           initial_epoch=initial_epoch, verbose=self.verbose,
                           callbacks=task.search_callbacks(cfg, callbacks))
        self.meta["epochs_run"] = len(history.get("loss", []))
        return best_epoch(history, self.objective)

    # Tuner hooks
    def trial_begun(self, trial):
        self.trial_id = trial.trial_id
        self.meta = {}
        self.started = time.perf_counter()

    def trial_ended(self, tuner, trial):
        wall = time.perf_counter() - (self.started or time.perf_counter())
        trial = tuner.oracle.get_trial(trial.trial_id)
        failed = trial.status != "COMPLETED"
        meta = dict(self.meta, status=trial.status, wall_seconds=wall,
                    error=last_line(trial.message) if failed else None,
                    traceback=trial.message if failed else None)
        write_json(Path(tuner.get_trial_dir(trial.trial_id)) / TRIAL_META, meta)
        oracle = tuner.oracle
        done = [oracle.trials[i] for i in oracle.end_order]
        total = f"/{self.max_trials}" if self.max_trials else ""
        name = self.objective
        if trial.status == "COMPLETED":
            best = oracle.get_best_trials(1)[0]
            what = (f"{name} {trial.score:.4f} (best {best.score:.4f}, trial {best.trial_id}), "
                    f"{meta.get('epochs_run', '?')} epoch(s)")
        else:
            what = f"FAILED: {meta['error']}"
        values = ", ".join(f"{k}={fmt(v)}" for k, v in trial.hyperparameters.values.items()
                           if not k.startswith("tuner/"))
        log(f"[trial {trial.trial_id}, {len(done)}{total}] {what}, {wall:.1f} s; {values}")
        failures = 0
        for ended in reversed(done):
            if ended.status != "FAILED":
                break
            failures += 1
        if self.max_failures and failures >= self.max_failures:
            raise Esc50Error(f"{failures} trials in a row failed; the search stopped. Last error: "
                             f"{meta['error']} (see {self.out}/trials.md; fix the cause and "
                             "run the same command again to continue)")


class _SearchMixin:
    """Hooks mixed in before KerasTuner's RandomSearch / BayesianOptimization / Hyperband."""

    runner: TrialRunner = None

    def _populate_initial_space(self):
        # KerasTuner builds the model repeatedly here to find conditional
        # hyperparameters; our space declares every one of them up front.
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def on_trial_begin(self, trial):
        self.runner.trial_begun(trial)
        super().on_trial_begin(trial)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)  # the oracle records the result and saves its state
        self.runner.trial_ended(self, trial)


def make_tuner(kind, runner, objective, max_trials, seed, out, strategy):
    import keras_tuner as kt

    class Esc50HyperModel(kt.HyperModel):
        def declare_hyperparameters(self, hp):
            runner.space.declare(hp)

        def build(self, hp):
            return runner.build(hp)

        def fit(self, hp, model, *args, **kwargs):
            return runner.fit(hp, model, **kwargs)

    base = {"random": kt.RandomSearch, "bayesian": kt.BayesianOptimization,
            "hyperband": kt.Hyperband}[kind]
    cls = type(f"Esc50{base.__name__}", (_SearchMixin, base), {"runner": runner})
    direction = "max" if objective == "val_accuracy" else "min"
    kwargs = dict(hypermodel=Esc50HyperModel(name="esc50tf"),
                  objective=kt.Objective(objective, direction), seed=seed,
                  # Our hooks count consecutive failures after the state is saved.
                  max_consecutive_failed_trials=None,
                  directory=str(out), project_name=PROJECT, overwrite=False,
                  distribution_strategy=strategy)
    if kind == "hyperband":
        kwargs["max_epochs"] = runner.epochs
    else:
        kwargs["max_trials"] = max_trials
    with contextlib.redirect_stdout(sys.stderr):  # "Reloading Tuner from ..."
        tuner = cls(**kwargs)
    if kind == "hyperband" and max_trials:
        tuner.oracle.max_trials = max_trials  # caps Hyperband's own schedule
    tuner.oracle.verbose = 0  # one progress line per trial is ours
    return tuner


def best_epoch(history, objective):
    """The metrics of the epoch best by `objective` (what KerasTuner records of a History).

    Args:
        history: dict metric -> one value per epoch (`Task.fit`).
        objective: str. "val_accuracy" (maximised) or "val_loss" (minimised).
    """
    import numpy as np

    values = np.asarray(history.get(objective, []), dtype=float)
    if not len(values) or np.isnan(values).all():
        epoch = -1
    elif objective == "val_accuracy":
        epoch = int(np.nanargmax(values))
    else:
        epoch = int(np.nanargmin(values))
    return {k: float(v[epoch]) for k, v in history.items() if len(v)}
