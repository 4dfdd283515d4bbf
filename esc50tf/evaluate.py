"""`esc50tf evaluate`: a run's report recomputed from its saved models.

Each split's saved model predicts that split's test side again and the
metrics, `report.json`, `report.md` and plots are rewritten (`esc50tf.report`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from esc50tf.io import write_json, write_npz
from esc50tf.report import aggregate, fold_metrics, write_report


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

    from esc50tf.data import splits as split_lib
    from esc50tf.data.dataset import DatasetOptions, TFRecordFolder, locate_tfrecords
    from esc50tf.errors import Esc50Error
    from esc50tf.models import classic
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
    found = locate_tfrecords(cfg.train.data, None if data is None else str(data), identity)
    if found is None and data is None:
        raise Esc50Error(f"{run_dir}: the run's TFRecord folder {cfg.train.data} holds no "
                         "manifest.json (moved or deleted?); pass --data DIR")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, data=found or str(data)))
    folder = TFRecordFolder(cfg.train.data)
    class_names = folder.class_names
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
        ds = folder.dataset(split.test, DatasetOptions(batch_size=64, with_metadata=True))
        saved = classic.saved_model(split_dir)
        if (split_dir / "model.keras").is_file():
            from esc50tf.models.build import predict_dataset
            from esc50tf.predict import load_predictor

            model = load_predictor(split_dir / "model.keras",
                                   sample_rate=cfg.features.sample_rate).models[0]
            y_true, y_prob, names = predict_dataset(model, ds)
        elif saved:
            estimator = classic.load_estimator(saved)
            x, y_true, names = classic.extract(ds, classic.make_featurizer(cfg.features, cfg.model))
            y_prob = classic.predict_proba(estimator, x, len(class_names))
            if saved.name == classic.LEGACY_MODEL_FILE:
                classic.save_estimator(estimator, split_dir / classic.MODEL_FILE)
                log(f"{split.name}: re-saved {saved} as {classic.MODEL_FILE}")
        else:
            raise Esc50Error(f"{split_dir}: no saved model (model.keras, {classic.MODEL_FILE} "
                             f"or {classic.LEGACY_MODEL_FILE})")
        write_npz(split_dir / "predictions.npz", y_true=y_true, y_prob=y_prob,
                  filenames=np.array(names))
        result = {**previous, **fold_metrics(y_true, y_prob, class_names), "split": split.name}
        write_json(old, result)
        results.append(result)
        log(f"{split.name}: accuracy {100 * result['accuracy']:.1f}%")
    previous_report = {}
    if (run_dir / "report.json").is_file():
        previous_report = json.loads((run_dir / "report.json").read_text())
    keep = {k: previous_report[k] for k in ("protocol", "device", "precision", "strategy",
                                             "replicas", "dataset") if k in previous_report}
    wall = previous_report.get("wall_time_s", time.perf_counter() - started)
    report = aggregate(results, class_names, config, wall, keep)
    write_report(run_dir, report)
    return report
