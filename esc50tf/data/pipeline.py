"""The tf.data input pipeline: TFRecord shards -> batches of (waveform, label).

Stages, in order:

    shard files of the selected folds (manifest verified first)
    -> interleave: read several shards in parallel
    -> parse: tf.io.parse_single_example, PCM bytes -> int16 [samples]
    -> filter to the selection's clips (ratio splits, validation holdouts)
    -> assert_cardinality: a shard with fewer/more records than the manifest fails
    -> cache: decoded int16 clips in memory (or a file), before anything random
    -> shuffle (training only, seeded)
    -> batch (static shape; drop_remainder when training)
    -> int16 -> float32 in [-1, 1], vectorised over the batch
    -> batch_fns (e.g. host-side features or mixup), prefetch(AUTOTUNE)

Caching int16 halves the memory of caching float32 (ESC-50: 0.88 GB instead of
1.76 GB) and the conversion runs once per batch, not once per clip.

At scale: `num_workers` > 1 (hosts that each run this pipeline under
MultiWorkerMirroredStrategy or a TPU pod) sets the tf.distribute auto-shard
policy: FILE when there are at least as many shard files as workers (each
worker reads its own shards), else DATA with a warning (every worker reads
everything and keeps its share; rebuild with more --shards-per-fold). With
`data_service`, everything up to the float conversion and `batch_fns` runs on
tf.data service workers (see esc50tf.data_service) and the client only
rebatches to static shapes. Paths may be `gs://` (or any TensorFlow file
system) URIs.

Example:
>>> ds = make_dataset("tfrecords/", Selection(folds=(2, 3, 4, 5)), training=True,
...                   batch_size=32, seed=0)
>>> x, y = next(iter(ds))          # x: float32 [32, 220500], y: int32 [32]
"""

from __future__ import annotations

import warnings

from esc50tf.data import tfrecords as tfr
from esc50tf.data.splits import Selection, load_index
from esc50tf.errors import Esc50Error

INT16_SCALE = 32768.0
METADATA_KEYS = ("filename", "fold", "src_file", "take", "category", "target")


def _feature_spec():
    import tensorflow as tf

    string = tf.io.FixedLenFeature([], tf.string)
    integer = tf.io.FixedLenFeature([], tf.int64)
    return {
        "audio/pcm": string,
        "audio/sample_rate": integer,
        "label": integer,
        "target": integer,
        "category": string,
        "fold": integer,
        "src_file": string,
        "take": string,
        "filename": string,
    }


def selection_files(tfrecord_dir, manifest, selection):
    """Shard paths holding the selection's folds; Esc50Error for unknown folds."""
    available = set(manifest["folds"])
    unknown = [f for f in selection.folds if f not in available]
    if unknown:
        raise Esc50Error(
            f"{tfrecord_dir}: fold(s) {', '.join(map(str, unknown))} not in the data; "
            f"folds present: {', '.join(map(str, sorted(available)))}"
        )
    wanted = set(selection.folds)
    return [
        tfr.join_path(tfrecord_dir, s["file"])
        for s in manifest["shards"]
        if s["fold"] in wanted and s["num_records"] > 0
    ]


def expected_count(manifest, selection, index=None):
    if selection.filenames is None:
        wanted = set(selection.folds)
        return sum(s["num_records"] for s in manifest["shards"] if s["fold"] in wanted)
    return len(selection.rows(index))


def make_dataset(
    tfrecord_dir,
    selection,
    *,
    training,
    batch_size=32,
    seed=None,
    cache=True,
    shuffle_buffer=None,
    drop_remainder=None,
    one_hot=False,
    with_metadata=False,
    waveform_dtype="float32",
    num_parallel_reads=None,
    deterministic=None,
    batch_fns=(),
    prefetch=True,
    manifest=None,
    num_workers=1,
    repeat=False,
    data_service=None,
    data_service_job=None,
    autotune=False,
):
    """Builds the tf.data pipeline over the selected clips.

    Args:
        tfrecord_dir: str or path. A folder made by `build_tfrecords`.
        selection: Selection. Folds (and optionally clips) to read.
        training: bool. Shuffle (seeded) and drop the last partial batch.
        batch_size: int. Defaults to 32.
        seed: int or None. Seeds file order and shuffling; with a seed the
            order is reproducible. Defaults to None.
        cache: True (memory), False, or a str path prefix for a file cache.
            Decoded int16 clips are cached before any random step.
        shuffle_buffer: int. Defaults to the number of selected clips
            (a full shuffle), capped at 4096.
        drop_remainder: bool. Defaults to `training`.
        one_hot: bool. Labels as one-hot float32 `[batch, classes]` (for
            mixup); else int32 `[batch]`.
        with_metadata: bool. Yield `(waveform, label, metadata_dict)`, the
            dict holding filename, fold, src_file, take, category, target.
        waveform_dtype: "float32" (in [-1, 1]) or "int16" (raw, to convert on
            the accelerator and save host-to-device bandwidth).
        num_parallel_reads: int. Shards read at once. Defaults to
            min(number of shards, 8).
        deterministic: bool. Fixed element order. Defaults to True when a
            seed is given or when not training.
        batch_fns: callables `(x, y) -> (x, y)` mapped over batches after the
            float conversion (e.g. host-side features, mixup).
        prefetch: bool. Prefetch with AUTOTUNE. Defaults to True.
        manifest: dict. An already-read manifest (skips reading it again).
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
            `batch_fns` run on the service's workers (processing mode
            `esc50tf.data_service.processing_mode(repeat)`); not cached.
        data_service_job: str or None. Shared job name, so several trainers
            (multi-worker) read one stream instead of one each.
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

    Returns:
        A `tf.data.Dataset`.

    Raises:
        Esc50Error: no manifest, a missing or resized shard, unknown folds,
            or an empty selection.
    """
    import tensorflow as tf

    if not isinstance(selection, Selection):
        raise TypeError(f"selection must be a Selection, got {type(selection).__name__}")
    if waveform_dtype not in ("float32", "int16"):
        raise Esc50Error(f"waveform_dtype must be 'float32' or 'int16', got {waveform_dtype!r}")
    if batch_size < 1:
        raise Esc50Error(f"batch size must be >= 1, got {batch_size}")
    if num_workers < 1:
        raise Esc50Error(f"num_workers must be >= 1, got {num_workers}")
    manifest = manifest or tfr.read_manifest(tfrecord_dir)
    tfr.verify_shards(tfrecord_dir, manifest)
    files = selection_files(tfrecord_dir, manifest, selection)
    index = load_index(tfrecord_dir) if selection.filenames is not None else None
    count = expected_count(manifest, selection, index)
    if count == 0 or not files:
        raise Esc50Error(f"{tfrecord_dir}: the selection holds no clips ({selection})")
    num_samples = int(manifest["config"]["num_samples"])
    num_classes = int(manifest["num_classes"])
    compression = tfr.COMPRESSIONS[manifest["config"]["compression"]]
    drop_remainder = training if drop_remainder is None else drop_remainder
    if deterministic is None:
        deterministic = seed is not None or not training
    if training and drop_remainder and count < batch_size:
        raise Esc50Error(
            f"only {count} training clips selected, fewer than one batch of {batch_size}; "
            "lower --batch-size"
        )
    auto = tf.data.AUTOTUNE
    spec = _feature_spec()

    def parse(record):
        ex = tf.io.parse_single_example(record, spec)
        pcm = tf.io.decode_raw(ex["audio/pcm"], tf.int16, little_endian=True)
        pcm = tf.ensure_shape(pcm, [num_samples])
        out = {"pcm": pcm, "label": tf.cast(ex["label"], tf.int32)}
        if with_metadata:
            for key in METADATA_KEYS:
                out[key] = ex[key]
        if selection.filenames is not None:
            out["_filename"] = ex["filename"]
        return out

    shard_policy = None
    if data_service is not None:
        from esc50tf import data_service as service

        service_mode = service.processing_mode(repeat)
        if service_mode == "parallel_epochs":
            seed = None  # each service worker must shuffle differently
        cache = False  # every epoch is a new service job; worker-side caches do not carry over
        shard_policy = tf.data.experimental.AutoShardPolicy.OFF  # the service splits the work
    elif num_workers > 1:
        if len(files) >= num_workers:
            shard_policy = tf.data.experimental.AutoShardPolicy.FILE
        else:
            shard_policy = tf.data.experimental.AutoShardPolicy.DATA
            warnings.warn(
                f"{tfrecord_dir}: {len(files)} shard file(s) for {num_workers} workers, so every "
                f"worker reads all of them and keeps 1/{num_workers} of the clips (auto-shard "
                "DATA); rebuild with `esc50tf build-tfrecords --shards-per-fold N` so that the "
                "selected folds hold at least one shard per worker",
                stacklevel=2,
            )
    ds = tf.data.Dataset.from_tensor_slices(files)
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if num_parallel_reads in (None, tf.data.AUTOTUNE):
        num_parallel_reads = 8  # every shard at once, up to 8
    elif num_parallel_reads < 1:
        raise Esc50Error(f"num_parallel_reads must be >= 1 or AUTOTUNE, got {num_parallel_reads}")
    readers = min(len(files), num_parallel_reads)
    # `deterministic` only applies (and only goes without a warning) in parallel.
    parallel = {"num_parallel_calls": readers, "deterministic": deterministic} if readers > 1 else {}
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type=compression),
        cycle_length=readers,
        block_length=1,
        **parallel,
    )
    ds = ds.map(parse, num_parallel_calls=auto, deterministic=deterministic)
    if selection.filenames is not None:
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(sorted(selection.filenames)),
                tf.ones([len(selection.filenames)], tf.int32),
            ),
            default_value=0,
        )
        ds = ds.filter(lambda ex: table.lookup(ex["_filename"]) > 0)
        ds = ds.map(lambda ex: {k: v for k, v in ex.items() if k != "_filename"})
    if num_workers == 1 and data_service is None:
        # Fails at run time with a clear message if a shard holds fewer/more records
        # (a sharded or service-split pipeline sees only part of the shards).
        ds = ds.apply(tf.data.experimental.assert_cardinality(count))
    if cache:
        ds = ds.cache(cache if isinstance(cache, str) else "")
    if training:
        buffer = shuffle_buffer or min(count, 4096)
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    # On service workers keep partial batches: the client rebatches them, so no
    # clip is lost to one worker's remainder.
    ds = ds.batch(batch_size, drop_remainder=drop_remainder and data_service is None,
                  num_parallel_calls=auto, deterministic=deterministic)

    def finish(batch):
        x = batch["pcm"]
        if waveform_dtype == "float32":
            x = tf.cast(x, tf.float32) / INT16_SCALE
        y = batch["label"]
        if one_hot:
            y = tf.one_hot(y, num_classes, dtype=tf.float32)
        if with_metadata:
            return x, y, {k: batch[k] for k in METADATA_KEYS}
        return x, y

    ds = ds.map(finish, num_parallel_calls=auto, deterministic=deterministic)
    for fn in batch_fns:
        ds = ds.map(fn, num_parallel_calls=auto, deterministic=deterministic)
    if data_service is not None:
        ds = service.distribute(ds, data_service, service_mode, job_name=data_service_job)
        # unbatch + batch, not rebatch: rebatch may leave two workers' partial
        # batches unmerged (seen: 7 batches for 29 clips of batch 5).
        ds = ds.unbatch().batch(batch_size, drop_remainder=drop_remainder)
        if service_mode == "distributed_epoch" and data_service_job is None:
            # Every clip exactly once per epoch: the batch count is known (progress bars,
            # Keras' steps), and a clip lost with a failed service worker is an error.
            batches = count // batch_size if drop_remainder else -(-count // batch_size)
            ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    options = tf.data.Options()
    options.deterministic = bool(deterministic)
    options.autotune.enabled = bool(autotune)
    if shard_policy is not None:
        options.experimental_distribute.auto_shard_policy = shard_policy
    ds = ds.with_options(options)
    if prefetch:
        ds = ds.prefetch(auto)
    return ds


def dataset_info(tfrecord_dir):
    """A short description of a TFRecord folder from its manifest (no data read)."""
    manifest = tfr.read_manifest(tfrecord_dir)
    return {
        "sample_rate": manifest["config"]["sample_rate"],
        "num_samples": manifest["config"]["num_samples"],
        "num_classes": manifest["num_classes"],
        "class_names": [c["category"] for c in manifest["classes"]],
        "folds": manifest["folds"],
        "counts": manifest["counts"],
    }
