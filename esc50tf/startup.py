"""Quiet TensorFlow start-up for the `esc50tf` command.

Importing TensorFlow on a machine without a GPU prints lines such as
`I0000 ... cudart_stub.cc:31] Could not find cuda drivers` (before its logging
is set up, so `TF_CPP_MIN_LOG_LEVEL` cannot hide them), and later
`E0000 ... failed call to cuInit` and `NodeDef mentions attribute
use_unbounded_threadpool`. None is a failure, but a newcomer reads them as
one. `quiet_tensorflow()` sets TensorFlow's C++ log level to errors that stop
the program (3) and imports TensorFlow with the process's stderr captured,
passing on every line that is not such a log line. `--verbose` or
`ESC50TF_VERBOSE=1` skips all of it; a `TF_CPP_MIN_LOG_LEVEL` the user set is
kept.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

VERBOSE_ENV = "ESC50TF_VERBOSE"
# absl/TensorFlow C++ log lines: severity letter, MMDD, time, thread id, file:line].
_LOG_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\] ")
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called"
# Lines LiteRT and the TFLite converter print straight to the file descriptor.
_NATIVE_NOISE = (
    _ABSL_PREAMBLE,
    "INFO: Created TensorFlow Lite XNNPACK delegate",
    "fully_quantize: ",  # the int8 quantizer's settings, once per conversion
    "To enable the following instructions:",  # the second line of a CPU-feature log line
)


def verbose_requested(flag=False):
    return bool(flag) or os.environ.get(VERBOSE_ENV, "") not in ("", "0")


@contextlib.contextmanager
def quiet_native():
    """Drops TensorFlow's, LiteRT's and the converter's own log lines written meanwhile.

    For code that runs the TFLite converter or interpreter; a no-op with
    `--verbose` / `ESC50TF_VERBOSE=1`.
    """
    if verbose_requested():
        yield
        return
    with _filtered_stderr():
        yield


def quiet_tensorflow():
    """Imports TensorFlow with its start-up log lines dropped (see the module docstring)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return
    with _filtered_stderr():
        import tensorflow  # noqa: F401


@contextlib.contextmanager
def _filtered_stderr():
    """Sends file descriptor 2 to a temporary file; replays it without C++ log lines."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded, closed): nothing to filter
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode("utf-8", "replace").splitlines(True)
                    if not (_LOG_LINE.match(line) or line.startswith(_NATIVE_NOISE))]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
