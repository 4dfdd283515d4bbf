"""`esc50tf download`: fetch and unpack the ESC-50 archive, safely.

The archive is streamed to `DEST/.esc50tf-download.part` with a progress bar
and renamed only when complete; it is unpacked into a hidden staging folder
(no member may be absolute, go up with `..`, be a link or special file, or
unpack past the size bounds, so a zip bomb stops before it is unpacked), its
layout verified (meta/esc50.csv valid, every listed WAV present under
audio/), and only then moved to `DEST/audio` and `DEST/meta`. A `DEST` that
already holds a complete, valid copy is left alone. Any URL urllib can open
works, `file://` included (that is how the tests run offline).
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath

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
    from esc50tf.progress import bar as progress_bar

    try:
        with atomic_path(path) as tmp, urllib.request.urlopen(url, timeout=60) as response:
            total = response.headers.get("Content-Length")
            bar = progress_bar(total=int(total) if total else None, unit="B", unit_scale=True,
                               unit_divisor=1024, desc="download", disable=not progress,
                               dynamic_ncols=True)
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


# Bounds on what an archive may unpack to. The real ESC-50 archive (about 600 MB) holds
# about 2,100 members: 2,000 WAVs of 431 KB, meta/esc50.csv and a few small files, about
# 0.9 GB unpacked. A zip bomb (a small archive of huge members) stops at these.
MAX_MEMBER_BYTES = 64 << 20
MAX_TOTAL_BYTES = 4 << 30
MAX_MEMBERS = 20_000


def _check_member(archive, info):
    """Refuses a member that would land outside the folder or is not a plain file or folder."""
    name = info.filename
    if (PurePosixPath(name).is_absolute() or PureWindowsPath(name).drive
            or PureWindowsPath(name).root):
        raise Esc50Error(f"{archive}: unsafe path in archive: {name!r} is absolute")
    if ".." in PurePosixPath(name).parts or ".." in PureWindowsPath(name).parts:
        raise Esc50Error(f"{archive}: unsafe path in archive: {name!r} goes up a folder (..)")
    kind = stat.S_IFMT(info.external_attr >> 16)  # Unix mode, where the archiver stored one
    if kind == stat.S_IFLNK:
        raise Esc50Error(f"{archive}: {name!r} is a symbolic link; the ESC-50 archive holds "
                         "only files and folders")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise Esc50Error(f"{archive}: {name!r} is a special file (mode {kind:#o}); the ESC-50 "
                         "archive holds only files and folders")


def extract(archive, into, *, source=None, max_member_bytes=MAX_MEMBER_BYTES,
            max_total_bytes=MAX_TOTAL_BYTES, max_members=MAX_MEMBERS):
    """Unpacks a zip into `into`, refusing what could escape it or exhaust the disk.

    Every member is checked before anything is written: no absolute path, no `..`, no
    symbolic link or other special file, at most `max_member_bytes` per member, at most
    `max_total_bytes` and `max_members` in all. zipfile stops each member at the size its
    header declares (and refuses it when the CRC then disagrees), so the bounds checked on
    the headers hold for the bytes written.

    Args:
        source: str. What messages call the archive (its URL); defaults to its path.

    Raises:
        Esc50Error: naming the archive, the member and the bound it breaks.
    """
    into = Path(into)
    name = source or archive
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            if len(members) > max_members:
                raise Esc50Error(f"{name}: {len(members):,} members, over the limit of "
                                 f"{max_members:,} (ESC-50 holds about 2,100)")
            total = 0
            for info in members:
                _check_member(name, info)
                if info.file_size > max_member_bytes:
                    raise Esc50Error(
                        f"{name}: {info.filename!r} unpacks to {info.file_size:,} bytes, "
                        f"over the limit of {max_member_bytes:,} per member (an ESC-50 clip "
                        "is 431 KB)")
                total += info.file_size
                if total > max_total_bytes:
                    raise Esc50Error(
                        f"{name}: the members unpack to over {max_total_bytes:,} bytes, "
                        "the limit for the whole archive (ESC-50 unpacks to about 0.9 GB)")
            zf.extractall(into)
    except zipfile.BadZipFile as err:
        raise Esc50Error(f"{name}: not a valid zip archive ({err})") from None
    except (OSError, zlib.error, EOFError) as err:
        raise Esc50Error(f"{name}: cannot unpack it into {into} ({err})") from None


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
        extract(part, staging, source=url)
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
