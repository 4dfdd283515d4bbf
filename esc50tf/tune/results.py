"""A search's results: trials.csv, trials.md and objective.png, from the KerasTuner oracle."""

from __future__ import annotations

import csv
from pathlib import Path

from esc50tf.errors import Esc50Error
from esc50tf.io import atomic_path, log, read_json, write_text
from esc50tf.plotting import figure
from esc50tf.tune.space import PARAMS, describe_space, round_value

PROJECT = "search"  # KerasTuner project folder inside OUT
BEST_RUN = "best_run"
TRIAL_META = "esc50tf.json"

_STATUS = {"COMPLETED": "completed", "FAILED": "failed", "INVALID": "failed",
           "RUNNING": "interrupted", "IDLE": "interrupted"}


def trial_rows(oracle, objective, project_dir):
    """One dict per trial, best first (failed and interrupted trials last)."""
    rows = []
    for trial_id in sorted(oracle.trials, key=int):
        trial = oracle.trials[trial_id]
        try:
            meta = read_json(Path(project_dir) / f"trial_{trial_id}" / TRIAL_META, default={})
        except Esc50Error as err:  # one damaged record must not cost the whole search's table
            log(f"warning: {err}; trial {trial_id} is listed without its record")
            meta = {}
        status = "skipped" if meta.get("skipped") else _STATUS.get(trial.status,
                                                                    str(trial.status).lower())
        score = trial.score if status == "completed" else None
        rows.append({
            "trial": trial_id, "status": status, objective: score,
            "epochs": meta.get("epochs_run") if status == "completed" else None,
            "wall_seconds": meta.get("wall_seconds"),
            "values": {k: round_value(v) if isinstance(v, float) else v
                       for k, v in trial.hyperparameters.values.items()
                       if not k.startswith("tuner/")},
            "error": meta.get("skipped") or meta.get("error") or meta.get("memory") or (
                last_line(trial.message) if status == "failed" else None),
        })
    sign = -1 if objective == "val_accuracy" else 1
    rows.sort(key=lambda r: (r[objective] is None, sign * (r[objective] or 0), int(r["trial"])))
    return rows


def write_results(out, oracle, objective, models, space, test_fold, cv, fixed=None):
    """Writes trials.csv, trials.md and objective.png; returns the rows."""
    out = Path(out)
    rows = trial_rows(oracle, objective, out / PROJECT)
    names = [n for n in PARAMS if any(n in r["values"] for r in rows)]
    with atomic_path(out / "trials.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["rank", "trial", "status", objective, "epochs", "wall_seconds", *names,
                         "error"])
        for rank, r in enumerate(rows, 1):
            writer.writerow([rank, r["trial"], r["status"], _csv(r[objective]), _csv(r["epochs"]),
                             _csv(r["wall_seconds"]), *(_csv(r["values"].get(n)) for n in names),
                             r["error"] or ""])
    _write_markdown(out, rows, names, objective, models, space, test_fold, cv, fixed or {})
    _plot_objective(out / "objective.png", rows, objective)
    return rows


def _write_markdown(out, rows, names, objective, models, space, test_fold, cv, fixed):
    counts = {s: sum(r["status"] == s for r in rows)
              for s in ("completed", "skipped", "failed", "interrupted")}
    lines = [f"# Hyperparameter search: {', '.join(models)}", "",
             f"- objective: {objective} ({'max' if objective == 'val_accuracy' else 'min'}) on a "
             f"validation set carved by src_file from the training folds; "
             f"{held_out(test_fold)} was not read during the search",
             f"- trials: {len(rows)} ({', '.join(f'{v} {k}' for k, v in counts.items() if v)})"]
    done = [r for r in rows if r["status"] == "completed"]
    if done:
        lines.append(f"- best: trial {done[0]['trial']}, {objective} {done[0][objective]:.4f} "
                     "-> best_hyperparameters.json (`esc50tf train --config` repeats it)")
    if cv:
        lines.append(f"- evaluation: k-fold CV of the best settings; all folds but {test_fold} were "
                     f"also used to choose them, so only fold {test_fold}'s score is untouched by "
                     "the search")
    lines += ["", "| rank | trial | status | " + objective + " | epochs | wall s | "
              + " | ".join(names) + " | error |",
              "| " + " | ".join(["---"] * (7 + len(names))) + " |"]
    for rank, r in enumerate(rows, 1):
        wall = "" if r["wall_seconds"] is None else f"{r['wall_seconds']:.1f}"
        cells = [str(rank), r["trial"], r["status"], fmt(r[objective]), fmt(r["epochs"]), wall,
                 *(fmt(r["values"].get(n)) for n in names),
                 (r["error"] or "").replace("|", "\\|")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Search space", "", describe_space(space, models), ""]
    if fixed:
        lines += ["Fixed by flags: " + ", ".join(f"{k}={v}" for k, v in fixed.items()), ""]
    write_text(out / "trials.md", "\n".join(lines))


def append_test_result(out, report, cv, test_fold):
    where = "k-fold CV" if cv else held_out(test_fold)
    text = (f"\n## Best settings retrained\n\n{where}: accuracy {100 * report['accuracy']:.1f}%"
            + (f" +- {100 * report['accuracy_std']:.1f}" if cv else "")
            + f", macro F1 {report['macro_f1']:.3f} ({BEST_RUN}/report.md)\n")
    own = [f for f in report.get("folds", []) if f.get("split") == f"fold{test_fold}"]
    if cv and own:
        text += (f"\nfold {test_fold}, the one the search never read: accuracy "
                 f"{100 * own[0]['accuracy']:.1f}%, macro F1 {own[0]['macro_f1']:.3f}\n")
    with open(out / "trials.md", "a") as f:
        f.write(text)


def held_out(test_fold):
    return f"test fold {test_fold}" if test_fold is not None else "the ratio split's test side"


def _plot_objective(path, rows, objective):
    from matplotlib.ticker import MaxNLocator

    ordered = sorted(rows, key=lambda r: int(r["trial"]))
    with figure(path, (7, 4)) as (fig, ax):
        xs = [int(r["trial"]) for r in ordered if r[objective] is not None]
        ys = [r[objective] for r in ordered if r[objective] is not None]
        if xs:
            best, running = [], None
            better = max if objective == "val_accuracy" else min
            for y in ys:
                running = y if running is None else better(running, y)
                best.append(running)
            ax.plot(xs, ys, "o", label=f"trial {objective}")
            ax.step(xs, best, where="post", label="best so far")
        failed = [int(r["trial"]) for r in ordered if r["status"] != "completed"]
        if failed:
            for x in failed:
                ax.axvline(x, color="tab:red", alpha=0.3, linestyle=":")
            ax.plot([], [], color="tab:red", alpha=0.5, linestyle=":", label="failed / interrupted")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("trial")
        ax.set_ylabel(objective)
        ax.set_title(f"{objective} over trials")
        ax.legend(loc="best")


def last_line(message):
    lines = [ln.strip() for ln in (message or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else None


def fmt(value, digits=4):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _csv(value):
    return "" if value is None else value
