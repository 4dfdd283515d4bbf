"""The HEAR API (Turian et al., "HEAR: Holistic Evaluation of Audio Representations",
NeurIPS 2021 competition; hearbenchmark.com) for esc50tf's pretrained models.

    model = esc50tf.hear.load_model("mn10_as")          # or a converted weights file
    scene = get_scene_embeddings(audio, model)          # [n_sounds, model.scene_embedding_size]
    emb, ts = get_timestamp_embeddings(audio, model)    # [n, T, D], [n, T] in milliseconds

`audio` is `[n_sounds, n_samples]` float32 in [-1, 1] at `model.sample_rate`
(a NumPy array or a TensorFlow tensor; HEAR pads a batch to one length), or a
list of 1-D arrays of different lengths (each is then embedded on its own).
Every CNN14 (PANNs) and `mn` (EfficientAT) architecture works, from any
converted weights file or cached checkpoint name (`esc50tf pretrained list`).

- Scene embeddings are the model's clip embedding of the whole sound (zero-
  padded to `WINDOW_SECONDS` if shorter): CNN14's fc1 output (2048) or the mn
  models' pooled last convolution (960 x width).
- Timestamp embeddings are the same embedding of a `WINDOW_SECONDS` window
  centred at every `model.hop_ms` milliseconds from 0 to the sound's end
  (the sound zero-padded by half a window at both ends); the timestamps are
  those centres in milliseconds.

The model is a `tf.Module` and the outputs are float32 `tf.Tensor`s, as the
HEAR rules require of a TensorFlow model. (hearvalidator 2021.0.2 accepts only
16, 22.05, 44.1 and 48 kHz models; the 32 kHz ones, CNN14 and the mn family,
fail its sample-rate check and pass the others: README.)
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from esc50tf.errors import Esc50Error

__all__ = ["HOP_MS", "WINDOW_SECONDS", "HearModel", "get_scene_embeddings",
           "get_timestamp_embeddings", "load_model"]

WINDOW_SECONDS = 1.0
HOP_MS = 50.0
BATCH_WINDOWS = 64  # windows per model call: bounded memory on long sounds


class HearModel(tf.Module):
    """A pretrained esc50tf model with the attributes the HEAR API asks for.

    Args:
        keras_model: keras.Model. Waveforms `[b, samples]` -> embeddings `[b, D]`
            (`esc50tf.models.registry.build_embedder`).
        architecture: str. The pretrained architecture (`cnn14`, `mn10`...).
        sample_rate: int. Hz.
        embedding_size: int.
        hop_ms: float. Spacing of the timestamp embeddings. Defaults to `HOP_MS`.
    """

    def __init__(self, keras_model, architecture, sample_rate, embedding_size, hop_ms=HOP_MS):
        super().__init__(name=f"{architecture}_hear")
        self.keras_model = keras_model
        self.architecture = architecture
        self.sample_rate = int(sample_rate)
        self.scene_embedding_size = int(embedding_size)
        self.timestamp_embedding_size = int(embedding_size)
        self.hop_ms = float(hop_ms)

    def embed(self, waveforms):
        """Clip embeddings `[b, D]` float32 of `waveforms [b, samples]`."""
        out = self.keras_model(np.asarray(waveforms, np.float32), training=False)
        return np.asarray(out, np.float32)


def load_model(model_file_path=""):
    """Loads a pretrained model for the HEAR API.

    Args:
        model_file_path: str. A converted weights file (`esc50tf pretrained
            convert ...`) or the name of a cached checkpoint (`mn10_as`,
            `cnn14`...). HEAR's empty default is refused: say which model.

    Returns:
        HearModel with `sample_rate`, `scene_embedding_size`, `timestamp_embedding_size`.
    """
    from esc50tf.models import registry
    from esc50tf.pretrained import architectures

    if not model_file_path:
        raise Esc50Error("load_model needs a weights file or a cached checkpoint name "
                         "(see `esc50tf pretrained list`)")
    embedder, arch = registry.build_embedder(model_file_path)
    size = int(embedder.output_shape[-1])
    return HearModel(embedder, arch, architectures.get(arch)["sample_rate"], size)


def _sounds(audio):
    """A list of float32 1-D arrays (a batch tensor becomes its rows)."""
    if isinstance(audio, (list, tuple)):
        sounds = [np.asarray(a, np.float32) for a in audio]
    else:
        batch = np.asarray(audio, np.float32)
        if batch.ndim != 2:
            raise ValueError(f"audio must be [n_sounds, n_samples]; got shape {batch.shape}")
        sounds = list(batch)
    for i, s in enumerate(sounds):
        if s.ndim != 1 or s.size == 0:
            raise ValueError(f"audio[{i}] must be a non-empty 1-D waveform; got shape {s.shape}")
    return sounds


def _tensor(x):
    return tf.convert_to_tensor(np.asarray(x, np.float32))


def get_scene_embeddings(audio, model):
    """One embedding per sound: `[n_sounds, model.scene_embedding_size]` float32."""
    sounds = _sounds(audio)
    # Sounds shorter than a window are zero-padded to one (CNN14 needs 32 frames).
    min_len = int(round(WINDOW_SECONDS * model.sample_rate))
    if not isinstance(audio, (list, tuple)):
        batch = np.stack(sounds)
        if batch.shape[1] < min_len:
            batch = np.pad(batch, ((0, 0), (0, min_len - batch.shape[1])))
        return _tensor(model.embed(batch))
    rows = [model.embed(np.pad(s, (0, max(0, min_len - s.size)))[None])[0] for s in sounds]
    return _tensor(np.stack(rows))


def _windows(sound, model):
    """(windows [T, W], centres in ms [T]) of one sound."""
    window = int(round(WINDOW_SECONDS * model.sample_rate))
    hop = model.hop_ms * model.sample_rate / 1000.0
    count = int(np.floor((sound.size - 1) / hop)) + 1 if sound.size > 1 else 1
    centres = np.round(np.arange(count) * hop).astype(np.int64)  # in samples
    padded = np.pad(sound, (window // 2, window - window // 2))
    index = centres[:, None] + np.arange(window)[None, :]
    return padded[index], centres * 1000.0 / model.sample_rate


def get_timestamp_embeddings(audio, model):
    """Embeddings every `model.hop_ms` ms: (`[n, T, D]`, timestamps `[n, T]` in ms).

    For a batch tensor every sound has the same T; for a list of sounds of
    different lengths, the shorter sounds' embeddings and timestamps are
    padded at the end by repeating their last row (HEAR pads its batches'
    audio the same way it expects here: to one shape).
    """
    per_sound = []
    for sound in _sounds(audio):
        windows, stamps = _windows(sound, model)
        embs = np.concatenate([model.embed(windows[i:i + BATCH_WINDOWS])
                               for i in range(0, len(windows), BATCH_WINDOWS)])
        per_sound.append((embs, stamps))
    longest = max(len(s) for _e, s in per_sound)
    embeddings = np.stack([np.pad(e, ((0, longest - len(e)), (0, 0)), mode="edge")
                           for e, _s in per_sound])
    timestamps = np.stack([np.pad(s, (0, longest - len(s)), mode="edge") for _e, s in per_sound])
    return _tensor(embeddings), _tensor(timestamps)
