"""SklearnTask: the scikit-learn models on fixed features (`esc50tf.models.classic`).

One split: features of every clip of each side (`ModelConfig.classic_features`:
band statistics or the study's image, computed by the front-end layers in
tf.data; or PANNs embeddings computed once per run and cached) -> the
registered estimator's `fit` on the training side -> validation accuracy ->
class scores of the test side -> model.skops (skops, no pickle). No strategy,
precision or epochs.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from esc50tf.errors import Esc50Error
from esc50tf.io import write_npz
from esc50tf.models import classic
from esc50tf.tasks.base import Task


class SklearnTask(Task):
    """Trains a registered scikit-learn model (`ModelSpec.task == "sklearn"`).

    Args:
        spec: esc50tf.models.ModelSpec.

    Example:
    >>> from esc50tf.tasks import get_task
    >>> get_task("svm")
    SklearnTask('svm')
    """

    name = "sklearn"
    MODEL_FILE = classic.MODEL_FILE
    whole_model = False  # the estimator needs the run's features in front of it

    def start_run(self, cfg, strategy, kind, resumed=False):
        return dict(precision="float32 (scikit-learn)", strategy="none", replicas=1)

    def build_model(self, cfg, num_classes=None, num_samples=None):
        """The unfitted estimator of `cfg.model` (its registered builder)."""
        return self.spec.builder(cfg.model, seed=cfg.train.seed)

    def _features_of(self, cfg, folder, run_dir, progress=False):
        """`selection -> (X, y, filenames)`: the features of a side of a split.

        With "embeddings" they come from PANNs embeddings computed once per run
        and cached in `run_dir`/embeddings.npz.
        """
        from esc50tf.data.dataset import DatasetOptions

        if cfg.model.classic_features == "embeddings":
            if run_dir is None:
                raise Esc50Error(f"{self.spec.name} on embeddings: no run folder given to "
                                 "cache them in")
            from esc50tf import embed

            table = embed.embedding_table(cfg.train.data, cfg.model,
                                          Path(run_dir) / "embeddings.npz",
                                          progress=progress)
            return lambda selection: embed.select(table, selection, folder.index)
        featurize = classic.make_featurizer(cfg.features, cfg.model)

        def features_of(selection):
            ds = folder.dataset(selection, DatasetOptions(batch_size=64, with_metadata=True,
                                                          cache=False))
            return classic.extract(ds, featurize, progress=progress,
                                   total=len(selection.rows(folder.index)))

        return features_of

    def build_inputs(self, cfg, split, folder, *, batch_size=None, run_dir=None, **options):
        """`((X, y, filenames) of the training side, same of the validation side or None)`.

        `batch_size` only sets how many clips are featurised at a time (64);
        `progress=True` among the options shows a bar while clips are embedded or featurised.
        """
        features_of = self._features_of(cfg, folder, run_dir, options.get("progress", False))
        return (features_of(split.train),
                None if split.val is None else features_of(split.val))

    def test_inputs(self, cfg, selection, folder, *, batch_size=None, run_dir=None):
        """`(X, y, filenames)` of `selection`, in its fixed order."""
        return self._features_of(cfg, folder, run_dir)(selection)

    def fit(self, model, train_inputs, val_inputs, cfg, **options):
        """`estimator.fit(X, y)` of the training side; history of its one "epoch".

        Returns:
            dict: with validation inputs, "val_accuracy": a list of one value.
        """
        x_train, y_train, _ = train_inputs
        model.fit(x_train, y_train)
        history = {}
        if val_inputs is not None:
            x_val, y_val, _ = val_inputs
            history["val_accuracy"] = [float((model.predict(x_val) == y_val).mean())]
        return history

    def predict(self, model, inputs, *, num_classes=None, verbose=0):
        """`(y_true, y_prob [n, num_classes], filenames)` of `(X, y, filenames)` inputs."""
        x, y, names = inputs
        return y, classic.predict_proba(model, x, num_classes), names

    @classmethod
    def saved_model(cls, split_dir):
        """model.skops, or the model.pkl of an older esc50tf; None without either."""
        return classic.saved_model(split_dir)

    def save(self, model, split_dir):
        path = Path(split_dir) / classic.MODEL_FILE
        classic.save_estimator(model, path)
        return path

    @classmethod
    def load(cls, path, *, resave=False, log=None):
        """The estimator at `path`; with `resave`, a legacy model.pkl is re-saved as
        model.skops beside it."""
        path = Path(path)
        estimator = classic.load_estimator(path)
        if resave and path.name == classic.LEGACY_MODEL_FILE:
            classic.save_estimator(estimator, path.with_name(classic.MODEL_FILE))
            if log is not None:
                log(f"{path.parent.name}: re-saved {path} as {classic.MODEL_FILE}")
        return estimator

    def predictor(self, model, cfg, num_samples, num_classes):
        """The estimator behind the run's own features, as a waveform model."""
        return classic.WaveformClassifier(model, classic.make_featurizer(cfg.features, cfg.model),
                                          num_samples, num_classes)

    def train_split(self, cfg, split, split_dir, folder, class_names, *, strategy=None,
                    kind="none", index=None, sizes=None, callbacks=(), epoch_end=None,
                    verbose=1):
        from esc50tf.report import fold_metrics

        start = time.perf_counter()
        train_inputs, val_inputs = self.build_inputs(cfg, split, folder, run_dir=split_dir.parent,
                                                     progress=verbose > 0)
        x_train, y_train, _ = train_inputs
        estimator = self.build_model(cfg)
        history = self.fit(estimator, train_inputs, val_inputs, cfg)
        seconds = time.perf_counter() - start
        val_acc = history.get("val_accuracy", [None])[0]
        y_test, y_prob, names = self.predict(
            estimator, self.test_inputs(cfg, split.test, folder, run_dir=split_dir.parent),
            num_classes=len(class_names))
        self.save(estimator, split_dir)
        write_npz(split_dir / "predictions.npz", y_true=y_test, y_prob=y_prob,
                  filenames=np.array(names))
        result = fold_metrics(y_test, y_prob, class_names)
        result.update(epochs_run=None, train_seconds=seconds,
                      train_examples_per_s=len(y_train) / seconds if seconds else None,
                      num_train_clips=int(len(y_train)), best_val_accuracy=val_acc,
                      feature_dim=int(x_train.shape[1]))
        return result
