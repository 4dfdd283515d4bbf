"""`build-tfrecords`: an ESC-50-layout folder written as TFRecord shards per fold
(`esc50tf.data.tfrecords` holds the format: BuildConfig, the records, the
manifest and its checks).

    manifest = build_tfrecords("ESC-50-master", "tfrecords", BuildConfig(), workers=2)

The clips are decoded and resampled in a bounded process pool
(`esc50tf.data.decode`), written into a hidden staging folder, and moved into
place only when every shard is complete; `manifest.json` is written last. An
existing build is replaced only with `overwrite=True`, and a build whose inputs
and settings are unchanged is a no-op.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

from esc50tf import __version__
from esc50tf import cleanup
from esc50tf.data import metadata as meta_lib
from esc50tf.data import tfrecords as tfr
from esc50tf.data.decode import decoded_stream, describe_issues, find_issues, strict_message
from esc50tf.data.tfrecords import (CLIPS_CSV, COMPRESSIONS, FORMAT, FORMAT_VERSION, MANIFEST,
                                    SHARD_RE, BuildConfig, assign_shards, inputs_fingerprint,
                                    read_manifest, sha256_file, shard_name, verify_shards)
from esc50tf.errors import Esc50Error
from esc50tf.io import write_json
from esc50tf.lock import folder_lock


def _own_files(out_dir):
    """Files in out_dir that a build writes (and may replace)."""
    names = []
    for p in Path(out_dir).iterdir():
        if p.is_file() and (SHARD_RE.match(p.name) or p.name in (MANIFEST, CLIPS_CSV)):
            names.append(p)
    return names


def _describe_change(old, new):
    diffs = [
        f"{k} {old.get(k)!r} -> {new.get(k)!r}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    ]
    return "; ".join(diffs)


def _check_out_dir(out_dir, config, fingerprint, skip_bad, overwrite):
    """Decides what to do with an existing output folder.

    Returns the existing manifest when the build is already done (a no-op),
    else None. Raises Esc50Error when a build would replace user data without
    `overwrite`.
    """
    if not out_dir.exists():
        return None
    if not out_dir.is_dir():
        raise Esc50Error(f"{out_dir}: exists and is not a folder")
    entries = [p for p in out_dir.iterdir() if not p.name.startswith(".esc50tf-staging")]
    if not entries:
        return None
    if not (out_dir / MANIFEST).is_file():
        if overwrite:
            return None
        raise Esc50Error(
            f"{out_dir}: folder is not empty and holds no finished esc50tf build; "
            "choose an empty folder or pass --overwrite (only shard, clips.csv and "
            "manifest files are replaced)"
        )
    try:
        manifest = read_manifest(out_dir)
    except Esc50Error:
        if overwrite:  # a damaged build is what --overwrite replaces
            return None
        raise
    same_config = manifest["config"] == config.to_dict()
    same_inputs = manifest["source"]["fingerprint"] == fingerprint
    same_mode = manifest["source"].get("skip_bad", False) == skip_bad
    if same_config and same_inputs and same_mode and not overwrite:
        try:
            verify_shards(out_dir, manifest)
            return manifest
        except Esc50Error as err:
            raise Esc50Error(
                f"{out_dir}: the existing build is damaged ({err}); pass --overwrite to rebuild"
            ) from None
    if overwrite:
        return None
    if not same_config:
        why = "a different configuration: " + _describe_change(
            manifest["config"], config.to_dict()
        )
    elif not same_inputs:
        why = "different input files (metadata CSV or audio changed)"
    else:
        why = "a different --skip-bad setting"
    raise Esc50Error(
        f"{out_dir}: holds TFRecords built with {why}; pass --overwrite to replace them"
    )


def build_tfrecords(
    data_dir,
    out_dir,
    config=None,
    *,
    workers=None,
    skip_bad=False,
    overwrite=False,
    progress=True,
    log=None,
    strict=False,
):
    """Builds TFRecord shards, one set per fold, plus `clips.csv` and `manifest.json`.

    Args:
        data_dir: dataset root with `meta/esc50.csv` and `audio/`.
        out_dir: output folder (created).
        config: BuildConfig. Defaults to BuildConfig().
        workers: int. Decoding processes. Defaults to the number of CPUs.
        skip_bad: bool. Leave out clips that fail to decode, are truncated or
            are missing, list them (and record them in the manifest) instead
            of failing.
        overwrite: bool. Replace an existing build of another configuration.
        progress: bool. Show a progress bar on stderr.
        log: callable(str) for status lines. Defaults to printing to stderr.
        strict: bool. Refuse the build when a clip is suspicious (silent,
            constant, clipped throughout, at a far-off sample rate, or a
            duplicate of another clip); otherwise such clips are kept, listed,
            and recorded under `issues` in the manifest.

    Returns:
        The manifest dict. `manifest["up_to_date"]` is True when nothing had
        to be done.

    Raises:
        Esc50Error: on invalid configuration, metadata or audio (naming the
            file or row), or an output folder that would be overwritten.
    """
    config = BuildConfig.from_dict(config or {})
    log = log or (lambda msg: print(msg, file=sys.stderr))
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    workers = int(workers or os.cpu_count() or 1)
    if workers < 1:
        raise Esc50Error(f"workers must be >= 1, got {workers}")
    with folder_lock(out_dir, "build-tfrecords"):
        return _build_locked(data_dir, out_dir, config, workers, skip_bad, overwrite,
                             progress, log, strict)


def _build_locked(data_dir, out_dir, config, workers, skip_bad, overwrite, progress, log,
                  strict):
    meta = meta_lib.load_metadata(data_dir, check_files=not skip_bad)
    # More processes than CPUs or clips only add start-up time and memory.
    workers = max(1, min(workers, os.cpu_count() or 1, len(meta)))
    fingerprint = inputs_fingerprint(meta, data_dir)
    existing = _check_out_dir(out_dir, config, fingerprint, skip_bad, overwrite)
    if existing is not None:
        if strict and existing.get("issues", []):
            raise Esc50Error(strict_message(existing["issues"], out_dir))
        if strict and "issues" not in existing:
            raise Esc50Error(f"{out_dir}: built by an esc50tf without clip checks; pass "
                             "--overwrite to rebuild it with them")
        log(f"{out_dir}: up to date ({existing['counts']['total']} clips); nothing to do")
        return {**existing, "up_to_date": True}

    classes = meta_lib.class_table(meta)
    label_of = {c["target"]: c["label"] for c in classes}
    plan = assign_shards(meta, config.shards_per_fold)
    audio_root = meta_lib.audio_dir(data_dir)
    jobs = []
    for _, _, _, rows in plan:
        for r in rows:
            jobs.append(
                (len(jobs), str(audio_root / meta.at[r, "filename"]),
                 config.sample_rate, config.num_samples)
            )

    created = cleanup.make_dirs(out_dir)
    # This process holds the folder's lock, so every staging folder in it was left by
    # a process that died (kill -9, power loss) and can go.
    for stale in out_dir.glob(".esc50tf-staging-*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = out_dir / f".esc50tf-staging-{os.getpid()}"
    staging.mkdir()
    try:
        import tensorflow  # noqa: F401  (imported before timing the build)

        start = time.perf_counter()
        shards, index_rows, skipped, issues = _write_shards(
            staging, meta, plan, jobs, label_of, config, workers, skip_bad, progress
        )
        seconds = time.perf_counter() - start
        if not index_rows:
            raise Esc50Error(f"{data_dir}: no clip could be decoded; nothing was written")
        if strict and issues:
            for item in skipped:
                log(f"skipped: {item['error']}")
            raise Esc50Error(strict_message(issues, data_dir))
        _write_clips_csv(staging / CLIPS_CSV, index_rows)
        manifest = _make_manifest(
            data_dir, meta, config, classes, fingerprint, skip_bad, shards,
            index_rows, skipped, seconds, workers, sha256_file(staging / CLIPS_CSV), issues,
        )
        # Commit: drop the old build's manifest first (so it no longer looks
        # complete), then its files, then move the new files in; manifest last.
        old_manifest = out_dir / MANIFEST
        if old_manifest.exists():
            old_manifest.unlink()
        for p in _own_files(out_dir):
            p.unlink()
        for p in staging.iterdir():
            os.replace(p, out_dir / p.name)
        write_json(out_dir / MANIFEST, manifest)
    except BaseException:
        with cleanup.interrupts_deferred():
            shutil.rmtree(staging, ignore_errors=True)
            cleanup.remove_created(created)
        raise
    shutil.rmtree(staging, ignore_errors=True)

    for item in skipped:
        log(f"skipped: {item['error']}")
    if issues:
        log(f"{len(issues)} suspicious clip(s) kept (recorded in the manifest; "
            "--strict refuses them):")
        for line in describe_issues(issues):
            log(f"  {line}")
    log(
        f"wrote {manifest['counts']['total']} clips in {len(shards)} shards to {out_dir} "
        f"({seconds:.1f} s, {manifest['build']['clips_per_s']:.0f} clips/s, {workers} workers)"
        + (f"; skipped {len(skipped)} bad clip(s)" if skipped else "")
    )
    return {**manifest, "up_to_date": False}


def _write_shards(staging, meta, plan, jobs, label_of, config, workers, skip_bad, progress):
    import tensorflow as tf

    from esc50tf.progress import bar as progress_bar

    options = tf.io.TFRecordOptions(compression_type=COMPRESSIONS[config.compression])
    stream = decoded_stream(jobs, workers)
    bar = progress_bar(total=len(jobs), unit="clip", desc="decode+write", disable=not progress,
                       dynamic_ncols=True)
    shards, index_rows, skipped, checked = [], [], [], []
    try:
        for fold, index, count, rows in plan:
            name = shard_name(fold, index, count, config.compression)
            path = staging / name
            written = 0
            with tf.io.TFRecordWriter(str(path), options) as writer:
                for r in rows:
                    _, pcm, error, stats = next(stream)
                    bar.update(1)
                    row = meta.loc[r]
                    if error is not None:
                        if not skip_bad:
                            raise Esc50Error(
                                f"{error} (CSV row {r + 2}); fix or remove it, "
                                "or pass --skip-bad to leave bad clips out"
                            )
                        skipped.append({"filename": row["filename"], "error": error})
                        continue
                    label = label_of[int(row["target"])]
                    # deterministic: protobuf map order would otherwise vary between
                    # processes, and with it every shard's bytes and sha256.
                    example = tfr.make_example(pcm, row, label, config)
                    writer.write(example.SerializeToString(deterministic=True))
                    checked.append((row["filename"], stats, hashlib.sha1(pcm).hexdigest()))
                    index_rows.append(
                        (row["filename"], int(row["fold"]), label, int(row["target"]), row["category"],
                         row["src_file"], row["take"], bool(row["esc10"]), name)
                    )
                    written += 1
            shards.append(
                {"file": name, "fold": fold, "num_records": written,
                 "bytes": path.stat().st_size, "sha256": sha256_file(path)}
            )
    finally:
        bar.close()
        stream.close()
    return shards, index_rows, skipped, find_issues(checked)


def _write_clips_csv(path, rows):
    import pandas as pd

    pd.DataFrame(
        rows,
        columns=["filename", "fold", "label", "target", "category", "src_file", "take",
                 "esc10", "shard"],
    ).to_csv(path, index=False)


def _make_manifest(data_dir, meta, config, classes, fingerprint, skip_bad, shards,
                   index_rows, skipped, seconds, workers, clips_sha256, issues):
    folds = sorted({s["fold"] for s in shards})
    per_fold = {str(f): sum(s["num_records"] for s in shards if s["fold"] == f) for f in folds}
    per_class = {c["category"]: 0 for c in classes}
    for row in index_rows:
        per_class[row[4]] += 1
    total = len(index_rows)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "esc50tf_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": config.to_dict(),
        "source": {
            "data_dir": str(Path(data_dir).resolve()),
            "csv_sha256": sha256_file(meta_lib.csv_path(data_dir)),
            "fingerprint": fingerprint,
            "has_esc10": bool(meta.attrs.get("has_esc10", False)),
            "skip_bad": bool(skip_bad),
            "num_listed": int(len(meta)),
        },
        "num_classes": len(classes),
        "classes": classes,
        "folds": folds,
        "counts": {"total": total, "per_fold": per_fold, "per_class": per_class},
        "shards": shards,
        "clips_csv_sha256": clips_sha256,
        "skipped": skipped,
        "issues": issues,
        "build": {
            "seconds": round(seconds, 3),
            "clips_per_s": round(total / seconds, 1) if seconds > 0 else None,
            "workers": workers,
        },
    }
