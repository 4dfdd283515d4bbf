"""Synthetic ESC-50: a deterministic stand-in dataset in the real layout.

:func:`synthesize` writes ``audio/*.wav`` (16-bit PCM, mono) and
``meta/esc50.csv`` exactly as ESC-50 lays them out, so every part of the
project (metadata, TFRecords, training, ``esc50tf demo``) can run without the
600 MB download. Tests use it with a few classes at 8 kHz; benchmarks use the
full ESC-50 size (50 classes x 40 clips x 5 s at 44.1 kHz).

Each class has a sound recipe drawn from a class-seeded random generator: one
of seven families (harmonic stack with vibrato, repeated chirps, band-limited
noise, burst rhythms, AM tones, FM sirens, inharmonic bells) with a
class-specific register and timing. Families are spread over the frequency
range so that neighbouring classes of one family overlap: a recording shifts
the pitch by up to +-2 semitones and the tempo by up to +-19 %, and each clip
places its events at random times with random lengths, adds a faint event of
another class now and then, coloured background noise at 3-30 dB SNR and a
random gain of -20..0 dB. A per-band log spectrum separates the classes; the
clip level alone does not.

Like ESC-50, a *recording* (``src_file``) yields 1 to 3 takes (``A``, ``B``,
``C``) that share pitch, tempo, timbre and background, and all takes of a
recording sit in one fold. Every fold holds every class, as evenly as
``clips_per_class`` allows. The output depends only on the arguments: the
same seed gives byte-identical files.

:func:`synthesize_tfrecords` also builds the folder's TFRecords: it is the one
fake-data builder of the tests, ``esc50tf demo`` and the benchmarks, each
describing its data with a :class:`SynthConfig`.

Example:
>>> from esc50tf.data.synth import synthesize
>>> root = synthesize("/tmp/esc50-synth", num_classes=5, clips_per_class=10,
...                   sample_rate=8000, clip_seconds=1.0, progress=False)
>>> sorted(p.name for p in root.iterdir())
['audio', 'meta']
"""

from __future__ import annotations

import csv
import dataclasses
import math
import numbers
import os
from pathlib import Path

import numpy as np
import soundfile as sf
from esc50tf.progress import bar as progress_bar

from esc50tf.config import Config
from esc50tf.data import sounds
from esc50tf.errors import Esc50Error
from esc50tf.io import atomic_dir

__all__ = ["SynthConfig", "synthesize", "synthesize_tfrecords"]

COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")

_TAKES = "ABC"
_TAKE_COUNT_P = (0.55, 0.3, 0.15)  # P(a recording has 1, 2, 3 takes)


def _is_int(value, minimum):
    return (not isinstance(value, bool) and isinstance(value, numbers.Integral)
            and value >= minimum)


@dataclasses.dataclass(frozen=True)
class SynthConfig(Config):
    """What a synthetic dataset holds (validated when made).

    Args:
        num_classes: int. Number of classes, >= 2. Defaults to 10.
        clips_per_class: int. Clips per class, >= `num_folds`. Defaults to 40
            (as ESC-50).
        sample_rate: int. Sampling rate in Hz, >= 1000. Defaults to 22050.
        clip_seconds: float. Length of every clip in seconds, >= 0.1.
            Defaults to 5.0 (as ESC-50).
        num_folds: int. Number of folds, >= 1. Defaults to 5.
        seed: int. Seed, >= 0; the same seed gives byte-identical files.
            Defaults to 0.
    """

    num_classes: int = 10
    clips_per_class: int = 40
    sample_rate: int = 22050
    clip_seconds: float = 5.0
    num_folds: int = 5
    seed: int = 0

    def __post_init__(self):
        for name, minimum in (("num_classes", 2), ("num_folds", 1), ("clips_per_class", 1)):
            value = getattr(self, name)
            self.check(_is_int(value, minimum), name, value, f"an integer >= {minimum}")
        self.check(self.clips_per_class >= self.num_folds, "clips_per_class",
                   self.clips_per_class, f"an integer >= num_folds ({self.num_folds}), so that "
                   "every fold holds every class")
        self.check(_is_int(self.sample_rate, 1000), "sample_rate", self.sample_rate,
                   "an integer >= 1000")
        seconds = self.clip_seconds
        self.check(not isinstance(seconds, bool) and isinstance(seconds, numbers.Real)
                   and math.isfinite(seconds) and seconds >= 0.1,
                   "clip_seconds", seconds, "a finite number >= 0.1")
        self.check(_is_int(self.seed, 0), "seed", self.seed, "an integer >= 0")
        for name in ("num_classes", "clips_per_class", "sample_rate", "num_folds", "seed"):
            self.set_field(name, int(getattr(self, name)))
        self.set_field("clip_seconds", float(seconds))


def _plan(recipes, clips_per_class, num_folds, seed):
    """Rows of the CSV in generation order, with a recording index per row."""
    rng = np.random.default_rng([seed, 0, 1])
    groups = []  # (target, fold, size)
    for recipe in recipes:
        base, extra = divmod(clips_per_class, num_folds)
        for f in range(num_folds):
            # Successive classes hand their spare clips to the next folds in
            # turn, so fold sizes differ by at most one.
            count = base + ((f - recipe.target * extra) % num_folds < extra)
            while count > 0:
                size = int(rng.choice(3, p=_TAKE_COUNT_P)) + 1
                size = min(size, count)
                groups.append((recipe.target, f + 1, size))
                count -= size
    span = max(900_000, 10 * len(groups))
    ids = 100_000 + rng.choice(span, size=len(groups), replace=False)
    rows = []
    for rec_index, ((target, fold, size), src) in enumerate(zip(groups, ids)):
        for take in _TAKES[:size]:
            rows.append(
                {
                    "filename": f"{fold}-{src}-{take}-{target}.wav",
                    "fold": fold,
                    "target": target,
                    "category": recipes[target].category,
                    "esc10": target % 5 == 0,
                    "src_file": int(src),
                    "take": take,
                    "_rec": rec_index,
                }
            )
    return rows


def _is_nonempty_dir(path):
    try:
        with os.scandir(path) as it:
            return any(True for _ in it)
    except NotADirectoryError:
        return True


def synthesize(
    out_dir,
    *,
    num_classes=10,
    clips_per_class=40,
    sample_rate=22050,
    clip_seconds=5.0,
    num_folds=5,
    seed=0,
    overwrite=False,
    progress=True,
):
    """Writes a synthetic dataset in the ESC-50 layout.

    Creates ``out_dir/audio/{fold}-{src_file}-{take}-{target}.wav`` (16-bit
    PCM mono) and ``out_dir/meta/esc50.csv`` with the columns ``filename,
    fold, target, category, esc10, src_file, take``. The files are built in a
    hidden sibling folder and renamed into place at the end, so an
    interrupted run never leaves a folder that looks complete, and with
    ``overwrite=True`` the old folder is replaced only once the new one is
    whole.

    Args:
        out_dir: str or path-like. The dataset folder to create. It must not
            exist, be empty, or `overwrite` must be True.
        num_classes, clips_per_class, sample_rate, clip_seconds, num_folds,
            seed: what the dataset holds, as in :class:`SynthConfig` (same
            meanings, defaults and limits).
        overwrite: bool. Replace a non-empty `out_dir`. Defaults to False.
        progress: bool. Show a progress bar on stderr. Defaults to True.

    Returns:
        pathlib.Path: `out_dir`.

    Raises:
        Esc50Error: an argument is out of range, or `out_dir` exists and is
            not empty while `overwrite` is False.

    Example:
    >>> root = synthesize("/tmp/toy", num_classes=4, clips_per_class=10,
    ...                   sample_rate=8000, clip_seconds=1.0, progress=False)
    >>> (root / "meta" / "esc50.csv").exists()
    True
    """
    config = SynthConfig(num_classes=num_classes, clips_per_class=clips_per_class,
                         sample_rate=sample_rate, clip_seconds=clip_seconds,
                         num_folds=num_folds, seed=seed)
    num_classes, clips_per_class = config.num_classes, config.clips_per_class
    sample_rate, clip_seconds, num_folds, seed = (config.sample_rate, config.clip_seconds,
                                                  config.num_folds, config.seed)
    given, out_dir = Path(out_dir), Path(os.path.abspath(out_dir))
    if out_dir.exists() and _is_nonempty_dir(out_dir):
        if not overwrite:
            raise Esc50Error(
                f"{out_dir} already exists and is not empty; pass --overwrite "
                "(overwrite=True) to replace it"
            )
        if not out_dir.is_dir():
            raise Esc50Error(f"{out_dir} exists and is not a folder; remove it or choose another path")

    recipes = sounds.make_recipes(num_classes, sample_rate, seed)
    rows = _plan(recipes, clips_per_class, num_folds, seed)
    n = max(int(round(clip_seconds * sample_rate)), 1)

    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        audio = tmp / "audio"
        audio.mkdir()
        rec_index, rec = -1, None
        with progress_bar(total=len(rows), desc="synthesize", unit="clip",
                          disable=not progress) as bar:
            for i, row in enumerate(rows):
                if row["_rec"] != rec_index:  # the takes of a recording are adjacent
                    rec_index = row["_rec"]
                    rng = np.random.default_rng([seed, 2, rec_index])
                    rec = sounds.make_recording(recipes[row["target"]], rng)
                rng = np.random.default_rng([seed, 3, i])
                pcm = sounds.render_clip(recipes, row["target"], rec, n, sample_rate, rng)
                sf.write(audio / row["filename"], pcm, sample_rate, subtype="PCM_16", format="WAV")
                bar.update()
        (tmp / "meta").mkdir()
        with open(tmp / "meta" / "esc50.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(COLUMNS)
            for row in sorted(rows, key=lambda r: r["filename"]):
                writer.writerow([row[c] for c in COLUMNS])
    return given


def synthesize_tfrecords(data_dir, tfrecord_dir, config=None, build=None, *, reuse=False,
                         workers=None, progress=True, log=None):
    """Writes a synthetic ESC-50-layout folder and builds its TFRecords.

    The one fake-data builder of the tests, ``esc50tf demo`` and the
    benchmarks: `synthesize` then `build_tfrecords`.

    Args:
        data_dir: str or path-like. The ESC-50-layout folder to write (it must
            not exist or be empty, unless `reuse`).
        tfrecord_dir: str or path-like. The TFRecord folder to build (an
            up-to-date build there is kept as it is).
        config: SynthConfig or dict. What to synthesise. Defaults to
            `SynthConfig()`.
        build: BuildConfig or dict. How to store it. Defaults to the data's
            own rate and clip length, 4 shards per fold.
        reuse: bool. Keep a dataset already in `data_dir` (one holding
            `meta/esc50.csv`, e.g. from an earlier run) instead of refusing
            it. Defaults to False.
        workers: int or None. Decoding processes of the build. Defaults to
            the number of CPUs.
        progress: bool. Progress bars on stderr. Defaults to True.
        log: callable(str) or None. The build's status lines. Defaults to
            printing to stderr.

    Returns:
        The TFRecord folder's manifest dict.

    Example:
    >>> manifest = synthesize_tfrecords("/tmp/toy", "/tmp/toy-tfr",
    ...                                 SynthConfig(num_classes=4, clips_per_class=10,
    ...                                             sample_rate=8000, clip_seconds=1.0),
    ...                                 progress=False)
    >>> manifest["counts"]["total"]
    40
    """
    from esc50tf.data.build import build_tfrecords
    from esc50tf.data.tfrecords import BuildConfig

    config = SynthConfig.from_dict(config or {})
    if build is None:
        build = BuildConfig(sample_rate=config.sample_rate, clip_seconds=config.clip_seconds)
    if not (reuse and (Path(data_dir) / "meta" / "esc50.csv").is_file()):
        synthesize(data_dir, **config.to_dict(), progress=progress)
    return build_tfrecords(data_dir, tfrecord_dir, BuildConfig.from_dict(build),
                           workers=workers, progress=progress, log=log)
