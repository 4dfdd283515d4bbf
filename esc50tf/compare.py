"""`esc50tf compare`: one table, two plots and the hard classes over finished runs.

Reads the `report.json` of each run given: a train run folder, a tune output
folder (its `best_run/`), or a study folder (every `OUT/runs/*`), and writes
into `out`:

- `comparison.md` / `comparison.csv`: one row per run (model, front end,
  input size, protocol, preset, optimizer, learning rate, epochs, precision,
  accuracy mean and std over folds, macro / weighted F1, wall time, training
  examples/s, device), ranked by accuracy, the best run of each model marked;
- `comparison.png`: accuracy per run with std-over-folds error bars, grouped
  and coloured by model family;
- `per_class.csv` / `per_class.png`: per-class accuracy, one row per class and
  one column per run, as a table and a heat map;
- in `comparison.md`, the classes every run finds hard and the class pairs
  most confused over all runs (confusion matrices summed).

Runs are only ranked against runs measured the same way: same protocol (for a
ratio split, the same seed, which picks the test clips), same dataset (path,
clip count, sample rate) and same class list. The largest such group is
ranked; every other run is listed as not comparable, with what differs.

A run folder named on the command line must hold a `report.json` (else an
error names it); inside a study folder, runs without one (failed or not
finished) are skipped with a warning, since the study records them itself.

Example:
>>> result = compare(["study-out"], "study-out")          # doctest: +SKIP
>>> result.rows[0]["run"], result.rows[0]["accuracy"]      # doctest: +SKIP
('bigru-mel-seed', 0.785)
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from esc50tf.errors import Esc50Error
from esc50tf.frontend import FRONTENDS, FeatureConfig
from esc50tf.io import atomic_path, read_json
from esc50tf.report import (confused_pairs, hard_classes, plot_per_class_of_runs,
                            plot_run_accuracy)

OUTPUT_FILES = ("comparison.md", "comparison.csv", "comparison.png", "per_class.csv",
                "per_class.png")
# Family, label and colour of a run whose model is no longer registered; the
# registered families' come from the registry (FamilySpec.label, .colour).
OTHER = ("other", "other", "tab:purple")
CSV_COLUMNS = (
    "rank", "run", "model", "family", "best_of_model", "comparable", "flag", "features",
    "classic_features", "n_mels", "n_mfcc", "n_fft", "hop_length", "samples", "sample_rate",
    "input", "protocol", "splits", "preset", "optimizer", "lr", "epochs", "epochs_run",
    "precision", "accuracy", "accuracy_std", "macro_f1", "weighted_f1", "wall_time_s",
    "train_examples_per_s", "device", "path",
)
_REQUIRED = ("accuracy", "accuracy_std", "macro_f1", "weighted_f1", "per_class_accuracy",
             "confusion_matrix", "classes", "folds", "config")


@dataclasses.dataclass
class Run:
    """A finished run: a label unique within the comparison, its folder and report."""

    label: str
    path: Path
    report: dict


@dataclasses.dataclass
class Comparison:
    """What `compare` found; `rows` are in table order (ranked runs first).

    Args:
        rows: list of dicts with the CSV_COLUMNS keys.
        groups: list of dicts (key, description, runs), the ranked group first.
        per_class: pandas DataFrame, classes x runs (runs sharing the ranked
            group's class list).
        hard_classes: list of dicts (class, mean, min, max, below), hardest first.
        hard_for_all: list of class names below `hard_threshold` in every run.
        confused_pairs: list of dicts (a, b, count, a_to_b, b_to_a).
        skipped: list of (path, reason) of runs left out.
        files: list of the Paths written.
    """

    rows: list
    groups: list
    per_class: object
    hard_classes: list
    hard_for_all: list
    confused_pairs: list
    skipped: list
    hard_threshold: float
    files: list = dataclasses.field(default_factory=list)


# --- finding runs ----------------------------------------------------------------

def find_runs(paths, log=None):
    """Resolves run, tune and study folders into runs with a report.

    Args:
        paths: run folders (`report.json`), tune folders (`best_run/report.json`)
            or study folders (`runs/*/report.json`).
        log: callable taking a str, for warnings.

    Returns:
        (runs, skipped): a list of Run (each folder once) and a list of
        `(path, reason)` for study runs without a report.

    Raises:
        Esc50Error: a path that does not exist, is not one of those folders, or
            is a run folder without `report.json`; a report that is not valid.
    """
    log = log or (lambda _msg: None)
    found, skipped = [], []
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise Esc50Error(f"{path}: no such folder")
        if not path.is_dir():
            raise Esc50Error(f"{path}: not a folder; give a run, tune or study folder")
        if (path / "report.json").is_file():
            found.append(path)
        elif (path / "best_run" / "report.json").is_file():
            found.append(path / "best_run")
        elif (path / "runs").is_dir():
            failures = _study_failures(path)
            members = sorted(p for p in (path / "runs").iterdir() if p.is_dir())
            for run_dir in members:
                if (run_dir / "report.json").is_file():
                    found.append(run_dir)
                    continue
                reason = failures.get(run_dir.name, "not finished (no report.json)")
                skipped.append((run_dir, reason))
                log(f"warning: {run_dir}: skipped, {reason}")
            # A run that failed before its first epoch leaves no folder, only its failure.
            for name in sorted(set(failures) - {p.name for p in members}):
                skipped.append((path / "runs" / name, failures[name]))
                log(f"warning: {path / 'runs' / name}: skipped, {failures[name]}")
        elif (path / "config.json").is_file():
            raise Esc50Error(f"{path}: no report.json; the run has not finished (resume it "
                             f"with `esc50tf train --config {path / 'config.json'} --out {path}`)")
        else:
            raise Esc50Error(f"{path}: no report.json; not an esc50tf run folder (nor a tune "
                             "folder with best_run/, nor a study folder with runs/)")
    runs, seen = [], set()
    for run_dir in found:
        key = run_dir.resolve()
        if key in seen:
            continue
        seen.add(key)
        runs.append(Run(_label(run_dir), run_dir, read_report(run_dir / "report.json")))
    _make_labels_unique(runs)
    return runs, skipped


def read_report(path):
    """Loads a report.json, checking that it has what a comparison needs."""
    report = read_json(path)
    if not isinstance(report, dict):
        raise Esc50Error(f"{path}: not an esc50tf report (expected a JSON object)")
    missing = [k for k in _REQUIRED if k not in report]
    if missing:
        raise Esc50Error(f"{path}: not an esc50tf report; missing {', '.join(missing)}")
    return report


def _study_failures(study_dir):
    try:
        entries = json.loads((Path(study_dir) / "failures.json").read_text())
    except (OSError, ValueError):
        return {}
    return {e["name"]: f"failed: {e.get('error', '?')}" for e in entries
            if isinstance(e, dict) and "name" in e}


def _label(run_dir):
    if run_dir.name == "best_run":
        return f"{run_dir.parent.name}/best_run"
    return run_dir.name


def _make_labels_unique(runs):
    counts = {}
    for run in runs:
        counts[run.label] = counts.get(run.label, 0) + 1
    for run in runs:
        if counts[run.label] > 1:  # prefix the study (or parent) folder's name
            parent = run.path.resolve().parent
            if parent.name == "runs":
                parent = parent.parent
            run.label = f"{parent.name}/{run.label}"
    seen = {}
    for run in runs:
        n = seen[run.label] = seen.get(run.label, 0) + 1
        if n > 1:
            run.label = f"{run.label} #{n}"


# --- one row per run ----------------------------------------------------------------

def comparability_key(report):
    """What must match for two runs to be ranked together: (protocol, dataset, classes)."""
    train = report["config"].get("train", {})
    protocol = train.get("protocol", "cv")
    if protocol == "test-fold":
        proto = ("test-fold", train.get("test_fold"))
    elif protocol == "split":
        # The seed picks the test clips of a ratio split.
        proto = ("split", train.get("split_ratio"), train.get("seed"))
    else:
        proto = ("cv",)
    dataset = report.get("dataset") or {}
    data = (dataset.get("path") or train.get("data"), dataset.get("clips"),
            dataset.get("sample_rate") or report["config"].get("features", {}).get("sample_rate"))
    return proto, data, tuple(report["classes"])


def _describe_key(key):
    proto, data, classes = key
    if proto[0] == "test-fold":
        p = f"test fold {proto[1]}"
    elif proto[0] == "split":
        p = f"grouped ratio split {proto[1]:g} (seed {proto[2]})"
    else:
        p = "k-fold cross-validation"
    path, clips, rate = data
    return {"protocol": p, "dataset": f"{path} ({clips} clips, {rate} Hz)",
            "classes": f"{len(classes)} classes"}


def _differences(key, main):
    a, b = _describe_key(key), _describe_key(main)
    out = []
    if key[0] != main[0]:
        out.append(f"protocol {a['protocol']} (ranked: {b['protocol']})")
    if key[1] != main[1]:
        out.append(f"dataset {a['dataset']} (ranked: {b['dataset']})")
    if key[2] != main[2]:
        same = len(key[2]) == len(main[2])
        out.append(f"class list differs ({a['classes']}" + (", other names or order" if same else "")
                   + f"; ranked: {b['classes']})")
    return "; ".join(out)


def _spec(model):
    """The ModelSpec of `model`, or None when it is no longer registered."""
    from esc50tf.models import registry

    try:
        return registry.get(model)
    except Esc50Error:
        return None


def _families():
    """[(family, label, colour)] of every registered family, then "other"."""
    from esc50tf.models import registry

    return [(f.name, f.label, f.colour) for f in registry.families()] + [OTHER]


def _num_samples(report):
    dataset = report.get("dataset") or {}
    if dataset.get("num_samples"):
        return int(dataset["num_samples"])
    # Older reports: the dataset's manifest, if it is still there.
    path = dataset.get("path") or report["config"].get("train", {}).get("data")
    try:
        manifest = json.loads((Path(path) / "manifest.json").read_text())
        return int(manifest["config"]["num_samples"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _input_shape(model_cfg, feat, samples, is_classic):
    """The classifier's input, e.g. `431x128` (frames x bins) or `224x224x3` (image)."""
    if is_classic:
        if model_cfg.get("classic_features") == "image":
            size = model_cfg.get("image_size") or 224
            return f"{size}x{size} image, flattened"
        return "band statistics"
    if model_cfg.get("image_size"):
        size = model_cfg["image_size"]
        channels = model_cfg.get("image_channels") or (3 if model_cfg.get("weights") else 1)
        return f"{size}x{size}x{channels}"
    try:
        config = FeatureConfig.from_dict(feat)
    except Esc50Error:  # a front end this version does not know
        return "?"
    if samples is None:
        return f"? x {config.n_bins}"
    return f"{config.num_frames(samples)}x{config.n_bins}"


def _reads(feat, field):
    """Whether the front end of a run's features section reads `field`."""
    spec = FRONTENDS.get(feat.get("kind", "mel"))
    return spec is not None and spec.reads(field)


def run_row(run):
    """The comparison's columns for one run (numbers raw; formatting is the writers' job)."""
    r = run.report
    cfg = r["config"]
    t, m, f = cfg.get("train", {}), cfg.get("model", {}), cfg.get("features", {})
    model = r.get("model") or m.get("name", "?")
    spec = _spec(model)
    family = OTHER[0] if spec is None else spec.family
    is_classic = spec is not None and not spec.keras  # fixed features, no epochs
    samples = _num_samples(r)
    rate = (r.get("dataset") or {}).get("sample_rate") or f.get("sample_rate")
    epochs_run = [x.get("epochs_run") for x in r["folds"] if x.get("epochs_run")]
    return {
        "run": run.label,
        "model": model,
        "family": family,
        "features": f.get("kind"),
        "classic_features": m.get("classic_features") if is_classic else None,
        "n_mels": f.get("n_mels") if (is_classic or _reads(f, "n_mels")) else None,
        "n_mfcc": f.get("n_mfcc") if _reads(f, "n_mfcc") and not is_classic else None,
        "n_fft": f.get("n_fft"),
        "hop_length": f.get("hop_length"),
        "samples": samples,
        "sample_rate": rate,
        "input": _input_shape(m, f, samples, is_classic),
        "protocol": r.get("protocol") or _describe_key(comparability_key(r))["protocol"],
        "splits": len(r["folds"]),
        "preset": t.get("preset"),
        "optimizer": None if is_classic else t.get("optimizer"),
        "lr": None if is_classic else t.get("lr"),
        "epochs": None if is_classic else t.get("epochs"),
        "epochs_run": float(np.mean(epochs_run)) if epochs_run else None,
        "precision": r.get("precision"),
        "accuracy": float(r["accuracy"]),
        "accuracy_std": float(r["accuracy_std"]),
        "macro_f1": float(r["macro_f1"]),
        "weighted_f1": float(r["weighted_f1"]),
        "wall_time_s": r.get("wall_time_s"),
        "train_examples_per_s": r.get("train_examples_per_s"),
        "device": r.get("device"),
        "path": str(run.path),
    }


# --- the comparison ------------------------------------------------------------------

def compare_runs(runs, skipped=(), hard_threshold=0.5, top=10):
    """Groups, ranks and summarises runs (no files written).

    Args:
        runs: list of Run.
        skipped: (path, reason) pairs to list in the report.
        hard_threshold: float. A class is hard for a run below this accuracy.
        top: int. How many hard classes and confused pairs to list.
    """
    import pandas as pd

    if not runs:
        raise Esc50Error("no finished runs to compare")
    if not 0 < hard_threshold <= 1:
        raise Esc50Error(f"hard threshold must be in (0, 1], got {hard_threshold!r}")
    keys = [comparability_key(r.report) for r in runs]
    order = []  # group keys, in order of first appearance
    for k in keys:
        if k not in order:
            order.append(k)
    sizes = {k: keys.count(k) for k in order}
    main = max(order, key=lambda k: sizes[k])  # first of the largest on ties
    order.remove(main)
    order.insert(0, main)
    rows = []
    for run, key in zip(runs, keys):
        row = run_row(run)
        row["group"] = order.index(key) + 1
        row["comparable"] = key == main
        row["flag"] = "" if key == main else "not comparable: " + _differences(key, main)
        row["_key"] = key
        rows.append(row)
    ranked = sorted((r for r in rows if r["comparable"]),
                    key=lambda r: (-r["accuracy"], -r["macro_f1"], r["run"]))
    others = sorted((r for r in rows if not r["comparable"]),
                    key=lambda r: (r["group"], -r["accuracy"], r["run"]))
    best_seen = set()
    for i, row in enumerate(ranked, 1):
        row["rank"] = i
        row["best_of_model"] = row["model"] not in best_seen
        best_seen.add(row["model"])
    for row in others:
        row["rank"] = None
        row["best_of_model"] = False
    rows = ranked + others
    groups = [{"key": k, "runs": [r["run"] for r in rows if r["_key"] == k], **_describe_key(k)}
              for k in order]

    # Per-class accuracy and confusions over every run with the ranked group's class list.
    classes = list(main[2])
    by_label = {r.label: r for r in runs}
    same_classes = [r["run"] for r in rows if tuple(r["_key"][2]) == main[2]]
    per_class = pd.DataFrame(
        {label: [_nan(by_label[label].report["per_class_accuracy"].get(c)) for c in classes]
         for label in same_classes},
        index=pd.Index(classes, name="class"),
    )
    for row in rows:
        del row["_key"]
    hard, hard_all = hard_classes(per_class, hard_threshold, top)
    cm = np.sum([np.asarray(by_label[label].report["confusion_matrix"]) for label in same_classes],
                axis=0)
    return Comparison(rows=rows, groups=groups, per_class=per_class, hard_classes=hard,
                      hard_for_all=hard_all, confused_pairs=confused_pairs(cm, classes, top),
                      skipped=list(skipped), hard_threshold=hard_threshold)


def _nan(value):
    return float("nan") if value is None else float(value)


# --- writing --------------------------------------------------------------------------

def compare(paths, out, hard_threshold=0.5, top=10, log=None):
    """Finds the runs under `paths`, compares them and writes OUTPUT_FILES into `out`.

    Only the files named in OUTPUT_FILES are (re)written; nothing else in `out`
    is touched. Returns the Comparison.
    """
    log = log or (lambda _msg: None)
    runs, skipped = find_runs(paths, log)
    result = compare_runs(runs, skipped, hard_threshold, top)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_text(out / "comparison.md", comparison_markdown(result))
    _write_csv(out / "comparison.csv", result.rows)
    with atomic_path(out / "per_class.csv") as tmp:
        result.per_class.to_csv(tmp, float_format="%.4f")
    plot_run_accuracy(result.rows, out / "comparison.png", result.groups[0], _families())
    plot_per_class_of_runs(result.per_class, out / "per_class.png")
    result.files = [out / name for name in OUTPUT_FILES]
    for row in result.rows:
        if row["flag"]:
            log(f"warning: {row['run']}: {row['flag']}")
    return result


def _write_text(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _write_csv(path, rows):
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_COLUMNS})


def _pct(x):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _duration(seconds):
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _front_end(row):
    sizes = f"fft {row['n_fft']}, hop {row['hop_length']}"
    if row["classic_features"] is not None:
        what = ("Mel image" if row["classic_features"] == "image" else "Mel+MFCC band stats")
        return f"{what}, mel {row['n_mels']}, {sizes}"
    # n_mels / n_mfcc are set for the kinds that read them (run_row, from the registry).
    if row["n_mfcc"] is not None:
        return f"{row['features']} {row['n_mfcc']} (mel {row['n_mels']}), {sizes}"
    if row["n_mels"] is not None:
        return f"{row['features']} {row['n_mels']}, {sizes}"
    return f"{row['features']}, {sizes}"


def _input(row):
    if row["samples"] and row["sample_rate"]:
        return f"{row['samples']} @ {row['sample_rate']} Hz -> {row['input']}"
    return row["input"]


def _accuracy(row):
    if row["splits"] > 1:
        return f"{_pct(row['accuracy'])} ± {100 * row['accuracy_std']:.1f}"
    return _pct(row["accuracy"])


def _epochs(row):
    if row["epochs"] is None:
        return "-"
    ran = f"{row['epochs_run']:.0f}" if row["epochs_run"] is not None else "?"
    return f"{ran}/{row['epochs']}"


def _table(rows, ranked):
    head = ["rank" if ranked else "group", "run", "model", "family", "front end",
            "input (samples @ rate -> model input)", "protocol", "preset", "optimizer", "lr",
            "epochs (ran/max)", "precision", "accuracy (± std over folds)", "macro F1",
            "weighted F1", "wall time", "train ex/s", "device",
            "best of model" if ranked else "flag"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [
            str(r["rank"] if ranked else r["group"]),
            f"**{r['run']}**" if r["best_of_model"] else r["run"],
            r["model"], r["family"], _front_end(r), _input(r),
            f"{r['protocol']} ({r['splits']} split{'s' if r['splits'] != 1 else ''})",
            r["preset"] or "-", r["optimizer"] or "-",
            f"{r['lr']:g}" if r["lr"] is not None else "-", _epochs(r), r["precision"] or "-",
            _accuracy(r), f"{r['macro_f1']:.3f}", f"{r['weighted_f1']:.3f}",
            _duration(r["wall_time_s"]),
            f"{r['train_examples_per_s']:.1f}" if r["train_examples_per_s"] else "-",
            r["device"] or "-",
            ("best" if r["best_of_model"] else "") if ranked else r["flag"],
        ]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return lines


def comparison_markdown(result):
    """The text of comparison.md."""
    rows = result.rows
    ranked = [r for r in rows if r["comparable"]]
    others = [r for r in rows if not r["comparable"]]
    main = result.groups[0]
    best = ranked[0]
    lines = [
        f"# Comparison of {len(rows)} run{'s' if len(rows) != 1 else ''}",
        "",
        f"Ranked by accuracy: {len(ranked)} run(s) measured the same way: {main['protocol']}, "
        f"dataset {main['dataset']}, {main['classes']}. Best: **{best['run']}** "
        f"({_accuracy(best)}, macro F1 {best['macro_f1']:.3f}). The best run of each model is "
        "in bold. Accuracy is the mean over the protocol's test splits, ± their standard "
        "deviation when there is more than one.",
        "",
    ]
    if others:
        lines += [
            "## Warning: runs that are not comparable",
            "",
            f"{len(others)} run(s) were measured another way (protocol, dataset or class list) "
            "and are not ranked with the others; they are listed apart below:",
            "",
        ]
        lines += [f"- {r['run']}: {r['flag'][len('not comparable: '):]}" for r in others]
        lines.append("")
    if result.skipped:
        lines += ["## Skipped runs", ""]
        lines += [f"- {p}: {reason}" for p, reason in result.skipped]
        lines.append("")
    lines += ["## Ranking", ""] + _table(ranked, True) + [""]
    if others:
        lines += ["## Not comparable (not ranked)", ""] + _table(others, False) + [""]
    n_runs = result.per_class.shape[1]
    t = f"{100 * result.hard_threshold:.0f}%"
    lines += [
        "## Hard classes",
        "",
        f"Per-class accuracy over the {n_runs} run(s) sharing the ranked runs' class list "
        "(per_class.csv, per_class.png).",
        "",
        f"Below {t} in every run: "
        + (", ".join(result.hard_for_all) if result.hard_for_all else "none") + ".",
        "",
        f"| class | mean accuracy | min | max | runs below {t} |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {h['class']} | {_pct(h['mean'])} | {_pct(h['min'])} | {_pct(h['max'])} | "
              f"{h['below']} of {h['runs']} |" for h in result.hard_classes]
    lines += [
        "",
        "## Most confused class pairs",
        "",
        f"Confusion matrices of the same {n_runs} run(s) summed; both directions counted.",
        "",
        "| class pair | confusions | a -> b | b -> a |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {p['a']} / {p['b']} | {p['count']} | {p['a_to_b']} | {p['b_to_a']} |"
              for p in result.confused_pairs]
    if not result.confused_pairs:
        lines.append("| none | 0 | 0 | 0 |")
    return "\n".join(lines) + "\n"
