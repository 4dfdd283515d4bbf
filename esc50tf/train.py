"""`esc50tf train`: train and evaluate one model under one protocol.

For each split of the protocol (every fold for k-fold CV, one test fold, or a
grouped ratio split): build the tf.data pipelines (training side only for
fitting, validation carved from it by src_file), build the model in the
distribution strategy's scope under the chosen precision, adapt the
per-frequency normalisation on the training clips, fit with the recipe's
callbacks (esc50tf.recipe: schedule, decisions the validation side is big
enough for, weight averaging) plus CSV history, TensorBoard and
BackupAndRestore, then predict the test side once (averaged over test crops), save `model.keras` and a SavedModel export, and write the
split's results. Finally aggregate everything into the run's report.

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
import warnings
from pathlib import Path

import numpy as np

from esc50tf import cleanup, recipe
from esc50tf.errors import Esc50Error

PROTOCOLS = ("cv", "test-fold", "split")
OPTIMIZERS = ("adam", "adamw", "sgd", "adagrad")
FEATURES_ON = ("device", "host")
# TensorFlow reads this when it starts; one inter-op thread makes reruns bit-identical.
INTER_OP_ENV = "TF_NUM_INTEROP_THREADS"


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


def make_optimizer(t, steps_per_epoch=None):
    """The configured optimizer: its learning rate schedule, and EMA when it is reported."""
    import keras

    lr = recipe.learning_rate(t, t.lr, steps_per_epoch)
    ema = dict(use_ema=True, ema_momentum=t.ema_momentum) if t.final_weights == "ema" else {}
    if t.trunk_lr_scale != 1.0:
        from esc50tf.models.optimizers import TrunkScaledAdamW

        return TrunkScaledAdamW(t.trunk_lr_scale, learning_rate=lr,
                                weight_decay=t.weight_decay if t.optimizer == "adamw" else 0.0,
                                **ema)
    if t.optimizer == "adam":
        return keras.optimizers.Adam(lr, **ema)
    if t.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=t.weight_decay, **ema)
    if t.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=t.momentum,
                                    weight_decay=t.weight_decay or None, **ema)
    return keras.optimizers.Adagrad(lr, **ema)


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
            if _comparable(old) != _comparable(config_dict):
                diff = _diff(old, config_dict)
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


def _comparable(d):
    d = json.loads(json.dumps(d))
    train_section = d.setdefault("train", {})
    for f in dataclasses.fields(TrainConfig):  # config.json files from before a field existed
        train_section.setdefault(f.name, f.default)
    for key in _WHERE_KEYS:
        train_section.pop(key, None)
    return d


def _diff(old, new):
    old, new = _comparable(old), _comparable(new)
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

    def callback(self):
        import keras

        run = self

        class UploadEachEpoch(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                run.upload()

        return UploadEachEpoch()

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

    from esc50tf import distribute, evaluate, models
    from esc50tf.data import splits
    from esc50tf.data import tfrecords as tfr
    from esc50tf.data.dataset import TFRecordFolder
    from esc50tf.models.panns import check_sample_rate

    t = cfg.train
    if not t.data:
        raise Esc50Error("no --data TFRecord folder given")
    if not t.out:
        raise Esc50Error("no --out run folder given")
    spec = models.get(cfg.model.name)
    if spec.keras:
        distribute.check_options(t.strategy, tpu=t.tpu, devices=t.devices,
                                 mixed_precision=t.mixed_precision, jit_compile=t.jit_compile,
                                 deterministic=t.deterministic, data_service=t.data_service)
    folder = TFRecordFolder(t.data)
    manifest = folder.manifest
    check_sample_rate(cfg.model, manifest, t.data)
    if cfg.features.sample_rate != manifest["config"]["sample_rate"]:
        cfg = dataclasses.replace(
            cfg, features=dataclasses.replace(cfg.features,
                                              sample_rate=manifest["config"]["sample_rate"]))
    index = folder.index
    chosen = protocol_splits(cfg, index)
    config_dict = cfg.to_dict()
    strategy, kind = None, "none"
    if spec.keras:
        # Before anything else runs TensorFlow ops (MultiWorkerMirroredStrategy needs that).
        strategy, kind = distribute.make_strategy(t.strategy, tpu=t.tpu, devices=t.devices)
        distribute.check_strategy(strategy, kind, jit_compile=t.jit_compile)
    out = t.out
    if not distribute.is_chief(kind):
        out = distribute.worker_dir(t.out, distribute.task_index(kind))
    if not tfr.is_remote(out):
        prepare_run_dir(out, config_dict, overwrite, check_only=True)
    _check_can_start(cfg, spec, chosen, index, strategy)
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
    if spec.keras:
        import keras

        policy = distribute.resolve_precision(t.mixed_precision, kind)
        keras.mixed_precision.set_global_policy(policy)
        replicas = distribute.num_replicas(strategy)
        lr = distribute.scaled_learning_rate(t.lr, replicas, t.scale_lr)
        extra.update(precision=policy, strategy=kind, replicas=replicas,
                     global_batch_size=distribute.global_batch_size(t.batch_size, replicas),
                     learning_rate=lr)
        _log(f"{spec.name}: {kind} strategy, {replicas} replica(s), precision {policy}, "
             f"global batch {extra['global_batch_size']} ({t.batch_size} per replica), "
             f"learning rate {lr:g}" + (" (scaled by replicas)" if t.scale_lr else "")
             + (f", input from the tf.data service at {t.data_service}" if t.data_service else "")
             + (" (resuming)" if resumed else ""))
    else:
        extra.update(precision="float32 (scikit-learn)", strategy="none", replicas=1)
    results = []
    restore_determinism = _enable_determinism() if t.deterministic else None
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
            if spec.keras:
                split_callbacks = list(callbacks)
                if remote:
                    split_callbacks.append(remote.callback())
                result = _train_keras_split(cfg, spec, split, split_dir, folder, strategy,
                                            class_names, split_callbacks, verbose, sizes,
                                            kind=kind, index=index)
            else:
                result = _train_classic_split(cfg, spec, split, split_dir, folder, class_names)
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
        if spec.keras:
            import keras

            keras.mixed_precision.set_global_policy("float32")
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
    return any(_history_length(p) > 0 for p in Path(run_dir).glob("*/history.csv")) or any(
        Path(run_dir).glob("*/result.json"))


def _reads_converted_weights(model_config):
    """Whether `--weights` names converted PANNs weights (a cache name or an .npz file)."""
    from esc50tf.models import registry

    return (registry.get(model_config.name).pretrained is not None
            or model_config.backbone in ("cnn14", "cnn14_16k")
            or model_config.classic_features == "embeddings")


def _check_can_start(cfg, spec, chosen, index, strategy):
    """Refuses, before any folder is made, what would fail before the first epoch.

    Training sides smaller than one global batch fail with the protocol that
    fits uneven folds (`--split`), a missing `--weights` file is named, and
    folds that do not suit a fold-based protocol get a warning.
    """
    from esc50tf import distribute
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
    if not spec.keras:
        return
    batch = distribute.global_batch_size(t.batch_size, distribute.num_replicas(strategy))
    for split in chosen:
        n = len(split.train.rows(index))
        if n < batch:
            fix = splits.SPLIT_ADVICE if advice else "lower --batch-size"
            raise Esc50Error(f"{split.name}: {n} training clips, fewer than one global batch of "
                             f"{batch}; {fix}")


def _enable_determinism():
    """Turns TensorFlow op determinism on; returns a function that restores the old state.

    The switch is process-wide and Keras silently drops jit_compile while it is
    on, so a deterministic run must not leave it on for whatever runs next.

    Op determinism alone is not enough: with several inter-op threads, Keras'
    compiled training step gave weights that differed in the 6th-7th digit
    between reruns (and so different accuracies after 30 epochs). One
    inter-op thread (each op still uses every core) made reruns
    bit-identical. That pool can only be sized before TensorFlow starts, so
    the `esc50tf` command sets TF_NUM_INTEROP_THREADS=1 for deterministic
    runs; a library caller whose TensorFlow already runs gets a warning.
    """
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    if not _single_inter_op_thread(tf):
        warnings.warn(
            "deterministic run, but TensorFlow already started with more than one inter-op "
            "thread, so reruns may differ in the last digits; set TF_NUM_INTEROP_THREADS=1 "
            "before TensorFlow starts (the esc50tf command does this for --deterministic)",
            RuntimeWarning, stacklevel=3,
        )
    was_on = tf_config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    return (lambda: None) if was_on else tf_config.disable_op_determinism


def _single_inter_op_thread(tf):
    """Makes TensorFlow's inter-op pool one thread if it can; True if it is."""
    if os.environ.get(INTER_OP_ENV) == "1" or (
        tf.config.threading.get_inter_op_parallelism_threads() == 1
    ):
        return True
    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # the runtime is already initialised
        return False
    return True


def _protocol_name(t):
    if t.protocol == "test-fold":
        return f"test fold {t.test_fold}"
    if t.protocol == "split":
        return f"grouped ratio split {t.split_ratio:g}"
    return "k-fold cross-validation"


def _datasets(cfg, split, folder, host_featurize=None, one_hot=False, wave_augmenter=None, *,
              num_workers=1, repeat=False, data_service=None, data_service_job=None,
              drop_val_remainder=False):
    """Training and validation pipelines; augmentation only on the training side.

    With features on the host, `host_featurize` runs in tf.data on both sides and
    the model's own waveform augmenter (training=True) runs before it on the
    training side only. `cfg.train.batch_size` is the global batch here.
    num_workers, repeat, data_service, data_service_job: see `DatasetOptions` (the
    service gets the training pipeline only). drop_val_remainder: static
    validation batches too (TPUs).
    """
    from esc50tf.augment import BatchMixer
    from esc50tf.data.dataset import DatasetOptions

    t = cfg.train
    eval_fns, train_fns = [], []
    if host_featurize is not None:
        eval_fns.append(lambda x, y: (host_featurize(x), y))
        if wave_augmenter is not None:
            train_fns.append(lambda x, y: (host_featurize(wave_augmenter(x, training=True)), y))
        else:
            train_fns.append(eval_fns[0])
    if cfg.augment.mix != "none":
        train_fns.append(BatchMixer(cfg.augment.mix, alpha=cfg.augment.mixup_alpha, seed=t.seed,
                                    num_classes=folder.num_classes,
                                    sample_rate=folder.sample_rate))
    train_ds = folder.dataset(split.train, DatasetOptions(
        training=True, batch_size=t.batch_size, seed=t.seed,
        one_hot=one_hot and cfg.augment.mix == "none", num_workers=num_workers, repeat=repeat,
        data_service=data_service, data_service_job=data_service_job), batch_fns=train_fns)
    val_ds = None
    if split.val is not None:
        val_ds = folder.dataset(split.val, DatasetOptions(
            batch_size=t.batch_size, one_hot=one_hot, num_workers=num_workers,
            drop_remainder=drop_val_remainder), batch_fns=eval_fns)
    return train_ds, val_ds


def _train_keras_split(cfg, spec, split, split_dir, folder, strategy, class_names,
                       extra_callbacks, verbose, sizes, kind="default", index=None):
    import hashlib
    import warnings

    import keras

    from esc50tf import distribute
    from esc50tf import features as feat
    from esc50tf.data.dataset import DatasetOptions
    from esc50tf.models.build import adapt_normalization, build_model, test_crops

    t = cfg.train
    one_hot = recipe.soft_labels(cfg)
    num_samples = folder.num_samples
    replicas = distribute.num_replicas(strategy)
    global_batch = distribute.global_batch_size(t.batch_size, replicas)
    t_global = dataclasses.replace(t, batch_size=global_batch)
    cfg_global = dataclasses.replace(cfg, train=t_global)
    if sizes["train"] < global_batch:
        raise Esc50Error(f"{split.name}: {sizes['train']} training clips, fewer than one global "
                         f"batch of {global_batch}; lower --batch-size")
    if kind == "tpu" and 0 < sizes.get("val", 0) < global_batch:
        raise Esc50Error(f"{split.name}: {sizes['val']} validation clips, fewer than one global "
                         f"batch of {global_batch} (TPUs need full batches); lower --batch-size "
                         "or raise --val-fraction")
    # Several input pipelines (multi-worker, TPU pods): the workers' shares of the
    # shards differ in size, so the training stream repeats and an epoch is a fixed
    # number of global steps; no worker runs dry while the others wait in an all-reduce.
    workers = distribute.num_input_pipelines(strategy, kind)
    repeat = workers > 1
    steps_per_epoch = sizes["train"] // global_batch if repeat else None
    job = None
    if t.data_service and repeat:  # the trainers share one service job
        job = "esc50tf-" + hashlib.sha1(f"{t.out}/{split.name}".encode()).hexdigest()[:16]
    host_featurize = feat.make_host_featurizer(cfg.features) if t.features_on == "host" else None
    if index is None:
        index = folder.index
    train_counts = recipe.class_counts(split.train.rows(index)["label"], len(class_names))
    validation = recipe.judge_validation(
        [] if split.val is None else split.val.rows(index)["label"], len(class_names),
        t.min_val_per_class)
    _log(f"{split.name}: {validation['note']}")
    with strategy.scope():
        model = build_model(cfg.model, cfg.features, len(class_names), num_samples,
                            cfg.augment, seed=t.seed)
        # Per-frequency statistics from the training clips only (no augmentation).
        stats_ds = folder.dataset(split.train, DatasetOptions(batch_size=64))
        adapt_normalization(model, stats_ds)
        trainable = model
        if host_featurize is not None:
            trainable = _classifier_part(model)
        loss = recipe.loss(cfg)
        lr = distribute.scaled_learning_rate(t.lr, replicas, t.scale_lr)
        trainable.compile(make_optimizer(dataclasses.replace(t, lr=lr),
                                         steps_per_epoch=sizes["train"] // global_batch),
                          loss=loss, metrics=["accuracy"], jit_compile=t.jit_compile)
    wave_augmenter = None
    if host_featurize is not None:
        try:
            wave_augmenter = model.get_layer("waveform_augmenter")
        except ValueError:
            pass
    train_ds, val_ds = _datasets(cfg_global, split, folder, host_featurize, one_hot,
                                 wave_augmenter,
                                 num_workers=workers,
                                 repeat=repeat, data_service=t.data_service,
                                 data_service_job=job, drop_val_remainder=kind == "tpu")
    distribute.prepare_fit(trainable, strategy, kind, train_ds.element_spec)
    if workers > 1:
        shard_policy = train_ds.options().experimental_distribute.auto_shard_policy
        _log(f"{split.name}: training input auto-sharded by {shard_policy.name} over {workers} "
             f"workers, {sizes['train'] // global_batch} steps of {global_batch} per epoch")
    monitor_acc = "val_accuracy" if val_ds is not None else "accuracy"
    monitor_loss = "val_loss" if val_ds is not None else "loss"
    # Training clips without augmentation, for batch-norm statistics of averaged weights.
    averaging = recipe.averaging_callbacks(
        t, split_dir / "swa_state.npz",
        lambda: folder.dataset(split.train, DatasetOptions(batch_size=global_batch),
                               batch_fns=[lambda x, y: (host_featurize(x), y)]
                               if host_featurize is not None else ()))
    cbs = [
        keras.callbacks.BackupAndRestore(str(split_dir / "backup")),
        *recipe.decision_callbacks(t, monitor_loss, validation["trusted"]),
        *averaging,
        keras.callbacks.ModelCheckpoint(str(split_dir / "best.keras"), monitor=monitor_acc,
                                        save_best_only=True),
        keras.callbacks.CSVLogger(str(split_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(split_dir / "logs"), write_graph=False,
                                    profile_batch=0),
        *extra_callbacks,
    ]
    fit_start = time.perf_counter()
    with warnings.catch_warnings():
        if repeat:
            # A worker's share of the validation clips is not known in advance, so Keras
            # learns the number of validation steps by running out of data, and says so.
            warnings.filterwarnings("ignore", message="Your input ran out of data")
        history = trainable.fit(train_ds, validation_data=val_ds, epochs=t.epochs, callbacks=cbs,
                                steps_per_epoch=steps_per_epoch, verbose=verbose,
                                class_weight=(recipe.class_weights(train_counts)
                                              if t.balance == "class_weights" else None),
                                shuffle=False)  # tf.data already shuffles
    fit_seconds = time.perf_counter() - fit_start
    epochs_this_session = len(history.history.get("loss", []))
    history_rows = _history_length(split_dir / "history.csv")
    test_ds = folder.dataset(split.test, DatasetOptions(batch_size=global_batch,
                                                         with_metadata=True))
    _log(f"{split.name}: predicting {sizes['test']} test clips")
    y_true, y_prob, names = _predict(model, test_ds, verbose=verbose)
    model.save(split_dir / "model.keras")
    if t.export:
        export_model(model, split_dir / "saved_model")
    np.savez_compressed(split_dir / "predictions.npz", y_true=y_true, y_prob=y_prob,
                        filenames=np.array(names))
    from esc50tf.evaluate import fold_metrics

    result = fold_metrics(y_true, y_prob, class_names)
    steps = epochs_this_session * (sizes["train"] // global_batch)
    result.update(
        epochs_run=history_rows or epochs_this_session,
        train_seconds=fit_seconds,
        train_examples_per_s=(steps * global_batch / fit_seconds) if fit_seconds > 0 and steps else None,
        num_train_clips=sizes["train"],
        num_val_clips=sizes.get("val", 0),
        best_val_accuracy=float(max(history.history.get(monitor_acc, [np.nan]))),
        validation=validation,
        reported_model=recipe.reported_weights(
            t, validation["trusted"], averaging[0].averaged_epochs if averaging else None),
        test_crops=test_crops(model),
        train_class_counts=dict(zip(class_names, train_counts.tolist())),
    )
    return result


def _history_length(path):
    try:
        return max(0, len(Path(path).read_text().strip().splitlines()) - 1)
    except OSError:
        return 0


def _classifier_part(model):
    """For features on the host: the model from the front end's output onwards."""
    import keras

    frontend = model.get_layer("frontend")
    return keras.Model(frontend.output, model.output, name=f"{model.name}_on_features")


def _predict(model, dataset, verbose=1):
    """(labels, probabilities, filenames) of a `(x, y, meta)` dataset in its fixed order.

    The model runs through Keras' compiled, batched `predict` (progress bar
    with verbose=1), once per evaluation crop of a multi-crop model
    (`models.build.crop_rolls`), and the softmax outputs are averaged; labels
    and names come from a second, model-free pass.
    """
    import tensorflow as tf

    from esc50tf.models.build import crop_rolls

    waves = dataset.map(lambda x, y, meta: x)
    probs = 0.0
    rolls = crop_rolls(model, waves.element_spec.shape[-1])
    for shift in rolls:
        crop = waves.map(lambda x, s=shift: tf.roll(x, s, axis=1)) if shift else waves
        probs = probs + model.predict(crop, verbose=verbose)
    probs = probs / len(rolls)
    ys, names = [], []
    for y, filenames in dataset.map(lambda x, y, meta: (y, meta["filename"])):
        ys.append(y.numpy())
        names.extend(n.decode() for n in filenames.numpy())
    return np.concatenate(ys), np.asarray(probs, dtype=np.float32), names


def export_model(model, path):
    """Writes a TF SavedModel: waveform [batch, samples] in, probabilities out."""
    import io
    import contextlib

    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    with contextlib.redirect_stdout(io.StringIO()):  # export prints a signature summary
        model.export(str(path), format="tf_saved_model")


def _train_classic_split(cfg, spec, split, split_dir, folder, class_names):
    import pickle

    from esc50tf.data.dataset import DatasetOptions
    from esc50tf.evaluate import fold_metrics
    from esc50tf.models import classic

    t = cfg.train
    if cfg.model.classic_features == "embeddings":
        features_of = _embedding_rows(cfg, split_dir.parent)
    else:
        featurize = classic.make_featurizer(cfg.features, cfg.model)

        def features_of(selection):
            ds = folder.dataset(selection, DatasetOptions(batch_size=64, with_metadata=True,
                                                          cache=False))
            return classic.extract(ds, featurize)

    start = time.perf_counter()
    x_train, y_train, _ = features_of(split.train)
    estimator = spec.builder(cfg.model, seed=t.seed)
    estimator.fit(x_train, y_train)
    seconds = time.perf_counter() - start
    val_acc = None
    if split.val is not None:
        x_val, y_val, _ = features_of(split.val)
        val_acc = float((estimator.predict(x_val) == y_val).mean())
    x_test, y_test, names = features_of(split.test)
    y_prob = classic.predict_proba(estimator, x_test, len(class_names))
    with open(split_dir / "model.pkl", "wb") as f:
        pickle.dump(estimator, f)
    np.savez_compressed(split_dir / "predictions.npz", y_true=y_test, y_prob=y_prob,
                        filenames=np.array(names))
    result = fold_metrics(y_test, y_prob, class_names)
    result.update(epochs_run=None, train_seconds=seconds,
                  train_examples_per_s=len(y_train) / seconds if seconds else None,
                  num_train_clips=int(len(y_train)), best_val_accuracy=val_acc,
                  feature_dim=int(x_train.shape[1]))
    return result


def _embedding_rows(cfg, run_dir):
    """`selection -> (X, y, filenames)` from PANNs embeddings computed once per run, cached."""
    from esc50tf import embed
    from esc50tf.data.splits import load_index

    table = embed.embedding_table(cfg.train.data, cfg.model, Path(run_dir) / "embeddings.npz")
    index = load_index(cfg.train.data)
    return lambda selection: embed.select(table, selection, index)
