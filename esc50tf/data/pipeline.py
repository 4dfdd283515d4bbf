"""The tf.data input pipeline: TFRecord shards -> batches of (waveform, label).

Stages, in order:

    shard files of the selected folds (verified when the folder was opened)
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

The settings come from a `DatasetOptions` (esc50tf.data.dataset); the
folder's manifest, index and shards come from a `TFRecordFolder`, which
builds this pipeline in `TFRecordFolder.dataset`.

At scale: `num_workers` > 1 (hosts that each run this pipeline under
MultiWorkerMirroredStrategy or a TPU pod) sets the tf.distribute auto-shard
policy: FILE when there are at least as many shard files as workers (each
worker reads its own shards), else DATA with a warning (every worker reads
everything and keeps its share; rebuild with more --shards-per-fold). With
`data_service`, everything up to the float conversion and `batch_fns` runs on
tf.data service workers (see esc50tf.data.service) and the client only
rebatches to static shapes. Paths may be `gs://` (or any TensorFlow file
system) URIs.

Example:
>>> folder = TFRecordFolder("tfrecords/")
>>> ds = folder.dataset(Selection(folds=(2, 3, 4, 5)),
...                     DatasetOptions(training=True, batch_size=32, seed=0))
>>> x, y = next(iter(ds))          # x: float32 [32, 220500], y: int32 [32]
"""

from __future__ import annotations

import warnings

from esc50tf.data import tfrecords as tfr
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


def build_pipeline(folder, selection, files, count, options, batch_fns=()):
    """Builds the tf.data stages over `files`, the shards of `selection`.

    Called by `TFRecordFolder.dataset`, which has already verified the folder,
    checked the selection and counted its clips; nothing here touches the file
    system until the dataset is iterated.

    Args:
        folder: TFRecordFolder. The opened folder (path, clip length, classes,
            compression).
        selection: Selection. Folds (and optionally clips) to read.
        files: list of str. The selection's non-empty shard paths.
        count: int. Clips the selection holds (checked while reading).
        options: DatasetOptions. How to batch, shuffle, cache and distribute.
        batch_fns: callables `(x, y) -> (x, y)` mapped over batches after the
            float conversion (e.g. host-side features, mixup).

    Returns:
        A `tf.data.Dataset`.
    """
    import tensorflow as tf

    o = options
    training, batch_size, seed, cache = o.training, o.batch_size, o.seed, o.cache
    with_metadata, num_workers, repeat = o.with_metadata, o.num_workers, o.repeat
    data_service, deterministic = o.data_service, o.deterministic
    tfrecord_dir, num_samples, num_classes = folder.path, folder.num_samples, folder.num_classes
    compression = tfr.COMPRESSIONS[folder.compression]
    drop_remainder = training if o.drop_remainder is None else o.drop_remainder
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
        from esc50tf.data import service

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
                stacklevel=3,
            )
    ds = tf.data.Dataset.from_tensor_slices(files)
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    # AUTOTUNE (or None): every shard at once, up to 8.
    readers = min(len(files), 8 if o.num_parallel_reads in (None, tf.data.AUTOTUNE)
                  else o.num_parallel_reads)
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
        buffer = o.shuffle_buffer or min(count, 4096)
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    # On service workers keep partial batches: the client rebatches them, so no
    # clip is lost to one worker's remainder.
    ds = ds.batch(batch_size, drop_remainder=drop_remainder and data_service is None,
                  num_parallel_calls=auto, deterministic=deterministic)

    def finish(batch):
        x = batch["pcm"]
        if o.waveform_dtype == "float32":
            x = tf.cast(x, tf.float32) / INT16_SCALE
        y = batch["label"]
        if o.one_hot:
            y = tf.one_hot(y, num_classes, dtype=tf.float32)
        if with_metadata:
            return x, y, {k: batch[k] for k in METADATA_KEYS}
        return x, y

    ds = ds.map(finish, num_parallel_calls=auto, deterministic=deterministic)
    for fn in batch_fns:
        ds = ds.map(fn, num_parallel_calls=auto, deterministic=deterministic)
    if data_service is not None:
        ds = service.distribute(ds, data_service, service_mode, job_name=o.data_service_job)
        # unbatch + batch, not rebatch: rebatch may leave two workers' partial
        # batches unmerged (seen: 7 batches for 29 clips of batch 5).
        ds = ds.unbatch().batch(batch_size, drop_remainder=drop_remainder)
        if service_mode == "distributed_epoch" and o.data_service_job is None:
            # Every clip exactly once per epoch: the batch count is known (progress bars,
            # Keras' steps), and a clip lost with a failed service worker is an error.
            batches = count // batch_size if drop_remainder else -(-count // batch_size)
            ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    tf_options = tf.data.Options()
    tf_options.deterministic = bool(deterministic)
    tf_options.autotune.enabled = bool(o.autotune)
    if shard_policy is not None:
        tf_options.experimental_distribute.auto_shard_policy = shard_policy
    ds = ds.with_options(tf_options)
    if o.prefetch:
        ds = ds.prefetch(auto)
    return ds

