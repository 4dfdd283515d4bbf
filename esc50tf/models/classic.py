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
"""

from __future__ import annotations

import dataclasses

import numpy as np

from esc50tf.models.registry import register


@register("knn", "classic", "k-nearest neighbours (k=5) on standardised features", keras=False)
def build_knn(config, seed=0):
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), KNeighborsClassifier(config.knn_neighbors))


@register("svm", "classic", "linear support-vector machine (C=1) on standardised features", keras=False)
def build_svm(config, seed=0):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    return make_pipeline(StandardScaler(), SVC(kernel="linear", C=config.svm_c, random_state=seed))


@register("random_forest", "classic", "random forest of 100 trees on standardised features", keras=False)
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
          keras=False)
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
        from esc50tf.embed import load_embedder
        from esc50tf.pretrained import architectures

        embedder, arch = load_embedder(model_config.weights)
        rate, have = architectures.get(arch)["sample_rate"], feature_config.sample_rate

        def embeddings(x):
            x = np.asarray(x, np.float32)
            if have != rate:  # the PANNs front end is tied to its own rate
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


def extract(dataset, featurize):
    """Runs `featurize` over a `(waveform, label, metadata)` dataset -> (X, y, filenames)."""
    xs, ys, names = [], [], []
    for x, y, meta in dataset:
        xs.append(featurize(x).numpy())
        ys.append(y.numpy())
        names.extend(n.decode() for n in meta["filename"].numpy())
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


# What a fitted pipeline of the classic models pickles to. A model.pkl naming anything
# else (os.system, subprocess...) is refused instead of run: unpickling executes the
# callables a file names, so an untrusted file must not pick them.
_SAFE_MODULES = ("sklearn.ensemble.", "sklearn.linear_model.", "sklearn.metrics._dist_metrics",
                 "sklearn.neighbors.",
                 "sklearn.pipeline", "sklearn.preprocessing.", "sklearn.svm.", "sklearn.tree.",
                 "numpy.core.multiarray", "numpy._core.multiarray", "numpy.random.")
_SAFE_EXACT = {("numpy", "dtype"), ("numpy", "ndarray")}


def load_estimator(path):
    """Loads a `model.pkl` written by `esc50tf train`, refusing foreign code.

    Raises:
        Esc50Error: unreadable, or the pickle names something other than the
            scikit-learn and NumPy classes the three models are made of.
    """
    import pickle

    from esc50tf.errors import Esc50Error

    class _Restricted(pickle.Unpickler):
        def find_class(self, module, name):
            if (module + ".").startswith(_SAFE_MODULES) or (module, name) in _SAFE_EXACT:
                return super().find_class(module, name)
            raise pickle.UnpicklingError(f"refusing {module}.{name}")

    try:
        with open(path, "rb") as f:
            estimator = _Restricted(f).load()
    except Exception as err:  # noqa: BLE001 - pickle raises many types
        raise Esc50Error(f"{path}: not a scikit-learn model saved by esc50tf ({err})") from None
    if not hasattr(estimator, "classes_"):
        raise Esc50Error(f"{path}: not a fitted scikit-learn classifier")
    return estimator

