"""Writing PyTorch checkpoints (and hostile variants of them) without PyTorch.

Shared by tests/test_pretrained.py and tests/test_checkpoint_reader.py. Files
are written the way ``torch.save`` writes them: protocol-2 pickles whose
tensors reduce to ``torch._utils._rebuild_tensor_v2`` and whose storages are
persistent ids, in the zip layout (``archive/data.pkl``, ``archive/byteorder``,
``archive/data/<key>``) or the legacy one (five pickles, then each storage as
an int64 count and its raw bytes). Stand-in ``torch`` modules (`fake_torch`)
exist only while pickling: pickle records a global by module and name, which is
all a reader sees. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import collections
import contextlib
import io
import pickle
import struct
import sys
import types
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
STORAGE_KINDS = ("FloatStorage", "LongStorage", "BFloat16Storage")


@contextlib.contextmanager
def fake_torch():
    """Stand-ins for the torch globals a checkpoint names, while pickling only.

    Yields ``(rebuild_tensor_v2, {storage name: class}, rebuild_parameter)``.
    """
    saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    torch_mod, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def stand_in(name):
        def never(*args):
            raise AssertionError("never called while writing")

        never.__module__, never.__qualname__ = "torch._utils", name
        setattr(utils, name, never)
        return never

    storages = {}
    for name in STORAGE_KINDS:
        cls = type(name, (), {"__module__": "torch"})
        setattr(torch_mod, name, cls)
        storages[name] = cls
    sys.modules["torch"], sys.modules["torch._utils"] = torch_mod, utils
    try:
        yield stand_in("_rebuild_tensor_v2"), storages, stand_in("_rebuild_parameter")
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


class Tensor:
    """Pickles as torch does: `_rebuild_tensor_v2(storage, offset, size, stride, ...)`."""

    def __init__(self, rebuild, storage, offset, size, stride):
        self.rebuild, self.args = rebuild, (storage, offset, size, stride)

    def __reduce__(self):
        return self.rebuild, self.args + (False, collections.OrderedDict())


class Parameter:
    """Pickles as `torch.nn.Parameter` does: `_rebuild_parameter(tensor, requires_grad, hooks)`."""

    def __init__(self, rebuild_parameter, tensor):
        self.rebuild, self.tensor = rebuild_parameter, tensor

    def __reduce__(self):
        return self.rebuild, (self.tensor, True, collections.OrderedDict())


class StorageRef:
    """A storage: pickled as its persistent id, its `data` written apart.

    `kind` is a torch storage class name, or any other object to put in the
    persistent id's type field as it is; `view` (legacy format only) is the
    pre-1.0 view record, `None` for a whole storage.
    """

    def __init__(self, kind, key, data, view=None):
        self.kind, self.key, self.data, self.view = kind, key, data, view


class Persistent:
    """Pickled as the persistent id `pid` itself, whatever it is."""

    def __init__(self, pid):
        self.pid = pid


class Reduces:
    """Pickles as `call(*args)`, then BUILD with `state` unless it is None: how a
    real object names the builder and state of its choice."""

    def __init__(self, call, args, state=None):
        self.value = (call, args) if state is None else (call, args, state)

    def __reduce__(self):
        return self.value


def pickle_checkpoint(obj, storage_types, legacy=False):
    """`obj` pickled with protocol 2, storages as torch's persistent ids."""

    class Pickler(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, Persistent):
                return o.pid
            if isinstance(o, StorageRef):
                kind = storage_types.get(o.kind, o.kind) if isinstance(o.kind, str) else o.kind
                pid = ("storage", kind, o.key, "cpu", o.data.size)
                return pid + (o.view,) if legacy else pid
            return None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def raw_storage(data, byteorder="little"):
    order = "<" if byteorder == "little" else ">"
    return data.astype(data.dtype.newbyteorder(order)).tobytes()


def zip_members(build, byteorder="little"):
    """`build(rebuild, storages, rebuild_parameter) -> (object, [StorageRef])` as the
    members of torch's zip format: {name: bytes}, in the order torch writes them."""
    with fake_torch() as (rebuild, storage_types, parameter):
        obj, refs = build(rebuild, storage_types, parameter)
        members = {"archive/data.pkl": pickle_checkpoint(obj, storage_types)}
    members["archive/byteorder"] = byteorder.encode()
    for ref in refs:
        members[f"archive/data/{ref.key}"] = raw_storage(ref.data, byteorder)
    return members


def write_zip(path, members, compression=zipfile.ZIP_STORED, deflated=()):
    """`members` ({name: bytes}) as a zip; those named in `deflated` compressed."""
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data, zipfile.ZIP_DEFLATED if name in deflated else None)
    return path


def write_zip_checkpoint(path, build, byteorder="little"):
    """`build` (see `zip_members`) written as torch's zip format."""
    return write_zip(path, zip_members(build, byteorder))


def legacy_parts(build, little_endian=True):
    """`build` (see `zip_members`) as the pieces of torch's legacy format, in order:
    the magic number, protocol and system info pickles, the object's pickle, the
    storage key list's pickle, then one record (int64 count + raw bytes) per storage."""
    with fake_torch() as (rebuild, storage_types, parameter):
        obj, refs = build(rebuild, storage_types, parameter)
        body = pickle_checkpoint(obj, storage_types, legacy=True)
    byteorder = "little" if little_endian else "big"
    headers = (LEGACY_MAGIC, LEGACY_PROTOCOL,
               {"protocol_version": LEGACY_PROTOCOL, "little_endian": little_endian})
    return ([pickle.dumps(h, protocol=2) for h in headers]
            + [body, pickle.dumps([ref.key for ref in refs], protocol=2)]
            + [struct.pack("<q", ref.data.size) + raw_storage(ref.data, byteorder)
               for ref in refs])


def u(text):
    """A pickle SHORT/BINUNICODE string opcode."""
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def g(module, name):
    """A pickle GLOBAL opcode."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def zip_of(path, pickle_bytes, members=(), compression=zipfile.ZIP_STORED):
    """A zip holding `pickle_bytes` as archive/data.pkl and `members` under archive/data/."""
    return write_zip(path, {"archive/data.pkl": pickle_bytes,
                            **{f"archive/data/{name}": data for name, data in members}},
                     compression)


def one_tensor(data=None, size=None, stride=None, offset=0, kind="FloatStorage"):
    """A `build` of `{"w": tensor}` over one storage "0" (default 6 float32 values)."""
    data = np.arange(6, dtype=np.float32) if data is None else data
    size = (data.size,) if size is None else size
    stride = (1,) if stride is None else stride

    def build(rebuild, storage_types, parameter):
        ref = StorageRef(kind, "0", data)
        return {"w": Tensor(rebuild, ref, offset, size, stride)}, [ref]

    return build
