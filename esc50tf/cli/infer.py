"""Commands that use trained models or front ends: evaluate, predict, export, features, embed."""

from __future__ import annotations

import os
import sys

from esc50tf.cli.command import Command
from esc50tf.cli.options import (FEATURE_OPTIONS, add_config_options, add_options,
                                 config_from_args, overrides, positive_float, positive_int, ratio)
from esc50tf.errors import Esc50Error
from esc50tf.io import dumps_json
from esc50tf.frontend import KINDS


# --- evaluate ---------------------------------------------------------------------------

def _add_evaluate(p):
    """recompute a run's report from its saved models

    Load each split's saved model, predict its test side again (from --data, default the
    run's TFRecords) and rewrite the report and plots. A scikit-learn split with only the
    model.pkl of an older esc50tf gets it re-saved as model.skops.
    """
    p.add_argument("run", help="run folder written by esc50tf train")
    p.add_argument("--data", help="TFRecord folder (default: the one the run used)")


def _run_evaluate(args):
    from esc50tf.evaluate import evaluate_run

    report = evaluate_run(args.run, args.data, log=lambda m: print(m, file=sys.stderr))
    print(f"{report['model']}: accuracy {100 * report['accuracy']:.1f}% +- "
          f"{100 * report['accuracy_std']:.1f}, macro F1 {report['macro_f1']:.3f} "
          f"({report['report_dir']}/report.md)")
    return 0


# --- predict ----------------------------------------------------------------------------

def _add_predict(p):
    """top-k classes for audio files with a saved model

    Predict with a run folder (averaging its split models; Keras or scikit-learn runs, whose
    features are computed as in training) or one .keras file. Any sample rate, length and
    channel count: mixed to mono, resampled, padded, or cut into half-overlapping windows
    whose probabilities are averaged.
    """
    p.add_argument("model", help="run folder, .keras file, or an export: its folder, a .tflite "
                   "file or a SavedModel folder")
    p.add_argument("files", nargs="+", help="audio files (WAV, FLAC, OGG, ...)")
    p.add_argument("--top-k", type=positive_int, default=5, help="classes to show (default: %(default)s)")
    p.add_argument("--sample-rate", type=positive_int, default=None,
                   help="model sample rate, if it cannot be read from the run")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    t = p.add_argument_group(
        "timeline", "--timeline: classify each file window by window, streaming it in blocks, "
        "and write OUT/<stem>/windows.csv, timeline.json (windows and merged events) and "
        "timeline.png. MODEL may also be an export folder, a SavedModel or a .tflite file")
    t.add_argument("--timeline", action="store_true", help="write a timeline per file")
    t.add_argument("--hop", type=positive_float, default=None,
                   help="seconds between windows (default: a quarter of the model's window; a SED "
                   "model's frame-wise timeline rounds it to whole steps, 0.32 s for cnn14_sed)")
    t.add_argument("--threshold", type=ratio, default=0.5,
                   help="top-class probability a window needs to be part of an event "
                   "(default: %(default)s)")
    t.add_argument("--smooth", type=positive_int, default=3,
                   help="median filter over this many windows (odd) before events are "
                   "found, a window at p >= 0.9 keeping its own; 1: none (default: %(default)s)")
    t.add_argument("--out", default="timeline",
                   help="folder for the timelines (default: %(default)s)")
    t.add_argument("--overwrite", action="store_true", help="replace existing timelines")


def _run_predict(args):
    from esc50tf.predict import load_predictor, predict_files

    if args.timeline:
        from esc50tf.timeline import run_timelines

        return run_timelines(args.model, args.files, args.out, hop=args.hop,
                             threshold=args.threshold, smooth=args.smooth,
                             overwrite=args.overwrite, sample_rate=args.sample_rate,
                             as_json=args.json, progress=not args.quiet)

    predictor = load_predictor(args.model, args.sample_rate)
    results, errors = predict_files(predictor, args.files, args.top_k)
    if args.json:
        print(dumps_json({"results": results,
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

def _add_export(p):
    """export a trained run as a SavedModel or TFLite model, front end inside

    Export a run's Keras model(s) (the average of every split, or one with --split) as one
    model taking raw mono waveforms at the run's sample rate, with the STFT / log-Mel / MFCC
    front end inside and only builtin TFLite ops. Writes the model, labels.txt and
    model_card.json (with parity figures measured on the test clips against the Keras model)
    into OUT, via a staging folder.
    """
    from esc50tf.export import ExportConfig

    p.add_argument("run", help="run folder made by esc50tf train")
    p.add_argument("--out", required=True, help="export folder (must not exist)")
    add_config_options(p, ExportConfig)
    p.add_argument("--skip-parity", action="store_true",
                   help="do not measure parity on the test clips (no TFRecords needed; the "
                   "silent, near-silent, clipped and zero-padded clips are still checked)")


def _run_export(args):
    from esc50tf.export import ExportConfig, export_run

    cfg = config_from_args(args, ExportConfig, out=args.out, parity=not args.skip_parity)
    card = export_run(args.run, cfg)
    print(dumps_json({"out": args.out, "file": card["file"], "size_bytes": card["size_bytes"],
                      "parity": card["parity"]}, indent=2))
    return 0


# --- features ---------------------------------------------------------------------------

def _add_features(p):
    """compute STFT / log-Mel / MFCC features of audio files

    Compute features with exactly the layers the models use and write them to an .npz
    (features [n_files, frames, bins] float32, filenames, config JSON); --plot draws
    waveform and features per file.
    """
    p.add_argument("audio", nargs="+", help="audio files")
    p.add_argument("--kind", choices=KINDS, default="mel", help="feature kind (default: %(default)s)")
    p.add_argument("--out", help="output .npz file (--out, --plot or both)")
    p.add_argument("--plot", help="draw waveform and features per file to this PNG")
    p.add_argument("--sample-rate", type=positive_int, default=None,
                   help="resample to this rate (default: the first file's rate)")
    p.add_argument("--clip-seconds", type=positive_float, default=None,
                   help="pad/crop every file to this length (default: pad to the longest)")
    p.add_argument("--center", dest="center", action="store_true", default=None, help="centre frames (default)")
    p.add_argument("--no-center", dest="center", action="store_false", help="do not centre frames")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out / --plot file")
    add_options(p, FEATURE_OPTIONS, "front end (librosa names)", leave_out=("--features",))


def _run_features(args):
    from esc50tf.featurize import (extract_features, first_sample_rate, plot_features,
                                   write_features)
    from esc50tf.frontend import FeatureConfig

    if not (args.out or args.plot):
        raise Esc50Error("nothing to write: give --out FILE.npz, --plot FILE.png or both")
    for target in (args.out, args.plot):
        if target and os.path.exists(target) and not args.overwrite:
            raise Esc50Error(f"{target}: exists; pass --overwrite to replace it")
    settings = overrides(args, FEATURE_OPTIONS).get("features", {})
    settings["kind"] = args.kind
    if args.center is not None:
        settings["center"] = args.center
    rate = args.sample_rate or first_sample_rate(args.audio)
    settings["sample_rate"] = rate
    config = FeatureConfig.from_dict(settings)
    feats, names, errors, waves = extract_features(
        args.audio, config, sample_rate=rate, clip_seconds=args.clip_seconds,
        return_waveforms=True)
    for _path, message in errors:
        print(f"esc50tf features: error: {message}", file=sys.stderr)
    if names and args.out:
        write_features(args.out, feats, names, config)
        print(f"wrote {len(names)} x {feats.shape[1]} frames x {feats.shape[2]} bins to {args.out}",
              file=sys.stderr)
    if names and args.plot:
        plot_features(waves, feats, names, config, args.plot)
        print(f"plotted to {args.plot}", file=sys.stderr)
    return 1 if errors else 0


# --- embed ------------------------------------------------------------------------------

def _add_embed(p):
    """clip embeddings from a pretrained PANNs model into an .npz (for linear probes)

    Compute the fc1 embedding of every clip once (inference mode, no augmentation) with
    pretrained PANNs weights, and write an .npz with 'embeddings' [clips, dim] and
    'filenames' (plus 'labels' and 'folds' for a TFRecord folder). Audio is mixed to mono
    and resampled to the model's rate.

    examples:
      esc50tf embed cnn14 tfrecords --out embeddings.npz
      esc50tf embed weights/cnn14.npz dog.wav recordings/ --out mine.npz
    """
    p.add_argument("weights", metavar="WEIGHTS",
                   help="a checkpoint name from `esc50tf pretrained list` (downloaded) or a converted weights file")
    p.add_argument("inputs", nargs="+", metavar="AUDIO_OR_TFRECORDS",
                   help="audio files and folders, or one TFRecord folder")
    p.add_argument("--out", required=True, help="the .npz to write")
    p.add_argument("--batch-size", type=positive_int, default=32, help="clips per batch for TFRecords (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--skip-bad", action="store_true", help="leave out audio files that do not decode (listed on stderr); by default the first one stops the command before anything is written")


def _run_embed(args):
    from esc50tf.embed import embed

    n, errors = embed(args.weights, args.inputs, args.out, overwrite=args.overwrite,
                      batch_size=args.batch_size, progress=not args.quiet,
                      skip_bad=args.skip_bad)
    for _path, message in errors:
        print(f"esc50tf embed: skipped {message}", file=sys.stderr)
    print(f"wrote {n} embeddings to {args.out}" + (f" ({len(errors)} files skipped)" if errors else ""))
    return 0


COMMANDS = (
    Command("evaluate", _add_evaluate, _run_evaluate, tensorflow=True),
    Command("predict", _add_predict, _run_predict, tensorflow=True, progress=True),
    Command("export", _add_export, _run_export, tensorflow=True),
    Command("features", _add_features, _run_features, tensorflow=True),
    Command("embed", _add_embed, _run_embed, tensorflow=True, progress=True,
            progress_alias=True, raw=True),
)
