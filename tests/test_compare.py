"""esc50tf compare on hand-made run reports (no training)."""

import csv
import json

import numpy as np
import pandas as pd
import pytest

from esc50tf.cli import main
from esc50tf.compare import compare, find_runs

CLASSES = ["dog", "rain", "breathing", "snoring"]


def _report(model="gru", accuracy=0.5, per_class=None, cm=None, protocol="cv", test_fold=None,
            classes=CLASSES, clips=40, sample_rate=8000, data="/data/tfr", folds=5, std=0.05,
            optimizer="adam", lr=1e-3):
    n = len(classes)
    per_class = per_class or {c: accuracy for c in classes}
    cm = cm if cm is not None else (np.eye(n, dtype=int) * 2).tolist()
    family_features = {"kind": "mel", "n_mels": 32, "n_fft": 256, "hop_length": 64,
                       "sample_rate": sample_rate, "n_mfcc": 20, "deltas": 0, "center": True}
    names = {"cv": "k-fold cross-validation", "test-fold": f"test fold {test_fold}"}
    return {
        "model": model, "accuracy": accuracy, "accuracy_std": std if folds > 1 else 0.0,
        "macro_f1": accuracy - 0.01, "weighted_f1": accuracy - 0.02,
        "per_class_accuracy": per_class, "confusion_matrix": cm, "classes": list(classes),
        "folds": [{"split": f"fold{i + 1}", "accuracy": accuracy, "epochs_run": 3}
                  for i in range(folds)],
        "wall_time_s": 12.0, "train_examples_per_s": 30.0,
        "config": {"train": {"protocol": protocol, "test_fold": test_fold, "split_ratio": None,
                             "seed": 0, "preset": "seed", "optimizer": optimizer, "lr": lr,
                             "epochs": 5, "data": data},
                   "model": {"name": model, "image_size": None, "classic_features": "stats"},
                   "features": family_features, "augment": {}},
        "protocol": names[protocol], "device": "CPU (2 cores)", "precision": "float32",
        "dataset": {"path": data, "clips": clips, "sample_rate": sample_rate,
                    "num_samples": sample_rate},
    }


def _write_run(folder, **kwargs):
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps(_report(**kwargs)))
    (folder / "config.json").write_text(json.dumps(_report(**kwargs)["config"]))
    return folder


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_per_class_table_has_a_column_per_run_and_a_row_per_class(tmp_path):
    a = _write_run(tmp_path / "a", model="gru", accuracy=0.6,
                   per_class={"dog": 1.0, "rain": 0.75, "breathing": 0.25, "snoring": 0.5})
    b = _write_run(tmp_path / "b", model="svm", accuracy=0.4,
                   per_class={"dog": 0.5, "rain": 0.5, "breathing": 0.0, "snoring": 0.25})
    c = _write_run(tmp_path / "c", model="cnn_small", accuracy=0.8)
    result = compare([a, b, c], tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "per_class.csv", index_col="class")
    assert list(table.columns) == ["c", "a", "b"]  # one per run, in ranking order
    assert list(table.index) == CLASSES
    assert table.loc["breathing", "a"] == 0.25 and table.loc["dog", "b"] == 0.5
    assert table.loc["rain", "c"] == 0.8
    assert result.per_class.shape == (4, 3)
    for name in ("comparison.md", "comparison.csv", "comparison.png", "per_class.csv",
                 "per_class.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0, name


def test_ranking_is_by_accuracy_with_the_best_run_per_model_marked(tmp_path):
    runs = [_write_run(tmp_path / "gru-adam", model="gru", accuracy=0.55),
            _write_run(tmp_path / "gru-sgd", model="gru", accuracy=0.70, optimizer="sgd"),
            _write_run(tmp_path / "svm", model="svm", accuracy=0.60)]
    compare(runs, tmp_path / "out")
    rows = _rows(tmp_path / "out" / "comparison.csv")
    assert [r["run"] for r in rows] == ["gru-sgd", "svm", "gru-adam"]
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    assert [r["best_of_model"] for r in rows] == ["True", "True", "False"]
    assert rows[0]["family"] == "rnn" and rows[1]["family"] == "classic"
    assert rows[0]["optimizer"] == "sgd" and rows[1]["optimizer"] == ""  # classic: no optimizer
    assert rows[0]["input"] == "126x32"  # 1 + 8000 // 64 frames x 32 mels
    md = (tmp_path / "out" / "comparison.md").read_text()
    assert "| 1 | **gru-sgd** |" in md and "| 3 | gru-adam |" in md


def test_runs_of_other_protocols_are_flagged_not_ranked(tmp_path):
    cv_a = _write_run(tmp_path / "cv-a", model="gru", accuracy=0.6)
    cv_b = _write_run(tmp_path / "cv-b", model="svm", accuracy=0.5)
    # Best accuracy, but on one test fold: must not be ranked above the CV runs.
    fold = _write_run(tmp_path / "fold1", model="cnn_small", accuracy=0.9, protocol="test-fold",
                      test_fold=1, folds=1)
    result = compare([fold, cv_a, cv_b], tmp_path / "out")
    rows = {r["run"]: r for r in _rows(tmp_path / "out" / "comparison.csv")}
    assert rows["cv-a"]["rank"] == "1" and rows["cv-b"]["rank"] == "2"
    assert rows["fold1"]["rank"] == "" and rows["fold1"]["comparable"] == "False"
    assert "protocol test fold 1" in rows["fold1"]["flag"]
    assert rows["cv-a"]["flag"] == ""
    md = (tmp_path / "out" / "comparison.md").read_text()
    assert "not comparable" in md.lower()
    warning = md.split("## Warning: runs that are not comparable")[1].split("## Ranking")[0]
    assert "fold1: protocol test fold 1 (ranked: k-fold cross-validation)" in warning
    ranking = md.split("## Ranking")[1].split("## Not comparable")[0]
    assert "fold1" not in ranking
    assert result.groups[0]["runs"] == ["cv-a", "cv-b"]


def test_other_datasets_and_class_lists_are_flagged(tmp_path):
    base = [_write_run(tmp_path / f"r{i}", accuracy=0.5 + i / 10) for i in range(3)]
    more_clips = _write_run(tmp_path / "more-clips", accuracy=0.95, clips=2000)
    rate = _write_run(tmp_path / "rate", accuracy=0.95, sample_rate=16000)
    other = _write_run(tmp_path / "classes", accuracy=0.95, classes=["a", "b", "c", "d"])
    compare([*base, more_clips, rate, other], tmp_path / "out")
    rows = {r["run"]: r for r in _rows(tmp_path / "out" / "comparison.csv")}
    assert [rows[f"r{i}"]["rank"] for i in (2, 1, 0)] == ["1", "2", "3"]
    assert "2000 clips" in rows["more-clips"]["flag"]
    assert "16000 Hz" in rows["rate"]["flag"]
    assert "class list differs" in rows["classes"]["flag"]
    # The per-class table only holds runs sharing the ranked runs' class list.
    table = pd.read_csv(tmp_path / "out" / "per_class.csv", index_col="class")
    assert "classes" not in table.columns and list(table.index) == CLASSES


def test_hard_classes_and_confused_pairs(tmp_path):
    # breathing and snoring are mistaken for each other in both runs.
    cm_a = [[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 2], [0, 0, 1, 1]]
    cm_b = [[2, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 2, 0]]
    a = _write_run(tmp_path / "a", accuracy=0.625, cm=cm_a,
                   per_class={"dog": 1.0, "rain": 1.0, "breathing": 0.0, "snoring": 0.5})
    b = _write_run(tmp_path / "b", accuracy=0.5, cm=cm_b, model="svm",
                   per_class={"dog": 1.0, "rain": 0.5, "breathing": 0.5, "snoring": 0.0})
    result = compare([a, b], tmp_path / "out", hard_threshold=0.6)
    assert result.hard_for_all == ["breathing", "snoring"]
    assert result.hard_classes[0]["class"] == "breathing"
    assert result.hard_classes[0]["mean"] == pytest.approx(0.25)
    top = result.confused_pairs[0]
    assert (top["a"], top["b"], top["count"]) == ("breathing", "snoring", 6)
    assert (top["a_to_b"], top["b_to_a"]) == (3, 3)
    md = (tmp_path / "out" / "comparison.md").read_text()
    assert "Below 60% in every run: breathing, snoring." in md
    assert "| breathing / snoring | 6 | 3 | 3 |" in md


def test_study_and_tune_folders(tmp_path):
    study = tmp_path / "study"
    _write_run(study / "runs" / "gru-mel-seed", accuracy=0.6)
    unfinished = study / "runs" / "svm-image-seed"
    unfinished.mkdir(parents=True)
    (unfinished / "config.json").write_text("{}")
    (study / "failures.json").write_text(json.dumps(
        [{"name": "svm-image-seed", "error": "ValueError: boom"}]))
    _write_run(tmp_path / "tune" / "best_run", model="cnn_small", accuracy=0.7)
    warnings = []
    runs, skipped = find_runs([study, tmp_path / "tune"], log=warnings.append)
    assert [r.label for r in runs] == ["gru-mel-seed", "tune/best_run"]
    assert skipped == [(unfinished, "failed: ValueError: boom")]
    assert "svm-image-seed" in warnings[0]
    assert main(["compare", str(study), str(tmp_path / "tune"), "--out", str(tmp_path / "o")]) == 0
    md = (tmp_path / "o" / "comparison.md").read_text()
    assert "## Skipped runs" in md and "ValueError: boom" in md


def test_same_run_names_from_two_studies_get_distinct_labels(tmp_path):
    for study in ("s1", "s2"):
        _write_run(tmp_path / study / "runs" / "gru-mel-seed", accuracy=0.5)
    runs, _ = find_runs([tmp_path / "s1", tmp_path / "s2"])
    assert [r.label for r in runs] == ["s1/gru-mel-seed", "s2/gru-mel-seed"]


@pytest.mark.parametrize("case, message", [
    ("missing", "no such folder"),
    ("unfinished", "no report.json; the run has not finished"),
    ("not-a-run", "not an esc50tf run folder"),
    ("bad-report", "not an esc50tf report; missing"),
])
def test_bad_input_is_a_clear_error(tmp_path, capsys, case, message):
    good = _write_run(tmp_path / "good", accuracy=0.5)
    bad = tmp_path / case
    if case == "unfinished":
        bad.mkdir()
        (bad / "config.json").write_text("{}")
    elif case == "not-a-run":
        bad.mkdir()
    elif case == "bad-report":
        bad.mkdir()
        (bad / "report.json").write_text(json.dumps({"accuracy": 0.5}))
    out = tmp_path / "out"
    assert main(["compare", str(good), str(bad), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and message in err
    assert not out.exists()  # nothing written


def test_no_finished_run_is_an_error(tmp_path, capsys):
    (tmp_path / "study" / "runs" / "gru-mel-seed").mkdir(parents=True)
    assert main(["compare", str(tmp_path / "study"), "--out", str(tmp_path / "out")]) == 1
    assert "no finished runs to compare" in capsys.readouterr().err


def test_a_folder_holding_a_panns_run_compares_with_its_family_colour(tmp_path, monkeypatch):
    """Issue 23: a cnn14 run once raised KeyError in the accuracy plot (no colour for panns)."""
    from esc50tf import compare as compare_mod
    from esc50tf.models import registry

    shown = {}
    real = compare_mod.plot_run_accuracy

    def spy(rows, path, main_group, families):
        shown.update({r["run"]: r["family"] for r in rows})
        real(rows, path, main_group, families)

    monkeypatch.setattr(compare_mod, "plot_run_accuracy", spy)
    runs = [_write_run(tmp_path / "runs" / "cnn14", model="cnn14", accuracy=0.9),
            _write_run(tmp_path / "runs" / "gru", model="gru", accuracy=0.6)]
    assert main(["compare", *map(str, runs), "--out", str(tmp_path / "out")]) == 0
    assert shown == {"cnn14": "panns", "gru": "rnn"}
    assert (tmp_path / "out" / "comparison.png").stat().st_size > 0
    assert registry.family("panns").colour not in {f.colour for f in registry.families()
                                                    if f.name != "panns"}


def test_a_new_family_gets_its_compare_colour_and_label_from_its_register_call(tmp_path,
                                                                                monkeypatch):
    """A family registered in a test (what its module would do: register_family, then
    register) is drawn by compare in its own colour under its own label; no other file
    names it."""
    import matplotlib.colors as mcolors
    from matplotlib.axes import Axes

    from esc50tf import tune
    from esc50tf.models import registry

    legends = []
    real_legend = Axes.legend

    def legend(self, *args, handles=None, **kwargs):
        legends.append({h.get_label(): mcolors.to_hex(h.get_facecolor()) for h in handles or ()})
        return real_legend(self, *args, handles=handles, **kwargs)

    monkeypatch.setattr(Axes, "legend", legend)
    registry.register_family("toy", "toy nets", "tab:pink")
    registry.register("toy_net", "toy", "a toy model for the test", settings=("rnn_units",))(
        lambda x, config, num_classes: x)
    try:
        assert [f.name for f in registry.families()][-1] == "toy"
        # tune searches the setting it reads (the registry's `settings`); its CLI flag and
        # a brand-new setting need the declare-once config fields (issue 23, part A).
        assert "toy_net" in tune.applies_to("rnn_units")
        runs = [_write_run(tmp_path / "toy", model="toy_net", accuracy=0.7),
                _write_run(tmp_path / "gru", model="gru", accuracy=0.6)]
        result = compare(runs, tmp_path / "out")
        assert {r["family"] for r in result.rows} == {"toy", "rnn"}
        assert legends[0]["toy nets"] == mcolors.to_hex("tab:pink")
        assert legends[0]["rnn"] == mcolors.to_hex(registry.family("rnn").colour)
    finally:
        registry.unregister_family("toy")
    assert "toy_net" not in registry.names() and "toy" not in [f.name for f in registry.families()]
