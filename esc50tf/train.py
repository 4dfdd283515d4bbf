"""`esc50tf train`: train and evaluate one model under one protocol.

For each split of the protocol (every fold for k-fold CV, one test fold, or a
grouped ratio split), the model's task (esc50tf.tasks, chosen by the model
registry) trains on the training side and predicts the test side once. A Keras
model: tf.data pipelines (training side only for fitting, validation carved
from it by src_file), the model built in the distribution strategy's scope
under the chosen precision, the per-frequency normalisation adapted on the
training clips, fit with the recipe's callbacks (esc50tf.recipe: schedule,
decisions the validation side is big enough for, weight averaging) plus CSV
history, TensorBoard and BackupAndRestore, the test side predicted (averaged
over test crops), `model.keras` and a SavedModel export saved. A scikit-learn
model: features of each side, `fit`, `model.skops`. Each split's results are
written, then aggregated into the run's report.

A run folder is resumable: finished splits are skipped, an interrupted one
continues from its last finished epoch. Its `config.json` is the full,
resolved configuration; `esc50tf train --config RUN/config.json` repeats it.

At scale (esc50tf.distribute): the batch size is per replica, the global batch
is that times the replicas in sync (optionally with the learning rate scaled
linearly); under MultiWorkerMirroredStrategy every worker runs the same
command, the chief writes the run folder and worker i its own copy in
`OUT-worker{i}`; `--data` and `--out` may be gs:// URIs (a remote run folder
is staged in a local temporary folder and uploaded after every epoch, so a
preempted run resumes); `--data-service` moves the training input pipeline to
a tf.data service.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

from esc50tf import cleanup, rundir
from esc50tf.data.splits import protocol_splits
from esc50tf.errors import Esc50Error
from esc50tf.io import log, write_json
from esc50tf.lock import folder_lock
from esc50tf.report import aggregate, write_report
from esc50tf.run_config import comparable, config_diff, used_config
from esc50tf.tasks.base import history_length


def prepare_run_dir(out, config_dict, overwrite=False, check_only=False):
    """Creates RUN or checks that an existing RUN holds the same configuration.

    With `check_only`, only the checks: nothing is created or removed.
    """
    return rundir.prepare(out, "config.json", config_dict, what="run", overwrite=overwrite,
                          same=same_config, describe=config_diff, check_only=check_only)


def same_config(old, new):
    """Whether two config dicts describe the same run (where it executes left out)."""
    return comparable(old) == comparable(new)


class _RemoteRun:
    """A run folder on a TensorFlow file system (gs://...), staged in a local folder.

    Keras callbacks, the report and the plots write local files; `upload` copies
    new and changed ones (and removes deleted ones) through tf.io.gfile, after
    every epoch and split, so a preempted run resumes from the remote copy. Only
    what a resume needs is downloaded: config.json, classes.json, each split's
    result.json and history.csv, and BackupAndRestore's backup folder.
    """

    _RESUME_FILES = ("config.json", "classes.json", "result.json", "history.csv")

    def __init__(self, url, overwrite=False):
        import tempfile

        import tensorflow as tf

        self.url = str(url).rstrip("/")
        self.overwrite = overwrite
        self._gfile = tf.io.gfile
        self._sent = {}  # local path -> (size, mtime_ns) last uploaded
        if (not overwrite and self._gfile.isdir(self.url) and self._gfile.listdir(self.url)
                and not self._gfile.exists(f"{self.url}/config.json")):
            raise Esc50Error(f"{self.url}: folder is not empty and is not an esc50tf run; "
                             "choose another --out or pass --overwrite")
        self.local = tempfile.mkdtemp(prefix="esc50tf-run-")
        if not overwrite and self._gfile.isdir(self.url):
            self._download()

    def _download(self):
        for root, _dirs, files in self._gfile.walk(self.url):
            rel = root[len(self.url):].strip("/")
            in_backup = "backup" in rel.split("/")
            for name in files:
                if in_backup or name in self._RESUME_FILES:
                    dst = Path(self.local, rel, name)
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    self._gfile.copy(f"{root.rstrip('/')}/{name}", str(dst), overwrite=True)
                    self._sent[str(dst)] = self._stamp(dst)

    @staticmethod
    def _stamp(path):
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns

    def _remote(self, local_path):
        return f"{self.url}/{Path(local_path).relative_to(self.local).as_posix()}"

    def start(self):
        """Clears the remote folder when overwriting, then uploads the new config."""
        if self.overwrite and self._gfile.exists(self.url):
            self._gfile.rmtree(self.url)
        self.upload()

    def upload(self):
        for root, _dirs, files in os.walk(self.local):
            for name in files:
                path = os.path.join(root, name)
                stamp = self._stamp(path)
                if self._sent.get(path) != stamp:
                    target = self._remote(path)
                    self._gfile.makedirs(target.rsplit("/", 1)[0])
                    self._gfile.copy(path, target, overwrite=True)
                    self._sent[path] = stamp
        for path in [p for p in self._sent if not os.path.exists(p)]:
            target = self._remote(path)
            if self._gfile.exists(target):
                self._gfile.remove(target)
            del self._sent[path]
            folder = os.path.dirname(path)
            if not os.path.isdir(folder) and self._gfile.isdir(self._remote(folder)):
                self._gfile.rmtree(self._remote(folder))  # e.g. BackupAndRestore's, when fit ends

    def discard(self):
        shutil.rmtree(self.local, ignore_errors=True)

    def finish(self):
        try:
            self.upload()
        finally:
            self.discard()


def train(cfg, overwrite=False, callbacks=(), verbose=1):
    """Runs every split of the protocol and writes the report. Returns the report dict.

    Args:
        cfg: RunConfig.
        overwrite: bool. Replace a run folder holding another configuration.
        callbacks: extra Keras callbacks, appended after the built-in ones.
        verbose: int. Keras fit verbosity (1: progress bar).
    """
    from esc50tf import distribute, models, tasks
    from esc50tf.data import splits
    from esc50tf.data import tfrecords as tfr
    from esc50tf.data.dataset import TFRecordFolder

    t = cfg.train
    if not t.data:
        raise Esc50Error("no --data TFRecord folder given")
    if not t.out:
        raise Esc50Error("no --out run folder given")
    spec = models.get(cfg.model.name)
    task = tasks.get_task(spec)
    task.check_options(cfg)
    folder = TFRecordFolder(t.data)
    manifest = folder.manifest
    models.check_data(cfg.model, manifest, t.data)
    clip_seconds = manifest["config"]["num_samples"] / manifest["config"]["sample_rate"]
    if cfg.augment.crop_seconds > clip_seconds:
        raise Esc50Error(f"--crop-seconds {cfg.augment.crop_seconds:g} is longer than the "
                         f"{clip_seconds:g} s clips of {t.data}; allowed: up to {clip_seconds:g}")
    if cfg.features.sample_rate != manifest["config"]["sample_rate"]:
        cfg = dataclasses.replace(
            cfg, features=dataclasses.replace(cfg.features,
                                              sample_rate=manifest["config"]["sample_rate"]))
    if not tfr.is_remote(t.data):
        folder.check_hashes()  # a damaged shard named now, not as a read error after training
    cfg = used_config(cfg, log=log)
    t = cfg.train
    index = folder.index
    chosen = protocol_splits(t, index)
    config_dict = cfg.to_dict()
    strategy, kind = task.make_strategy(cfg)
    out = t.out
    if not distribute.is_chief(kind):
        out = distribute.worker_dir(t.out, distribute.task_index(kind))
    with folder_lock(out, "train"):
        if not tfr.is_remote(out):
            prepare_run_dir(out, config_dict, overwrite, check_only=True)
        _check_can_start(cfg, task, chosen, index, strategy)
        task.check_memory(cfg, chosen, folder, kind)
        remote = _RemoteRun(out, overwrite) if tfr.is_remote(out) else None
        created = [] if remote else cleanup.make_dirs(out)
        try:
            resumed = prepare_run_dir(remote.local if remote else out, config_dict, overwrite)
        except BaseException:
            if remote:
                remote.discard()
            cleanup.remove_created(created)
            raise
        if remote:
            remote.start()
        run_dir = Path(remote.local if remote else out)
        class_names = [c["category"] for c in manifest["classes"]]
        write_json(run_dir / "classes.json", manifest["classes"])
        extra = {"protocol": _protocol_name(t), "device": distribute.device_description(strategy, kind),
                 "dataset": {"path": t.data, "identity": folder.identity,
                             "clips": manifest["counts"]["total"],
                             "sample_rate": manifest["config"]["sample_rate"],
                             "num_samples": int(manifest["config"]["num_samples"])}}
        extra.update(task.start_run(cfg, strategy, kind, resumed))
        results = []
        restore_determinism = distribute.enable_determinism() if t.deterministic else None
        try:
            for n, split in enumerate(chosen, 1):
                split_dir = run_dir / split.name
                done = split_dir / "result.json"
                if done.is_file():
                    result = json.loads(done.read_text())
                    log(f"[{n}/{len(chosen)}] {split.name}: already done "
                         f"(accuracy {100 * result['accuracy']:.1f}%), skipped")
                    results.append(result)
                    continue
                split_dir.mkdir(exist_ok=True)
                split_start = time.perf_counter()
                sizes = splits.check_disjoint(split, index)
                log(f"[{n}/{len(chosen)}] {split.name}: " + ", ".join(f"{k} {v}" for k, v in sizes.items())
                     + " clips (no src_file shared)")
                try:
                    result = task.train_split(cfg, split, split_dir, folder, class_names,
                                              strategy=strategy, kind=kind, index=index,
                                              sizes=sizes, callbacks=callbacks, verbose=verbose,
                                              epoch_end=remote.upload if remote else None)
                except Exception as read_err:  # noqa: BLE001 - named if a shard is damaged
                    damaged = folder.read_error(read_err)
                    if damaged is None:
                        raise
                    raise damaged from None
                result["split"] = split.name
                result["wall_seconds"] = time.perf_counter() - split_start
                write_json(done, result)
                if remote:
                    remote.upload()
                results.append(result)
                log(f"[{n}/{len(chosen)}] {split.name}: accuracy {100 * result['accuracy']:.1f}%, "
                     f"macro F1 {result['macro_f1']:.3f}, {result.get('epochs_run') or '-'} epochs, "
                     f"{result['train_seconds']:.1f} s"
                     + (f", {result['train_examples_per_s']:.1f} examples/s"
                        if result.get("train_examples_per_s") else ""))
        except BaseException as err:
            if remote:
                remote.finish()  # upload what there is: a resume continues from it
            elif not resumed and not _has_progress(run_dir):
                # Nothing worth resuming: leave no folder that would block the corrected command.
                cleanup.discard(run_dir, created)
            elif isinstance(err, KeyboardInterrupt):
                log(f"interrupted; {out} keeps the finished epochs: run the same command to resume")
            raise
        finally:
            task.end_run()
            if restore_determinism is not None:
                restore_determinism()
        # Summed per split, so a resumed run still reports its whole cost.
        wall = sum(r.get("wall_seconds", 0.0) for r in results)
        report = aggregate(results, class_names, config_dict, wall, extra)
        write_report(run_dir, report)
        if remote:
            remote.finish()
        log(f"{spec.name}: accuracy {100 * report['accuracy']:.1f}% +- {100 * report['accuracy_std']:.1f} "
             f"over {len(results)} split(s), macro F1 {report['macro_f1']:.3f}; report in {out}/report.md")
        return report


def _has_progress(run_dir):
    """True when a run folder holds a finished epoch or split (something a resume would use)."""
    return any(history_length(p) > 0 for p in Path(run_dir).glob("*/history.csv")) or any(
        Path(run_dir).glob("*/result.json"))


def _check_can_start(cfg, task, chosen, index, strategy):
    """Refuses, before any folder is made, what would fail before the first epoch.

    Training sides smaller than one global batch fail with the protocol that
    fits uneven folds (`--split`), a missing `--weights` file is named, and
    folds that do not suit a fold-based protocol get a warning.
    """
    from esc50tf.data import splits

    t = cfg.train
    from esc50tf.models import registry

    if cfg.model.weights and registry.reads_converted_weights(cfg.model):
        from esc50tf.pretrained import store

        store.resolve_weights(cfg.model.weights)  # a cache name or a file; says how to get it
    elif cfg.model.weights and not os.path.isfile(cfg.model.weights) and "://" not in cfg.model.weights:
        raise Esc50Error(f"{cfg.model.weights}: --weights file not found")
    advice = splits.fold_warnings(index) if t.protocol != "split" else []
    for line in advice + splits.class_warnings(chosen, index):
        log(f"warning: {line}")
    replicas = getattr(strategy, "num_replicas_in_sync", 1)
    if t.clipnorm and replicas > 1:
        log(f"warning: --clipnorm {t.clipnorm:g} clips each of the {replicas} replicas' share "
            "of the gradient before they are summed (Keras' optimizers), not the summed "
            "gradient: results differ from one device; --clipnorm 0 turns it off")
    task.check_splits(cfg, chosen, index, strategy, advice)


def _protocol_name(t):
    if t.protocol == "test-fold":
        return f"test fold {t.test_fold}"
    if t.protocol == "split":
        return f"grouped ratio split {t.split_ratio:g}"
    return "k-fold cross-validation"
