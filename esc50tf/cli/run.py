"""Training commands: models, train, tune, study.

train, tune and study share one resume rule: started again on the same folder
with the same settings they continue where they stopped; a folder holding
other settings is refused unless `--overwrite`, which starts it again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap

from esc50tf import presets
from esc50tf.cli.command import Command
from esc50tf.cli.options import (AUGMENT_OPTIONS, FEATURE_OPTIONS, MODEL_OPTIONS, TRAIN_OPTIONS,
                                 add_options, add_run_flags, fit_verbosity, positive_int,
                                 ratio, run_overrides)
from esc50tf.errors import Esc50Error
from esc50tf.frontend import KINDS

DEFAULT_PRESET = "default"  # train, tune and study start from the same preset


def _model_names():
    from esc50tf.models import registry

    return registry.names()


def _families():
    """The registered families, in registry order."""
    from esc50tf.models import registry

    return list(dict.fromkeys(s.family for s in registry.specs()))


# --- models -----------------------------------------------------------------------------

def _add_models(p):
    """list every model with a one-line description

    List the registered models by family, one line each. These names are what `train
    --model` and `tune --model` take; an unknown name is an error listing them.
    """
    p.description += f" Families: {', '.join(_families())}."
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

def _add_train(p):
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
    p.usage = ("esc50tf train --model MODEL --data DIR --out DIR [options]\n"
               "       esc50tf train --config RUN/config.json [--out DIR] [options]")
    p.add_argument("--model", help=f"one of: {', '.join(_model_names())} (required unless "
                   "--config names one)")
    p.add_argument("--data", help="TFRecord folder made by build-tfrecords (required unless "
                   "--config names one)")
    p.add_argument("--out", help="run folder to write (required unless --config names one)")
    p.add_argument("--config", help="a config.json of an earlier run to repeat (flags override it)")
    p.add_argument("--preset", choices=presets.PRESETS, default=None,
                   help="default: a strong recipe from the literature (the default, unless "
                   "--config names one); seed: the study's settings for the model; "
                   "finetune: for pretrained PANNs and EfficientAT trunks (chosen automatically "
                   "when --weights is given)")
    proto = p.add_mutually_exclusive_group()
    proto.add_argument("--cv", action="store_true", help="k-fold cross-validation over all folds (default)")
    proto.add_argument("--test-fold", type=int, help="train on the other folds, test on fold K")
    proto.add_argument("--split", type=ratio, help="grouped, stratified ratio split, e.g. 0.9")
    add_run_flags(p, "replace a run folder holding another configuration")


def train_config_from_args(args):
    """Resolves defaults <- preset <- --config <- flags into a RunConfig."""
    from esc50tf.run_config import check_weights_flag, resolve_config

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
    preset = args.preset or base.get("train", {}).get("preset", DEFAULT_PRESET)
    over = run_overrides(args, protocol=True)
    for key in ("data", "out"):
        if getattr(args, key):
            over["train"][key] = getattr(args, key)
    cfg = resolve_config(model, preset, base=base, overrides=over)
    if args.opt_weights is not None:
        check_weights_flag(cfg)
    if args.no_augment:
        from esc50tf.augment import AugmentConfig

        cfg = cfg.replace(augment=AugmentConfig())
    return cfg


def _run_train(args):
    from esc50tf.train import train

    cfg = train_config_from_args(args)
    train(cfg, overwrite=args.overwrite, verbose=fit_verbosity(args))
    return 0


# --- tune -------------------------------------------------------------------------------

def _add_tune(p):
    """search hyperparameters with KerasTuner, then retrain and test the best settings

    examples:
      esc50tf tune --model hybrid --data tfrecords --out tune/hybrid --max-trials 30 --epochs 40
      esc50tf tune --model gru,bigru,cnn_small --tuner bayesian --data tfrecords --out tune/small
      esc50tf tune --model auto --tuner hyperband --epochs 60 --data tfrecords --out tune/all --cv
      esc50tf tune --model gru --space space.json --data tfrecords --out tune/gru   # see below
      esc50tf tune ... --out tune/gru               # again: continues an interrupted search
      esc50tf train --config tune/gru/best_hyperparameters.json --out runs/gru-best

    space.json (JSON; YAML when PyYAML is installed) overrides the default space:
      {"lr": {"type": "float", "min": 1e-4, "max": 1e-2, "sampling": "log"},
       "optimizer": {"type": "choice", "values": ["adam", "sgd"]},
       "n_mels": {"type": "fixed", "value": 64}, "dropout": null}
    types: float / int (min, max, optional step, sampling linear|log|reverse_log),
    choice (values), fixed (value), boolean; null: not searched (preset or flag value).
    """
    from esc50tf.models import registry
    from esc50tf.tune import OBJECTIVES, PARAMS, TUNERS

    about = (
        "Search optimizer, learning rate, weight decay, batch size, model, front end, "
        "augmentation strengths, dropout and model-specific sizes with KerasTuner. Trials train "
        "on the folds other than the test fold and are scored on a validation set carved from "
        "them by src_file; the test fold is not read until the best settings, retrained with "
        "esc50tf train into OUT/best_run/, are tested on it (or on every fold with --cv). "
        "Writes OUT/trials.csv, trials.md, objective.png and best_hyperparameters.json (usable "
        "as esc50tf train --config). Started again on the same OUT with the same settings, the "
        "search continues (finished trials are kept). A flag that names a searched setting "
        "(--lr, --batch-size, --n-mels...) fixes it. Searched settings: "
        + ", ".join(PARAMS) + ".")
    p.description = textwrap.fill(about, width=90)
    p.add_argument("--model", default="cnn_small",
                   help="a model, several separated by commas (searched as a choice), or auto "
                   f"(every Keras model): {', '.join(s.name for s in registry.specs() if s.keras)} "
                   "(default: %(default)s, the quickest to train)")
    p.add_argument("--data", required=True, help="TFRecord folder made by build-tfrecords")
    p.add_argument("--out", required=True,
                   help="search folder to write; one holding the same search continues it")
    p.add_argument("--tuner", choices=TUNERS, default="random",
                   help="KerasTuner search algorithm (default: %(default)s)")
    p.add_argument("--max-trials", type=positive_int, default=None,
                   help="trials in all (default: 10; hyperband: its own schedule)")
    p.add_argument("--epochs", type=positive_int, default=20,
                   help="epochs per trial; hyperband: the most a trial trains (default: %(default)s)")
    p.add_argument("--final-epochs", type=positive_int, default=None,
                   help="epochs when retraining the best settings (default: --epochs)")
    p.add_argument("--objective", choices=OBJECTIVES, default="val_accuracy",
                   help="validation metric to optimise (default: %(default)s)")
    p.add_argument("--test-fold", type=int, default=None,
                   help="fold kept out of the search and tested at the end (default: the first fold)")
    p.add_argument("--cv", action="store_true",
                   help="evaluate the best settings with k-fold CV over every fold (only the "
                   "test fold's score is untouched by the search)")
    p.add_argument("--split", type=ratio, default=None,
                   help="instead of a test fold, hold out the test side of a grouped, stratified "
                   "ratio split, e.g. 0.8 (for uneven folds or a single fold)")
    p.add_argument("--space", metavar="FILE", help="search-space file (JSON, or YAML with PyYAML)")
    p.add_argument("--preset", choices=presets.PRESETS, default=DEFAULT_PRESET,
                   help="settings every trial starts from (default: %(default)s)")
    p.add_argument("--max-failures", type=int, default=3,
                   help="stop after this many failed trials in a row; 0: never (default: %(default)s)")
    p.add_argument("--no-retrain", action="store_true",
                   help="stop after the search (best_hyperparameters.json is still written)")
    # A search resumes by itself, as train and study do; --resume is still accepted.
    p.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--overwrite", action="store_true",
                   help="replace a search folder holding other settings (or start again)")
    p.add_argument("--jit-compile", action="store_true", default=None, help="XLA-compile the training step")
    p.add_argument("--deterministic", action="store_true", default=None,
                   help="TensorFlow op determinism (slower)")
    p.add_argument("--no-export", action="store_true", help="no SavedModel export of the retrained model")
    # --epochs is per trial (above); trials compute features in the model and read the
    # shards themselves (no tf.data service).
    add_options(p, TRAIN_OPTIONS, "training (a flag naming a searched setting fixes it)",
                leave_out=("--epochs", "--features-on", "--data-service", "--data-service-timeout"))
    add_options(p, MODEL_OPTIONS, "model")
    add_options(p, FEATURE_OPTIONS, "front end (librosa names)")
    add_options(p, AUGMENT_OPTIONS, "augmentation (training batches only)")


def _run_tune(args):
    from esc50tf.tune import TuneConfig, read_space_file, tune

    config = TuneConfig(
        data=args.data, out=args.out, models=tuple(args.model.split(",")), tuner=args.tuner,
        max_trials=args.max_trials, epochs=args.epochs, final_epochs=args.final_epochs,
        objective=args.objective, test_fold=args.test_fold, cv=args.cv, preset=args.preset,
        split_ratio=args.split,
        space=read_space_file(args.space) if args.space else None, overrides=run_overrides(args),
        max_failures=args.max_failures, retrain=not args.no_retrain)
    tune(config, overwrite=args.overwrite, verbose=fit_verbosity(args))
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
            return {"protocol": "split", "split_ratio": ratio(rest[0])}
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


def _add_study(p):
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
    p.add_argument("--data", required=True, help="TFRecord folder made by build-tfrecords")
    p.add_argument("--out", required=True, help="study folder (runs/, failures.json, comparison)")
    p.add_argument("--models", default="classic,cnn_small,gru",
                   help="all, or comma-separated models and/or families "
                   f"({', '.join(_families())}); models: {', '.join(_model_names())} "
                   "(default: %(default)s, the quick ones: hours on a CPU; all is days)")
    p.add_argument("--preset", choices=presets.PRESETS, default=DEFAULT_PRESET,
                   help="default: the strong recipe; seed: the study's settings per model "
                   "(default: %(default)s)")
    proto = p.add_mutually_exclusive_group()
    proto.add_argument("--protocol", nargs="+", metavar=("NAME", "K|R"),
                       help="cv, test-fold K or split R (default: the preset's: default: cv; "
                       "seed: split 0.9, grouped by recording)")
    proto.add_argument("--cv", action="store_true", help="same as --protocol cv")
    proto.add_argument("--test-fold", type=int, help="same as --protocol test-fold K")
    proto.add_argument("--split", type=ratio, help="same as --protocol split R")
    p.add_argument("--features", dest="study_features", default=None, metavar="KINDS",
                   help=f"comma-separated front ends from {', '.join(KINDS)} (default: the "
                   "preset's, mel)")
    p.add_argument("--grid", action="store_true",
                   help="expand every Keras model over optimizer x learning rate")
    p.add_argument("--grid-optimizers", default=None, metavar="LIST",
                   help="grid optimizers, comma-separated (default: "
                   f"{','.join(presets.STUDY_GRID_OPTIMIZERS)}; implies --grid)")
    p.add_argument("--grid-lrs", type=_float_list, default=None, metavar="LIST",
                   help="grid learning rates (default: "
                   f"{','.join(f'{v:g}' for v in presets.STUDY_GRID_LRS)}; implies --grid)")
    add_run_flags(p, "redo every run, finished or not", every_run=True)


def _run_study(args):
    from esc50tf import study

    over = run_overrides(args, protocol=True)
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
                             verbose=fit_verbosity(args))
    return 1 if result.failed else 0


COMMANDS = (
    Command("models", _add_models, _run_models),
    Command("train", _add_train, _run_train, tensorflow=True, progress=True, raw=True),
    Command("tune", _add_tune, _run_tune, tensorflow=True, progress=True, raw=True),
    Command("study", _add_study, _run_study, tensorflow=True, progress=True, raw=True),
)
