"""Train / validation / test splits that cannot leak.

Three protocols, all on the `clips.csv` index that `build-tfrecords` writes:

- `test_fold_split(index, k)`: the official protocol, test on fold k, train on
  the others; `cv_splits(index)` does that for every fold (k-fold CV).
- `ratio_split(index, 0.9)`: the study's 9:1 / 8:2 / 7:3 splits, but stratified
  by class AND grouped by `src_file`, so takes of one recording never land on
  both sides (the study split clips at random).

`protocol_splits(train_config, index)` gives the splits of a run's protocol
(`cv`, `test-fold` or `split`), each checked with `check_disjoint`.

In every protocol the validation set (for early stopping, LR schedules and
tuning) is carved from the training side, again grouped by `src_file`; the test
side is never part of it. `check_disjoint` proves it for any split.

Example:
>>> index = load_index("tfrecords/")
>>> split = test_fold_split(index, test_fold=1, val_fraction=0.1, seed=0)
>>> split.train.folds, split.test.folds
((2, 3, 4, 5), (1,))
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import numpy as np

from esc50tf.errors import Esc50Error

CLIPS_CSV = "clips.csv"


@dataclasses.dataclass(frozen=True)
class Selection:
    """A subset of the stored clips.

    Args:
        folds: tuple of int. The folds whose shards are read. Shards of other
            folds are never opened.
        filenames: frozenset of str or None. When given, only these clips
            (all within `folds`) are kept; None keeps every clip of the folds.
    """

    folds: tuple
    filenames: frozenset | None = None

    def rows(self, index):
        """The rows of `index` this selection keeps."""
        keep = index["fold"].isin(self.folds)
        if self.filenames is not None:
            keep &= index["filename"].isin(self.filenames)
        return index[keep]

    def describe(self, index):
        n = len(self.rows(index))
        folds = ",".join(str(f) for f in self.folds)
        part = "" if self.filenames is None else " (subset)"
        return f"{n} clips from fold(s) {folds}{part}"


@dataclasses.dataclass(frozen=True)
class Split:
    """A named train / validation / test split. `val` may be None."""

    name: str
    train: Selection
    val: Selection | None
    test: Selection


def load_index(tfrecord_dir):
    """Reads `clips.csv` of a TFRecord folder (one row per stored clip).

    `tfrecord_dir` may be a URI (gs://...), read through tf.io.gfile.
    """
    import pandas as pd

    dtype = {"filename": str, "src_file": str, "take": str, "category": str, "shard": str}
    if "://" in str(tfrecord_dir):
        import tensorflow as tf

        path = str(tfrecord_dir).rstrip("/") + "/" + CLIPS_CSV
        if not tf.io.gfile.exists(path):
            raise Esc50Error(
                f"{path}: not found; is {tfrecord_dir} a folder made by `esc50tf build-tfrecords`?"
            )
        with tf.io.gfile.GFile(path, "r") as f:
            return pd.read_csv(f, dtype=dtype)
    path = Path(tfrecord_dir) / CLIPS_CSV
    if not path.is_file():
        raise Esc50Error(
            f"{path}: not found; is {tfrecord_dir} a folder made by `esc50tf build-tfrecords`?"
        )
    return pd.read_csv(path, dtype=dtype)


def _check_fraction(name, value, high=0.5):
    if not (0.0 <= value < 1.0) or value > high:
        raise Esc50Error(f"{name} must be in [0, {high}], got {value!r}")


def grouped_holdout(df, fraction, seed, what="validation"):
    """Holds out about `fraction` of `df`, stratified by label, grouped by src_file.

    Uses scikit-learn's StratifiedGroupKFold with k = round(1 / fraction) and
    keeps its first fold as the holdout.

    Returns:
        (kept_filenames, held_out_filenames) as frozensets.
    """
    k = int(round(1.0 / fraction))
    return _grouped_folds(df, k, 1, seed, what)


def _grouped_folds(df, k, take, seed, what):
    import warnings

    from sklearn.model_selection import StratifiedGroupKFold

    groups = df["src_file"].to_numpy()
    n_groups = len(np.unique(groups))
    if n_groups < k:
        raise Esc50Error(
            f"cannot hold out 1/{k} of the data for {what}: only {n_groups} recordings "
            f"(src_file groups) are available; use a larger fraction or more data"
        )
    if df["label"].value_counts().max() >= k:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            # Rare classes with fewer members than k make sklearn warn; grouping wins.
            warnings.simplefilter("ignore", UserWarning)
            folds = [test for _, test in splitter.split(np.zeros(len(df)), df["label"], groups)]
        held = np.concatenate(folds[:take])
    else:
        # Every class is smaller than k (tiny datasets): stratifying is
        # impossible, so hold out whole recordings at random instead.
        from sklearn.model_selection import GroupShuffleSplit

        splitter = GroupShuffleSplit(n_splits=1, test_size=take / k, random_state=seed)
        _, held = next(splitter.split(np.zeros(len(df)), groups=groups))
    mask = np.zeros(len(df), dtype=bool)
    mask[held] = True
    names = df["filename"].to_numpy()
    return frozenset(names[~mask]), frozenset(names[mask])


def _with_validation(name, index, train_folds, test, val_fraction, seed):
    _check_fraction("validation fraction", val_fraction)
    train_rows = index[index["fold"].isin(train_folds)]
    if val_fraction == 0:
        return Split(name, Selection(train_folds), None, test)
    kept, held = grouped_holdout(train_rows, val_fraction, seed)
    return Split(name, Selection(train_folds, kept), Selection(train_folds, held), test)


def test_fold_split(index, test_fold, val_fraction=0.1, seed=0):
    """The official protocol: test on `test_fold`, train on every other fold.

    Args:
        index: DataFrame from `load_index`.
        test_fold: int. A fold present in the data.
        val_fraction: float. Share of the training clips held out (grouped by
            src_file) for validation; 0 for none. Defaults to 0.1.
        seed: int. Seeds the validation holdout. Defaults to 0.
    """
    folds = sorted(int(f) for f in index["fold"].unique())
    if int(test_fold) not in folds:
        raise Esc50Error(
            f"test fold {test_fold!r} is not in the data; folds present: "
            f"{', '.join(map(str, folds))}"
        )
    if len(folds) < 2:
        raise Esc50Error(f"need at least two folds to hold one out for testing; this data has "
                         f"only fold {folds[0]}: {SPLIT_ADVICE}")
    train_folds = tuple(f for f in folds if f != int(test_fold))
    return _with_validation(
        f"fold{test_fold}", index, train_folds, Selection((int(test_fold),)), val_fraction, seed
    )


def cv_splits(index, val_fraction=0.1, seed=0):
    """k-fold cross-validation over all folds in the data: one split per fold."""
    folds = sorted(int(f) for f in index["fold"].unique())
    return [test_fold_split(index, f, val_fraction, seed) for f in folds]


def ratio_split(index, train_ratio, val_fraction=0.1, seed=0):
    """The study's ratio split, stratified by class and grouped by src_file.

    Args:
        index: DataFrame from `load_index`.
        train_ratio: float. Training share, e.g. 0.9, 0.8 or 0.7 (any r whose
            test share 1 - r is a multiple of 1/k for some k <= 20).
        val_fraction: float. Share of the training side held out for validation.
        seed: int. Seeds both holdouts.
    """
    if not 0.0 < train_ratio < 1.0:
        raise Esc50Error(f"train ratio must be in (0, 1), e.g. 0.9, got {train_ratio!r}")
    test_share = Fraction(1 - train_ratio).limit_denominator(20)
    if abs(float(test_share) - (1 - train_ratio)) > 1e-6:
        raise Esc50Error(
            f"train ratio {train_ratio!r} is not supported: the test share must be a "
            "multiple of 1/k for k <= 20 (e.g. 0.9, 0.8, 0.75, 0.7)"
        )
    folds = tuple(sorted(int(f) for f in index["fold"].unique()))
    train_names, test_names = _grouped_folds(
        index, test_share.denominator, test_share.numerator, seed, "the test split"
    )
    test = Selection(folds, test_names)
    train_rows = index[index["filename"].isin(train_names)]
    name = f"ratio{train_ratio:g}"
    _check_fraction("validation fraction", val_fraction)
    if val_fraction == 0:
        return Split(name, Selection(folds, train_names), None, test)
    kept, held = grouped_holdout(train_rows, val_fraction, seed + 1)
    return Split(name, Selection(folds, kept), Selection(folds, held), test)


def protocol_splits(train_config, index):
    """The splits of a run's protocol, each checked to share no clip or `src_file`.

    Args:
        train_config: `esc50tf.run_config.TrainConfig` (or anything with its
            `protocol`, `test_fold`, `split_ratio`, `val_fraction` and `seed`).
            "cv": every fold in turn; "test-fold": `test_fold`; "split": a
            grouped ratio split of `split_ratio`.
        index: DataFrame from `load_index`.

    Returns:
        list of Split.
    """
    t = train_config
    if t.protocol == "test-fold":
        chosen = [test_fold_split(index, t.test_fold, t.val_fraction, t.seed)]
    elif t.protocol == "split":
        chosen = [ratio_split(index, t.split_ratio, t.val_fraction, t.seed)]
    else:
        chosen = cv_splits(index, t.val_fraction, t.seed)
    for s in chosen:
        check_disjoint(s, index)
    return chosen


# What to use when the folds cannot carry a fold-based protocol.
SPLIT_ADVICE = ("use --split 0.8 instead (a ratio split over all clips, stratified by class "
                "and grouped by src_file)")
# A fold-based protocol is doubtful when a fold is this many times larger than another.
UNEVEN_FACTOR = 4


def fold_warnings(index, split_chosen=False):
    """Why the folds of `index` may not suit k-fold CV or a test fold.

    Flags a single fold; folds too small to test on (fewer clips than there
    are classes, so some class cannot be tested); folds whose complement is
    too small to train from (fewer than two clips per class); and fold sizes
    that differ by more than UNEVEN_FACTOR. Each message ends with the
    protocol that fits (SPLIT_ADVICE), unless `split_chosen` (the user already
    asked for a ratio split, which the folds do not concern).

    Returns:
        A list of str, empty when the folds look fine.
    """
    counts = index["fold"].value_counts().sort_index()
    total, classes = int(counts.sum()), int(index["label"].nunique())
    if len(counts) < 2:
        return [f"only one fold (fold {counts.index[0]}, {total} clips): k-fold CV and "
                "--test-fold need two or more" + ("" if split_chosen else f"; {SPLIT_ADVICE}")]
    out = []
    small = [f"{f} ({n})" for f, n in counts.items() if n < classes]
    if small:
        out.append(f"fold(s) {', '.join(small)} hold fewer clips than there are classes "
                   f"({classes}): too small to test on")
    thin = [(f, total - n) for f, n in counts.items() if total - n < 2 * classes]
    for f, left in thin:
        out.append(f"testing on fold {f} leaves {left} training clips for {classes} classes, "
                   "fewer than 2 per class: too few to train from")
    if counts.max() > UNEVEN_FACTOR * counts.min():
        out.append(f"fold sizes are uneven: {counts.min()} to {counts.max()} clips")
    if out and not split_chosen:
        out[-1] += f"; {SPLIT_ADVICE}"
    return out


def class_warnings(chosen, index, class_names=None):
    """Classes a protocol's splits leave without training or test clips.

    Args:
        chosen: list of Split (`protocol_splits`).
        index: the clip index.
        class_names: list of str by label, or None for "class N".

    Returns:
        A list of str, one per split and side that misses a class.
    """
    out = []
    labels = sorted(int(x) for x in index["label"].unique())
    if class_names:
        labels = list(range(len(class_names)))
    names = class_names or {k: f"class {k}" for k in labels}
    for s in chosen:
        for side, sel in (("training", s.train), ("test", s.test)):
            present = set(int(x) for x in sel.rows(index)["label"])
            missing = [names[k] for k in labels if k not in present]
            if missing:
                out.append(f"{s.name}: no {side} clips of {len(missing)} class(es): "
                           f"{', '.join(missing[:8])}{', ...' if len(missing) > 8 else ''}"
                           + (" (the model cannot learn them)" if side == "training"
                              else " (their test accuracy is not measured)"))
    return out


def check_disjoint(split, index):
    """Raises Esc50Error if a clip or a src_file is on two sides of `split`.

    Returns:
        A dict of clip counts per side, for reporting.
    """
    sides = {"train": split.train, "val": split.val, "test": split.test}
    rows = {k: s.rows(index) for k, s in sides.items() if s is not None}
    names = list(rows)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = set(rows[a]["src_file"]) & set(rows[b]["src_file"])
            if shared:
                raise Esc50Error(
                    f"split {split.name}: src_file {sorted(shared)[0]!r} is in both "
                    f"{a} and {b} ({len(shared)} recording(s) shared)"
                )
    return {k: len(v) for k, v in rows.items()}


def calibration_set(index, splits_, max_clips, seed=0):
    """Training-side clips of every split of `splits_` (no validation or test clip), sorted:
    the calibration clips of an int8 export of those splits' models (`esc50tf.export`).

    Raises:
        Esc50Error: no clip is on the training side of every exported split
            (the average of cross-validation splits).
    """
    names = None
    tested = set()
    for s in splits_:
        side = set(s.train.rows(index)["filename"])
        names = side if names is None else names & side
        tested |= set(s.test.rows(index)["filename"])
        if s.val is not None:
            tested |= set(s.val.rows(index)["filename"])
    names = sorted(names - tested)
    if not names:
        raise Esc50Error(
            "int8 needs calibration clips from the training side of every exported split, and "
            f"splits {', '.join(s.name for s in splits_)} share none (each clip is some split's "
            "test or validation clip); export one split with --split K")
    if len(names) > max_clips:
        rng = np.random.default_rng(seed)
        names = sorted(rng.choice(names, size=max_clips, replace=False).tolist())
    return names
