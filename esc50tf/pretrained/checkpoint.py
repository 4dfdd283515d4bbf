"""Reads PyTorch checkpoints into numpy arrays without PyTorch, and safely.

A ``.pth`` file is a pickle, and unpickling runs whatever callables the file
names. :func:`read_torch_checkpoint` therefore unpickles with an allow-list:
the few torch functions that rebuild a tensor from a storage, the storage
types, ``collections.OrderedDict`` (a module's ``state_dict()`` is one, and
carries a ``_metadata`` attribute of per-module versions, which the pickle
restores with BUILD: see :class:`_LoadedOrderedDict`), ``_codecs.encode``
(protocol 2 writes bytes as ``encode(str, "latin1")``; nothing else is
accepted), and numpy
scalars/arrays of plain numeric dtypes (some training scripts store an epoch
counter or a sampler state as numpy). Nothing of torch is imported or
called: each allowed name maps to a small function here that builds the
numpy equivalent. Any other global
(``os.system``, ``builtins.eval``, ``subprocess.Popen``...) stops the load
with an :class:`Esc50Error` naming the file and the global, before anything
it names has been looked up, let alone called.

Both file formats PyTorch writes are read:

- the zip format (``torch.save`` default since 1.6): an archive holding
  ``<prefix>/data.pkl`` (the pickle), ``<prefix>/data/<key>`` (one raw
  storage per key) and ``<prefix>/byteorder``;
- the legacy format (``_use_new_zipfile_serialization=False``): five
  pickles in a row (magic number, protocol version, system info, the object,
  the list of storage keys), then each storage as a little-endian int64
  element count followed by its raw bytes, in the order of that list.

Example:

>>> state = read_torch_checkpoint("Cnn14_mAP=0.431.pth")
>>> state["conv_block1.conv1.weight"].shape
(64, 1, 3, 3)
"""

from __future__ import annotations

import collections
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

from esc50tf.errors import Esc50Error
from esc50tf.pretrained.unpickle import (DtypeSpec, NumpyArray, Rebuilder, Storage, StorageType,
                                         tensor_overrides, to_native, load_pickle)

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
# A state dict's pickle is a few hundred KiB even for large models.
_MAX_PICKLE_BYTES = 64 << 20
# Zip general-purpose flags: encrypted (bit 0), compressed patched data (5),
# strong encryption (6).
_ZIP_ENCRYPTED_OR_PATCHED = 0x01 | 0x20 | 0x40

__all__ = ["read_torch_checkpoint", "read_torch_file", "load_pickle"]


def _itemsize(dtype):
    return 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize


def _storage_array(raw, dtype, numel, path, key, byteorder="little"):
    if dtype == "bfloat16":
        # bfloat16 is the upper half of a float32.
        half = np.frombuffer(raw, dtype="<u2" if byteorder == "little" else ">u2")
        array = (half.astype(np.uint32) << 16).view(np.float32)
    else:
        np_dtype = np.dtype(dtype).newbyteorder("<" if byteorder == "little" else ">")
        array = to_native(np.frombuffer(raw, dtype=np_dtype))
    if array.size != numel:
        raise Esc50Error(
            f"{path}: storage {key} holds {array.size} elements, the pickle says {numel}"
        )
    return array


def _stored_member(path, zf, member, what):
    """A member's ZipInfo; PyTorch stores members uncompressed, and a compressed
    one could inflate to any size before its length is known. Encrypted or
    patched members (zip flag bits 0, 5, 6) are refused here: zipfile would
    raise RuntimeError or NotImplementedError on reading them."""
    info = zf.getinfo(member)
    if info.compress_type != zipfile.ZIP_STORED:
        raise Esc50Error(f"{path}: {what} is compressed in the archive; PyTorch stores "
                         "checkpoint members uncompressed")
    if info.flag_bits & _ZIP_ENCRYPTED_OR_PATCHED:
        raise Esc50Error(f"{path}: {what} is encrypted or patched in the archive (zip flags "
                         f"{info.flag_bits & _ZIP_ENCRYPTED_OR_PATCHED:#x}); PyTorch writes "
                         "plain members")
    return info


def _read_zip(path, zf):
    pickles = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise Esc50Error(f"{path}: a zip file, but not a PyTorch checkpoint (no data.pkl)")
    prefix = pickles[0][: -len("data.pkl")]
    names = set(zf.namelist())
    byteorder = "little"
    if prefix + "byteorder" in names:
        if _stored_member(path, zf, prefix + "byteorder", "byteorder").file_size > 16:
            raise Esc50Error(f"{path}: malformed byteorder record")
        byteorder = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise Esc50Error(f"{path}: unknown byte order {byteorder!r}")
    if _stored_member(path, zf, pickles[0], "data.pkl").file_size > _MAX_PICKLE_BYTES:
        raise Esc50Error(f"{path}: its data.pkl is over {_MAX_PICKLE_BYTES >> 20} MiB; "
                         "a state dict's pickle is far smaller")
    loaded = {}
    rebuild = Rebuilder(0)  # grows by each storage read

    def load_storage(fields):
        storage_type, key, _location, numel = fields[:4]
        if not isinstance(storage_type, StorageType):
            raise pickle.UnpicklingError("storage of an unknown type")
        key = str(key)
        if key not in loaded:
            member = f"{prefix}data/{key}"
            if member not in names:
                raise Esc50Error(f"{path}: storage {key} is missing from the archive")
            numel = int(numel)
            size = _stored_member(path, zf, member, f"storage {key}").file_size
            if size != numel * _itemsize(storage_type.dtype):
                raise Esc50Error(f"{path}: storage {key} holds {size} bytes, the pickle "
                                 f"says {numel} {storage_type.dtype} elements")
            loaded[key] = _storage_array(zf.read(member), storage_type.dtype,
                                         numel, path, key, byteorder)
            rebuild.limit += numel
        return Storage(loaded[key])

    return load_pickle(zf.read(pickles[0]), path, load_storage, tensor_overrides(rebuild))


def _read_legacy(path, f):
    magic = load_pickle(f, path)
    if magic != _LEGACY_MAGIC:
        raise Esc50Error(f"{path}: not a PyTorch checkpoint (wrong magic number)")
    protocol = load_pickle(f, path)
    if protocol != _LEGACY_PROTOCOL:
        raise Esc50Error(f"{path}: unsupported legacy PyTorch protocol {protocol!r}")
    sys_info = load_pickle(f, path)
    little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
    byteorder = "little" if little else "big"
    # Storages are read after the pickle that names them: hand out placeholders
    # now, fill them once the raw data has been read, then rebuild tensors.
    storages, pending = {}, []

    def load_storage(fields):
        storage_type, key, _location, numel = fields[:4]
        view = fields[4] if len(fields) > 4 else None
        if not isinstance(storage_type, StorageType):
            raise pickle.UnpicklingError("storage of an unknown type")
        if view is not None:
            raise Esc50Error(f"{path}: storage views (pre-1.0 PyTorch files) are not supported")
        key = str(key)
        storages.setdefault(key, [storage_type.dtype, int(numel), None])
        placeholder = Storage(None)
        pending.append((key, placeholder))
        return placeholder

    # Tensors cannot be built before their data is read: record the calls.
    deferred = []

    def deferred_rebuild(*args):
        box = _Deferred(args)
        deferred.append(box)
        return box

    obj = load_pickle(f, path, load_storage, tensor_overrides(deferred_rebuild))
    keys = load_pickle(f, path)
    if not isinstance(keys, list):
        raise Esc50Error(f"{path}: malformed legacy checkpoint (storage key list)")
    left = os.fstat(f.fileno()).st_size
    for key in keys:
        key = str(key)
        if key not in storages:
            raise Esc50Error(f"{path}: unknown storage {key} in the key list")
        dtype, numel, _ = storages[key]
        header = f.read(8)
        if len(header) != 8:
            raise Esc50Error(f"{path}: truncated (storage {key} missing)")
        (count,) = struct.unpack("<q", header)
        if count != numel:
            raise Esc50Error(f"{path}: storage {key} holds {count} elements, "
                             f"the pickle says {numel}")
        itemsize = _itemsize(dtype)
        if count < 0 or count * itemsize > left - f.tell():
            raise Esc50Error(f"{path}: storage {key} says it holds {count} elements, more "
                             "than the rest of the file")
        raw = f.read(count * itemsize)
        if len(raw) != count * itemsize:
            raise Esc50Error(f"{path}: truncated inside storage {key}")
        storages[key][2] = _storage_array(raw, dtype, count, path, key, byteorder)
    for key, placeholder in pending:
        placeholder.array = storages[key][2]
        if placeholder.array is None:
            raise Esc50Error(f"{path}: storage {key} has no data in the file")
    rebuild = Rebuilder(sum(a.size for _d, _n, a in storages.values() if a is not None))
    try:
        for box in deferred:
            box.value = rebuild(*box.args)
    except (pickle.UnpicklingError, ValueError, TypeError, OverflowError,
            MemoryError) as err:
        raise Esc50Error(f"{path}: not a readable PyTorch checkpoint ({err})") from None
    return _resolve(obj)


class _Deferred:
    """A tensor of a legacy file, rebuilt once the storages have been read."""

    def __init__(self, args):
        self.args = args
        self.value = None


def _resolve(obj, memo=None):
    """Replaces deferred tensors and numpy placeholders by their arrays.

    Each container is resolved once (a pickle's memo can share one list many
    times over, which a plain walk would visit exponentially often), and a
    container that holds itself stays a cycle.
    """
    memo = {} if memo is None else memo
    if isinstance(obj, _Deferred):
        return obj.value
    if isinstance(obj, NumpyArray):
        return obj.array
    if isinstance(obj, DtypeSpec):
        return obj.dtype
    if not isinstance(obj, (dict, list, tuple)):
        return obj
    if id(obj) in memo:
        return memo[id(obj)][1]
    if isinstance(obj, dict):
        ordered = isinstance(obj, collections.OrderedDict)
        resolved = collections.OrderedDict() if ordered else {}
        memo[id(obj)] = (obj, resolved)
        for k, v in obj.items():
            resolved[k] = _resolve(v, memo)
        if ordered and "_metadata" in obj.__dict__:
            resolved._metadata = _resolve(obj._metadata, memo)
    elif isinstance(obj, list):
        resolved = []
        memo[id(obj)] = (obj, resolved)
        resolved.extend(_resolve(v, memo) for v in obj)
    else:
        resolved = tuple(_resolve(v, memo) for v in obj)
        memo[id(obj)] = (obj, resolved)
    return resolved


def _unwrap(obj, path):
    """The state dict inside what was saved ({"model": sd, ...} or sd itself)."""
    if isinstance(obj, dict) and not any(isinstance(v, np.ndarray) for v in obj.values()):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise Esc50Error(f"{path}: holds no state dict (a mapping of names to tensors)")
    bad = [k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, np.ndarray))]
    if bad:
        raise Esc50Error(f"{path}: the state dict has a non-tensor entry {bad[0]!r}")
    return dict(obj)


def read_torch_file(path):
    """Reads everything a PyTorch checkpoint holds, as plain Python and numpy.

    What :func:`read_torch_checkpoint` unwraps: the whole saved object
    (``{"iteration": ..., "model": state_dict, "sampler": ...}`` for the
    PANNs training script's files), with numpy arrays for tensors and
    ``collections.OrderedDict`` (carrying its ``_metadata``) for state dicts.

    Args:
        path: str or Path. A ``.pth``/``.pt`` file in the zip or the legacy
            format.

    Returns:
        The unpickled object.

    Raises:
        Esc50Error: the file is missing, truncated, not a checkpoint, or its
            pickle names anything beyond tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise Esc50Error(f"{path}: no such checkpoint file")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                return _resolve(_read_zip(path, zf))
        with open(path, "rb") as f:
            if f.read(4) == b"PK\x03\x04":  # a zip's first member, but no zip directory
                raise Esc50Error(f"{path}: damaged zip checkpoint (no central directory: "
                                 "truncated?)")
            f.seek(0)
            return _read_legacy(path, f)
    except (zipfile.BadZipFile, NotImplementedError) as err:
        # NotImplementedError: zipfile refuses a central directory asking for a
        # newer zip version than it reads.
        raise Esc50Error(f"{path}: damaged zip checkpoint ({err})") from None
    except (RecursionError, MemoryError) as err:
        raise Esc50Error(f"{path}: not a readable PyTorch checkpoint: nested too deeply "
                         f"or too large ({type(err).__name__})") from None
    except OSError as err:
        raise Esc50Error(f"{path}: cannot read ({err})") from None


def read_torch_checkpoint(path):
    """Reads a PyTorch checkpoint's state dict as numpy arrays, without torch.

    Args:
        path: str or Path. A ``.pth``/``.pt`` file in the zip or the legacy
            format. A file holding ``{"model": state_dict, ...}`` (as the
            official PANNs files do), ``{"state_dict": ...}`` or the state
            dict itself is unwrapped.

    Returns:
        dict mapping each state-dict key to a numpy array (native byte order;
        bfloat16 becomes float32).

    Raises:
        Esc50Error: the file is missing, truncated, not a checkpoint, or its
            pickle names anything beyond tensors and plain containers.
    """
    return _unwrap(read_torch_file(path), Path(path))
