"""The allow-list unpickler of PyTorch checkpoints (`esc50tf.pretrained.checkpoint`).

Every global a pickle names is looked up in `_ALLOWED`, which maps the few
torch functions and types a state dict needs to small numpy stand-ins; any
other global stops the load (Esc50Error naming the file and the global)
before anything it names is imported or called. See the checkpoint module for
the file formats around the pickle.
"""

from __future__ import annotations

import collections
import functools
import io
import pickle
import struct

import numpy as np

from esc50tf.errors import Esc50Error

# A file's tensors may hold this many times the elements of its storages.
_VIEW_FACTOR = 4

# torch storage class name -> numpy dtype ("bfloat16" is handled apart).
_STORAGE_DTYPES = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}

# numpy dtypes a checkpoint may carry as scalars or arrays: plain numbers only.
_NUMPY_KINDS = "biuf"
# A state dict's `_metadata`: one entry per module (CNN14 has 42), each a few
# plain values ({"version": 1}). Far above any real model, far below harm.
_MAX_METADATA_MODULES = 100_000
_MAX_METADATA_VALUES = 16
_MAX_METADATA_TEXT = 4096


class _StorageType(collections.namedtuple("_StorageType", "name dtype")):
    """Stands for ``torch.<X>_Storage`` inside the pickle: only its dtype matters.

    Immutable, and a fresh one per lookup: nothing a pickle does to it (BUILD
    is refused anyway) can reach another load.
    """

    __slots__ = ()


StorageType = _StorageType  # its public name (a refusal names the class itself)


class _LoadedOrderedDict(collections.OrderedDict):
    """``collections.OrderedDict`` as this reader builds it: made by the load itself.

    ``Module.state_dict()`` returns an OrderedDict with a ``_metadata``
    attribute (``{"": {"version": 1}, "bn0": {"version": 2}, ...}``), so
    ``torch.save`` pickles it as REDUCE, SETITEMS, then BUILD with the state
    ``{"_metadata": ...}``. That BUILD, and only that one, is allowed here:
    once per dict, with exactly that key, and a value that is a mapping of
    module paths to small dicts of plain values (int, float, bool, str,
    None). Anything else is refused by :func:`_check_metadata`.
    """

    def __setstate__(self, state):
        if not (isinstance(state, dict) and set(state) == {"_metadata"}):
            got = (f"keys {', '.join(sorted(repr(k)[:80] for k in state)[:5])}"
                   if isinstance(state, dict) else type(state).__name__)
            raise pickle.UnpicklingError(
                f"refusing to set the state of OrderedDict (BUILD) other than its "
                f"_metadata (got {got})")
        if "_metadata" in self.__dict__:
            raise pickle.UnpicklingError("refusing a second BUILD on one OrderedDict")
        self.__dict__["_metadata"] = _check_metadata(state["_metadata"])


def _plain(value):
    if isinstance(value, str):
        return len(value) <= _MAX_METADATA_TEXT
    return value is None or type(value) in (bool, int, float)


def _check_metadata(metadata):
    """A state dict's ``_metadata``, or an UnpicklingError saying what is wrong."""
    if type(metadata) is _LoadedOrderedDict and metadata.__dict__:
        raise pickle.UnpicklingError(
            "refusing OrderedDict _metadata that carries attributes of its own (BUILD)")
    if type(metadata) not in (dict, _LoadedOrderedDict):
        raise pickle.UnpicklingError(
            f"refusing OrderedDict _metadata of type {type(metadata).__name__} (BUILD): "
            "a state dict's is a mapping of module paths to version records")
    if len(metadata) > _MAX_METADATA_MODULES:
        raise pickle.UnpicklingError(
            f"refusing OrderedDict _metadata of {len(metadata)} entries (BUILD): "
            f"over {_MAX_METADATA_MODULES}, far more modules than any model has")
    for module, record in metadata.items():
        if not (isinstance(module, str) and _plain(module) and type(record) is dict
                and len(record) <= _MAX_METADATA_VALUES
                and all(isinstance(k, str) and _plain(k) and _plain(v)
                        for k, v in record.items())):
            raise pickle.UnpicklingError(
                f"refusing OrderedDict _metadata entry {module!r:.80} (BUILD): not a small "
                "dict of plain values (int, float, bool, str, None)")
    return metadata


def _storage_type(name):
    return _StorageType(name, _STORAGE_DTYPES[name])


class _Storage:
    """A flat numpy array read from the file, standing for a torch storage."""

    def __init__(self, array):
        self.array = array


class _NumpyArray:
    """What ``numpy.core.multiarray._reconstruct`` returns here; BUILD fills it."""

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("unexpected numpy array state")
        _version, shape, dtype, is_fortran, raw = state
        if isinstance(dtype, _DtypeSpec):
            dtype = dtype.dtype
        if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMPY_KINDS:
            raise pickle.UnpicklingError(f"numpy array of dtype {dtype!r} refused")
        if not isinstance(raw, (bytes, bytearray)):
            raise pickle.UnpicklingError("numpy array without raw data refused")
        shape = tuple(int(s) for s in shape)
        count = int(np.prod(shape, dtype=np.int64))
        if count * dtype.itemsize != len(raw):
            raise pickle.UnpicklingError("numpy array data of the wrong length")
        flat = np.frombuffer(raw, dtype=dtype, count=count)
        self.array = flat.reshape(shape, order="F" if is_fortran else "C").copy()


class _NdarrayName:
    """Stands for ``numpy.ndarray`` in a pickle: only `_numpy_reconstruct` accepts it
    (the real class would let NEWOBJ call ``ndarray.__new__`` with arguments of the
    file's choosing). A fresh token per lookup."""

    __slots__ = ()


def _numpy_reconstruct(cls, shape, typecode):
    if not isinstance(cls, _NdarrayName):
        raise pickle.UnpicklingError("numpy _reconstruct of a non-ndarray refused")
    return _NumpyArray()


class _DtypeSpec:
    """What ``numpy.dtype(...)`` returns here: a fresh holder, never numpy's own
    (shared, process-wide) dtype object, which the BUILD that follows a pickled
    dtype would otherwise modify in place."""

    def __init__(self, dtype):
        self.dtype = dtype

    def __setstate__(self, state):
        # numpy writes (version, byteorder, subarray, names, fields, elsize,
        # alignment, flags); only the byte order matters for plain numbers.
        if not (isinstance(state, tuple) and len(state) >= 2
                and state[1] in ("<", ">", "=", "|")):
            raise pickle.UnpicklingError("unexpected numpy dtype state")
        if any(v is not None for v in state[2:5]):
            raise pickle.UnpicklingError("structured numpy dtype refused")
        order = {"|": "="}.get(state[1], state[1])
        self.dtype = self.dtype.newbyteorder(order)


def _numpy_dtype(spec, align=False, copy=False):
    dtype = np.dtype(str(spec)) if isinstance(spec, str) else None
    if dtype is None or dtype.kind not in _NUMPY_KINDS:
        raise pickle.UnpicklingError(f"numpy dtype {spec!r} refused")
    return _DtypeSpec(dtype)


def _numpy_scalar(dtype, raw=None):
    if isinstance(dtype, _DtypeSpec):
        dtype = dtype.dtype
    if not isinstance(dtype, np.dtype) or not isinstance(raw, (bytes, bytearray)):
        raise pickle.UnpicklingError("numpy scalar refused")
    if len(raw) != dtype.itemsize:
        raise pickle.UnpicklingError("numpy scalar data of the wrong length")
    return np.frombuffer(raw, dtype=dtype)[0]


def _latin1_bytes(text, encoding="latin1"):
    """Protocol-2 pickles write bytes as `_codecs.encode(str, "latin1")`."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode other than str -> latin1 bytes refused")
    return text.encode("latin1")


def to_native(array):
    """Big-endian storages (a ``byteorder`` of "big") become native arrays."""
    return array.astype(array.dtype.newbyteorder("="), copy=False)


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage")
    flat = storage.array
    size = tuple(int(s) for s in size)
    stride = tuple(int(s) for s in stride)
    offset = int(offset)
    if len(size) != len(stride) or min(size + stride + (offset,), default=0) < 0:
        raise pickle.UnpicklingError(f"bad tensor geometry size={size} stride={stride}")
    if any(s == 0 for s in size):
        return np.zeros(size, dtype=flat.dtype)
    last = offset + sum((n - 1) * st for n, st in zip(size, stride))
    count = int(np.prod(size, dtype=object))
    if last >= flat.size or count > flat.size - offset:
        # as_strided would read past the buffer, or (zero or overlapping strides)
        # make a tensor bigger than the data it comes from: a corrupt or hostile file.
        raise pickle.UnpicklingError(
            f"tensor of size {size} (stride {stride}, offset {offset}) needs more than "
            f"its storage of {flat.size} elements"
        )
    item = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[offset:], shape=size, strides=tuple(st * item for st in stride),
        writeable=False,
    )
    return np.array(view, copy=True)


class _Rebuilder:
    """Rebuilds the tensors of one file, within the size of its storages.

    The same (storage, offset, size, stride) named twice (tied weights) gives the
    same array; all other tensors together may hold no more than
    ``_VIEW_FACTOR`` times the elements of all storages (room for overlapping
    views, as of a transposed and a sliced weight), so a small pickle naming
    one storage many times cannot make a large state dict.

    Args:
        limit: int. Elements of all storages read so far.
    """

    def __init__(self, limit):
        self.limit, self.used, self.built = int(limit), 0, {}

    def __call__(self, storage, offset, size, stride, *rest):
        if not isinstance(storage, _Storage):
            raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage")
        key = (id(storage.array), repr(offset), repr(size), repr(stride))
        if key not in self.built:
            array = _rebuild_tensor(storage, offset, size, stride)
            self.used += array.size
            if self.used > _VIEW_FACTOR * self.limit:
                raise pickle.UnpicklingError(
                    f"its tensors hold {_VIEW_FACTOR}x more elements than its storages "
                    f"({self.limit}): a small file that would fill memory")
            self.built[key] = (storage, array)  # keeps id(storage.array) unique
        return self.built[key][1]


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_state):
    return data


# (module, name) -> what it builds. Nothing else may be named by a checkpoint.
# Lookups hand out fresh objects (see `_RestrictedUnpickler.find_class`).
_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): _LoadedOrderedDict,
    ("_codecs", "encode"): _latin1_bytes,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy", "ndarray"): _NdarrayName,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}
_ALLOWED.update({("torch", name): _storage_type for name in _STORAGE_DTYPES})

# The only objects a pickle's BUILD opcode may set state on: ones made here, per load.
_BUILDABLE = (_NumpyArray, _DtypeSpec, _LoadedOrderedDict)


class _RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, module, name):
        super().__init__(f"{module}.{name}")
        self.qualname = f"{module}.{name}"


class _RestrictedUnpickler(pickle._Unpickler):
    """An unpickler that resolves only :data:`_ALLOWED` names.

    The pure-Python unpickler, so that BUILD can be limited to
    :data:`_BUILDABLE` objects: on anything else (a function's
    ``__defaults__``, a class attribute) it would change state shared by every
    later load in the process. Every name resolves to a fresh object.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, load_storage=None, overrides=None):
        super().__init__(file)
        self._load_storage = load_storage
        self._overrides = overrides or {}

    def find_class(self, module, name):
        key = (module, name)
        builder = self._overrides.get(key, _ALLOWED.get(key))
        if builder is None:
            raise _RefusedGlobal(module, name)
        if builder is _storage_type:
            return _storage_type(name)
        if builder is _NdarrayName:
            return _NdarrayName()
        if builder is _LoadedOrderedDict:
            return builder  # a class: each REDUCE makes a new dict of this load
        return functools.partial(builder)

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if not isinstance(inst, _BUILDABLE):
            raise pickle.UnpicklingError(
                f"refusing to set the state of {type(inst).__name__} (BUILD)")
        inst.__setstate__(state)

    dispatch[pickle.BUILD[0]] = load_build

    def persistent_load(self, pid):
        if self._load_storage is None:
            raise pickle.UnpicklingError("persistent id outside a checkpoint body")
        if not (isinstance(pid, tuple) and pid and pid[0] in ("storage", b"storage")):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.80}")
        return self._load_storage(pid[1:])


def load_pickle(data, path, load_storage=None, overrides=None):
    """Unpickles ``data`` (bytes or a binary file) with the allow-list.

    Args:
        data: bytes or binary file object positioned at a pickle.
        path: str or Path. Named in error messages.
        load_storage: callable or None. Receives the fields of a
            ``("storage", ...)`` persistent id and returns a ``_Storage``.
        overrides: dict or None. Replaces some allowed names' builders
            (never adds a name outside the allow-list).

    Returns:
        The unpickled object (numpy arrays in place of tensors).

    Raises:
        Esc50Error: a refused global, a malformed pickle or tensor.
    """
    file = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        return _RestrictedUnpickler(file, load_storage, overrides).load()
    except _RefusedGlobal as err:
        raise Esc50Error(
            f"{path}: refusing to load this checkpoint: its pickle calls "
            f"{err.qualname}, which a file of tensors never needs (only tensor, "
            "storage and plain-container types are allowed); it may be malicious"
        ) from None
    except Esc50Error:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError,
            IndexError, AttributeError, struct.error, OverflowError,
            MemoryError, RecursionError) as err:
        raise Esc50Error(f"{path}: not a readable PyTorch checkpoint ({_reason(err)})") from None


def _reason(err):
    """What went wrong in a pickle, in words: the pure-Python unpickler raises a bare
    EOFError at the end of the data, and KeyError(opcode) for an unknown opcode."""
    if isinstance(err, EOFError) and not str(err):
        return "the pickle ends early"
    if type(err) is KeyError and len(err.args) == 1 and isinstance(err.args[0], int):
        return f"unknown pickle opcode {bytes([err.args[0] & 0xFF])!r}"
    return err


def tensor_overrides(builder):
    """The allow-list's tensor builders, all replaced by ``builder``."""
    return {k: builder for k in _ALLOWED if k[0] == "torch._utils" and "tensor" in k[1]}


# The public names `esc50tf.pretrained.checkpoint` reads (refusals name the classes).
DtypeSpec = _DtypeSpec
NumpyArray = _NumpyArray
Rebuilder = _Rebuilder
Storage = _Storage
