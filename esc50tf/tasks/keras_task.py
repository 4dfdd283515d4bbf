"""KerasTask: the Keras models (everything but the scikit-learn ones).

One split, as `train` runs it:

    training clips (no augmentation) -> adapt the per-frequency normalisation
    build_model (in the strategy's scope, under the run's precision) -> compile
        (the configured optimizer, its learning-rate schedule, EMA; esc50tf.recipe's loss)
    build_inputs: training pipeline (mixing, host features) + validation pipeline
    fit with `callbacks`: BackupAndRestore, the recipe's decisions and weight
        averaging, best checkpoint, CSV history, TensorBoard
    predict the test side once (averaged over test crops) -> model.keras, SavedModel

`tune` builds, compiles and feeds every trial through the same methods
(`build_compiled`, `build_inputs`, `search_callbacks`), so a trial trains as a
run does.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from esc50tf import progress, recipe
from esc50tf.errors import Esc50Error
from esc50tf.io import atomic_path, log, write_npz
from esc50tf.tasks.base import Task, history_length
from esc50tf.tasks.callbacks import (atomic_backup, atomic_checkpoint, check_space,
                                     interrupt_check, run_guard, service_watchdog)


def make_optimizer(t, steps_per_epoch=None):
    """The configured optimizer: its learning-rate schedule, gradient clipping, EMA if reported."""
    import keras

    lr = recipe.learning_rate(t, t.lr, steps_per_epoch)
    extra = dict(use_ema=True, ema_momentum=t.ema_momentum) if t.final_weights == "ema" else {}
    if t.clipnorm:
        extra["clipnorm"] = float(t.clipnorm)
    if t.trunk_lr_scale != 1.0:
        from esc50tf.models.optimizers import TrunkScaledAdamW

        return TrunkScaledAdamW(t.trunk_lr_scale, learning_rate=lr,
                                weight_decay=t.weight_decay if t.optimizer == "adamw" else 0.0,
                                **extra)
    if t.optimizer == "adam":
        return keras.optimizers.Adam(lr, **extra)
    if t.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=t.weight_decay, **extra)
    if t.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=t.momentum,
                                    weight_decay=t.weight_decay or None, **extra)
    return keras.optimizers.Adagrad(lr, **extra)


def classifier_part(model):
    """For features on the host: the model from the front end's output onwards."""
    import keras

    frontend = model.get_layer("frontend")
    return keras.Model(frontend.output, model.output, name=f"{model.name}_on_features")


def export_model(model, path):
    """Writes a TF SavedModel: waveform [batch, samples] in, probabilities out."""
    import contextlib
    import io
    import shutil
    from pathlib import Path

    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    with contextlib.redirect_stdout(io.StringIO()):  # export prints a signature summary
        model.export(str(path), format="tf_saved_model")


class KerasTask(Task):
    """Trains a registered Keras model (`ModelSpec.task == "keras"`).

    Args:
        spec: esc50tf.models.ModelSpec.

    Example:
    >>> from esc50tf.tasks import get_task
    >>> task = get_task("cnn_small")
    >>> # model, trainable = task.build_compiled(cfg, split.train, folder, 50)
    >>> # train_ds, val_ds = task.build_inputs(cfg, split, folder)
    """

    name = "keras"

    def __init__(self, spec):
        super().__init__(spec)
        self._policy_set = False

    # --- run level ---------------------------------------------------------------------

    def check_options(self, cfg):
        from esc50tf import distribute

        t = cfg.train
        distribute.check_options(t.strategy, tpu=t.tpu, devices=t.devices,
                                 mixed_precision=t.mixed_precision, jit_compile=t.jit_compile,
                                 deterministic=t.deterministic, data_service=t.data_service)

    def make_strategy(self, cfg):
        from esc50tf import distribute

        t = cfg.train
        # Before anything else runs TensorFlow ops (MultiWorkerMirroredStrategy needs that).
        strategy, kind = distribute.make_strategy(t.strategy, tpu=t.tpu, devices=t.devices)
        distribute.check_strategy(strategy, kind, jit_compile=t.jit_compile)
        return strategy, kind

    def check_splits(self, cfg, chosen, index, strategy, advice):
        from esc50tf import distribute
        from esc50tf.data import splits

        batch = self.global_batch(cfg, distribute.num_replicas(strategy))
        for split in chosen:
            n = len(split.train.rows(index))
            if n < batch:
                fix = splits.SPLIT_ADVICE if advice else "lower --batch-size"
                raise Esc50Error(f"{split.name}: {n} training clips, fewer than one global batch "
                                 f"of {batch}; {fix}")

    def check_memory(self, cfg, chosen, folder, kind):
        """The estimated peak (`models.memory`) against the memory this process may have.

        On the host only: with an accelerator the activations live in its own
        memory, which this estimate does not check.
        """
        from esc50tf.models import memory

        index = folder.index
        clips = max(len(split.train.rows(index)) for split in chosen)
        return memory.check_fits(cfg, folder.num_samples, folder.num_classes, clips,
                                 what=f"training {cfg.model.name} at batch "
                                      f"{cfg.train.batch_size}", limit=memory.host_limit(kind))

    def start_run(self, cfg, strategy, kind, resumed=False):
        import keras

        from esc50tf import distribute

        t = cfg.train
        policy = distribute.resolve_precision(t.mixed_precision, kind)
        keras.mixed_precision.set_global_policy(policy)
        self._policy_set = True
        replicas = distribute.num_replicas(strategy)
        lr = distribute.scaled_learning_rate(t.lr, replicas, t.scale_lr)
        facts = dict(precision=policy, strategy=kind, replicas=replicas,
                     global_batch_size=self.global_batch(cfg, replicas),
                     learning_rate=lr)
        log(f"{self.spec.name}: {kind} strategy, {replicas} replica(s), precision {policy}, "
             f"global batch {facts['global_batch_size']} ({t.batch_size} per replica), "
             f"learning rate {lr:g}" + (" (scaled by replicas)" if t.scale_lr else "")
             + (f", input from the tf.data service at {t.data_service}" if t.data_service else "")
             + (" (resuming)" if resumed else ""))
        return facts

    def end_run(self):
        if self._policy_set:
            import keras

            keras.mixed_precision.set_global_policy("float32")
            self._policy_set = False

    # --- split level -------------------------------------------------------------------

    def build_model(self, cfg, num_classes, num_samples):
        """The Keras model of `cfg` around its front end (`models.build.build_model`)."""
        from esc50tf.models import build as model_build

        return model_build.build_model(cfg.model, cfg.features, num_classes, num_samples,
                                       cfg.augment, seed=cfg.train.seed)

    def stats_inputs(self, cfg, selection, folder, batch_size=64, host_featurize=None):
        """Clips of `selection` without augmentation, in order (statistics, batch norm)."""
        from esc50tf.data.dataset import DatasetOptions

        return folder.dataset(selection, DatasetOptions(batch_size=batch_size),
                              batch_fns=[lambda x, y: (host_featurize(x), y)]
                              if host_featurize is not None else ())

    def test_inputs(self, cfg, selection, folder, *, batch_size=None, run_dir=None):
        """`(waveform, label, metadata)` batches of the test side, in their fixed order."""
        from esc50tf.data.dataset import DatasetOptions

        return folder.dataset(selection, DatasetOptions(
            batch_size=batch_size or self.global_batch(cfg), with_metadata=True))

    def compile(self, model, cfg, replicas=1, steps_per_epoch=None):
        """Compiles `model` with the run's optimizer (lr scaled for `replicas`), loss, accuracy."""
        from esc50tf import distribute

        t = cfg.train
        lr = distribute.scaled_learning_rate(t.lr, replicas, t.scale_lr)
        model.compile(make_optimizer(dataclasses.replace(t, lr=lr),
                                     steps_per_epoch=steps_per_epoch),
                      loss=recipe.loss(cfg), metrics=["accuracy"], jit_compile=t.jit_compile)
        return model

    def build_compiled(self, cfg, train_selection, folder, num_classes, replicas=1,
                       steps_per_epoch=None, host_featurize=None):
        """Builds the model, adapts its normalisation on the training clips, compiles it.

        Call it in the strategy's scope. With features on the host
        (`host_featurize`), the part after the front end is what trains.

        Returns:
            (model, trainable): the whole model (waveform in) and the model `fit` runs.
        """
        from esc50tf.models.build import adapt_normalization

        model = self.build_model(cfg, num_classes, folder.num_samples)
        # Per-frequency statistics from the training clips only (no augmentation).
        adapt_normalization(model, self.stats_inputs(cfg, train_selection, folder))
        trainable = classifier_part(model) if host_featurize is not None else model
        self.compile(trainable, cfg, replicas, steps_per_epoch)
        return model, trainable

    def build_inputs(self, cfg, split, folder, *, batch_size=None, run_dir=None,
                     host_featurize=None, one_hot=False, wave_augmenter=None, num_workers=1,
                     repeat=False, data_service=None, data_service_job=None,
                     drop_val_remainder=False):
        """Training and validation pipelines; augmentation only on the training side.

        With features on the host, `host_featurize` runs in tf.data on both sides and
        the model's own waveform augmenter (training=True) runs before it on the
        training side only. `batch_size` is the global batch (None: one replica's).
        num_workers, repeat, data_service, data_service_job: see `DatasetOptions` (the
        service gets the training pipeline only). drop_val_remainder: static
        validation batches too (TPUs).
        """
        from esc50tf.augment import BatchMixer
        from esc50tf.data.dataset import DatasetOptions

        t = cfg.train
        batch = batch_size or self.global_batch(cfg)
        eval_fns, train_fns = [], []
        if host_featurize is not None:
            eval_fns.append(lambda x, y: (host_featurize(x), y))
            if wave_augmenter is not None:
                train_fns.append(lambda x, y: (host_featurize(wave_augmenter(x, training=True)), y))
            else:
                train_fns.append(eval_fns[0])
        if cfg.augment.mix != "none":
            train_fns.append(BatchMixer(cfg.augment.mix, alpha=cfg.augment.mixup_alpha, seed=t.seed,
                                        num_classes=folder.num_classes,
                                        sample_rate=folder.sample_rate))
        train_ds = folder.dataset(split.train, DatasetOptions(
            training=True, batch_size=batch, seed=t.seed,
            one_hot=one_hot and cfg.augment.mix == "none", num_workers=num_workers, repeat=repeat,
            data_service=data_service, data_service_job=data_service_job), batch_fns=train_fns)
        val_ds = None
        if split.val is not None:
            val_ds = folder.dataset(split.val, DatasetOptions(
                batch_size=batch, one_hot=one_hot, num_workers=num_workers,
                drop_remainder=drop_val_remainder), batch_fns=eval_fns)
        return train_ds, val_ds

    def callbacks(self, cfg, split_dir, monitor_loss, monitor_acc, trusted, averaging=(),
                  extra=()):
        """A run's callbacks: resume, the recipe's decisions and averaging, records."""
        import keras

        return [
            atomic_backup(split_dir / "backup"),
            *recipe.decision_callbacks(cfg.train, monitor_loss, trusted),
            *averaging,
            atomic_checkpoint(split_dir / "best.keras", monitor=monitor_acc,
                              save_best_only=True),
            keras.callbacks.CSVLogger(str(split_dir / "history.csv"), append=True),
            keras.callbacks.TensorBoard(str(split_dir / "logs"), write_graph=False,
                                        profile_batch=0),
            *extra,
        ]

    def search_callbacks(self, cfg, extra=()):
        """A tuning trial's callbacks: the recipe's decisions, always on validation loss.

        Tuning is choosing by validation: its decisions always follow it; no
        weights are restored, and a trial whose loss turns NaN stops.
        """
        import keras

        return [
            keras.callbacks.TerminateOnNaN(),
            *recipe.decision_callbacks(dataclasses.replace(cfg.train, final_weights="last"),
                                       "val_loss", trusted=True),
            *extra,
        ]

    def fit(self, model, train_inputs, val_inputs, cfg, *, callbacks=(), epochs=None,
            initial_epoch=0, steps_per_epoch=None, class_weight=None, verbose=1):
        """`model.fit` over the pipelines (which shuffle themselves); returns History.history.

        After every batch a Ctrl-C that TensorFlow swallowed is raised
        (`cleanup.raise_if_interrupted`), so an interrupted fit always stops.
        """
        return model.fit(train_inputs, validation_data=val_inputs,
                         epochs=epochs or cfg.train.epochs, initial_epoch=initial_epoch,
                         callbacks=[*callbacks, interrupt_check()],
                         steps_per_epoch=steps_per_epoch,
                         verbose=progress.keras_verbose(verbose), class_weight=class_weight,
                         shuffle=False).history  # tf.data already shuffles

    def predict(self, model, inputs, *, num_classes=None, verbose=0):
        """Multi-crop batched prediction (`models.build.predict_dataset`)."""
        from esc50tf.models.build import predict_dataset

        return predict_dataset(model, inputs, verbose=verbose)

    MODEL_FILE = "model.keras"

    def save(self, model, split_dir):
        """Writes `model` (with its optimizer) to `split_dir`/model.keras, atomically, after
        checking the disk has room for it."""
        path = Path(split_dir) / self.MODEL_FILE
        check_space(path, model, with_optimizer=True)
        with atomic_path(path) as tmp:
            model.save(tmp)
        return path

    @classmethod
    def load(cls, path, *, resave=False, log=None):
        import keras

        from esc50tf.models import register_custom_objects

        from esc50tf.models.keras_file import check_keras_file

        register_custom_objects()
        check_keras_file(path)  # declared sizes, before Keras allocates them
        try:
            return keras.models.load_model(path)
        except Exception as err:  # noqa: BLE001 - keras raises many types
            raise Esc50Error(f"{path}: cannot load the model ({err})") from None

    def export(self, model, path):
        export_model(model, path)

    def train_split(self, cfg, split, split_dir, folder, class_names, *, strategy=None,
                    kind="default", index=None, sizes=None, callbacks=(), epoch_end=None,
                    verbose=1):
        import hashlib
        import warnings

        import keras

        from esc50tf import distribute
        from esc50tf import frontend as feat
        from esc50tf.models.build import check_finite_outputs, test_crops
        from esc50tf.report import fold_metrics

        t = cfg.train
        if strategy is None:  # a library caller outside any strategy: the default one
            import tensorflow as tf

            strategy = tf.distribute.get_strategy()
        if sizes is None:
            from esc50tf.data.splits import check_disjoint

            sizes = check_disjoint(split, folder.index)
        one_hot = recipe.soft_labels(cfg)
        replicas = distribute.num_replicas(strategy)
        global_batch = self.global_batch(cfg, replicas)
        if sizes["train"] < global_batch:
            raise Esc50Error(f"{split.name}: {sizes['train']} training clips, fewer than one "
                             f"global batch of {global_batch}; lower --batch-size")
        if kind == "tpu" and 0 < sizes.get("val", 0) < global_batch:
            raise Esc50Error(f"{split.name}: {sizes['val']} validation clips, fewer than one "
                             f"global batch of {global_batch} (TPUs need full batches); lower "
                             "--batch-size or raise --val-fraction")
        # Several input pipelines (multi-worker, TPU pods): the workers' shares of the
        # shards differ in size, so the training stream repeats and an epoch is a fixed
        # number of global steps; no worker runs dry while the others wait in an all-reduce.
        workers = distribute.num_input_pipelines(strategy, kind)
        repeat = workers > 1
        steps_per_epoch = sizes["train"] // global_batch if repeat else None
        job = None
        if t.data_service and repeat:  # the trainers share one service job
            job = "esc50tf-" + hashlib.sha1(f"{t.out}/{split.name}".encode()).hexdigest()[:16]
        host_featurize = (feat.make_host_featurizer(cfg.features) if t.features_on == "host"
                          else None)
        if index is None:
            index = folder.index
        train_counts = recipe.class_counts(split.train.rows(index)["label"], len(class_names))
        validation = recipe.judge_validation(
            [] if split.val is None else split.val.rows(index)["label"], len(class_names),
            t.min_val_per_class)
        log(f"{split.name}: {validation['note']}")
        with strategy.scope():
            model, trainable = self.build_compiled(
                cfg, split.train, folder, len(class_names), replicas,
                steps_per_epoch=sizes["train"] // global_batch, host_featurize=host_featurize)
        wave_augmenter = None
        if host_featurize is not None:
            try:
                wave_augmenter = model.get_layer("waveform_augmenter")
            except ValueError:
                pass
        train_ds, val_ds = self.build_inputs(cfg, split, folder, batch_size=global_batch,
                                             host_featurize=host_featurize, one_hot=one_hot,
                                             wave_augmenter=wave_augmenter, num_workers=workers,
                                             repeat=repeat, data_service=t.data_service,
                                             data_service_job=job,
                                             drop_val_remainder=kind == "tpu")
        distribute.prepare_fit(trainable, strategy, kind, train_ds.element_spec)
        if workers > 1:
            shard_policy = train_ds.options().experimental_distribute.auto_shard_policy
            log(f"{split.name}: training input auto-sharded by {shard_policy.name} over "
                 f"{workers} workers, {sizes['train'] // global_batch} steps of {global_batch} "
                 "per epoch")
        monitor_acc = "val_accuracy" if val_ds is not None else "accuracy"
        monitor_loss = "val_loss" if val_ds is not None else "loss"
        # Training clips without augmentation, for batch-norm statistics of averaged weights.
        averaging = recipe.averaging_callbacks(
            t, split_dir / "swa_state.npz",
            lambda: self.stats_inputs(cfg, split.train, folder, global_batch, host_featurize))
        extra = [run_guard(t, folder), *callbacks]
        if t.data_service:
            extra.append(service_watchdog(t.data_service, t.data_service_timeout))
        if epoch_end is not None:
            extra.append(keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs=None: epoch_end()))
        cbs = self.callbacks(cfg, split_dir, monitor_loss, monitor_acc, validation["trusted"],
                             averaging, extra)
        fit_start = time.perf_counter()
        with warnings.catch_warnings():
            if repeat:
                # A worker's share of the validation clips is not known in advance, so Keras
                # learns the number of validation steps by running out of data, and says so.
                warnings.filterwarnings("ignore", message="Your input ran out of data")
            history = self.fit(trainable, train_ds, val_ds, cfg, callbacks=cbs,
                               steps_per_epoch=steps_per_epoch, verbose=verbose,
                               class_weight=(recipe.class_weights(train_counts)
                                             if t.balance == "class_weights" else None))
        fit_seconds = time.perf_counter() - fit_start
        epochs_this_session = len(history.get("loss", []))
        history_rows = history_length(split_dir / "history.csv")
        folder.check_unchanged()
        test_ds = self.test_inputs(cfg, split.test, folder, batch_size=global_batch)
        log(f"{split.name}: predicting {sizes['test']} test clips")
        y_true, y_prob, names = self.predict(model, test_ds, verbose=verbose)
        check_finite_outputs(y_prob, f"{split.name}: the trained model")
        self.save(model, split_dir)
        if t.export:
            self.export(model, split_dir / "saved_model")
        write_npz(split_dir / "predictions.npz", y_true=y_true, y_prob=y_prob,
                  filenames=np.array(names))
        result = fold_metrics(y_true, y_prob, class_names)
        steps = epochs_this_session * (sizes["train"] // global_batch)
        result.update(
            epochs_run=history_rows or epochs_this_session,
            train_seconds=fit_seconds,
            train_examples_per_s=((steps * global_batch / fit_seconds)
                                  if fit_seconds > 0 and steps else None),
            num_train_clips=sizes["train"],
            num_val_clips=sizes.get("val", 0),
            best_val_accuracy=float(max(history.get(monitor_acc, [np.nan]))),
            validation=validation,
            reported_model=recipe.reported_weights(
                t, validation["trusted"], averaging[0].averaged_epochs if averaging else None),
            test_crops=test_crops(model),
            train_class_counts=dict(zip(class_names, train_counts.tolist())),
        )
        return result
