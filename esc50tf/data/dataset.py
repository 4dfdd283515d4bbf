"""A handle on a TFRecord folder: opened and verified once, then any number of pipelines.

Opening a folder made by `build-tfrecords` (:class:`TFRecordFolder`) reads
`manifest.json` and `clips.csv` once and checks once that every shard the
manifest lists is present with its recorded byte size. Each
`.dataset(selection, options)` afterwards only builds tf.data stages (see
esc50tf.data.pipeline): it reads no file until the dataset is iterated, and
then only the selected folds' shards, whose record counts are checked as they
are read. How a pipeline batches, shuffles, caches and distributes is a
:class:`DatasetOptions`, a frozen config like every other in esc50tf.

Example:
>>> folder = TFRecordFolder("tfrecords/")
>>> folder.num_classes, folder.sample_rate
(50, 44100)
>>> train = folder.dataset(Selection((2, 3, 4, 5)),
...                        DatasetOptions(training=True, batch_size=32, seed=0))
>>> x, y = next(iter(train))       # x: float32 [32, 220500], y: int32 [32]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from esc50tf.config import Config
from esc50tf.data import pipeline
from esc50tf.data import tfrecords as tfr
from esc50tf.data.splits import Selection, load_index
from esc50tf.errors import Esc50Error

__all__ = ["DatasetOptions", "TFRecordFolder", "locate_tfrecords", "manifest_identity"]

AUTOTUNE = -1  # tf.data.AUTOTUNE, without importing TensorFlow


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class DatasetOptions(Config):
    """How one tf.data pipeline over a TFRecord folder reads and batches clips.

    Args:
        training: bool. Shuffle (seeded) and drop the last partial batch.
            Defaults to False.
        batch_size: int. Defaults to 32.
        seed: int or None. Seeds file order and shuffling; with a seed the
            order is reproducible. Defaults to None.
        cache: True (memory), False, or a str path prefix for a file cache.
            Decoded int16 clips are cached before any random step. Defaults
            to True.
        shuffle_buffer: int or None. Defaults to the number of selected clips
            (a full shuffle), capped at 4096.
        drop_remainder: bool or None. Defaults to `training`.
        one_hot: bool. Labels as one-hot float32 `[batch, classes]` (for
            mixup); else int32 `[batch]`. Defaults to False.
        with_metadata: bool. Yield `(waveform, label, metadata_dict)`, the
            dict holding filename, fold, src_file, take, category, target.
            Defaults to False.
        waveform_dtype: "float32" (in [-1, 1]) or "int16" (raw, to convert on
            the accelerator and save host-to-device bandwidth). Defaults to
            "float32".
        num_parallel_reads: int, AUTOTUNE (-1) or None. Shards read at once.
            Defaults to min(number of shards, 8).
        deterministic: bool or None. Fixed element order. Defaults to True
            when a seed is given or when not training.
        prefetch: bool. Prefetch with AUTOTUNE. Defaults to True.
        num_workers: int. Input pipelines reading this dataset at once
            (tf.distribute workers); above 1 the auto-shard policy is set
            (FILE, or DATA when there are fewer shards than workers) and the
            record-count check, which needs every shard, is skipped.
            Defaults to 1.
        repeat: bool. Repeat forever (shuffled anew each pass) before
            batching, for multi-worker training with a fixed number of steps
            per epoch, so no worker runs out of data before the others.
            Defaults to False.
        data_service: str or None. A tf.data service dispatcher,
            "grpc://host:port": parsing, batching, the float conversion and
            the batch functions run on the service's workers (processing mode
            `esc50tf.data.service.processing_mode(repeat)`); not cached.
            Defaults to None.
        data_service_job: str or None. Shared job name, so several trainers
            (multi-worker) read one stream instead of one each. Defaults to
            None.
        autotune: bool. Run tf.data's autotuner (`Options.autotune`), which
            resizes parallelism and buffers while the pipeline runs. Defaults
            to False: in TensorFlow 2.21, destroying an autotuned iterator
            (which Keras does after every epoch of `fit` and every `evaluate`)
            blocks until the autotuner's next wake-up, and those come at
            doubling intervals after the iterator starts (10 ms, 20 ms, ...,
            up to a minute). That added up to 1.8 s to 3.4-s epochs, in about
            half of them. Without it the AUTOTUNE values take tf.data's fixed
            defaults; throughput on 2 cores was the same
            (benchmarks/bench_pipeline.py, the `-autotune` variants).

    Functions mapped over the batches (host-side features, mixup) are not
    settings: they go to `TFRecordFolder.dataset(..., batch_fns=...)`.
    """

    training: bool = False
    batch_size: int = 32
    seed: int | None = None
    cache: bool | str = True
    shuffle_buffer: int | None = None
    drop_remainder: bool | None = None
    one_hot: bool = False
    with_metadata: bool = False
    waveform_dtype: str = "float32"
    num_parallel_reads: int | None = None
    deterministic: bool | None = None
    prefetch: bool = True
    num_workers: int = 1
    repeat: bool = False
    data_service: str | None = None
    data_service_job: str | None = None
    autotune: bool = False

    def __post_init__(self):
        self.check(_is_int(self.batch_size) and self.batch_size >= 1, "batch_size",
                   self.batch_size, "an integer >= 1")
        self.check(self.seed is None or _is_int(self.seed), "seed", self.seed,
                   "an integer or None")
        self.check(isinstance(self.cache, (bool, str)), "cache", self.cache,
                   "True (memory), False, or a file path prefix")
        self.check(self.shuffle_buffer is None
                   or (_is_int(self.shuffle_buffer) and self.shuffle_buffer >= 1),
                   "shuffle_buffer", self.shuffle_buffer, "an integer >= 1 or None")
        self.check(self.waveform_dtype in ("float32", "int16"), "waveform_dtype",
                   self.waveform_dtype, "'float32' or 'int16'")
        self.check(self.num_parallel_reads in (None, AUTOTUNE)
                   or (_is_int(self.num_parallel_reads) and self.num_parallel_reads >= 1),
                   "num_parallel_reads", self.num_parallel_reads,
                   "an integer >= 1, AUTOTUNE (-1) or None")
        self.check(_is_int(self.num_workers) and self.num_workers >= 1, "num_workers",
                   self.num_workers, "an integer >= 1")


def _manifest_identity(path):
    if tfr.is_remote(path):
        return None
    try:
        st = os.stat(tfr.join_path(path, tfr.MANIFEST))
    except OSError:
        return ()
    return st.st_ino, st.st_size, st.st_mtime_ns


class TFRecordFolder:
    """An opened TFRecord folder made by `build_tfrecords` (a local path or a URI).

    Opening reads `manifest.json` and `clips.csv` and checks that every shard
    the manifest lists is present with its recorded byte size, once; the
    pipelines built afterwards re-read none of it. (`verify_shards(...,
    full=True)`, the hash check of `esc50tf inspect --verify`, reads all the
    data and is not done here.)

    Args:
        path: str or path-like. The folder, or a URI such as `gs://...`.

    Raises:
        Esc50Error: no or an unreadable manifest, a missing or resized shard,
            or no `clips.csv`.

    Example:
    >>> folder = TFRecordFolder("tfrecords/")
    >>> folder.expected_count(Selection((1,)))
    400
    >>> ds = folder.dataset(Selection((1,)), DatasetOptions(batch_size=16))
    """

    def __init__(self, path):
        self.path = path
        self._identity = _manifest_identity(path)
        self.manifest = tfr.read_manifest(path)
        tfr.verify_shards(path, self.manifest)
        self.index = load_index(path)

    def check_hashes(self, folds=None):
        """Checks every shard (of `folds`, default all) against its sha256 in the manifest.

        Reads the data once (the hashing part of `esc50tf inspect --verify`), so a
        damaged or swapped shard is named before training rather than as a
        TensorFlow read error after it.

        Raises:
            Esc50Error: naming the first damaged shard and its fold.
        """
        damaged = tfr.find_damaged_shard(self.path, self.manifest, folds)
        if damaged is not None:
            raise damaged

    def read_error(self, err):
        """For a TensorFlow error `err` met while reading this folder: an Esc50Error naming
        the damaged shard (and its fold) when the hashes find one, else None."""
        import tensorflow as tf

        if not isinstance(err, tf.errors.OpError):
            return None
        damaged = tfr.find_damaged_shard(self.path, self.manifest)
        if damaged is not None:
            return Esc50Error(f"{damaged} (reading it failed: {type(err).__name__})")
        return None

    def check_unchanged(self):
        """Raises Esc50Error when the folder was rebuilt or removed since it was opened.

        `build-tfrecords --overwrite` replaces `manifest.json` (a new file), so
        its inode, size and modification time identify one build. Costs one
        `stat`; URIs are not checked.
        """
        if self._identity is not None and _manifest_identity(self.path) != self._identity:
            raise Esc50Error(
                f"{self.path}: the TFRecord folder was replaced or removed while this command "
                "was reading it (its manifest.json changed); stopped, as its clips are no "
                "longer the ones this command started with. Rerun on the new build")

    def __repr__(self):
        return f"TFRecordFolder({str(self.path)!r})"

    @property
    def identity(self) -> str:
        """What the folder holds, wherever it lies (:func:`manifest_identity`)."""
        return manifest_identity(self.manifest)

    @property
    def sample_rate(self) -> int:
        return int(self.manifest["config"]["sample_rate"])

    @property
    def num_samples(self) -> int:
        """Samples per stored clip."""
        return int(self.manifest["config"]["num_samples"])

    @property
    def num_classes(self) -> int:
        return int(self.manifest["num_classes"])

    @property
    def class_names(self) -> list[str]:
        """Category names by label (0..num_classes-1)."""
        return [c["category"] for c in self.manifest["classes"]]

    @property
    def folds(self) -> list[int]:
        return list(self.manifest["folds"])

    @property
    def compression(self) -> str:
        """"none" or "gzip"."""
        return self.manifest["config"]["compression"]

    def info(self):
        """A short description from the manifest: rate, length, classes, folds, counts."""
        return {
            "sample_rate": self.sample_rate,
            "num_samples": self.num_samples,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "folds": self.folds,
            "counts": self.manifest["counts"],
        }

    def files(self, selection):
        """Paths of the non-empty shards of the selection's folds.

        Raises:
            Esc50Error: a fold of the selection is not in the folder.
        """
        available = set(self.folds)
        unknown = [f for f in selection.folds if f not in available]
        if unknown:
            raise Esc50Error(
                f"{self.path}: fold(s) {', '.join(map(str, unknown))} not in the data; "
                f"folds present: {', '.join(map(str, sorted(available)))}"
            )
        wanted = set(selection.folds)
        return [
            tfr.join_path(self.path, s["file"])
            for s in self.manifest["shards"]
            if s["fold"] in wanted and s["num_records"] > 0
        ]

    def expected_count(self, selection):
        """Clips the selection holds (from the manifest's counts, or the index for a subset)."""
        if selection.filenames is None:
            wanted = set(selection.folds)
            return sum(s["num_records"] for s in self.manifest["shards"] if s["fold"] in wanted)
        return len(selection.rows(self.index))

    def dataset(self, selection, options=None, batch_fns=()):
        """The tf.data pipeline over the selected clips.

        Args:
            selection: Selection. Folds (and optionally clips) to read.
            options: DatasetOptions or a dict of its settings. Defaults to
                `DatasetOptions()` (evaluation order, batches of 32).
            batch_fns: callables `(x, y) -> (x, y)` mapped over batches after
                the float conversion (e.g. host-side features, mixup).

        Returns:
            A `tf.data.Dataset` of `(waveform, label)` batches, or
            `(waveform, label, metadata)` with `with_metadata`.

        Raises:
            Esc50Error: unknown folds, an empty selection, fewer training clips
                than one batch, or an invalid option.
        """
        if not isinstance(selection, Selection):
            raise TypeError(f"selection must be a Selection, got {type(selection).__name__}")
        options = DatasetOptions.from_dict({} if options is None else options)
        files = self.files(selection)
        count = self.expected_count(selection)
        if count == 0 or not files:
            raise Esc50Error(f"{self.path}: the selection holds no clips ({selection})")
        return pipeline.build_pipeline(self, selection, files, count, options, tuple(batch_fns))


def manifest_identity(manifest):
    """A digest of a TFRecord folder's contents: its clip index and shard checksums.

    Equal for a folder and any copy or move of it, different for other data
    or another build configuration.
    """
    shards = sorted((s["file"], s.get("sha256")) for s in manifest["shards"])
    key = json.dumps([manifest["config"], manifest.get("clips_csv_sha256"), shards],
                     sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def locate_tfrecords(recorded, given=None, identity=None):
    """The TFRecord folder a run used: where it was, or found by its identity under `given`.

    Args:
        recorded: str. The folder the run recorded (absolute for runs of this
            version).
        given: str or None. `--data`: the folder itself, or a folder holding it
            (searched two levels deep for a manifest of the same identity).
        identity: str or None. The run's recorded `manifest_identity`; None
            (older runs) takes `given` as it is.

    Returns:
        The folder's path (str), or None when neither place holds TFRecords.

    Raises:
        Esc50Error: `given` holds TFRecords, but none of the run's identity.
    """
    if given is None:
        return recorded if tfr.has_manifest(recorded) else None
    if tfr.is_remote(given) or identity is None:
        return given if tfr.has_manifest(given) else None
    root = Path(given)
    candidates = [root] + sorted(root.glob("*/")) + sorted(root.glob("*/*/"))
    seen = []
    for folder in candidates:
        manifest_file = folder / tfr.MANIFEST
        if not manifest_file.is_file():
            continue
        try:
            found = manifest_identity(json.loads(manifest_file.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if found == identity:
            return str(folder)
        seen.append(str(folder))
    if seen:
        raise Esc50Error(f"{given}: holds TFRecords ({', '.join(seen[:3])}) but not the ones "
                         f"the run used (identity {identity}, recorded at {recorded})")
    return None
