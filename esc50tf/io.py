"""Writing files and folders whole or not at all, reading JSON, and progress lines.

A file is written under a hidden temporary name beside it and renamed into
place only once complete, so an error or Ctrl-C leaves the old file (or no
file) and no partial one; the temporary file is always removed. A folder is
built in a hidden staging folder beside it and renamed into place the same
way; an old folder is moved aside and removed only once the new one is in.

Example:

>>> with atomic_path("out.npz") as tmp:
...     np.savez(tmp, x=np.zeros(3))
>>> write_json("report.json", {"accuracy": 0.9})
>>> read_json("report.json")
{'accuracy': 0.9}
>>> with atomic_dir("export", overwrite=True) as staging:
...     (staging / "labels.txt").write_text("dog\\n")
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import uuid
from pathlib import Path

from esc50tf.errors import Esc50Error

__all__ = ["atomic_dir", "atomic_path", "atomic_paths", "atomic_write_bytes", "dumps_json", "log",
           "read_json", "write_json", "write_npz", "write_text"]

_RAISE = object()


def _tmp_for(path):
    # Hidden, and with the final name's suffixes: writers that check them (Keras wants
    # `.keras` and `.weights.h5`) accept the temporary path.
    return path.with_name(f".tmp-{path.name}")


@contextlib.contextmanager
def atomic_paths(*paths):
    """Temporary paths for `paths`; all are renamed into place if the block succeeds.

    If the block raises (or is interrupted) nothing is renamed. If a rename
    fails, the files already renamed by this call are removed again, so a
    group of files (a data file and its sidecar) appears together or not at all.

    Args:
        *paths: str or Path. The final files (their folders must exist).

    Yields:
        list of Path: one temporary path per final path, in order.
    """
    finals = [Path(p) for p in paths]
    tmps = [_tmp_for(p) for p in finals]
    placed = []
    try:
        yield tmps
        for tmp, final in zip(tmps, finals):
            os.replace(tmp, final)
            placed.append(final)
    except BaseException:
        if len(placed) < len(finals):
            for final in placed:
                final.unlink(missing_ok=True)
        raise
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path):
    """A temporary path that becomes `path` if the block succeeds (see `atomic_paths`)."""
    with atomic_paths(path) as (tmp,):
        yield tmp


def atomic_write_bytes(path, data):
    """Writes `data` (bytes) to `path` whole or not at all."""
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def write_text(path, text):
    """Writes `text` (str) to `path` whole or not at all."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def write_npz(path, compressed=True, **arrays):
    """Writes `arrays` to the .npz `path` whole or not at all (zip-compressed unless told)."""
    import numpy as np

    save = np.savez_compressed if compressed else np.savez
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file: numpy keeps the name
        save(f, **arrays)


def _finite(value):
    """`value` with every non-finite float (NaN, +-inf; numpy's too) replaced by None."""
    if isinstance(value, float) or type(value).__name__ in ("float32", "float64", "float16"):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps_json(value, *, allow_nan=True, indent=2, **kwargs):
    """`json.dumps` that always makes valid JSON: NaN and infinities become `null`.

    Python's `json` writes them as bare `NaN` / `Infinity`, which strict JSON
    readers (browsers, jq, most languages) reject.

    Args:
        value: anything `json.dumps` takes.
        allow_nan: bool. False raises ValueError on NaN or infinity instead.
        indent, **kwargs: passed to `json.dumps`.
    """
    return json.dumps(_finite(value) if allow_nan else value, indent=indent, allow_nan=False,
                      **kwargs)


def write_json(path, value, *, allow_nan=True):
    """Writes `value` as indented JSON (ending in a newline) to `path` whole or not at all.

    Args:
        path: str or Path. The file (its folder must exist).
        value: anything `json.dumps` takes.
        allow_nan: bool. True writes NaN and infinity as `null` (valid JSON);
            False raises ValueError on them before anything is written.
    """
    write_text(path, dumps_json(value, allow_nan=allow_nan) + "\n")


def read_json(path, default=_RAISE):
    """The JSON value in `path`.

    Args:
        path: str or Path.
        default: returned when `path` does not exist. Without it a missing
            file is an error. A file that exists but cannot be read or parsed
            is always an error.

    Raises:
        Esc50Error: naming the file, when it is missing (and no `default` is
            given), unreadable or not JSON.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        if default is not _RAISE:
            return default
        raise Esc50Error(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise Esc50Error(f"{path}: unreadable ({err})") from None
    try:
        return json.loads(text)
    except ValueError as err:
        raise Esc50Error(f"{path}: unreadable ({err})") from None


def _remove(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _is_empty_dir(path):
    try:
        with os.scandir(path) as it:
            return not any(True for _ in it)
    except (NotADirectoryError, FileNotFoundError):
        return False


def _sibling(path, tag):
    """A hidden, unused path next to `path`."""
    return path.parent / f".{path.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def atomic_dir(path, *, overwrite=False):
    """A staging folder beside `path` that becomes `path` if the block succeeds.

    The staging folder (`.NAME.staging-...`, on the same file system, so the
    final rename is atomic) is removed if the block raises or is interrupted;
    `path` is then untouched. On success a missing `path` or an empty folder
    is simply replaced. Anything else at `path` is replaced only with
    `overwrite`: it is renamed aside, the new folder renamed in (the old one
    put back if that fails), and only then removed, so at every moment one
    whole version is in place.

    Args:
        path: str or Path. The folder to create (its parents are created).
        overwrite: bool. Replace what is at `path` when the block ends.
            Without it, something appearing there meanwhile is an error and
            nothing is replaced. Defaults to False.

    Yields:
        Path: the staging folder to fill.

    Raises:
        Esc50Error: `path` holds something on success and `overwrite` is False.
    """
    path = Path(path)
    staging = _sibling(path, "staging")
    staging.mkdir(parents=True)
    try:
        yield staging
        _swap_in(staging, path, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_in(staging, path, overwrite):
    if _is_empty_dir(path):
        path.rmdir()
    if not (path.exists() or path.is_symlink()):
        os.replace(staging, path)
        return
    if not overwrite:
        raise Esc50Error(f"{path}: appeared while writing it; nothing was replaced")
    old = _sibling(path, "old")
    os.replace(path, old)
    try:
        os.replace(staging, path)
    except BaseException:
        os.replace(old, path)
        raise
    _remove(old)


def log(msg):
    """Writes one progress line to stderr (stdout stays for a command's results)."""
    print(msg, file=sys.stderr, flush=True)
