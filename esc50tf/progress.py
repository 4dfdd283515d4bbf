"""Progress on long waits: tqdm bars on a terminal, plain lines in a log.

`bar(...)` takes tqdm's arguments and writes to stderr. On a terminal it is
tqdm's own bar. Anywhere else (a file, a pipe, CI) the bar's redraws
(carriage returns, cursor moves) would pile up in the log, so the same bar
writes whole lines instead: one at most every `LOG_INTERVAL_S` seconds, and
its final line once (tqdm draws the last state again when it closes).

`keras_verbose(verbose)` does the same for Keras' `fit` / `predict`: its
progress bar (verbose=1) writes ANSI colour codes whatever the output is
(Keras 3 counts any POSIX system as a dynamic display), so off a terminal
verbose=1 becomes 2, one plain line per epoch.
"""

from __future__ import annotations

import re
import sys

LOG_INTERVAL_S = 30.0
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_TIMING = re.compile(r"\|[^|]*\||\[[^\]]*\]")  # the bar's graphic, "[elapsed<left, rate]"


def is_terminal(stream=None):
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", None) and stream.isatty())


class _Lines:
    """A file for tqdm that turns its redraws into whole lines, each state once (a redraw
    of the same count with only its timing changed, as when the bar closes, is dropped)."""

    def __init__(self, stream):
        self.stream = stream
        self.last = None

    def write(self, text):
        for part in _ESCAPES.sub("", text).replace("\r", "\n").split("\n"):
            part = part.strip()
            key = _TIMING.sub("", part).strip()
            if part and key != self.last:
                self.stream.write(part + "\n")
                self.last = key

    def flush(self):
        self.stream.flush()


def bar(iterable=None, *, stream=None, **kwargs):
    """A tqdm progress bar on stderr: drawn on a terminal, plain lines elsewhere."""
    from tqdm import tqdm

    stream = sys.stderr if stream is None else stream
    if is_terminal(stream):
        return tqdm(iterable, file=stream, **kwargs)
    kwargs.setdefault("mininterval", LOG_INTERVAL_S)
    kwargs.pop("dynamic_ncols", None)
    return tqdm(iterable, file=_Lines(stream), ascii=True, ncols=80, **kwargs)


def keras_verbose(verbose, stream=None):
    """Keras verbosity for `verbose`: 1 (a bar) only when stdout is a terminal, else 2."""
    stream = sys.stdout if stream is None else stream
    return 2 if verbose == 1 and not is_terminal(stream) else verbose
