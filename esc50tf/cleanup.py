"""Leaving nothing behind: folders a failed command created, and cleanup that Ctrl-C cannot cut short.

Example:
>>> created = make_dirs("runs/a/b")      # the folders that did not exist, outermost first
>>> try:
...     work()
... except BaseException:
...     remove_created(created)           # only the folders this command made, if empty
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


def remove_created(created):
    """Undoes `make_dirs`: removes the folders it created, deepest first, while empty.

    Args:
        created: list of Path from `make_dirs`.
    """
    with interrupts_deferred():
        for p in reversed(created):
            try:
                p.rmdir()
            except OSError:  # not empty (something else was put there) or already gone
                if p.exists():
                    return


def discard(folder, created):
    """Deletes what a failed command wrote into `folder`, then the folders it created.

    For a command that failed or was interrupted before it made anything worth
    keeping (no finished epoch or trial): `folder` is emptied, and removed
    with its parents if `make_dirs` created them.
    """
    folder = Path(folder)
    with interrupts_deferred():
        if folder.is_dir():
            for p in list(folder.iterdir()):
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        remove_created(created)


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
