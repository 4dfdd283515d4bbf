"""An exported model (`esc50tf export`'s folder, a `.tflite` file or a SavedModel): run it,
read its model card, and measure it against the Keras model it came from.

    runner = runner_for("export/int8")          # [batch, num_samples] -> probabilities
    card = read_card("export/int8")             # classes, sample rate, input length
    parity = measure_parity(keras_fn, runner, waves, labels)
    edges = edge_parity(keras_fn, runner, edge_clips(runner.num_samples))
    check_parity(parity, edges, min_agreement=0.9)   # Esc50Error: non-finite or too little

The edge clips (silence, near-silence, clipping, zero padding, a DC offset,
a tone) are checked on every export and calibrate int8 exports too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from esc50tf.errors import Esc50Error

CARD = "model_card.json"


def interpreter_of(**kwargs):
    """A LiteRT interpreter (its start-up lines quieted); `kwargs` as `Interpreter`'s."""
    from ai_edge_litert.interpreter import Interpreter

    from esc50tf.startup import quiet_native

    with quiet_native():
        return Interpreter(**kwargs)


# --- running an exported model -----------------------------------------------------------


class TFLiteRunner:
    """A `.tflite` file on the LiteRT interpreter alone: `[batch, samples]` -> probabilities.

    Args:
        path: str or path. The `.tflite` file.
        num_threads: int or None. Interpreter threads; None lets LiteRT choose.
    """

    def __init__(self, path, num_threads=None):
        self.path = str(path)
        try:
            self.interpreter = interpreter_of(model_path=self.path, num_threads=num_threads)
        except (ValueError, RuntimeError) as err:
            raise Esc50Error(f"{path}: not a TFLite model ({err})") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.num_samples = int(self.input["shape_signature"][-1])
        self._shape = None

    def __call__(self, batch):
        batch = np.asarray(batch, np.float32)
        from esc50tf.startup import quiet_native

        if self._shape != batch.shape:
            with quiet_native():  # LiteRT announces its XNNPACK delegate here
                self.interpreter.resize_tensor_input(self.input["index"], batch.shape)
                self.interpreter.allocate_tensors()
                self.interpreter.set_tensor(self.input["index"], batch)
                self.interpreter.invoke()
            self._shape = batch.shape
        else:
            self.interpreter.set_tensor(self.input["index"], batch)
            self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self.output["index"]), np.float64)


class SavedModelRunner:
    """A SavedModel on TensorFlow alone (its `serve` endpoint)."""

    def __init__(self, path):
        import tensorflow as tf

        try:
            self.module = tf.saved_model.load(str(path))
            self.fn = self.module.serve
        except (OSError, ValueError, AttributeError) as err:
            raise Esc50Error(f"{path}: not a SavedModel with a serve endpoint ({err})") from None
        spec = self.fn.input_signature[0] if self.fn.input_signature else None
        self.num_samples = int(spec.shape[-1]) if spec is not None else None

    def __call__(self, batch):
        return np.asarray(self.fn(np.asarray(batch, np.float32)), np.float64)


def runner_for(path, num_threads=None):
    """A runner for an export folder, a `.tflite` file or a SavedModel folder."""
    path = Path(path)
    if path.is_dir() and (path / CARD).is_file():
        card = json.loads((path / CARD).read_text())
        path = path / card["file"]
    if path.is_file() and path.suffix == ".tflite":
        return TFLiteRunner(path, num_threads)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return SavedModelRunner(path)
    raise Esc50Error(f"{path}: not an export folder, a .tflite file or a SavedModel folder")


def read_card(path):
    """The model card of an export folder or of the folder holding a model file."""
    path = Path(path)
    for folder in (path, path.parent, path.parent.parent):
        if (folder / CARD).is_file():
            return json.loads((folder / CARD).read_text())
    return None


# --- parity ------------------------------------------------------------------------------


def edge_clips(num_samples, clip=None, seed=0):
    """Inputs an exported model must get right beyond the test clips.

    Args:
        num_samples: int. Clip length.
        clip: array `[num_samples]` or None. A real clip to pad and clip (a test
            clip); None uses noise.
        seed: int. Seeds the near-silent noise.

    Returns:
        dict name -> waveform `[num_samples]` float32: digital silence, a
        near-silent hiss (1e-5 RMS), the clip driven 20x into clipping at
        +-1, the clip zero-padded after its first half and first eighth, a DC
        offset and a pure tone (a sixteenth of the sample rate).
    """
    rng = np.random.default_rng(seed)
    if clip is None:
        clip = 0.1 * rng.standard_normal(num_samples)
    clip = np.asarray(clip, np.float64)
    half, eighth = num_samples // 2, num_samples // 8
    return {
        "silent": np.zeros(num_samples, np.float32),
        "near_silent": (1e-5 * rng.standard_normal(num_samples)).astype(np.float32),
        "clipped": np.clip(20.0 * clip, -1.0, 1.0).astype(np.float32),
        "zero_padded_half": np.concatenate([clip[:half], np.zeros(num_samples - half)]
                                           ).astype(np.float32),
        "zero_padded_7_8": np.concatenate([clip[:eighth], np.zeros(num_samples - eighth)]
                                          ).astype(np.float32),
        # Nearly all energy in one or two bins: the rest is the window's side lobes.
        "dc_offset": np.full(num_samples, 0.5, np.float32),
        "tone": (0.5 * np.sin(2 * np.pi * np.arange(num_samples) / 16.0)).astype(np.float32),
    }


def edge_parity(reference, candidate, clips):
    """Per edge clip: the largest probability difference and whether top-1 agrees."""
    out = {}
    for name, wave in clips.items():
        ref = np.asarray(reference(wave[None]), np.float64)[0]
        got = np.asarray(candidate(wave[None]), np.float64)[0]
        finite = bool(np.isfinite(got).all())
        out[name] = {"max_abs_prob_diff": float(np.abs(ref - got).max()) if finite else None,
                     "top1_agrees": bool(finite and ref.argmax() == got.argmax()),
                     "finite": finite}
    return out


def check_parity(parity, edges, min_agreement):
    """Raises Esc50Error when the export gives non-finite outputs or agrees too little."""
    broken = [n for n, e in edges.items() if not e["finite"]]
    if parity is not None and not np.isfinite(parity["max_abs_prob_diff"]):
        broken.append(f"{parity['non_finite_clips']} of {parity['clips']} test clips")
    if broken:
        raise Esc50Error("the exported model gives non-finite probabilities on "
                         f"{', '.join(broken)}; nothing is written")
    if parity is not None and parity["top1_agreement"] < min_agreement:
        raise Esc50Error(
            f"the exported model agrees with the Keras model on the top class of "
            f"{100 * parity['top1_agreement']:.1f}% of {parity['clips']} test clips, below "
            f"--min-agreement {min_agreement:g}; nothing is written (lower --min-agreement "
            "to keep it anyway)")


def measure_parity(reference, candidate, waves, labels, batch_size=16):
    """Compares two `[batch, samples] -> probabilities` callables on the same clips.

    Returns:
        dict: clips, max_abs_prob_diff, top1_agreement, accuracy_reference,
        accuracy_export (labels given).
    """
    ref, got = [], []
    for start in range(0, len(waves), batch_size):
        batch = np.stack(waves[start:start + batch_size])
        ref.append(reference(batch))
        got.append(np.concatenate([candidate(b[None]) for b in batch]))  # one clip per call
    ref, got = np.concatenate(ref), np.concatenate(got)
    labels = np.asarray(labels)
    return {
        "clips": int(len(ref)),
        "non_finite_clips": int((~np.isfinite(got).all(axis=1)).sum()),
        "max_abs_prob_diff": float(np.abs(ref - got).max()),
        "top1_agreement": float((ref.argmax(1) == got.argmax(1)).mean()),
        "accuracy_reference": float((ref.argmax(1) == labels).mean()),
        "accuracy_export": float((got.argmax(1) == labels).mean()),
    }
