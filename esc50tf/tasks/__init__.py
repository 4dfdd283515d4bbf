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

from esc50tf.tasks.base import Task
from esc50tf.tasks.keras_task import KerasTask
from esc50tf.tasks.sklearn_task import SklearnTask

TASKS = {KerasTask.name: KerasTask, SklearnTask.name: SklearnTask}

__all__ = ["KerasTask", "SklearnTask", "TASKS", "Task", "get_task"]


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
