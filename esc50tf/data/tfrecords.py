"""The TFRecord format of a built folder: shards grouped by fold, clips.csv and a manifest.

Layout of an output folder:

    fold1-00000-of-00004.tfrecord      # one set of shards per fold
    ...
    clips.csv                          # one row per stored clip: fold, label, src_file, shard
    manifest.json                      # written last: config, classes, counts, shard sha256s

Each record is a `tf.train.Example` with namespaced keys (see FEATURE_KEYS):
`audio/pcm` (int16 little-endian bytes), `audio/sample_rate`,
`audio/num_samples`, `label` (0..C-1), `target` (the CSV's), `category`,
`fold`, `src_file`, `take`, `filename`, `esc10`.

The build itself (`build_tfrecords`) is `esc50tf.data.build`: shards are
written into a hidden staging folder and moved into place only when every
shard is complete; `manifest.json` is written last, through a temporary file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import numpy as np

from esc50tf.config import Config, setting
from esc50tf.data import metadata as meta_lib
from esc50tf.errors import Esc50Error

MANIFEST = "manifest.json"
CLIPS_CSV = "clips.csv"
FORMAT = "esc50tf-tfrecords"
FORMAT_VERSION = 1
COMPRESSIONS = {"none": "", "gzip": "GZIP"}
SHARD_RE = re.compile(r"^fold.+-\d{5}-of-\d{5}\.tfrecord(\.gz)?$")
# Fixed seed for spreading each fold's clips over its shards (class-mixed shards).
_SHARD_SEED = 20151006
FEATURE_KEYS = (
    "audio/pcm", "audio/sample_rate", "audio/num_samples", "label", "target",
    "category", "fold", "src_file", "take", "filename", "esc10",
)


@dataclasses.dataclass(frozen=True)
class BuildConfig(Config):
    """How clips are stored (validated when made).

    Args:
        sample_rate: int. Rate every clip is resampled to. Defaults to 44100
            (ESC-50's own, so ESC-50 is stored untouched).
        clip_seconds: float. Fixed clip length; shorter clips are zero-padded
            at the end, longer ones cropped. Defaults to 5.0.
        shards_per_fold: int. Files per fold, so several readers can
            interleave and multi-worker training can shard by file. Defaults to 4.
        compression: str. "none" or "gzip". Defaults to "none" (PCM barely
            compresses and gzip costs read throughput).

    `to_dict()` adds the derived `num_samples` (the manifest's `config`), and
    `from_dict()` accepts it back.
    """

    sample_rate: int = setting(
        44100, flag="--sample-rate", type="positive_int",
        help="resample every clip to this rate in Hz (default: %(default)s, ESC-50's own)")
    clip_seconds: float = setting(
        5.0, flag="--clip-seconds", type="positive_float",
        help="fixed clip length; pad with zeros or crop (default: %(default)s)")
    shards_per_fold: int = setting(4, flag="--shards-per-fold", type="positive_int",
                                   help="shard files per fold (default: %(default)s)")
    compression: str = setting("none", flag="--compression", choices=tuple(COMPRESSIONS),
                               help="TFRecord compression (default: %(default)s)")

    @property
    def num_samples(self):
        return int(round(self.sample_rate * self.clip_seconds))

    def __post_init__(self):
        self.check(isinstance(self.sample_rate, int) and 1000 <= self.sample_rate <= 384000,
                   "sample_rate", self.sample_rate, "an integer in 1000..384000 Hz")
        self.check(isinstance(self.clip_seconds, (int, float)) and 0 < self.clip_seconds <= 600,
                   "clip_seconds", self.clip_seconds, "a number of seconds in (0, 600]")
        self.check(isinstance(self.shards_per_fold, int) and 1 <= self.shards_per_fold <= 1024,
                   "shards_per_fold", self.shards_per_fold, "an integer in 1..1024")
        self.check(self.compression in COMPRESSIONS, "compression", self.compression,
                   ", ".join(COMPRESSIONS))

    def to_dict(self):
        return {**super().to_dict(), "num_samples": self.num_samples}

    @classmethod
    def from_dict(cls, values):
        if isinstance(values, dict):  # a manifest's config also holds the derived length
            values = {k: v for k, v in values.items() if k != "num_samples"}
        return super().from_dict(values)


def shard_name(fold, index, count, compression="none"):
    suffix = ".tfrecord.gz" if compression == "gzip" else ".tfrecord"
    return f"fold{fold}-{index:05d}-of-{count:05d}{suffix}"


def is_remote(path):
    """True for URIs that TensorFlow's file systems serve (gs://, s3://, hdfs://, ram://...)."""
    return "://" in str(path)


def join_path(base, *names):
    """`base/name`, keeping a URI's `scheme://` (pathlib would fold it to `scheme:/`)."""
    if is_remote(base):
        return "/".join([str(base).rstrip("/"), *names])
    return str(Path(base).joinpath(*names))


def open_file(path, mode="rb"):
    """`open` for local paths, `tf.io.gfile.GFile` for URIs."""
    if not is_remote(path):
        return open(path, mode)
    import tensorflow as tf

    return tf.io.gfile.GFile(str(path), mode)


def sha256_file(path, chunk=1 << 22):
    h = hashlib.sha256()
    with open_file(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def inputs_fingerprint(meta, data_dir):
    """Cheap identity of the inputs: the CSV's bytes plus each clip's size and mtime."""
    h = hashlib.sha256()
    h.update(sha256_file(meta_lib.csv_path(data_dir)).encode())
    root = meta_lib.audio_dir(data_dir)
    for name in sorted(meta["filename"]):
        try:
            st = (root / name).stat()
            h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{name}\0missing\n".encode())
    return h.hexdigest()


def assign_shards(meta, shards_per_fold):
    """Plans the output: for each fold, its clips spread over its shards.

    Clips are sorted by filename and permuted with a fixed seed before being
    cut into contiguous runs, so every shard mixes classes and the plan (and
    so every shard's bytes) depends only on the CSV and the configuration.

    Returns:
        A list of `(fold, shard_index, shard_count, row_positions)`, folds in
        ascending order.
    """
    plan = []
    for fold in sorted(meta["fold"].unique()):
        rows = meta.index[meta["fold"] == fold]
        rows = sorted(rows, key=lambda r: meta.at[r, "filename"])
        rng = np.random.default_rng([_SHARD_SEED, int(fold) & 0xFFFFFFFF])
        order = [rows[i] for i in rng.permutation(len(rows))]
        count = min(shards_per_fold, len(order))
        for index, chunk in enumerate(np.array_split(np.asarray(order), count)):
            plan.append((int(fold), index, count, [int(r) for r in chunk]))
    return plan


def make_example(pcm_bytes, row, label, config):
    import tensorflow as tf

    def _bytes(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def _int(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))

    feature = {
        "audio/pcm": _bytes(pcm_bytes),
        "audio/sample_rate": _int(config.sample_rate),
        "audio/num_samples": _int(config.num_samples),
        "label": _int(label),
        "target": _int(row["target"]),
        "category": _bytes(str(row["category"]).encode()),
        "fold": _int(row["fold"]),
        "src_file": _bytes(str(row["src_file"]).encode()),
        "take": _bytes(str(row["take"]).encode()),
        "filename": _bytes(str(row["filename"]).encode()),
        "esc10": _int(bool(row["esc10"])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def _remote_errors(path):
    """tf.errors.OpError for URIs (what tf.io.gfile raises), nothing extra for local paths."""
    if not is_remote(path):
        return ()
    import tensorflow as tf

    return (tf.errors.OpError,)


def _is_file(path):
    if not is_remote(path):
        return Path(path).is_file()
    import tensorflow as tf

    return tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path)


def has_manifest(folder):
    """Whether `folder` (local or a URI) holds a finished TFRecord folder's manifest."""
    return _is_file(join_path(folder, MANIFEST))


def _file_size(path):
    if not is_remote(path):
        return Path(path).stat().st_size
    import tensorflow as tf

    return tf.io.gfile.stat(path).length


def read_manifest(out_dir):
    """Loads `manifest.json` of a TFRecord folder (local or a URI); Esc50Error if absent or invalid."""
    path = join_path(out_dir, MANIFEST)
    if not _is_file(path):
        raise Esc50Error(
            f"{out_dir}: no {MANIFEST}; this is not a finished esc50tf TFRecord folder "
            "(run `esc50tf build-tfrecords`)"
        )
    try:
        with open_file(path, "rb") as f:
            manifest = json.loads(f.read())
    except (OSError, ValueError, *_remote_errors(path)) as err:
        raise Esc50Error(f"{path}: unreadable manifest ({err})") from None
    if manifest.get("format") != FORMAT:
        raise Esc50Error(f"{path}: not an esc50tf manifest (format={manifest.get('format')!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise Esc50Error(
            f"{path}: manifest format version {manifest.get('format_version')!r} "
            f"is not supported (this esc50tf reads version {FORMAT_VERSION})"
        )
    check_manifest(manifest, path)
    return manifest


def _count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_manifest(manifest, path=MANIFEST):
    """Checks a manifest's numbers against each other and its shard names (reads no data).

    The configuration must be valid and its `num_samples` the one it implies;
    every shard a plain file name of this folder (no path, no `..`) with
    non-negative counts; the totals per fold, per class and overall the sums
    of the shards'; the class and fold lists consistent with them.

    Raises:
        Esc50Error: naming `path` and the first field that is wrong.
    """
    def bad(what):
        raise Esc50Error(f"{path}: {what}; the manifest was edited or damaged: rebuild the "
                         "folder with `esc50tf build-tfrecords --overwrite`")

    try:
        config = manifest["config"]
        shards, counts, classes = manifest["shards"], manifest["counts"], manifest["classes"]
        build = BuildConfig.from_dict(config)
    except Esc50Error as err:
        bad(f"invalid config ({err})")
    except (KeyError, TypeError) as err:
        bad(f"missing field {err}")
    if config.get("num_samples") != build.num_samples:
        bad(f"config num_samples {config.get('num_samples')!r} is not sample_rate x "
            f"clip_seconds = {build.num_samples}")
    if not isinstance(shards, list) or not shards:
        bad("no shards listed")
    for shard in shards:
        name = shard.get("file") if isinstance(shard, dict) else None
        if not isinstance(name, str) or not SHARD_RE.match(name) or "/" in name or "\\" in name:
            bad(f"shard name {name!r} is not a shard file of this folder")
        for key in ("num_records", "bytes", "fold"):
            if not _count(shard.get(key)):
                bad(f"shard {name}: {key} {shard.get(key)!r} is not a count >= 0")
    total = sum(s["num_records"] for s in shards)
    if counts.get("total") != total:
        bad(f"counts.total {counts.get('total')!r} differs from the shards' {total} records")
    per_fold = {str(f): sum(s["num_records"] for s in shards if s["fold"] == f)
                for f in sorted({s["fold"] for s in shards})}
    if counts.get("per_fold") != per_fold:
        bad(f"counts.per_fold {counts.get('per_fold')!r} differs from the shards' {per_fold}")
    per_class = counts.get("per_class")
    if (not isinstance(per_class, dict) or not all(_count(v) for v in per_class.values())
            or sum(per_class.values()) != total):
        bad(f"counts.per_class does not sum to the {total} records")
    if manifest.get("num_classes") != len(classes) or len(per_class) != len(classes):
        bad(f"num_classes {manifest.get('num_classes')!r} differs from the {len(classes)} "
            "classes listed")
    if sorted(manifest.get("folds", [])) != sorted(int(f) for f in per_fold):
        bad(f"folds {manifest.get('folds')!r} differ from the shards' folds")


def verify_shards(out_dir, manifest, full=False):
    """Checks that every shard of the manifest is present and intact.

    Args:
        out_dir: the TFRecord folder (a local path or a URI such as gs://...).
        manifest: its manifest dict.
        full: bool. Also recompute sha256 and count records (reads all data).
            Otherwise only presence and byte size are checked (instant).

    Raises:
        Esc50Error: naming the first shard that is missing or differs, or a
            `clips.csv` whose sha256 is not the manifest's.
    """
    check_clips_csv(out_dir, manifest)
    for shard in manifest["shards"]:
        path = join_path(out_dir, shard["file"])
        if not _is_file(path):
            raise Esc50Error(f"{path}: shard listed in {MANIFEST} is missing")
        size = _file_size(path)
        if size != shard["bytes"]:
            raise Esc50Error(
                f"{path}: shard has {size} bytes, {MANIFEST} says {shard['bytes']} "
                "(modified or truncated; rebuild with --overwrite)"
            )
        if full:
            check_shard_hash(out_dir, shard)
            count = count_records(path, manifest["config"]["compression"])
            if count != shard["num_records"]:
                raise Esc50Error(
                    f"{path}: holds {count} records, {MANIFEST} says {shard['num_records']}"
                )


def check_clips_csv(out_dir, manifest):
    """Refuses a `clips.csv` whose bytes are not the ones the manifest recorded (one hash of a
    small file, so it is checked at every open)."""
    recorded = manifest.get("clips_csv_sha256")
    path = join_path(out_dir, CLIPS_CSV)
    if recorded is None or not _is_file(path):
        return  # a missing clips.csv is named where it is read
    if sha256_file(path) != recorded:
        raise Esc50Error(
            f"{path}: sha256 differs from the one {MANIFEST} recorded (rows edited, added or "
            "deleted); rebuild the folder with `esc50tf build-tfrecords --overwrite`")


def check_shard_hash(out_dir, shard):
    """Refuses a shard whose sha256 is not the manifest's, naming it and its fold."""
    path = join_path(out_dir, shard["file"])
    if sha256_file(path) != shard.get("sha256"):
        raise Esc50Error(
            f"{path} (fold {shard['fold']}): sha256 differs from {MANIFEST}: the shard is "
            f"corrupted or another shard's; see `esc50tf inspect --verify {out_dir}`, and "
            "rebuild with `esc50tf build-tfrecords --overwrite`")


def find_damaged_shard(out_dir, manifest, folds=None):
    """Esc50Error naming the first shard (of `folds`, default all) that is not the one the
    manifest recorded, or None when every one is intact."""
    for shard in manifest["shards"]:
        if folds is None or shard["fold"] in folds:
            try:
                check_shard_hash(out_dir, shard)
            except Esc50Error as err:
                return err
    return None


def count_records(path, compression="none"):
    import tensorflow as tf

    ds = tf.data.TFRecordDataset(str(path), compression_type=COMPRESSIONS[compression])
    return int(ds.reduce(np.int64(0), lambda n, _: n + 1))
