"""The `esc50tf` command line: one subcommand per job, wired by one loop.

Thin by design: parse flags, build configs, call library functions. Each
module of this package is a group of commands (`data`, `run`, `infer`,
`compare`, `pretrained`) and exposes them as data, a tuple `COMMANDS` of
:class:`esc50tf.cli.command.Command`; `build_parser` adds every one and `main` runs it. Heavy
modules (TensorFlow, Keras) are imported inside the commands' `run`, so
`esc50tf --help` answers at once.

Every command takes `--verbose` (TensorFlow's own start-up and log lines),
after a subcommand too (`esc50tf pretrained download NAME --verbose`); every
command that shows progress takes `--quiet` (`--no-progress` is kept as an
alias where it existed).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from esc50tf import __version__
from esc50tf.cli.command import Command
from esc50tf.errors import Esc50Error, system_error_line

__all__ = ["Command", "build_parser", "commands", "main", "train_config_from_args"]


def commands():
    """Every command, group by group, in the order `esc50tf --help` lists them."""
    from esc50tf.cli import compare, data, infer, pretrained, run

    return [c for group in (data, run, infer, compare, pretrained) for c in group.COMMANDS]


def _parsers(parser):
    """`parser` and the parsers of its subcommands, at any depth."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def build_parser():
    from esc50tf.cli.options import add_quiet, texts

    parser = argparse.ArgumentParser(
        prog="esc50tf",
        description="Train and tune environmental-sound classifiers on ESC-50 with "
        "TensorFlow + Keras 3: TFRecord shards, a tf.data pipeline, features on the accelerator.",
        epilog="Start with: esc50tf demo. Each command has --help.",
    )
    parser.add_argument("--version", action="version", version=f"esc50tf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in commands():
        kwargs = {"formatter_class": argparse.RawDescriptionHelpFormatter} if command.raw else {}
        p = sub.add_parser(command.name, **texts(command.add), **kwargs)
        command.add(p)
        if command.run is not None:
            p.set_defaults(handler=command.run)
        if command.progress:
            add_quiet(p, alias=command.progress_alias)
        for each in _parsers(p):
            # SUPPRESS: a subcommand's parser must not reset a --verbose given before it.
            each.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                              help="show TensorFlow's own start-up and log messages (also: "
                              "ESC50TF_VERBOSE=1)")
    return parser


def train_config_from_args(args):
    """The RunConfig of `esc50tf train`'s parsed arguments (see `esc50tf.cli.run`)."""
    from esc50tf.cli.run import train_config_from_args as resolve

    return resolve(args)


def main(argv=None):
    from esc50tf import cleanup, startup

    parser = build_parser()
    args = parser.parse_args(argv)
    command = next(c for c in commands() if c.name == args.command)
    cleanup.keep_interrupts()
    quiet = not startup.verbose_requested(getattr(args, "verbose", False))
    if not quiet:  # the library's own filters (esc50tf.startup.quiet_native) read it
        os.environ[startup.VERBOSE_ENV] = "1"
    if quiet:  # also for commands that load TensorFlow only now and then
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if getattr(args, "deterministic", None):
        # Bit-identical reruns need one inter-op thread, fixed when TensorFlow
        # starts (esc50tf.distribute.enable_determinism); TensorFlow is not loaded yet.
        from esc50tf.distribute import INTER_OP_ENV

        os.environ.setdefault(INTER_OP_ENV, "1")
    try:
        if quiet and command.runs_tensorflow(args):
            startup.quiet_tensorflow()
        rc = args.handler(args)
        cleanup.raise_if_interrupted()  # a Ctrl-C swallowed after the last safe point
        return rc
    except Esc50Error as err:
        print(f"esc50tf {args.command}: error: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # a full disk, a read-only folder: one line, not a traceback
        if (line := system_error_line(err)) is None:
            raise
        print(f"esc50tf {args.command}: error: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Stopping now: a second Ctrl-C (or one re-raised late by cleanup.keep_interrupts)
        # must not turn this clean exit into a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        cleanup.interrupt_reported()
        print(f"esc50tf {args.command}: interrupted", file=sys.stderr)
        return 130
