"""build-tfrecords: contents, manifest, idempotence, overwrite safety, bad input."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from esc50tf.cli import main
from esc50tf.data import tfrecords as tfr
from esc50tf.data.build import build_tfrecords
from esc50tf.data.metadata import load_metadata
from esc50tf.errors import Esc50Error

from conftest import rows_for, write_dataset

SMALL = ["--sample-rate", "8000", "--clip-seconds", "1", "--shards-per-fold", "2",
         "--workers", "1", "--no-progress"]


def build(data_dir, out, *extra):
    return main(["build-tfrecords", "--data-dir", str(data_dir), "--out", str(out), *SMALL, *extra])


def read_records(path, compression="none"):
    import tensorflow as tf

    out = []
    for raw in tf.data.TFRecordDataset(str(path), compression_type=tfr.COMPRESSIONS[compression]):
        ex = tf.train.Example.FromString(raw.numpy()).features.feature
        out.append(ex)
    return out


def test_manifest_counts_and_records_match_csv(tiny_esc50, tiny_tfrecords):
    meta = load_metadata(tiny_esc50)
    manifest = tfr.read_manifest(tiny_tfrecords)
    assert manifest["counts"]["total"] == len(meta)
    assert manifest["folds"] == sorted(meta["fold"].unique().tolist())
    assert manifest["counts"]["per_fold"] == {
        str(k): int(v) for k, v in meta["fold"].value_counts().sort_index().items()
    }
    assert manifest["counts"]["per_class"] == meta["category"].value_counts().to_dict()
    assert [c["category"] for c in manifest["classes"]] == (
        meta.drop_duplicates("target").sort_values("target")["category"].tolist()
    )
    seen = set()
    for shard in manifest["shards"]:
        path = tiny_tfrecords / shard["file"]
        assert path.name.startswith(f"fold{shard['fold']}-") and "-of-00002" in path.name
        assert shard["sha256"] == tfr.sha256_file(path)
        records = read_records(path)
        assert len(records) == shard["num_records"]
        for ex in records:
            name = ex["filename"].bytes_list.value[0].decode()
            row = meta.set_index("filename").loc[name]
            assert ex["fold"].int64_list.value[0] == row["fold"] == shard["fold"]
            assert ex["label"].int64_list.value[0] == row["target"]
            assert ex["src_file"].bytes_list.value[0].decode() == row["src_file"]
            assert ex["category"].bytes_list.value[0].decode() == row["category"]
            assert ex["take"].bytes_list.value[0].decode() == row["take"]
            assert ex["audio/sample_rate"].int64_list.value[0] == 8000
            seen.add(name)
    assert seen == set(meta["filename"])
    clips = pd.read_csv(tiny_tfrecords / "clips.csv", dtype={"src_file": str})
    assert sorted(clips["filename"]) == sorted(meta["filename"])


def test_stored_pcm_equals_the_wav_file(tiny_esc50, tiny_tfrecords):
    shard = tfr.read_manifest(tiny_tfrecords)["shards"][0]
    ex = read_records(tiny_tfrecords / shard["file"])[0]
    pcm = np.frombuffer(ex["audio/pcm"].bytes_list.value[0], dtype="<i2")
    name = ex["filename"].bytes_list.value[0].decode()
    wav, sr = sf.read(tiny_esc50 / "audio" / name, dtype="int16")
    assert sr == 8000
    np.testing.assert_array_equal(pcm, wav)


@pytest.mark.slow
def test_builds_in_separate_processes_are_byte_identical(tiny_esc50, tmp_path):
    # Protobuf may order an Example's feature map differently in each process;
    # the shards (and the sha256 in the manifest) must not depend on that.
    import subprocess
    import sys

    hashes = []
    for i, hash_seed in enumerate(("1", "2")):
        out = tmp_path / f"tfr{i}"
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run([sys.executable, "-m", "esc50tf", "build-tfrecords", "--data-dir",
                        str(tiny_esc50), "--out", str(out), *SMALL],
                       check=True, capture_output=True, env=env)
        hashes.append([s["sha256"] for s in tfr.read_manifest(out)["shards"]])
    assert hashes[0] == hashes[1]


def test_rebuild_is_a_no_op_and_other_config_needs_overwrite(esc50_copy, tmp_path, capsys):
    out = tmp_path / "tfr"
    assert build(esc50_copy, out) == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    capsys.readouterr()
    assert build(esc50_copy, out) == 0
    assert "up to date" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps

    assert build(esc50_copy, out, "--shards-per-fold", "3") == 1
    err = capsys.readouterr().err
    assert "shards_per_fold 2 -> 3" in err and "--overwrite" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps  # untouched

    assert build(esc50_copy, out, "--shards-per-fold", "3", "--overwrite") == 0
    manifest = tfr.read_manifest(out)
    assert manifest["config"]["shards_per_fold"] == 3
    shard_files = sorted(p.name for p in out.glob("*.tfrecord"))
    assert shard_files == sorted(s["file"] for s in manifest["shards"])  # old shards gone
    assert all("-of-00003" in f for f in shard_files)


def test_changed_inputs_need_overwrite(esc50_copy, tmp_path, capsys):
    out = tmp_path / "tfr"
    assert build(esc50_copy, out) == 0
    first = sorted((esc50_copy / "audio").iterdir())[0]
    data, sr = sf.read(first)
    sf.write(first, data * 0.5, sr, subtype="PCM_16")
    assert build(esc50_copy, out) == 1
    assert "different input files" in capsys.readouterr().err


def test_refuses_foreign_non_empty_folder(esc50_copy, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    assert build(esc50_copy, out) == 1
    assert "not empty" in capsys.readouterr().err
    assert build(esc50_copy, out, "--overwrite") == 0
    assert (out / "notes.txt").read_text() == "precious"  # only our own files are replaced


def _no_partial_output(out):
    assert not out.exists(), f"partial output left: {list(out.iterdir())}"


@pytest.mark.parametrize("damage,needle", [
    ("garbage", "cannot decode audio"),
    ("empty", "file is empty"),
    ("missing", "missing"),
])
def test_bad_clip_fails_naming_it_and_leaves_nothing(esc50_copy, tmp_path, capsys, damage, needle):
    victim = sorted((esc50_copy / "audio").iterdir())[5]
    if damage == "garbage":
        victim.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage" * 8)
    elif damage == "empty":
        victim.write_bytes(b"")
    else:
        victim.unlink()
    out = tmp_path / "tfr"
    assert build(esc50_copy, out) == 1
    err = capsys.readouterr().err
    assert victim.name in err and needle in err
    _no_partial_output(out)


def test_malformed_csv_fails_naming_row(esc50_copy, tmp_path, capsys):
    csv = esc50_copy / "meta" / "esc50.csv"
    lines = csv.read_text().splitlines()
    lines[3] = lines[3].replace(",", ",x", 1)  # a broken fold value on line 4
    csv.write_text("\n".join(lines) + "\n")
    out = tmp_path / "tfr"
    assert build(esc50_copy, out) == 1
    err = capsys.readouterr().err
    assert "esc50.csv" in err and "row 4" in err
    _no_partial_output(out)


def test_skip_bad_builds_the_rest_and_records_them(esc50_copy, tmp_path, capsys):
    audio = sorted((esc50_copy / "audio").iterdir())
    audio[0].write_bytes(b"not audio" * 50)
    audio[7].unlink()
    out = tmp_path / "tfr"
    assert build(esc50_copy, out, "--skip-bad") == 0
    err = capsys.readouterr().err
    assert audio[0].name in err and audio[7].name in err
    manifest = tfr.read_manifest(out)
    assert sorted(s["filename"] for s in manifest["skipped"]) == sorted([audio[0].name, audio[7].name])
    total = len(load_metadata(esc50_copy, check_files=False))
    assert manifest["counts"]["total"] == total - 2
    assert sum(s["num_records"] for s in manifest["shards"]) == total - 2


def test_failed_rebuild_keeps_the_old_build(esc50_copy, tmp_path):
    out = tmp_path / "tfr"
    assert build(esc50_copy, out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    sorted((esc50_copy / "audio").iterdir())[3].write_bytes(b"junk" * 100)
    assert build(esc50_copy, out, "--shards-per-fold", "1", "--overwrite") == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_crash_midway_leaves_nothing_that_looks_complete(esc50_copy, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = tfr.make_example

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 12:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(tfr, "make_example", flaky)
    out = tmp_path / "tfr"
    with pytest.raises(RuntimeError):
        build_tfrecords(esc50_copy, out, tfr.BuildConfig(8000, 1.0, 2), workers=1,
                            progress=False, log=lambda _: None)
    _no_partial_output(out)


def test_custom_fold_numbers_formats_and_resampling(tmp_path):
    data = tmp_path / "data"
    rows = rows_for([3, 7, 11])
    write_dataset(data, rows, sample_rate=22050, seconds=0.4, subtype="PCM_24")
    # One stereo FLAC at another rate, one float WAV: all end up 16 kHz mono int16.
    x = np.random.default_rng(1).uniform(-0.5, 0.5, (12000, 2))
    sf.write(data / "audio" / rows[0]["filename"], x, 48000, format="FLAC", subtype="PCM_16")
    sf.write(data / "audio" / rows[1]["filename"], x[:, 0], 16000, subtype="FLOAT")
    out = tmp_path / "tfr"
    assert main(["build-tfrecords", "--data-dir", str(data), "--out", str(out),
                 "--sample-rate", "16000", "--clip-seconds", "0.5", "--shards-per-fold", "2",
                 "--workers", "2", "--compression", "gzip", "--no-progress"]) == 0
    manifest = tfr.read_manifest(out)
    assert manifest["folds"] == [3, 7, 11]
    assert {s["file"].split("-")[0] for s in manifest["shards"]} == {"fold3", "fold7", "fold11"}
    assert all(s["file"].endswith(".tfrecord.gz") for s in manifest["shards"])
    lengths = set()
    for shard in manifest["shards"]:
        for ex in read_records(out / shard["file"], "gzip"):
            lengths.add(len(ex["audio/pcm"].bytes_list.value[0]) // 2)
    assert lengths == {8000}


def test_verify_detects_damaged_shards(tiny_tfrecords, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(tiny_tfrecords, out)
    manifest = tfr.read_manifest(out)
    tfr.verify_shards(out, manifest, full=True)
    victim = out / manifest["shards"][0]["file"]
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF  # same size, different bytes
    victim.write_bytes(bytes(data))
    tfr.verify_shards(out, manifest)  # the quick check sees only sizes
    with pytest.raises(Esc50Error, match="sha256"):
        tfr.verify_shards(out, manifest, full=True)
    with open(victim, "ab") as f:
        f.write(b"x")
    with pytest.raises(Esc50Error, match="bytes"):
        tfr.verify_shards(out, manifest)
    os.remove(victim)
    with pytest.raises(Esc50Error, match="missing"):
        tfr.verify_shards(out, manifest)


def test_bad_flags_exit_non_zero(tiny_esc50, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["build-tfrecords", "--data-dir", str(tiny_esc50), "--out", str(tmp_path / "o"),
              "--sample-rate", "-5"])
    assert exit_.value.code == 2
    assert "'-5'" in capsys.readouterr().err
    assert main(["build-tfrecords", "--data-dir", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path / "o")]) == 1
    assert "nowhere" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_manifest_is_json_with_build_rate(tiny_tfrecords):
    manifest = json.loads((tiny_tfrecords / "manifest.json").read_text())
    assert manifest["build"]["clips_per_s"] > 0
    assert manifest["clips_csv_sha256"] == tfr.sha256_file(tiny_tfrecords / "clips.csv")


def _truncate(path, fmt, keep):
    """Rewrites `path` as `fmt` and cuts it to `keep(size)` bytes (a partial copy)."""
    x, rate = sf.read(path)
    sf.write(path, x, rate, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[:keep(len(data))])


@pytest.mark.parametrize("fmt,keep", [("WAV", lambda n: 60), ("WAV", lambda n: n // 2),
                                      ("FLAC", lambda n: n // 2)],
                         ids=["wav-60-bytes", "wav-half", "flac-half"])
def test_truncated_clip_is_refused_by_name_and_skip_bad_lists_it(esc50_copy, tmp_path, capsys,
                                                                 fmt, keep):
    victim = sorted((esc50_copy / "audio").iterdir())[4]
    _truncate(victim, fmt, keep)
    out = tmp_path / "a" / "b" / "tfr"
    assert build(esc50_copy, out) == 1
    err = capsys.readouterr().err
    assert victim.name in err and "--skip-bad" in err
    assert not (tmp_path / "a").exists()  # nested folders the failed build made are gone
    assert build(esc50_copy, out, "--skip-bad") == 0
    assert victim.name in capsys.readouterr().err
    manifest = tfr.read_manifest(out)
    assert [s["filename"] for s in manifest["skipped"]] == [victim.name]
    assert victim.name not in pd.read_csv(out / "clips.csv")["filename"].tolist()


def test_suspicious_clips_are_recorded_shown_and_refused_with_strict(esc50_copy, tmp_path,
                                                                    capsys):
    audio = sorted((esc50_copy / "audio").iterdir())
    rng = np.random.default_rng(0)
    sf.write(audio[0], np.zeros(8000), 8000, subtype="PCM_16")
    sf.write(audio[1], np.full(8000, 0.25), 8000, subtype="PCM_16")
    sf.write(audio[2], np.clip(3 * rng.standard_normal(8000), -1, 1), 8000, subtype="PCM_16")
    audio[4].write_bytes(audio[3].read_bytes())
    x, _ = sf.read(audio[5])
    sf.write(audio[5], np.repeat(x, 4), 32000, subtype="PCM_16")  # 4x the others' rate
    expected = {(audio[0].name, "silent"), (audio[1].name, "constant"),
                (audio[2].name, "clipped"), (audio[4].name, "duplicate"),
                (audio[5].name, "sample_rate")}
    out = tmp_path / "tfr"
    assert build(esc50_copy, out, "--strict") == 1
    err = capsys.readouterr().err
    assert "--strict" in err and all(name in err for name, _ in expected)
    assert not out.exists()

    assert build(esc50_copy, out) == 0
    assert "5 suspicious clip(s) kept" in capsys.readouterr().err
    manifest = tfr.read_manifest(out)
    assert {(i["filename"], i["kind"]) for i in manifest["issues"]} == expected
    assert audio[3].name in next(i["detail"] for i in manifest["issues"]
                                 if i["kind"] == "duplicate")
    assert main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "5 suspicious clip(s)" in shown and all(name in shown for name, _ in expected)
    # The finished build is up to date, but --strict still refuses what it holds.
    assert build(esc50_copy, out, "--strict") == 1
    assert audio[2].name in capsys.readouterr().err


def test_clean_data_has_no_issues(tiny_tfrecords):
    assert tfr.read_manifest(tiny_tfrecords)["issues"] == []


def test_build_config_is_a_config(tiny_tfrecords):
    config = tfr.BuildConfig(sample_rate=8000, clip_seconds=1.0, shards_per_fold=2)
    manifest = tfr.read_manifest(tiny_tfrecords)
    assert manifest["config"] == config.to_dict()  # the manifest's config, num_samples included
    assert tfr.BuildConfig.from_dict(manifest["config"]) == config
    with pytest.raises(Esc50Error, match="unknown setting.*shards;"):
        tfr.BuildConfig.from_dict({"shards": 2})
    for bad in (dict(sample_rate=500), dict(sample_rate=8000.0), dict(clip_seconds=0),
                dict(clip_seconds=601), dict(shards_per_fold=0), dict(compression="zip")):
        name, value = next(iter(bad.items()))
        with pytest.raises(Esc50Error, match=f"BuildConfig.{name}={value!r}"):
            tfr.BuildConfig(**bad)
