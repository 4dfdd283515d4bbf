"""The `esc50tf` command line: one subcommand per job.

Thin by design: parse flags, build configs, call library functions. Heavy
modules (TensorFlow, Keras) are imported inside the handlers, so
`esc50tf --help` answers at once.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import signal
import sys

from esc50tf import __version__, recipe
from esc50tf.augment import registry as augment_registry
from esc50tf.errors import Esc50Error
from esc50tf.frontend import FRONTENDS, KINDS
from esc50tf.pretrained import cli as pretrained_cli


def _number(parse, ok, expected, out_of_range=None):
    """An argparse type: `parse(text)` (int or float) must succeed and satisfy `ok`."""
    def convert(text):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {out_of_range or expected}, got {text!r}")
        return value
    return convert


_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_positive_float = _number(float, lambda v: v > 0, "a positive number")
_ratio = _number(float, lambda v: 0 < v < 1, "a ratio like 0.9", "a ratio in (0, 1) like 0.9")
_fraction = _number(float, lambda v: 0 <= v <= 1, "a fraction like 0.9",
                    "a fraction in [0, 1] like 0.9")


def _subparser(sub, name, add_fn, handler=None, **kwargs):
    """The parser of command `name`, run by `handler(args)`; its texts from `add_fn`'s docstring.

    The docstring's first line is the one-line help of `esc50tf --help`; the
    next paragraph, unless it starts with "example", the description (one
    paragraph, re-wrapped by argparse); the rest, kept as written, the epilog.
    `kwargs` (usage, formatter_class, a computed description) go to argparse.
    """
    first, _, rest = inspect.cleandoc(add_fn.__doc__).partition("\n\n")
    texts = {"help": first}
    if rest and not rest.startswith("example"):
        description, _, rest = rest.partition("\n\n")
        texts["description"] = " ".join(description.split())
    if rest:
        texts["epilog"] = rest
    parser = sub.add_parser(name, **{**texts, **kwargs})
    if handler is not None:  # data-service: its roles have the handlers
        parser.set_defaults(handler=handler)
    return parser


# --- download -----------------------------------------------------------------

def _add_download(sub):
    """download and unpack ESC-50

    Download the ESC-50 archive, unpack it and verify the layout (meta/esc50.csv and every
    WAV it lists under audio/). A complete copy already in DEST is not downloaded again.
    """
    from esc50tf.data.download import DEFAULT_URL

    p = _subparser(sub, "download", _add_download, _run_download)
    p.add_argument("--dest", default="ESC-50", help="dataset folder to create (default: %(default)s)")
    p.add_argument("--url", default=DEFAULT_URL, help="archive URL, http(s):// or file:// (default: %(default)s)")
    p.add_argument("--keep-archive", action="store_true", help="keep the zip as DEST/esc50.zip")
    p.add_argument("--overwrite", action="store_true", help="replace an incomplete or different copy in DEST")


def _run_download(args):
    from esc50tf.data.download import download

    download(args.dest, args.url, overwrite=args.overwrite, keep_archive=args.keep_archive)
    return 0


# --- build-tfrecords ------------------------------------------------------------

def _add_build(sub):
    """turn an ESC-50-layout folder into TFRecord shards per fold

    Validate meta/esc50.csv, decode every clip (any common WAV bit depth, FLAC, OGG; mixed
    to mono; resampled with soxr; padded/cropped), and write TFRecord shards grouped by
    fold, plus clips.csv and manifest.json (written last). Rebuilding with the same inputs
    and settings is a no-op.

    example: esc50tf build-tfrecords --data-dir ESC-50 --out tfrecords
    """
    p = _subparser(sub, "build-tfrecords", _add_build, _run_build)
    p.add_argument("--data-dir", required=True, help="dataset root holding meta/esc50.csv and audio/")
    p.add_argument("--out", required=True, help="output folder for shards and manifest")
    p.add_argument("--sample-rate", type=_positive_int, default=44100,
                   help="resample every clip to this rate in Hz (default: %(default)s, ESC-50's own)")
    p.add_argument("--clip-seconds", type=_positive_float, default=5.0,
                   help="fixed clip length; pad with zeros or crop (default: %(default)s)")
    p.add_argument("--shards-per-fold", type=_positive_int, default=4,
                   help="shard files per fold (default: %(default)s)")
    p.add_argument("--compression", choices=["none", "gzip"], default="none",
                   help="TFRecord compression (default: %(default)s)")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="decoding processes (default: number of CPUs)")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out clips that are missing, truncated or fail to decode (listed, and "
                   "recorded in the manifest)")
    p.add_argument("--strict", action="store_true",
                   help="refuse suspicious clips: silent or constant, clipped throughout, at a sample "
                   "rate far from the others', or a duplicate of another clip (by default they are "
                   "kept, listed, and recorded in the manifest)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing build made with other settings or inputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run_build(args):
    from esc50tf.data.tfrecords import BuildConfig, build_tfrecords

    config = BuildConfig(
        sample_rate=args.sample_rate,
        clip_seconds=args.clip_seconds,
        shards_per_fold=args.shards_per_fold,
        compression=args.compression,
    )
    build_tfrecords(
        args.data_dir, args.out, config, workers=args.workers, skip_bad=args.skip_bad,
        overwrite=args.overwrite, progress=not args.no_progress, strict=args.strict,
    )
    return 0


# --- inspect --------------------------------------------------------------------

def _add_inspect(sub):
    """summarise a TFRecord folder, verify its shards, show the splits

    Print the manifest summary of a TFRecord folder (classes, folds, counts), check that
    every shard is present (--verify: also sha256 and record counts), and show the
    train/validation/test sizes of a protocol, checking that no src_file crosses sides.
    """
    p = _subparser(sub, "inspect", _add_inspect, _run_inspect)
    p.add_argument("data", help="TFRecord folder made by build-tfrecords")
    p.add_argument("--verify", action="store_true", help="recompute sha256 and record counts of every shard")
    proto = p.add_mutually_exclusive_group()
    proto.add_argument("--cv", action="store_true", help="show k-fold cross-validation splits (default)")
    proto.add_argument("--test-fold", type=int, help="show the split testing on this fold")
    proto.add_argument("--split", type=_ratio, help="show a grouped ratio split, e.g. 0.9")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="validation share carved from the training side (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the holdouts (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _run_inspect(args):
    from esc50tf.data import splits
    from esc50tf.data import tfrecords as tfr

    manifest = tfr.read_manifest(args.data)
    tfr.verify_shards(args.data, manifest, full=args.verify)
    index = splits.load_index(args.data)
    warnings = splits.fold_warnings(index, split_chosen=args.split is not None)
    if index["fold"].nunique() < 2 and args.test_fold is None and args.split is None:
        args.split = 0.8  # the one protocol a single fold allows
    try:  # the summary and the warnings are shown even when the protocol cannot be made
        chosen = _protocol_splits(args, index)
        sizes, split_error = {s.name: splits.check_disjoint(s, index) for s in chosen}, None
        warnings += splits.class_warnings(chosen, index, [c["category"] for c in
                                                          manifest["classes"]])
    except Esc50Error as err:
        sizes, split_error = {}, str(err)
    issues = manifest.get("issues", [])
    if args.json:
        print(json.dumps({"counts": manifest["counts"], "folds": manifest["folds"],
                          "num_classes": manifest["num_classes"], "config": manifest["config"],
                          "skipped": manifest["skipped"], "issues": issues,
                          "warnings": warnings, "splits": sizes, "split_error": split_error},
                         indent=2))
        return 1 if split_error else 0
    cfg = manifest["config"]
    print(f"{args.data}: {manifest['counts']['total']} clips, {manifest['num_classes']} classes, "
          f"{len(manifest['shards'])} shards ({'verified' if args.verify else 'present'})")
    print(f"  audio: {cfg['sample_rate']} Hz, {cfg['clip_seconds']} s ({cfg['num_samples']} samples), "
          f"compression {cfg['compression']}")
    print("  clips per fold: " + ", ".join(f"{k}: {v}" for k, v in manifest["counts"]["per_fold"].items()))
    if manifest["skipped"]:
        print(f"  skipped at build time: {len(manifest['skipped'])} clip(s)")
        for item in manifest["skipped"][:10]:
            print(f"    {item['error']}")
    if issues:
        print(f"  suspicious clips kept at build time: {len(issues)} suspicious clip(s) "
              "(build-tfrecords --strict refuses them)")
        for line in tfr.describe_issues(issues):
            print(f"    {line}")
    for line in warnings:
        print(f"  warning: {line}")
    if split_error:
        print(f"esc50tf inspect: error: splits cannot be made: {split_error}", file=sys.stderr)
        return 1
    print("  splits (no src_file on two sides):")
    for name, size in sizes.items():
        print(f"    {name:>10}: " + ", ".join(f"{k} {v}" for k, v in size.items()))
    return 0


def _protocol_splits(args, index):
    from esc50tf.data import splits

    if args.test_fold is not None:
        return [splits.test_fold_split(index, args.test_fold, args.val_fraction, args.seed)]
    if args.split is not None:
        return [splits.ratio_split(index, args.split, args.val_fraction, args.seed)]
    return splits.cv_splits(index, args.val_fraction, args.seed)


# --- synth ------------------------------------------------------------------------

def _add_synth(sub):
    """write a synthetic dataset in the ESC-50 layout

    Write WAV files and meta/esc50.csv (5 folds, src_file/take groups) of synthetic classes:
    harmonic stacks, chirps, noise bands, burst rhythms... placed at random times with
    random gain over background noise. Used by the tests and the demo.
    """
    p = _subparser(sub, "synth", _add_synth, _run_synth)
    p.add_argument("--out", required=True, help="folder to create")
    p.add_argument("--classes", type=_positive_int, default=10, help="number of classes (default: %(default)s)")
    p.add_argument("--clips-per-class", type=_positive_int, default=40, help="clips per class (default: %(default)s)")
    p.add_argument("--sample-rate", type=_positive_int, default=22050, help="Hz (default: %(default)s)")
    p.add_argument("--clip-seconds", type=_positive_float, default=5.0, help="clip length (default: %(default)s)")
    p.add_argument("--folds", type=_positive_int, default=5, help="number of folds (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing folder")


def _run_synth(args):
    from esc50tf.data.synth import synthesize

    out = synthesize(
        args.out, num_classes=args.classes, clips_per_class=args.clips_per_class,
        sample_rate=args.sample_rate, clip_seconds=args.clip_seconds, num_folds=args.folds,
        seed=args.seed, overwrite=args.overwrite,
    )
    print(f"wrote {args.classes * args.clips_per_class} clips to {out}", file=sys.stderr)
    return 0


# --- demo -------------------------------------------------------------------------

def _add_demo(sub):
    """run the whole job end to end on built-in synthetic data

    Synthesise a small ESC-50-layout dataset (10 classes x 40 clips, 5 s at 16 kHz), build
    TFRecords, check the splits, stream the tf.data pipeline back, then train cnn_small on
    folds 2-5 and evaluate it on the held-out fold 1, writing the full report (report.md,
    confusion matrix, curves) into --out. About 16 minutes on a shared 2-core CPU (measured).
    """
    p = _subparser(sub, "demo", _add_demo, _run_demo)
    p.add_argument("--out", default="esc50tf-demo",
                   help="folder for the data, TFRecords and the run's report, kept afterwards; "
                   "run again, finished steps are reused (default: %(default)s)")
    p.add_argument("--temporary", action="store_true",
                   help="work in a temporary folder, deleted at exit (nothing is kept)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")


def _run_demo(args):
    from esc50tf.demo import run_demo

    run_demo(out=None if args.temporary else args.out, seed=args.seed)
    return 0



# --- shared option tables -------------------------------------------------------------
# (flag, config section, key, argparse kwargs). Defaults are None so that only
# the options a user gives override the preset and any --config file.

def _pair(text):
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX like 10,30, got {text!r}") from None
    return [lo, hi]


def _fmax(text):
    return None if text.lower() == "none" else float(text)


FEATURE_OPTIONS = [
    ("--features", "features", "kind", dict(choices=KINDS, help="front end: " + "; ".join(f"{k}: {s.description}" for k, s in FRONTENDS.items()))),
    ("--n-fft", "features", "n_fft", dict(type=_positive_int, help="FFT size (default 2048)")),
    ("--hop-length", "features", "hop_length", dict(type=_positive_int, help="hop in samples (default 512)")),
    ("--win-length", "features", "win_length", dict(type=_positive_int, help="window length (default n_fft)")),
    ("--window", "features", "window", dict(choices=["hann", "hamming"], help="window (default hann)")),
    ("--n-mels", "features", "n_mels", dict(type=_positive_int, help="Mel bands (default 128)")),
    ("--fmin", "features", "fmin", dict(type=float, help="lowest Mel frequency in Hz (default 0)")),
    ("--fmax", "features", "fmax", dict(type=_fmax, help="highest Mel frequency in Hz (default sample_rate/2)")),
    ("--mel-scale", "features", "mel_scale", dict(choices=["slaney", "htk"], help="Mel scale (default slaney, as librosa)")),
    ("--norm", "features", "norm", dict(choices=["slaney", "none"], help="filter-bank normalisation (default slaney)")),
    ("--power", "features", "power", dict(type=float, choices=[1.0, 2.0], help="1 magnitude, 2 power (default 2)")),
    ("--log", "features", "log", dict(choices=["db", "ln", "none"], help="log scaling (default db: 10 log10(max(S, 1e-10)))")),
    ("--top-db", "features", "top_db", dict(type=float, help="clip at this many dB below each clip's peak (default: no clipping)")),
    ("--n-mfcc", "features", "n_mfcc", dict(type=_positive_int, help="MFCC coefficients (default 20)")),
    ("--deltas", "features", "deltas", dict(type=int, choices=[0, 1, 2], help="MFCC delta orders appended (default 0)")),
]

TRAIN_OPTIONS = [
    ("--val-fraction", "train", "val_fraction", dict(type=float, help="validation share carved from the training side by src_file (default 0.1; 0: train on all of it)")),
    ("--epochs", "train", "epochs", dict(type=_positive_int, help="maximum epochs (early stopping may end sooner)")),
    ("--batch-size", "train", "batch_size", dict(type=_positive_int, help="batch size per replica")),
    ("--optimizer", "train", "optimizer", dict(choices=["adam", "adamw", "sgd", "adagrad"], help="optimizer")),
    ("--lr", "train", "lr", dict(type=_positive_float, help="learning rate")),
    ("--weight-decay", "train", "weight_decay", dict(type=float, help="decoupled weight decay (adamw, sgd)")),
    ("--momentum", "train", "momentum", dict(type=float, help="SGD momentum (default 0.9)")),
    ("--trunk-lr-scale", "train", "trunk_lr_scale", dict(type=_positive_float, help="learning-rate factor of a pretrained PANNs trunk, in (0, 1] (adam/adamw; the finetune preset: 0.1)")),
    ("--lr-patience", "train", "lr_patience", dict(type=_positive_int, help="ReduceLROnPlateau patience (default 5, factor 0.2)")),
    ("--early-stopping-patience", "train", "early_stopping_patience", dict(type=int, help="EarlyStopping patience on validation loss; 0: off (default preset: 0; seed: 10)")),
    ("--schedule", "train", "schedule", dict(choices=list(recipe.SCHEDULES), help="learning rate: plateau (ReduceLROnPlateau on validation), cosine decay over the epoch budget, or constant (default preset: cosine; seed: plateau)")),
    ("--min-lr", "train", "min_lr", dict(type=float, help="floor of the cosine and plateau schedules (default 1e-5)")),
    ("--warmup-epochs", "train", "warmup_epochs", dict(type=float, help="linear warmup epochs before cosine or constant (default preset: 5)")),
    ("--min-val-per-class", "train", "min_val_per_class", dict(type=float, help="validation clips per class below which early stopping and plateau cuts are off (default preset: 5; seed: 0)")),
    ("--final-weights", "train", "final_weights", dict(choices=list(recipe.FINAL_WEIGHTS), help="the evaluated and saved model: best by validation, last epoch, ema or swa average (default preset: swa; seed: best)")),
    ("--ema-momentum", "train", "ema_momentum", dict(type=float, help="momentum of --final-weights ema (default 0.99)")),
    ("--swa-fraction", "train", "swa_fraction", dict(type=float, help="share of the last epochs averaged by --final-weights swa (default 0.25)")),
    ("--label-smoothing", "train", "label_smoothing", dict(type=float, help="cross-entropy label smoothing (default 0)")),
    ("--balance", "train", "balance", dict(choices=list(recipe.BALANCE), help="class_weights: weight classes by n / (k * count) for unbalanced data (default none)")),
    ("--mixed-precision", "train", "mixed_precision", dict(choices=["auto", "off", "bf16", "fp16"], help="auto: bf16 on TPUs and GPUs that support it, off on CPU")),
    ("--strategy", "train", "strategy", dict(choices=["auto", "default", "one_device", "mirrored", "multiworker", "tpu"], help="tf.distribute strategy (default auto)")),
    ("--devices", "train", "devices", dict(metavar="DEVICES", help="devices for mirrored / one_device, e.g. gpu:0,gpu:1 (default: all local GPUs)")),
    ("--tpu", "train", "tpu", dict(metavar="NAME|local", help="TPU to use with --strategy tpu or auto: its name, or local on a TPU VM")),
    ("--data-service", "train", "data_service", dict(metavar="grpc://HOST:PORT", help="run the training input pipeline on this tf.data service (see esc50tf data-service)")),
    ("--scale-lr", "train", "scale_lr", dict(action="store_const", const=True, help="multiply the learning rate by the number of replicas (linear scaling rule)")),
    ("--features-on", "train", "features_on", dict(choices=["device", "host"], help="compute features in the model (device) or in tf.data (host)")),
    ("--seed", "train", "seed", dict(type=int, help="random seed (splits, shuffling, augmentation, initialisation)")),
]

MODEL_OPTIONS = [
    ("--weights", "model", "weights", dict(metavar="NAME|FILE", help="pretrained weights: for cnn14*, hybrid --backbone cnn14 and --classic-features embeddings a PANNs checkpoint name (esc50tf pretrained list) or converted file; for keras.applications backbones a local weights file (e.g. ImageNet notop .h5)")),
    ("--backbone", "model", "backbone", dict(choices=["densenet121", "cnn14", "cnn14_16k"], help="hybrid trunk (default densenet121; cnn14: the PANNs conv blocks, pretrained with --weights)")),
    ("--image-size", "model", "image_size", dict(type=_positive_int, help="resize the spectrogram to a square image (the study: 224)")),
    ("--image-channels", "model", "image_channels", dict(type=int, choices=[1, 3], help="image channels (default 3 with --weights, else 1)")),
    ("--normalization", "model", "normalization", dict(choices=["frequency", "instance", "batch", "none"], help="feature normalisation (default: per-frequency stats from the training folds)")),
    ("--dropout", "model", "dropout", dict(type=float, help="dropout of the dense head")),
    ("--dense-units", "model", "dense_units", dict(type=_positive_int, help="width of the dense head")),
    ("--rnn-units", "model", "rnn_units", dict(type=_positive_int, help="recurrent units per direction (default 64)")),
    ("--attention-units", "model", "attention_units", dict(type=_positive_int, help="attention size of the hybrid (default 64)")),
    ("--classic-features", "model", "classic_features", dict(choices=["stats", "image", "embeddings"], help="knn/svm/random_forest/logreg input: band statistics, the study's image, or PANNs embeddings of --weights (a linear probe)")),
    ("--logreg-c", "model", "logreg_c", dict(type=_positive_float, help="inverse L2 strength of logreg (default 1)")),
]

# Every augmentation's flags come from esc50tf.augment.registry (one entry per augmentation).
AUGMENT_OPTIONS = augment_registry.cli_options({"positive_int": _positive_int, "pair": _pair})


def _add_options(p, table, title):
    group = p.add_argument_group(title)
    for flag, section, key, kwargs in table:
        if "choices" not in kwargs and "metavar" not in kwargs:
            kwargs = {**kwargs, "metavar": key.upper()}
        if "default" not in kwargs.get("help", ""):
            kwargs = {**kwargs, "help": kwargs.get("help", "") + _preset_default(section, key)}
        group.add_argument(flag, dest=f"opt_{key}", default=None, **kwargs)
    return group


def _preset_default(section, key):
    """' (default: V; ...)' for a setting the default preset fixes, else ''."""
    from esc50tf import presets

    value = presets.preset("default", "cnn_small").get(section, {}).get(key)
    if section != "train" or value is None:
        return ""
    shown = value if isinstance(value, str) else f"{value:g}"
    return f" (default: {shown}; --preset seed sets it per model)"


def _overrides(args, *tables):
    out = {}
    for table in tables:
        for _flag, section, key, _ in table:
            value = getattr(args, f"opt_{key}", None)
            if value is None:
                continue
            if key in ("norm", "log") and value == "none":
                value = None
            out.setdefault(section, {})[key] = value
    return out


def _model_names():
    from esc50tf.models import registry

    return registry.names()


# --- models -----------------------------------------------------------------------------

def _add_models(sub):
    """list every model with a one-line description

    List the registered models by family (classic, cnn, rnn, hybrid), one line each. These
    names are what `train --model` and `tune --model` take; an unknown name is an error
    listing them.
    """
    p = _subparser(sub, "models", _add_models, _run_models)
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _run_models(args):
    from esc50tf.models import registry

    specs = registry.specs()
    if args.json:
        print(json.dumps([{"name": s.name, "family": s.family, "description": s.description}
                          for s in specs], indent=2))
        return 0
    for s in specs:
        print(f"{s.name:<14} {s.family:<8} {s.description}")
    return 0


# --- train ------------------------------------------------------------------------------

def _add_train(sub):
    """train and evaluate a model (k-fold CV, a test fold or a grouped ratio split)

    Train MODEL on TFRecords under the official protocol (k-fold CV over every fold by
    default), with validation carved from the training side only, and write report.json/.md,
    confusion_matrix.png, curves.png, per_class_accuracy.png, each split's model.keras and
    SavedModel (model.skops for the scikit-learn models), and config.json into --out. An interrupted run resumes where it stopped when
    started again with the same settings.

    examples:
      esc50tf train --model hybrid --data tfrecords --out runs/hybrid
      esc50tf train --model bigru --preset seed --data tfrecords --out runs/bigru-seed
      esc50tf train --config runs/hybrid/config.json --out runs/hybrid-again
    """
    p = _subparser(sub, "train", _add_train, _run_train,
                   usage="esc50tf train --model MODEL --data DIR --out DIR [options]\n"
        "       esc50tf train --config RUN/config.json [--out DIR] [options]", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help=f"one of: {', '.join(_model_names())} (required unless "
                   "--config names one)")
    p.add_argument("--data", help="TFRecord folder made by build-tfrecords (required unless "
                   "--config names one)")
    p.add_argument("--out", help="run folder to write (required unless --config names one)")
    p.add_argument("--config", help="a config.json of an earlier run to repeat (flags override it)")
    p.add_argument("--preset", choices=["default", "seed", "finetune"], default=None,
                   help="default: a strong recipe from the literature; seed: the study's settings for the model; "
                   "finetune: for pretrained PANNs trunks (chosen automatically when --weights is given)")
    proto = p.add_mutually_exclusive_group()
    proto.add_argument("--cv", action="store_true", help="k-fold cross-validation over all folds (default)")
    proto.add_argument("--test-fold", type=int, help="train on the other folds, test on fold K")
    proto.add_argument("--split", type=_ratio, help="grouped, stratified ratio split, e.g. 0.9")
    _add_run_flags(p, "replace a run folder holding another configuration")


def _add_run_flags(p, overwrite_help, every_run=False):
    """The flags `train` and `study` share; `every_run`: study's wording, and no --features
    (study has its own list of front ends)."""
    each = " (every run)" if every_run else ""
    p.add_argument("--jit-compile", action="store_true", default=None, help="XLA-compile the training step")
    p.add_argument("--deterministic", action="store_true", default=None,
                   help="TensorFlow op determinism: bit-identical reruns with the same --seed (slower)")
    p.add_argument("--freeze-backbone", action="store_true", default=None, help="keep the CNN backbone's (or PANNs trunk's) weights fixed; train only the new head")
    p.add_argument("--no-augment", action="store_true", help="switch every augmentation off")
    p.add_argument("--no-export", action="store_true", help="skip the SavedModel export" + each)
    p.add_argument("--overwrite", action="store_true", help=overwrite_help)
    p.add_argument("--quiet", action="store_true", help="one line per epoch instead of progress bars")
    _add_options(p, TRAIN_OPTIONS, "training" + each)
    _add_options(p, MODEL_OPTIONS, "model" + each)
    _add_options(p, [o for o in FEATURE_OPTIONS if not (every_run and o[0] == "--features")],
                 f"front end ({'every run; ' if every_run else ''}librosa names)")
    _add_options(p, AUGMENT_OPTIONS, "augmentation (training batches only)")


def _run_overrides(args, protocol=False):
    """Config overrides from the option tables and the on/off switches of train, study and tune."""
    over = _overrides(args, TRAIN_OPTIONS, MODEL_OPTIONS, FEATURE_OPTIONS, AUGMENT_OPTIONS)
    t = over.setdefault("train", {})
    if protocol:
        if args.test_fold is not None:
            t.update(protocol="test-fold", test_fold=args.test_fold)
        elif args.split is not None:
            t.update(protocol="split", split_ratio=args.split)
        elif args.cv:
            t.update(protocol="cv")
    for switch in ("jit_compile", "deterministic"):
        if getattr(args, switch, None):
            t[switch] = True
    if getattr(args, "no_export", False):
        t["export"] = False
    if getattr(args, "freeze_backbone", None):
        over.setdefault("model", {})["freeze_backbone"] = True
    return over


def train_config_from_args(args):
    """Resolves defaults <- preset <- --config <- flags into a RunConfig."""
    from esc50tf.run_config import resolve_config

    base = {}
    if args.config:
        try:
            with open(args.config) as f:
                base = json.load(f)
        except (OSError, ValueError) as err:
            raise Esc50Error(f"{args.config}: cannot read config ({err})") from None
    model = args.model or base.get("model", {}).get("name")
    if not model:
        raise Esc50Error("--model is required (or --config with a model)")
    preset = args.preset or base.get("train", {}).get("preset", "default")
    over = _run_overrides(args, protocol=True)
    for key in ("data", "out"):
        if getattr(args, key):
            over["train"][key] = getattr(args, key)
    cfg = resolve_config(model, preset, base=base, overrides=over)
    if args.opt_weights is not None:
        from esc50tf.models import registry

        def takes_weights(spec):
            return "weights" in spec.settings and (
                spec.keras or spec.name == model and cfg.model.classic_features == "embeddings")

        if not takes_weights(registry.get(model)):
            takers = [s.name for s in registry.specs() if s.keras and "weights" in s.settings]
            raise Esc50Error(
                f"--weights loads a backbone or a pretrained trunk, which {model} does not have; "
                f"models that take it: {', '.join(takers)}, and the classic models with "
                "--classic-features embeddings")
    if args.no_augment:
        import dataclasses

        from esc50tf.augment import AugmentConfig

        cfg = dataclasses.replace(cfg, augment=AugmentConfig())
    return cfg


def _run_train(args):
    from esc50tf.train import train

    cfg = train_config_from_args(args)
    train(cfg, overwrite=args.overwrite, verbose=2 if args.quiet else 1)
    return 0


# --- evaluate ---------------------------------------------------------------------------

def _add_evaluate(sub):
    """recompute a run's report from its saved models

    Load each split's saved model, predict its test side again (from --data, default the
    run's TFRecords) and rewrite the report and plots. A scikit-learn split with only the
    model.pkl of an older esc50tf gets it re-saved as model.skops.
    """
    p = _subparser(sub, "evaluate", _add_evaluate, _run_evaluate)
    p.add_argument("run", help="run folder written by esc50tf train")
    p.add_argument("--data", help="TFRecord folder (default: the one the run used)")


def _run_evaluate(args):
    from esc50tf.evaluate import evaluate_run

    report = evaluate_run(args.run, args.data, log=lambda m: print(m, file=sys.stderr))
    print(f"{report['model']}: accuracy {100 * report['accuracy']:.1f}% +- "
          f"{100 * report['accuracy_std']:.1f}, macro F1 {report['macro_f1']:.3f} "
          f"({args.run}/report.md)")
    return 0


# --- predict ----------------------------------------------------------------------------

def _add_predict(sub):
    """top-k classes for audio files with a saved model

    Predict with a run folder (averaging its split models; Keras or scikit-learn runs, whose
    features are computed as in training) or one .keras file. Any sample rate, length and
    channel count: mixed to mono, resampled, padded, or cut into half-overlapping windows
    whose probabilities are averaged.
    """
    p = _subparser(sub, "predict", _add_predict, _run_predict)
    p.add_argument("model", help="run folder, .keras file, or an export: its folder, a .tflite "
                   "file or a SavedModel folder")
    p.add_argument("files", nargs="+", help="audio files (WAV, FLAC, OGG, ...)")
    p.add_argument("--top-k", type=_positive_int, default=5, help="classes to show (default: %(default)s)")
    p.add_argument("--sample-rate", type=_positive_int, default=None,
                   help="model sample rate, if it cannot be read from the run")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    t = p.add_argument_group(
        "timeline", "--timeline: classify each file window by window, streaming it in blocks, "
        "and write OUT/<stem>/windows.csv, timeline.json (windows and merged events) and "
        "timeline.png. MODEL may also be an export folder, a SavedModel or a .tflite file")
    t.add_argument("--timeline", action="store_true", help="write a timeline per file")
    t.add_argument("--hop", type=_positive_float, default=None,
                   help="seconds between windows (default: half the model's window; a SED "
                   "model's frame-wise timeline rounds it to whole steps, 0.32 s for cnn14_sed)")
    t.add_argument("--threshold", type=_ratio, default=0.5,
                   help="top-class probability a window needs to be part of an event "
                   "(default: %(default)s)")
    t.add_argument("--smooth", type=_positive_int, default=3,
                   help="median filter over this many windows (odd) before events are "
                   "found; 1: none (default: %(default)s)")
    t.add_argument("--out", default="timeline",
                   help="folder for the timelines (default: %(default)s)")
    t.add_argument("--overwrite", action="store_true", help="replace existing timelines")


def _run_predict(args):
    from esc50tf.predict import load_predictor, predict_files

    if args.timeline:
        from esc50tf.timeline import run_timelines

        return run_timelines(args.model, args.files, args.out, hop=args.hop,
                             threshold=args.threshold, smooth=args.smooth,
                             overwrite=args.overwrite,
                             sample_rate=args.sample_rate, as_json=args.json)

    predictor = load_predictor(args.model, args.sample_rate)
    results, errors = predict_files(predictor, args.files, args.top_k)
    if args.json:
        print(json.dumps({"results": results,
                          "errors": [{"file": f, "error": e} for f, e in errors]}, indent=2))
    else:
        for r in results:
            print(f"{r['file']} ({r['seconds']:g} s)")
            for rank, t in enumerate(r["top"], 1):
                print(f"  {rank}. {t['class']:<24} {t['probability']:.3f}")
    for _f, e in errors:
        print(f"esc50tf predict: error: {e}", file=sys.stderr)
    return 1 if errors else 0


# --- export -----------------------------------------------------------------------------

def _add_export(sub):
    """export a trained run as a SavedModel or TFLite model, front end inside

    Export a run's Keras model(s) (the average of every split, or one with --split) as one
    model taking raw mono waveforms at the run's sample rate, with the STFT / log-Mel / MFCC
    front end inside and only builtin TFLite ops. Writes the model, labels.txt and
    model_card.json (with parity figures measured on the test clips against the Keras model)
    into OUT, via a staging folder.
    """
    from esc50tf.export import FORMATS, QUANTIZATIONS, ExportConfig

    p = _subparser(sub, "export", _add_export, _run_export)
    p.add_argument("run", help="run folder made by esc50tf train")
    p.add_argument("--format", choices=FORMATS, default="tflite", help="default: %(default)s")
    p.add_argument("--quantize", choices=QUANTIZATIONS, default="none",
                   help="TFLite only: float16 weights, or int8 post-training quantization "
                   "calibrated on training-side clips (default: %(default)s)")
    p.add_argument("--out", required=True, help="export folder (must not exist)")
    p.add_argument("--split", default=None,
                   help="export this split's model (e.g. fold1, or 1) instead of the average")
    p.add_argument("--data", default=None,
                   help="the run's TFRecord folder, if it moved (default: from the run's config)")
    p.add_argument("--calibration-clips", type=_positive_int, default=200,
                   help="int8: at most this many training-side clips (default: %(default)s)")
    p.add_argument("--skip-parity", action="store_true",
                   help="do not measure parity on the test clips (no TFRecords needed; the "
                   "silent, near-silent, clipped and zero-padded clips are still checked)")
    p.add_argument("--min-agreement", type=_fraction, default=ExportConfig.min_agreement,
                   help="fail (writing nothing) below this top-1 agreement with the Keras "
                   "model on the test clips, or on any non-finite output (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="picks the calibration clips")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")


def _run_export(args):
    from esc50tf.export import ExportConfig, export_run

    cfg = ExportConfig(out=args.out, format=args.format, quantize=args.quantize,
                       split=args.split, data=args.data,
                       calibration_clips=args.calibration_clips, parity=not args.skip_parity,
                       min_agreement=args.min_agreement, overwrite=args.overwrite, seed=args.seed)
    card = export_run(args.run, cfg)
    print(json.dumps({"out": args.out, "file": card["file"], "size_bytes": card["size_bytes"],
                      "parity": card["parity"]}, indent=2))
    return 0


# --- features ---------------------------------------------------------------------------

def _add_features(sub):
    """compute STFT / log-Mel / MFCC features of audio files

    Compute features with exactly the layers the models use and write them to an .npz
    (features [n_files, frames, bins] float32, filenames, config JSON); --plot draws
    waveform and features per file.
    """
    p = _subparser(sub, "features", _add_features, _run_features)
    p.add_argument("audio", nargs="+", help="audio files")
    p.add_argument("--kind", choices=KINDS, default="mel", help="feature kind (default: %(default)s)")
    p.add_argument("--out", help="output .npz file (--out, --plot or both)")
    p.add_argument("--plot", help="draw waveform and features per file to this PNG")
    p.add_argument("--sample-rate", type=_positive_int, default=None,
                   help="resample to this rate (default: the first file's rate)")
    p.add_argument("--clip-seconds", type=_positive_float, default=None,
                   help="pad/crop every file to this length (default: pad to the longest)")
    p.add_argument("--center", dest="center", action="store_true", default=None, help="centre frames (default)")
    p.add_argument("--no-center", dest="center", action="store_false", help="do not centre frames")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out / --plot file")
    _add_options(p, [o for o in FEATURE_OPTIONS if o[0] != "--features"], "front end (librosa names)")


def _run_features(args):
    import numpy as np

    from esc50tf.frontend import FeatureConfig
    from esc50tf.featurize import extract_features, plot_features
    from esc50tf.io import atomic_path

    if not (args.out or args.plot):
        raise Esc50Error("nothing to write: give --out FILE.npz, --plot FILE.png or both")
    for target in (args.out, args.plot):
        if target and os.path.exists(target) and not args.overwrite:
            raise Esc50Error(f"{target}: exists; pass --overwrite to replace it")
    settings = _overrides(args, FEATURE_OPTIONS).get("features", {})
    settings["kind"] = args.kind
    if args.center is not None:
        settings["center"] = args.center
    rate = args.sample_rate
    if rate is None:
        rate = _first_rate(args.audio)
    settings["sample_rate"] = rate
    config = FeatureConfig.from_dict(settings)
    feats, names, errors, waves = extract_features(
        args.audio, config, sample_rate=rate, clip_seconds=args.clip_seconds,
        return_waveforms=True)
    for path, message in errors:
        print(f"esc50tf features: error: {message}", file=sys.stderr)
    if names and args.out:
        with atomic_path(args.out) as tmp, open(tmp, "wb") as f:
            np.savez(f, features=feats, filenames=np.array(names),
                     config=json.dumps(config.to_dict()))
        print(f"wrote {len(names)} x {feats.shape[1]} frames x {feats.shape[2]} bins to {args.out}",
              file=sys.stderr)
    if names and args.plot:
        plot_features(waves, feats, names, config, args.plot)
        print(f"plotted to {args.plot}", file=sys.stderr)
    return 1 if errors else 0


def _first_rate(paths):
    import soundfile as sf

    for path in paths:
        try:
            return int(sf.info(path).samplerate)
        except Exception:  # noqa: BLE001 - unreadable files are reported later
            continue
    return 44100


# --- compare ----------------------------------------------------------------------------

def _add_compare(sub):
    """compare finished runs: ranked table, accuracy plot, hard classes

    Read the report.json of finished runs (train run folders, tune folders with best_run/,
    study folders with runs/*) and write comparison.md/.csv (one row per run, ranked by
    accuracy, the best run of each model marked), comparison.png (accuracy +- std over
    folds, by model family), per_class.csv/.png (per-class accuracy, classes x runs), the
    hard classes and the most confused class pairs. Runs measured under another protocol,
    dataset or class list are flagged and not ranked with the rest. A run folder without
    report.json is an error; in a study folder such runs are skipped with a warning.

    examples:
      esc50tf compare runs/hybrid runs/bigru-seed --out comparison
      esc50tf compare study-out tune-out --out comparison
    """
    p = _subparser(sub, "compare", _add_compare, _run_compare,
                   formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run, tune or study folders")
    p.add_argument("--out", default="comparison",
                   help="folder for the comparison files; only those files are replaced "
                   "(default: %(default)s)")
    p.add_argument("--hard-threshold", type=_positive_float, default=0.5,
                   help="a class is hard for a run below this accuracy (default: %(default)s)")
    p.add_argument("--top", type=_positive_int, default=10,
                   help="hard classes and confused pairs to list (default: %(default)s)")


def _run_compare(args):
    from esc50tf.compare import compare

    result = compare(args.runs, args.out, hard_threshold=args.hard_threshold, top=args.top,
                     log=lambda m: print(f"esc50tf compare: {m}", file=sys.stderr))
    ranked = [r for r in result.rows if r["comparable"]]
    for r in ranked[:10]:
        acc = f"{100 * r['accuracy']:5.1f}%" + (f" +- {100 * r['accuracy_std']:.1f}"
                                                if r["splits"] > 1 else "")
        print(f"{r['rank']:>3}. {r['run']:<36} {acc}  macro F1 {r['macro_f1']:.3f}"
              + ("  (best of model)" if r["best_of_model"] else ""))
    print(f"{len(ranked)} run(s) ranked, {len(result.rows) - len(ranked)} not comparable, "
          f"{len(result.skipped)} skipped; wrote {os.path.join(args.out, 'comparison.md')}")
    return 0


# --- study ------------------------------------------------------------------------------

def _study_protocol(values):
    """`cv`, `test-fold K` or `split R` -> train overrides."""
    name, rest = values[0], values[1:]
    try:
        if name == "cv" and not rest:
            return {"protocol": "cv"}
        if name == "test-fold" and len(rest) == 1:
            return {"protocol": "test-fold", "test_fold": int(rest[0])}
        if name == "split" and len(rest) == 1:
            return {"protocol": "split", "split_ratio": _ratio(rest[0])}
    except (ValueError, argparse.ArgumentTypeError):
        pass
    raise Esc50Error(f"--protocol {' '.join(values)!r} is not allowed; allowed: cv, "
                     "test-fold K (e.g. test-fold 1), split R (e.g. split 0.9)")


def _float_list(text):
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0.01,0.001, got {text!r}") from None
    if not values or any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected numbers > 0 like 0.01,0.001, got {text!r}")
    return values


def _add_study(sub):
    """train every model x front end (x optimizer x lr), then compare them

    Run `esc50tf train` for each model x feature kind (with --grid also x optimizer x
    learning rate: the study's Adam, SGD, Adagrad x 0.01, 0.001, 0.0001) into
    OUT/runs/<model>-<features>-<preset>[-<optimizer>-lr<lr>]/, then `esc50tf compare` over
    them into OUT. Started again, finished runs are skipped and an interrupted one resumes.
    A run that fails is recorded in OUT/failures.json and the study goes on; the exit status
    is non-zero if any run failed. The scikit-learn models run once (their input is
    --classic-features, not --features).

    examples:
      esc50tf study --data tfrecords --out study --models all --preset seed
      esc50tf study --data tfrecords --out study-grid --models rnn --grid --features mel,mfcc
      esc50tf study --data tfrecords --out study-cv --models gru,svm --protocol cv --epochs 30
    """
    p = _subparser(sub, "study", _add_study, _run_study,
                   formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="TFRecord folder made by build-tfrecords")
    p.add_argument("--out", required=True, help="study folder (runs/, failures.json, comparison)")
    p.add_argument("--models", default="classic,cnn_small,gru",
                   help="all, or comma-separated models and/or families "
                   f"(classic, cnn, rnn, hybrid); models: {', '.join(_model_names())} "
                   "(default: %(default)s, the quick ones: hours on a CPU; all is days)")
    p.add_argument("--preset", choices=["seed", "default"], default="seed",
                   help="seed: the study's settings per model; default: the strong recipe "
                   "(default: %(default)s)")
    proto = p.add_mutually_exclusive_group()
    proto.add_argument("--protocol", nargs="+", metavar=("NAME", "K|R"),
                       help="cv, test-fold K or split R (default: the preset's: seed: split "
                       "0.9, grouped by recording; default: cv)")
    proto.add_argument("--cv", action="store_true", help="same as --protocol cv")
    proto.add_argument("--test-fold", type=int, help="same as --protocol test-fold K")
    proto.add_argument("--split", type=_ratio, help="same as --protocol split R")
    p.add_argument("--features", dest="study_features", default=None, metavar="KINDS",
                   help=f"comma-separated front ends from {', '.join(KINDS)} (default: the "
                   "preset's, mel)")
    p.add_argument("--grid", action="store_true",
                   help="expand every Keras model over optimizer x learning rate")
    p.add_argument("--grid-optimizers", default=None, metavar="LIST",
                   help="grid optimizers, comma-separated (default: adam,sgd,adagrad; implies --grid)")
    p.add_argument("--grid-lrs", type=_float_list, default=None, metavar="LIST",
                   help="grid learning rates (default: 0.01,0.001,0.0001; implies --grid)")
    _add_run_flags(p, "redo every run, finished or not", every_run=True)


def _run_study(args):
    from esc50tf import presets, study

    over = _run_overrides(args, protocol=True)
    if args.protocol:
        over["train"].update(_study_protocol(args.protocol))
    grid = bool(args.grid or args.grid_optimizers or args.grid_lrs)
    optimizers = (tuple(o.strip() for o in args.grid_optimizers.split(",") if o.strip())
                  if args.grid_optimizers else presets.STUDY_GRID_OPTIMIZERS)
    runs = study.plan_study(
        args.data, args.out, models=args.models, preset=args.preset,
        kinds=study.parse_kinds(args.study_features) if args.study_features else None,
        grid=grid, optimizers=optimizers, lrs=tuple(args.grid_lrs or presets.STUDY_GRID_LRS),
        overrides=over, no_augment=args.no_augment)
    print(f"esc50tf study: {len(runs)} run(s) into {os.path.join(args.out, 'runs')}",
          file=sys.stderr)
    result = study.run_study(runs, args.out, overwrite=args.overwrite,
                             verbose=2 if args.quiet else 1)
    return 1 if result.failed else 0


# --- tune -------------------------------------------------------------------------------

def _add_tune(sub):
    """search hyperparameters with KerasTuner, then retrain and test the best settings

    examples:
      esc50tf tune --model hybrid --data tfrecords --out tune/hybrid --max-trials 30 --epochs 40
      esc50tf tune --model gru,bigru,cnn_small --tuner bayesian --data tfrecords --out tune/small
      esc50tf tune --model auto --tuner hyperband --epochs 60 --data tfrecords --out tune/all --cv
      esc50tf tune --model gru --space space.json --data tfrecords --out tune/gru   # see below
      esc50tf tune ... --out tune/gru --resume      # continue an interrupted search
      esc50tf train --config tune/gru/best_hyperparameters.json --out runs/gru-best

    space.json (JSON; YAML when PyYAML is installed) overrides the default space:
      {"lr": {"type": "float", "min": 1e-4, "max": 1e-2, "sampling": "log"},
       "optimizer": {"type": "choice", "values": ["adam", "sgd"]},
       "n_mels": {"type": "fixed", "value": 64}, "dropout": null}
    types: float / int (min, max, optional step, sampling linear|log|reverse_log),
    choice (values), fixed (value), boolean; null: not searched (preset or flag value).
    """
    import textwrap

    from esc50tf.models import registry
    from esc50tf.tune import OBJECTIVES, PARAMS, TUNERS

    about = (
        "Search optimizer, learning rate, weight decay, batch size, model, front end, "
        "augmentation strengths, dropout and model-specific sizes with KerasTuner. Trials train "
        "on the folds other than the test fold and are scored on a validation set carved from "
        "them by src_file; the test fold is not read until the best settings, retrained with "
        "esc50tf train into OUT/best_run/, are tested on it (or on every fold with --cv). "
        "Writes OUT/trials.csv, trials.md, objective.png and best_hyperparameters.json (usable "
        "as esc50tf train --config). A flag that names a searched setting (--lr, --batch-size, "
        "--n-mels...) fixes it. Searched settings: " + ", ".join(PARAMS) + ".")
    p = _subparser(sub, "tune", _add_tune, _run_tune, description=textwrap.fill(about, width=90),
                   formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cnn_small",
                   help="a model, several separated by commas (searched as a choice), or auto "
                   f"(every Keras model): {', '.join(s.name for s in registry.specs() if s.keras)} "
                   "(default: %(default)s, the quickest to train)")
    p.add_argument("--data", required=True, help="TFRecord folder made by build-tfrecords")
    p.add_argument("--out", required=True, help="search folder to write")
    p.add_argument("--tuner", choices=TUNERS, default="random",
                   help="KerasTuner search algorithm (default: %(default)s)")
    p.add_argument("--max-trials", type=_positive_int, default=None,
                   help="trials in all (default: 10; hyperband: its own schedule)")
    p.add_argument("--epochs", type=_positive_int, default=20,
                   help="epochs per trial; hyperband: the most a trial trains (default: %(default)s)")
    p.add_argument("--final-epochs", type=_positive_int, default=None,
                   help="epochs when retraining the best settings (default: --epochs)")
    p.add_argument("--objective", choices=OBJECTIVES, default="val_accuracy",
                   help="validation metric to optimise (default: %(default)s)")
    p.add_argument("--test-fold", type=int, default=None,
                   help="fold kept out of the search and tested at the end (default: the first fold)")
    p.add_argument("--cv", action="store_true",
                   help="evaluate the best settings with k-fold CV over every fold (only the "
                   "test fold's score is untouched by the search)")
    p.add_argument("--split", type=_ratio, default=None,
                   help="instead of a test fold, hold out the test side of a grouped, stratified "
                   "ratio split, e.g. 0.8 (for uneven folds or a single fold)")
    p.add_argument("--space", metavar="FILE", help="search-space file (JSON, or YAML with PyYAML)")
    p.add_argument("--preset", choices=["default", "seed"], default="default",
                   help="settings every trial starts from (default: %(default)s)")
    p.add_argument("--max-failures", type=int, default=3,
                   help="stop after this many failed trials in a row; 0: never (default: %(default)s)")
    p.add_argument("--no-retrain", action="store_true",
                   help="stop after the search (best_hyperparameters.json is still written)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the search in --out; finished trials are kept")
    again.add_argument("--overwrite", action="store_true", help="delete --out and start again")
    p.add_argument("--jit-compile", action="store_true", default=None, help="XLA-compile the training step")
    p.add_argument("--deterministic", action="store_true", default=None,
                   help="TensorFlow op determinism (slower)")
    p.add_argument("--no-export", action="store_true", help="no SavedModel export of the retrained model")
    p.add_argument("--quiet", action="store_true", help="one line per epoch instead of progress bars")
    # --epochs is per trial (above); trials compute features in the model and read the
    # shards themselves (no tf.data service).
    _add_options(p, [o for o in TRAIN_OPTIONS
                     if o[0] not in ("--epochs", "--features-on", "--data-service")],
                 "training (a flag naming a searched setting fixes it)")
    _add_options(p, MODEL_OPTIONS, "model")
    _add_options(p, FEATURE_OPTIONS, "front end (librosa names)")
    _add_options(p, AUGMENT_OPTIONS, "augmentation (training batches only)")


def _run_tune(args):
    from esc50tf.tune import TuneConfig, read_space_file, tune

    over = _run_overrides(args)
    config = TuneConfig(
        data=args.data, out=args.out, models=tuple(args.model.split(",")), tuner=args.tuner,
        max_trials=args.max_trials, epochs=args.epochs, final_epochs=args.final_epochs,
        objective=args.objective, test_fold=args.test_fold, cv=args.cv, preset=args.preset,
        split_ratio=args.split,
        space=read_space_file(args.space) if args.space else None, overrides=over,
        max_failures=args.max_failures, retrain=not args.no_retrain)
    tune(config, resume=args.resume, overwrite=args.overwrite, verbose=2 if args.quiet else 1)
    return 0


# --- data-service -----------------------------------------------------------------------

def _add_data_service(sub):
    """run a tf.data service dispatcher or worker

    Run one server of a tf.data service cluster until Ctrl-C: one dispatcher, then workers
    on any machines that can read the TFRecords. `esc50tf train --data-service
    grpc://DISPATCHER:PORT` then runs its training input pipeline there.

    example:
      esc50tf data-service dispatcher --port 5050
      esc50tf data-service worker --dispatcher host1:5050 --port 5051
      esc50tf train --model cnn_small --data gs://bucket/tfrecords --out runs/a --data-service grpc://host1:5050
    """
    p = _subparser(sub, "data-service", _add_data_service,
                   formatter_class=argparse.RawDescriptionHelpFormatter)
    roles = p.add_subparsers(dest="role", metavar="ROLE")
    roles.required = True
    d = roles.add_parser("dispatcher", help="hand out work to the workers",
                         description="Start a tf.data service dispatcher and wait for Ctrl-C.")
    d.add_argument("--port", type=int, default=5050, help="port to listen on (default: %(default)s)")
    d.add_argument("--work-dir", default=None,
                   help="folder (local or gs://) for the dispatcher's journal, so a restarted "
                   "dispatcher recovers its jobs (default: none)")
    d.set_defaults(handler=_run_data_service)
    w = roles.add_parser("worker", help="run input pipelines for the dispatcher",
                         description="Start a tf.data service worker and wait for Ctrl-C.")
    w.add_argument("--dispatcher", required=True, metavar="HOST:PORT",
                   help="the dispatcher's address (grpc:// optional)")
    w.add_argument("--port", type=int, default=0, help="port to listen on (default: any free one)")
    w.add_argument("--host", default=None,
                   help="name or IP under which trainers reach this worker (default: this "
                   "machine's host name)")
    w.set_defaults(handler=_run_data_service)


def _run_data_service(args):
    import socket

    from esc50tf.data import service as data_service

    if args.role == "dispatcher":
        server = data_service.start_dispatcher(args.port, work_dir=args.work_dir)
        address = f"grpc://{socket.gethostname()}:{data_service.bound_port(server)}"
        data_service.serve(server, "tf.data service dispatcher", address)
        return 0
    host = args.host or socket.gethostname()
    server = data_service.start_worker(args.dispatcher, port=args.port, host=host)
    data_service.serve(server, f"tf.data service worker (dispatcher {args.dispatcher})",
                       f"{host}:{data_service.bound_port(server)}")
    return 0


# --- embed ------------------------------------------------------------------------------

def _add_embed(sub):
    """clip embeddings from a pretrained PANNs model into an .npz (for linear probes)

    Compute the fc1 embedding of every clip once (inference mode, no augmentation) with
    pretrained PANNs weights, and write an .npz with 'embeddings' [clips, dim] and
    'filenames' (plus 'labels' and 'folds' for a TFRecord folder). Audio is mixed to mono
    and resampled to the model's rate.

    examples:
      esc50tf embed cnn14 tfrecords --out embeddings.npz
      esc50tf embed weights/cnn14.npz dog.wav recordings/ --out mine.npz
    """
    p = _subparser(sub, "embed", _add_embed, _run_embed,
                   formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", metavar="WEIGHTS",
                   help="a checkpoint name from `esc50tf pretrained list` (downloaded) or a converted weights file")
    p.add_argument("inputs", nargs="+", metavar="AUDIO_OR_TFRECORDS",
                   help="audio files and folders, or one TFRecord folder")
    p.add_argument("--out", required=True, help="the .npz to write")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="clips per batch for TFRecords (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--skip-bad", action="store_true", help="leave out audio files that do not decode (listed on stderr); by default the first one stops the command before anything is written")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run_embed(args):
    from esc50tf.embed import embed

    n, errors = embed(args.weights, args.inputs, args.out, overwrite=args.overwrite,
                      batch_size=args.batch_size, progress=not args.no_progress,
                      skip_bad=args.skip_bad)
    for path, message in errors:
        print(f"esc50tf embed: skipped {message}", file=sys.stderr)
    print(f"wrote {n} embeddings to {args.out}" + (f" ({len(errors)} files skipped)" if errors else ""))
    return 0


# --- entry point --------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(
        prog="esc50tf",
        description="Train and tune environmental-sound classifiers on ESC-50 with "
        "TensorFlow + Keras 3: TFRecord shards, a tf.data pipeline, features on the accelerator.",
        epilog="Start with: esc50tf demo. Each command has --help.",
    )
    parser.add_argument("--version", action="version", version=f"esc50tf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in (_add_download, _add_build, _add_inspect, _add_synth, _add_models, _add_train,
                _add_tune, _add_evaluate, _add_predict, _add_export, _add_features, _add_demo, _add_compare,
                _add_study, _add_data_service):
        add(sub)
    pretrained_cli.add_parser(sub)
    _add_embed(sub)
    for p in sub.choices.values():
        p.add_argument("--verbose", action="store_true",
                       help="show TensorFlow's own start-up and log messages (also: "
                       "ESC50TF_VERBOSE=1)")
    return parser


# Commands that run TensorFlow; their start-up log lines are dropped (esc50tf.startup).
_TF_COMMANDS = ("build-tfrecords", "train", "tune", "evaluate", "predict", "features", "demo",
                "study", "data-service", "export", "embed")


def main(argv=None):
    from esc50tf import cleanup, startup

    parser = build_parser()
    args = parser.parse_args(argv)
    cleanup.keep_interrupts()
    quiet = not startup.verbose_requested(getattr(args, "verbose", False))
    if not quiet:  # the library's own filters (esc50tf.startup.quiet_native) read it
        os.environ[startup.VERBOSE_ENV] = "1"
    if quiet:  # also for commands that load TensorFlow only now and then
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.command == "demo" or getattr(args, "deterministic", None):
        # Bit-identical reruns need one inter-op thread, fixed when TensorFlow
        # starts (esc50tf.distribute.enable_determinism); TensorFlow is not loaded yet.
        from esc50tf.distribute import INTER_OP_ENV

        os.environ.setdefault(INTER_OP_ENV, "1")
    try:
        if quiet and (args.command in _TF_COMMANDS or getattr(args, "verify", False)
                      or getattr(args, "action", None) in ("download", "convert")):
            startup.quiet_tensorflow()
        rc = args.handler(args)
        cleanup.raise_if_interrupted()  # a Ctrl-C swallowed after the last safe point
        return rc
    except Esc50Error as err:
        print(f"esc50tf {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Stopping now: a second Ctrl-C (or one re-raised late by cleanup.keep_interrupts)
        # must not turn this clean exit into a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        cleanup.interrupt_reported()
        print(f"esc50tf {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
