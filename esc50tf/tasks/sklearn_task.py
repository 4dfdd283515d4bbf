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

from esc50tf.io import write_npz
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

    def start_run(self, cfg, strategy, kind, resumed=False):
        return dict(precision="float32 (scikit-learn)", strategy="none", replicas=1)

    def build_model(self, cfg, num_classes=None, num_samples=None):
        """The unfitted estimator of `cfg.model` (its registered builder)."""
        return self.spec.builder(cfg.model, seed=cfg.train.seed)

    def build_inputs(self, cfg, split, folder, run_dir=None, progress=False):
        """`selection -> (X, y, filenames)`: the features of a side of `split`.

        Args:
            run_dir: Path or None. The run folder, where "embeddings" are cached
                (None: the split folder's parent is not known; required then).
            progress: bool. A progress bar while the clips are embedded or featurized.
        """
        from esc50tf.data.dataset import DatasetOptions
        from esc50tf.models import classic

        if cfg.model.classic_features == "embeddings":
            return self._embedding_rows(cfg, run_dir, folder, progress)
        featurize = classic.make_featurizer(cfg.features, cfg.model)

        def features_of(selection):
            ds = folder.dataset(selection, DatasetOptions(batch_size=64, with_metadata=True,
                                                          cache=False))
            return classic.extract(ds, featurize, progress=progress,
                                   total=len(selection.rows(folder.index)))

        return features_of

    @staticmethod
    def _embedding_rows(cfg, run_dir, folder, progress=False):
        """`selection -> (X, y, filenames)` from PANNs embeddings computed once per run, cached."""
        from esc50tf import embed

        table = embed.embedding_table(cfg.train.data, cfg.model,
                                      Path(run_dir) / "embeddings.npz", progress=progress)
        return lambda selection: embed.select(table, selection, folder.index)

    def fit(self, model, train_inputs, val_inputs, cfg, **options):
        """`estimator.fit(X, y)` of the training side; returns the estimator."""
        x_train, y_train = train_inputs
        model.fit(x_train, y_train)
        return model

    def predict(self, model, inputs, verbose=0, num_classes=None):
        """Class scores `[n, num_classes]` of features `inputs` (`classic.predict_proba`)."""
        from esc50tf.models import classic

        return classic.predict_proba(model, inputs, num_classes)

    def train_split(self, cfg, split, split_dir, folder, class_names, *, strategy=None,
                    kind="none", index=None, sizes=None, callbacks=(), epoch_end=None,
                    verbose=1):
        from esc50tf.models import classic
        from esc50tf.report import fold_metrics

        features_of = self.build_inputs(cfg, split, folder, run_dir=split_dir.parent,
                                        progress=verbose > 0)
        start = time.perf_counter()
        x_train, y_train, _ = features_of(split.train)
        estimator = self.fit(self.build_model(cfg), (x_train, y_train), None, cfg)
        seconds = time.perf_counter() - start
        val_acc = None
        if split.val is not None:
            x_val, y_val, _ = features_of(split.val)
            val_acc = float((estimator.predict(x_val) == y_val).mean())
        x_test, y_test, names = features_of(split.test)
        y_prob = self.predict(estimator, x_test, num_classes=len(class_names))
        classic.save_estimator(estimator, split_dir / classic.MODEL_FILE)
        write_npz(split_dir / "predictions.npz", y_true=y_test, y_prob=y_prob,
                  filenames=np.array(names))
        result = fold_metrics(y_test, y_prob, class_names)
        result.update(epochs_run=None, train_seconds=seconds,
                      train_examples_per_s=len(y_train) / seconds if seconds else None,
                      num_train_clips=int(len(y_train)), best_val_accuracy=val_acc,
                      feature_dim=int(x_train.shape[1]))
        return result
