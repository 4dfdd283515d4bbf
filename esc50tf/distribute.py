"""All tf.distribute strategy and mixed-precision choices live here.

`make_strategy(name)`: "auto" picks a TPU if one is reachable, else
MirroredStrategy when more than one GPU is visible, else the default strategy;
"default", "one_device", "mirrored", "multiworker" (MultiWorkerMirroredStrategy
from TF_CONFIG) and "tpu" (TPUStrategy via TPUClusterResolver) are explicit.
`resolve_precision(name, strategy)`: "auto" is bf16 on TPUs and on GPUs of
compute capability 8.0 or newer, off on CPUs.
"""

from __future__ import annotations

import json
import os

from esc50tf.errors import Esc50Error

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multiworker", "tpu")
PRECISIONS = ("auto", "off", "bf16", "fp16")
_POLICY = {"off": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def _gpus():
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def _tpu_resolver(tpu):
    import tensorflow as tf

    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu="" if tpu in (None, "local") else tpu
        )
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return resolver
    except (ValueError, RuntimeError, tf.errors.OpError) as err:
        raise Esc50Error(f"no TPU reachable ({tpu or 'local'}): {err}") from None


def make_strategy(name="auto", tpu=None, devices=None):
    """Returns `(strategy, kind)` where kind names what was chosen.

    Args:
        name: str. One of STRATEGIES.
        tpu: str or None. TPU name or "local" for `tpu` (and `auto`).
        devices: list of str or None. Devices for `mirrored`/`one_device`.
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise Esc50Error(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if name == "auto":
        if tpu is not None or os.environ.get("TPU_NAME"):
            return tf.distribute.TPUStrategy(_tpu_resolver(tpu)), "tpu"
        if len(_gpus()) > 1:
            return tf.distribute.MirroredStrategy(devices), "mirrored"
        return tf.distribute.get_strategy(), "default"
    if name == "default":
        if devices:
            raise Esc50Error("--devices goes with --strategy mirrored or one_device")
        return tf.distribute.get_strategy(), "default"
    if name == "one_device":
        device = (devices or ["/gpu:0" if _gpus() else "/cpu:0"])
        if len(device) != 1:
            raise Esc50Error(f"one_device takes exactly one device, got {device}")
        return tf.distribute.OneDeviceStrategy(device[0]), "one_device"
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices), "mirrored"
    if name == "multiworker":
        config = os.environ.get("TF_CONFIG")
        if not config:
            raise Esc50Error("--strategy multiworker needs TF_CONFIG (cluster and task) in the environment")
        try:
            json.loads(config)
        except ValueError as err:
            raise Esc50Error(f"TF_CONFIG is not valid JSON: {err}") from None
        return tf.distribute.MultiWorkerMirroredStrategy(), "multiworker"
    return tf.distribute.TPUStrategy(_tpu_resolver(tpu)), "tpu"


def resolve_precision(name, strategy_kind="default"):
    """Maps a --mixed-precision choice to a Keras dtype policy name."""
    if name not in PRECISIONS:
        raise Esc50Error(f"unknown mixed precision {name!r}; choose one of {', '.join(PRECISIONS)}")
    if name != "auto":
        return _POLICY[name]
    if strategy_kind == "tpu":
        return "mixed_bfloat16"
    import tensorflow as tf

    for gpu in _gpus():
        details = tf.config.experimental.get_device_details(gpu)
        if details.get("compute_capability", (0, 0)) >= (8, 0):
            return "mixed_bfloat16"
    return "float32"


def num_replicas(strategy):
    return int(strategy.num_replicas_in_sync)


def device_description():
    """A short description of the compute device, for reports."""
    gpus = _gpus()
    if gpus:
        import tensorflow as tf

        names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
        return f"{len(gpus)} x GPU ({', '.join(sorted(set(names)))})"
    return f"CPU ({os.cpu_count()} cores)"
