"""`esc50tf download` against local file:// archives (no network needed).

Hostile archives are made with Python's zipfile, the way real archives are made.
"""

import shutil
import stat
import struct
import subprocess
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


def test_an_archive_made_as_github_makes_it(tiny_esc50, tmp_path):
    """GitHub's `archive/master.zip` is `git archive --format=zip --prefix=ESC-50-master/`:
    deflated members, an entry per folder, the commit id as the zip comment, and the
    repository's other files (README, tests...) beside audio/ and meta/."""
    repo = tmp_path / "ESC-50"
    shutil.copytree(tiny_esc50, repo)
    for name, text in {"LICENSE": "CC BY-NC 3.0", "README.md": "# ESC-50", "pytest.ini": "",
                       "requirements.txt": "numpy", "tests/test_dataset.py": "# checks"}.items():
        (repo / name).parent.mkdir(exist_ok=True)
        (repo / name).write_text(text)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "dataset"]):
        subprocess.run(git + args, check=True)
    archive = tmp_path / "master.zip"
    subprocess.run(git + ["archive", "--format=zip", "--prefix=ESC-50-master/",
                          "-o", str(archive), "HEAD"], check=True)
    with zipfile.ZipFile(archive) as zf:  # the shape this test is about
        assert "ESC-50-master/audio/" in zf.namelist() and len(zf.comment) == 40
        assert {i.compress_type for i in zf.infolist() if i.file_size > 1000} == {
            zipfile.ZIP_DEFLATED}
    dest = tmp_path / "dest"
    assert main(["download", "--dest", str(dest), "--url", archive.as_uri()]) == 0
    assert len(load_metadata(dest)) == 40
    assert sorted(p.name for p in (dest / "audio").iterdir()) == sorted(
        p.name for p in (tiny_esc50 / "audio").iterdir())


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


def _refused(archive, dest):
    """Runs the download of `archive`; returns the error, having checked nothing was left."""
    with pytest.raises(Esc50Error) as err:
        dl.download(dest, archive.as_uri(), progress=False, log=lambda _: None)
    assert not dest.exists()
    return str(err.value)


@pytest.mark.parametrize("name, why", [
    ("../../evil.txt", "goes up a folder (..)"),
    ("ESC-50-master/audio/../../../evil.txt", "goes up a folder (..)"),
    ("..\\..\\evil.txt", "goes up a folder (..)"),
    ("C:/evil.txt", "is absolute"),
    ("\\\\server\\share\\evil.txt", "is absolute"),
])
def test_a_member_that_would_land_outside_is_refused(tiny_esc50, tmp_path, name, why):
    archive = make_zip(tiny_esc50, tmp_path / "evil.zip", extra={name: "x"})
    message = _refused(archive, tmp_path / "a" / "d")
    assert message == f"{archive.as_uri()}: unsafe path in archive: {name!r} {why}"
    assert not list(tmp_path.rglob("evil.txt"))


def test_an_absolute_member_is_refused(tiny_esc50, tmp_path):
    target = tmp_path / "outside" / "evil.txt"
    archive = make_zip(tiny_esc50, tmp_path / "evil.zip", extra={str(target): "x"})
    assert zipfile.ZipFile(archive).namelist()[-1] == str(target)  # kept absolute
    assert _refused(archive, tmp_path / "d") == (
        f"{archive.as_uri()}: unsafe path in archive: {str(target)!r} is absolute")
    assert not target.exists() and not target.parent.exists()


def _with_mode(name, mode, data):
    """A member whose Unix mode says what it is, as Info-ZIP stores links (`zip -y`)."""
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix
    info.external_attr = mode << 16
    return info, data


@pytest.mark.parametrize("mode, why", [
    (stat.S_IFLNK | 0o777, "is a symbolic link; the ESC-50 archive holds only files and folders"),
    (stat.S_IFIFO | 0o644, "is a special file (mode 0o10000); the ESC-50 archive holds only "
                           "files and folders"),
    (stat.S_IFCHR | 0o644, "is a special file (mode 0o20000); the ESC-50 archive holds only "
                           "files and folders"),
])
def test_links_and_special_files_are_refused(tiny_esc50, tmp_path, mode, why):
    name = "ESC-50-master/audio/1-100038-A-14.wav"  # where a real clip would be
    archive = make_zip(tiny_esc50, tmp_path / "link.zip")
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr(*_with_mode(name, mode, "/etc/passwd"))
    assert _refused(archive, tmp_path / "d") == f"{archive.as_uri()}: {name!r} {why}"


def test_a_zip_bomb_member_is_refused_before_it_is_unpacked(tiny_esc50, tmp_path, capsys):
    # 64 MiB + 1 of zeros deflates to about 64 KB: a real bomb at the real bound.
    archive = make_zip(tiny_esc50, tmp_path / "bomb.zip")
    with zipfile.ZipFile(archive, "a", compression=zipfile.ZIP_DEFLATED) as zf, \
            zf.open("ESC-50-master/audio/bomb.wav", "w") as out:
        for _ in range(64):
            out.write(bytes(1 << 20))
        out.write(b"\0")
    assert archive.stat().st_size < 1 << 20
    dest = tmp_path / "d"
    assert main(["download", "--dest", str(dest), "--url", archive.as_uri()]) == 1
    assert (f"{archive.as_uri()}: 'ESC-50-master/audio/bomb.wav' unpacks to 67,108,865 "
            "bytes, over the limit of 67,108,864 per member (an ESC-50 clip is 431 KB)"
            ) in capsys.readouterr().err
    assert not dest.exists()


def test_the_whole_archive_is_bounded(tiny_esc50, tmp_path):
    archive = make_zip(tiny_esc50, tmp_path / "master.zip")
    total = sum(i.file_size for i in zipfile.ZipFile(archive).infolist())
    with pytest.raises(Esc50Error) as err:
        dl.extract(archive, tmp_path / "x", max_total_bytes=total - 1)
    assert str(err.value) == (f"{archive}: the members unpack to over {total - 1:,} bytes, the "
                              "limit for the whole archive (ESC-50 unpacks to about 0.9 GB)")
    assert not (tmp_path / "x").exists()
    # The defaults: 4 GiB in all, far over ESC-50's 0.9 GB and far under a disk-filling bomb.
    assert dl.MAX_TOTAL_BYTES == 4 << 30 and dl.MAX_MEMBER_BYTES == 64 << 20
    dl.extract(archive, tmp_path / "y", max_total_bytes=total)
    assert len(list((tmp_path / "y").rglob("*.wav"))) == 40


def test_the_number_of_members_is_bounded(tiny_esc50, tmp_path):
    archive = make_zip(tiny_esc50, tmp_path / "master.zip")
    count = len(zipfile.ZipFile(archive).infolist())
    with pytest.raises(Esc50Error) as err:
        dl.extract(archive, tmp_path / "x", max_members=count - 1)
    assert str(err.value) == (f"{archive}: {count:,} members, over the limit of {count - 1:,} "
                              "(ESC-50 holds about 2,100)")
    assert not (tmp_path / "x").exists()


def test_a_member_longer_than_its_header_says_is_refused(tiny_esc50, tmp_path):
    # Central directory says 10 bytes, the data holds 1,000: zipfile stops at 10 and the
    # CRC disagrees, so the bounds checked on the header are the bytes written.
    archive = make_zip(tiny_esc50, tmp_path / "liar.zip",
                       extra={"ESC-50-master/liar.txt": "A" * 1000})
    data = bytearray(archive.read_bytes())
    entry = data.rindex(b"PK\x01\x02")  # the last central-directory record: liar.txt
    assert struct.unpack_from("<I", data, entry + 24)[0] == 1000
    struct.pack_into("<I", data, entry + 24, 10)
    archive.write_bytes(bytes(data))
    assert _refused(archive, tmp_path / "d").startswith(
        f"{archive.as_uri()}: not a valid zip archive "
        "(Bad CRC-32 for file 'ESC-50-master/liar.txt')")


def test_a_member_that_cannot_be_written_names_the_archive(tiny_esc50, tmp_path):
    # A file, then a folder of the same name: unpacking the second fails.
    archive = make_zip(tiny_esc50, tmp_path / "clash.zip",
                       extra={"ESC-50-master/x": "file", "ESC-50-master/x/y": "below a file"})
    assert _refused(archive, tmp_path / "d").startswith(
        f"{archive.as_uri()}: cannot unpack it into {tmp_path / 'd' / '.esc50tf-extract'} (")


def test_keep_archive_keeps_the_zip(tiny_esc50, tmp_path):
    archive = make_zip(tiny_esc50, tmp_path / "master.zip")
    dest = dl.download(tmp_path / "d", archive.as_uri(), keep_archive=True, progress=False,
                       log=lambda _: None)
    assert (dest / "esc50.zip").read_bytes() == archive.read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == ["LICENSE", "audio", "esc50.zip", "meta"]


def test_a_refused_archive_leaves_an_existing_folder_as_it_was(tiny_esc50, tmp_path):
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    archive = make_zip(tiny_esc50, tmp_path / "evil.zip", extra={"../evil.txt": "x"})
    with pytest.raises(Esc50Error, match="goes up a folder"):
        dl.download(dest, archive.as_uri(), progress=False, log=lambda _: None)
    assert [p.name for p in dest.iterdir()] == ["notes.txt"]  # no staging, no .part


def test_an_archive_without_the_metadata_is_refused(tmp_path):
    archive = tmp_path / "other.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("project-main/README.md", "not ESC-50")
    with pytest.raises(Esc50Error, match=r"the archive holds no meta/esc50\.csv; is it the "
                                         r"ESC-50 archive\?"):
        dl.download(tmp_path / "d", archive.as_uri(), progress=False, log=lambda _: None)
    assert not (tmp_path / "d").exists()


def test_a_destination_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "d").write_text("a file")
    with pytest.raises(Esc50Error, match=r"d: exists and is not a folder"):
        dl.download(tmp_path / "d", (tmp_path / "none.zip").as_uri(), progress=False)
    assert (tmp_path / "d").read_text() == "a file"


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
