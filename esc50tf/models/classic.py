"""scikit-learn models on fixed features: KNN, linear SVM, random forest, logistic regression.

Three inputs (ModelConfig.classic_features):
- "image": the study's input, a log-Mel spectrogram (dB relative to the
  clip's max) resized to a square image and flattened, then standardised;
- "stats": per-band mean and standard deviation over time of the log-Mel
  and of its MFCC, a compact summary that works much better;
- "embeddings": the fc1 embedding of an AudioSet-pretrained PANNs model
  (`weights`), a linear probe when the model is `svm` or `logreg`.
Features are computed with the same front-end layers as the Keras models, in
the tf.data pipeline, batch by batch.

A fitted pipeline is saved as `model.skops` (skops, no pickle) and loaded only
when every type its schema names is trusted (`load_estimator`); a legacy
`model.pkl` goes through an exact allow-list unpickler.
"""

from __future__ import annotations

import dataclasses
import importlib
import pickle
import re
import warnings
from pathlib import Path

import numpy as np

from esc50tf.errors import Esc50Error
from esc50tf.models.registry import register, register_family

# What `make_featurizer` reads: the input kind, the image's size, the PANNs weights of
# "embeddings".
_INPUT_SETTINGS = ("classic_features", "image_size", "weights")

register_family("classic", "classic", "tab:gray")


@register("knn", "classic", "k-nearest neighbours (k=5) on standardised features",
          task="sklearn", settings=("knn_neighbors",) + _INPUT_SETTINGS)
def build_knn(config, seed=0):
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # Brute force, as scikit-learn picks anyway for more than 15 features: the fitted model
    # is its training matrix, with no KD tree whose indices a saved file could aim elsewhere.
    return make_pipeline(StandardScaler(),
                         KNeighborsClassifier(config.knn_neighbors, algorithm="brute"))


@register("svm", "classic", "linear support-vector machine (C=1) on standardised features",
          task="sklearn", settings=("svm_c",) + _INPUT_SETTINGS)
def build_svm(config, seed=0):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    return make_pipeline(StandardScaler(), SVC(kernel="linear", C=config.svm_c, random_state=seed))


@register("random_forest", "classic", "random forest of 100 trees on standardised features",
          task="sklearn", settings=("n_trees",) + _INPUT_SETTINGS)
def build_random_forest(config, seed=0):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(),
        RandomForestClassifier(config.n_trees, n_jobs=-1, random_state=seed),
    )


@register("logreg", "classic",
          "multinomial logistic regression (C=1) on standardised features; the usual linear probe",
          task="sklearn", settings=("logreg_c",) + _INPUT_SETTINGS)
def build_logreg(config, seed=0):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(),
                         LogisticRegression(C=config.logreg_c, max_iter=2000, random_state=seed))


def make_featurizer(feature_config, model_config):
    """A function `waveforms [b, samples] -> features [b, D]` for the classic models."""
    import tensorflow as tf

    from esc50tf import frontend as feat

    if model_config.classic_features == "embeddings":
        from esc50tf.data.audio import resample
        from esc50tf.models import registry
        from esc50tf.pretrained import architectures

        embedder, arch = registry.build_embedder(model_config.weights)
        rate, have = architectures.get(arch)["sample_rate"], feature_config.sample_rate

        def embeddings(x):
            x = np.asarray(x, np.float32)
            if have != rate:  # the pretrained front end is tied to its own rate
                x = np.stack([resample(w, have, rate) for w in x]).astype(np.float32)
            return tf.convert_to_tensor(embedder(x, training=False))

        return embeddings
    if model_config.classic_features == "image":
        # The study: librosa power_to_db(ref=max) Mel, drawn as a picture.
        mel_cfg = dataclasses.replace(feature_config, kind="mel", ref="max", log="db")
        mel = feat.make_host_featurizer(mel_cfg)
        size = model_config.image_size or 224

        def image(x):
            m = mel(x)[..., None]  # [b, frames, mels, 1]
            m = tf.image.resize(m, (size, size))
            return tf.reshape(m, [tf.shape(m)[0], size * size])

        return image
    mel = feat.make_host_featurizer(dataclasses.replace(feature_config, kind="mel"))
    mfcc = feat.make_host_featurizer(dataclasses.replace(feature_config, kind="mfcc", deltas=0))

    def stats(x):
        m, c = mel(x), mfcc(x)  # [b, frames, mels], [b, frames, n_mfcc]
        return tf.concat([tf.reduce_mean(m, 1), tf.math.reduce_std(m, 1),
                          tf.reduce_mean(c, 1), tf.math.reduce_std(c, 1)], axis=1)

    return stats


def extract(dataset, featurize, progress=False, total=None):
    """Runs `featurize` over a `(waveform, label, metadata)` dataset -> (X, y, filenames).

    `progress`: a bar of `total` clips on stderr (`esc50tf.progress`).
    """
    from esc50tf.progress import bar

    xs, ys, names = [], [], []
    with bar(total=total, desc="features", unit="clip", disable=not progress) as pbar:
        for x, y, meta in dataset:
            xs.append(featurize(x).numpy())
            ys.append(y.numpy())
            names.extend(n.decode() for n in meta["filename"].numpy())
            pbar.update(len(names) - pbar.n)
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys), names


def predict_proba(estimator, X, num_classes):
    """Class scores `[n, num_classes]` summing to 1, for any of the three models.

    SVC without Platt scaling has no `predict_proba`; its decision values go
    through a softmax, which keeps the ranking (and so top-k and argmax).
    """
    classes = estimator.classes_
    if hasattr(estimator, "predict_proba"):
        scores = estimator.predict_proba(X)
    else:
        d = estimator.decision_function(X)
        if d.ndim == 1:  # two classes
            d = np.stack([-d, d], axis=1)
        d = d - d.max(axis=1, keepdims=True)
        scores = np.exp(d) / np.exp(d).sum(axis=1, keepdims=True)
    out = np.zeros((len(X), num_classes), dtype=np.float32)
    out[:, classes] = scores
    return out


class WaveformClassifier:
    """A fitted estimator behind the run's features: waveforms in, class scores out,
    called like a Keras model (`esc50tf.predict`, `models.build.predict_crops`).

    Args:
        estimator: fitted scikit-learn classifier.
        featurize: callable `waveforms [b, num_samples] -> features [b, D]`,
            the run's `classic.make_featurizer`.
        num_samples: int. Clip length the run was trained on.
        num_classes: int.
    """

    def __init__(self, estimator, featurize, num_samples, num_classes):
        self.estimator = estimator
        self.featurize = featurize
        self.num_classes = int(num_classes)
        self.input_shape = (None, int(num_samples))
        self.output_shape = (None, self.num_classes)

    def __call__(self, batch, training=False):
        """Like a Keras model's call, so `predict_crops` takes it (no crops)."""
        return self.predict_on_batch(batch)

    def predict_on_batch(self, batch):
        import tensorflow as tf

        features = np.asarray(self.featurize(tf.constant(batch, tf.float32)))
        return predict_proba(self.estimator, features, self.num_classes)


# --- saving and loading ------------------------------------------------------------------
#
# A split's estimator is saved with skops (`model.skops`: a zip of a JSON schema and .npy
# arrays, no pickle) and loaded only when every type the file names is one skops trusts
# by default (scikit-learn estimators, NumPy and builtin containers) or one of
# TRUSTED_TYPES. The types are read from the schema before anything is imported or
# built, so a file naming builtins.eval or os.system is refused, never run.

MODEL_FILE = "model.skops"
LEGACY_MODEL_FILE = "model.pkl"  # written by esc50tf before model.skops; still read

# The one type beyond skops' defaults that the four pipelines hold (a random forest's
# tree storage). skops leaves it untrusted because scikit-learn indexes its node arrays
# without bounds checks; `_check_pipeline` checks them after loading instead.
TRUSTED_TYPES = ("sklearn.tree._tree.Tree",)


def _pipeline_classes():
    """The exact classes a saved pipeline may hold: the scaler, then one classifier."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    return StandardScaler, (KNeighborsClassifier, SVC, RandomForestClassifier,
                            LogisticRegression)


def saved_model(split_dir):
    """A split folder's saved estimator: `model.skops`, else a legacy `model.pkl`, else None."""
    for name in (MODEL_FILE, LEGACY_MODEL_FILE):
        if (Path(split_dir) / name).is_file():
            return Path(split_dir) / name
    return None


def save_estimator(estimator, path):
    """Writes a fitted pipeline to `path` (`model.skops`) whole or not at all.

    Raises:
        ValueError: the pipeline holds a type `load_estimator` would refuse
            (a model whose types have not been reviewed into TRUSTED_TYPES).
    """
    import skops.io as sio

    from esc50tf.io import atomic_path

    with atomic_path(path) as tmp:
        sio.dump(estimator, tmp)  # written once from skops' buffer (a large SVM: GBs)
        unknown = sorted(set(sio.get_untrusted_types(file=tmp)) - set(TRUSTED_TYPES))
        if unknown:
            raise ValueError(f"{path}: the model holds types esc50tf does not load "
                             f"({', '.join(unknown)}); review them into classic.TRUSTED_TYPES")


def load_estimator(path):
    """Loads a split's fitted pipeline (`model.skops`, or a legacy `model.pkl`).

    Nothing the file names is imported or called unless it is on an exact
    allow-list; a `model.pkl` goes through `_load_legacy_pickle` and warns
    that it should be re-saved.

    Raises:
        Esc50Error: naming the file and the refused type, or the reason it
            is not a fitted esc50tf scikit-learn pipeline.
    """
    path = Path(path)
    if path.suffix == ".pkl":
        estimator = _load_legacy_pickle(path)
    else:
        import skops.io as sio

        try:
            _check_stored(path)
            untrusted = sio.get_untrusted_types(file=path)
        except Esc50Error:
            raise
        except Exception as err:  # noqa: BLE001 - zipfile, json and skops raise many types
            raise Esc50Error(f"{path}: not a scikit-learn model saved by esc50tf "
                             f"({type(err).__name__}: {err})") from None
        refused = sorted(set(untrusted) - set(TRUSTED_TYPES))
        if refused:
            raise Esc50Error(f"{path}: refusing to load: it names {', '.join(refused)}, which "
                             "esc50tf does not trust in a scikit-learn model (nothing was run)")
        try:
            estimator = sio.load(path, trusted=list(TRUSTED_TYPES))
        except Exception as err:  # noqa: BLE001 - building trusted types can raise anything
            raise Esc50Error(f"{path}: not a scikit-learn model saved by esc50tf "
                             f"({type(err).__name__}: {err})") from None
    _check_pipeline(path, estimator)
    return estimator


def _check_stored(path):
    """Refuses a compressed member: skops writes them stored, so nothing expands past the file."""
    import zipfile

    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
                raise Esc50Error(f"{path}: member {info.filename!r} is compressed "
                                 f"({info.file_size:,} bytes from {info.compress_size:,}); "
                                 "esc50tf writes them stored")


def _check_pipeline(path, estimator):
    """What `predict_proba` will run is exactly a scaler and one of the four classifiers,
    fitted, with node and support-vector arrays that stay inside their storage."""
    from sklearn.pipeline import Pipeline

    scaler, classifiers = _pipeline_classes()
    steps = getattr(estimator, "steps", None) if type(estimator) is Pipeline else None
    if (not isinstance(steps, list) or len(steps) != 2
            or not all(isinstance(s, tuple) and len(s) == 2 for s in steps)
            or type(steps[0][1]) is not scaler or type(steps[1][1]) not in classifiers):
        raise Esc50Error(f"{path}: not an esc50tf pipeline (a StandardScaler, then "
                         f"{', '.join(c.__name__ for c in classifiers)}): "
                         f"{type(estimator).__name__}")
    model = steps[1][1]
    if not hasattr(model, "classes_") or not hasattr(steps[0][1], "scale_"):
        raise Esc50Error(f"{path}: not a fitted scikit-learn classifier")
    problem = _unsafe_arrays(model)
    if problem:
        raise Esc50Error(f"{path}: refusing to load: {problem}")


def _unsafe_arrays(model):
    """What is wrong with the arrays scikit-learn's compiled code indexes unchecked, or None."""
    from sklearn.tree import DecisionTreeClassifier
    from sklearn.tree._tree import Tree

    n_features = getattr(model, "n_features_in_", None)
    for i, member in enumerate(getattr(model, "estimators_", [])):
        tree = getattr(member, "tree_", None)
        if type(member) is not DecisionTreeClassifier or type(tree) is not Tree:
            return f"forest member {i} is not a fitted decision tree"
        n = tree.node_count
        left, right, feature = tree.children_left, tree.children_right, tree.feature
        ids = np.arange(n)
        leaf = left == -1
        # Children come after their parent (so every path ends) and inside the tree.
        inside = ((left > ids) & (left < n) & (right > ids) & (right < n)
                  & (feature >= 0) & (feature < tree.n_features))
        if not np.all(np.where(leaf, right == -1, inside)) or tree.n_features != n_features:
            return f"tree {i} has node indices outside its {n} nodes or {n_features} features"
    if hasattr(model, "support_vectors_"):
        # SVC: libsvm takes the number of vectors from support_, splits them by
        # _n_support and reads _dual_coef_, _intercept_ and _probA/B by those counts.
        counts = np.asarray(model._n_support)
        k, sv = len(model.classes_), model.support_vectors_
        pairs = [(0,), (k * (k - 1) // 2,)]
        if (counts.shape != (k,) or counts.min(initial=0) < 0
                or not counts.sum() == len(sv) == len(model.support_)
                or np.shape(model._dual_coef_) != (k - 1, len(sv))
                or np.shape(model._intercept_) != pairs[1]
                or np.shape(model._probA) not in pairs or np.shape(model._probB) not in pairs
                or np.ndim(sv) != 2 or sv.shape[1] != n_features):
            return (f"its SVM's arrays disagree: support-vector counts {counts.tolist()}, "
                    f"{len(sv)} support vectors, {k} classes")
    return None


# --- legacy model.pkl ------------------------------------------------------------------
#
# Unpickling calls whatever a file names, so a model.pkl is read by the pure-Python
# unpickler with every code path that calls or sets something narrowed to what
# `pickle.dump` of the four pipelines writes (protocols 2-5, NumPy 1 and 2 module names):
# - GLOBAL/STACK_GLOBAL: exactly these (module, qualname) pairs; a dotted name
#   (`np._pytesttester.os.mkdir` through a module's attributes) matches none of them;
# - REDUCE: only the NumPy / Tree / bytes rebuilders, through checks of their arguments;
# - NEWOBJ: only the estimator classes, with no arguments (object.__new__);
# - BUILD: only on objects this load made, with the state their class pickles.

_LEGACY_CLASSES = {
    ("sklearn.pipeline", "Pipeline"),
    ("sklearn.preprocessing._data", "StandardScaler"),
    ("sklearn.neighbors._classification", "KNeighborsClassifier"),
    ("sklearn.svm._classes", "SVC"),
    ("sklearn.ensemble._forest", "RandomForestClassifier"),
    ("sklearn.tree._classes", "DecisionTreeClassifier"),
    ("sklearn.linear_model._logistic", "LogisticRegression"),
}
_NUMPY_CORE = ("numpy.core", "numpy._core")  # NumPy 1 and NumPy 2 pickles


class _Refused(pickle.UnpicklingError):
    """Raised inside the legacy unpickler; `_load_legacy_pickle` adds the file name."""


def _legacy_dtype(spec, align=False, copy=True):
    # Always a copy: the BUILD that follows must never reach NumPy's shared dtypes. "V64"
    # is a tree's node record, which BUILD must then make exactly sklearn's NODE_DTYPE.
    if not (isinstance(spec, str) and re.fullmatch(r"[biufcO]\d{1,2}|V\d{1,3}", spec)):
        raise _Refused(f"numpy.dtype({spec!r}): only numbers, objects and tree nodes")
    return np.dtype(spec, bool(align), True)


def _dtype_state_ok(dtype, state):
    """Whether BUILD's `state` leaves `dtype` a plain number (any byte order), object or node."""
    from sklearn.tree._tree import NODE_DTYPE

    if dtype.kind == "V":
        return dtype.itemsize == NODE_DTYPE.itemsize and state == NODE_DTYPE.__reduce__()[2]
    own = dtype.__reduce__()[2]
    return (isinstance(state, tuple) and len(state) == len(own) and state[1] in ("<", ">", "|", "=")
            and state[:1] + state[2:] == own[:1] + own[2:])


def _legacy_reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray or shape != (0,) or dtype != b"b":
        raise _Refused("numpy _reconstruct other than the empty ndarray NumPy pickles")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _legacy_scalar(dtype, data=None):
    if (not isinstance(dtype, np.dtype) or dtype.kind == "O" or not isinstance(data, bytes)
            or len(data) != dtype.itemsize):
        raise _Refused(f"numpy scalar of {dtype} from {type(data).__name__} data")
    return np.frombuffer(data, dtype)[0]


def _legacy_frombuffer(buffer, dtype, shape, order):
    if not isinstance(dtype, np.dtype) or dtype.kind == "O" or order not in ("C", "F"):
        raise _Refused(f"numpy _frombuffer of {dtype!r}")
    return np.frombuffer(buffer, dtype).reshape(shape, order=order)


def _legacy_encode(text, encoding):
    # Protocol 2 writes bytes as _codecs.encode(str, "latin1").
    if not isinstance(text, str) or encoding != "latin1":
        raise _Refused(f"_codecs.encode with {encoding!r}")
    return text.encode("latin1")


def _legacy_bytes(*args):
    if args:  # protocol 2 writes b"" as bytes()
        raise _Refused("bytes() with arguments")
    return b""


def _legacy_tree(n_features, n_classes, n_outputs):
    from sklearn.tree._tree import Tree

    if (not isinstance(n_features, int) or not isinstance(n_outputs, int)
            or not isinstance(n_classes, np.ndarray) or n_classes.shape != (n_outputs,)
            or n_classes.dtype.kind != "i"):
        raise _Refused("sklearn Tree with inconsistent sizes")
    return Tree(n_features, n_classes, n_outputs)


_LEGACY_CALLS = {
    ("numpy", "dtype"): _legacy_dtype,
    **{(f"{core}.multiarray", "_reconstruct"): _legacy_reconstruct for core in _NUMPY_CORE},
    **{(f"{core}.multiarray", "scalar"): _legacy_scalar for core in _NUMPY_CORE},
    **{(f"{core}.numeric", "_frombuffer"): _legacy_frombuffer for core in _NUMPY_CORE},
    ("_codecs", "encode"): _legacy_encode,
    ("__builtin__", "bytes"): _legacy_bytes,
    ("sklearn.tree._tree", "Tree"): _legacy_tree,
}


class _LegacyUnpickler(pickle._Unpickler):
    """The allow-list unpickler of `model.pkl` (see the comment above)."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file):
        super().__init__(file)
        self._classes = []  # the estimator classes this file named
        self._made = {}  # id -> object, for what this load built: BUILD may set their state

    def find_class(self, module, name):
        if (module, name) in _LEGACY_CALLS:
            return _LEGACY_CALLS[module, name]
        if (module, name) in _LEGACY_CLASSES:
            cls = getattr(importlib.import_module(module), name)
            self._classes.append(cls)
            return cls
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray  # only as _reconstruct's argument: not callable here
        raise _Refused(f"its pickle names {module}.{name}, which no esc50tf model holds")

    def _keep(self, obj):
        self._made[id(obj)] = obj
        self.append(obj)

    def load_reduce(self):
        args = self.stack.pop()
        func = self.stack[-1]
        if not any(func is f for f in _LEGACY_CALLS.values()):
            raise _Refused(f"its pickle calls {getattr(func, '__name__', type(func).__name__)}")
        self.stack.pop()
        self._keep(func(*args))

    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        if cls not in self._classes or args:
            raise _Refused(f"its pickle makes a {getattr(cls, '__name__', type(cls).__name__)} "
                           f"with arguments {args!r:.60}")
        self._keep(cls.__new__(cls))

    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_refused(self):
        raise _Refused("its pickle builds objects with INST/OBJ/NEWOBJ_EX")

    for _op in (pickle.INST, pickle.OBJ, pickle.NEWOBJ_EX):
        dispatch[_op[0]] = load_refused
    del _op

    def load_build(self):
        inst, state = self.stack[-2:]
        if id(inst) not in self._made:
            raise _Refused(f"its pickle sets the state of a {type(inst).__name__} it did not make")
        if isinstance(inst, np.dtype):
            if not _dtype_state_ok(inst, state):
                raise _Refused(f"its pickle sets numpy dtype state {state!r:.80}")
        elif isinstance(inst, np.ndarray):
            if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[2], np.dtype)
                    and id(state[2]) in self._made):
                raise _Refused("its pickle sets a numpy array's state from foreign parts")
        elif not (isinstance(state, dict) and all(isinstance(k, str) for k in state)):
            raise _Refused(f"its pickle sets a {type(inst).__name__}'s state from "
                           f"{type(state).__name__}")
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build


def _load_legacy_pickle(path):
    """A `model.pkl` of an older esc50tf, through `_LegacyUnpickler`; warns to re-save it."""
    try:
        with open(path, "rb") as f:
            estimator = _LegacyUnpickler(f).load()
    except _Refused as err:
        raise Esc50Error(f"{path}: refusing to load: {err} (nothing was run)") from None
    except Exception as err:  # noqa: BLE001 - a malformed pickle raises many types
        raise Esc50Error(f"{path}: not a scikit-learn model saved by esc50tf "
                         f"({type(err).__name__}: {err})") from None
    warnings.warn(f"{path}: a model.pkl from an older esc50tf, read through an allow-list; "
                  f"`esc50tf evaluate RUN` re-saves each split as {MODEL_FILE} (then delete "
                  "the model.pkl files)", UserWarning, stacklevel=3)
    return estimator
