"""Reading a `.keras` file from elsewhere: its declared sizes checked before Keras allocates.

`keras.models.load_model` builds the model from the file's `config.json`
before it reads any weight, so a small file whose config declares huge layers
(a Dense of 10^9 units, a Mel filter bank of 10^5 bands) makes it allocate
gigabytes before failing. `check_keras_file` reads only the zip's directory and
`config.json`, and refuses a file whose members would unpack past a sane bound,
or whose layers declare more weight bytes than the file holds (plus room for
constants computed at build time, such as filter banks).

Example:
>>> check_keras_file("runs/a/fold1/model.keras")   # Esc50Error if refused
>>> model = keras.models.load_model("runs/a/fold1/model.keras")
"""

from __future__ import annotations

import json
import math
import zipfile

from esc50tf.errors import Esc50Error

__all__ = ["check_keras_file", "declared_weight_bytes"]

# What any member list may unpack to, and what a config.json may hold.
MAX_UNPACKED_BYTES = 8 << 30
MAX_CONFIG_BYTES = 64 << 20
# Weights a layer may compute at build time beyond those stored (filter banks, windows).
COMPUTED_ALLOWANCE_BYTES = 256 << 20
# Layer arguments that multiply into the size of a layer's weights or constants.
_SIZE_KEYS = ("units", "filters", "kernel_size", "num_mel_bins", "n_mels", "fft_length",
              "n_fft", "output_dim", "input_dim", "num_heads", "key_dim", "n_mfcc")


def _layer_bytes(config):
    """A lower bound on one layer's float32 weights: the product of its size arguments
    (each weight is at least that large; the unknown input width only adds)."""
    product, found = 1, False
    for key in _SIZE_KEYS:
        value = config.get(key)
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                product *= v
                found = True
    return 4 * product if found else 0


def declared_weight_bytes(config):
    """Sum of `_layer_bytes` over every layer a Keras config (nested models included) declares."""
    total = 0
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            inner = node.get("config")
            if "class_name" in node and isinstance(inner, dict):
                total += _layer_bytes(inner)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return total


def _gb(n):
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def check_keras_file(path):
    """Refuses a `.keras` file whose declared sizes exceed what it holds or a sane bound.

    Reads the zip directory and `config.json` only.

    Raises:
        Esc50Error: naming the file, the declared size and the limit.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            unpacked = sum(i.file_size for i in infos)
            if unpacked > MAX_UNPACKED_BYTES:
                raise Esc50Error(f"{path}: its members declare {_gb(unpacked)} unpacked, more "
                                 f"than the {_gb(MAX_UNPACKED_BYTES)} any model here needs; "
                                 "refused before loading")
            try:
                info = archive.getinfo("config.json")
            except KeyError:
                raise Esc50Error(f"{path}: no config.json; not a Keras model file") from None
            if info.file_size > MAX_CONFIG_BYTES:
                raise Esc50Error(f"{path}: config.json declares {_gb(info.file_size)}; "
                                 "refused before loading")
            config = json.loads(archive.read(info))
            stored = sum(i.file_size for i in infos if i.filename.endswith(".h5")
                         or i.filename.endswith(".npz"))
    except (zipfile.BadZipFile, OSError, ValueError, RecursionError) as err:
        raise Esc50Error(f"{path}: not a readable .keras file ({err})") from None
    declared = declared_weight_bytes(config)
    limit = stored + COMPUTED_ALLOWANCE_BYTES
    if declared > limit or not math.isfinite(declared):
        raise Esc50Error(
            f"{path}: its config declares layers of at least {_gb(declared)} of weights, but "
            f"the file stores {_gb(stored)} (limit {_gb(limit)} with computed constants); "
            "refused before loading (an edited or damaged file)")

