"""The one "same run / resume" check of an output folder (train, tune, study).

A command's output folder is recognised by the settings file it writes
first (`config.json` of a run, `tune.json` of a search). A folder that is
missing or empty is new; one that holds the same settings is resumed; one
that holds other settings, or no settings file, is refused unless
`--overwrite` says to start again, so nothing a user made is lost.

Example:
>>> resumed = prepare("runs/gru", "config.json", cfg.to_dict(), what="run")
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from esc50tf.errors import Esc50Error
from esc50tf.io import write_json

NEW, SAME, FOREIGN, UNREADABLE, OTHER = "new", "same", "foreign", "unreadable", "other"


def flatten(d, prefix=""):
    """{"a": {"b": 1}} -> {"a.b": 1}, for naming what differs."""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def differences(old, new, ignore=()):
    """["key old -> new", ...] of two settings dicts, leaving out top-level keys in `ignore`."""
    a, b = flatten(old), flatten(new)
    return [f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if k.split(".")[0] not in ignore and a.get(k) != b.get(k)]


def _equal(old, new):
    return old == new


def first_differences(old, new, ignore=()):
    """The first three `differences`, joined for a message."""
    diff = differences(old, new, ignore)
    return "; ".join(diff[:3]) + ("; ..." if len(diff) > 3 else "")


def state(folder, settings_file, settings, same=_equal, describe=first_differences):
    """What `folder` holds compared with `settings`: `(state, detail)`.

    Args:
        folder: str or Path.
        settings_file: str. The file (inside `folder`) that records its settings.
        settings: dict. The settings to compare with.
        same: callable. `same(saved, settings) -> bool`.
        describe: callable. `describe(saved, settings) -> str`: what differs.

    Returns:
        ("new", None): missing or empty; ("same", None); ("foreign", None): no
        settings file; ("unreadable", reason); ("other", what differs).
    """
    folder = Path(folder)
    if not folder.is_dir() or not any(folder.iterdir()):
        return NEW, None
    path = folder / settings_file
    if not path.is_file():
        return FOREIGN, None
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return UNREADABLE, str(err)
    if same(saved, settings):
        return SAME, None
    return OTHER, describe(saved, settings)


def prepare(folder, settings_file, settings, *, what, overwrite=False, same=_equal,
            describe=first_differences, check_only=False, resave=False):
    """Creates `folder` with its settings file, or checks that it holds the same settings.

    Args:
        folder: str or Path. The output folder.
        settings_file: str. Its settings file ("config.json", "tune.json").
        settings: dict. What the command will compute.
        what: str. "run", "search"...: how messages name the folder's content.
        overwrite: bool. Remove a folder with other content first.
        same, describe: see `state`.
        check_only: bool. Only the checks: nothing is created or removed.
        resave: bool. Write the settings again when resuming (they may hold
            settings `same` leaves out).

    Returns:
        bool: True when an existing folder with the same settings is resumed.

    Raises:
        Esc50Error: naming the folder and what to do.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise Esc50Error(f"{folder}: exists and is not a folder")
    found, detail = state(folder, settings_file, settings, same, describe)
    if found != NEW:
        if overwrite:
            if check_only:
                return False
            shutil.rmtree(folder)
        elif found == FOREIGN:
            raise Esc50Error(f"{folder}: folder is not empty and is not an esc50tf {what} (no "
                             f"{settings_file}); choose another --out or pass --overwrite")
        elif found == UNREADABLE:
            raise Esc50Error(f"{folder}: unreadable {settings_file} ({detail}); choose another "
                             "--out or pass --overwrite")
        elif found == OTHER:
            raise Esc50Error(f"{folder}: holds a {what} with other settings ({detail}); "
                             "rerun it with the same settings, choose another --out, or pass "
                             "--overwrite")
        else:
            if resave and not check_only:
                write_json(folder / settings_file, settings)
            return True
    if check_only:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / settings_file, settings)
    return False
