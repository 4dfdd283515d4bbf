"""`esc50tf evaluate`: a run's report recomputed from its saved models.

Each split's saved model predicts that split's test side again and the
metrics, `report.json`, `report.md` and plots are rewritten (`esc50tf.report`).
On other data (`--data` naming another TFRecord folder) the run's own results
are never touched: the class lists must match by name, and the new results go
to `RUN/evaluations/<data folder name>/`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from esc50tf.io import write_json, write_npz
from esc50tf.lock import holds_lock
from esc50tf.models.build import check_finite_outputs
from esc50tf.report import aggregate, fold_metrics, write_report


def _other_data(run_dir, own, data):
    """True when `data` names another TFRecord folder than the run's own `own`."""
    import os

    from esc50tf.data import tfrecords as tfr

    if not data:
        return False
    if tfr.is_remote(data) or tfr.is_remote(own or ""):
        return str(data).rstrip("/") != str(own or "").rstrip("/")
    return os.path.realpath(data) != os.path.realpath(own or "")


def _check_classes(run_dir, folder):
    """Refuses data whose class list differs from the run's (`classes.json`), naming both."""
    from esc50tf.errors import Esc50Error
    from esc50tf.io import read_json

    path = Path(run_dir) / "classes.json"
    if not path.is_file():
        return
    ours = [c["category"] for c in read_json(path)]
    theirs = folder.class_names
    if ours != theirs:
        missing = [c for c in ours if c not in theirs]
        extra = [c for c in theirs if c not in ours]
        detail = "; ".join(filter(None, [
            f"not in the data: {', '.join(missing[:5])}" if missing else "",
            f"not in the run: {', '.join(extra[:5])}" if extra else "",
            "" if missing or extra else "the same names in another label order"]))
        raise Esc50Error(
            f"{folder.path}: its {len(theirs)} classes are not the {len(ours)} classes "
            f"{run_dir} was trained on ({detail}); its models cannot be scored on it")


@holds_lock("evaluate", lambda run_dir, *a, **k: run_dir)
def evaluate_run(run_dir, data=None, log=None):
    """Recomputes a run's report from its saved models (`esc50tf evaluate`).

    Each split's model (`model.keras`, or `model.skops` for scikit-learn runs)
    predicts that split's test side again, from `data` (default: the run's own
    TFRecord folder); the metrics and report files are rewritten. Training
    timings are kept from the original run. A scikit-learn split that only has
    the `model.pkl` of an older esc50tf (loaded through an allow-list) gets it
    re-saved as `model.skops` beside it.
    """
    import dataclasses
    import time

    from esc50tf import tasks
    from esc50tf.data import splits as split_lib
    from esc50tf.data.dataset import TFRecordFolder, locate_tfrecords
    from esc50tf.errors import Esc50Error
    from esc50tf.run_config import RunConfig

    log = log or (lambda _msg: None)
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise Esc50Error(f"{run_dir}: no config.json; is it an esc50tf run folder?")
    config = json.loads(cfg_path.read_text())
    cfg = RunConfig.from_dict(config)
    report_path = run_dir / "report.json"
    identity = None
    if report_path.is_file():
        identity = (json.loads(report_path.read_text()).get("dataset") or {}).get("identity")
    other = False
    if data is None:
        if locate_tfrecords(cfg.train.data) is None:
            raise Esc50Error(f"{run_dir}: the run's TFRecord folder {cfg.train.data} holds no "
                             "manifest.json (moved or deleted?); pass --data DIR")
    else:
        moved = None
        if identity is not None and locate_tfrecords(cfg.train.data) is None:
            try:  # the run's own TFRecords, moved: found under `data` by their identity
                moved = locate_tfrecords(cfg.train.data, str(data), identity)
            except Esc50Error:
                moved = None  # TFRecords of another identity: evaluated as other data
        if moved is None:
            other = _other_data(run_dir, cfg.train.data, data)
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train,
                                                                 data=moved or str(data)))
    task = tasks.get_task(cfg.model.name)  # finds, loads and runs the split models
    folder = TFRecordFolder(cfg.train.data)
    _check_classes(run_dir, folder)
    if "://" not in str(cfg.train.data):
        folder.check_hashes()
    class_names = folder.class_names
    # Other data: the run's own results stay as they are; these go beside them.
    out_dir = run_dir / "evaluations" / Path(str(data).rstrip("/")).name if other else run_dir
    index = folder.index
    started = time.perf_counter()
    results = []
    for split in split_lib.protocol_splits(cfg.train, index):
        split_dir = run_dir / split.name
        old = split_dir / "result.json"
        if not old.is_file():
            raise Esc50Error(f"{split_dir}: split not finished (no result.json); "
                             "finish it with `esc50tf train --config` first")
        previous = json.loads(old.read_text())
        saved = task.saved_model(split_dir)
        if saved is None:
            raise Esc50Error(f"{split_dir}: no saved model ({tasks.model_files()})")
        model = task.load(saved, resave=True, log=log)  # e.g. an older model.pkl as model.skops
        inputs = task.test_inputs(cfg, split.test, folder, batch_size=64, run_dir=run_dir)
        y_true, y_prob, names = task.predict(model, inputs, num_classes=len(class_names),
                                             verbose=1)
        check_finite_outputs(y_prob, f"{split_dir}: its model")
        (out_dir / split.name).mkdir(parents=True, exist_ok=True)
        write_npz(out_dir / split.name / "predictions.npz", y_true=y_true, y_prob=y_prob,
                  filenames=np.array(names))
        result = {**previous, **fold_metrics(y_true, y_prob, class_names), "split": split.name}
        write_json(out_dir / split.name / "result.json", result)
        results.append(result)
        log(f"{split.name}: accuracy {100 * result['accuracy']:.1f}%")
    previous_report = {}
    if (run_dir / "report.json").is_file():
        previous_report = json.loads((run_dir / "report.json").read_text())
    keep = {k: previous_report[k] for k in ("protocol", "device", "precision", "strategy",
                                             "replicas", "dataset") if k in previous_report}
    if other:
        keep["dataset"] = {"path": str(data), "identity": folder.identity,
                           "clips": folder.manifest["counts"]["total"],
                           "sample_rate": folder.sample_rate, "num_samples": folder.num_samples}
    elif "dataset" in keep and keep["dataset"].get("path") != cfg.train.data:
        keep["dataset"] = {**keep["dataset"], "path": cfg.train.data}  # moved: where it is now
        log(f"the run's TFRecords were found at {cfg.train.data} (recorded: "
            f"{previous_report['dataset'].get('path')})")
    wall = previous_report.get("wall_time_s", time.perf_counter() - started)
    report = aggregate(results, class_names, config, wall, keep)
    write_report(out_dir, report)
    if other:
        log(f"results on {data} written to {out_dir} (the run's own report is unchanged)")
    return {**report, "report_dir": str(out_dir)}
