"""Writing files whole or not at all.

A file is written under a hidden temporary name beside it and renamed into
place only once complete, so an error or Ctrl-C leaves the old file (or no
file) and no partial one; the temporary file is always removed.

Example:

>>> with atomic_path("out.npz") as tmp:
...     np.savez(tmp, x=np.zeros(3))
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["atomic_path", "atomic_paths", "atomic_write_bytes"]


def _tmp_for(path):
    return path.with_name(f".{path.name}.tmp")


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
