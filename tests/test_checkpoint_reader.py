"""Every refusal of the PyTorch checkpoint reader (esc50tf/pretrained/checkpoint.py),
each with its own message.

Hostile files are made as real ones are (tests/torch_files.py writes them as
``torch.save`` does), then one thing is corrupted: a member of the zip, a piece
of the legacy layout, or what a pickled object reduces to. One table per
format, case -> (file builder, the message it must give). Needs neither
PyTorch nor TensorFlow.
"""

from __future__ import annotations

import codecs
import collections
import pickle
import re
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from torch_files import (
    Parameter,
    Persistent,
    Reduces,
    StorageRef,
    Tensor,
    legacy_parts,
    one_tensor,
    pickle_checkpoint,
    write_zip,
    zip_members,
)

from esc50tf.errors import Esc50Error
from esc50tf.pretrained.checkpoint import load_pickle, read_torch_checkpoint, read_torch_file

UNREADABLE = r"not a readable PyTorch checkpoint \("
F8 = np.dtype("f8")
# What numpy's own pickles name (numpy.core or numpy._core, by numpy version).
RECONSTRUCT = np.zeros(1).__reduce__()[0]
SCALAR = np.float64(0).__reduce__()[0]
TENSOR = object()  # in `_state_dict`: the state dict's tensor again


def _six_floats():
    return StorageRef("FloatStorage", "0", np.arange(6, dtype=np.float32))


def _state_dict(extra=None, wrap=None):
    """A `build` of the state dict `{"w": tensor, **extra}`, or of `{**wrap, "model":
    that state dict}`."""
    def build(rebuild, storage_types, parameter):
        ref = _six_floats()
        tensor = Tensor(rebuild, ref, 0, (6,), (1,))
        state = {"w": tensor, **{k: tensor if v is TENSOR else v
                                 for k, v in (extra or {}).items()}}
        return state if wrap is None else {**wrap, "model": state}, [ref]

    return build


def _with(value):
    """A valid file with one more (hostile) value beside its state dict."""
    return _state_dict(wrap={"extra": value})


def _array_state(shape=(2,), dtype=F8, raw=bytes(16)):
    """A numpy array pickled as numpy does (`_reconstruct`, then BUILD with this state)."""
    return Reduces(RECONSTRUCT, (np.ndarray, (0,), b"b"),
                   (1, shape, dtype, False, raw))


def _dtype_state(*state):
    """A numpy dtype "f8" pickled as numpy does, with BUILD state `state`."""
    return Reduces(np.dtype, ("f8", False, True), state)


# --------------------------------------------------------------------------
# The zip format
# --------------------------------------------------------------------------


def _members(build=None, **changes):
    """The members of a valid zip checkpoint (one_tensor by default), with
    `changes` ({name: bytes, or None to drop it})."""
    members = {**zip_members(build or one_tensor()), **changes}
    return {name: data for name, data in members.items() if data is not None}


def _patched(members, patch):
    """`members` written as a zip, then `patch(bytearray of the file)` applied."""
    def write(path):
        write_zip(path, members)
        data = bytearray(path.read_bytes())
        patch(data)
        path.write_bytes(bytes(data))
    return write


def _set_flags(data, flags):
    """Sets general-purpose flag bits on data.pkl, in its local and central headers."""
    for signature, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        data[data.index(signature) + at] |= flags


def _shorten_storage(data):
    """Storage 0 (8 bytes) keeps its size but reads as 4 bytes: its central
    directory entry says 4 bytes stored, with the CRC of those 4."""
    at = data.index(b"archive/data/0", data.index(b"PK\x01\x02")) - 46
    head = data[data.index(b"archive/data/0") + len(b"archive/data/0"):][:4]
    struct.pack_into("<II", data, at + 16, zipfile.crc32(bytes(head)), 4)


def _corrupt_crc(data):
    """Flips one byte of data.pkl's content (after its local header and name)."""
    at = data.index(b"archive/data.pkl") + len(b"archive/data.pkl") + 3
    data[at] ^= 0xFF


def _break_central_directory(data):
    data[data.rindex(b"PK\x01\x02")] = ord("Q")


def _cut_central_directory(data):
    """Cuts the last central directory entry to 20 bytes, the end record's size
    of the directory made to agree."""
    last, end = data.rindex(b"PK\x01\x02"), data.rindex(b"PK\x05\x06")
    (size,) = struct.unpack_from("<I", data, end + 12)
    struct.pack_into("<I", data, end + 12, size - (end - last - 20))
    del data[last + 20:end]


def _zip_version(data):
    data[data.rindex(b"PK\x01\x02") + 6] = 99  # needs zip 9.9 to extract


def _pickled(value):
    return lambda path: write_zip(path, _members(_with(value)))


ZIP_CASES = {
    # The archive's structure.
    "no-data-pkl": (
        lambda p: write_zip(p, _members(**{"archive/data.pkl": None,
                                           "archive/model.pkl": pickle.dumps({}, 2)})),
        r"a zip file, but not a PyTorch checkpoint \(no data\.pkl\)"),
    "two-data-pkl": (
        lambda p: write_zip(p, _members(**{"other/data.pkl": pickle.dumps({}, 2)})),
        r"a zip file, but not a PyTorch checkpoint \(no data\.pkl\)"),
    "oversized-byteorder": (
        lambda p: write_zip(p, _members(**{"archive/byteorder": b"little" + b" " * 11})),
        r"malformed byteorder record"),
    "unknown-byteorder": (
        lambda p: write_zip(p, _members(**{"archive/byteorder": b"middle"})),
        r"unknown byte order 'middle'"),
    "compressed-members": (
        lambda p: write_zip(p, _members(), zipfile.ZIP_DEFLATED),
        r"byteorder is compressed in the archive; PyTorch stores checkpoint members "
        r"uncompressed"),
    "compressed-data-pkl": (
        lambda p: write_zip(p, _members(), deflated={"archive/data.pkl"}),
        r"data\.pkl is compressed in the archive; PyTorch stores checkpoint members "
        r"uncompressed"),
    "missing-storage": (
        lambda p: write_zip(p, _members(**{"archive/data/0": None})),
        r"storage 0 is missing from the archive"),
    "storage-size-disagrees": (
        lambda p: write_zip(p, _members(**{"archive/data/0": bytes(20)})),
        r"storage 0 holds 20 bytes, the pickle says 6 float32 elements"),
    "storage-shorter-than-its-entry": (
        _patched(_members(one_tensor(np.arange(2, dtype=np.float32))), _shorten_storage),
        r"storage 0 holds 1 elements, the pickle says 2"),
    "encrypted-member": (
        _patched(_members(), lambda d: _set_flags(d, 0x01)),
        r"data\.pkl is encrypted or patched in the archive \(zip flags 0x1\)"),
    "patched-member": (
        _patched(_members(), lambda d: _set_flags(d, 0x20)),
        r"data\.pkl is encrypted or patched in the archive \(zip flags 0x20\)"),
    "bad-crc": (
        _patched(_members(), _corrupt_crc),
        r"damaged zip checkpoint \(Bad CRC-32 for file 'archive/data\.pkl'\)"),
    "corrupt-central-directory": (
        _patched(_members(), _break_central_directory),
        r"damaged zip checkpoint \(Bad magic number for central directory\)"),
    "cut-central-directory": (
        _patched(_members(), _cut_central_directory),
        r"damaged zip checkpoint \(Truncated central directory\)"),
    "unsupported-zip-version": (
        _patched(_members(), _zip_version),
        r"damaged zip checkpoint \(zip file version 9\.9\)"),
    # Persistent ids and tensors.
    "unknown-persistent-id": (
        _pickled(Persistent(("module", "0"))),
        UNREADABLE + r"unknown persistent id \('module', '0'\)\)"),
    "unknown-storage-type": (
        lambda p: write_zip(p, _members(one_tensor(kind="FloatTensor"))),
        UNREADABLE + r"storage of an unknown type\)"),
    "not-a-storage": (
        lambda p: write_zip(p, _members(
            lambda rebuild, *_: ({"w": Tensor(rebuild, "0", 0, (1,), (1,))}, []))),
        UNREADABLE + r"tensor rebuilt from something that is not a storage\)"),
    "size-and-stride-disagree": (
        lambda p: write_zip(p, _members(one_tensor(size=(2, 3), stride=(1,)))),
        UNREADABLE + r"bad tensor geometry size=\(2, 3\) stride=\(1,\)\)"),
    # numpy values beside the state dict.
    "array-state-not-numpys": (
        _pickled(Reduces(RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (2,), F8))),
        UNREADABLE + r"unexpected numpy array state\)"),
    "array-dtype-not-a-dtype": (
        _pickled(_array_state(dtype="f8")),
        UNREADABLE + r"numpy array of dtype 'f8' refused\)"),
    "array-of-objects": (
        _pickled(np.array([1, None], dtype=object)),
        UNREADABLE + r"numpy dtype 'O8' refused\)"),
    "array-of-datetimes": (
        _pickled(np.array(["2020-01-01"], dtype="datetime64[D]")),
        UNREADABLE + r"numpy dtype 'M8' refused\)"),
    "array-raw-not-bytes": (
        _pickled(_array_state(raw=[1.0, 2.0])),
        UNREADABLE + r"numpy array without raw data refused\)"),
    "array-raw-too-short": (
        _pickled(_array_state(raw=bytes(8))),
        UNREADABLE + r"numpy array data of the wrong length\)"),
    "reconstruct-not-an-ndarray": (
        _pickled(Reduces(RECONSTRUCT, (collections.OrderedDict, (0,), b"b"))),
        UNREADABLE + r"numpy _reconstruct of a non-ndarray refused\)"),
    "dtype-state-unknown-byteorder": (
        _pickled(_dtype_state(3, "?", None, None, None, -1, -1, 0)),
        UNREADABLE + r"unexpected numpy dtype state\)"),
    "dtype-state-empty-byteorder": (
        _pickled(_dtype_state(3, "", None, None, None, -1, -1, 0)),
        UNREADABLE + r"unexpected numpy dtype state\)"),
    "dtype-state-byteorder-not-text": (
        _pickled(_dtype_state(3, 60, None, None, None, -1, -1, 0)),
        UNREADABLE + r"unexpected numpy dtype state\)"),
    "dtype-state-too-short": (
        _pickled(_dtype_state(3)),
        UNREADABLE + r"unexpected numpy dtype state\)"),
    "structured-dtype": (
        _pickled(_dtype_state(3, "<", None, ("a",), {"a": (F8, 0)}, 8, 1, 16)),
        UNREADABLE + r"structured numpy dtype refused\)"),
    "scalar-dtype-not-a-dtype": (
        _pickled(Reduces(SCALAR, ("f8", bytes(8)))),
        UNREADABLE + r"numpy scalar refused\)"),
    "scalar-of-an-object": (
        _pickled(Reduces(SCALAR, (F8, 1.5))),
        UNREADABLE + r"numpy scalar refused\)"),
    "scalar-raw-too-short": (
        _pickled(Reduces(SCALAR, (F8, bytes(4)))),
        UNREADABLE + r"numpy scalar data of the wrong length\)"),
    "codecs-other-encoding": (
        _pickled(Reduces(codecs.encode, ("payload", "rot13"))),
        UNREADABLE + r"_codecs\.encode other than str -> latin1 bytes refused\)"),
    "codecs-not-text": (
        _pickled(Reduces(codecs.encode, (3, "latin1"))),
        UNREADABLE + r"_codecs\.encode other than str -> latin1 bytes refused\)"),
    # What was saved is not a state dict.
    "non-tensor-entry": (
        lambda p: write_zip(p, _members(_state_dict({"epoch": 3}))),
        r"the state dict has a non-tensor entry 'epoch'"),
    "non-text-key": (
        lambda p: write_zip(p, _members(_state_dict({7: TENSOR}))),
        r"the state dict has a non-tensor entry 7"),
    "no-state-dict-inside": (
        lambda p: write_zip(p, _members(lambda *_: ({"model": "cnn14", "epoch": 3}, []))),
        r"the state dict has a non-tensor entry 'model'"),
    "not-a-mapping": (
        lambda p: write_zip(p, _members(lambda *_: ([1, 2], []))),
        r"holds no state dict \(a mapping of names to tensors\)"),
    "empty-state-dict": (
        lambda p: write_zip(p, _members(lambda *_: ({"state_dict": {}}, []))),
        r"holds no state dict \(a mapping of names to tensors\)"),
}

def _refused(path, message):
    with pytest.raises(Esc50Error) as err:
        read_torch_checkpoint(path)
    text = str(err.value)
    assert text.startswith(f"{path}: "), text
    assert re.search(message, text), (message, text)


@pytest.mark.parametrize("case", list(ZIP_CASES))
def test_zip_checkpoints_are_refused_with_the_reason(tmp_path, case):
    write, message = ZIP_CASES[case]
    path = tmp_path / f"{case}.pth"
    write(path)
    assert zipfile.is_zipfile(path)
    _refused(path, message)


# --------------------------------------------------------------------------
# The legacy format
# --------------------------------------------------------------------------

MAGIC, PROTOCOL, SYS_INFO, BODY, KEYS, FIRST_STORAGE = range(6)


def _legacy(build=None, replace=None, cut=None, tail=b""):
    """A writer of a valid legacy checkpoint (one_tensor by default) with pieces
    (see `legacy_parts`) replaced ({index: bytes}), those from `cut` on dropped,
    and `tail` appended."""
    def write(path):
        parts = legacy_parts(build or one_tensor())
        for index, data in (replace or {}).items():
            parts[index] = data
        path.write_bytes(b"".join(parts[:cut]) + tail)
    return write


def _record(count, data=b""):
    return struct.pack("<q", count) + data


def _view(rebuild, *_):
    ref = StorageRef("FloatStorage", "0", np.arange(4, dtype=np.float32), view=("1", 0, 2))
    return {"w": Tensor(rebuild, ref, 0, (2,), (1,))}, [ref]


def _negative_count(rebuild, storage_types, _):
    pid = ("storage", storage_types["FloatStorage"], "0", "cpu", -1, None)
    return {"w": Tensor(rebuild, Persistent(pid), 0, (1,), (1,))}, []


def _unlisted_storage(rebuild, *_):
    listed, unlisted = _six_floats(), StorageRef("FloatStorage", "1", np.zeros(2, np.float32))
    return {"w": Tensor(rebuild, listed, 0, (6,), (1,)),
            "v": Tensor(rebuild, unlisted, 0, (2,), (1,))}, [listed]


LEGACY_CASES = {
    "wrong-magic": (
        _legacy(replace={MAGIC: pickle.dumps(0x1950A86A20F9469CFC6D, 2)}),
        r"not a PyTorch checkpoint \(wrong magic number\)"),
    "unsupported-protocol": (
        _legacy(replace={PROTOCOL: pickle.dumps(1000, 2)}),
        r"unsupported legacy PyTorch protocol 1000"),
    "key-list-not-a-list": (
        _legacy(replace={KEYS: pickle.dumps(("0",), 2)}),
        r"malformed legacy checkpoint \(storage key list\)"),
    "unknown-key-in-list": (
        _legacy(replace={KEYS: pickle.dumps(["0", "7"], 2)}),
        r"unknown storage 7 in the key list"),
    "no-storage-record": (
        _legacy(cut=FIRST_STORAGE),
        r"truncated \(storage 0 missing\)"),
    "truncated-storage-header": (
        _legacy(cut=FIRST_STORAGE, tail=_record(6)[:4]),
        r"truncated \(storage 0 missing\)"),
    "count-disagrees": (
        _legacy(replace={FIRST_STORAGE: _record(7, bytes(28))}),
        r"storage 0 holds 7 elements, the pickle says 6"),
    "count-beyond-the-file": (
        _legacy(one_tensor(np.zeros(1000, np.float32), size=(2,)), cut=FIRST_STORAGE,
                tail=_record(1000, bytes(8))),
        r"storage 0 says it holds 1000 elements, more than the rest of the file"),
    "negative-count": (
        _legacy(_negative_count, replace={KEYS: pickle.dumps(["0"], 2)}, tail=_record(-1)),
        r"storage 0 says it holds -1 elements"),
    "storage-without-data": (
        _legacy(_unlisted_storage),
        r"storage 1 has no data in the file"),
    "storage-view": (
        _legacy(_view),
        r"storage views \(pre-1\.0 PyTorch files\) are not supported"),
    "unknown-storage-type": (
        _legacy(one_tensor(kind="FloatTensor")),
        UNREADABLE + r"storage of an unknown type\)"),
    "not-a-storage": (
        _legacy(lambda rebuild, *_: ({"w": Tensor(rebuild, "0", 0, (1,), (1,))}, [])),
        UNREADABLE + r"tensor rebuilt from something that is not a storage\)"),
    "tensor-past-its-storage": (
        _legacy(one_tensor(size=(2, 2), stride=(0, 0), data=np.zeros(2, np.float32))),
        UNREADABLE + r"tensor of size \(2, 2\) \(stride \(0, 0\), offset 0\) needs more than "
        r"its storage of 2 elements\)"),
    "refused-global-in-the-header": (
        _legacy(replace={SYS_INFO: pickle.dumps(Reduces(print, ("hello",)), 2)}),
        r"refusing to load this checkpoint: its pickle calls __builtin__\.print"),
}


@pytest.mark.parametrize("case", list(LEGACY_CASES))
def test_legacy_checkpoints_are_refused_with_the_reason(tmp_path, case):
    write, message = LEGACY_CASES[case]
    path = tmp_path / f"{case}.pth"
    write(path)
    assert not zipfile.is_zipfile(path)
    _refused(path, message)


# --------------------------------------------------------------------------
# Files that are no checkpoint, pickles outside one, and what is accepted
# --------------------------------------------------------------------------


def test_a_missing_or_unreadable_file_is_named(tmp_path):
    _refused(tmp_path / "absent.pth", r"no such checkpoint file")
    _refused(tmp_path, r"no such checkpoint file")  # a folder
    mem = Path("/proc/self/mem")  # a regular file whose first page cannot be read
    if not mem.is_file():
        pytest.skip("no /proc/self/mem here")
    _refused(mem, r"cannot read \(\[Errno 5\] Input/output error\)")


def test_a_pickle_read_alone_takes_no_storage_and_builds_no_tensor():
    """`load_pickle` without a checkpoint around it (no storage loader, no tensor
    builder of a file): a storage is refused, and so is a tensor of anything else."""
    storage = pickle_checkpoint(Persistent(("storage", "FloatStorage", "0", "cpu", 1)), {})
    with pytest.raises(Esc50Error, match=r"^alone\.pkl: " + UNREADABLE
                       + r"persistent id outside a checkpoint body\)$"):
        load_pickle(storage, "alone.pkl")
    tensor = legacy_parts(lambda rebuild, *_: ({"w": Tensor(rebuild, "0", 0, (1,), (1,))},
                                               []))[BODY]
    with pytest.raises(Esc50Error, match=r"^alone\.pkl: " + UNREADABLE
                       + r"tensor rebuilt from something that is not a storage\)$"):
        load_pickle(tensor, "alone.pkl")


def _accepted(rebuild, storage_types, parameter):
    """Zero-size tensors, a Parameter, a tuple beside the state dict."""
    ref = _six_floats()
    state = collections.OrderedDict(
        empty=Tensor(rebuild, ref, 0, (0, 3), (3, 1)),
        empty_far=Tensor(rebuild, ref, 99, (4, 0), (0, 1)),
        weight=Parameter(parameter, Tensor(rebuild, ref, 2, (2, 2), (1, 2))),
    )
    return {"model": state, "shape": (1, "two")}, [ref]


@pytest.mark.parametrize("fmt", ["zip", "legacy", "legacy-big-endian"])
def test_zero_size_tensors_parameters_and_tuples_are_read(tmp_path, fmt):
    path = tmp_path / "ok.pth"
    if fmt == "zip":
        write_zip(path, zip_members(_accepted))
    else:
        path.write_bytes(b"".join(legacy_parts(_accepted, little_endian=fmt == "legacy")))
    saved = read_torch_file(path)
    assert saved["shape"] == (1, "two")
    state = saved["model"]
    assert state["empty"].shape == (0, 3) and state["empty"].dtype == np.float32
    assert state["empty_far"].shape == (4, 0)
    np.testing.assert_array_equal(state["weight"], [[2.0, 4.0], [3.0, 5.0]])
    assert list(read_torch_checkpoint(path)) == ["empty", "empty_far", "weight"]
