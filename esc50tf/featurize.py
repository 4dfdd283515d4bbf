"""Features of audio files, for the ``esc50tf features`` command.

:func:`extract_features` loads files and runs the front-end layer of
:mod:`esc50tf.frontend` on them; :func:`write_features` saves them as an
.npz; :func:`plot_features` draws waveform and feature image per file. matplotlib is imported only when plotting.
"""

from __future__ import annotations

import json
import os

import numpy as np

from esc50tf.errors import Esc50Error
from esc50tf.frontend import FeatureConfig, build_frontend
from esc50tf.io import write_npz

__all__ = ["extract_features", "first_sample_rate", "plot_features", "write_features"]


def _fit_length(waveform, length):
    if len(waveform) >= length:
        return waveform[:length]
    return np.pad(waveform, (0, length - len(waveform)))


def extract_features(
    paths,
    config,
    *,
    sample_rate=None,
    clip_seconds=None,
    batch_size=16,
    return_waveforms=False,
):
    """Computes features of audio files with the front end of ``config``.

    Files are loaded with ``esc50tf.data.audio.load_audio`` (mono float32,
    resampled to the target rate). Clips are zero-padded at the end to the
    longest one (or cut/padded to ``clip_seconds``), and to at least
    ``n_fft`` samples, so all features have the same number of frames. A file
    that cannot be read is reported in ``errors`` and the others are still
    processed.

    Args:
        paths: iterable of str or os.PathLike. Audio files.
        config: FeatureConfig or dict. The features to compute.
        sample_rate: int or None. Rate to load (resample) the audio at; the
            features are computed for this rate. None means
            ``config.sample_rate``. Defaults to None.
        clip_seconds: float or None. Cut or zero-pad every clip to this
            duration; None pads to the longest clip. Defaults to None.
        batch_size: int. Clips per front-end call. Defaults to 16.
        return_waveforms: bool. Also return the padded waveforms
            ``[n_files, samples]`` (for :func:`plot_features`). Defaults to
            False.

    Returns:
        ``(features, filenames, errors)`` (plus ``waveforms`` when
        ``return_waveforms``): ``features`` float32 ``[n_ok, frames, bins]``,
        ``filenames`` the paths (as str, in input order) of the files
        featurised, ``errors`` a list of ``(path, message)`` for the files
        that failed.

    Raises:
        Esc50Error: bad ``sample_rate``, ``clip_seconds`` or ``config``.
    """
    from esc50tf.data.audio import load_audio

    config = FeatureConfig.from_dict(config)
    if sample_rate is not None and sample_rate != config.sample_rate:
        config = config.replace(sample_rate=sample_rate)
    rate = config.sample_rate
    if clip_seconds is not None and not (
        isinstance(clip_seconds, (int, float)) and clip_seconds > 0
    ):
        raise Esc50Error(
            f"clip_seconds={clip_seconds!r} is not allowed; allowed: a positive "
            "number of seconds or None."
        )

    waveforms, filenames, errors = [], [], []
    for path in paths:
        name = os.fspath(path)
        try:
            waveform, file_rate = load_audio(name, sample_rate=rate)
        except Esc50Error as exc:
            errors.append((name, str(exc)))
            continue
        if file_rate != rate:
            errors.append((name, f"{name}: loaded at {file_rate} Hz, expected {rate} Hz"))
            continue
        waveform = np.asarray(waveform, dtype=np.float32).reshape(-1)
        if waveform.size == 0:
            errors.append((name, f"{name}: no audio samples"))
            continue
        waveforms.append(waveform)
        filenames.append(name)

    frontend = build_frontend(config, dtype="float32")
    if clip_seconds is not None:
        length = int(round(clip_seconds * rate))
    else:
        length = max((len(w) for w in waveforms), default=0)
    length = max(length, config.n_fft)
    batch = np.zeros((len(waveforms), length), np.float32)
    for i, waveform in enumerate(waveforms):
        batch[i] = _fit_length(waveform, length)

    n_frames = config.num_frames(length)
    features = np.zeros((len(waveforms), n_frames, config.n_bins), np.float32)
    for start in range(0, len(waveforms), batch_size):
        chunk = batch[start : start + batch_size]
        features[start : start + len(chunk)] = np.asarray(frontend(chunk))
    if return_waveforms:
        return features, filenames, errors, batch
    return features, filenames, errors


_COLORBAR_LABELS = {"db": "dB", "ln": "ln(S + offset)", None: "linear"}


def first_sample_rate(paths, default=44100):
    """The sample rate of the first of `paths` that can be read (`default` if none can)."""
    import soundfile as sf

    for path in paths:
        try:
            return int(sf.info(path).samplerate)
        except Exception:  # noqa: BLE001 - unreadable files are reported when features are made
            continue
    return default


def write_features(path, features, filenames, config):
    """Writes `features`, `filenames` and `config` (JSON) to the .npz `path` whole or not at all."""
    write_npz(path, features=features, filenames=np.array(filenames),
              config=json.dumps(config.to_dict()))


def plot_features(waveforms, features, filenames, config, path):
    """Draws waveform and feature image per file into one image file.

    One row per file: the waveform against time in seconds, and the feature
    image (time in seconds across; frequency in Hz for STFT, Mel band for
    Mel, coefficient for MFCC up the side) with a colour bar (dB for
    ``log="db"``). Uses matplotlib's Agg canvas; the global pyplot state is
    not touched.

    Args:
        waveforms: sequence of 1-D arrays, one per file.
        features: array ``[n_files, frames, bins]``.
        filenames: sequence of str, used as titles.
        config: FeatureConfig or dict the features were computed with.
        path: str or os.PathLike. Output image; the format follows the
            extension (``.png``, ``.pdf``, ``.svg``...).

    Returns:
        The path written, as str.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    config = FeatureConfig.from_dict(config)
    features = np.asarray(features)
    n = len(filenames)
    if len(waveforms) != n or features.shape[0] != n:
        raise Esc50Error(
            f"plot_features: {len(waveforms)} waveforms, {features.shape[0]} "
            f"feature arrays and {n} filenames; all three must match."
        )
    sr = config.sample_rate
    fig = Figure(figsize=(12, 2.6 * max(n, 1)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(max(n, 1), 2, squeeze=False, width_ratios=[1, 1.3])
    if config.kind == "mfcc":
        colorbar = "MFCC (of dB Mel)" if config.log == "db" else "MFCC"
        if config.n_mfcc > 1:
            colorbar += "; colours span c1 and up, c0 saturates"
    else:
        colorbar = _COLORBAR_LABELS[config.log]
    for i in range(n):
        wave = np.asarray(waveforms[i]).reshape(-1)
        ax_w, ax_f = axes[i]
        ax_w.plot(np.arange(len(wave)) / sr, wave, linewidth=0.5)
        ax_w.set_xlim(0, max(len(wave), 1) / sr)
        ax_w.set_xlabel("time (s)")
        ax_w.set_ylabel("amplitude")
        ax_w.set_title(os.path.basename(str(filenames[i])))

        image = features[i].T  # [bins, frames]
        frames, bins = features[i].shape
        # Frame t is centred at t * hop / sr (center=True) or starts there.
        t0 = 0.0 if config.center else config.n_fft / 2 / sr
        dt = config.hop_length / sr
        x_extent = (t0 - dt / 2, t0 + (frames - 0.5) * dt)
        ylabel = config.spec.bin_label
        if config.kind == "stft":  # bins in Hz
            df = sr / config.n_fft
            y_extent = (-df / 2, (bins - 0.5) * df)
        else:
            y_extent = (-0.5, bins - 0.5)
        limits = {}
        if config.kind == "mfcc" and config.n_mfcc > 1:
            # c0 (the frame's overall level) is an order of magnitude larger than the
            # rest and would flatten them into one colour: scale by c1 and up.
            rest = np.delete(image, np.arange(0, bins, config.n_mfcc), axis=0)
            limits = dict(zip(("vmin", "vmax"), np.percentile(rest, [1, 99])))
        im = ax_f.imshow(
            image, origin="lower", aspect="auto", interpolation="nearest",
            extent=(*x_extent, *y_extent), cmap="magma", **limits,
        )
        ax_f.set_xlabel("time (s)")
        ax_f.set_ylabel(ylabel)
        fig.colorbar(im, ax=ax_f, label=colorbar)
    out = os.fspath(path)
    fig.savefig(out, dpi=100)
    return out
