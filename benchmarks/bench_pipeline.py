"""Input-pipeline throughput: esc50tf's tf.data pipeline against the study's path.

Clips per second from ESC-50-sized TFRecords (5 s at 44.1 kHz), in one run:

- esc50tf `TFRecordFolder.dataset`: read + decode only; with host-side log-Mel features
  (`make_host_featurizer`: 128 Mels, n_fft 2048, hop 512, mapped over
  batches); cold (first epoch, which also fills the cache) and cached (second
  epoch); by parallel readers and by parallel calls of the feature map; the
  featurizer as it was before the speed work (no XLA, dense filterbank
  product) and each change on its own (XLA, int16 batches scaled inside the
  compiled function, the banded filterbank product); caching the features;
  one clip per map call.
- References on the same clips: librosa log-Mel (`melspectrogram` +
  `power_to_db`, WAVs read with soundfile) in one process and in a
  `ProcessPoolExecutor` over all usable cores; the study's image path
  (librosa Mel -> matplotlib figure, viridis -> 224x224 PNG -> read back as
  an RGB array); `keras.layers.MelSpectrogram` inside tf.data on the same
  batches.

Every variant is reported as clips/s and as a ratio to the esc50tf host-feature
pipeline as the library ships it (`esc50tf-host-mel-cold`: first epoch, i.e.
files read, decoded and featurised, like the references). The slow references
(`librosa-single`, `seed-png*`) run on an evenly spread subset of the clips
(`--ref-clips`); the output says so. "Cold" means a first pass through
tf.data; the files themselves sit in the OS page cache (they were just written
or read), as they do for the librosa references.

Usage:
    python -m benchmarks.bench_pipeline --quick          # < 2 min on 2 cores
    python -m benchmarks.bench_pipeline                  # full: 2,000 clips
    python -m benchmarks.bench_pipeline --data tfrecords # the real ESC-50

With `--data`, quick mode reads whole folds up to 200 clips (fold 1 of
ESC-50); full mode reads every fold. `--profile-dir DIR` also records a
TensorBoard profile (tf.data input-pipeline analysis) of the reference.

Writes `OUT/bench_pipeline-<quick|full>-cpu.json` and `.md` (OUT defaults to
benchmarks/results) and prints the table.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import math
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import common

SCRIPT = "bench_pipeline"
REFERENCE = "esc50tf-host-mel-cold"
MEL = dict(n_fft=2048, hop_length=512, n_mels=128)  # the study's log-Mel
PNG_SIZE = 224  # pixels; the study's second image size
QUICK = dict(clips=200, ref_clips=40, repeats=1)
FULL = dict(clips=2000, ref_clips=200, repeats=3)

DESCRIPTIONS = {
    "tfrecord-read-raw":
        "TFRecordDataset over all shards (8 readers), records counted, not parsed",
    "esc50tf-read-decode-cold":
        "TFRecordFolder.dataset float32 batches, first epoch (parse, decode, cache fill)",
    "esc50tf-read-decode-cached":
        "TFRecordFolder.dataset float32 batches, second epoch (from the int16 memory cache)",
    "esc50tf-read-decode-int16-cold": "DatasetOptions(waveform_dtype='int16'), first epoch",
    "esc50tf-read-decode-int16-cached": "DatasetOptions(waveform_dtype='int16'), second epoch",
    "esc50tf-host-mel-cold":
        "REFERENCE: TFRecordFolder.dataset + make_host_featurizer log-Mel as batch_fns, as train "
        "--features-on host runs it (XLA, banded Mel product, float32 batches), first epoch",
    "esc50tf-host-mel-cached": "the reference pipeline, second epoch",
    "esc50tf-host-mel-int16-cold":
        "the same featurizer on int16 batches (scaled inside the XLA function), first epoch",
    "esc50tf-host-mel-int16-cached": "the same on int16 batches, second epoch",
    "esc50tf-host-mel-nojit-cold":
        "make_host_featurizer(jit_compile=False): banded Mel product, no XLA, first epoch",
    "esc50tf-host-mel-nojit-cached": "the same without XLA, second epoch",
    "esc50tf-host-mel-autotune-cold":
        "the reference with DatasetOptions(autotune=True): tf.data's autotuner on "
        "(the esc50tf default is off), first epoch",
    "esc50tf-host-mel-autotune-cached": "the same with the autotuner on, second epoch",
    "esc50tf-host-mel-before-cold":
        "the featurizer BEFORE the speed work: no XLA, dense Mel matmul, float32 batches, "
        "first epoch",
    "esc50tf-host-mel-before-cached": "the featurizer BEFORE the speed work, second epoch",
    "esc50tf-host-mel-feature-cache-cold":
        "cache() after the features (deterministic order), first epoch",
    "esc50tf-host-mel-feature-cache-cached":
        "cache() after the features: second epoch replays log-Mels",
    "esc50tf-host-mel-batch1-cold": "features mapped per clip (batch_size=1), no cache",
    "keras-melspectrogram-tfdata":
        "keras.layers.MelSpectrogram in tf.data on the same batches, first epoch",
    "keras-melspectrogram-tfdata-cached": "keras.layers.MelSpectrogram in tf.data, second epoch",
    "librosa-single":
        "soundfile + librosa melspectrogram + power_to_db(ref=max), one process, one thread",
    "librosa-pool":
        "the same in a ProcessPoolExecutor, one single-threaded worker per usable CPU",
    "seed-png":
        "the study's path: librosa Mel -> matplotlib viridis 224x224 PNG -> read back RGB, "
        "one thread",
    "seed-png-pyplot-specshow":
        "the same drawn as study code usually does: pyplot figure + librosa.display.specshow, "
        "one thread",
}


def describe(name):
    if name in DESCRIPTIONS:
        return DESCRIPTIONS[name]
    if name.startswith("esc50tf-read-decode-readers"):
        n = name[len("esc50tf-read-decode-readers"):].split("-")[0]
        return f"DatasetOptions(num_parallel_reads={n}), float32, no cache (one pass)"
    if name.startswith("esc50tf-host-mel-calls"):
        n = name[len("esc50tf-host-mel-calls"):].split("-")[0]
        return f"host log-Mel map with num_parallel_calls={n}, no cache (one pass)"
    return ""


def parse_args(argv=None):
    parser = common.make_parser(
        __doc__.split("\n\n")[0],
        full_help="2,000 synthetic clips, references on 200, 3 repeats.",
        quick_help="200 synthetic clips, references on 40, 1 repeat.",
    )
    parser.add_argument("--batch-size", type=int, default=32,
                        help="Clips per batch. Default: 32.")
    parser.add_argument("--ref-clips", type=int, default=None,
                        help="Clips for the slow references (librosa-single, seed-png). "
                             "Default: 200 (full), 40 (quick).")
    parser.add_argument("--profile-dir", default=None,
                        help="Also write a TensorBoard profiler trace of one epoch of the "
                             "reference pipeline here (tf.data input-pipeline analysis).")
    # For tests: the number of synthetic clips.
    parser.add_argument("--clips", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for name in ("clips", "ref_clips", "repeats"):
        if getattr(args, name) is None:
            setattr(args, name, preset[name])
        common.check_positive(parser, "--" + name.replace("_", "-"), getattr(args, name))
    common.check_positive(parser, "--batch-size", args.batch_size)
    if args.data is not None and not Path(args.data).is_dir():
        parser.error(f"--data {args.data}: not a folder")
    return args


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


def synthesize_tfrecords(clips, workdir):
    """ESC-50-sized synthetic TFRecords: 5 s at 44.1 kHz, about `clips` clips."""
    from esc50tf.data.synth import SynthConfig, synthesize_tfrecords

    # Every fold must hold every class: at least 5 clips per class.
    per_class = max(5, clips // 50)
    classes = max(2, clips // per_class)
    out = workdir / "tfrecords"
    synthesize_tfrecords(workdir / "synth", out,
                         SynthConfig(num_classes=classes, clips_per_class=per_class,
                                     sample_rate=44100, clip_seconds=5.0),
                         progress=False, log=lambda _: None)
    return out


def spread(n_total, n):
    """`n` indices evenly spread over `range(n_total)` (every class and fold)."""
    n = min(n, n_total)
    return np.unique(np.linspace(0, n_total - 1, n).round().astype(int))


def reference_wavs(tfrecord_dir, manifest, index, rows, workdir):
    """WAV paths of the clips `rows` of `index`, as stored in the TFRecords.

    Uses the source WAVs named by the manifest when they hold exactly the
    stored samples' rate and length; otherwise writes the stored clips to
    16-bit WAVs in `workdir` (e.g. TFRecords resampled at build time).
    """
    import soundfile as sf

    from esc50tf.data import metadata as meta_lib

    rate = int(manifest["config"]["sample_rate"])
    length = int(manifest["config"]["num_samples"])
    source = Path(manifest["source"]["data_dir"])
    paths = [meta_lib.audio_dir(source) / f for f in index["filename"].iloc[rows]]
    try:
        if all(p.is_file() for p in paths):
            infos = [sf.info(str(p)) for p in paths]
            if all(i.samplerate == rate and i.frames == length and i.channels == 1
                   for i in infos):
                return [str(p) for p in paths], "source WAVs"
    except RuntimeError:
        pass
    paths = export_wavs(tfrecord_dir, manifest, index, rows, workdir / "wav")
    return paths, "exported from TFRecords"


def export_wavs(tfrecord_dir, manifest, index, rows, out_dir):
    import soundfile as sf

    from esc50tf.data.dataset import DatasetOptions, TFRecordFolder
    from esc50tf.data.splits import Selection

    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = index.iloc[rows]
    selection = Selection(folds=tuple(sorted(set(int(f) for f in wanted["fold"]))),
                          filenames=frozenset(wanted["filename"]))
    ds = TFRecordFolder(tfrecord_dir).dataset(selection, DatasetOptions(
        batch_size=1, cache=False, with_metadata=True, waveform_dtype="int16"))
    rate = int(manifest["config"]["sample_rate"])
    written = {}
    for x, _, meta in ds.as_numpy_iterator():
        name = meta["filename"][0].decode()
        path = out_dir / Path(name).with_suffix(".wav").name
        sf.write(str(path), x[0], rate, subtype="PCM_16")
        written[name] = str(path)
    return [written[f] for f in wanted["filename"]]


# --------------------------------------------------------------------------
# References (module level so that spawned pool workers can import them
# without TensorFlow)
# --------------------------------------------------------------------------


def librosa_logmel(path):
    """The study's log-Mel: [n_mels, frames] float32, dB relative to the maximum."""
    import librosa
    import soundfile as sf

    y, sr = sf.read(path, dtype="float32")
    mel = librosa.feature.melspectrogram(y=y, sr=sr, **MEL)
    return librosa.power_to_db(mel, ref=np.max)


def single_threaded_blas():
    """Context limiting BLAS / OpenMP pools to one thread (threadpoolctl).

    librosa's filterbank product goes through BLAS; on a busy machine a
    multi-threaded BLAS spins and runs several times slower than one thread.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1)


def _pool_init():
    # One process per core, each single-threaded; import and warm up librosa
    # before the clock starts.
    single_threaded_blas()  # the limit holds for the worker's life
    librosa_logmel_array(np.zeros(44100, np.float32), 44100)


def librosa_logmel_array(y, sr):
    import librosa

    return librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, **MEL), ref=np.max)


def _pool_task(path):
    cpu = time.process_time()
    features = librosa_logmel(path)
    return features, time.process_time() - cpu


def study_png(path, png_path):
    """librosa Mel -> matplotlib figure (viridis) -> 224x224 PNG -> uint8 RGB array."""
    from matplotlib.figure import Figure
    from PIL import Image

    db = librosa_logmel(path)
    inches = PNG_SIZE / 100.0
    fig = Figure(figsize=(inches, inches), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.imshow(db, origin="lower", aspect="auto", cmap="viridis")
    fig.savefig(png_path, dpi=100)
    with Image.open(png_path) as image:
        return np.asarray(image.convert("RGB"))  # [224, 224, 3] uint8


def study_png_pyplot(path, png_path):
    """As `study_png`, drawn through pyplot and `librosa.display.specshow`."""
    import librosa.display
    import matplotlib.pyplot as plt
    from PIL import Image

    db = librosa_logmel(path)
    inches = PNG_SIZE / 100.0
    fig = plt.figure(figsize=(inches, inches), dpi=100)
    try:
        ax = fig.add_axes((0, 0, 1, 1))
        librosa.display.specshow(db, ax=ax, cmap="viridis")
        ax.set_axis_off()
        fig.savefig(png_path, dpi=100)
    finally:
        plt.close(fig)
    with Image.open(png_path) as image:
        return np.asarray(image.convert("RGB"))


# --------------------------------------------------------------------------
# Cases: each builds its pipeline afresh, runs it and returns {name: Timing}
# --------------------------------------------------------------------------


def before_featurizer(config):
    """The host featurizer as it was before the speed work, for before/after figures.

    `make_host_featurizer` now (1) compiles with XLA, which fuses padding,
    framing, windowing, |X|^2 and the log; (2) scales int16 batches inside
    the compiled function; (3) multiplies each run of adjacent Mel bands only
    with the bins where it is non-zero (`MelSpectrogram._project`,
    `esc50tf.frontend.mel_bands`). This rebuilds the earlier version: plain
    graph-mode TensorFlow and one dense filterbank product, float32 in. The
    dense product is restored by overriding `_project` on one layer instance;
    the numbers agree to float32 summation order.
    """
    import tensorflow as tf

    from esc50tf.frontend import build_frontend

    layer = build_frontend(config, dtype="float32")
    layer._project = lambda s, c, xp: xp.matmul(s, c["mel"])  # [..., frames, n_mels]
    return lambda x: layer.compute_tf(tf.convert_to_tensor(x))


def run_epoch(ds):
    """Iterates `ds` once; Timing of the whole pass (clips from the labels)."""
    with common.timed() as t:
        for batch in ds:
            t.clips += int(batch[1].shape[0])
    return t


class Bench:
    """Holds the data and the featurizers; its `case_*` methods time one thing."""

    def __init__(self, tfrecord_dir, args):
        import keras
        import tensorflow as tf

        from esc50tf.data.dataset import TFRecordFolder
        from esc50tf.data.splits import Selection
        from esc50tf.frontend import FeatureConfig, make_host_featurizer

        self.tf = tf
        self.dir = tfrecord_dir
        self.batch_size = args.batch_size
        self.folder = TFRecordFolder(tfrecord_dir)
        self.manifest = self.folder.manifest
        folds = self.manifest["folds"]
        if args.data:
            # Whole folds (never a filter, which would still read every shard)
            # until --clips are reached: in quick mode, fold 1 of ESC-50.
            per_fold = self.manifest["counts"]["per_fold"]
            for k in range(1, len(folds) + 1):
                if sum(per_fold[str(f)] for f in folds[:k]) >= args.clips:
                    break
            folds = folds[:k]
        self.selection = Selection(folds=tuple(folds))
        index = self.folder.index
        self.index = index[index["fold"].isin(folds)].reset_index(drop=True)
        self.count = len(self.index)
        self.sample_rate = int(self.manifest["config"]["sample_rate"])
        self.num_samples = int(self.manifest["config"]["num_samples"])
        self.feature_config = FeatureConfig(kind="mel", sample_rate=self.sample_rate, **MEL)
        # As shipped (XLA), without XLA, and as before the speed work.
        self.featurize = make_host_featurizer(self.feature_config)
        self.featurize_nojit = make_host_featurizer(self.feature_config, jit_compile=False)
        self.featurize_before = before_featurizer(self.feature_config)
        self.keras_mel = keras.layers.MelSpectrogram(
            fft_length=MEL["n_fft"], sequence_stride=MEL["hop_length"],
            sequence_length=MEL["n_fft"], num_mel_bins=MEL["n_mels"],
            sampling_rate=self.sample_rate, min_freq=0.0, max_freq=self.sample_rate / 2,
        )
        self._warm_up()

    def _warm_up(self):
        # Trace and run every featurizer once per batch shape (the full and
        # the last partial batch) before any clock runs: imports, kernel
        # set-up and XLA's first compilations. Each new tf.data pipeline still
        # instantiates its functions again (see the notes).
        tf = self.tf
        # The before/after variants must compute the same features.
        x = tf.random.stateless_normal([2, self.num_samples], seed=(3, 4)) * 0.1
        gap = float(tf.reduce_max(tf.abs(self.featurize(x) - self.featurize_before(x))))
        if gap > 1e-2:
            raise RuntimeError(f"the shipped and the earlier featurizer differ by {gap:.3g} dB")
        sizes = {self.batch_size, self.count % self.batch_size or self.batch_size, 1}
        for b in sorted(sizes):
            x = tf.zeros([b, self.num_samples])
            self.featurize(x)
            self.featurize(tf.cast(x, tf.int16))
            self.featurize_nojit(x)
            self.featurize_before(x)
            self.keras_mel(x)

    def dataset(self, batch_fns=(), **kwargs):
        from esc50tf.data.dataset import DatasetOptions

        kwargs.setdefault("batch_size", self.batch_size)
        return self.folder.dataset(self.selection, DatasetOptions(**kwargs), batch_fns=batch_fns)

    def map_features(self, fn):
        return lambda x, y: (fn(x), y)

    def two_epochs(self, name, **kwargs):
        ds = self.dataset(cache=True, **kwargs)
        return {f"{name}-cold": run_epoch(ds), f"{name}-cached": run_epoch(ds)}

    # --- decode only ------------------------------------------------------

    def case_raw(self):
        tf = self.tf
        files = self.folder.files(self.selection)
        ds = tf.data.Dataset.from_tensor_slices(files).interleave(
            tf.data.TFRecordDataset, cycle_length=min(8, len(files)),
            num_parallel_calls=min(8, len(files)),
        ).batch(self.batch_size)
        with common.timed() as t:
            for batch in ds:
                t.clips += int(batch.shape[0])
        return {"tfrecord-read-raw": t}

    def case_decode(self):
        return self.two_epochs("esc50tf-read-decode")

    def case_decode_int16(self):
        return self.two_epochs("esc50tf-read-decode-int16", waveform_dtype="int16")

    def case_readers(self, readers):
        ds = self.dataset(cache=False, num_parallel_reads=readers)
        return {f"esc50tf-read-decode-readers{readers}-cold": run_epoch(ds)}

    # --- host features ----------------------------------------------------

    def case_host_mel(self):
        return self.two_epochs("esc50tf-host-mel",
                               batch_fns=(self.map_features(self.featurize),))

    def case_host_mel_calls(self, calls):
        tf = self.tf
        parallel = tf.data.AUTOTUNE if calls == "autotune" else calls
        ds = self.dataset(cache=False, prefetch=False)
        ds = ds.map(self.map_features(self.featurize), num_parallel_calls=parallel)
        return {f"esc50tf-host-mel-calls{calls}-cold": run_epoch(ds.prefetch(tf.data.AUTOTUNE))}

    def case_host_mel_int16(self):
        return self.two_epochs("esc50tf-host-mel-int16", waveform_dtype="int16",
                               batch_fns=(self.map_features(self.featurize),))

    def case_host_mel_nojit(self):
        return self.two_epochs("esc50tf-host-mel-nojit",
                               batch_fns=(self.map_features(self.featurize_nojit),))

    def case_host_mel_autotune(self):
        return self.two_epochs("esc50tf-host-mel-autotune", autotune=True,
                               batch_fns=(self.map_features(self.featurize),))

    def case_host_mel_before(self):
        return self.two_epochs("esc50tf-host-mel-before",
                               batch_fns=(self.map_features(self.featurize_before),))

    def case_feature_cache(self):
        tf = self.tf
        ds = self.dataset(cache=False, prefetch=False,
                          batch_fns=(self.map_features(self.featurize),))
        ds = ds.cache().prefetch(tf.data.AUTOTUNE)
        name = "esc50tf-host-mel-feature-cache"
        return {f"{name}-cold": run_epoch(ds), f"{name}-cached": run_epoch(ds)}

    def case_batch1(self):
        ds = self.dataset(cache=False, batch_size=1,
                          batch_fns=(self.map_features(self.featurize),))
        return {"esc50tf-host-mel-batch1-cold": run_epoch(ds)}

    def case_keras(self):
        ds = self.dataset(cache=True, batch_fns=(self.map_features(self.keras_mel),))
        return {"keras-melspectrogram-tfdata": run_epoch(ds),
                "keras-melspectrogram-tfdata-cached": run_epoch(ds)}

    # --- profiling --------------------------------------------------------

    def profile_featurizer(self, batch=8, calls=5, rounds=3):
        """CPU ms per clip of the featurizer's steps, cumulative (ops of tf.signal.stft).

        Each step is timed in `rounds` interleaved rounds of `calls` calls; the
        least CPU time of the rounds counts (other load only adds to it).
        """
        tf = self.tf
        from esc50tf.frontend import mel_filterbank, window_array

        n_fft, hop = MEL["n_fft"], MEL["hop_length"]
        window = tf.constant(window_array("hann", n_fft, n_fft), tf.float32)
        mel = tf.constant(mel_filterbank(self.sample_rate, n_fft, MEL["n_mels"]).T)
        steps = []

        def add(name, fn):
            steps.append((name, fn))

        add("pad (centre)", lambda x: tf.pad(x, [[0, 0], [n_fft // 2, n_fft // 2]]))
        add("frame", lambda x: tf.signal.frame(steps[0][1](x), n_fft, hop))
        add("window", lambda x: steps[1][1](x) * window)
        add("rfft", lambda x: tf.signal.rfft(steps[2][1](x), [n_fft]))

        def power(x):
            z = steps[3][1](x)
            return tf.math.real(z) ** 2 + tf.math.imag(z) ** 2

        add("power", power)
        add("mel matmul", lambda x: tf.matmul(power(x), mel))
        add("log (dB)", lambda x: tf.math.log(tf.maximum(steps[5][1](x), 1e-10)))
        add("whole featurizer, before (no XLA, dense Mel)", self.featurize_before)
        add("whole featurizer, banded Mel, no XLA", self.featurize_nojit)
        add("whole featurizer as shipped (XLA, banded Mel)", self.featurize)
        x = tf.random.stateless_normal([batch, self.num_samples], seed=(1, 2)) * 0.1
        functions = []
        for name, fn in steps:
            # Reduce to a scalar so the step's output is computed but not copied out.
            if name.startswith("whole"):
                f = tf.function(lambda x, fn=fn: tf.reduce_sum(fn(x)))
            else:
                f = tf.function(lambda x, fn=fn: tf.reduce_sum(tf.abs(fn(x))))
            f(x).numpy()
            functions.append(f)
        best = [math.inf] * len(steps)
        for _ in range(rounds):
            for i, f in enumerate(functions):
                with common.timed() as t:
                    for _ in range(calls):
                        f(x).numpy()
                best[i] = min(best[i], 1000.0 * t.cpu_s / (calls * batch))
        out, previous = [], 0.0
        for (name, _), ms in zip(steps, best):
            entry = {"step": name, "cpu_ms_per_clip": round(ms, 3)}
            if not name.startswith("whole"):
                entry["delta_ms"] = round(ms - previous, 3)
                previous = ms
            out.append(entry)
        # What the FFT costs elsewhere: scipy's (pocketfft) on the same windowed frames.
        import scipy.fft

        frames = steps[2][1](x).numpy()
        scipy_ms = math.inf
        for _ in range(rounds):
            with common.timed() as t:
                for _ in range(calls):
                    scipy.fft.rfft(frames, n_fft, workers=1)
            scipy_ms = min(scipy_ms, 1000.0 * t.cpu_s / (calls * batch))
        out.append({"step": "reference: scipy.fft.rfft of the same windowed frames, one thread",
                    "cpu_ms_per_clip": round(scipy_ms, 3)})
        return out

    def trace(self, logdir):
        tf = self.tf
        ds = self.dataset(cache=False, batch_fns=(self.map_features(self.featurize),))
        tf.profiler.experimental.start(str(logdir))
        try:
            run_epoch(ds)
        finally:
            tf.profiler.experimental.stop()


# --------------------------------------------------------------------------
# Reference runs
# --------------------------------------------------------------------------


def case_librosa_single(paths):
    with single_threaded_blas(), common.timed(len(paths)) as t:
        for p in paths:
            librosa_logmel(p)
    return {"librosa-single": t}


def case_librosa_pool(pool, paths, workers):
    chunk = max(1, len(paths) // (8 * workers))
    with common.timed(len(paths)) as t:
        worker_cpu = sum(cpu for _, cpu in pool.map(_pool_task, paths, chunksize=chunk))
    t.cpu_s += worker_cpu
    return {"librosa-pool": t}


def case_png(paths, png_dir, draw=study_png, name="seed-png"):
    with single_threaded_blas(), common.timed(len(paths)) as t:
        for i, p in enumerate(paths):
            image = draw(p, png_dir / f"{i:05d}.png")
    if image.shape != (PNG_SIZE, PNG_SIZE, 3):
        raise RuntimeError(f"{name}: read back an image of shape {image.shape}")
    return {name: t}


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


BEFORE = "esc50tf-host-mel-before-cold"


def targets(by_name, reference):
    """The issue's targets, for the pipeline as shipped and as it was before.

    `ratio` compares clips/s (wall clock, same cores, same run; best repeat,
    the one least disturbed by other load), `median_ratio` the medians;
    `cpu_ratio` compares CPU time per clip (the other's / esc50tf's), which
    other load on the machine disturbs much less.
    """
    out = []
    for label, name in (
        ("as shipped, first epoch", reference),
        ("as shipped, second epoch", reference.replace("-cold", "-cached")),
        ("before the speed work, first epoch", BEFORE),
        ("before the speed work, second epoch", BEFORE.replace("-cold", "-cached")),
    ):
        entry = by_name.get(name)
        if entry is None:
            continue
        for other, factor in (("seed-png", 20.0), ("librosa-pool", 2.0)):
            if other not in by_name:
                continue
            ratio = entry["clips_per_s"] / by_name[other]["clips_per_s"]
            median_ratio = None
            if entry.get("clips_per_s_median") and by_name[other].get("clips_per_s_median"):
                median_ratio = round(entry["clips_per_s_median"]
                                     / by_name[other]["clips_per_s_median"], 2)
            cpu_ratio = None
            if entry.get("cpu_ms_per_clip") and by_name[other].get("cpu_ms_per_clip"):
                cpu_ratio = round(by_name[other]["cpu_ms_per_clip"] / entry["cpu_ms_per_clip"], 2)
            out.append({
                "target": f"esc50tf decode + host features >= {factor:g}x {other}",
                "esc50tf_variant": name,
                "label": label,
                "ratio": round(ratio, 2),
                "median_ratio": median_ratio,
                "cpu_ratio": cpu_ratio,
                "met": bool(ratio >= factor),
            })
    decode = by_name.get("esc50tf-read-decode-cached")
    if decode is not None:
        out.append({
            "target": "decode-only reading well above what a model consumes",
            "esc50tf_variant": "esc50tf-read-decode-cached",
            "label": "as shipped",
            "clips_per_s": decode["clips_per_s"],
            "ratio_to_reference":
                round(decode["clips_per_s"] / by_name[reference]["clips_per_s"], 2),
        })
    return out


def stage_profile(by_name):
    """CPU ms per clip of each stage, from differences between variants."""

    def cpu(name):
        entry = by_name.get(name)
        return None if entry is None else entry.get("cpu_ms_per_clip")

    def diff(a, b):
        x, y = cpu(a), cpu(b)
        return None if x is None or y is None else round(x - y, 3)

    return [
        {"stage": "read TFRecords (CRC, no parse)", "cpu_ms_per_clip": cpu("tfrecord-read-raw")},
        {"stage": "parse + decode to int16 + cache write",
         "cpu_ms_per_clip": diff("esc50tf-read-decode-int16-cold", "tfrecord-read-raw")},
        {"stage": "int16 -> float32 (from cache)",
         "cpu_ms_per_clip": diff("esc50tf-read-decode-cached", "esc50tf-read-decode-int16-cached")},
        {"stage": "host log-Mel before the speed work (no XLA, dense Mel)",
         "cpu_ms_per_clip": diff("esc50tf-host-mel-before-cached", "esc50tf-read-decode-cached")},
        {"stage": "host log-Mel, banded Mel, no XLA",
         "cpu_ms_per_clip": diff("esc50tf-host-mel-nojit-cached", "esc50tf-read-decode-cached")},
        {"stage": "host log-Mel as shipped (make_host_featurizer: XLA, banded Mel)",
         "cpu_ms_per_clip": diff("esc50tf-host-mel-cached", "esc50tf-read-decode-cached")},
        {"stage": "host log-Mel as shipped, int16 scaled inside XLA",
         "cpu_ms_per_clip": diff("esc50tf-host-mel-int16-cached",
                                 "esc50tf-read-decode-int16-cached")},
        {"stage": "keras.layers.MelSpectrogram",
         "cpu_ms_per_clip": diff("keras-melspectrogram-tfdata-cached",
                                 "esc50tf-read-decode-cached")},
    ]


def render_markdown(payload):
    cfg = payload["config"]
    dev = payload["device"]
    env = payload["environment"]
    lines = [
        f"# bench_pipeline ({payload['mode']}, {dev['label'].upper()})",
        "",
        f"{payload['created']}; {dev['name']}, {dev['logical_cpus']} usable CPUs; "
        f"TensorFlow {env['versions'].get('tensorflow', '-')}, Keras "
        f"{env['versions'].get('keras', '-')}, librosa {env['versions'].get('librosa', '-')}; "
        f"load average {env['loadavg_at_start']} at start (a shared machine: "
        "compare ratios, and CPU ms/clip, rather than absolute clips/s).",
        "",
        f"Data: {cfg['data']}, {cfg['clips']} clips (folds "
        f"{', '.join(map(str, cfg['folds']))}) of {cfg['clip_seconds']:g} s at "
        f"{cfg['sample_rate']} Hz; batch {cfg['batch_size']}; log-Mel {cfg['n_mels']} bands, "
        f"n_fft {cfg['n_fft']}, hop {cfg['hop_length']}. clips/s is the best of "
        f"{cfg['repeats']} interleaved repeat(s); `librosa-single` and the `seed-png` paths ran on "
        f"a subset of {cfg['ref_clips']} clips ({cfg['reference_wavs']}), everything "
        "else on all clips.",
        "",
        f"Ratios are to `{payload['reference']}`.",
        "",
        common.markdown_table(payload["results"], [
            ("name", lambda r: f"`{r['name']}`"),
            ("clips/s", lambda r: r["clips_per_s"]),
            ("x reference", lambda r: r["ratio_to_reference"]),
            ("median clips/s", lambda r: r.get("clips_per_s_median")),
            ("CPU ms/clip", lambda r: r.get("cpu_ms_per_clip")),
            ("clips", lambda r: r["clips"]),
            ("what", lambda r: r["description"]),
        ]),
        "",
        "## Targets",
        "",
        common.markdown_table(payload["targets"], [
            ("target", lambda r: r["target"]),
            ("esc50tf variant", lambda r: f"`{r['esc50tf_variant']}` ({r['label']})"),
            ("clips/s ratio (best)", lambda r: r.get("ratio")),
            ("clips/s ratio (median)", lambda r: r.get("median_ratio")),
            ("CPU-time ratio", lambda r: r.get("cpu_ratio")),
            ("clips/s", lambda r: r.get("clips_per_s")),
            ("met", lambda r: {True: "yes", False: "no"}.get(r.get("met"), "-")),
        ]),
        "",
        "## Profile",
        "",
        "CPU time per clip of each stage (differences between the variants above):",
        "",
        common.markdown_table(payload["profile"]["stages"], [
            ("stage", lambda r: r["stage"]),
            ("CPU ms/clip", lambda r: r["cpu_ms_per_clip"]),
        ]),
    ]
    steps = payload["profile"].get("featurizer_steps")
    if steps:
        lines += [
            "",
            f"Inside the featurizer (batch {payload['profile']['featurizer_batch']}, "
            "cumulative CPU ms per clip of the steps of tf.signal.stft and the filterbank):",
            "",
            common.markdown_table(steps, [
                ("up to step", lambda r: r["step"]),
                ("CPU ms/clip", lambda r: r["cpu_ms_per_clip"]),
                ("step alone", lambda r: r.get("delta_ms")),
            ]),
        ]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def main(argv=None):
    args, environment = common.start(parse_args, argv)
    workers = common.usable_cpus()
    with tempfile.TemporaryDirectory(prefix="esc50tf-bench-") as tmp:
        workdir = Path(tmp)
        if args.data:
            tfrecord_dir, data = Path(args.data), f"TFRecords in {args.data}"
        else:
            common.log(f"synthesising {args.clips} clips (5 s, 44.1 kHz) and building TFRecords")
            tfrecord_dir = synthesize_tfrecords(args.clips, workdir)
            data = "synthetic (esc50tf.data.synth)"

        import matplotlib

        matplotlib.use("Agg")
        bench = Bench(tfrecord_dir, args)
        ref_rows = spread(bench.count, args.ref_clips)
        ref_paths, wav_origin = reference_wavs(tfrecord_dir, bench.manifest, bench.index,
                                               ref_rows, workdir)
        all_paths, _ = reference_wavs(tfrecord_dir, bench.manifest, bench.index,
                                      np.arange(bench.count), workdir)
        png_dir = workdir / "png"
        png_dir.mkdir()
        # Import and warm up librosa, matplotlib and PIL before any clock runs.
        with single_threaded_blas():
            study_png(ref_paths[0], png_dir / "warm-up.png")
            study_png_pyplot(ref_paths[0], png_dir / "warm-up.png")

        cases = [
            bench.case_raw, bench.case_decode, bench.case_decode_int16,
            *[lambda n=n: bench.case_readers(n) for n in (1, 2, 4, 8)],
            bench.case_host_mel,
            *[lambda c=c: bench.case_host_mel_calls(c) for c in (1, 2, 4, "autotune")],
            bench.case_host_mel_int16, bench.case_host_mel_nojit, bench.case_host_mel_autotune,
            bench.case_host_mel_before,
            bench.case_feature_cache, bench.case_batch1, bench.case_keras,
            lambda: case_librosa_single(ref_paths),
            lambda: case_librosa_pool(pool, all_paths, workers),
            lambda: case_png(ref_paths, png_dir),
            lambda: case_png(ref_paths, png_dir, study_png_pyplot, "seed-png-pyplot-specshow"),
        ]
        timings = collections.defaultdict(list)
        context = multiprocessing.get_context("spawn")  # never fork a process running TF
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context,
                                                    initializer=_pool_init) as pool:
            list(pool.map(_pool_task, ref_paths[:workers]))  # start and warm every worker
            for repeat in range(args.repeats):
                common.log(f"repeat {repeat + 1}/{args.repeats}: {len(cases)} cases")
                for case in cases:
                    for name, timing in case().items():
                        timings[name].append(timing)
        profile = {"stages": None}
        if not args.quick:
            common.log("profiling the featurizer's steps")
            profile["featurizer_batch"] = 8
            profile["featurizer_steps"] = bench.profile_featurizer(batch=8)
        if args.profile_dir:
            bench.trace(args.profile_dir)

    results = []
    for name, ts in timings.items():
        subset = name in ("librosa-single", "seed-png", "seed-png-pyplot-specshow")
        results.append(common.summarise(name, ts, description=describe(name)
                                        + (f" (subset of {ts[0].clips} clips)" if subset else ""),
                                        subset=subset))
    common.add_ratios(results, REFERENCE)
    by_name = {r["name"]: r for r in results}
    profile["stages"] = stage_profile(by_name)
    cpu = common.cpu_description()
    payload = common.new_payload(SCRIPT, args.quick)
    payload.update({
        "device": {"label": "cpu", "kind": "CPU", "name": cpu["model"], **cpu},
        "environment": common.finish_environment(environment),
        "config": {
            "data": data,
            "clips": bench.count,
            "folds": list(bench.selection.folds),
            "sample_rate": bench.sample_rate,
            "clip_seconds": bench.num_samples / bench.sample_rate,
            "batch_size": args.batch_size,
            **MEL,
            "feature_config": bench.feature_config.to_dict(),
            "repeats": args.repeats,
            "ref_clips": int(len(ref_paths)),
            "reference_wavs": wav_origin,
            "pool_workers": workers,
            "png_size": PNG_SIZE,
            "command": common.command_line(argv),
        },
        "reference": REFERENCE,
        "results": results,
        "targets": targets(by_name, REFERENCE),
        "profile": profile,
        "notes": [
            "clips/s = best repeat; clips_per_s_median and wall_s list every repeat.",
            "cpu_ms_per_clip = CPU seconds of all threads (and, for librosa-pool, of the "
            "workers) per clip: robust to other load, unlike clips/s.",
            "cold = first pass through tf.data; the files were in the OS page cache, as "
            "for librosa.",
            "The targets count as met on the best repeat. On a shared machine the share of "
            "the second core varies between repeats; the single-threaded references do not "
            "need it, so the median ratio (and the CPU-time ratio, which gives esc50tf no "
            "credit for using two cores) are lower.",
            "librosa-single, seed-png and each librosa-pool worker run with BLAS limited to "
            "one thread (threadpoolctl): on a busy machine a multi-threaded BLAS spins and "
            "made librosa several times slower. Pool workers return the features to the "
            "parent.",
            "seed-png, the reference for the 20x target, draws with imshow on a bare "
            "Figure, the cheapest faithful rendering; seed-png-pyplot-specshow draws as "
            "study code usually does. Both write real PNG files and read them back.",
            "Each epoch's time includes the teardown of its iterator. With tf.data's "
            "autotuner on, TensorFlow 2.21 makes the teardown wait for the autotuner's next "
            "wake-up (at 10 ms, 30 ms, 70 ms, ... after the iterator starts, then every "
            "minute), which stretched some epochs of ~3.4 s to ~5.2 s; DatasetOptions turns the "
            "autotuner off unless asked (the -autotune variants).",
            "XLA variants compile their function again in each new tf.data pipeline "
            "(a few tenths of a second), which first-epoch figures include.",
            "keras.layers.MelSpectrogram keeps its defaults (top_db=80) except the FFT, hop, "
            "Mel bands, rate and min/max frequency, which match the others.",
        ],
    })
    common.write_report(args.out, "cpu", payload, render_markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
