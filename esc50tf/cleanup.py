"""Leaving nothing behind: folders a failed command created, and cleanup that Ctrl-C cannot cut short.

Example:
>>> created = make_dirs("runs/a/b")      # the folders that did not exist, outermost first
>>> try:
...     work()
... except BaseException:
...     remove_created(created)           # only what this command made, and only if empty
...     raise
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import threading
from pathlib import Path


def make_dirs(path):
    """Creates `path` and its missing parents.

    Returns:
        The folders that did not exist before, outermost first (empty if none).
    """
    path = Path(path)
    missing = []
    for p in [path, *path.parents]:
        if p.exists():
            break
        missing.append(p)
    path.mkdir(parents=True, exist_ok=True)
    return missing[::-1]


def remove_created(created, contents=False):
    """Undoes `make_dirs`: removes the folders it created, deepest first, while empty.

    Args:
        created: list of Path from `make_dirs`.
        contents: bool. Also delete what was written into the deepest folder
            (a run folder that never got going); outer folders go only if empty.
    """
    with interrupts_deferred():
        for i, p in enumerate(reversed(created)):
            if i == 0 and contents:
                shutil.rmtree(p, ignore_errors=True)
                continue
            try:
                p.rmdir()
            except OSError:  # not empty (something else was put there) or already gone
                if p.exists():
                    return


@contextlib.contextmanager
def interrupts_deferred():
    """Ignores Ctrl-C (SIGINT) inside the block, so a second Ctrl-C cannot cut cleanup short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
