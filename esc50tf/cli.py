"""The `esc50tf` command line: one subcommand per job.

Thin by design: parse flags, build configs, call library functions. Heavy
modules (TensorFlow, Keras) are imported inside the handlers, so
`esc50tf --help` answers at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from esc50tf import __version__
from esc50tf.errors import Esc50Error


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _ratio(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a ratio like 0.9, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a ratio in (0, 1) like 0.9, got {text!r}")
    return value


# --- download -----------------------------------------------------------------

def _add_download(sub):
    from esc50tf.data.download import DEFAULT_URL

    p = sub.add_parser(
        "download",
        help="download and unpack ESC-50",
        description="Download the ESC-50 archive, unpack it and verify the layout "
        "(meta/esc50.csv and every WAV it lists under audio/). A complete copy "
        "already in DEST is not downloaded again.",
    )
    p.add_argument("--dest", default="ESC-50", help="dataset folder to create (default: %(default)s)")
    p.add_argument("--url", default=DEFAULT_URL, help="archive URL, http(s):// or file:// (default: %(default)s)")
    p.add_argument("--keep-archive", action="store_true", help="keep the zip as DEST/esc50.zip")
    p.add_argument("--overwrite", action="store_true", help="replace an incomplete or different copy in DEST")
    p.set_defaults(handler=_run_download)


def _run_download(args):
    from esc50tf.data.download import download

    download(args.dest, args.url, overwrite=args.overwrite, keep_archive=args.keep_archive)
    return 0


# --- build-tfrecords ------------------------------------------------------------

def _add_build(sub):
    p = sub.add_parser(
        "build-tfrecords",
        help="turn an ESC-50-layout folder into TFRecord shards per fold",
        description="Validate meta/esc50.csv, decode every clip (any common WAV bit depth, "
        "FLAC, OGG; mixed to mono; resampled with soxr; padded/cropped), and write "
        "TFRecord shards grouped by fold, plus clips.csv and manifest.json (written last). "
        "Rebuilding with the same inputs and settings is a no-op.",
        epilog="example: esc50tf build-tfrecords --data-dir ESC-50 --out tfrecords",
    )
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
                   help="leave out clips that are missing or fail to decode (listed, and recorded in the manifest)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing build made with other settings or inputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_run_build)


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
        overwrite=args.overwrite, progress=not args.no_progress,
    )
    return 0


# --- inspect --------------------------------------------------------------------

def _add_inspect(sub):
    p = sub.add_parser(
        "inspect",
        help="summarise a TFRecord folder, verify its shards, show the splits",
        description="Print the manifest summary of a TFRecord folder (classes, folds, counts), "
        "check that every shard is present (--verify: also sha256 and record counts), and show "
        "the train/validation/test sizes of a protocol, checking that no src_file crosses sides.",
    )
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
    p.set_defaults(handler=_run_inspect)


def _run_inspect(args):
    from esc50tf.data import splits
    from esc50tf.data import tfrecords as tfr

    manifest = tfr.read_manifest(args.data)
    tfr.verify_shards(args.data, manifest, full=args.verify)
    index = splits.load_index(args.data)
    chosen = _protocol_splits(args, index)
    sizes = {s.name: splits.check_disjoint(s, index) for s in chosen}
    if args.json:
        print(json.dumps({"counts": manifest["counts"], "folds": manifest["folds"],
                          "num_classes": manifest["num_classes"], "config": manifest["config"],
                          "skipped": manifest["skipped"], "splits": sizes}, indent=2))
        return 0
    cfg = manifest["config"]
    print(f"{args.data}: {manifest['counts']['total']} clips, {manifest['num_classes']} classes, "
          f"{len(manifest['shards'])} shards ({'verified' if args.verify else 'present'})")
    print(f"  audio: {cfg['sample_rate']} Hz, {cfg['clip_seconds']} s ({cfg['num_samples']} samples), "
          f"compression {cfg['compression']}")
    print("  clips per fold: " + ", ".join(f"{k}: {v}" for k, v in manifest["counts"]["per_fold"].items()))
    if manifest["skipped"]:
        print(f"  skipped at build time: {len(manifest['skipped'])} clip(s)")
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
    p = sub.add_parser(
        "synth",
        help="write a synthetic dataset in the ESC-50 layout",
        description="Write WAV files and meta/esc50.csv (5 folds, src_file/take groups) of "
        "synthetic classes: harmonic stacks, chirps, noise bands, burst rhythms... placed at "
        "random times with random gain over background noise. Used by the tests and the demo.",
    )
    p.add_argument("--out", required=True, help="folder to create")
    p.add_argument("--classes", type=_positive_int, default=10, help="number of classes (default: %(default)s)")
    p.add_argument("--clips-per-class", type=_positive_int, default=40, help="clips per class (default: %(default)s)")
    p.add_argument("--sample-rate", type=_positive_int, default=22050, help="Hz (default: %(default)s)")
    p.add_argument("--clip-seconds", type=_positive_float, default=5.0, help="clip length (default: %(default)s)")
    p.add_argument("--folds", type=_positive_int, default=5, help="number of folds (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    p.set_defaults(handler=_run_synth)


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
    p = sub.add_parser(
        "demo",
        help="run the whole job end to end on built-in synthetic data",
        description="Synthesise a small ESC-50-layout dataset, build TFRecords, check the splits "
        "and stream the tf.data pipeline back. Takes about a minute on 2 CPU cores.",
    )
    p.add_argument("--out", default=None,
                   help="keep everything in this folder (default: a temporary folder, deleted)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.set_defaults(handler=_run_demo)


def _run_demo(args):
    from esc50tf.demo import run_demo

    run_demo(out=args.out, seed=args.seed)
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
    for add in (_add_download, _add_build, _add_inspect, _add_synth, _add_demo):
        add(sub)
    return parser


def main(argv=None):
    # TensorFlow's C++ start-up chatter hides our own messages; users can override.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except Esc50Error as err:
        print(f"esc50tf {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"esc50tf {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
