"""Tasks: one per kind of model, chosen through the model registry (a task factory).

    get_task("hybrid")  -> KerasTask   (ModelSpec.task == "keras")
    get_task("svm")     -> SklearnTask (ModelSpec.task == "sklearn")

A task owns building the model, building its inputs, compiling, callbacks,
fitting and predicting (`esc50tf.tasks.base.Task`); `train`, `tune` and
`study` call tasks instead of branching on the kind of model (Model Garden's
`base_task.Task` and `task_factory`).

Example:
>>> from esc50tf.tasks import get_task
>>> get_task("gru")
KerasTask('gru')
"""

from __future__ import annotations

from pathlib import Path

from esc50tf.tasks.base import Task
from esc50tf.tasks.keras_task import KerasTask
from esc50tf.tasks.sklearn_task import SklearnTask

TASKS = {KerasTask.name: KerasTask, SklearnTask.name: SklearnTask}

__all__ = ["KerasTask", "SklearnTask", "TASKS", "Task", "get_task", "model_files",
           "saved_models", "task_of_file"]


def get_task(spec_or_name):
    """The task that trains a registered model.

    Args:
        spec_or_name: esc50tf.models.ModelSpec or a registered model name.

    Raises:
        Esc50Error: an unknown model name, listing the valid ones.
    """
    from esc50tf.models import registry

    spec = registry.get(spec_or_name) if isinstance(spec_or_name, str) else spec_or_name
    return TASKS[spec.task](spec)


def saved_models(run_dir):
    """`(task class, [saved model per split folder])` of a run folder; `(None, [])` without any.

    The first task (TASKS order) with a saved model in any split folder
    (`Task.saved_model`) owns the run.
    """
    splits = sorted(p for p in Path(run_dir).iterdir() if p.is_dir())
    for cls in TASKS.values():
        files = [f for d in splits if (f := cls.saved_model(d)) is not None]
        if files:
            return cls, files
    return None, []


def task_of_file(path):
    """The task class whose saved model file alone is a whole model with `path`'s suffix, or None."""
    suffix = Path(path).suffix
    for cls in TASKS.values():
        if cls.whole_model and Path(cls.MODEL_FILE).suffix == suffix:
            return cls
    return None


def model_files(whole=False):
    """The saved model files the tasks write, for messages: "*/model.keras or */model.skops"."""
    if whole:
        return " or ".join(f"a {Path(c.MODEL_FILE).suffix} file" for c in TASKS.values()
                           if c.whole_model)
    return " or ".join(f"*/{c.MODEL_FILE}" for c in TASKS.values())
