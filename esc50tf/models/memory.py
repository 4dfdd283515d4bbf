"""What a configuration will cost in memory, estimated before anything is allocated.

`estimate_memory(cfg, num_samples, num_classes, num_clips)` adds up, in bytes:

- `base`: what this process already holds (its resident set: Python,
  TensorFlow, Keras, the data index);
- `front end`: the filterbank or DFT basis the front-end layer keeps, and
  the tensors one batch makes on its way through the front end (framed
  signal `[frames, n_fft]`, complex STFT and power `[frames, n_fft/2 + 1]`,
  features `[frames, bins]`, per clip);
- `activations`: every layer's output for one batch, as the model's own
  shapes give them (the model is built symbolically under
  `keras.StatelessScope`: its variables get shapes, never values), at the
  precision of each output (mixed precision halves most of them), kept for
  the backward pass; plus, for the backward pass itself, the gradient of the
  largest of them twice over;
- `parameters`: each weight once, and each trainable one again for its
  gradient and for each of the optimizer's slots (Adam and AdamW: 2, SGD
  with momentum: 1);
- `data`: the training clips cached as int16 and shuffled as int16 (the
  pipeline caches decoded clips before any random step), and a few prefetched
  float32 batches;
- `graph`: a fixed amount per layer (`GRAPH_BYTES_PER_LAYER`) for what
  training holds beyond tensors (traced graphs, gradient and optimizer ops,
  layer objects); measured on one configuration, not derived.

Stage one (`check_frontend`) needs no model: from the front-end settings
alone it refuses a filterbank or a batch of features that cannot fit
(`train --n-mels 100000`), so the model is never built for it. The limit is
`available_bytes()`: the memory the system can still give (MemAvailable),
the cgroup's limit (memory.max) where lower, plus what this process already
holds; `ESC50TF_MEMORY_LIMIT` (bytes, or with a K/M/G suffix) sets it
instead, `off` skips the checks. `benchmarks/bench_memory.py` compares the
estimate with the peak resident memory that `esc50tf train` reaches.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

from esc50tf.errors import Esc50Error

LIMIT_ENV = "ESC50TF_MEMORY_LIMIT"
GB = 1e9
OPTIMIZER_SLOTS = {"adam": 2, "adamw": 2, "sgd": 1}
PREFETCH_BATCHES = 4  # tf.data's AUTOTUNE prefetch holds a few batches
GRADIENT_COPIES = 2  # the backward pass: gradients of the largest activation, in and out
# What training holds per layer beyond its tensors: the traced train / predict graphs and
# their gradient and optimizer ops, the layer objects (the symbolic copy this estimate
# builds included). Measured, not derived: `bench_memory`'s hybrid (DenseNet121, 441
# layers) at mel 64 and batch 16 peaked 1.32 GB above the other parts' sum, 3.0 MB a layer.
GRAPH_BYTES_PER_LAYER = 3_000_000


@dataclasses.dataclass
class MemoryEstimate:
    """A configuration's estimated peak memory.

    Args:
        parts: dict name -> bytes (base, front end, activations, parameters, data).
        batch_size: int. The batch the estimate is for.
    """

    parts: dict
    batch_size: int

    @property
    def total(self):
        return int(sum(self.parts.values()))

    def describe(self):
        """"10.2 GB (activations 8.1 GB at batch 16, base 0.9 GB, ...)"."""
        items = sorted(self.parts.items(), key=lambda kv: -kv[1])
        return f"{self.total / GB:.1f} GB (" + ", ".join(
            f"{name} {value / GB:.2f} GB" + (f" at batch {self.batch_size}"
                                             if name == "activations" else "")
            for name, value in items) + ")"


def _rss_bytes():
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _parse_size(text):
    text = text.strip().upper().removesuffix("B")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(text[-1:], 1)
    number = text[:-1] if scale > 1 else text
    try:
        value = float(number) * scale
    except ValueError:
        value = -1
    if not (math.isfinite(value) and value > 0):
        raise Esc50Error(f"{LIMIT_ENV}={text!r}: allowed: a size in bytes (e.g. 8G, 512M) "
                         "or off")
    return int(value)


def _cgroup_room():
    """memory.max - memory.current of this process's cgroup (v2), or None."""
    try:
        rel = Path("/proc/self/cgroup").read_text().strip().split("::")[-1]
        folder = Path("/sys/fs/cgroup") / rel.lstrip("/")
        limit = (folder / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((folder / "memory.current").read_text())
    except (OSError, ValueError, IndexError):
        return None


def available_bytes():
    """The memory this process may grow to, in bytes; None when unknown or checks are off.

    `ESC50TF_MEMORY_LIMIT` when set; else what this process holds plus what
    the system can still give (MemAvailable, or the cgroup's room where less).
    """
    setting = os.environ.get(LIMIT_ENV, "").strip()
    if setting.lower() == "off":
        return None
    if setting:
        return _parse_size(setting)
    room = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                room = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    cgroup = _cgroup_room()
    if cgroup is not None:
        room = cgroup if room is None else min(room, cgroup)
    return None if room is None else _rss_bytes() + room


def accelerator_present():
    """Whether TensorFlow sees a GPU (training's activations then live in its memory)."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def host_limit(kind="default"):
    """`available_bytes()` for training on the host; None (no check) with an accelerator
    (a TPU strategy `kind`, or a GPU), whose own memory holds the activations."""
    if kind == "tpu" or accelerator_present():
        return None
    return available_bytes()


def frontend_bytes(features, num_samples, batch_size):
    """(bytes the front-end layer keeps, bytes one batch makes passing through it)."""
    from esc50tf.frontend.config import kinds_reading

    frames = features.num_frames(num_samples)
    fft_bins = features.n_fft // 2 + 1
    kept = 0
    if features.kind in kinds_reading("n_mels"):
        # The Mel filterbank, float32, and while it is made, five float64 arrays of its size
        # (esc50tf.frontend.filters.mel_filterbank).
        kept += (4 + 5 * 8) * features.n_mels * fft_bins
    if getattr(features, "stft_impl", "rfft") == "matmul":
        kept += 4 * 2 * features.n_fft * fft_bins  # the windowed DFT basis
    mel = features.n_mels if features.kind in kinds_reading("n_mels") else 0
    per_clip = frames * (4 * features.n_fft + 8 * fft_bins + 4 * fft_bins
                         + 4 * mel + 2 * 4 * features.n_bins)
    return kept, per_clip * batch_size


def _limit_message(what, need, limit, advice):
    return (f"{what} needs about {need / GB:.1f} GB, more than the {limit / GB:.1f} GB this "
            f"process can have; {advice} (the estimate and the limit: esc50tf.models.memory; "
            f"{LIMIT_ENV} sets the limit, {LIMIT_ENV}=off skips the check)")


def check_frontend(features, num_samples, batch_size, limit="auto"):
    """Stage one, before any model is built: the front end alone must fit.

    Raises Esc50Error naming the setting and the sizes when the front end's
    filterbank plus one batch through it (plus this process) exceed `limit`
    (bytes; "auto": `available_bytes()`; None: no check).
    """
    limit = available_bytes() if limit == "auto" else limit
    if limit is None:
        return
    kept, batch = frontend_bytes(features, num_samples, batch_size)
    need = _rss_bytes() + kept + batch
    if need > limit:
        frames = features.num_frames(num_samples)
        shape = (f"{features.kind} front end: n_fft {features.n_fft}, {features.n_bins} bins x "
                 f"{frames} frames per clip")
        if features.kind in ("mel", "mfcc"):
            shape += f", a {features.n_mels} x {features.n_fft // 2 + 1} filterbank"
        raise Esc50Error(_limit_message(
            f"the {shape}, at batch {batch_size},", need, limit,
            "lower --n-mels / --n-fft, raise --hop-length or lower --batch-size"))


def _layers(model):
    """Every layer of `model`, nested models' own layers included, inputs left out."""
    import keras

    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            # a nested model's layers are counted themselves; inputs are data
            if not isinstance(layer, (keras.Model, keras.layers.InputLayer))]


def _activation_bytes(model):
    """(sum of every layer output's bytes per example, the largest one)."""
    import keras
    import numpy as np

    total = largest = 0
    for layer in _layers(model):
        for node in layer._inbound_nodes:
            for t in keras.tree.flatten(node.output_tensors):
                shape = [d for d in t.shape[1:]]
                if any(d is None for d in shape):
                    continue
                size = int(np.prod(shape)) * np.dtype(t.dtype).itemsize
                total += size
                largest = max(largest, size)
    return total, largest


def _parameter_bytes(model, optimizer):
    import numpy as np

    slots = OPTIMIZER_SLOTS.get(optimizer, 2)
    trainable = sum(int(np.prod(w.shape)) * 4 for w in model.trainable_weights)
    frozen = sum(int(np.prod(w.shape)) * 4 for w in model.non_trainable_weights)
    return trainable * (2 + slots) + frozen


def symbolic_model(cfg, num_classes, num_samples):
    """`cfg`'s Keras model with shapes and no values (`keras.StatelessScope`).

    Pretrained weights are not read (shapes do not depend on them); a model
    that cannot be built without them is built as configured.
    """
    import keras

    from esc50tf.models.build import build_model

    with keras.StatelessScope():  # shapes only: no variable gets a value
        try:
            return build_model(dataclasses.replace(cfg.model, weights=None), cfg.features,
                               num_classes, num_samples, cfg.augment, seed=cfg.train.seed)
        except (ValueError, Esc50Error):
            return build_model(cfg.model, cfg.features, num_classes, num_samples, cfg.augment,
                               seed=cfg.train.seed)


def estimate_memory(cfg, num_samples, num_classes, num_clips, batch_size=None, model=None):
    """The MemoryEstimate of training `cfg` (a RunConfig of a Keras model).

    Args:
        num_samples: int. Clip length in samples.
        num_classes: int.
        num_clips: int. Training clips (cached and shuffled by the pipeline).
        batch_size: int or None. Defaults to `cfg.train.batch_size`.
        model: keras.Model or None. Built here symbolically when None (the
            current dtype policy applies).
    """
    batch = int(batch_size or cfg.train.batch_size)
    if model is None:
        model = symbolic_model(cfg, num_classes, num_samples)
    crop = getattr(cfg.augment, "crop_seconds", 0) or 0
    seen = min(num_samples, int(crop * cfg.features.sample_rate)) if crop else num_samples
    kept, through = frontend_bytes(cfg.features, seen, batch)
    per_example, largest = _activation_bytes(model)
    parts = {
        "base": _rss_bytes(),
        "front end": kept + through,
        "activations": batch * (per_example + GRADIENT_COPIES * largest),
        "parameters": _parameter_bytes(model, cfg.train.optimizer),
        "graph": GRAPH_BYTES_PER_LAYER * len(_layers(model)),
        "data": 2 * 2 * num_clips * num_samples + PREFETCH_BATCHES * 4 * batch * num_samples,
    }
    return MemoryEstimate(parts, batch)


def check_fits(cfg, num_samples, num_classes, num_clips, what="this configuration",
               limit="auto"):
    """Refuses (Esc50Error) a configuration whose estimated peak exceeds the limit.

    Stage one (`check_frontend`) runs first, so a front end that cannot fit
    is refused without building the model. Returns the MemoryEstimate, or
    None when there is no limit.
    """
    limit = available_bytes() if limit == "auto" else limit
    if limit is None:
        return None
    check_frontend(cfg.features, num_samples, cfg.train.batch_size, limit)
    estimate = estimate_memory(cfg, num_samples, num_classes, num_clips)
    if estimate.total > limit:
        raise Esc50Error(_limit_message(
            f"{what} ({estimate.describe()})", estimate.total, limit,
            "lower --batch-size, or choose a smaller front end or model"))
    return estimate


def largest_fitting_batch(cfg, num_samples, num_classes, num_clips, limit, smallest=1):
    """(batch size, MemoryEstimate) of the largest batch <= cfg's that fits `limit`, halving.

    Returns (None, estimate at the smallest batch tried) when even `smallest`
    does not fit, or the front end alone cannot (estimate None then).
    """
    batch = int(cfg.train.batch_size)
    try:
        check_frontend(cfg.features, num_samples, smallest, limit)
    except Esc50Error:
        return None, None
    while True:
        try:
            check_frontend(cfg.features, num_samples, batch, limit)
            fits_front = True
        except Esc50Error:
            fits_front = False
        if fits_front:
            break
        batch = max(smallest, batch // 2)
    model = symbolic_model(cfg, num_classes, num_samples)
    while True:
        estimate = estimate_memory(cfg, num_samples, num_classes, num_clips, batch, model=model)
        if estimate.total <= limit:
            return batch, estimate
        if batch <= smallest:
            return None, estimate
        batch = max(smallest, batch // 2)


def shrink_to_fit(cfg, num_samples, num_classes, num_clips, limit="auto"):
    """(cfg, note): `cfg` as it is when it fits, with its batch halved until it does, or None.

    For tune's trials: a trial whose estimate exceeds the limit runs at the
    largest batch (halving) that fits, and the note says so and why; one that
    fits at no batch gets (None, why it was skipped). The note is None when
    `cfg` fits as it is (or there is no limit).
    """
    limit = available_bytes() if limit == "auto" else limit
    if limit is None:
        return cfg, None
    batch, estimate = largest_fitting_batch(cfg, num_samples, num_classes, num_clips, limit)
    asked = cfg.train.batch_size
    if batch == asked:
        return cfg, None
    if batch is None:
        need = (f"needs about {estimate.total / GB:.1f} GB even at batch {estimate.batch_size}"
                if estimate else "its front end alone needs")
        return None, (f"skipped: {need}, more than the {limit / GB:.1f} GB available "
                      f"(batch {asked} asked)")
    return (dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=batch)),
            f"batch {asked} -> {batch}: at {asked} it needs more than the {limit / GB:.1f} GB "
            f"available; at {batch} about {estimate.total / GB:.1f} GB")
