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

import _thread
import contextlib
import shutil
import signal
import sys
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


_deferring = []  # non-empty while an interrupts_deferred block runs


@contextlib.contextmanager
def interrupts_deferred():
    """Holds Ctrl-C (SIGINT) back inside the block and delivers it when the block ends.

    A Ctrl-C that arrives meanwhile is not lost: it raises KeyboardInterrupt
    right after the block, so cleanup inside cannot be cut short. SIGINT is
    also blocked in this thread, so processes started inside begin with it
    blocked (the mask survives fork and exec), leaving Ctrl-C to their parent.
    """
    if threading.current_thread() is not threading.main_thread() or _deferring:
        yield  # an enclosing block already holds Ctrl-C back
        return
    _deferring.append(True)
    pending = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    mask = (signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            if hasattr(signal, "pthread_sigmask") else None)
    try:
        yield
    finally:
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)
        _deferring.clear()
    if pending:
        raise KeyboardInterrupt


_interrupted = []  # Ctrl-Cs the handler of `keep_interrupts` saw and nothing has reported yet


def keep_interrupts():
    """Makes sure a Ctrl-C is never dropped (installed by the `esc50tf` command).

    Python turns SIGINT into KeyboardInterrupt in whatever code runs at that
    moment. Inside a garbage-collector callback or a `__del__` (JAX and
    TensorFlow run such code) the exception is printed as "Exception ignored",
    and inside Python code that TensorFlow's C++ calls back it becomes a
    `SystemError` ("returned a result with an exception set") that TensorFlow
    prints and passes over: either way the program would go on as if nothing
    happened. So the SIGINT handler also records every Ctrl-C, the
    unraisable-exception hook keeps such a KeyboardInterrupt quiet, and
    `raise_if_interrupted` raises it at the next safe point: after every
    training batch (`tasks.KerasTask.fit`) and when the command's work ends.
    A first SIGTERM is turned into a Ctrl-C (`_terminate_as_interrupt`).
    """
    previous = sys.unraisablehook
    if getattr(previous, "keeps_interrupts", False):
        return

    def hook(unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            if threading.current_thread() is not threading.main_thread():
                _thread.interrupt_main()
            # In the main thread a new KeyboardInterrupt would be raised inside this
            # hook, and lost again; the SIGINT handler recorded the Ctrl-C, and the next
            # `raise_if_interrupted` raises it.
            return
        previous(unraisable)

    hook.keeps_interrupts = True
    sys.unraisablehook = hook
    handler = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is threading.main_thread() and callable(handler):

        def on_sigint(signum, frame):
            _interrupted.append(signum)
            handler(signum, frame)  # Python's own: raises KeyboardInterrupt here

        signal.signal(signal.SIGINT, on_sigint)
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL):
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)


def _terminate_as_interrupt(signum, frame):
    """SIGTERM (`kill PID`, a scheduler stopping a job) cleans up like Ctrl-C: worker
    processes stopped, staging folders removed. A second SIGTERM kills at once, for a
    process stuck where Python code no longer runs.

    The KeyboardInterrupt is raised here, not by sending ourselves SIGINT: a job
    started in the background (`nohup esc50tf train ... &`) inherits an ignored
    SIGINT from its shell, and `kill PID` must still stop it cleanly."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _interrupted.append(signum)
    raise KeyboardInterrupt


def raise_if_interrupted():
    """Raises KeyboardInterrupt for a Ctrl-C that arrived and was swallowed on its way.

    Called at safe points (after every training batch); a no-op unless
    `keep_interrupts` is installed and saw a Ctrl-C that `interrupt_reported`
    has not cleared.
    """
    if _interrupted:
        _interrupted.clear()
        raise KeyboardInterrupt


def interrupt_reported():
    """Forgets the Ctrl-Cs seen so far: their KeyboardInterrupt reached the command."""
    _interrupted.clear()
