"""esc50tf.pretrained: reading PyTorch checkpoints without torch, conversion,
parity with the reference implementation, the catalog, the cache and download.

The fixtures in tests/fixtures/panns/ were made by tools/make_panns_fixtures.py
with the reference code itself (panns-inference + PyTorch, and the authors'
training code for the sampler state, in a separate environment): reduced-width
CNN14 / CNN14-16k / CNN14-SED checkpoints saved as the official ones are (the
training script's dict around an unchanged `state_dict()`), in both PyTorch
formats, and the reference outputs for three waveforms. None of these tests
needs PyTorch.
"""

from __future__ import annotations

import collections
import hashlib
import http.server
import io
import json
import os
import pickle
import pickletools
import struct
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from esc50tf.errors import Esc50Error
from esc50tf.models.panns import build_reference
from esc50tf.pretrained import architectures, catalog, store
from esc50tf.pretrained.checkpoint import read_torch_checkpoint, read_torch_file
from esc50tf.pretrained.convert import check_frontend, convert_state_dict, load_into
from torch_files import StorageRef as _StorageRef
from torch_files import Tensor as _Tensor
from torch_files import g as _g
from torch_files import u as _u
from torch_files import write_zip as _write_zip
from torch_files import write_zip_checkpoint as _write_zip_checkpoint
from torch_files import zip_of as _zip_of

FIXTURES = Path(__file__).parent / "fixtures" / "panns"
ARCHS = {"cnn14": "32k", "cnn14_16k": "16k", "cnn14_sed": "32k"}
FORMATS = ("zip", "legacy")

# Parameter counts of the full-size reference models, printed by
# tools/make_panns_fixtures.py from panns_inference.models.Cnn14 /
# Cnn14_DecisionLevelMax (classes_num=527) with torch 2.14: trainable
# parameters (the torchlibrosa front end is frozen), and the state dict without
# the front end buffers and `num_batches_tracked` (adds the batch-norm running
# statistics).
REFERENCE_TRAINABLE = {"cnn14": 80_753_615, "cnn14_16k": 80_753_615, "cnn14_sed": 80_753_615}
REFERENCE_STATE = {"cnn14": 80_769_871, "cnn14_16k": 80_769_871, "cnn14_sed": 80_769_871}

LOGMEL_DB_TOLERANCE = 0.01
LOGMEL_RANGE_DB = 80.0
RELATIVE_TOLERANCE = 1e-4


def _checkpoint(arch, fmt):
    return FIXTURES / f"{arch}.{fmt}.pth"


def _reference(arch):
    with np.load(FIXTURES / f"{arch}.outputs.npz") as data:
        ref = {k: data[k] for k in data.files}
    with np.load(FIXTURES / f"waveforms_{ARCHS[arch]}.npz") as data:
        ref["waveform"] = data["pcm"].astype(np.float32) / 32768.0
    ref["widths"] = tuple(int(w) for w in ref["widths"])
    ref["embedding_size"] = int(ref["embedding_size"])
    return ref


def _relative_error(got, want):
    """max |got - want| / max |want|: one number per output tensor."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


# --------------------------------------------------------------------------
# Reading checkpoints
# --------------------------------------------------------------------------


@pytest.mark.parametrize("arch", list(ARCHS))
def test_both_formats_read_the_same_state_dict(arch):
    zipped = read_torch_checkpoint(_checkpoint(arch, "zip"))
    legacy = read_torch_checkpoint(_checkpoint(arch, "legacy"))
    assert zipfile.is_zipfile(_checkpoint(arch, "zip"))
    assert not zipfile.is_zipfile(_checkpoint(arch, "legacy"))
    assert sorted(zipped) == sorted(legacy)
    # 6 blocks x (2 convs + 2 BNs x 5 entries) + bn0 (5) + 2 Linear x 2 + melW
    # + the STFT's two DFT matrices.
    assert len(zipped) == 6 * (2 + 10) + 5 + 4 + 1 + 2
    for key in zipped:
        assert zipped[key].dtype == legacy[key].dtype
        np.testing.assert_array_equal(zipped[key], legacy[key])
    assert zipped["conv_block1.conv1.weight"].shape == (4, 1, 3, 3)
    assert zipped["conv_block6.bn2.running_var"].dtype == np.float32
    assert zipped["bn0.num_batches_tracked"].dtype == np.int64
    assert zipped["fc_audioset.weight"].shape == (527, 32)


def _object_pickle_ops(path):
    """(opcode name, argument) of the pickle holding a checkpoint's object: a zip's
    data.pkl, or the 4th of a legacy file's pickles (magic, protocol, system info)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            stream = io.BytesIO(zf.read(next(n for n in zf.namelist()
                                             if n.endswith("/data.pkl"))))
    else:
        stream = io.BytesIO(path.read_bytes())
        for _ in range(3):
            for _op in pickletools.genops(stream):
                pass
    return [(op.name, arg) for op, arg, _ in pickletools.genops(stream)]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("arch", list(ARCHS))
def test_fixtures_are_what_the_training_script_saves(arch, fmt):
    """The official files' layout (tools/make_panns_fixtures.py says how it is known):
    `{"iteration", "model": state_dict(), "sampler"}`, the state dict an
    OrderedDict whose `_metadata` a pickle BUILD restores; never a tidied dict."""
    path = _checkpoint(arch, fmt)
    ops = _object_pickle_ops(path)
    at = ops.index(("BINUNICODE", "_metadata"))
    assert "BUILD" in [name for name, _ in ops[at:]]
    saved = read_torch_file(path)
    assert list(saved) == ["iteration", "model", "sampler"]
    assert type(saved["iteration"]) is int
    state = saved["model"]
    assert type(state) is collections.OrderedDict
    modules = {key.rpartition(".")[0] for key in state}
    assert {""} | modules <= set(state._metadata)  # every module, parameters or not
    assert all(set(record) == {"version"} for record in state._metadata.values())
    assert state._metadata["bn0"] == {"version": 2}  # BatchNorm's version
    assert "spectrogram_extractor.stft.conv_real.weight" in state
    sampler = saved["sampler"]
    assert list(sampler) == ["indexes_per_class", "queue", "pointers_of_classes"]
    assert len(sampler["indexes_per_class"]) == len(sampler["pointers_of_classes"]) == 527
    assert all(a.dtype == np.int64 for a in sampler["indexes_per_class"])
    assert all(type(i) is int for i in sampler["queue"] + sampler["pointers_of_classes"])
    assert read_torch_checkpoint(path).keys() == state.keys()


def test_strided_views_and_bfloat16_are_rebuilt(tmp_path):
    flat = np.arange(24, dtype=np.float32)
    bf16 = (np.array([1.5, -2.25], np.float32).view(np.uint32) >> 16).astype(np.uint16)

    def build(rebuild, *_):
        s0, s1 = _StorageRef("FloatStorage", "0", flat), _StorageRef("BFloat16Storage", "1", bf16)
        state = collections.OrderedDict(
            transposed=_Tensor(rebuild, s0, 0, (6, 4), (1, 6)),
            sliced=_Tensor(rebuild, s0, 5, (3,), (2,)),
            half=_Tensor(rebuild, s1, 0, (2,), (1,)),
        )
        return {"state_dict": state, "epoch": 3}, [s0, s1]

    state = read_torch_checkpoint(_write_zip_checkpoint(tmp_path / "v.pth", build))
    np.testing.assert_array_equal(state["transposed"], flat.reshape(4, 6).T)
    np.testing.assert_array_equal(state["sliced"], [5.0, 7.0, 9.0])
    np.testing.assert_array_equal(state["half"], [1.5, -2.25])
    assert state["half"].dtype == np.float32


def test_big_endian_archives_are_read(tmp_path):
    flat = np.linspace(-1, 1, 6).astype(np.float32)

    def build(rebuild, *_):
        s0 = _StorageRef("FloatStorage", "0", flat)
        return {"w": _Tensor(rebuild, s0, 0, (2, 3), (3, 1))}, [s0]

    path = _write_zip_checkpoint(tmp_path / "be.pth", build, byteorder="big")
    np.testing.assert_array_equal(read_torch_checkpoint(path)["w"], flat.reshape(2, 3))


def test_numpy_values_beside_the_state_dict_are_read(tmp_path):
    """Training scripts store counters and sampler state as numpy next to the weights."""
    flat = np.arange(6, dtype=np.float32)

    def build(rebuild, *_):
        s0 = _StorageRef("FloatStorage", "0", flat)
        return {"model": {"w": _Tensor(rebuild, s0, 0, (2, 3), (3, 1))},
                "test_mAP": np.float64(0.431), "iteration": 500_000,
                "sampler": {"indexes": np.arange(5, dtype=np.int64), "name": b"balanced"}}, [s0]

    state = read_torch_checkpoint(_write_zip_checkpoint(tmp_path / "np.pth", build))
    assert list(state) == ["w"]
    np.testing.assert_array_equal(state["w"], flat.reshape(2, 3))


_PAST = r"bad\.pth: not a readable PyTorch checkpoint \(tensor of size "
_OF_24 = r" needs more than its storage of 24 elements\)"


@pytest.mark.parametrize("geometry, refusal", [
    (((5, 6), (6, 1), 0), _PAST + r"\(5, 6\) \(stride \(6, 1\), offset 0\)" + _OF_24),
    (((4,), (1,), 21), _PAST + r"\(4,\) \(stride \(1,\), offset 21\)" + _OF_24),
    (((2,), (-1,), 3), r"bad\.pth: not a readable PyTorch checkpoint \(bad tensor geometry "
                       r"size=\(2,\) stride=\(-1,\)\)"),
    (((4096, 8192), (0, 0), 0), _PAST + r"\(4096, 8192\) \(stride \(0, 0\), offset 0\)" + _OF_24),
    (((5, 5), (1, 1), 0), _PAST + r"\(5, 5\) \(stride \(1, 1\), offset 0\)" + _OF_24),
])
def test_tensors_reaching_past_their_storage_are_refused(tmp_path, geometry, refusal):
    size, stride, offset = geometry
    flat = np.arange(24, dtype=np.float32)

    def build(rebuild, *_):
        s0 = _StorageRef("FloatStorage", "0", flat)
        return {"w": _Tensor(rebuild, s0, offset, size, stride)}, [s0]

    path = _write_zip_checkpoint(tmp_path / "bad.pth", build)
    with pytest.raises(Esc50Error, match=refusal):
        read_torch_checkpoint(path)


# BUILD (set state) on what the allow-list hands out: a storage type's dtype, a
# builder function's defaults (slot state), numpy's own float32 dtype object;
# each with what must stop it. A dtype's BUILD is allowed, on the fresh holder
# the reader hands out (never numpy's shared dtype), so that file fails later.
_STATE_ATTACKS = {
    "storage-dtype": (
        _g("torch", "FloatStorage") + b"}" + _u("dtype") + _u("int32") + b"sb.",
        r"refusing to set the state of _StorageType \(BUILD\)"),
    "function-defaults": (
        _g("torch._utils", "_rebuild_parameter") + b"N}" + _u("__defaults__") + b"(K\x07ts\x86b.",
        r"refusing to set the state of partial \(BUILD\)"),
    "ndarray-name": (
        _g("numpy", "ndarray") + b"}" + _u("x") + b"K\x01sb.",
        r"refusing to set the state of _NdarrayName \(BUILD\)"),
    "numpy-dtype": (
        _g("numpy", "dtype") + _u("f4") + b"\x89\x88\x87R(K\x03" + _u(">")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb.",
        r"holds no state dict"),
}


@pytest.mark.parametrize("attack", list(_STATE_ATTACKS))
def test_a_hostile_pickle_cannot_change_how_later_files_load(tmp_path, attack):
    body, refusal = _STATE_ATTACKS[attack]
    fixture = _checkpoint("cnn14", "zip")
    good = read_torch_checkpoint(fixture)
    path = _zip_of(tmp_path / "hostile.pth", b"\x80\x02" + body)
    with pytest.raises(Esc50Error, match=r"hostile\.pth: .*" + refusal):
        read_torch_checkpoint(path)
    again = read_torch_checkpoint(fixture)
    for key, value in good.items():
        assert again[key].dtype == value.dtype
        np.testing.assert_array_equal(again[key], value)
    assert np.dtype("f4").byteorder == "="
    assert np.array([1.0], "f4").tobytes() == np.array([1.0], "<f4").tobytes()


class _StateDictLike(collections.OrderedDict):
    """Pickles as `Module.state_dict()` does (REDUCE, SETITEMS, then BUILD of its
    attributes), with whatever attribute state a test gives it."""

    def __init__(self, items, state):
        super().__init__(items)
        self.state = state

    def __reduce__(self):
        return collections.OrderedDict, (), self.state, None, iter(self.items())


def _state_dict_pickle(state, extra_build=b""):
    """Protocol 2, as torch.save writes; `extra_build` goes before STOP."""
    data = pickle.dumps(_StateDictLike({"w": 1}, state), protocol=2)
    assert data.endswith(b"b.")
    return data[:-1] + extra_build + b"."


def test_a_state_dicts_metadata_is_read(tmp_path):
    meta = collections.OrderedDict([("", {"version": 1}), ("bn0", {"version": 2})])
    path = _zip_of(tmp_path / "meta.pth", _state_dict_pickle({"_metadata": meta}))
    loaded = read_torch_file(path)
    assert type(loaded) is collections.OrderedDict and dict(loaded) == {"w": 1}
    assert loaded._metadata == meta


_BUILD_GUARD = r"meta\.pth: not a readable PyTorch checkpoint \(refusing "
# state given to an OrderedDict's BUILD -> what the BUILD guard says.
_METADATA_ATTACKS = {
    "array-value": ({"_metadata": {"": {"version": np.arange(3)}}},
                    "OrderedDict _metadata entry '' \\(BUILD\\): not a small dict of plain"),
    "list-record": ({"_metadata": {"": [1]}}, "OrderedDict _metadata entry '' "),
    "nested-record": ({"_metadata": {"": {"version": {"a": 1}}}},
                      "OrderedDict _metadata entry '' "),
    "int-module": ({"_metadata": {1: {"version": 1}}}, "OrderedDict _metadata entry 1 "),
    "long-name": ({"_metadata": {"m" * 5000: {"version": 1}}},
                  "OrderedDict _metadata entry 'mmm"),
    "wide-record": ({"_metadata": {"": {str(i): i for i in range(17)}}},
                    "OrderedDict _metadata entry '' "),
    "huge": ({"_metadata": {f"m{i}": {"version": 1} for i in range(100_001)}},
             "OrderedDict _metadata of 100001 entries \\(BUILD\\): over 100000"),
    "list-metadata": ({"_metadata": [1, 2]}, "OrderedDict _metadata of type list"),
    "nested-metadata": ({"_metadata": _StateDictLike({}, {"_metadata": {}})},
                        "OrderedDict _metadata that carries attributes of its own"),
    "another-attribute": ({"_metadata": {}, "update": 1},
                          "to set the state of OrderedDict \\(BUILD\\) other than its "
                          "_metadata \\(got keys '_metadata', 'update'\\)"),
    "only-another-attribute": ({"__class__": 1}, "to set the state of OrderedDict .* "
                               "\\(got keys '__class__'\\)"),
    "slot-state": (({"_metadata": {}}, {"x": 1}),
                   "to set the state of OrderedDict .* \\(got tuple\\)"),
}


@pytest.mark.parametrize("attack", list(_METADATA_ATTACKS))
def test_an_ordered_dict_takes_no_state_but_its_metadata(tmp_path, attack):
    state, refusal = _METADATA_ATTACKS[attack]
    path = _zip_of(tmp_path / "meta.pth", _state_dict_pickle(state))
    with pytest.raises(Esc50Error, match=_BUILD_GUARD + refusal):
        read_torch_file(path)


def test_an_ordered_dict_takes_its_metadata_once_and_a_dict_none(tmp_path):
    again = b"}" + _u("_metadata") + b"}sb"
    path = _zip_of(tmp_path / "meta.pth", _state_dict_pickle({"_metadata": {}}, again))
    with pytest.raises(Esc50Error, match=_BUILD_GUARD + "a second BUILD on one OrderedDict"):
        read_torch_file(path)
    plain = b"\x80\x02}" + again + b"."
    path = _zip_of(tmp_path / "meta.pth", plain)
    with pytest.raises(Esc50Error, match=_BUILD_GUARD + r"to set the state of dict \(BUILD\)"):
        read_torch_file(path)


def test_a_big_endian_numpy_value_still_loads(tmp_path):
    flat = np.arange(3, dtype=np.float32)

    def build(rebuild, *_):
        s0 = _StorageRef("FloatStorage", "0", flat)
        return {"model": {"w": _Tensor(rebuild, s0, 0, (3,), (1,))},
                "sampler": {"big": np.arange(3, dtype=">i4")}, "step": np.float64(2.5)}, [s0]

    state = read_torch_checkpoint(_write_zip_checkpoint(tmp_path / "be.pth", build))
    np.testing.assert_array_equal(state["w"], flat)
    assert np.dtype("i4").byteorder == "="


def _shared_lists(depth):
    """A list that holds the previous one twice, `depth` deep: 2**depth paths."""
    out = b"\x80\x02K\x01r" + struct.pack("<I", 0)
    for i in range(1, depth + 1):
        out += (b"]r" + struct.pack("<I", i) + b"(j" + struct.pack("<I", i - 1)
                + b"j" + struct.pack("<I", i - 1) + b"e")
        if i < depth:
            out += b"0"
    return out + b"."


def test_shared_containers_are_resolved_once(tmp_path):
    from esc50tf.pretrained import checkpoint

    path = _zip_of(tmp_path / "dag.pth", _shared_lists(40))  # 2**40 paths: hangs if walked
    with zipfile.ZipFile(path) as zf:
        top = checkpoint._resolve(checkpoint._read_zip(path, zf))
    assert top[0] is top[1] and top[0][0] is top[0][1]
    with pytest.raises(Esc50Error, match=r"dag\.pth: holds no state dict"):
        read_torch_checkpoint(path)


def test_deeply_nested_pickles_give_a_clear_error(tmp_path):
    path = _zip_of(tmp_path / "deep.pth", b"\x80\x02K\x00" + b"\x85" * 100_000 + b".")
    with pytest.raises(Esc50Error, match=r"deep\.pth: not a readable PyTorch checkpoint: "
                       r"nested too deeply or too large \(RecursionError\)"):
        read_torch_checkpoint(path)


def _tensor_at(storage_key, numel, offset, size, stride):
    ints = lambda values: b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"
    return (_g("torch._utils", "_rebuild_tensor_v2") + b"((" + _u("storage")
            + _g("torch", "FloatStorage") + _u(storage_key) + _u("cpu")
            + b"J" + struct.pack("<i", numel) + b"tQJ" + struct.pack("<i", offset)
            + ints(size) + ints(stride) + b"\x89" + _g("collections", "OrderedDict") + b")RtR")


def test_tensors_may_not_hold_more_than_their_storages(tmp_path):
    data = np.arange(4, dtype=np.float32).tobytes()
    # Five views of all 4 elements, each its own geometry: 20 > 4 x 4 elements.
    body = b"\x80\x02}(" + b"".join(_u(f"w{i}") + _tensor_at("0", 4, 0, (4, 1), (1, i))
                                    for i in range(5)) + b"u."
    path = _zip_of(tmp_path / "views.pth", body, [("0", data)])
    with pytest.raises(Esc50Error, match=r"views\.pth.*more elements than its storages"):
        read_torch_checkpoint(path)
    # The same tensor named twice (tied weights) costs nothing more.
    tied = b"\x80\x02}(" + b"".join(_u(k) + _tensor_at("0", 4, 0, (4,), (1,))
                                    for k in ("a", "b")) + b"u."
    state = read_torch_checkpoint(_zip_of(tmp_path / "tied.pth", tied, [("0", data)]))
    np.testing.assert_array_equal(state["b"], np.arange(4))


def test_compressed_or_misdeclared_storages_are_refused_unread(tmp_path, monkeypatch):
    body = b"\x80\x02}(" + _u("w") + _tensor_at("0", 1, 0, (1,), (1,)) + b"u."
    bomb = _write_zip(tmp_path / "bomb.pth", {"archive/data.pkl": body,
                                              "archive/data/0": bytes(8 << 20)},
                      deflated={"archive/data/0"})
    assert bomb.stat().st_size < 1 << 20
    reads, read = [], zipfile.ZipFile.read
    monkeypatch.setattr(zipfile.ZipFile, "read",
                        lambda self, name, *a: reads.append(name) or read(self, name, *a))
    with pytest.raises(Esc50Error, match=r"bomb\.pth: storage 0 is compressed in the archive"):
        read_torch_checkpoint(bomb)
    assert reads == ["archive/data.pkl"]
    monkeypatch.undo()
    big = _zip_of(tmp_path / "big.pth", body, [("0", bytes(8 << 20))])
    with pytest.raises(Esc50Error, match=r"big\.pth: storage 0 holds 8388608 bytes"):
        read_torch_checkpoint(big)
    from esc50tf.pretrained import checkpoint

    monkeypatch.setattr(checkpoint, "_MAX_PICKLE_BYTES", 16)
    with pytest.raises(Esc50Error, match=r"big\.pth: its data\.pkl is over"):
        read_torch_checkpoint(big)


def _legacy_bytes(numel, count, size=(1,), stride=(1,)):
    out = b"".join(pickle.dumps(h, 2) for h in (0x1950A86A20F9469CFC6C, 1001,
                                                 {"little_endian": True}))
    body = b"\x80\x02}(" + _u("w") + _tensor_at("0", numel, 0, size, stride) + b"u."
    return out + body + pickle.dumps(["0"], 2) + struct.pack("<q", count)


def test_legacy_storage_sizes_are_checked_against_the_file(tmp_path):
    path = tmp_path / "huge.pth"
    path.write_bytes(_legacy_bytes(2**31 - 1, 2**31 - 1) + bytes(16))
    with pytest.raises(Esc50Error, match=r"huge\.pth: storage 0 says it holds 2147483647"):
        read_torch_checkpoint(path)
    path = tmp_path / "geometry.pth"
    path.write_bytes(_legacy_bytes(2, 2, size=(2, 2), stride=(0, 0)) + bytes(8))
    with pytest.raises(Esc50Error, match=r"geometry\.pth: not a readable PyTorch checkpoint "
                       r"\(tensor of size \(2, 2\) \(stride \(0, 0\), offset 0\) needs more "
                       r"than its storage of 2 elements\)"):
        read_torch_checkpoint(path)


class _Command:
    """A pickle payload: unpickling it would run `call(*args)`."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def _payloads(marker):
    touch = f"touch {marker}"
    return {
        "os.system": _Command(os.system, touch),
        "builtins.eval": _Command(eval, f"__import__('os').system({touch!r})"),
        "subprocess.call": _Command(subprocess.call, ["touch", str(marker)]),
    }


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("payload", ["os.system", "builtins.eval", "subprocess.call"])
def test_a_checkpoint_that_would_run_a_command_is_refused_and_runs_nothing(tmp_path, fmt,
                                                                           payload):
    marker = tmp_path / "pwned"
    evil = {"model": collections.OrderedDict(w=np.zeros(1)), "hook": _payloads(marker)[payload]}
    path = tmp_path / f"evil.{fmt}.pth"
    body = pickle.dumps(evil, protocol=2)
    if fmt == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", body)
    else:
        with open(path, "wb") as f:
            for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
                pickle.dump(header, f, protocol=2)
            f.write(body)
            pickle.dump([], f, protocol=2)
    # The payload is real: plain pickle would have run it.
    assert payload.split(".")[1] in body.decode("latin-1")
    with pytest.raises(Esc50Error) as err:
        read_torch_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "refusing" in message
    assert payload.split(".")[1] in message  # names the refused global (posix.system...)
    assert not marker.exists()


def test_a_hostile_header_in_a_legacy_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(_payloads(marker)["os.system"], protocol=2))
    with pytest.raises(Esc50Error, match=r"evil\.pth: refusing to load this checkpoint: its "
                       r"pickle calls (posix|nt)\.system"):
        read_torch_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("content, refusal", [
    (b"", r"not a readable PyTorch checkpoint \(the pickle ends early\)"),
    (b"not a checkpoint at all",
     r"not a readable PyTorch checkpoint \(unknown pickle opcode b'n'\)"),
    (b"PK\x03\x04broken", r"damaged zip checkpoint \(no central directory: truncated\?\)"),
])
def test_garbage_files_give_a_clear_error(tmp_path, content, refusal):
    path = tmp_path / "junk.pth"
    path.write_bytes(content)
    with pytest.raises(Esc50Error, match=r"junk\.pth: " + refusal):
        read_torch_checkpoint(path)


_CUT = {"zip": r"damaged zip checkpoint \(no central directory: truncated\?\)",
        "legacy": r"storage \d+ says it holds 525312 elements, more than the rest of the file"}


def test_truncated_checkpoints_are_refused(tmp_path):
    for fmt in FORMATS:
        data = _checkpoint("cnn14", fmt).read_bytes()
        path = tmp_path / f"cut.{fmt}.pth"
        path.write_bytes(data[: len(data) * 2 // 3])
        with pytest.raises(Esc50Error, match=rf"cut\.{fmt}\.pth: {_CUT[fmt]}"):
            read_torch_checkpoint(path)


# --------------------------------------------------------------------------
# Conversion and parity with the reference implementation
# --------------------------------------------------------------------------


@pytest.mark.parametrize("arch", list(ARCHS))
def test_parity_with_the_reference_in_both_formats(arch):
    import keras

    from esc50tf.models import panns

    ref = _reference(arch)
    model = panns.build_reference(arch, widths=ref["widths"], embedding_size=ref["embedding_size"])
    logits_model = keras.Model(model.input, model.get_layer("fc_audioset").output)
    x = ref["waveform"]
    for fmt in FORMATS:
        converted = convert_state_dict(arch, read_torch_checkpoint(_checkpoint(arch, fmt)),
                                       widths=ref["widths"])
        for layer in model.layers:  # scramble first: what passes must come from the file
            if layer.name in converted:
                layer.set_weights([np.full(w.shape, 0.5, "float32") for w in layer.weights])
        load_into(model, converted)
        out = {k: np.asarray(v) for k, v in model(x, training=False).items()}
        logmel = out["logmel"]
        assert logmel.shape == ref["logmel"].shape
        # Every bin, both sides clamped at 80 dB below each clip's peak (float32
        # round-off of near-zero power is dB apart below that). The quiet clip's
        # 0.5 s of digital silence sits at the reference's -100 dB floor, within
        # 80 dB of its peak: compared as is.
        floor = ref["logmel"].max(axis=(1, 2), keepdims=True) - LOGMEL_RANGE_DB
        silent = ref["logmel"] <= -100.0 + 1e-3
        assert silent.any() and (floor[2] < -100.0).all()
        np.testing.assert_allclose(logmel[silent], -100.0, atol=LOGMEL_DB_TOLERANCE)
        clamped = [np.maximum(v, floor) for v in (logmel, ref["logmel"])]
        assert np.max(np.abs(clamped[0] - clamped[1])) < LOGMEL_DB_TOLERANCE
        embedding = ref["embedding"]
        if arch == "cnn14_sed":  # per-segment fc1 in the reference: max over time
            embedding = embedding.max(axis=1)
            assert _relative_error(out["framewise"], ref["framewise"]) < RELATIVE_TOLERANCE
        assert _relative_error(out["embedding"], embedding) < RELATIVE_TOLERANCE
        assert _relative_error(logits_model(x), ref["logits"]) < RELATIVE_TOLERANCE
        assert _relative_error(out["clipwise"], ref["clipwise"]) < RELATIVE_TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(ARCHS))
def test_full_size_parameter_counts_match_the_reference(arch):
    import keras

    from esc50tf import frontend as features
    from esc50tf.models import panns

    model = panns.build_reference(arch)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == REFERENCE_TRAINABLE[arch]
    # Everything but the front end's constants: what the checkpoint provides.
    stored = sum(int(np.prod(w.shape)) for layer in model.layers for w in layer.weights
                 if not isinstance(layer, features.MelSpectrogram))
    assert stored == REFERENCE_STATE[arch]
    del model
    keras.backend.clear_session()


def _state(arch="cnn14"):
    return read_torch_checkpoint(_checkpoint(arch, "zip"))


def test_the_front_end_of_another_architecture_is_refused():
    with pytest.raises(Esc50Error, match=r"melW has shape \(513, 64\).*\(257, 64\)"):
        convert_state_dict("cnn14_16k", _state("cnn14"))
    # Same shape, other Mel range: 32 kHz / 1024 but a 0-16 kHz filterbank.
    from esc50tf import frontend as features

    state = _state("cnn14")
    state["logmel_extractor.melW"] = features.mel_filterbank(32000, 1024, 64, 0.0, 16000.0).T
    with pytest.raises(Esc50Error, match="differs from the cnn14 front end"):
        convert_state_dict("cnn14", state)
    state = _state("cnn14")
    state["logmel_extractor.melW"] = state["logmel_extractor.melW"] + 1e-5
    with pytest.raises(Esc50Error, match="differs"):
        check_frontend("cnn14", state)
    del state["logmel_extractor.melW"]
    with pytest.raises(Esc50Error, match="no logmel_extractor.melW"):
        check_frontend("cnn14", state)


def test_the_stft_window_is_checked_when_present():
    from esc50tf import frontend as features

    state = _state("cnn14")
    hann = features.window_array("hann", 1024)
    # Row 0 of torchlibrosa's real DFT kernel is the window itself (cos 0 = 1).
    state["spectrogram_extractor.stft.conv_real.weight"] = np.tile(hann, (513, 1, 1))
    assert check_frontend("cnn14", state) < 1e-6
    state["spectrogram_extractor.stft.conv_real.weight"] = np.ones((513, 1, 1024), "float32")
    with pytest.raises(Esc50Error, match="not a 1024-point Hann STFT"):
        check_frontend("cnn14", state)


@pytest.fixture(scope="module")
def tiny_cnn14():
    from esc50tf.models import panns

    ref = _reference("cnn14")
    return panns.build_reference("cnn14", widths=ref["widths"], embedding_size=32)


def test_layouts_are_transposed_as_keras_expects():
    state = _state("cnn14")
    converted = convert_state_dict("cnn14", state, widths=(4, 8, 8, 16, 16, 32))
    conv = state["conv_block2.conv1.weight"]  # (O, I, kh, kw)
    np.testing.assert_array_equal(converted["conv_block2_conv1"][0][1, 2, 3, 5], conv[5, 3, 1, 2])
    np.testing.assert_array_equal(converted["fc1"][0], state["fc1.weight"].T)
    np.testing.assert_array_equal(converted["fc1"][1], state["fc1.bias"])
    gamma, beta, mean, var = converted["conv_block3_bn2"]
    np.testing.assert_array_equal(var, state["conv_block3.bn2.running_var"])
    np.testing.assert_array_equal(gamma, state["conv_block3.bn2.weight"])
    assert not any(k.startswith(("logmel", "spectrogram")) for k in converted)
    assert converted.sources["bn0"] == ["bn0.weight", "bn0.bias", "bn0.running_mean",
                                        "bn0.running_var"]


def test_other_widths_are_refused_by_name():
    with pytest.raises(Esc50Error, match=r"conv_block1\.conv1\.weight has 4 output channels"):
        convert_state_dict("cnn14", _state("cnn14"), widths=(64, 128, 256, 512, 1024, 2048))


def test_missing_unexpected_and_misshapen_keys_are_named(tiny_cnn14):
    converted = convert_state_dict("cnn14", _state("cnn14"))
    before = [w.copy() for w in tiny_cnn14.get_layer("conv_block1_conv1").get_weights()]

    missing = type(converted)(converted, sources=converted.sources)
    del missing["conv_block3_bn2"]
    with pytest.raises(Esc50Error, match=r"missing key 'conv_block3\.bn2\.weight'.*conv_block3_bn2"):
        load_into(tiny_cnn14, missing)
    for layer, key in (("fc1", "fc1.weight"), ("fc_audioset", "fc_audioset.weight"),
                       ("bn0", "bn0.weight"), ("conv_block6_conv2", "conv_block6.conv2.weight")):
        partial = type(converted)(converted, sources=converted.sources)
        del partial[layer]
        with pytest.raises(Esc50Error, match=f"missing key {key!r}"):
            load_into(tiny_cnn14, partial)

    extra = type(converted)(converted, sources=dict(converted.sources))
    extra["fc2"] = [np.zeros((32, 8), "float32"), np.zeros(8, "float32")]
    extra.sources["fc2"] = ["fc2.weight", "fc2.bias"]
    with pytest.raises(Esc50Error, match="unexpected key 'fc2.weight'"):
        load_into(tiny_cnn14, extra)

    wrong = type(converted)(converted, sources=converted.sources)
    wrong["fc_audioset"] = [np.zeros((32, 10), "float32"), np.zeros(10, "float32")]
    with pytest.raises(Esc50Error, match=r"fc_audioset\.weight.*\(32, 10\).*\(32, 527\)"):
        load_into(tiny_cnn14, wrong)
    # Nothing was loaded by the failed attempts.
    for a, b in zip(before, tiny_cnn14.get_layer("conv_block1_conv1").get_weights()):
        np.testing.assert_array_equal(a, b)

    # A new head: skip the AudioSet one on both sides.
    loaded = load_into(tiny_cnn14, wrong, skip=("fc_audioset",))
    assert "fc_audioset" not in loaded and "conv_block6_bn2" in loaded


# --------------------------------------------------------------------------
# Weights files, the cache, the catalog
# --------------------------------------------------------------------------


def test_convert_writes_weights_that_know_their_model(tmp_path, tiny_cnn14):
    out = tmp_path / "tiny.weights.npz"
    path, meta = store.convert_checkpoint("cnn14", _checkpoint("cnn14", "legacy"), out,
                                          build=build_reference, log=print)
    assert path == out and out.is_file() and store.sidecar_path(out).is_file()
    digest = hashlib.sha256(_checkpoint("cnn14", "legacy").read_bytes()).hexdigest()
    side = json.loads(store.sidecar_path(out).read_text())
    assert side == meta
    assert meta["model"] == "cnn14" and meta["source"]["sha256"] == digest
    assert meta["source"]["file"] == "cnn14.legacy.pth"
    assert meta["architecture"]["widths"] == [4, 8, 8, 16, 16, 32]
    assert meta["architecture"]["sample_rate"] == 32000
    assert meta["architecture"]["embedding_size"] == 32
    assert meta["converted_at"] and meta["esc50tf_version"]
    # The npz alone holds the same metadata (no pickle needed to read it).
    store.sidecar_path(out).unlink()
    converted, meta_npz = store.load_weights(out)
    assert meta_npz == meta
    assert store.resolve_weights(out)[1] == meta
    reference = convert_state_dict("cnn14", _state("cnn14"))
    assert sorted(converted) == sorted(reference)
    for layer in reference:
        for a, b in zip(converted[layer], reference[layer]):
            np.testing.assert_array_equal(a, b)
    load_into(tiny_cnn14, converted)
    with pytest.raises(Esc50Error, match="already exists"):
        store.convert_checkpoint("cnn14", _checkpoint("cnn14", "zip"), out, build=build_reference)


def test_a_failed_conversion_writes_nothing(tmp_path):
    out = tmp_path / "x.weights.npz"
    with pytest.raises(Esc50Error):
        store.convert_checkpoint("cnn14_16k", _checkpoint("cnn14", "zip"), out,
                                 build=build_reference)
    assert list(tmp_path.iterdir()) == []


def test_weights_and_their_sidecar_are_written_together_or_not_at_all(tmp_path, monkeypatch):
    converted = convert_state_dict("cnn14", _state("cnn14"))
    out = tmp_path / "w.weights.npz"

    def broken(self, *args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C while the sidecar is written

    with monkeypatch.context() as m:
        m.setattr(Path, "write_text", broken)
        with pytest.raises(KeyboardInterrupt):
            store.save_weights(converted, out, {"model": "cnn14"})
    assert list(tmp_path.iterdir()) == []
    store.save_weights(converted, out, {"model": "cnn14"})  # a retry is not "already exists"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.weights.json", "w.weights.npz"]


def test_embed_output_is_whole_or_absent(tmp_path, monkeypatch):
    from esc50tf import embed

    def interrupted(f, **arrays):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)  # esc50tf.io.write_npz(compressed=False)
    with pytest.raises(KeyboardInterrupt):
        embed.write_embeddings(tmp_path / "x.npz", {"a": np.zeros(2)})
    assert list(tmp_path.iterdir()) == []


def test_the_metadata_inside_the_weights_file_is_what_counts(tmp_path):
    out = tmp_path / "w.weights.npz"
    store.save_weights(convert_state_dict("cnn14", _state("cnn14")), out, {"model": "cnn14"})
    side = store.sidecar_path(out)
    side.write_text(json.dumps({**json.loads(side.read_text()), "model": "cnn14_16k"}))
    assert store.resolve_weights(out)[1]["model"] == "cnn14"


def test_resolve_weights_explains_how_to_get_missing_ones(tmp_path):
    with pytest.raises(Esc50Error, match="esc50tf pretrained download cnn14"):
        store.resolve_weights("cnn14", cache_dir=tmp_path)
    with pytest.raises(Esc50Error, match="known: cnn14, cnn14_16k, cnn14_sed"):
        store.resolve_weights("vggish", cache_dir=tmp_path)
    (tmp_path / "bogus.weights.npz").write_bytes(b"nope")
    with pytest.raises(Esc50Error, match="bogus"):
        store.resolve_weights(tmp_path / "bogus.weights.npz")


def test_default_cache_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert store.weights_path("cnn14") == tmp_path / "esc50tf" / "pretrained" / "cnn14.weights.npz"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert store.default_cache_dir() == tmp_path / "home" / ".cache" / "esc50tf"


def test_catalog_lists_the_official_checkpoints():
    # The PANNs files (the EfficientAT ones: tests/test_efficientat.py).
    official = {n: c for n, c in catalog.CHECKPOINTS.items()
                if c.architecture in architectures.ARCHITECTURES}
    assert set(official) == {"cnn14", "cnn14_16k", "cnn14_sed"}
    maps = {name: c.audioset_map for name, c in official.items()}
    assert maps == {"cnn14": 0.431, "cnn14_16k": 0.438, "cnn14_sed": 0.385}
    for c in official.values():
        assert c.url.startswith("https://zenodo.org/records/3987831/files/")
        assert f"mAP%3D{c.audioset_map:.3f}.pth" in c.url
        assert c.file_name in c.url.replace("%3D", "=")
        assert len(c.md5) == 32 and len(c.sha256) == 64 and c.size > 300_000_000
        assert c.licence == "CC BY 4.0"
    assert {c.architecture for c in official.values()} <= set(architectures.ARCHITECTURES)


# --------------------------------------------------------------------------
# Download (file:// and a local HTTP server) and the command line
# --------------------------------------------------------------------------


def _extra_catalog(tmp_path, monkeypatch, source, **overrides):
    entry = dict(name="cnn14_tiny", architecture="cnn14", file_name="cnn14_tiny.pth",
                 url=source.as_uri(), md5=hashlib.md5(source.read_bytes()).hexdigest(),
                 size=source.stat().st_size, widths=[4, 8, 8, 16, 16, 32],
                 note="reduced-width test checkpoint")
    entry.update(overrides)
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps([entry]))
    monkeypatch.setenv(catalog.CATALOG_ENV, str(path))
    return entry


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "esc50tf", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def test_pretrained_list_shows_source_checksum_licence_and_map(tmp_path, monkeypatch):
    _extra_catalog(tmp_path, monkeypatch, _checkpoint("cnn14", "zip"))
    result = _cli("pretrained", "list", "--json", "--cache-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["cnn14"]["md5"] == "541141fa2ee191a88f24a3219fff024e"
    assert rows["cnn14"]["size"] == 327_428_481 and rows["cnn14"]["sha256"].startswith("0dc499e4")
    assert rows["cnn14_tiny"]["sha256"] == "not recorded"
    assert rows["cnn14_sed"]["audioset_map"] == 0.385 and rows["cnn14"]["licence"] == "CC BY 4.0"
    assert rows["cnn14_tiny"]["cached"] is False
    table = _cli("pretrained", "list").stdout
    assert "Cnn14_16k_mAP=0.438.pth" in table and "zenodo.org/records/3987831" in table


def test_download_from_a_file_url_end_to_end(tmp_path, monkeypatch, capsys):
    from esc50tf.cli import main

    source = _checkpoint("cnn14", "zip")
    _extra_catalog(tmp_path, monkeypatch, source)
    cache = tmp_path / "cache"
    assert main(["pretrained", "download", "cnn14_tiny", "--cache-dir", str(cache)]) == 0
    weights = cache / "cnn14_tiny.weights.npz"
    assert capsys.readouterr().out.strip() == str(weights)
    # The entry publishes no sha256: the first verified download's is pinned.
    assert sorted(p.name for p in cache.iterdir()) == ["cnn14_tiny.weights.json",
                                                      "cnn14_tiny.weights.npz", "downloads",
                                                      "pinned_sha256.json"]
    assert list((cache / "downloads").iterdir()) == []  # no .part, checkpoint removed
    path, meta = store.resolve_weights("cnn14_tiny", cache_dir=cache)
    assert path == weights and meta["name"] == "cnn14_tiny" and meta["model"] == "cnn14"
    assert meta["source"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert meta["source"]["url"] == source.as_uri()
    again = _cli("pretrained", "download", "cnn14_tiny", "--cache-dir", str(cache))
    assert again.returncode == 0 and "already in the cache" in again.stderr


@pytest.mark.parametrize("field,wrong", [("md5", "0" * 32), ("sha256", "f" * 64), ("size", 123)])
def test_download_refuses_a_file_with_the_wrong_checksum(tmp_path, monkeypatch, field, wrong):
    _extra_catalog(tmp_path, monkeypatch, _checkpoint("cnn14", "zip"), **{field: wrong})
    cache = tmp_path / "cache"
    result = _cli("pretrained", "download", "cnn14_tiny", "--cache-dir", str(cache))
    assert result.returncode == 1
    assert f"{field} is" in result.stderr and str(wrong) in result.stderr
    assert not (cache / "cnn14_tiny.weights.npz").exists()
    assert list((cache / "downloads").iterdir()) == []


def test_download_refuses_a_hostile_checkpoint_with_a_matching_checksum(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(_payloads(marker)["os.system"]))
    _extra_catalog(tmp_path, monkeypatch, evil)
    cache = tmp_path / "cache"
    result = _cli("pretrained", "download", "cnn14_tiny", "--cache-dir", str(cache))
    assert result.returncode == 1 and "refusing" in result.stderr
    assert not marker.exists() and not (cache / "cnn14_tiny.weights.npz").exists()


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves one file, honouring `Range: bytes=N-` as a resuming client needs."""

    payload = b""
    ranges = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        data, status = self.payload, 200
        header = self.headers.get("Range")
        type(self).ranges.append(header)
        if header and header.startswith("bytes="):
            start = int(header[len("bytes="):].rstrip("-"))
            data, status = data[start:], 206
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_download_resumes_a_partial_file_over_http(tmp_path, monkeypatch):
    source = _checkpoint("cnn14_sed", "legacy")
    data = source.read_bytes()
    _RangeHandler.payload, _RangeHandler.ranges = data, []
    server = http.server.HTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/cnn14_sed.pth"
        _extra_catalog(tmp_path, monkeypatch, source, architecture="cnn14_sed", url=url)
        cache = tmp_path / "cache"
        part = cache / "downloads" / "cnn14_tiny.pth.part"
        part.parent.mkdir(parents=True)
        part.write_bytes(data[:100_000])  # what an interrupted download left
        path, meta = store.download("cnn14_tiny", build=build_reference, cache_dir=cache,
                                    progress=False, log=lambda m: None)
    finally:
        server.shutdown()
    assert _RangeHandler.ranges == ["bytes=100000-"]
    assert meta["source"]["md5"] == hashlib.md5(data).hexdigest()
    assert meta["model"] == "cnn14_sed" and path.is_file() and not part.exists()


@pytest.mark.slow
def test_download_then_train_with_weights_by_name(tiny_esc50, tmp_path, monkeypatch):
    """file:// download into the default cache, then `train --weights NAME --freeze-backbone`:
    the frozen trunk of the trained model holds exactly the checkpoint's weights."""
    import keras

    from esc50tf.cli import main
    from esc50tf.data.build import build_tfrecords
    from esc50tf.data.tfrecords import BuildConfig

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    _extra_catalog(tmp_path, monkeypatch, _checkpoint("cnn14_16k", "legacy"),
                   architecture="cnn14_16k")
    assert main(["pretrained", "download", "cnn14_tiny"]) == 0
    assert (tmp_path / "xdg" / "esc50tf" / "pretrained" / "cnn14_tiny.weights.npz").is_file()

    data = tmp_path / "tfr16k"
    build_tfrecords(tiny_esc50, data, BuildConfig(sample_rate=16000, clip_seconds=1.0,
                                                  shards_per_fold=1),
                    workers=1, progress=False, log=lambda _: None)
    out = tmp_path / "run"
    assert main(["train", "--model", "cnn14_16k", "--weights", "cnn14_tiny", "--freeze-backbone",
                 "--data", str(data), "--out", str(out), "--test-fold", "1", "--epochs", "1",
                 "--batch-size", "8", "--no-export", "--quiet"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["weights"] == "cnn14_tiny"
    trained = keras.models.load_model(next(out.rglob("model.keras")))
    state = read_torch_checkpoint(_checkpoint("cnn14_16k", "legacy"))
    np.testing.assert_array_equal(trained.get_layer("conv_block4_conv2").get_weights()[0],
                                  np.transpose(state["conv_block4.conv2.weight"], (2, 3, 1, 0)))
    np.testing.assert_array_equal(trained.get_layer("conv_block6_bn1").get_weights()[3],
                                  state["conv_block6.bn1.running_var"])
    np.testing.assert_array_equal(trained.get_layer("fc1").get_weights()[0],
                                  state["fc1.weight"].T)


def test_offline_download_names_the_offline_routes_and_claims_no_partial_file(tmp_path,
                                                                              monkeypatch):
    """Nothing listens on the URL's port (as offline): the error claims no `.part` that
    does not exist, and names `--url file://...` and `pretrained convert`."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connections are refused
    _extra_catalog(tmp_path, monkeypatch, _checkpoint("cnn14", "zip"),
                   url=f"http://127.0.0.1:{port}/cnn14_tiny.pth")
    cache = tmp_path / "cache"
    with pytest.raises(Esc50Error) as err:
        store.download("cnn14_tiny", build=build_reference, cache_dir=cache,
                       progress=False, log=lambda m: None)
    msg = str(err.value)
    assert "cannot download" in msg and ".part" not in msg and "resumes" not in msg
    assert "--url file:///path/to/cnn14_tiny.pth" in msg
    assert "esc50tf pretrained convert cnn14 cnn14_tiny.pth --out FILE" in msg
    assert not list((cache / "downloads").glob("*.part"))


def test_failed_download_names_the_partial_file_it_kept(tmp_path, monkeypatch):
    """A download that fails after some bytes arrived says how many are kept, and where."""
    part = tmp_path / "x.pth.part"
    part.write_bytes(b"12345")
    with pytest.raises(Esc50Error, match=r"5 bytes that arrived are kept in .*x\.pth\.part"):
        store._fetch_resumable((tmp_path / "missing.pth").as_uri(), part, progress=False)
