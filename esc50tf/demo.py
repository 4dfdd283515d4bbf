"""`esc50tf demo`: the main job end to end on built-in synthetic data.

synthesise an ESC-50-layout folder -> build TFRecords -> split without
leakage -> stream the tf.data pipeline back -> train the compact CNN on folds
2-5 (validation carved from them) -> evaluate on the held-out fold 1 and write
the full report (report.md, confusion matrix, curves, per-class accuracy).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from pathlib import Path

# The demo's data and recipe are presets (esc50tf.presets).
from esc50tf.presets import (DEMO_AUGMENT, DEMO_CLASSES, DEMO_CLIPS_PER_CLASS, DEMO_FEATURES,
                             DEMO_MODEL, DEMO_SAMPLE_RATE, DEMO_SECONDS, DEMO_TRAIN)


def _say(msg):
    print(msg, file=sys.stderr, flush=True)


def run_demo(out=None, seed=0):
    """Runs the demo in `out` (kept) or a temporary folder (deleted).

    Returns:
        A dict summary: counts, split sizes, pipeline throughput.
    """
    with contextlib.ExitStack() as stack:
        if out is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="esc50tf-demo-")))
        else:
            root = Path(out)
            root.mkdir(parents=True, exist_ok=True)
        return _run(root, seed, kept=out is not None)


def _run(root, seed, kept=True):
    from esc50tf.data import splits
    from esc50tf.data.dataset import DatasetOptions, TFRecordFolder
    from esc50tf.data.synth import SynthConfig, synthesize_tfrecords
    from esc50tf.data.tfrecords import BuildConfig

    data_dir, tfr_dir = root / "data", root / "tfrecords"
    t0 = time.perf_counter()
    _say(f"[1/4] synthesising {DEMO_CLASSES} classes x {DEMO_CLIPS_PER_CLASS} clips "
         f"({DEMO_SECONDS:g} s at {DEMO_SAMPLE_RATE} Hz) in {data_dir}, "
         f"then building TFRecords in {tfr_dir}")
    synthesize_tfrecords(
        data_dir, tfr_dir,
        SynthConfig(num_classes=DEMO_CLASSES, clips_per_class=DEMO_CLIPS_PER_CLASS,
                    sample_rate=DEMO_SAMPLE_RATE, clip_seconds=DEMO_SECONDS, seed=seed),
        BuildConfig(sample_rate=DEMO_SAMPLE_RATE, clip_seconds=DEMO_SECONDS, shards_per_fold=2),
        reuse=True)
    _say(f"[2/4] opening {tfr_dir} (manifest, index, shards checked once)")
    folder = TFRecordFolder(tfr_dir)
    manifest, index = folder.manifest, folder.index
    split = splits.test_fold_split(index, test_fold=manifest["folds"][0], seed=seed)
    sizes = splits.check_disjoint(split, index)
    _say(f"[3/4] streaming split {split.name} through tf.data: "
         + ", ".join(f"{k} {v} clips" for k, v in sizes.items()) + " (no src_file shared)")
    summary = {"clips": manifest["counts"]["total"], "split": split.name, "sizes": sizes}
    for side, selection, training in (("train", split.train, True), ("test", split.test, False)):
        ds = folder.dataset(selection, DatasetOptions(training=training, batch_size=32, seed=seed))
        for epoch in ("cold", "cached"):
            start, n = time.perf_counter(), 0
            for x, y in ds:
                n += int(x.shape[0])
            rate = n / (time.perf_counter() - start)
            summary[f"{side}_{epoch}_clips_per_s"] = round(rate, 1)
        _say(f"  {side}: {n} clips/epoch in batches of {tuple(x.shape)} {x.dtype.name}, "
             f"{summary[f'{side}_cold_clips_per_s']:.0f} clips/s cold, "
             f"{summary[f'{side}_cached_clips_per_s']:.0f} clips/s cached")
    from esc50tf.run_config import resolve_config
    from esc50tf.train import train

    run_dir = root / "run"
    _say(f"[4/4] training {DEMO_MODEL} on folds 2-5, testing on fold 1, into {run_dir}")
    cfg = resolve_config(DEMO_MODEL, overrides={
        "train": {**DEMO_TRAIN, "data": str(tfr_dir), "out": str(run_dir), "seed": seed},
        "features": DEMO_FEATURES, "augment": DEMO_AUGMENT})
    report = train(cfg, verbose=2)
    summary.update(accuracy=report["accuracy"], macro_f1=report["macro_f1"],
                   report=str(run_dir / "report.md"))
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    _say(f"demo finished in {summary['seconds']} s: {DEMO_MODEL} reached "
         f"{100 * report['accuracy']:.1f}% accuracy (macro F1 {report['macro_f1']:.3f}) on the "
         "held-out fold; " + (f"report in {run_dir}/report.md" if kept else
                              "the report was in a temporary folder, now deleted "
                              "(pass --out DIR to keep it)"))
    return summary
