"""Data commands: download, build-tfrecords, inspect, synth, demo, data-service."""

from __future__ import annotations

import json
import sys

from esc50tf.cli.command import Command
from esc50tf.cli.options import (add_config_options, config_from_args, positive_float,
                                 positive_int, ratio)


# --- download -----------------------------------------------------------------

def _add_download(p):
    """download and unpack ESC-50

    Download the ESC-50 archive, unpack it and verify the layout (meta/esc50.csv and every
    WAV it lists under audio/). A complete copy already in DEST is not downloaded again.
    """
    from esc50tf.data.download import DEFAULT_URL

    p.add_argument("--dest", default="ESC-50", help="dataset folder to create (default: %(default)s)")
    p.add_argument("--url", default=DEFAULT_URL, help="archive URL, http(s):// or file:// (default: %(default)s)")
    p.add_argument("--keep-archive", action="store_true", help="keep the zip as DEST/esc50.zip")
    p.add_argument("--overwrite", action="store_true", help="replace an incomplete or different copy in DEST")


def _run_download(args):
    from esc50tf.data.download import download

    download(args.dest, args.url, overwrite=args.overwrite, keep_archive=args.keep_archive,
             progress=not args.quiet)
    return 0


# --- build-tfrecords ------------------------------------------------------------

def _add_build(p):
    """turn an ESC-50-layout folder into TFRecord shards per fold

    Validate meta/esc50.csv, decode every clip (any common WAV bit depth, FLAC, OGG; mixed
    to mono; resampled with soxr; padded/cropped), and write TFRecord shards grouped by
    fold, plus clips.csv and manifest.json (written last). Rebuilding with the same inputs
    and settings is a no-op.

    example: esc50tf build-tfrecords --data-dir ESC-50 --out tfrecords
    """
    from esc50tf.data.tfrecords import BuildConfig

    p.add_argument("--data-dir", required=True, help="dataset root holding meta/esc50.csv and audio/")
    p.add_argument("--out", required=True, help="output folder for shards and manifest")
    add_config_options(p, BuildConfig)
    p.add_argument("--workers", type=positive_int, default=None,
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


def _run_build(args):
    from esc50tf.data.build import build_tfrecords
    from esc50tf.data.tfrecords import BuildConfig

    build_tfrecords(
        args.data_dir, args.out, config_from_args(args, BuildConfig), workers=args.workers,
        skip_bad=args.skip_bad, overwrite=args.overwrite, progress=not args.quiet,
        strict=args.strict,
    )
    return 0


# --- inspect --------------------------------------------------------------------

def _add_inspect(p):
    """summarise a TFRecord folder, verify its shards, show the splits

    Print the manifest summary of a TFRecord folder (classes, folds, counts), check that
    every shard is present (--verify: also sha256 and record counts), and show the
    train/validation/test sizes of a protocol, checking that no src_file crosses sides.
    """
    p.add_argument("data", help="TFRecord folder made by build-tfrecords")
    p.add_argument("--verify", action="store_true", help="recompute sha256 and record counts of every shard")
    proto = p.add_mutually_exclusive_group()
    proto.add_argument("--cv", action="store_true", help="show k-fold cross-validation splits (default)")
    proto.add_argument("--test-fold", type=int, help="show the split testing on this fold")
    proto.add_argument("--split", type=ratio, help="show a grouped ratio split, e.g. 0.9")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="validation share carved from the training side (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the holdouts (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _run_inspect(args):
    from esc50tf.data.summary import summarise, summary_lines

    protocol = ("test-fold" if args.test_fold is not None else
                "split" if args.split is not None else None)
    summary = summarise(args.data, verify=args.verify, protocol=protocol,
                        test_fold=args.test_fold, split_ratio=args.split,
                        val_fraction=args.val_fraction, seed=args.seed)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print("\n".join(summary_lines(summary)))
        if summary["split_error"]:
            print(f"esc50tf inspect: error: splits cannot be made: {summary['split_error']}",
                  file=sys.stderr)
    return 1 if summary["split_error"] else 0


# --- synth ------------------------------------------------------------------------

def _add_synth(p):
    """write a synthetic dataset in the ESC-50 layout

    Write WAV files and meta/esc50.csv (5 folds, src_file/take groups) of synthetic classes:
    harmonic stacks, chirps, noise bands, burst rhythms... placed at random times with
    random gain over background noise. Used by the tests and the demo.
    """
    p.add_argument("--out", required=True, help="folder to create")
    p.add_argument("--classes", type=positive_int, default=10, help="number of classes (default: %(default)s)")
    p.add_argument("--clips-per-class", type=positive_int, default=40, help="clips per class (default: %(default)s)")
    p.add_argument("--sample-rate", type=positive_int, default=22050, help="Hz (default: %(default)s)")
    p.add_argument("--clip-seconds", type=positive_float, default=5.0, help="clip length (default: %(default)s)")
    p.add_argument("--folds", type=positive_int, default=5, help="number of folds (default: %(default)s)")
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

def _add_demo(p):
    """run the whole job end to end on built-in synthetic data

    Synthesise a small ESC-50-layout dataset (10 classes x 40 clips, 5 s at 16 kHz), build
    TFRecords, check the splits, stream the tf.data pipeline back, then train cnn_small on
    folds 2-5 and evaluate it on the held-out fold 1, writing the full report (report.md,
    confusion matrix, curves) into --out. About 16 minutes on a shared 2-core CPU (measured).
    """
    p.add_argument("--out", default="esc50tf-demo",
                   help="folder for the data, TFRecords and the run's report, kept afterwards; "
                   "run again, finished steps are reused (default: %(default)s)")
    p.add_argument("--temporary", action="store_true",
                   help="work in a temporary folder, deleted at exit (nothing is kept)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.set_defaults(deterministic=True)  # the demo trains with op determinism (presets.DEMO_TRAIN)


def _run_demo(args):
    from esc50tf.demo import run_demo

    run_demo(out=None if args.temporary else args.out, seed=args.seed)
    return 0


# --- data-service -----------------------------------------------------------------------

def _add_data_service(p):
    """run a tf.data service dispatcher or worker

    Run one server of a tf.data service cluster until Ctrl-C: one dispatcher, then workers
    on any machines that can read the TFRecords. `esc50tf train --data-service
    grpc://DISPATCHER:PORT` then runs its training input pipeline there.

    example:
      esc50tf data-service dispatcher --port 5050
      esc50tf data-service worker --dispatcher host1:5050 --port 5051
      esc50tf train --model cnn_small --data gs://bucket/tfrecords --out runs/a --data-service grpc://host1:5050
    """
    roles = p.add_subparsers(dest="role", metavar="ROLE")
    roles.required = True
    d = roles.add_parser("dispatcher", help="hand out work to the workers",
                         description="Start a tf.data service dispatcher and wait for Ctrl-C.")
    d.add_argument("--port", type=int, default=5050, help="port to listen on (default: %(default)s)")
    d.add_argument("--work-dir", default=None,
                   help="folder (local or gs://) for the dispatcher's journal, so a restarted "
                   "dispatcher recovers its jobs (default: none)")
    w = roles.add_parser("worker", help="run input pipelines for the dispatcher",
                         description="Start a tf.data service worker and wait for Ctrl-C.")
    w.add_argument("--dispatcher", required=True, metavar="HOST:PORT",
                   help="the dispatcher's address (grpc:// optional)")
    w.add_argument("--port", type=int, default=0, help="port to listen on (default: any free one)")
    w.add_argument("--host", default=None,
                   help="name or IP under which trainers reach this worker (default: this "
                   "machine's host name)")


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


COMMANDS = (
    Command("download", _add_download, _run_download, progress=True),
    Command("build-tfrecords", _add_build, _run_build, tensorflow=True, progress=True,
            progress_alias=True),
    Command("inspect", _add_inspect, _run_inspect, tensorflow=lambda args: args.verify),
    Command("synth", _add_synth, _run_synth),
    Command("demo", _add_demo, _run_demo, tensorflow=True),
    Command("data-service", _add_data_service, _run_data_service, tensorflow=True, raw=True),
)
