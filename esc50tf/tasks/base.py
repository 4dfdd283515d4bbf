"""The Task interface: how one kind of model is built, fed, fitted and asked for predictions.

A task is chosen by the registry entry of a model (`ModelSpec.task`, see
`esc50tf.tasks.get_task`) and owns everything that differs between model
kinds, so `train`, `tune` and `study` never branch on the kind:

- run level: `check_options` (flags the kind cannot take), `make_strategy`
  (where it computes), `check_splits` (what would fail before the first
  epoch), `start_run` / `end_run` (process-wide settings and the facts the
  report records);
- split level: `build_model`, `build_inputs`, `test_inputs`, `fit`,
  `predict`, and `train_split`, which strings them together for one split of
  a protocol and returns the split's results (metrics, timings, counts) for
  the report;
- saved models: `MODEL_FILE`, `saved_model`, `load`, `save`, `predictor`
  and `export`: `evaluate`, `predict` and `export` reach a run's models only
  through these (`esc50tf.tasks.saved_task` finds the task of a split folder).

Every task takes and returns the same things: `build_inputs` returns
`(train_inputs, val_inputs)`, `fit` the history (metric -> one value per
epoch), `predict` `(y_true, y_prob, filenames)` of inputs from
`test_inputs`; a batch size is always per replica in the config and global
when a method takes one (`global_batch`).

Tasks import TensorFlow, Keras and scikit-learn only inside their methods.
"""

from __future__ import annotations

from pathlib import Path

from esc50tf.errors import Esc50Error


class Task:
    """Base class of the tasks (Model Garden's `base_task.Task`, for a whole run).

    Args:
        spec: esc50tf.models.ModelSpec. The registered model this task trains.

    Example:
    >>> from esc50tf.tasks import get_task
    >>> get_task("gru").name
    'keras'
    """

    name = ""

    def __init__(self, spec):
        self.spec = spec

    def __repr__(self):
        return f"{type(self).__name__}({self.spec.name!r})"

    # --- run level ---------------------------------------------------------------------

    def check_options(self, cfg):
        """Raises Esc50Error for settings of `cfg.train` this kind of model cannot run with."""

    def make_strategy(self, cfg):
        """`(strategy, kind)` the run computes under; `(None, "none")` without one."""
        return None, "none"

    def check_splits(self, cfg, chosen, index, strategy, advice):
        """Raises Esc50Error, before any folder is made, for splits that cannot train.

        Args:
            cfg: RunConfig.
            chosen: list of Split. The protocol's splits.
            index: the dataset's index (`data.splits.load_index`).
            strategy: from `make_strategy`.
            advice: list of str. Fold warnings already printed (a fix to suggest).
        """

    def check_memory(self, cfg, chosen, folder, kind):
        """Raises Esc50Error, before any folder is made, when a split cannot fit in memory.

        Args:
            chosen: list of Split.
            folder: the opened TFRecordFolder.
            kind: from `make_strategy`.
        """

    def start_run(self, cfg, strategy, kind, resumed=False):
        """Applies process-wide settings (precision); returns facts for the report."""
        return {}

    def end_run(self):
        """Undoes what `start_run` changed in the process."""

    # --- split level -------------------------------------------------------------------

    def build_model(self, cfg, num_classes, num_samples):
        """The untrained model of `cfg.model`."""
        raise NotImplementedError

    def global_batch(self, cfg, strategy=None):
        """The global batch of `cfg.train.batch_size` (per replica) under `strategy`."""
        from esc50tf import distribute

        return distribute.global_batch_size(cfg.train.batch_size,
                                            1 if strategy is None else strategy)

    def build_inputs(self, cfg, split, folder, *, batch_size=None, run_dir=None, **options):
        """`(train_inputs, val_inputs)` of `split` (never its test side); val None without one.

        Args:
            batch_size: int or None. Global batch (None: `global_batch(cfg)`).
            run_dir: Path or None. The run folder (where a task may cache inputs).
        """
        raise NotImplementedError

    def test_inputs(self, cfg, selection, folder, *, batch_size=None, run_dir=None):
        """The inputs of `selection` (the test side) in their fixed order, for `predict`."""
        raise NotImplementedError

    def fit(self, model, train_inputs, val_inputs, cfg, **options):
        """Fits `model`; returns its history: dict metric -> list of one value per epoch."""
        raise NotImplementedError

    def predict(self, model, inputs, *, num_classes=None, verbose=0):
        """`(y_true, y_prob, filenames)` of inputs from `test_inputs`."""
        raise NotImplementedError

    # --- saved models -------------------------------------------------------------------

    MODEL_FILE = ""
    """The file a split's model is saved in, inside the split folder."""
    whole_model = True
    """Whether a saved model file alone maps waveforms to probabilities."""

    @classmethod
    def saved_model(cls, split_dir):
        """The saved model file in `split_dir`, or None."""
        path = Path(split_dir) / cls.MODEL_FILE
        return path if path.is_file() else None

    def save(self, model, split_dir):
        """Saves a split's model in `split_dir`; returns the file."""
        raise NotImplementedError

    @classmethod
    def load(cls, path, *, resave=False, log=None):
        """The model saved at `path` (Esc50Error naming the file when it cannot be read).

        With `resave`, a file of an older esc50tf format is also saved again beside it in
        the current one (`esc50tf evaluate`), saying so through `log`.
        """
        raise NotImplementedError

    def predictor(self, model, cfg, num_samples, num_classes):
        """`model` as a callable `waveforms [b, num_samples] -> probabilities [b, classes]`."""
        return model

    def export(self, model, path):
        """Writes `model` as a TF SavedModel (waveform in, probabilities out)."""
        raise Esc50Error(f"{self.spec.name}: a {self.name} model does not export to a "
                         "SavedModel")

    def train_split(self, cfg, split, split_dir, folder, class_names, *, strategy=None,
                    kind="none", index=None, sizes=None, callbacks=(), epoch_end=None,
                    verbose=1):
        """Trains on one split, predicts its test side once, saves the model there.

        Args:
            cfg: RunConfig.
            split: Split. train / val / test selections.
            split_dir: Path. The split's folder in the run folder.
            folder: TFRecordFolder. The opened TFRecord folder (`data.dataset`).
            class_names: list of str.
            strategy, kind: from `make_strategy`.
            index: the dataset's index, or None to load it.
            sizes: dict. Clips per side (`data.splits.check_disjoint`).
            callbacks: extra Keras callbacks (Keras task).
            epoch_end: callable or None. Called after every epoch (a remote run's upload).
            verbose: int. Keras fit verbosity.

        Returns:
            dict: the split's metrics (`report.fold_metrics`) and training facts.
        """
        raise NotImplementedError


def history_length(path):
    """Epochs recorded in a CSVLogger file (0 when there is none)."""
    try:
        return max(0, len(Path(path).read_text().strip().splitlines()) - 1)
    except OSError:
        return 0
