"""esc50tf.tasks: the task factory, and what the registry entries say about their models."""

import json

import pytest

from esc50tf import models, tasks, tune
from esc50tf.errors import Esc50Error
from esc50tf.models import registry
from esc50tf.tasks import KerasTask, SklearnTask, get_task

MODEL_PARAMS = [n for n, p in tune.PARAMS.items() if p.section == "model" and n != "model"]
BASE = {"train": {"data": "d", "protocol": "test-fold", "test_fold": 1}}


@pytest.fixture
def one_file_model():
    """A model added the way a new model module adds one: a builder and its register call."""
    name = "test_tiny_gru"

    @registry.register(name, "rnn", "a test model: one GRU over the frames",
                       settings=("rnn_units",))
    def build(x, config, num_classes):
        import keras

        return keras.layers.GRU(config.rnn_units, name="gru_cell")(x)  # [b, rnn_units]

    yield name
    registry.unregister(name)
    assert name not in registry.names()


def test_get_task_follows_the_registry():
    for spec in models.specs():
        task = get_task(spec)
        assert task.spec is spec and task.name == spec.task
        assert isinstance(task, KerasTask if spec.keras else SklearnTask)
    assert repr(get_task("gru")) == "KerasTask('gru')"
    assert type(get_task("svm")) is SklearnTask and not models.get("svm").keras
    assert set(tasks.TASKS) == set(registry.TASKS)
    with pytest.raises(Esc50Error, match="unknown model 'nope'; valid models: .*gru"):
        get_task("nope")


@pytest.mark.parametrize("kwargs, message", [
    ({"settings": ("rnn_unit",)}, r"settings \['rnn_unit'\] are not ModelConfig fields"),
    ({"task": "torch"}, "task must be one of"),
    ({"settings": ("rnn_units",), "tuned": ("dropout",)}, "must be among its settings"),
])
def test_register_refuses_what_the_task_factory_and_tune_cannot_use(kwargs, message):
    with pytest.raises(ValueError, match=message):
        registry.register("test_bad", "rnn", "never registered", **kwargs)(lambda *a: None)
    assert "test_bad" not in registry.names()


def test_every_model_declares_what_it_reads():
    for spec in models.specs():
        assert spec.settings, spec.name
        if spec.keras:
            assert spec.searches("dropout"), spec.name  # every Keras head has dropout
    # The registry, not a list in tune, says which models each model setting applies to.
    assert tune.applies_to("rnn_units") == ("lstm", "bilstm", "gru", "bigru", "hybrid",
                                            "hybrid_seed")
    assert tune.applies_to("dense_units") == ("alexnet", "vgg16", "resnet50", "densenet121")
    assert tune.applies_to("backbone") == ("hybrid",)
    assert tune.applies_to("dropout") is None and tune.applies_to("lr") is None
    # hybrid reads its Dense 64 head's width, but tune leaves the study's head alone.
    assert "dense_units" in models.get("hybrid").settings
    assert not models.get("hybrid").searches("dense_units")


def test_a_new_model_is_searched_over_its_own_settings(one_file_model):
    import keras_tuner as kt

    alone = tune.SearchSpace(tune.resolve_space(), (one_file_model,), BASE)
    # Only the model settings its entry names apply; train, feature and augment ones still do.
    assert {n: alone.condition(n) for n in MODEL_PARAMS} == {
        n: None if n == "rnn_units" else False for n in MODEL_PARAMS}
    values = alone.declare(kt.HyperParameters())
    assert "rnn_units" in values and "lr" in values and "n_mels" in values
    assert not set(values) & (set(MODEL_PARAMS) - {"rnn_units"})
    cfg = alone.run_config({**values, "rnn_units": 32})
    assert (cfg.model.name, cfg.model.rnn_units) == (one_file_model, 32)
    # Beside another model, each setting is conditional on the model that reads it.
    pair = tune.SearchSpace(tune.resolve_space(), (one_file_model, "cnn_small"), BASE)
    assert pair.condition("rnn_units") == ("model", [one_file_model])
    assert pair.condition("dropout") == ("model", ["cnn_small"])
    assert "dropout | model.dropout" in tune.describe_space(pair.space, pair.models)
    assert one_file_model in tune.applies_to("rnn_units")
    assert one_file_model not in tune.applies_to("dropout")


def test_a_new_model_trains_through_its_task(one_file_model, tiny_tfrecords, tmp_path):
    import keras

    from esc50tf.run_config import resolve_config
    from esc50tf.train import train

    cfg = resolve_config(one_file_model, overrides={
        "train": {"data": str(tiny_tfrecords), "out": str(tmp_path / "run"),
                  "protocol": "test-fold", "test_fold": 1, "epochs": 1, "batch_size": 8,
                  "export": False},
        "features": {"n_fft": 256, "hop_length": 64, "n_mels": 32},
        "model": {"rnn_units": 8}, "augment": {}})
    report = train(cfg, verbose=0)
    assert report["folds"][0]["epochs_run"] == 1 and 0 <= report["accuracy"] <= 1
    model = keras.models.load_model(tmp_path / "run" / "fold1" / "model.keras")
    assert model.get_layer("gru_cell").units == 8
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["name"] == (
        one_file_model)


def test_keras_task_builds_compiled_models_adapted_on_the_training_side(tiny_tfrecords):
    import keras
    import numpy as np

    from esc50tf.data import splits
    from esc50tf.data.dataset import TFRecordFolder
    from esc50tf.run_config import resolve_config

    cfg = resolve_config("cnn_small", overrides={
        "train": {"data": str(tiny_tfrecords), "batch_size": 8, "optimizer": "sgd"},
        "features": {"n_fft": 256, "hop_length": 64, "n_mels": 32}})
    folder = TFRecordFolder(tiny_tfrecords)
    split = splits.test_fold_split(folder.index, 1)
    task = get_task("cnn_small")
    model, trainable = task.build_compiled(cfg, split.train, folder, 4, steps_per_epoch=3)
    assert trainable is model and model.compiled and type(model.optimizer).__name__ == "SGD"
    # The normalisation's statistics are those of the training clips' spectrograms.
    frontend = model.get_layer("frontend")
    feats = np.concatenate([frontend(x).numpy() for x, _ in task.stats_inputs(
        cfg, split.train, folder)])
    norm = model.get_layer("normalization")
    mean = keras.ops.convert_to_numpy(norm.mean)
    np.testing.assert_allclose(mean, feats.mean(axis=(0, 1)), rtol=1e-3, atol=1e-3)


def test_a_new_model_module_is_found_without_a_list_to_edit(tmp_path):
    for name in ("cnn", "rnn", "build", "layers", "conformer", "_private", "beats"):
        (tmp_path / f"{name}.py").write_text("")
    # Family modules first (FAMILIES order), then the others; support modules never.
    assert registry.model_modules(tmp_path) == ["cnn", "rnn", "beats", "conformer"]
    assert registry.model_modules()[:len(registry.FAMILIES)] == list(registry.FAMILIES)


# The Task interface: every kind takes these arguments (a kind may add keyword options
# after them) and returns the same things (tasks/base.py says what).
_INTERFACE = ("build_model", "build_inputs", "test_inputs", "fit", "predict", "save", "load",
              "predictor", "export", "saved_model", "global_batch", "train_split")


@pytest.mark.parametrize("method", _INTERFACE)
def test_every_task_has_the_base_signature(method):
    import inspect

    base = inspect.signature(getattr(tasks.Task, method)).parameters
    base_names = [n for n in base if n not in ("options", "kwargs")]
    for cls in tasks.TASKS.values():
        own = inspect.signature(getattr(cls, method)).parameters
        names = [n for n in own if n not in ("options", "kwargs")]
        assert names[:len(base_names)] == base_names, (cls.__name__, method)
        extra = [p for n, p in own.items() if n not in base]
        assert all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) or p.default is not p.empty
                   for p in extra), (cls.__name__, method, extra)


def test_sklearn_task_fits_predicts_saves_and_finds_its_model(tmp_path):
    """Same shapes as the Keras task: inputs (x, y, names) -> history dict, and
    predict -> (y_true, y_prob, filenames); the saved file is found through the task."""
    import numpy as np

    from esc50tf.run_config import resolve_config

    task = get_task("logreg")
    cfg = resolve_config("logreg", overrides=BASE)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((24, 5)), np.arange(24) % 3
    names = np.array([f"{i}.wav" for i in range(24)])
    model = task.build_model(cfg)
    history = task.fit(model, (x, y, names), (x[:6], y[:6], names[:6]), cfg)
    assert set(history) == {"val_accuracy"} and len(history["val_accuracy"]) == 1
    y_true, y_prob, got_names = task.predict(model, (x, y, names), num_classes=4)
    assert y_prob.shape == (24, 4) and (y_true == y).all() and list(got_names) == list(names)
    split = tmp_path / "run" / "fold1"
    split.mkdir(parents=True)
    saved = task.save(model, split)
    assert tasks.saved_models(tmp_path / "run") == (SklearnTask, [saved])
    assert tasks.task_of_file(saved) is None  # an estimator alone is no waveform model
    assert tasks.task_of_file(tmp_path / "m.keras") is KerasTask
    with pytest.raises(Esc50Error, match="does not export"):
        task.export(model, tmp_path / "sm")


def test_commands_reach_saved_models_only_through_tasks():
    """evaluate, predict and export name no model file and import nothing of a task kind."""
    import ast
    from pathlib import Path

    root = Path(tasks.__file__).parents[1]
    for name in ("evaluate.py", "predict.py", "export.py", "timeline.py"):
        tree = ast.parse((root / name).read_text())
        docs = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
        strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
                   and isinstance(n.value, str) and id(n) not in docs]
        assert not [s for s in strings if any(f in s for f in (".keras\"", "model.keras",
                                                                 "model.skops", "model.pkl"))], name
        modules = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [m for m in modules if m and (m.startswith("esc50tf.tasks.")
                                                 or m == "esc50tf.models.classic")], name
