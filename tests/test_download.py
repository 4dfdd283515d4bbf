"""`esc50tf download` against local file:// archives (no network needed)."""

import zipfile

import pytest

from esc50tf.cli import main
from esc50tf.data import download as dl
from esc50tf.data.metadata import load_metadata
from esc50tf.errors import Esc50Error


def make_zip(src_root, path, top="ESC-50-master", drop=None, extra=None):
    """Zips an ESC-50-layout folder the way GitHub's archive does (one top folder)."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{top}/LICENSE", "CC BY-NC 3.0")
        for p in sorted(src_root.rglob("*")):
            if p.is_file() and p.name != drop:
                zf.write(p, f"{top}/{p.relative_to(src_root).as_posix()}")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


def test_download_from_file_url(tiny_esc50, tmp_path, capsys):
    archive = make_zip(tiny_esc50, tmp_path / "master.zip")
    dest = tmp_path / "ESC-50"
    assert main(["download", "--dest", str(dest), "--url", archive.as_uri()]) == 0
    meta = load_metadata(dest)
    assert len(meta) == 40
    assert (dest / "LICENSE").is_file()
    assert sorted(p.name for p in dest.iterdir()) == ["LICENSE", "audio", "meta"]  # no leftovers
    capsys.readouterr()

    # A complete copy is not downloaded again, even when the URL is gone.
    assert main(["download", "--dest", str(dest), "--url", (tmp_path / "gone.zip").as_uri()]) == 0
    assert "not downloading again" in capsys.readouterr().err


def test_unreachable_url_leaves_nothing(tmp_path, capsys):
    dest = tmp_path / "ESC-50"
    assert main(["download", "--dest", str(dest), "--url", (tmp_path / "none.zip").as_uri()]) == 1
    assert "cannot download" in capsys.readouterr().err
    assert not dest.exists()


def test_corrupt_archive(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(Esc50Error, match="not a valid zip"):
        dl.download(tmp_path / "d", bad.as_uri(), progress=False, log=lambda _: None)
    assert not (tmp_path / "d").exists()


def test_incomplete_archive_is_rejected(tiny_esc50, tmp_path):
    victim = sorted((tiny_esc50 / "audio").iterdir())[0].name
    archive = make_zip(tiny_esc50, tmp_path / "partial.zip", drop=victim)
    with pytest.raises(Esc50Error, match=f"incomplete or invalid.*{victim}"):
        dl.download(tmp_path / "d", archive.as_uri(), progress=False, log=lambda _: None)
    assert not (tmp_path / "d").exists()


def test_zip_slip_is_refused(tiny_esc50, tmp_path):
    archive = make_zip(tiny_esc50, tmp_path / "evil.zip", extra={"../../evil.txt": "x"})
    with pytest.raises(Esc50Error, match="unsafe path"):
        dl.download(tmp_path / "d", archive.as_uri(), progress=False, log=lambda _: None)
    assert not (tmp_path / "evil.txt").exists()


def test_partial_existing_copy_needs_overwrite(tiny_esc50, tmp_path):
    archive = make_zip(tiny_esc50, tmp_path / "master.zip")
    dest = tmp_path / "ESC-50"
    (dest / "audio").mkdir(parents=True)
    (dest / "audio" / "mine.wav").write_bytes(b"user data")
    with pytest.raises(Esc50Error, match="--overwrite"):
        dl.download(dest, archive.as_uri(), progress=False, log=lambda _: None)
    assert (dest / "audio" / "mine.wav").read_bytes() == b"user data"
    dl.download(dest, archive.as_uri(), overwrite=True, progress=False, log=lambda _: None)
    assert len(load_metadata(dest)) == 40
