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
model: features of each side, `fit`, `model.pkl`. Each split's results are
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
import sys
import time
from pathlib import Path

from esc50tf import cleanup, recipe
from esc50tf.errors import Esc50Error
from esc50tf.tasks.base import history_length

PROTOCOLS = ("cv", "test-fold", "split")
OPTIMIZERS = ("adam", "adamw", "sgd", "adagrad")
FEATURES_ON = ("device", "host")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How a run trains. Model, feature and augmentation settings sit in their own configs.

    Args:
        data: str. TFRecord folder.
        out: str. Run folder.
        preset: str. "default" or "seed" (recorded; already applied).
        protocol: str. "cv", "test-fold" or "split".
        test_fold: int or None. For protocol "test-fold".
        split_ratio: float or None. For protocol "split", e.g. 0.9.
        val_fraction: float. Validation share of the training side (grouped by src_file).
        epochs, batch_size: ints. batch_size is per replica.
        optimizer: str. adam, adamw, sgd (with momentum) or adagrad.
        lr, weight_decay, momentum: floats.
        trunk_lr_scale: float in (0, 1]. Learning-rate factor of a pretrained PANNs
            trunk (adam/adamw only); the new head learns at `lr`. 1.0: one rate.
        lr_factor, lr_patience, min_lr: ReduceLROnPlateau (the study: 0.2, 5, 1e-5).
        early_stopping_patience: int. EarlyStopping on validation loss (the study: 10);
            0 = off. The best-val-accuracy checkpoint is kept too.
        schedule: str. "plateau" (ReduceLROnPlateau, the study's), "cosine" (decay to
            min_lr over the epoch budget) or "constant". See esc50tf.recipe.
        warmup_epochs: float. Linear warmup from 0 to lr (cosine and constant), at most
            half the epoch budget.
        min_val_per_class: float. Validation clips per class (mean) below which early
            stopping, plateau cuts and best-epoch restore are off; 0 = always on.
        final_weights: str. The evaluated and saved model: "best" (by validation loss,
            restored by early stopping), "last", "ema" or "swa".
        ema_momentum: float. For final_weights "ema" (Keras optimizer `use_ema`).
        swa_fraction: float. For final_weights "swa": share of the epochs at the end
            whose weights are averaged.
        label_smoothing: float. Cross-entropy label smoothing (0 = off).
        balance: str. "none" or "class_weights" (n / (k * count) per class).
        mixed_precision: str. auto, off, bf16 or fp16.
        strategy: str. See esc50tf.distribute.STRATEGIES.
        devices: str or None. Devices for mirrored / one_device, e.g. "gpu:0,gpu:1".
        tpu: str or None. TPU name, or "local" on a TPU VM (strategy tpu or auto).
        data_service: str or None. tf.data service dispatcher "grpc://host:port" that
            runs the training input pipeline.
        scale_lr: bool. Multiply lr by the number of replicas (linear scaling rule).
        jit_compile: bool. XLA-compile the train step.
        features_on: str. "device" (in the model) or "host" (in tf.data).
        seed: int.
        deterministic: bool. Enable TensorFlow op determinism: bit-identical reruns,
            somewhat slower.
        export: bool. Also write a SavedModel per split.
    """

    data: str = ""
    out: str = ""
    preset: str = "default"
    protocol: str = "cv"
    test_fold: int | None = None
    split_ratio: float | None = None
    val_fraction: float = 0.1
    epochs: int = 100
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    trunk_lr_scale: float = 1.0
    lr_factor: float = 0.2
    lr_patience: int = 5
    min_lr: float = 1e-5
    early_stopping_patience: int = 10
    # Defaults reproduce runs from before these fields; the default preset sets its own.
    schedule: str = "plateau"
    warmup_epochs: float = 0.0
    min_val_per_class: float = 0.0
    final_weights: str = "best"
    ema_momentum: float = 0.99
    swa_fraction: float = 0.25
    label_smoothing: float = 0.0
    balance: str = "none"
    mixed_precision: str = "auto"
    strategy: str = "auto"
    devices: str | None = None
    tpu: str | None = None
    data_service: str | None = None
    scale_lr: bool = False
    jit_compile: bool = False
    features_on: str = "device"
    seed: int = 0
    deterministic: bool = False
    export: bool = True

    def __post_init__(self):
        checks = [
            (self.protocol in PROTOCOLS, "protocol", self.protocol, ", ".join(PROTOCOLS)),
            (self.optimizer in OPTIMIZERS, "optimizer", self.optimizer, ", ".join(OPTIMIZERS)),
            (self.features_on in FEATURES_ON, "features_on", self.features_on, "device, host"),
            (isinstance(self.epochs, int) and self.epochs >= 1, "epochs", self.epochs, "an integer >= 1"),
            (isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size",
             self.batch_size, "an integer >= 1"),
            (self.lr > 0, "lr", self.lr, "a number > 0"),
            (self.weight_decay >= 0, "weight_decay", self.weight_decay, "a number >= 0"),
            (0 <= self.val_fraction <= 0.5, "val_fraction", self.val_fraction, "[0, 0.5]"),
            (0 < self.trunk_lr_scale <= 1, "trunk_lr_scale", self.trunk_lr_scale, "(0, 1]"),
            (self.trunk_lr_scale == 1 or self.optimizer in ("adam", "adamw"), "optimizer",
             self.optimizer, "adam or adamw with trunk_lr_scale < 1"),
            (isinstance(self.early_stopping_patience, int) and self.early_stopping_patience >= 0,
             "early_stopping_patience", self.early_stopping_patience, "an integer >= 0 (0: off)"),
            (self.schedule in recipe.SCHEDULES, "schedule", self.schedule,
             ", ".join(recipe.SCHEDULES)),
            (self.warmup_epochs >= 0, "warmup_epochs", self.warmup_epochs, "a number >= 0"),
            (self.schedule != "plateau" or self.warmup_epochs == 0, "warmup_epochs",
             self.warmup_epochs, "0 with --schedule plateau (warm up with cosine or constant)"),
            (self.min_val_per_class >= 0, "min_val_per_class", self.min_val_per_class,
             "a number >= 0"),
            (self.final_weights in recipe.FINAL_WEIGHTS, "final_weights", self.final_weights,
             ", ".join(recipe.FINAL_WEIGHTS)),
            (0 < self.ema_momentum < 1, "ema_momentum", self.ema_momentum, "(0, 1)"),
            (0 < self.swa_fraction <= 1, "swa_fraction", self.swa_fraction, "(0, 1]"),
            (0 <= self.label_smoothing < 1, "label_smoothing", self.label_smoothing, "[0, 1)"),
            (self.balance in recipe.BALANCE, "balance", self.balance, ", ".join(recipe.BALANCE)),
        ]
        for ok, name, value, allowed in checks:
            if not ok:
                raise Esc50Error(f"{name} {value!r} is not allowed; allowed: {allowed}")
        if self.protocol == "test-fold" and self.test_fold is None:
            raise Esc50Error("protocol test-fold needs --test-fold K")
        if self.protocol == "split" and self.split_ratio is None:
            raise Esc50Error("protocol split needs --split RATIO, e.g. 0.9")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; saved as RUN/config.json."""

    train: TrainConfig
    model: object  # ModelConfig
    features: object  # FeatureConfig
    augment: object  # AugmentConfig

    def to_dict(self):
        return {
            "train": dataclasses.asdict(self.train),
            "model": self.model.to_dict(),
            "features": self.features.to_dict(),
            "augment": self.augment.to_dict(),
        }

    @classmethod
    def from_dict(cls, d):
        from esc50tf.augment import AugmentConfig
        from esc50tf.features import FeatureConfig
        from esc50tf.models import ModelConfig

        unknown = sorted(set(d) - {"train", "model", "features", "augment"})
        if unknown:
            raise Esc50Error(f"unknown config section(s) {', '.join(unknown)}; "
                             "allowed: train, model, features, augment")
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        bad = sorted(set(d.get("train", {})) - names)
        if bad:
            raise Esc50Error(f"unknown train setting(s) {', '.join(bad)}; allowed: {', '.join(sorted(names))}")
        return cls(
            train=TrainConfig(**d.get("train", {})),
            model=ModelConfig.from_dict(d.get("model", {})),
            features=FeatureConfig.from_dict(d.get("features", {})),
            augment=AugmentConfig.from_dict(d.get("augment", {})),
        )


def resolve_config(model, preset="default", base=None, overrides=None):
    """Builds a RunConfig: defaults <- preset <- base (a config dict) <- overrides.

    Args:
        model: str. Registered model name.
        preset: str. "default", "seed" or "finetune" ("default" becomes "finetune"
            for a PANNs model given pretrained weights).
        base: dict or None. A saved config.json (sections train/model/...).
        overrides: dict or None. Same sections; only keys the user set.
    """
    from esc50tf import models, presets
    from esc50tf.models import panns

    models.get(model)  # unknown names fail here, listing the valid ones
    preset = panns.effective_preset(model, preset, base, overrides)
    merged = {"train": {}, "model": {}, "features": {}, "augment": {}}
    for layer in (presets.preset(preset, model), base or {}, overrides or {}):
        for section, values in layer.items():
            if section not in merged:
                raise Esc50Error(f"unknown config section {section!r}")
            merged[section].update(values)
    merged["model"]["name"] = model
    merged["train"]["preset"] = preset
    panns.fix_settings(merged, overrides)
    # The study froze ImageNet backbones; a random backbone is never frozen by a preset.
    if preset == "seed" and merged["model"].get("weights") and model in (
            "vgg16", "resnet50", "densenet121"):
        merged["model"].setdefault("freeze_backbone", True)
    return RunConfig.from_dict(merged)


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def protocol_splits(cfg, index):
    from esc50tf.data import splits

    t = cfg.train
    if t.protocol == "test-fold":
        chosen = [splits.test_fold_split(index, t.test_fold, t.val_fraction, t.seed)]
    elif t.protocol == "split":
        chosen = [splits.ratio_split(index, t.split_ratio, t.val_fraction, t.seed)]
    else:
        chosen = splits.cv_splits(index, t.val_fraction, t.seed)
    for s in chosen:
        splits.check_disjoint(s, index)
    return chosen


def prepare_run_dir(out, config_dict, overwrite=False, check_only=False):
    """Creates RUN or checks that an existing RUN holds the same configuration.

    With `check_only`, only the checks: nothing is created or removed.
    """
    out = Path(out)
    cfg_path = out / "config.json"
    if out.exists() and any(out.iterdir()):
        if overwrite:
            if check_only:
                return False
            shutil.rmtree(out)
        elif not cfg_path.is_file():
            raise Esc50Error(f"{out}: folder is not empty and is not an esc50tf run; "
                             "choose another --out or pass --overwrite")
        else:
            old = json.loads(cfg_path.read_text())
            if comparable(old) != comparable(config_dict):
                diff = config_diff(old, config_dict)
                raise Esc50Error(f"{out}: holds a run with another configuration ({diff}); "
                                 "choose another --out or pass --overwrite")
            return True  # resume
    if check_only:
        return False
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".config.json.tmp"
    tmp.write_text(json.dumps(config_dict, indent=2) + "\n")
    tmp.replace(cfg_path)
    return False


# Where a run executes, not what it computes: changing these does not block a resume.
_WHERE_KEYS = ("out", "tpu", "data_service")


def comparable(d):
    """A config.json dict as a resume compares it: every train field, none of where it runs."""
    d = json.loads(json.dumps(d))
    train_section = d.setdefault("train", {})
    for f in dataclasses.fields(TrainConfig):  # config.json files from before a field existed
        train_section.setdefault(f.name, f.default)
    for key in _WHERE_KEYS:
        train_section.pop(key, None)
    return d


def config_diff(old, new):
    """What differs between two config.json dicts, for an error message (at most 4 settings)."""
    old, new = comparable(old), comparable(new)
    out = []
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section, {}), new.get(section, {})
        for k in sorted(set(a) | set(b)):
            if k not in _WHERE_KEYS and a.get(k) != b.get(k):
                out.append(f"{section}.{k} {a.get(k)!r} -> {b.get(k)!r}")
    return "; ".join(out[:4]) + ("; ..." if len(out) > 4 else "")


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
    import os

    from esc50tf import distribute, evaluate, models, tasks
    from esc50tf.data import splits
    from esc50tf.data import tfrecords as tfr
    from esc50tf.models.panns import check_sample_rate

    t = cfg.train
    if not t.data:
        raise Esc50Error("no --data TFRecord folder given")
    if not t.out:
        raise Esc50Error("no --out run folder given")
    spec = models.get(cfg.model.name)
    task = tasks.get_task(spec)
    task.check_options(cfg)
    manifest = tfr.read_manifest(t.data)
    tfr.verify_shards(t.data, manifest)
    check_sample_rate(cfg.model, manifest, t.data)
    if cfg.features.sample_rate != manifest["config"]["sample_rate"]:
        cfg = dataclasses.replace(
            cfg, features=dataclasses.replace(cfg.features,
                                              sample_rate=manifest["config"]["sample_rate"]))
    index = splits.load_index(t.data)
    chosen = protocol_splits(cfg, index)
    config_dict = cfg.to_dict()
    strategy, kind = task.make_strategy(cfg)
    out = t.out
    if not distribute.is_chief(kind):
        out = distribute.worker_dir(t.out, distribute.task_index(kind))
    if not tfr.is_remote(out):
        prepare_run_dir(out, config_dict, overwrite, check_only=True)
    _check_can_start(cfg, task, chosen, index, strategy)
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
    (run_dir / "classes.json").write_text(json.dumps(manifest["classes"], indent=2) + "\n")
    data_path = t.data if tfr.is_remote(t.data) else str(Path(t.data).resolve())
    extra = {"protocol": _protocol_name(t), "device": distribute.device_description(strategy, kind),
             "dataset": {"path": data_path, "clips": manifest["counts"]["total"],
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
                _log(f"[{n}/{len(chosen)}] {split.name}: already done "
                     f"(accuracy {100 * result['accuracy']:.1f}%), skipped")
                results.append(result)
                continue
            split_dir.mkdir(exist_ok=True)
            split_start = time.perf_counter()
            sizes = splits.check_disjoint(split, index)
            _log(f"[{n}/{len(chosen)}] {split.name}: " + ", ".join(f"{k} {v}" for k, v in sizes.items())
                 + " clips (no src_file shared)")
            result = task.train_split(cfg, split, split_dir, manifest, class_names,
                                      strategy=strategy, kind=kind, index=index, sizes=sizes,
                                      callbacks=callbacks, verbose=verbose,
                                      epoch_end=remote.upload if remote else None)
            result["split"] = split.name
            result["wall_seconds"] = time.perf_counter() - split_start
            tmp = split_dir / ".result.json.tmp"
            tmp.write_text(json.dumps(result, indent=2) + "\n")
            os.replace(tmp, done)
            if remote:
                remote.upload()
            results.append(result)
            _log(f"[{n}/{len(chosen)}] {split.name}: accuracy {100 * result['accuracy']:.1f}%, "
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
            _log(f"interrupted; {out} keeps the finished epochs: run the same command to resume")
        raise
    finally:
        task.end_run()
        if restore_determinism is not None:
            restore_determinism()
    # Summed per split, so a resumed run still reports its whole cost.
    wall = sum(r.get("wall_seconds", 0.0) for r in results)
    report = evaluate.aggregate(results, class_names, config_dict, wall, extra)
    evaluate.write_report(run_dir, report)
    if remote:
        remote.finish()
    _log(f"{spec.name}: accuracy {100 * report['accuracy']:.1f}% +- {100 * report['accuracy_std']:.1f} "
         f"over {len(results)} split(s), macro F1 {report['macro_f1']:.3f}; report in {out}/report.md")
    return report


def _has_progress(run_dir):
    """True when a run folder holds a finished epoch or split (something a resume would use)."""
    return any(history_length(p) > 0 for p in Path(run_dir).glob("*/history.csv")) or any(
        Path(run_dir).glob("*/result.json"))


def _reads_converted_weights(model_config):
    """Whether `--weights` names converted PANNs weights (a cache name or an .npz file)."""
    from esc50tf.models import registry

    return (registry.get(model_config.name).pretrained is not None
            or model_config.backbone in ("cnn14", "cnn14_16k")
            or model_config.classic_features == "embeddings")


def _check_can_start(cfg, task, chosen, index, strategy):
    """Refuses, before any folder is made, what would fail before the first epoch.

    Training sides smaller than one global batch fail with the protocol that
    fits uneven folds (`--split`), a missing `--weights` file is named, and
    folds that do not suit a fold-based protocol get a warning.
    """
    from esc50tf.data import splits

    t = cfg.train
    if cfg.model.weights and _reads_converted_weights(cfg.model):
        from esc50tf.pretrained import store

        store.resolve_weights(cfg.model.weights)  # a cache name or a file; says how to get it
    elif cfg.model.weights and not os.path.isfile(cfg.model.weights) and "://" not in cfg.model.weights:
        raise Esc50Error(f"{cfg.model.weights}: --weights file not found")
    advice = splits.fold_warnings(index) if t.protocol != "split" else []
    for line in advice:
        _log(f"warning: {line}")
    task.check_splits(cfg, chosen, index, strategy, advice)


def _protocol_name(t):
    if t.protocol == "test-fold":
        return f"test fold {t.test_fold}"
    if t.protocol == "split":
        return f"grouped ratio split {t.split_ratio:g}"
    return "k-fold cross-validation"
