"""`esc50tf predict`: class probabilities for new audio files from a saved model.

MODEL is a run folder (every split's `model.keras`, or for a scikit-learn
run every `model.skops`, or legacy `model.pkl`, with the run's features, is
loaded and their probabilities averaged, a k-fold ensemble), one `.keras`
file, or an export of `esc50tf export` (its folder, `.tflite` file or
SavedModel folder, run by LiteRT or TensorFlow alone). Any sample rate, length and channel count works: files are mixed to
mono, resampled to the model's rate, zero-padded when short, and cut into
half-overlapping windows of the model's length when long, whose
probabilities are averaged. A model trained on random crops is also averaged
over its evenly spaced test crops within each window
(`esc50tf.models.build.predict_crops`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from esc50tf.errors import Esc50Error


class Predictor:
    """Loaded model(s) plus what is needed to feed them.

    Args:
        models: list of keras.Model taking `[batch, num_samples]` waveforms.
        class_names: list of str, in label order.
        sample_rate: int. The rate the models were trained at.
    """

    def __init__(self, models, class_names, sample_rate):
        self.models = models
        self.class_names = class_names
        self.sample_rate = int(sample_rate)
        self.num_samples = int(models[0].input_shape[-1])

    def windows(self, waveform):
        """`[samples]` -> `[n_windows, num_samples]`, half-overlapping, last one flush with the end."""
        n = self.num_samples
        if len(waveform) <= n:
            return np.pad(waveform, (0, n - len(waveform)))[None]
        starts = list(range(0, len(waveform) - n + 1, n // 2))
        if starts[-1] != len(waveform) - n:
            starts.append(len(waveform) - n)
        return np.stack([waveform[s:s + n] for s in starts])

    def predict_waveform(self, waveform):
        batch = self.windows(np.asarray(waveform, dtype=np.float32))
        from esc50tf.models.build import predict_crops

        # Each window is itself averaged over the model's test crops, if it was trained on crops.
        probs = [np.asarray(predict_crops(m, batch), dtype=np.float64) for m in self.models]
        return np.mean(probs, axis=(0, 1))  # over models and windows


class ExportedPredictor(Predictor):
    """An exported model (`esc50tf export` folder, `.tflite` file or SavedModel) as a Predictor.

    Args:
        runner: callable `[batch, num_samples]` -> probabilities, with
            `num_samples` (`esc50tf.exported.runner_for`).
        class_names: list of str.
        sample_rate: int.
        num_samples: int. Input length, when the runner does not tell it.
    """

    def __init__(self, runner, class_names, sample_rate, num_samples=None):
        self.models = []
        self.runner = runner
        self.class_names = class_names
        self.sample_rate = int(sample_rate)
        self.num_samples = int(runner.num_samples or num_samples)

    def predict_waveform(self, waveform):
        batch = self.windows(np.asarray(waveform, dtype=np.float32))
        return np.mean([self.runner(w[None])[0] for w in batch], axis=0)


def is_export(path):
    """Whether `path` is an export folder, a `.tflite` file or a SavedModel folder."""
    from esc50tf import exported

    path = Path(path)
    return path.suffix == ".tflite" or (path.is_dir() and (
        (path / exported.CARD).is_file() or (path / "saved_model.pb").is_file()))


def load_exported(path, sample_rate=None):
    """An ExportedPredictor of an export folder, `.tflite` file or SavedModel folder."""
    from esc50tf import exported

    path = Path(path)
    if not path.exists():
        raise Esc50Error(f"{path}: no such model file")
    runner = exported.runner_for(path)
    card = exported.read_card(path)
    if card is None and sample_rate is None:
        raise Esc50Error(f"{path}: no {exported.CARD} beside it to tell the classes and sample "
                         "rate; keep the export folder whole, or pass --sample-rate")
    num_samples = runner.num_samples or card["input"]["shape"][-1]
    names = card["classes"] if card else None
    if names is None:
        probe = runner(np.zeros((1, int(num_samples)), np.float32))
        names = [str(i) for i in range(probe.shape[-1])]
    return ExportedPredictor(runner, names, int(sample_rate or card["input"]["sample_rate"]),
                             num_samples)


def _run_facts(folder):
    """(RunConfig, clip length in samples) of a run folder; None for what it lacks."""
    from esc50tf.run_config import RunConfig

    cfg = num_samples = None
    try:
        cfg = RunConfig.from_dict(json.loads((folder / "config.json").read_text()))
        report = json.loads((folder / "report.json").read_text())
        num_samples = int(report["dataset"]["num_samples"])
    except (OSError, ValueError, KeyError):
        pass
    return cfg, num_samples


def _class_names(folder):
    for candidate in (folder / "classes.json", folder.parent / "classes.json"):
        if candidate.is_file():
            return [c["category"] for c in json.loads(candidate.read_text())]
    return None


def _sample_rate(folder, model):
    for candidate in (folder / "config.json", folder.parent / "config.json"):
        if candidate.is_file():
            return json.loads(candidate.read_text())["features"]["sample_rate"]
    try:
        return model.get_layer("frontend").sample_rate
    except (ValueError, AttributeError):
        return None


def load_predictor(path, sample_rate=None):
    """Loads a run folder (any task's split models), a saved model file of a task whose
    file holds the whole model (a `.keras` file), or an export (`is_export`).

    The split models are found, loaded and wrapped as waveform models by their
    task (`esc50tf.tasks`): a scikit-learn run's estimators behind the run's
    own features (from its config.json and report.json).

    Raises:
        Esc50Error: the path holds no model.
    """
    from esc50tf import tasks

    path = Path(path)
    if is_export(path):
        return load_exported(path, sample_rate)

    if path.is_dir():
        task_cls, files = tasks.saved_models(path)
        if not files:
            from esc50tf.exported import CARD

            raise Esc50Error(f"{path}: not a model: no saved split model "
                             f"({tasks.model_files()}; a run folder), no {CARD} (an export "
                             "folder), no saved_model.pb (a SavedModel)")
        folder = path
    elif path.is_file() and (task_cls := tasks.task_of_file(path)) is not None:
        files, folder = [path], path.parent
    else:
        raise Esc50Error(f"{path}: not a run folder, a saved model file "
                         f"({tasks.model_files(whole=True)}), an export folder, a .tflite "
                         "file or a SavedModel folder")
    cfg, num_samples = _run_facts(folder)
    if not task_cls.whole_model and (cfg is None or num_samples is None):
        raise Esc50Error(f"{folder}: a {task_cls.name} run without a readable config.json and "
                         "report.json; finish it with esc50tf train first")
    models = [task_cls.load(f) for f in files]
    names = _class_names(folder)
    if not task_cls.whole_model:
        task = tasks.get_task(cfg.model.name)
        models = [task.predictor(m, cfg, num_samples, len(names)) for m in models]
    names = names or [str(i) for i in range(models[0].output_shape[-1])]
    rate = sample_rate or _sample_rate(folder, models[0])
    if rate is None:
        raise Esc50Error(f"{path}: cannot tell the model's sample rate; pass --sample-rate")
    return Predictor(models, names, rate)


def predict_files(predictor, paths, top_k=5):
    """Predicts every file; bad files are reported, the others still predicted.

    Returns:
        (results, errors): results a list of `{"file", "top": [{"class", "probability"}]}`,
        errors a list of `(path, message)`.
    """
    from esc50tf.data.audio import load_audio

    results, errors = [], []
    k = max(1, min(top_k, len(predictor.class_names)))
    for p in paths:
        try:
            waveform, _ = load_audio(p, sample_rate=predictor.sample_rate)
        except Esc50Error as err:
            errors.append((str(p), str(err)))
            continue
        probs = predictor.predict_waveform(waveform)
        if not np.isfinite(probs).all():
            errors.append((str(p), f"{p}: the model's outputs for this file are not finite "
                                   "(NaN or infinity); no prediction (are its samples far "
                                   "outside [-1, 1]?)"))
            continue
        order = np.argsort(-probs)[:k]
        results.append({
            "file": str(p),
            "seconds": round(len(waveform) / predictor.sample_rate, 3),
            "top": [{"class": predictor.class_names[i], "probability": float(probs[i])}
                    for i in order],
        })
    return results, errors
