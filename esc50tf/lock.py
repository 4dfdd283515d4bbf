"""One writer per output folder: an advisory lock held for the life of a command.

Every command that writes a folder (`build-tfrecords`, `train`, `tune`,
`study`, `export`, `evaluate`) holds `folder_lock(folder)` while it runs. The
lock is an `fcntl.flock` on a hidden file beside the folder
(`.NAME.esc50tf-lock`), not inside it, so it outlives a command emptying,
replacing or renaming the folder itself. The file records the holder's pid and
command line; a second writer is refused at once with both. The kernel drops
the lock when its process ends however it ends (kill -9 included), so a lock
file left by a dead process is stale by construction and simply taken over.

Example:
>>> with folder_lock("runs/cnn", "train"):
...     ...  # another `folder_lock("runs/cnn")` raises Esc50Error meanwhile
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from esc50tf.errors import Esc50Error

__all__ = ["folder_lock", "holds_lock", "lock_path"]

_held = set()  # lock files this process holds (a command may call another on its folder)


def lock_path(folder):
    """The lock file of `folder`: `.NAME.esc50tf-lock` in its parent."""
    folder = Path(os.path.abspath(folder))
    return folder.parent / f".{folder.name}.esc50tf-lock"


def _holder(path):
    try:
        return Path(path).read_text(errors="replace").strip() or "unknown process"
    except OSError:
        return "unknown process"


@contextlib.contextmanager
def folder_lock(folder, command=None):
    """Holds the writer's lock of `folder` for the block.

    Args:
        folder: str or Path. The folder the command writes (it need not exist
            yet; its parent folders are created, and removed again if this
            made them). URIs (gs://...) are not locked.
        command: str. What the holder is doing, recorded for whoever is
            refused. Defaults to this process's command line.

    Raises:
        Esc50Error: another live process holds the lock; the message names its
            pid and command.
    """
    if "://" in str(folder):
        yield
        return
    import fcntl

    from esc50tf import cleanup

    path = lock_path(folder)
    if path in _held:
        yield
        return
    created = cleanup.make_dirs(path.parent)
    what = command or " ".join(["esc50tf", *sys.argv[1:]]) or "esc50tf"
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            cleanup.remove_created(created)
            raise Esc50Error(f"{folder}: cannot create its lock file {path} "
                             f"({err.strerror or err})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            cleanup.remove_created(created)
            raise Esc50Error(
                f"{folder}: another esc50tf is writing this folder ({_holder(path)}); "
                "wait for it to finish, or choose another folder") from None
        # The previous holder may have removed the file between our open and flock:
        # then we hold a lock on an unlinked file, and must lock the new one.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}: {what}\n".encode())
        _held.add(path)
        yield
    finally:
        _held.discard(path)
        with cleanup.interrupts_deferred():
            with contextlib.suppress(OSError):
                path.unlink()
            os.close(fd)
            cleanup.remove_created(created)


def holds_lock(command, folder_of):
    """Decorator: the function runs holding `folder_lock(folder_of(*args, **kwargs), command)`.

    Example:
    >>> @holds_lock("export", lambda run, cfg, **_: cfg.out)
    ... def export_run(run, cfg): ...
    """
    import functools

    def wrap(fn):
        @functools.wraps(fn)
        def locked(*args, **kwargs):
            with folder_lock(folder_of(*args, **kwargs), command):
                return fn(*args, **kwargs)

        return locked

    return wrap
