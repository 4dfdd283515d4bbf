"""Saving and loading the scikit-learn models (`esc50tf.models.classic`): model.skops
written by skops and read against an exact list of types, legacy model.pkl read through
an allow-list unpickler, and files made to run code, which must be refused by name with
nothing run.

Hostile pickles are written opcode by opcode (the way an attacker writes them: the
`pickle` module can only write what it can import); each one that should run code aims at
a canary folder, and every such payload is first shown to work with plain `pickle`.
"""

import importlib
import io
import json
import pickle
import types
import warnings
import zipfile

import numpy as np
import pytest
from conftest import skops_call, write_skops

from esc50tf import models
from esc50tf.errors import Esc50Error
from esc50tf.models import classic
from esc50tf.models.config import ModelConfig

CLASSIC = ("knn", "svm", "random_forest", "logreg")


def _fitted(name, n_features=12, classes=3):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, n_features)).astype(np.float32)
    y = np.arange(30) % classes
    x[:, 0] += 3 * y  # learnable
    est = models.get(name).builder(ModelConfig(name=name, n_trees=3), seed=0)
    return est.fit(x, y), x


@pytest.fixture(scope="module")
def forest():
    return _fitted("random_forest")


# --- model.skops -------------------------------------------------------------------------


@pytest.mark.parametrize("name", CLASSIC)
def test_every_classic_model_round_trips_through_skops(name, tmp_path):
    est, x = _fitted(name)
    path = tmp_path / classic.MODEL_FILE
    classic.save_estimator(est, path)
    assert zipfile.is_zipfile(path) and not list(tmp_path.glob(".*"))  # no temporary left
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a model.skops loads without the re-save warning
        again = classic.load_estimator(path)
    np.testing.assert_array_equal(classic.predict_proba(again, x, 3),
                                  classic.predict_proba(est, x, 3))


def _kd_tree_knn():
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.random.default_rng(0).normal(size=(20, 3))
    kd = make_pipeline(StandardScaler(), KNeighborsClassifier(3, algorithm="kd_tree"))
    return kd.fit(x, np.arange(20) % 2)


def test_saving_refuses_a_model_the_loader_would_refuse(tmp_path):
    with pytest.raises(ValueError, match=r"sklearn\.neighbors\._kd_tree\.KDTree"):
        classic.save_estimator(_kd_tree_knn(), tmp_path / "m.skops")
    assert not list(tmp_path.iterdir())


def test_the_knn_models_search_by_brute_force():
    est, _ = _fitted("knn", n_features=3)  # "auto" would pick a KD tree at 3 features
    assert est.steps[1][1]._fit_method == "brute"


@pytest.mark.parametrize("module, name, make_args", [
    ("builtins", "eval", lambda c: (f"__import__('os').mkdir({str(c)!r})",)),
    ("os", "system", lambda c: (f"mkdir '{c}'",)),
    ("os", "mkdir", lambda c: (str(c),)),
    ("subprocess", "getoutput", lambda c: (f"mkdir '{c}'",)),
])
def test_a_skops_file_naming_an_untrusted_callable_is_refused_by_name(tmp_path, module, name,
                                                                      make_args):
    import skops.io as sio

    canary = tmp_path / "canary"
    path = write_skops(tmp_path / "hostile.skops", skops_call(module, name, *make_args(canary)))
    # The payload is real: skops told to trust the name runs it.
    sio.load(path, trusted=[f"{module}.{name}"])
    assert canary.is_dir()
    canary.rmdir()
    with pytest.raises(Esc50Error) as err:
        classic.load_estimator(path)
    assert str(err.value) == (f"{path}: refusing to load: it names {module}.{name}, which "
                              "esc50tf does not trust in a scikit-learn model (nothing was run)")
    assert not canary.exists()


def test_a_skops_file_naming_a_function_is_refused_by_name(tmp_path):
    # A classifier whose attribute is os.system (a FunctionNode), inside a real pipeline.
    est, _ = _fitted("logreg")
    classic.save_estimator(est, tmp_path / "real.skops")
    with zipfile.ZipFile(tmp_path / "real.skops") as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    schema = json.loads(members["schema.json"])
    text = json.dumps(schema).replace(
        '"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode", '
        '"content": "\\"lbfgs\\""',
        '"__class__": "system", "__module__": "os", "__loader__": "FunctionNode"', 1)
    assert text != json.dumps(schema)
    path = tmp_path / "model.skops"
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, text if n == "schema.json" else data)
    with pytest.raises(Esc50Error, match=r"refusing to load: it names os\.system, which"):
        classic.load_estimator(path)


def test_a_trusted_estimator_that_is_not_an_esc50tf_pipeline_is_refused(tmp_path):
    from sklearn.preprocessing import FunctionTransformer

    path = tmp_path / "model.skops"
    import skops.io as sio

    path.write_bytes(sio.dumps(FunctionTransformer()))  # trusted by skops, not ours
    with pytest.raises(Esc50Error, match=r"not an esc50tf pipeline \(a StandardScaler, then "
                                         r"KNeighborsClassifier.*\): FunctionTransformer"):
        classic.load_estimator(path)


def test_an_unfitted_pipeline_is_refused(tmp_path):
    import skops.io as sio

    path = tmp_path / "model.skops"
    path.write_bytes(sio.dumps(models.get("svm").builder(ModelConfig(name="svm"))))
    with pytest.raises(Esc50Error, match="not a fitted scikit-learn classifier"):
        classic.load_estimator(path)


def test_a_compressed_skops_member_is_refused_before_it_is_read(tmp_path):
    path = write_skops(tmp_path / "hostile.skops", {"pad": "0" * 100_000},
                       compression=zipfile.ZIP_DEFLATED)
    with pytest.raises(Esc50Error, match=r"member 'schema\.json' is compressed \([\d,]+ bytes "
                                         r"from [\d,]+\); esc50tf writes them stored"):
        classic.load_estimator(path)


@pytest.mark.parametrize("content", [b"not a zip", b""])
def test_a_file_that_is_not_a_skops_zip_names_itself(tmp_path, content):
    path = tmp_path / "model.skops"
    path.write_bytes(content)
    with pytest.raises(Esc50Error, match=r"model\.skops: not a scikit-learn model saved by "
                                         r"esc50tf \(BadZipFile"):
        classic.load_estimator(path)


@pytest.mark.parametrize("root, error", [
    # Trusted types only, but a tree skops cannot read (a tuple with a dict as content) ...
    ({"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
      "content": {"a": 1}}, "AttributeError"),
    # ... or cannot build (an SVC whose attributes are the number 5).
    ({"__class__": "SVC", "__module__": "sklearn.svm._classes", "__loader__": "ObjectNode",
      "content": {"__class__": "int", "__module__": "builtins", "__loader__": "JsonNode",
                  "content": "5", "is_json": True}}, "AttributeError"),
])
def test_a_skops_file_that_fails_to_read_or_build_names_itself(tmp_path, root, error):
    path = write_skops(tmp_path / "hostile.skops", root)
    with pytest.raises(Esc50Error, match=rf"hostile\.skops: not a scikit-learn model saved by "
                                         rf"esc50tf \({error}: "):
        classic.load_estimator(path)


def _aim_tree(est, node_field, value):
    """Points one node array entry of the forest's first tree at `value`, in place."""
    getattr(est.steps[1][1].estimators_[0].tree_, node_field)[0] = value
    return est


@pytest.mark.parametrize("field, value", [("children_left", 10**6), ("children_right", 0),
                                          ("feature", 99)])
def test_a_forest_whose_nodes_point_outside_the_tree_is_refused(tmp_path, field, value):
    import skops.io as sio

    est, _ = _fitted("random_forest")
    path = tmp_path / "model.skops"
    path.write_bytes(sio.dumps(_aim_tree(est, field, value)))
    with pytest.raises(Esc50Error, match=r"refusing to load: tree 0 has node indices outside "
                                         r"its \d+ nodes or 12 features"):
        classic.load_estimator(path)


@pytest.mark.parametrize("attribute, change", [
    ("_n_support", lambda a: a + np.array([5, 0, 0], a.dtype)),  # more vectors than stored
    ("support_", lambda a: np.concatenate([a, a])),  # libsvm's vector count
    ("_dual_coef_", lambda a: a[:, :3]),
    ("_intercept_", lambda a: a[:1]),
    ("_probA", lambda a: np.zeros(1)),
])
def test_an_svm_whose_arrays_disagree_is_refused(tmp_path, attribute, change):
    import skops.io as sio

    est, _ = _fitted("svm")
    svc = est.steps[1][1]
    setattr(svc, attribute, change(getattr(svc, attribute)))
    path = tmp_path / "model.skops"
    path.write_bytes(sio.dumps(est))
    with pytest.raises(Esc50Error, match=r"refusing to load: its SVM's arrays disagree: "
                                         r"support-vector counts \[\d+, \d+, \d+\], \d+ "
                                         r"support vectors, 3 classes"):
        classic.load_estimator(path)


# --- legacy model.pkl --------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("name", CLASSIC)
def test_a_legacy_model_pkl_still_loads_and_asks_to_be_re_saved(tmp_path, name, protocol):
    est, x = _fitted(name)
    path = tmp_path / classic.LEGACY_MODEL_FILE
    path.write_bytes(pickle.dumps(est, protocol=protocol))
    with pytest.warns(UserWarning, match=r"model\.pkl: a model\.pkl from an older esc50tf, "
                                         r"read through an allow-list; `esc50tf evaluate RUN` "
                                         r"re-saves each split as model\.skops"):
        again = classic.load_estimator(path)
    np.testing.assert_array_equal(classic.predict_proba(again, x, 3),
                                  classic.predict_proba(est, x, 3))


def test_a_legacy_knn_with_a_kd_tree_is_refused(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(_kd_tree_knn()))
    # (a KD tree pickles through sklearn.neighbors._kd_tree.newObj)
    with pytest.raises(Esc50Error, match=r"its pickle names sklearn\.neighbors\._kd_tree\."
                                         r"newObj, which no esc50tf model holds"):
        classic.load_estimator(path)


def test_a_numpy_1_pickle_still_loads(tmp_path):
    # NumPy 1 wrote numpy.core.*; the same allow-list entries under that name.
    est, x = _fitted("logreg")
    data = pickle.dumps(est, protocol=2).replace(b"cnumpy._core.multiarray\n",
                                                 b"cnumpy.core.multiarray\n")
    assert b"cnumpy.core.multiarray\n_reconstruct" in data
    path = tmp_path / "model.pkl"
    path.write_bytes(data)
    with pytest.warns(UserWarning):
        again = classic.load_estimator(path)
    np.testing.assert_array_equal(again.predict(x), est.predict(x))


# Hostile pickles, opcode by opcode.

def _string(text, protocol):
    raw = text.encode()
    return (b"\x8c" + bytes([len(raw)]) + raw) if protocol >= 4 else \
        (b"X" + len(raw).to_bytes(4, "little") + raw)


def _global(module, name, protocol):
    if protocol >= 4:
        return _string(module, 4) + _string(name, 4) + b"\x93"  # STACK_GLOBAL
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"  # GLOBAL


def _call(module, name, args, protocol):
    """A pickle that calls `module.name(*args)` (REDUCE); args are str, int or None."""
    def arg(a):
        if a is None:
            return b"N"
        if isinstance(a, int):
            return b"\x8a" + bytes([8]) + a.to_bytes(8, "little", signed=True)  # LONG1
        return _string(a, protocol)
    body = b"".join(arg(a) for a in args)
    return (b"\x80" + bytes([protocol]) + _global(module, name, protocol) + b"(" + body
            + b"tR.")  # MARK args TUPLE REDUCE STOP


def _dotted_path(module_name, target=("os", "mkdir"), depth=3):
    """An attribute path from `module_name` to os.mkdir through modules, or None."""
    start = importlib.import_module(module_name.replace("__builtin__", "builtins"))
    queue, seen = [(start, [])], {id(start)}
    while queue:
        mod, path = queue.pop(0)
        if mod.__name__ == target[0]:
            return ".".join(path + [target[1]])
        if len(path) < depth:
            names = set(vars(mod))
            # NumPy 2's numpy.core.* are shims forwarding every attribute to numpy._core.*.
            alias = mod.__name__.replace("numpy.core", "numpy._core")
            if alias != mod.__name__:
                names |= set(vars(importlib.import_module(alias)))
            for attr in sorted(names):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)  # the shims
                    child = getattr(mod, attr, None)
                if isinstance(child, types.ModuleType) and id(child) not in seen:
                    seen.add(id(child))
                    queue.append((child, path + [attr]))
    return None


_ALLOWED_MODULES = sorted({m for m, _ in classic._LEGACY_CLASSES | set(classic._LEGACY_CALLS)}
                          | {"numpy"})


def _load_refused(tmp_path, data, message, canary=None):
    path = tmp_path / "model.pkl"
    path.write_bytes(data)
    with pytest.raises(Esc50Error) as err:
        classic.load_estimator(path)
    assert str(err.value) == f"{path}: refusing to load: {message} (nothing was run)"
    if canary is not None:
        assert not canary.exists()


def _assert_live(data, canary):
    """Plain pickle runs the payload (so the refusal is what stops it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy.core's deprecation shim, for one
        pickle.loads(data)
    assert canary.is_dir()
    canary.rmdir()


def test_every_allowed_module_but_the_builtins_reaches_os():
    # The dotted-name attack needs a path; the test below must not be an empty loop.
    reach = {m: _dotted_path(m) for m in _ALLOWED_MODULES}
    assert {m for m, p in reach.items() if p is None} <= {"_codecs", "__builtin__"}


@pytest.mark.parametrize("module", [m for m in _ALLOWED_MODULES if _dotted_path(m)])
def test_a_dotted_name_through_an_allowed_module_is_refused(tmp_path, module):
    canary = tmp_path / "canary"
    dotted = _dotted_path(module)
    data = _call(module, dotted, [str(canary)], protocol=4)
    _assert_live(data, canary)
    _load_refused(tmp_path, data, f"its pickle names {module}.{dotted}, which no esc50tf "
                  "model holds", canary)


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("module, name, args", [
    ("posix", "system", lambda c: [f"mkdir '{c}'"]),
    ("os", "system", lambda c: [f"mkdir '{c}'"]),
    ("os", "mkdir", lambda c: [str(c)]),
    ("builtins", "eval", lambda c: [f"__import__('os').mkdir({str(c)!r})"]),
    ("builtins", "exec", lambda c: [f"__import__('os').mkdir({str(c)!r})"]),
    ("subprocess", "getoutput", lambda c: [f"mkdir '{c}'"]),
])
def test_a_global_outside_the_allow_list_is_refused_before_it_is_looked_up(
        tmp_path, monkeypatch, protocol, module, name, args):
    canary = tmp_path / "canary"
    data = _call(module, name, args(canary), protocol)
    _assert_live(data, canary)
    looked_up = []
    monkeypatch.setattr(importlib, "import_module", lambda m, *a: looked_up.append(m))
    _load_refused(tmp_path, data, f"its pickle names {module}.{name}, which no esc50tf "
                  "model holds", canary)
    assert looked_up == []


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("module, name, args, message", [
    # Classes are allowed to be made empty (NEWOBJ), never called with arguments.
    ("sklearn.pipeline", "Pipeline", ["x"], "its pickle calls Pipeline"),
    ("sklearn.svm._classes", "SVC", [1], "its pickle calls SVC"),
    ("numpy", "ndarray", [2**40], "its pickle calls ndarray"),
    # The rebuilders NumPy pickles with, with arguments NumPy never writes.
    ("numpy", "dtype", ["i8,f8"], "numpy.dtype('i8,f8'): only numbers, objects and tree nodes"),
    ("numpy", "dtype", ["U9"], "numpy.dtype('U9'): only numbers, objects and tree nodes"),
    ("numpy._core.multiarray", "_reconstruct", [None, None, None],
     "numpy _reconstruct other than the empty ndarray NumPy pickles"),
    ("numpy.core.multiarray", "scalar", [None, "abc"], "numpy scalar of None from str data"),
    ("numpy._core.numeric", "_frombuffer", [None, None, None, None],
     "numpy _frombuffer of None"),
    ("_codecs", "encode", ["x", "rot13"], "_codecs.encode with 'rot13'"),
    ("__builtin__", "bytes", [10**10], "bytes() with arguments"),  # 10 GB of zeros
    ("sklearn.tree._tree", "Tree", [3, None, 10**9], "sklearn Tree with inconsistent sizes"),
])
def test_an_allowed_callable_with_hostile_arguments_is_refused(tmp_path, protocol, module,
                                                               name, args, message):
    _load_refused(tmp_path, _call(module, name, args, protocol), message)


def _made(protocol, *ops):
    return b"\x80" + bytes([protocol]) + b"".join(ops) + b"."


def test_newobj_with_arguments_or_of_a_foreign_class_is_refused(tmp_path):
    pipeline = _global("sklearn.pipeline", "Pipeline", 2)
    _load_refused(tmp_path, _made(2, pipeline, b"(K\x01t\x81"),  # NEWOBJ(Pipeline, (1,))
                  "its pickle makes a Pipeline with arguments (1,)")
    ndarray = _global("numpy", "ndarray", 2)
    _load_refused(tmp_path, _made(2, ndarray, b")\x81"),  # NEWOBJ(ndarray, ())
                  "its pickle makes a ndarray with arguments ()")


@pytest.mark.parametrize("op", [b"(" + _global("sklearn.pipeline", "Pipeline", 2) + b"o",
                                b"(isklearn.pipeline\nPipeline\n"])
def test_obj_and_inst_opcodes_are_refused(tmp_path, op):
    _load_refused(tmp_path, _made(2, op), "its pickle builds objects with INST/OBJ/NEWOBJ_EX")


def test_build_on_an_object_the_file_did_not_make_is_refused(tmp_path):
    # BUILD on the class itself (plain pickle would call Pipeline.__setstate__ on it).
    data = _made(2, _global("sklearn.pipeline", "Pipeline", 2), b"}b")
    _load_refused(tmp_path, data, "its pickle sets the state of a ABCMeta it did not make")


def test_build_with_a_foreign_state_on_an_estimator_is_refused(tmp_path):
    data = _made(2, _global("sklearn.svm._classes", "SVC", 2), b")\x81", b"]b")
    _load_refused(tmp_path, data, "its pickle sets a SVC's state from list")


class _Reduces:
    """Pickles as `func(*args)` followed by BUILD with `state`, as NumPy's own objects do."""

    def __init__(self, func, args, state):
        self.reduced = (func, args, state)

    def __reduce__(self):
        return self.reduced


def test_build_that_rewrites_the_tree_node_layout_is_refused(tmp_path):
    # A tree's node record with threshold moved onto left_child: floats read as indices.
    from sklearn.tree._tree import NODE_DTYPE

    state = list(NODE_DTYPE.__reduce__()[2])
    state[4] = {**state[4], "threshold": (np.dtype("f8"), 0)}
    data = pickle.dumps(_Reduces(np.dtype, ("V64", False, True), tuple(state)), protocol=2)
    _load_refused(tmp_path, data, f"its pickle sets numpy dtype state {tuple(state)!r:.80}")


def test_build_of_an_array_from_a_foreign_dtype_is_refused(tmp_path):
    data = pickle.dumps(_Reduces(np._core.multiarray._reconstruct, (np.ndarray, (0,), b"b"),
                                 (1, (1,), "f8", False, b"\0" * 8)), protocol=4)
    _load_refused(tmp_path, data, "its pickle sets a numpy array's state from foreign parts")


def test_build_on_the_shared_float64_dtype_reaches_only_a_copy(tmp_path):
    # dtype("f8", False, False) is NumPy's process-wide float64; the loader copies it.
    state = (3, ">", None, None, None, -1, -1, 0)
    data = pickle.dumps(_Reduces(np.dtype, ("f8", False, False), state), protocol=2)
    path = tmp_path / "model.pkl"
    path.write_bytes(data)
    with pytest.warns(UserWarning), pytest.raises(Esc50Error, match=r"not an esc50tf pipeline "
                                                                    r".*\): Float64DType"):
        classic.load_estimator(path)
    assert np.dtype("f8").byteorder == "="


@pytest.mark.parametrize("data, reason", [
    (b"\x80\x02K\x01.", "not an esc50tf pipeline (a StandardScaler, then KNeighborsClassifier, "
                        "SVC, RandomForestClassifier, LogisticRegression): int"),
    (b"\x80\x02}.", "not an esc50tf pipeline (a StandardScaler, then KNeighborsClassifier, "
                    "SVC, RandomForestClassifier, LogisticRegression): dict"),
])
def test_a_pickle_of_something_else_is_not_a_pipeline(tmp_path, data, reason):
    path = tmp_path / "model.pkl"
    path.write_bytes(data)
    with pytest.warns(UserWarning), pytest.raises(Esc50Error) as err:
        classic.load_estimator(path)
    assert str(err.value) == f"{path}: {reason}"


def test_a_truncated_pickle_names_the_file(tmp_path, forest):
    est, _ = forest
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(est)[:200])
    with pytest.raises(Esc50Error, match=r"model\.pkl: not a scikit-learn model saved by "
                                         r"esc50tf \(\w+"):
        classic.load_estimator(path)


def test_a_legacy_forest_with_hostile_nodes_is_refused(tmp_path):
    est, _ = _fitted("random_forest")
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(_aim_tree(est, "children_right", 10**6), protocol=4))
    with pytest.warns(UserWarning), pytest.raises(Esc50Error, match="tree 0 has node indices"):
        classic.load_estimator(path)


def test_saved_model_prefers_skops_over_the_legacy_pickle(tmp_path):
    assert classic.saved_model(tmp_path) is None
    (tmp_path / "model.pkl").write_bytes(b"")
    assert classic.saved_model(tmp_path) == tmp_path / "model.pkl"
    (tmp_path / "model.skops").write_bytes(b"")
    assert classic.saved_model(tmp_path) == tmp_path / "model.skops"


def test_a_forest_member_that_is_not_a_tree_is_refused(tmp_path):
    import skops.io as sio
    from sklearn.preprocessing import StandardScaler

    est, _ = _fitted("random_forest")
    est.steps[1][1].estimators_[1] = StandardScaler()
    path = tmp_path / "model.skops"
    path.write_bytes(sio.dumps(est))
    with pytest.raises(Esc50Error, match="refusing to load: forest member 1 is not a fitted "
                                         "decision tree"):
        classic.load_estimator(path)


def test_two_class_svm_scores_are_a_softmax_of_its_decision(tmp_path):
    est, x = _fitted("svm", classes=2)
    probs = classic.predict_proba(est, x, 3)  # a third class the split never saw: 0
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    assert not probs[:, 2].any()
    np.testing.assert_array_equal(probs.argmax(axis=1), est.predict(x))
