"""Splits that cannot leak: no src_file on two sides, in every protocol."""

import numpy as np
import pandas as pd
import pytest

from esc50tf.data import splits
from esc50tf.errors import Esc50Error


def make_index(num_classes=10, folds=(1, 2, 3, 4, 5), groups_per_class_fold=3, seed=0):
    """An ESC-50-like index: recordings of 1-4 takes, all takes in one fold."""
    rng = np.random.default_rng(seed)
    rows = []
    for fold in folds:
        for label in range(num_classes):
            for g in range(groups_per_class_fold):
                src = f"{fold}-{label}-{g}"
                for take in "ABCD"[: rng.integers(1, 5)]:
                    rows.append(dict(filename=f"{src}-{take}.wav", fold=fold, label=label,
                                     target=label, category=f"c{label}", src_file=src, take=take))
    return pd.DataFrame(rows)


def _sides(split, index):
    out = {"train": split.train.rows(index), "test": split.test.rows(index)}
    if split.val is not None:
        out["val"] = split.val.rows(index)
    return out


def _assert_no_leak(split, index):
    sides = _sides(split, index)
    names = list(sides)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not set(sides[a]["src_file"]) & set(sides[b]["src_file"]), (split.name, a, b)
            assert not set(sides[a]["filename"]) & set(sides[b]["filename"])
    assert splits.check_disjoint(split, index) == {k: len(v) for k, v in sides.items()}
    return sides


def all_splits(index):
    yield from splits.cv_splits(index)
    yield splits.test_fold_split(index, 2, val_fraction=0.2, seed=3)
    yield splits.test_fold_split(index, 4, val_fraction=0)
    for ratio in (0.9, 0.8, 0.7):
        yield splits.ratio_split(index, ratio, seed=1)


def test_no_src_file_crosses_sides_in_any_protocol():
    index = make_index()
    names = [s.name for s in all_splits(index)]
    assert names == ["fold1", "fold2", "fold3", "fold4", "fold5", "fold2", "fold4",
                     "ratio0.9", "ratio0.8", "ratio0.7"]
    for split in all_splits(index):
        _assert_no_leak(split, index)


def test_fold_split_reads_only_training_folds():
    index = make_index()
    split = splits.test_fold_split(index, 3)
    assert split.train.folds == split.val.folds == (1, 2, 4, 5)
    assert split.test.folds == (3,) and split.test.filenames is None
    sides = _assert_no_leak(split, index)
    assert len(sides["train"]) + len(sides["val"]) == (index["fold"] != 3).sum()
    share = len(sides["val"]) / (index["fold"] != 3).sum()
    assert 0.05 < share < 0.16


@pytest.mark.parametrize("ratio", [0.9, 0.8, 0.7])
def test_ratio_split_proportions_and_stratification(ratio):
    index = make_index(groups_per_class_fold=4)
    split = splits.ratio_split(index, ratio, val_fraction=0.1, seed=0)
    sides = _assert_no_leak(split, index)
    assert sum(len(v) for v in sides.values()) == len(index)  # every clip used once
    test_share = len(sides["test"]) / len(index)
    assert abs(test_share - (1 - ratio)) < 0.04
    # Stratified: every class present in the test side with about its share.
    per_class = sides["test"]["label"].value_counts()
    assert len(per_class) == 10
    assert per_class.max() / per_class.min() < 3


def test_splits_are_seeded():
    index = make_index()
    a = splits.ratio_split(index, 0.8, seed=5)
    b = splits.ratio_split(index, 0.8, seed=5)
    c = splits.ratio_split(index, 0.8, seed=6)
    assert a == b
    assert a.test.filenames != c.test.filenames


def test_check_disjoint_catches_a_leak():
    index = make_index()
    leaky_test = frozenset(index[index["take"] == "A"]["filename"])
    leaky_train = frozenset(index[index["take"] != "A"]["filename"])
    folds = (1, 2, 3, 4, 5)
    split = splits.Split("leaky", splits.Selection(folds, leaky_train), None,
                         splits.Selection(folds, leaky_test))
    with pytest.raises(Esc50Error, match="is in both train and test"):
        splits.check_disjoint(split, index)


def test_split_errors():
    index = make_index()
    with pytest.raises(Esc50Error, match="test fold 9 is not in the data; folds present: 1, 2, 3, 4, 5"):
        splits.test_fold_split(index, 9)
    with pytest.raises(Esc50Error, match="0.66 is not supported"):
        splits.ratio_split(index, 0.66)
    with pytest.raises(Esc50Error, match="validation fraction"):
        splits.test_fold_split(index, 1, val_fraction=0.9)
    tiny = make_index(num_classes=2, folds=(1, 2), groups_per_class_fold=1)
    with pytest.raises(Esc50Error, match="only 2 recordings"):
        splits.test_fold_split(tiny, 1, val_fraction=0.1)


def test_splits_on_real_tfrecords(tiny_tfrecords):
    index = splits.load_index(tiny_tfrecords)
    for split in all_splits(index):
        _assert_no_leak(split, index)


def test_fold_warnings_flag_uneven_folds_and_suggest_a_ratio_split():
    even = make_index(num_classes=4, groups_per_class_fold=2)
    assert splits.fold_warnings(even) == []
    # fold 4 holds nearly everything; the others one clip each
    big = make_index(num_classes=4, folds=(4,), groups_per_class_fold=5)
    small = make_index(num_classes=4, folds=(1, 2, 3, 5), groups_per_class_fold=1)
    small = small.groupby("fold").head(1)
    warnings = splits.fold_warnings(pd.concat([big, small], ignore_index=True))
    text = " ".join(warnings)
    assert "fold(s) 1 (1), 2 (1), 3 (1), 5 (1)" in text and "too small to test on" in text
    assert ("testing on fold 4 leaves 4 training clips for 4 classes, fewer than 2 per class: "
            "too few to train from") in text
    assert "uneven" in text and warnings[-1].endswith(splits.SPLIT_ADVICE)
    single = splits.fold_warnings(even[even["fold"] == 1])
    assert len(single) == 1 and "only one fold" in single[0] and "--split" in single[0]
    with pytest.raises(Esc50Error, match="--split"):
        splits.test_fold_split(even[even["fold"] == 1], 1)


@pytest.mark.parametrize("protocol, expected", [
    (dict(protocol="cv"), ["fold1", "fold2", "fold3", "fold4", "fold5"]),
    (dict(protocol="test-fold", test_fold=3), ["fold3"]),
    (dict(protocol="split", split_ratio=0.8), ["ratio0.8"]),
])
def test_protocol_splits_follow_the_train_config(protocol, expected):
    from esc50tf.run_config import TrainConfig

    index = make_index()
    chosen = splits.protocol_splits(TrainConfig(val_fraction=0.2, seed=1, **protocol), index)
    assert [s.name for s in chosen] == expected
    for split in chosen:
        sides = _assert_no_leak(split, index)
        assert len(sides["val"]) > 0
    if protocol["protocol"] == "test-fold":
        assert set(chosen[0].test.rows(index)["fold"]) == {3}


def test_fold_warnings_do_not_advise_the_split_already_chosen():
    even = make_index(num_classes=4, groups_per_class_fold=2)
    single = even[even["fold"] == 1]
    assert "--split 0.8" in splits.fold_warnings(single)[0]
    assert all("--split" not in w for w in splits.fold_warnings(single, split_chosen=True))


def test_class_warnings_name_classes_without_training_or_test_clips():
    index = make_index(num_classes=4, groups_per_class_fold=2)
    chosen = [splits.test_fold_split(index, 1)]
    assert splits.class_warnings(chosen, index) == []
    # class 3 only in fold 1: nothing to train from when fold 1 is the test fold
    lopsided = index[(index["label"] != 3) | (index["fold"] == 1)]
    warnings = splits.class_warnings([splits.test_fold_split(lopsided, 1)], lopsided,
                                     ["a", "b", "c", "d"])
    assert warnings == ["fold1: no training clips of 1 class(es): d (the model cannot learn "
                        "them)"]
    # and no test clips when another fold is
    warnings = splits.class_warnings([splits.test_fold_split(lopsided, 2)], lopsided)
    assert warnings == ["fold2: no test clips of 1 class(es): class 3 (their test accuracy "
                        "is not measured)"]
