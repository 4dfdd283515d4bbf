"""`Command`: one `esc50tf` subcommand, as data (the groups' `COMMANDS` hold them)."""

from __future__ import annotations

import dataclasses
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Command:
    """One `esc50tf` subcommand.

    Args:
        name: str. The word on the command line.
        add: callable. `add(parser)` adds its arguments; its docstring gives
            the help texts (`esc50tf.cli.options.texts`).
        run: callable or None. `run(args) -> exit status`; None when its
            subcommands set their own (`handler` defaults).
        tensorflow: bool or callable. Whether it runs TensorFlow, whose start-up
            log lines are then dropped unless `--verbose`; a callable decides
            from the parsed arguments.
        progress: bool. It shows progress bars or per-epoch lines that
            `--quiet` silences (the loop adds `--quiet`).
        progress_alias: bool. Also accept `--no-progress` for `--quiet`.
        raw: bool. Keep the layout of the description and epilog as written.
    """

    name: str
    add: Callable
    run: Callable | None
    tensorflow: bool | Callable = False
    progress: bool = False
    progress_alias: bool = False
    raw: bool = False

    def runs_tensorflow(self, args):
        return self.tensorflow(args) if callable(self.tensorflow) else self.tensorflow
