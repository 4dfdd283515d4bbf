"""A run's report: metrics, `report.md` and plots (scikit-learn metrics, matplotlib).

A run folder holds one sub-folder per split (`fold1`, ..., or `ratio0.9`), each
with `predictions.npz` (y_true, y_prob, filenames), `result.json` and
`history.csv`. `fold_metrics` scores one split, `aggregate` makes the run's
report of all of them, and `write_report` writes `report.json`, `report.md`,
`confusion_matrix.png`, `curves.png` (runs that train in epochs) and
`per_class_accuracy.png`.

Used by `esc50tf.train` (at the end of a run), `esc50tf.evaluate` (recomputing
a report from saved models); its plots go through `esc50tf.plotting`. Keras-free:
reading and writing reports never imports TensorFlow.

Example:

>>> m = fold_metrics([0, 1, 1], [[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]], ["dog", "rain"])
>>> round(m["accuracy"], 3), m["confusion_matrix"]
(0.667, [[1, 0], [1, 1]])
>>> most_confused(m["confusion_matrix"], ["dog", "rain"])
[{'true': 'rain', 'predicted': 'dog', 'count': 1}]
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from esc50tf.io import atomic_path, dumps_json
from esc50tf.plotting import figure
from esc50tf.presets import recipe_label

REPORT_FILES = ("report.json", "report.md", "confusion_matrix.png", "curves.png",
                "per_class_accuracy.png")


def fold_metrics(y_true, y_prob, class_names):
    """Accuracy, macro/weighted F1, per-class accuracy and confusion matrix.

    Args:
        y_true: int array `[n]` of labels.
        y_prob: float array `[n, classes]` of scores.
        class_names: list of str, in label order.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    labels = np.arange(len(class_names))
    y_pred = np.asarray(y_prob).argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    support = cm.sum(axis=1)
    per_class = {
        name: (float(cm[i, i] / support[i]) if support[i] else None)
        for i, name in enumerate(class_names)
    }
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted",
                                      zero_division=0)),
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
        "num_test_clips": int(len(y_true)),
    }


def most_confused(cm, class_names, top=10):
    """The most frequent confusions, one direction each: `[{true, predicted, count}]`.

    Off-diagonal cells of the confusion matrix `cm` (rows true, columns
    predicted), largest first; `a -> b` and `b -> a` are separate entries.
    """
    cm = np.asarray(cm)
    pairs = [(int(cm[i, j]), class_names[i], class_names[j])
             for i in range(len(cm)) for j in range(len(cm)) if i != j and cm[i, j] > 0]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    return [{"true": t, "predicted": p, "count": c} for c, t, p in pairs[:top]]


def aggregate(fold_results, class_names, config, wall_time_s, extra=None):
    """The run's report: fold metrics and their mean / std over folds."""
    accs = np.array([f["accuracy"] for f in fold_results])
    cm = np.sum([np.asarray(f["confusion_matrix"]) for f in fold_results], axis=0)
    support = cm.sum(axis=1)
    per_class = {n: (float(cm[i, i] / support[i]) if support[i] else None)
                 for i, n in enumerate(class_names)}
    examples_per_s = [f.get("train_examples_per_s") for f in fold_results
                      if f.get("train_examples_per_s")]
    report = {
        "model": config["model"]["name"],
        "accuracy": float(accs.mean()),
        "accuracy_std": float(accs.std()),
        "macro_f1": float(np.mean([f["macro_f1"] for f in fold_results])),
        "macro_f1_std": float(np.std([f["macro_f1"] for f in fold_results])),
        "weighted_f1": float(np.mean([f["weighted_f1"] for f in fold_results])),
        "weighted_f1_std": float(np.std([f["weighted_f1"] for f in fold_results])),
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
        "classes": list(class_names),
        "most_confused": most_confused(cm, class_names),
        "folds": fold_results,
        "wall_time_s": float(wall_time_s),
        "train_examples_per_s": float(np.mean(examples_per_s)) if examples_per_s else None,
        "config": config,
        "recipe": recipe_label(config.get("train", {})),
    }
    report.update(extra or {})
    return report


def _fmt(x, pct=True):
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if pct else f"{x:.3f}"


def _headline(report):
    if len(report["folds"]) == 1:
        return f"{report['model']}: {_fmt(report['accuracy'])} ({report['folds'][0]['split']})"
    return (f"{report['model']}: {_fmt(report['accuracy'])} +- {_fmt(report['accuracy_std'])} "
            f"over {len(report['folds'])} splits")


def report_markdown(report):
    """The text of `report.md`: headline, recipe, one row per split, confusions, per class."""
    recipe = report.get("recipe") or recipe_label(report.get("config", {}).get("train", {}))
    lines = [
        f"# {_headline(report)}",
        "",
        f"- protocol: {report.get('protocol', '?')}; {len(report['folds'])} split(s); "
        f"{sum(f['num_test_clips'] for f in report['folds'])} test clips in all",
        f"- macro F1 {_fmt(report['macro_f1'], False)} +- {_fmt(report['macro_f1_std'], False)}, "
        f"weighted F1 {_fmt(report['weighted_f1'], False)} +- {_fmt(report['weighted_f1_std'], False)}",
        f"- wall time {report['wall_time_s']:.1f} s"
        + (f"; training {report['train_examples_per_s']:.1f} examples/s"
           if report.get("train_examples_per_s") else ""),
        f"- device: {report.get('device', '?')}; precision: {report.get('precision', '?')}",
        f"- recipe: {recipe}",
        *_recipe_lines(report),
        "",
        "| split | accuracy | macro F1 | weighted F1 | epochs | train s | examples/s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in report["folds"]:
        lines.append(
            f"| {f['split']} | {_fmt(f['accuracy'])} | {_fmt(f['macro_f1'], False)} | "
            f"{_fmt(f['weighted_f1'], False)} | {f.get('epochs_run') or '-'} | "
            f"{f.get('train_seconds', 0):.1f} | {f.get('train_examples_per_s') or 0:.1f} |"
        )
    lines += ["", "## Most confused pairs (true -> predicted, count over all test folds)", ""]
    lines += [f"- {p['true']} -> {p['predicted']}: {p['count']}" for p in report["most_confused"]]
    if not report["most_confused"]:
        lines.append("- none")
    counts = _train_class_counts(report["folds"])
    lines += ["", "## Per-class accuracy", ""]
    lines += (["| class | accuracy | training clips |", "| --- | --- | --- |"] if counts else
              ["| class | accuracy |", "| --- | --- |"])
    ranked = sorted(report["per_class_accuracy"].items(),
                    key=lambda kv: (kv[1] is None, kv[1] if kv[1] is not None else 0))
    lines += [f"| {name} | {_fmt(acc)} |" + (f" {counts.get(name, 0):g} |" if counts else "")
              for name, acc in ranked]
    return "\n".join(lines) + "\n"


def _train_class_counts(folds):
    """Training clips per class (mean over splits), or {} for runs from before they were kept."""
    per_fold = [f["train_class_counts"] for f in folds if f.get("train_class_counts")]
    if not per_fold:
        return {}
    names = per_fold[0]
    return {n: round(float(np.mean([c.get(n, 0) for c in per_fold])), 1) for n in names}


def _recipe_lines(report):
    """What the reported model is and how it was trained and evaluated (Keras runs)."""
    t = report.get("config", {}).get("train", {})
    folds = report["folds"]
    if not any("reported_model" in f for f in folds):
        return []
    schedule = t.get("schedule", "plateau")
    if t.get("warmup_epochs"):
        schedule += f" after {t['warmup_epochs']:g} warmup epochs"
    extras = []
    if t.get("label_smoothing"):
        extras.append(f"label smoothing {t['label_smoothing']:g}")
    if t.get("balance", "none") != "none":
        extras.append(f"balance {t['balance']}")
    counts = _train_class_counts(folds)
    if counts:
        extras.append(f"training clips per class {min(counts.values()):g}-{max(counts.values()):g}")
    lines = [f"- learning rate: {schedule}" + ("; " + ", ".join(extras) if extras else "")]
    for f in folds:
        crops = f.get("test_crops", 1)
        lines.append(f"- {f['split']}: reported model {f.get('reported_model', '?')}; evaluated "
                     f"on {crops} crop{'s' if crops != 1 else ''} per clip; "
                     f"{f.get('validation', {}).get('note', 'no validation note')}")
    return lines


def plot_confusion(cm, class_names, path, title):
    """The confusion matrix, each row as a share of its true class (counts written in when small)."""
    cm = np.asarray(cm, dtype=float)
    n = len(class_names)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    size = max(6.0, 0.28 * n + 3)
    with figure(path, (size, size)) as (fig, ax):
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(n), class_names, rotation=90, fontsize=7 if n > 20 else 9)
        ax.set_yticks(range(n), class_names, fontsize=7 if n > 20 else 9)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    if cm[i, j]:
                        ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8,
                                color="white" if norm[i, j] > 0.5 else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class")


def plot_curves(histories, path, title):
    """Loss and accuracy per epoch, train and validation, one line per split."""
    with figure(path, (12, 4.5), nrows=1, ncols=2) as (fig, axes):
        for name, hist in histories.items():
            if not hist:
                continue
            epochs = np.arange(1, len(hist["loss"]) + 1)
            for ax, key in zip(axes, ("loss", "accuracy")):
                line, = ax.plot(epochs, hist[key], label=f"{name} train")
                if f"val_{key}" in hist:
                    ax.plot(epochs, hist[f"val_{key}"], "--", color=line.get_color(),
                            label=f"{name} val")
        for ax, key in zip(axes, ("loss", "accuracy")):
            ax.set_xlabel("epoch")
            ax.set_ylabel(key)
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=7, ncol=2)
        fig.suptitle(title)


def plot_per_class(per_class, path, title):
    """Horizontal bars, worst class at the bottom; a class with no test clips is shown
    as an empty hatched bar marked "no test clips" (not as 0%), at the top."""
    items = sorted(((v if v is not None else 2.0), k) for k, v in per_class.items())
    n = len(items)
    with figure(path, (8, max(3.0, 0.22 * n + 1))) as (fig, ax):
        tested = [i for i, (v, _) in enumerate(items) if v <= 1.0]
        untested = [i for i, (v, _) in enumerate(items) if v > 1.0]
        ax.barh(tested, [items[i][0] for i in tested], color="tab:blue")
        if untested:
            ax.barh(untested, [1.0] * len(untested), color="none", edgecolor="0.6", hatch="//")
            for i in untested:
                ax.text(0.5, i, "no test clips", ha="center", va="center", fontsize=7, color="0.3")
        ax.set_yticks(range(n), [k for _, k in items], fontsize=7 if n > 20 else 9)
        ax.set_xlim(0, 1)
        ax.set_xlabel("accuracy (recall) over all test folds")
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.3)


def read_history(path):
    """A split's `history.csv` as {metric: [value per epoch]}; {} when there is none."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        return {}
    df = pd.read_csv(path)
    return {c: df[c].tolist() for c in df.columns if c != "epoch"}


def write_report(run_dir, report):
    """Writes report.json / report.md and the three plots into `run_dir`."""
    run_dir = Path(run_dir)
    for name, text in (("report.json", dumps_json(report) + "\n"),
                       ("report.md", report_markdown(report))):
        with atomic_path(run_dir / name) as tmp:
            tmp.write_text(text)
    title = _headline(report)
    plot_confusion(report["confusion_matrix"], report["classes"], run_dir / "confusion_matrix.png",
                   f"{title}: confusion over all test folds")
    histories = {f["split"]: read_history(run_dir / f["split"] / "history.csv") for f in report["folds"]}
    if any(histories.values()):  # scikit-learn runs have no epochs to draw
        plot_curves(histories, run_dir / "curves.png", title)
    plot_per_class(report["per_class_accuracy"], run_dir / "per_class_accuracy.png", title)


# --- comparing runs (esc50tf.compare) ----------------------------------------------

def hard_classes(per_class, threshold, top):
    """The `top` classes of a classes x runs accuracy table by mean accuracy, lowest first,
    and the classes below `threshold` in every run that tested them."""
    values = per_class.to_numpy(dtype=float)
    with warnings.catch_warnings():  # a class no run tested is all-NaN; expected
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=1)
        low = np.nanmin(values, axis=1)
        high = np.nanmax(values, axis=1)
    below = np.sum(values < threshold, axis=1)
    measured = np.sum(~np.isnan(values), axis=1)
    table = []
    for i, name in enumerate(per_class.index):
        if measured[i] == 0:
            continue
        table.append({"class": name, "mean": float(mean[i]), "min": float(low[i]),
                      "max": float(high[i]), "below": int(below[i]), "runs": int(measured[i])})
    table.sort(key=lambda d: (d["mean"], d["class"]))
    hard_all = [d["class"] for d in table if d["below"] == d["runs"]]
    return table[:top], hard_all


def confused_pairs(cm, class_names, top=10):
    """Unordered class pairs by confusions either way: [{a, b, count, a_to_b, b_to_a}].

    `count` is `cm[a, b] + cm[b, a]`: how often the two classes were taken for
    each other, whatever the direction (a run's report lists each direction
    apart: `most_confused`).
    """
    cm = np.asarray(cm)
    pairs = []
    for i in range(len(cm)):
        for j in range(i + 1, len(cm)):
            n = int(cm[i, j] + cm[j, i])
            if n:
                pairs.append({"a": class_names[i], "b": class_names[j], "count": n,
                              "a_to_b": int(cm[i, j]), "b_to_a": int(cm[j, i])})
    pairs.sort(key=lambda p: (-p["count"], p["a"], p["b"]))
    return pairs[:top]


def plot_run_accuracy(rows, path, main_group, families):
    """Horizontal bars of accuracy ± std over folds, grouped and coloured by family.

    Args:
        rows: list of dicts (`esc50tf.compare.run_row`).
        path: the image file.
        main_group: dict. The ranked group's description (protocol, classes).
        families: list of (family, label, colour), in display order (the registry's).
    """
    from matplotlib.patches import Patch

    shown = {name: (label, colour) for name, label, colour in families}
    families = list(shown)
    ordered = sorted(rows, key=lambda r: (families.index(r["family"]), not r["comparable"],
                                          -r["accuracy"], r["run"]))
    ys, y, prev = [], 0.0, None
    for r in ordered:
        if prev is not None and r["family"] != prev:
            y += 0.6  # a gap between families
        ys.append(y)
        y += 1.0
        prev = r["family"]
    with figure(path, (10, max(3.0, 0.42 * y + 1.8))) as (fig, ax):
        for r, yy in zip(ordered, ys):
            err = r["accuracy_std"] if r["splits"] > 1 else None
            ax.barh(yy, 100 * r["accuracy"], xerr=None if err is None else 100 * err,
                    color=shown[r["family"]][1], alpha=1.0 if r["comparable"] else 0.45,
                    hatch=None if r["comparable"] else "//", edgecolor="black", linewidth=0.5,
                    error_kw={"capsize": 3, "elinewidth": 1})
            text = f"{100 * r['accuracy']:.1f}%" + (f" ± {100 * err:.1f}" if err else "")
            ax.text(100 * (r["accuracy"] + (err or 0)) + 1.5, yy, text, va="center", fontsize=8)
        labels = [r["run"] + ("" if r["comparable"] else " (not comparable)") for r in ordered]
        ax.set_yticks(ys, labels, fontsize=8 if len(rows) > 20 else 9)
        ax.invert_yaxis()
        ax.set_xlim(0, 125)  # room for the value after a full bar and its error bar
        ax.set_xticks(range(0, 101, 10))
        ax.set_xlabel("test accuracy (%); error bars: std over folds")
        ax.grid(axis="x", alpha=0.3)
        present = [f for f in families if any(r["family"] == f for r in rows)]
        handles = [Patch(color=shown[f][1], label=shown[f][0]) for f in present]
        if any(not r["comparable"] for r in rows):
            handles.append(Patch(facecolor="white", edgecolor="black", hatch="//",
                                 label="not comparable"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
                  title="family", frameon=False)
        ax.set_title(f"Accuracy per run: {main_group['protocol']}, {main_group['classes']}",
                     fontsize=10)


def plot_per_class_of_runs(per_class, path):
    """Heat map of per-class accuracy: classes (hardest at the top) by runs (compare)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        order = np.argsort(np.nanmean(per_class.to_numpy(dtype=float), axis=1), kind="stable")
    data = per_class.iloc[order]
    n_classes, n_runs = data.shape
    with figure(path, (max(5.0, 0.55 * n_runs + 3.5),
                                    max(3.0, 0.24 * n_classes + 2.2))) as (fig, ax):
        values = np.ma.masked_invalid(data.to_numpy(dtype=float))
        im = ax.imshow(values, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(n_runs), data.columns, rotation=60, ha="right",
                      fontsize=7 if n_runs > 15 else 8)
        ax.set_yticks(range(n_classes), data.index, fontsize=7 if n_classes > 20 else 9)
        if n_classes * n_runs <= 300:
            for i in range(n_classes):
                for j in range(n_runs):
                    v = values[i, j]
                    if v is not np.ma.masked:
                        ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7,
                                color="black" if v > 0.6 else "white")
        ax.set_xlabel("run")
        ax.set_ylabel("class (hardest on top)")
        ax.set_title("Per-class accuracy (%) over each run's test splits", fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="accuracy")
