"""`esc50tf embed`: clip embeddings from a pretrained PANNs model, for linear probes.

The embedding is the model's `fc1` output (2048-d for CNN14; for the SED
variant, the max over time steps of the per-step fc1 outputs), computed once
per clip with the model in inference mode and no augmentation. Inputs are
audio files (any rate, length and channel count: mixed to mono, resampled to
the model's rate with soxr; clips shorter than a second are zero-padded to
one) or a TFRecord folder (every stored clip, resampled when the folder is at
another rate). The result is an `.npz` with `embeddings` `[clips, dim]`
float32 and `filenames`, plus `labels` and `folds` for a TFRecord folder.

`embedding_table` is the cached form the classic models train on
(`esc50tf train --model logreg --classic-features embeddings --weights
cnn14`): all clips of a folder embedded once into the run folder, so every
split and every resumed run reads the same rows, and fitting costs
milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

from esc50tf.errors import Esc50Error
from esc50tf.io import atomic_path

MIN_SECONDS = 1.0  # five 2x time poolings need at least 32 frames


def load_reference(weights):
    """(reference AudioSet model with `weights` loaded, architecture name, metadata).

    `weights` is a converted file or a cached checkpoint name of any
    pretrained architecture (PANNs CNN14s, EfficientAT mn); the model is
    built by its family's module at the size the file records.
    """
    import importlib

    from esc50tf.pretrained import architectures, convert, store

    path, meta = store.resolve_weights(weights)
    arch = meta.get("model")
    try:
        settings = architectures.get(arch)
    except Esc50Error:
        raise Esc50Error(f"{path}: weights of {arch!r}, not a pretrained architecture "
                         f"({', '.join(architectures.ARCHITECTURES)}, mn04 ... mn40)") from None
    held = meta.get("architecture") or {}
    family = architectures.family(arch)
    module = importlib.import_module(f"esc50tf.models.{family}")
    classes = int(held.get("classes_num", settings["classes_num"]))
    if family == "efficientat":
        model = module.build_reference(arch, width=held.get("width"), classes_num=classes)
    else:
        model = module.build_reference(arch, widths=held.get("widths"),
                                       embedding_size=held.get("embedding_size"),
                                       classes_num=classes)
    converted, _ = store.load_weights(path)
    convert.load_into(model, converted)
    return model, arch, meta


def load_embedder(weights):
    """(embedder model `[b, samples] -> [b, D]`, architecture name) for a weights name or file."""
    import keras

    model, arch, _meta = load_reference(weights)
    embedder = keras.Model(model.input, model.output["embedding"], name=f"{arch}_embedder")
    return embedder, arch


def _embed_batch(embedder, batch):
    return np.asarray(embedder(np.asarray(batch, np.float32), training=False), np.float32)


def embed_files(embedder, sample_rate, paths, progress=True, skip_bad=False):
    """Embeds audio files one by one. Returns (embeddings [n, D], filenames, errors).

    A file that cannot be decoded stops the work (Esc50Error naming it), or
    with `skip_bad` is reported in `errors` as (path, message) and left out.
    """
    from tqdm import tqdm

    from esc50tf.data.audio import fix_length, load_audio

    rows, names, errors = [], [], []
    minimum = int(MIN_SECONDS * sample_rate)
    for p in tqdm(paths, desc="embed", unit="file", disable=not progress, file=sys.stderr):
        try:
            wave, _ = load_audio(p, sample_rate=sample_rate)
        except Esc50Error as err:
            if not skip_bad:
                raise Esc50Error(f"{err}; nothing was written (--skip-bad leaves such "
                                 "files out)") from None
            errors.append((str(p), str(err)))
            continue
        if len(wave) < minimum:
            wave = fix_length(wave, minimum)
        rows.append(_embed_batch(embedder, wave[None])[0])
        names.append(str(p))
    dim = int(embedder.output_shape[-1])
    out = np.stack(rows) if rows else np.zeros((0, dim), np.float32)
    return out, names, errors


def embed_tfrecords(embedder, sample_rate, data, selection=None, batch_size=32, progress=True):
    """Embeds the clips of a TFRecord folder (all folds unless `selection`).

    Returns a dict: embeddings [n, D], filenames, labels, folds. Clips stored
    at another rate are resampled to `sample_rate` (soxr) first.
    """
    from esc50tf.data import splits
    from tqdm import tqdm

    from esc50tf.data.audio import resample
    from esc50tf.data.dataset import DatasetOptions, TFRecordFolder

    folder = TFRecordFolder(data)
    index = folder.index
    if selection is None:
        selection = splits.Selection(tuple(sorted(int(f) for f in index["fold"].unique())))
    rate = folder.sample_rate
    total = len(selection.rows(index))
    ds = folder.dataset(selection, DatasetOptions(batch_size=batch_size, with_metadata=True,
                                                  cache=False))
    rows, names, labels, folds = [], [], [], []
    with tqdm(total=total, desc="embed", unit="clip", disable=not progress,
              file=sys.stderr) as pbar:
        for x, y, meta in ds:
            x = x.numpy()
            if rate != sample_rate:
                x = np.stack([resample(w, rate, sample_rate) for w in x]).astype(np.float32)
            rows.append(_embed_batch(embedder, x))
            labels.append(y.numpy())
            folds.append(meta["fold"].numpy())
            names.extend(n.decode() for n in meta["filename"].numpy())
            pbar.update(len(x))
    return {"embeddings": np.concatenate(rows), "filenames": np.array(names),
            "labels": np.concatenate(labels).astype(np.int64),
            "folds": np.concatenate(folds).astype(np.int64)}


def write_npz(path, arrays, overwrite=False):
    """Writes `arrays` to `path` (.npz) atomically; refuses to replace a file without `overwrite`."""
    path = Path(path)
    if path.suffix != ".npz":
        raise Esc50Error(f"{path}: the output must be an .npz file")
    if path.exists() and not overwrite:
        raise Esc50Error(f"{path} exists; choose another --out or pass --overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def embed(weights, inputs, out, overwrite=False, batch_size=32, progress=True,
          skip_bad=False):
    """`esc50tf embed`: embeds audio files / folders or one TFRecord folder into `out`.

    Args:
        weights: str. A cache name (`esc50tf pretrained list`) or a converted file.
        inputs: list of str. Audio files and folders of audio files, or one
            TFRecord folder (holding manifest.json).
        out: str. The `.npz` to write.
        skip_bad: bool. Leave out audio files that do not decode (else the
            first one stops the work before anything is written).

    Returns:
        (number of clips written, list of (path, error) for files left out).
    """
    from esc50tf.pretrained import architectures

    out = Path(out)
    if out.exists() and not overwrite:  # before minutes of work
        raise Esc50Error(f"{out} exists; choose another --out or pass --overwrite")
    embedder, arch = load_embedder(weights)
    rate = architectures.get(arch)["sample_rate"]
    meta = {"weights": str(weights), "model": arch, "sample_rate": rate}
    if len(inputs) == 1 and Path(inputs[0], "manifest.json").is_file():
        arrays = embed_tfrecords(embedder, rate, inputs[0], batch_size=batch_size,
                                 progress=progress)
        errors = []
    else:
        files = _audio_files(inputs)
        emb, names, errors = embed_files(embedder, rate, files, progress=progress,
                                         skip_bad=skip_bad)
        if not names:
            raise Esc50Error("no input file could be decoded; nothing was written: "
                             + "; ".join(msg for _, msg in errors[:3]))
        arrays = {"embeddings": emb, "filenames": np.array(names)}
    arrays["metadata"] = np.array(json.dumps(meta))
    write_npz(out, arrays, overwrite=overwrite)
    return len(arrays["filenames"]), errors


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3")


def _audio_files(inputs):
    files = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise Esc50Error(f"{p}: no audio files ({', '.join(AUDIO_SUFFIXES)}) and no "
                                 "manifest.json (not a TFRecord folder)")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise Esc50Error(f"{p}: no such file or folder")
    return files


def embedding_table(data, model_config, cache_path, progress=False):
    """Every clip of TFRecord folder `data` embedded once, cached at `cache_path`.

    The cache records the weights (checkpoint checksum, conversion time) and
    the folder (path, manifest) it was made from and is reused only when all
    match (a resumed run, the next split). Returns the dict
    of `embed_tfrecords`.
    """
    from esc50tf.pretrained import architectures

    cache_path = Path(cache_path)
    key = _table_key(data, model_config.weights)
    if cache_path.is_file():
        try:
            with np.load(cache_path, allow_pickle=False) as f:
                if json.loads(str(f["key"])) == key:
                    return {k: f[k] for k in ("embeddings", "filenames", "labels", "folds")}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # unreadable or from an older version: made again
    embedder, arch = load_embedder(model_config.weights)
    table = embed_tfrecords(embedder, architectures.get(arch)["sample_rate"], data,
                            progress=progress)
    write_npz(cache_path, {**table, "key": np.array(json.dumps(key))}, overwrite=True)
    return table


def _table_key(data, weights):
    """What an embedding table depends on: the weights (by the checkpoint's
    checksum and conversion time, so a re-converted file under the same name
    is new) and the TFRecord folder (by its path and manifest)."""
    from esc50tf.data import tfrecords as tfr
    from esc50tf.pretrained import store

    _path, meta = store.resolve_weights(weights)
    manifest = json.dumps(tfr.read_manifest(data), sort_keys=True, default=str)
    return {"weights": str(weights),
            "weights_sha256": (meta.get("source") or {}).get("sha256"),
            "converted_at": meta.get("converted_at"),
            "data": str(Path(data).resolve()) if "://" not in str(data) else str(data),
            "manifest_sha256": hashlib.sha256(manifest.encode()).hexdigest()}


def select(table, selection, index):
    """The rows of `table` in `selection`: (X [n, D], y [n], filenames)."""
    wanted = set(selection.rows(index)["filename"])
    keep = np.array([n in wanted for n in table["filenames"]], dtype=bool)
    return (table["embeddings"][keep], table["labels"][keep],
            [str(n) for n in table["filenames"][keep]])
