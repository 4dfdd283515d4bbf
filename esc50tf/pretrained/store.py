"""Converted weights files, their provenance, the cache, and `download`.

A converted weights file is an `.npz` (read with `allow_pickle=False`: no
code can ride in it) holding one array per Keras weight, keyed
`"<layer>:<index>"`, plus a `__metadata__` entry: a JSON string saying which
model the weights belong to (architecture name and its settings, widths,
embedding size, classes), where they came from (source file, its size, md5
and sha256, URL) and when and by which esc50tf they were converted. The same
JSON is written next to it as a sidecar (`<name>.json`) for people to read.
So a weights file alone is enough to rebuild its model:

>>> path, meta = resolve_weights("cnn14")
>>> meta["model"], meta["architecture"]["sample_rate"]
('cnn14', 32000)

The cache is `$XDG_CACHE_HOME/esc50tf/pretrained` (`~/.cache/esc50tf/...`
without XDG_CACHE_HOME); every function takes a `cache_dir` to use another.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from esc50tf.errors import Esc50Error
from esc50tf.io import atomic_paths, write_npz
from esc50tf.pretrained import architectures
from esc50tf.pretrained import catalog as catalog_lib

__all__ = [
    "FORMAT",
    "convert_checkpoint",
    "default_cache_dir",
    "download",
    "file_digests",
    "load_weights",
    "resolve_weights",
    "save_weights",
    "weights_path",
]

FORMAT = "esc50tf-pretrained-weights"
FORMAT_VERSION = 1
_META_KEY = "__metadata__"
WEIGHTS_SUFFIX = ".weights.npz"


def default_cache_dir():
    """`$XDG_CACHE_HOME/esc50tf`, or `~/.cache/esc50tf`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "esc50tf"


def _pretrained_dir(cache_dir=None):
    return Path(cache_dir) if cache_dir else default_cache_dir() / "pretrained"


def weights_path(name, cache_dir=None):
    """Where the converted weights of checkpoint `name` live in the cache."""
    return _pretrained_dir(cache_dir) / f"{name}{WEIGHTS_SUFFIX}"


def sidecar_path(path):
    """`x.weights.npz` -> `x.weights.json` (any other name: `<name>.json`)."""
    path = Path(path)
    if path.suffix == ".npz":
        return path.with_suffix(".json")
    return path.with_name(path.name + ".json")


def file_digests(path, chunk=1 << 20):
    """`{"size", "md5", "sha256"}` of a file, read once."""
    md5, sha256, size = hashlib.md5(), hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            md5.update(block)
            sha256.update(block)
            size += len(block)
    return {"size": size, "md5": md5.hexdigest(), "sha256": sha256.hexdigest()}


def save_weights(converted, path, metadata, overwrite=False):
    """Writes converted weights and their metadata (npz + JSON sidecar), atomically.

    Args:
        converted: `{layer name: [arrays]}`.
        path: str or Path. The `.npz` to write.
        metadata: dict. Provenance and model description (JSON-serialisable).
        overwrite: bool. Replace an existing file.

    Returns:
        The metadata as written (with its format fields).

    Raises:
        Esc50Error: `path` exists and `overwrite` is False.
    """
    path = Path(path)
    side = sidecar_path(path)
    for p in (path, side):
        if p.exists() and not overwrite:
            raise Esc50Error(f"{p}: already exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata}
    text = json.dumps(metadata, indent=2, sort_keys=True)
    arrays = {f"{layer}:{i}": np.asarray(a) for layer, values in converted.items()
              for i, a in enumerate(values)}
    arrays[_META_KEY] = np.array(text)

    with atomic_paths(path, side) as (tmp, side_tmp):  # both files or neither
        write_npz(tmp, compressed=False, **arrays)
        side_tmp.write_text(text + "\n")
    return metadata


def load_weights(path):
    """Reads a converted weights file.

    Args:
        path: str or Path. A file written by `save_weights`.

    Returns:
        (`ConvertedWeights`, metadata dict).

    Raises:
        Esc50Error: the file is missing, not an esc50tf weights file, or damaged.
    """
    from esc50tf.pretrained.convert import ConvertedWeights

    grouped, metadata = _read_npz(path, arrays=True)
    converted = ConvertedWeights(
        {layer: [arrays[i] for i in sorted(arrays)] for layer, arrays in grouped.items()})
    return converted, metadata


def _read_npz(path, arrays):
    """({layer: {index: array}} or {} without `arrays`, metadata) of a weights file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if _META_KEY not in data.files:
                raise Esc50Error(f"{path}: not an esc50tf weights file (no metadata)")
            metadata = json.loads(str(data[_META_KEY]))
            grouped = {}
            for key in data.files if arrays else ():
                if key == _META_KEY:
                    continue
                layer, _, index = key.rpartition(":")
                grouped.setdefault(layer, {})[int(index)] = data[key]
    except Esc50Error:
        raise
    except FileNotFoundError:
        raise Esc50Error(f"{path}: no such weights file") from None
    except (OSError, ValueError, EOFError) as err:
        raise Esc50Error(f"{path}: not a readable esc50tf weights file ({err})") from None
    if metadata.get("format") != FORMAT:
        raise Esc50Error(f"{path}: not an esc50tf weights file (format {metadata.get('format')!r})")
    return grouped, metadata


def _read_metadata(path):
    """The metadata of a weights file, from the file itself: the JSON sidecar is a
    copy for people to read and may not match (edited, or left from another file)."""
    return _read_npz(path, arrays=False)[1]


def resolve_weights(name_or_path, cache_dir=None):
    """Finds converted weights by cache name or path.

    Args:
        name_or_path: str or Path. A converted weights file, or the name of a
            checkpoint downloaded into the cache (`esc50tf pretrained list`).
        cache_dir: str, Path or None. The cache; None: the default.

    Returns:
        (Path of the weights file, metadata dict: "model" is the
        architecture, "architecture" its settings incl. "widths",
        "embedding_size", "classes_num").

    Raises:
        Esc50Error: neither a file nor a cached name (saying how to get it).
    """
    path = Path(name_or_path)
    if path.is_file():
        return path, _read_metadata(path)
    cached = weights_path(str(name_or_path), cache_dir)
    if cached.is_file():
        return cached, _read_metadata(cached)
    known = catalog_lib.checkpoints()
    if str(name_or_path) in known:
        raise Esc50Error(
            f"{name_or_path!r} is not in the cache ({cached.parent}); get it with "
            f"`esc50tf pretrained download {name_or_path}` (or, offline, "
            f"`esc50tf pretrained convert {known[str(name_or_path)].architecture} FILE.pth "
            "--out FILE` and pass the file)")
    raise Esc50Error(f"{name_or_path}: neither a weights file nor a known checkpoint "
                     f"(known: {', '.join(known)})")


def _infer_sizes(converted):
    """(widths, embedding_size, classes_num) read off the converted arrays."""
    widths, i = [], 1
    while f"conv_block{i}_conv1" in converted:
        widths.append(int(converted[f"conv_block{i}_conv1"][0].shape[-1]))
        i += 1
    embedding = converted.get("fc1", [np.zeros((0, 0))])[0].shape[-1]
    classes = converted.get("fc_audioset", [np.zeros((0, 0))])[0].shape[-1]
    return tuple(widths), int(embedding), int(classes)


def _convert(architecture, state, widths):
    """(ConvertedWeights, the sizes to build the model with) of a state dict of `architecture`."""
    if architectures.family(architecture) == "efficientat":
        from esc50tf.pretrained import efficientat
        from esc50tf.pretrained.convert import ConvertedWeights

        arrays, sources, sizes = efficientat.convert_checkpoint_state(state, architecture)
        return ConvertedWeights(arrays, sources=sources), sizes
    from esc50tf.pretrained.convert import convert_state_dict

    converted = convert_state_dict(architecture, state, widths=widths)
    found_widths, embedding, classes = _infer_sizes(converted)
    return converted, dict(widths=list(found_widths), embedding_size=embedding,
                           classes_num=classes)


def convert_checkpoint(architecture, checkpoint, out, *, build, name=None, widths=None,
                       url=None, overwrite=False, digests=None, log=None):
    """Reads a PyTorch checkpoint, converts it, checks it loads, and saves it.

    Args:
        architecture: str. A PANNs architecture (`cnn14`, `cnn14_16k`, `cnn14_sed`).
        checkpoint: str or Path. The `.pth` file.
        out: str or Path. The weights file to write (`.npz`).
        build: callable `(architecture, widths=, embedding_size=, classes_num=)`
            returning the Keras model the weights are for
            (`esc50tf.models.panns.build_reference`). The converted weights
            are loaded into it before anything is written.
        name: str or None. Catalog name recorded (None: the architecture).
        widths: tuple or None. Expected conv widths, checked (None: the
            checkpoint's, recorded in the metadata).
        url: str or None. Where the checkpoint came from, recorded.
        overwrite: bool. Replace an existing `out`.
        digests: dict or None. Precomputed `file_digests(checkpoint)`.
        log: callable(str) or None. Status lines.

    Returns:
        (Path of the weights file, metadata dict).

    Raises:
        Esc50Error: unreadable or hostile checkpoint, another architecture's
            front end, missing/unexpected keys or shapes that do not fit.
    """
    from esc50tf import __version__
    from esc50tf.pretrained.checkpoint import read_torch_checkpoint
    from esc50tf.pretrained.convert import load_into

    log = log or (lambda msg: print(msg, file=sys.stderr))
    checkpoint, out = Path(checkpoint), Path(out)
    settings = dict(architectures.get(architecture))
    if (out.exists() or sidecar_path(out).exists()) and not overwrite:
        raise Esc50Error(f"{out}: already exists; pass --overwrite to replace it")
    state = read_torch_checkpoint(checkpoint)
    converted, sizes = _convert(architecture, state, widths)
    del state  # the converted copies are all that is needed from here on
    # Loading into the model itself proves that every key and shape fits.
    model = build(architecture, **sizes)
    load_into(model, converted)
    del model
    settings.update(sizes)
    digests = digests or file_digests(checkpoint)
    metadata = {
        "model": architecture,
        "name": name or architecture,
        "architecture": settings,
        "source": {"file": checkpoint.name, "url": url, **digests},
        "converted_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "esc50tf_version": __version__,
    }
    metadata = save_weights(converted, out, metadata, overwrite=overwrite)
    log(f"{out}: {architecture} weights ({len(converted)} layers) from {checkpoint.name} "
        f"(sha256 {digests['sha256'][:12]}...)")
    return out, metadata


def _verify(entry, digests, where):
    checks = [("size", entry.size), ("md5", entry.md5), ("sha256", entry.sha256)]
    for field, expected in checks:
        if expected is not None and digests[field] != expected:
            raise Esc50Error(
                f"{where}: {field} is {digests[field]}, the catalog says {expected} for "
                f"{entry.file_name}: an incomplete, damaged or different file; it was deleted "
                "(a file you trust can be converted with `esc50tf pretrained convert`)")


def _fetch_resumable(url, part, progress=True, chunk=1 << 20):
    """Appends `url` to `part`, resuming from its size when the server honours Range."""
    from esc50tf.progress import bar as progress_bar

    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url)
    if have and not url.startswith("file:"):
        request.add_header("Range", f"bytes={have}-")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status = getattr(response, "status", None) or response.getcode()
            if status != 206:
                have = 0  # the server sends the whole file: start over
            length = response.headers.get("Content-Length")
            total = have + int(length) if length else None
            with open(part, "ab" if have else "wb") as out, progress_bar(
                    total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                    desc=part.name.removesuffix(".part"), disable=not progress,
                    dynamic_ncols=True) as bar:
                while block := response.read(chunk):
                    out.write(block)
                    bar.update(len(block))
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            return  # the part already holds the whole file
        raise Esc50Error(f"cannot download {url}: {err}") from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        kept = part.stat().st_size if part.exists() else 0
        resume = (f" ({kept} bytes that arrived are kept in {part}; the next download "
                  "resumes from them)" if kept else "")
        raise Esc50Error(f"cannot download {url}: {err}{resume}") from None


def _pins_path(cache_dir=None):
    return _pretrained_dir(cache_dir) / "pinned_sha256.json"


def _read_pins(path):
    from esc50tf.io import read_json

    return read_json(path) if Path(path).is_file() else {}


def _write_pin(path, name, sha256):
    from esc50tf.io import write_json

    pins = _read_pins(path)
    pins[name] = sha256
    write_json(path, pins)


def pinned_sha256(name, cache_dir=None):
    """The sha256 recorded at the first verified download of `name` (no published hash), or None."""
    return _read_pins(_pins_path(cache_dir)).get(name)


def download(name, *, build, url=None, cache_dir=None, overwrite=False, keep_checkpoint=False,
             progress=True, log=None):
    """Downloads a catalog checkpoint, verifies it, converts it into the cache.

    The file is streamed to `<cache>/downloads/<file>.part` (resumed from
    what is there when the server supports HTTP Range), verified against the
    catalog's size / md5 / sha256, renamed, converted, and the weights saved
    as `<cache>/<name>.weights.npz` (+ `.json`). Interrupted downloads keep
    their `.part` for the next try; a checksum mismatch deletes it.

    Args:
        name: str. A catalog name (`esc50tf pretrained list`).
        build: callable. Builds the model the weights must load into, as
            for `convert_checkpoint`.
        url: str or None. Another source for the same file (a mirror, a
            `file://` path); None: the catalog's URL.
        cache_dir: str, Path or None. The cache; None: the default.
        overwrite: bool. Convert again even if the weights are cached.
        keep_checkpoint: bool. Keep the downloaded `.pth` in `<cache>/downloads`.
        progress: bool. Progress bar on stderr.
        log: callable(str) or None. Status lines.

    Returns:
        (Path of the weights file, metadata dict).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    entry = catalog_lib.get(name)
    out = weights_path(name, cache_dir)
    if out.is_file() and not overwrite:
        log(f"{out}: {name} is already in the cache; not downloading again")
        return out, _read_metadata(out)
    downloads = out.parent / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    final = downloads / entry.file_name
    part = downloads / f"{entry.file_name}.part"
    source = url or entry.url
    if final.is_file():
        log(f"{final}: already downloaded; verifying")
    else:
        log(f"downloading {source}")
        try:
            _fetch_resumable(source, part, progress=progress)
        except Esc50Error as err:
            raise Esc50Error(f"{err}. Offline, fetch {entry.file_name} elsewhere and pass "
                             f"--url file:///path/to/{entry.file_name}, or convert it with "
                             f"`esc50tf pretrained convert {entry.architecture} "
                             f"{entry.file_name} --out FILE`") from None
        os.replace(part, final)
    digests = file_digests(final)
    pins = _pins_path(cache_dir)
    pinned = _read_pins(pins).get(name) if entry.sha256 is None else None
    try:
        _verify(entry, digests, source)
        if pinned and digests["sha256"] != pinned:
            raise Esc50Error(
                f"{source}: sha256 is {digests['sha256']}, but the first verified download of "
                f"{name} had {pinned} (recorded in {pins}; no source publishes a hash for this "
                "file): a different or damaged file; it was deleted")
    except Esc50Error:
        final.unlink(missing_ok=True)
        raise
    widths = entry.widths or architectures.get(entry.architecture).get("widths")
    result = convert_checkpoint(entry.architecture, final, out, build=build, name=name,
                                widths=widths, url=source, overwrite=True, digests=digests,
                                log=log)
    if entry.sha256 is None and not pinned:  # it converted: the file is what it claims to be
        _write_pin(pins, name, digests["sha256"])
        log(f"{name}: no published hash; recorded sha256 {digests['sha256']} in {pins}, "
            "later downloads must match it")
    if not keep_checkpoint:
        final.unlink(missing_ok=True)
    return result
