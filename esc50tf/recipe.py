"""How a Keras model is trained on small data: schedules, trust in validation, averaging, balance.

The pieces `train` and `tune` share, each built from `TrainConfig` fields:

- `learning_rate`: a float, or a Keras schedule - linear warmup then cosine
  decay to `min_lr` over the fixed epoch budget (`keras.optimizers.schedules.
  CosineDecay` with `warmup_target`), or warmup then constant. The plateau
  schedule (`ReduceLROnPlateau`, the study's) stays for `--schedule plateau`.
- `judge_validation`: the validation side decides nothing (no early
  stopping, no plateau cuts, no best-epoch restore) when it holds fewer than
  `min_val_per_class` clips per class on average: 29 clips for 50 classes is
  noise, and stopping or cutting the learning rate on it wasted half the
  epoch budget in the runs that led to this module.
- `decision_callbacks`: `ReduceLROnPlateau` and `EarlyStopping`, only when
  the schedule, the patience and the validation side allow them.
- `averaging_callbacks` (a `WeightAveraging` callback) and
  `recompute_batch_norm`: weights averaged at the end of each of the last
  epochs (Izmailov et al., 2018), then
  batch-norm statistics recomputed with one pass over training clips; the
  exponential moving average comes from the Keras optimizer itself
  (`use_ema`, `finalize_variable_values` at the end of `fit`).
- `class_counts` / `class_weights`: training clips per class, and the
  weights `n / (k * count)` for `fit(class_weight=...)` on unbalanced sets.

Multi-crop evaluation lives with the model (`esc50tf.models.build.
predict_crops`), because `evaluate` and `predict` need it without training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from esc50tf.io import write_npz

SCHEDULES = ("plateau", "cosine", "constant", "rampdown")
# `rampdown` (EfficientAT's fine-tuning schedule): the ramp down ends this fraction of the
# budget before the end (5 of its 80 epochs), at min_lr.
RAMPDOWN_TAIL = 1 / 16
FINAL_WEIGHTS = ("best", "last", "ema", "swa")
BALANCE = ("none", "class_weights")


def warmup_epochs(t):
    """The warm-up a TrainConfig gets: `t.warmup_epochs`, at most half of `t.epochs`.

    A short run (a test, a smoke check) keeps half its budget after the warm-up.
    """
    return min(float(t.warmup_epochs), t.epochs / 2)


def learning_rate(t, lr, steps_per_epoch):
    """The optimizer's learning rate: a float or a `LearningRateSchedule`.

    Args:
        t: TrainConfig. Reads schedule, epochs, warmup_epochs (at most half
            the epochs), min_lr.
        lr: float. Peak learning rate (already scaled for replicas).
        steps_per_epoch: int or None. Optimizer steps per epoch; needed by
            cosine and by warmup.
    """
    import keras

    warmup = int(round(warmup_epochs(t) * (steps_per_epoch or 0)))
    if t.schedule == "plateau" or (t.schedule == "constant" and not warmup):
        return float(lr)
    if not steps_per_epoch:
        raise ValueError(f"schedule {t.schedule!r} needs the number of steps per epoch")
    total = t.epochs * steps_per_epoch
    decay_steps = max(1, total - warmup)
    if t.schedule == "rampdown":
        from esc50tf.models.optimizers import WarmupRampdown

        end = int(round(total * (1 - RAMPDOWN_TAIL)))
        return WarmupRampdown(float(lr), warmup, warmup, max(1, end - warmup),
                              min(1.0, t.min_lr / lr))
    # alpha: the floor as a fraction of the peak; 1 keeps the rate constant after warmup.
    alpha = 1.0 if t.schedule == "constant" else min(1.0, t.min_lr / lr)
    if warmup:
        return keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps, alpha=alpha, warmup_target=float(lr), warmup_steps=warmup)
    return keras.optimizers.schedules.CosineDecay(float(lr), decay_steps, alpha=alpha)


def soft_labels(cfg):
    """Whether training labels are one-hot floats (batch mixing or label smoothing)."""
    return cfg.augment.mix != "none" or cfg.train.label_smoothing > 0


def loss(cfg):
    """Cross-entropy for the labels `soft_labels(cfg)` gives, with label smoothing."""
    import keras

    if soft_labels(cfg):
        return keras.losses.CategoricalCrossentropy(label_smoothing=cfg.train.label_smoothing)
    return "sparse_categorical_crossentropy"


def judge_validation(val_labels, num_classes, min_per_class):
    """Whether the validation side may decide anything, and why.

    Args:
        val_labels: int array of the validation clips' labels (may be empty).
        num_classes: int.
        min_per_class: float. Clips per class (on average) below which the
            validation side only reports curves; 0 always trusts it.

    Returns:
        dict with clips, per_class (mean), min_per_class (fewest of any
        class), trusted (bool) and note (a sentence for the log and report).
    """
    labels = np.asarray(val_labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=num_classes) if labels.size else np.zeros(num_classes)
    per_class = float(labels.size / num_classes) if num_classes else 0.0
    info = {"clips": int(labels.size), "per_class": round(per_class, 2),
            "fewest_in_a_class": int(counts.min()) if num_classes else 0,
            "threshold_per_class": float(min_per_class)}
    if labels.size == 0 and not min_per_class:
        info.update(trusted=True, note="no validation side: early stopping and plateau "
                    "decisions follow the training loss (min_val_per_class 0)")
    elif labels.size == 0:
        info.update(trusted=False, note="no validation side (--val-fraction 0): training on "
                    "the whole training side; nothing is decided by validation")
    elif per_class < min_per_class:
        info.update(trusted=False, note=(
            f"validation holds {labels.size} clips, {per_class:.1f} per class, fewer than "
            f"{min_per_class:g}: too few to decide anything, so early stopping, plateau "
            "learning-rate cuts and best-epoch restore are off (curves only)"))
    else:
        info.update(trusted=True, note=(
            f"validation holds {labels.size} clips, {per_class:.1f} per class"
            + (f" (>= {min_per_class:g})" if min_per_class else "")
            + ": early stopping and plateau decisions follow it when configured"))
    return info


def decision_callbacks(t, monitor, trusted):
    """`ReduceLROnPlateau` / `EarlyStopping` as configured and allowed.

    The plateau schedule needs a float learning rate (schedule "plateau");
    early stopping needs a patience above 0. Neither runs when `trusted` is
    False. Early stopping restores the best weights only when the reported
    model is the best-by-validation one (final_weights "best").
    """
    import keras

    if not trusted:
        return []
    out = []
    if t.schedule == "plateau":
        out.append(keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=t.lr_factor,
                                                     patience=t.lr_patience, min_lr=t.min_lr,
                                                     verbose=0))
    if t.early_stopping_patience > 0:
        out.append(keras.callbacks.EarlyStopping(
            monitor=monitor, patience=t.early_stopping_patience,
            restore_best_weights=t.final_weights == "best"))
    return out


def reported_weights(t, trusted, averaged_epochs=None):
    """What the evaluated and saved model is, in words, for the config's report."""
    if t.final_weights == "best":
        if trusted and t.early_stopping_patience > 0:
            return "best (lowest validation loss, restored by early stopping)"
        return "last (best-by-validation needs a trusted validation side and early stopping)"
    if t.final_weights == "ema":
        return (f"ema (exponential moving average of the weights, momentum {t.ema_momentum:g}; "
                "batch-norm statistics recomputed)")
    if t.final_weights == "swa":
        if not averaged_epochs:
            return "last (training stopped before the weight-averaging window)"
        return (f"swa (weights averaged over the last {averaged_epochs} epoch(s); batch-norm "
                "statistics recomputed)")
    return "last (weights after the last epoch)"


def swa_start_epoch(t):
    """First epoch (0-based) whose end-of-epoch weights SWA averages."""
    return t.epochs - max(1, int(round(t.swa_fraction * t.epochs)))


def _weight_averaging():
    import keras

    class WeightAveraging(keras.callbacks.Callback):
        """Leaves averaged weights in the model when `fit` ends, with batch norm re-measured.

        With `start_epoch` set (stochastic weight averaging, Izmailov et al.,
        2018, "Averaging weights leads to wider optima"), the trainable
        weights at the end of every epoch >= `start_epoch` are summed and
        their mean replaces the weights when training ends. The running sum
        is kept in `state_path` after each epoch, so a run interrupted and
        resumed by `BackupAndRestore` continues the same average. With
        `start_epoch` None the weights are already averaged (the optimizer's
        `use_ema`, swapped in by Keras before `on_train_end`). Either way the
        batch-norm statistics are then recomputed (`recompute_batch_norm`).

        Args:
            start_epoch: int or None. 0-based first averaged epoch; None: no
                averaging here.
            state_path: str or None. Where the running sum is kept.
            batch_norm_data: callable returning `(inputs, labels)` batches of
                training clips, or None to keep the statistics.
        """

        def __init__(self, start_epoch=None, state_path=None, batch_norm_data=None):
            super().__init__()
            self.start_epoch = start_epoch
            self.state_path = Path(state_path) if state_path else None
            self.batch_norm_data = batch_norm_data
            self.total = None
            self.count = 0
            self.averaged_epochs = None if start_epoch is None else 0

        def on_train_begin(self, logs=None):
            self.total, self.count = None, 0
            if self.start_epoch is not None and self.state_path and self.state_path.is_file():
                with np.load(self.state_path) as state:
                    self.count = int(state["count"])
                    self.total = [state[f"w{i}"] for i in range(len(state.files) - 1)]

        def on_epoch_end(self, epoch, logs=None):
            if self.start_epoch is None or epoch < self.start_epoch:
                return
            weights = [np.asarray(v.numpy(), dtype=np.float64)
                       for v in self.model.trainable_variables]
            self.total = weights if self.total is None else [a + w for a, w in
                                                              zip(self.total, weights)]
            self.count += 1
            if self.state_path:
                write_npz(self.state_path, compressed=False, count=self.count,
                          **{f"w{i}": w for i, w in enumerate(self.total)})

        def on_train_end(self, logs=None):
            if self.start_epoch is not None:
                self.averaged_epochs = self.count
                for var, total in zip(self.model.trainable_variables, self.total or []):
                    var.assign((total / self.count).astype(var.dtype))
                if self.state_path and self.state_path.is_file():
                    self.state_path.unlink()
                if not self.count:
                    return  # stopped before the window: the last weights stay
            if self.batch_norm_data is not None:
                recompute_batch_norm(self.model, self.batch_norm_data())

    return WeightAveraging


def averaging_callbacks(t, state_path, batch_norm_data):
    """Callbacks that leave the configured averaged weights in the model when `fit` ends.

    "swa": a `WeightAveraging` callback averaging from `swa_start_epoch(t)`;
    "ema": the optimizer already swapped in its moving average. Both then
    recompute batch-norm statistics on `batch_norm_data()` (a function
    returning batches of training clips, called only then). Other choices:
    no callbacks. The first callback has `averaged_epochs` (SWA) or None.
    """
    if t.final_weights not in ("swa", "ema"):
        return []
    start = swa_start_epoch(t) if t.final_weights == "swa" else None
    return [_weight_averaging()(start, state_path, batch_norm_data)]


def recompute_batch_norm(model, dataset):
    """Sets every trainable BatchNormalization layer's statistics to their mean over `dataset`.

    Averaged weights never produced the running statistics that batch norm
    kept while training, so they are measured again: the model runs forward in
    training mode over the batches with each layer's momentum set so that its
    moving mean and variance become the plain average over batches. Frozen
    batch norms (trainable False) are left alone. Returns the number of
    layers updated.

    Args:
        model: keras.Model.
        dataset: iterable of `(inputs, labels)` batches of training clips.
    """
    import keras

    layers = [layer for layer in model._flatten_layers(include_self=False)
              if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    try:
        for k, (x, _y) in enumerate(dataset, 1):
            for layer in layers:
                layer.momentum = (k - 1) / k  # new = mean of the k batch statistics so far
            model(x, training=True)
    finally:
        for layer, m in zip(layers, momenta):
            layer.momentum = m
    return len(layers)


def class_counts(labels, num_classes):
    """Clips per class, `[num_classes]` ints."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(int)


def class_weights(counts):
    """`{class: n / (k * count)}` for the classes present (balanced weighting)."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    k = int(present.sum())
    n = counts.sum()
    return {int(c): float(n / (k * counts[c])) for c in np.flatnonzero(present)}

