"""`esc50tf download`: fetch and unpack the ESC-50 archive, safely.

The archive is streamed to `DEST/.esc50tf-download.part` with a progress bar
and renamed only when complete; it is unpacked into a hidden staging folder,
its layout verified (meta/esc50.csv valid, every listed WAV present under
audio/), and only then moved to `DEST/audio` and `DEST/meta`. A `DEST` that
already holds a complete, valid copy is left alone. Any URL urllib can open
works, `file://` included (that is how the tests run offline).
"""

from __future__ import annotations

import os
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from esc50tf.data import metadata as meta_lib
from esc50tf.errors import Esc50Error
from esc50tf.io import atomic_path

DEFAULT_URL = "https://github.com/karoldvl/ESC-50/archive/master.zip"
_PART = ".esc50tf-download.part"
_STAGING = ".esc50tf-extract"


def is_complete(dest):
    """True when `dest` holds a valid metadata CSV and every clip it lists."""
    try:
        meta_lib.load_metadata(dest, check_files=True)
        return True
    except Esc50Error:
        return False


def fetch(url, path, progress=True, chunk=1 << 20):
    """Streams `url` into `path` (written whole or not at all)."""
    from tqdm import tqdm

    try:
        with atomic_path(path) as tmp, urllib.request.urlopen(url, timeout=60) as response:
            total = response.headers.get("Content-Length")
            bar = tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                       unit_divisor=1024, desc="download", disable=not progress,
                       file=sys.stderr, dynamic_ncols=True)
            with open(tmp, "wb") as out, bar:
                while block := response.read(chunk):
                    out.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise Esc50Error(f"cannot download {url}: {err}") from None


def _dataset_root(extracted):
    """The folder inside an unpacked archive that holds meta/esc50.csv."""
    candidates = sorted(p.parent.parent for p in Path(extracted).rglob("meta/esc50.csv"))
    if not candidates:
        raise Esc50Error("the archive holds no meta/esc50.csv; is it the ESC-50 archive?")
    return min(candidates, key=lambda p: len(p.parts))


def extract(archive, into):
    """Unpacks a zip, refusing members that would land outside `into`."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                parts = PurePosixPath(member.filename).parts
                if member.filename.startswith("/") or ".." in parts:
                    raise Esc50Error(f"{archive}: unsafe path in archive: {member.filename!r}")
            zf.extractall(into)
    except zipfile.BadZipFile as err:
        raise Esc50Error(f"{archive}: not a valid zip archive ({err})") from None


def download(dest="ESC-50", url=DEFAULT_URL, *, overwrite=False, keep_archive=False,
             progress=True, log=None):
    """Downloads ESC-50 into `dest` (which gets `audio/` and `meta/`).

    Args:
        dest: str or path. Dataset root to create. Defaults to "ESC-50".
        url: str. Archive URL (http(s) or file://). Defaults to the official
            GitHub archive.
        overwrite: bool. Replace an existing incomplete or different copy.
        keep_archive: bool. Keep the zip as `dest/esc50.zip`.
        progress: bool. Progress bar on stderr.
        log: callable(str) for status lines.

    Returns:
        The dataset root as a Path.

    Raises:
        Esc50Error: download failure, bad archive, unexpected layout, or a
            `dest` holding other files without `overwrite`.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise Esc50Error(f"{dest}: exists and is not a folder")
    if dest.is_dir() and is_complete(dest) and not overwrite:
        n = len(meta_lib.read_csv(meta_lib.csv_path(dest)))
        log(f"{dest}: complete ESC-50 copy already present ({n} clips); not downloading again")
        return dest
    clashing = [p for p in ("audio", "meta") if (dest / p).exists()]
    if clashing and not overwrite:
        raise Esc50Error(
            f"{dest}: already holds {' and '.join(clashing)}/ but not a complete copy; "
            "pass --overwrite to replace them"
        )
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    part, staging = dest / _PART, dest / _STAGING
    try:
        fetch(url, part, progress=progress)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        log(f"extracting {url} ...")
        extract(part, staging)
        root = _dataset_root(staging)
        try:
            meta = meta_lib.load_metadata(root, check_files=True)
        except Esc50Error as err:
            raise Esc50Error(f"the downloaded archive is incomplete or invalid: {err}") from None
        for name in ("audio", "meta"):
            if (dest / name).exists():
                shutil.rmtree(dest / name)
        for name in ("audio", "meta"):
            os.replace(root / name, dest / name)
        # Licence and readme of the dataset travel with it.
        for extra in ("LICENSE", "README.md"):
            if (root / extra).is_file():
                os.replace(root / extra, dest / extra)
        if keep_archive:
            os.replace(part, dest / "esc50.zip")
    except BaseException:
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if part.exists():
            part.unlink()
    log(f"{dest}: ESC-50 ready ({len(meta)} clips, {meta['fold'].nunique()} folds)")
    return dest
