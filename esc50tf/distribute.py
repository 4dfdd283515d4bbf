"""All tf.distribute strategy, input-sharding and mixed-precision choices live here.

Strategies (`--strategy`):

- `auto`: a TPU when one is reachable (`--tpu`, `TPU_NAME`, or a TPU VM's
  local chips), else MirroredStrategy when more than one GPU is visible (or
  `--devices` names several), else the default strategy.
- `default`: TensorFlow's default strategy (one device, no wrapping).
- `one_device`: OneDeviceStrategy on `--devices` (one) or the first GPU/CPU.
- `mirrored`: MirroredStrategy over all local GPUs or `--devices`.
- `multiworker`: MultiWorkerMirroredStrategy configured from `TF_CONFIG`
  (every worker runs the same command; the chief writes the run folder).
- `tpu`: TPUStrategy through TPUClusterResolver (`--tpu NAME`, or `local` on a
  TPU VM).

`check_options` rejects flag combinations that cannot work before anything
heavy starts; `make_strategy` builds the strategy; `resolve_precision` maps
`--mixed-precision` to a Keras dtype policy ("auto" is bf16 on TPUs and on GPUs
of compute capability 8.0 or newer, off on CPUs). The batch size in configs is
per replica: `global_batch_size` multiplies it by the replicas in sync, and
`scaled_learning_rate` applies the linear scaling rule (Goyal et al., 2017,
"Accurate, Large Minibatch SGD") when asked to. `num_input_pipelines` says
how many hosts read the data (the auto-shard policy follows from it), and
`prepare_fit` works around Keras 3's bugs under MultiWorkerMirroredStrategy.

Example:
>>> check_options("mirrored", devices="cpu:0,cpu:1")
>>> strategy, kind = make_strategy("mirrored", devices="cpu:0,cpu:1")
>>> global_batch_size(32, strategy)          # 64
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import re
import warnings

from esc50tf.errors import Esc50Error

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multiworker", "tpu")
PRECISIONS = ("auto", "off", "bf16", "fp16")
_POLICY = {"off": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
_DEVICE_RE = re.compile(r"^/?(?:job:[^/]+/)?(?:replica:\d+/)?(?:task:\d+/)?"
                        r"(?:device:)?(cpu|gpu|tpu):\d+$", re.IGNORECASE)
_HOST_PORT_RE = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")
# TensorFlow reads this when it starts; one inter-op thread makes reruns bit-identical.
INTER_OP_ENV = "TF_NUM_INTEROP_THREADS"


def _gpus():
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def _tpu_hint():
    """Whether a TPU looks reachable without contacting it (cheap, no network).

    True when TPU_NAME is set, or on a TPU VM: local accelerator device files
    (`/dev/accel*` on v2-v4, `/dev/vfio/N` on v5e and later) and libtpu installed.
    """
    if os.environ.get("TPU_NAME"):
        return True
    if glob.glob("/dev/accel[0-9]*"):
        return True
    return bool(glob.glob("/dev/vfio/[0-9]*")) and importlib.util.find_spec("libtpu") is not None


def _tpu_resolver(tpu):
    import tensorflow as tf

    try:
        name = (os.environ.get("TPU_NAME") or "local") if tpu is None else tpu
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=name)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return resolver
    except (ValueError, RuntimeError, tf.errors.OpError) as err:
        raise Esc50Error(f"no TPU reachable at {name!r} ({err}); check --tpu (a TPU name, or "
                         "local on a TPU VM) or TPU_NAME, or choose another --strategy") from None


def parse_devices(devices):
    """`"gpu:0,gpu:1"`, `"0,1"` or a list -> `["/gpu:0", "/gpu:1"]`; None stays None.

    Bare numbers mean GPUs. Raises Esc50Error naming `--devices` for anything
    that is not a device name.
    """
    if devices is None:
        return None
    items = devices.split(",") if isinstance(devices, str) else list(devices)
    out = []
    for item in (str(i).strip() for i in items):
        if item.isdigit():
            item = f"gpu:{item}"
        if not _DEVICE_RE.match(item):
            raise Esc50Error(f"--devices {devices!r}: {item!r} is not a device; "
                             "use e.g. gpu:0,gpu:1 (or 0,1) or cpu:0")
        out.append(item if item.startswith("/") else "/" + item)
    if not out:
        raise Esc50Error("--devices is empty; use e.g. gpu:0,gpu:1")
    if len(set(d.lower() for d in out)) != len(out):
        raise Esc50Error(f"--devices {devices!r} names a device twice")
    return out


def parse_tf_config(text=None):
    """Validates TF_CONFIG (the environment's unless `text` is given).

    Returns:
        A dict: `cluster` (job -> list of "host:port"), `task_type`,
        `task_index`, `num_workers` (chief + workers), `is_chief`.

    Raises:
        Esc50Error: TF_CONFIG missing, not JSON, or inconsistent; the message
            says what a valid one looks like.
    """
    example = ('e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}\'')
    if text is None:
        text = os.environ.get("TF_CONFIG")
    if not text:
        raise Esc50Error("--strategy multiworker needs TF_CONFIG (cluster and task) in the "
                         f"environment of every worker; {example}")
    try:
        config = json.loads(text)
    except ValueError as err:
        raise Esc50Error(f"TF_CONFIG is not valid JSON ({err}); {example}") from None
    if not isinstance(config, dict):
        raise Esc50Error(f"TF_CONFIG must be a JSON object; {example}")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise Esc50Error(f"TF_CONFIG has no \"cluster\" (job name -> list of host:port); {example}")
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses:
            raise Esc50Error(f"TF_CONFIG cluster job {job!r} must be a non-empty list of host:port")
        for address in addresses:
            if not isinstance(address, str) or not _HOST_PORT_RE.match(address):
                raise Esc50Error(f"TF_CONFIG cluster job {job!r}: {address!r} is not host:port")
    unsupported = sorted(set(cluster) - {"chief", "worker", "evaluator"})
    if unsupported:
        raise Esc50Error(f"TF_CONFIG cluster has job(s) {', '.join(unsupported)}; "
                         "--strategy multiworker takes only chief and worker jobs "
                         "(parameter servers are not supported)")
    if len(cluster.get("chief", [])) > 1:
        raise Esc50Error("TF_CONFIG cluster may have at most one chief")
    workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    if workers == 0:
        raise Esc50Error(f"TF_CONFIG cluster has no chief or worker; {example}")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise Esc50Error(f"TF_CONFIG has no \"task\" with \"type\" and \"index\"; {example}")
    task_type, index = task["type"], task["index"]
    if task_type not in ("chief", "worker"):
        raise Esc50Error(f"TF_CONFIG task type {task_type!r} cannot train; use chief or worker")
    if task_type not in cluster:
        raise Esc50Error(f"TF_CONFIG task type {task_type!r} is not a job of the cluster "
                         f"({', '.join(cluster)})")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(cluster[task_type]):
        raise Esc50Error(f"TF_CONFIG task index {index!r} is out of range for job {task_type!r} "
                         f"({len(cluster[task_type])} task(s))")
    is_chief = task_type == "chief" or ("chief" not in cluster and index == 0)
    return {"cluster": cluster, "task_type": task_type, "task_index": index,
            "num_workers": workers, "is_chief": is_chief}


def check_options(strategy="auto", *, tpu=None, devices=None, mixed_precision="auto",
                  jit_compile=False, deterministic=False, data_service=None):
    """Rejects combinations of distribution flags that cannot work.

    Needs no accelerator and starts nothing; hardware-dependent checks (a
    reachable TPU, bf16 support) happen in `make_strategy` / `resolve_precision`.

    Raises:
        Esc50Error: naming the flags, e.g. `--devices` with `--strategy tpu`.
    """
    if strategy not in STRATEGIES:
        raise Esc50Error(f"unknown --strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if mixed_precision not in PRECISIONS:
        raise Esc50Error(f"unknown --mixed-precision {mixed_precision!r}; "
                         f"choose one of {', '.join(PRECISIONS)}")
    if devices is not None:
        parsed = parse_devices(devices)
        if strategy in ("default", "tpu", "multiworker"):
            why = {"default": "the default strategy uses one device",
                   "tpu": "TPUStrategy uses every core of the TPU",
                   "multiworker": "every worker uses all its GPUs (limit them with "
                                  "CUDA_VISIBLE_DEVICES)"}[strategy]
            raise Esc50Error(f"--devices goes with --strategy mirrored, one_device or auto, "
                             f"not {strategy} ({why})")
        if strategy == "one_device" and len(parsed) != 1:
            raise Esc50Error(f"--strategy one_device takes exactly one of --devices, got {parsed}")
        if any("tpu" in d.lower() for d in parsed):
            raise Esc50Error("--devices takes GPUs or CPUs; use --strategy tpu for TPUs")
    if tpu is not None:
        if strategy not in ("tpu", "auto"):
            raise Esc50Error(f"--tpu goes with --strategy tpu or auto, not {strategy}")
        if devices is not None:
            raise Esc50Error("--tpu and --devices exclude each other")
    if strategy == "multiworker":
        parse_tf_config()
    if jit_compile and deterministic:
        raise Esc50Error("--jit-compile and --deterministic exclude each other: XLA has no "
                         "deterministic version of some ops (Keras would silently drop XLA)")
    if jit_compile and strategy == "tpu":
        raise Esc50Error("--jit-compile with --strategy tpu: TPU steps are always XLA-compiled; "
                         "drop --jit-compile")
    if mixed_precision == "fp16" and strategy == "tpu":
        raise Esc50Error("--mixed-precision fp16 with --strategy tpu: TPUs compute in bfloat16; "
                         "use --mixed-precision bf16 or auto")
    if data_service is not None:
        from esc50tf.data import service

        service.parse_address(data_service)


def resolve_kind(name="auto", tpu=None, devices=None):
    """What `name` becomes on this machine: one of STRATEGIES other than "auto"."""
    if name != "auto":
        return name
    if tpu is not None:
        return "tpu"
    if devices is not None:
        return "mirrored" if len(parse_devices(devices)) > 1 else "one_device"
    if _tpu_hint():
        return "tpu"
    if len(_gpus()) > 1:
        return "mirrored"
    return "default"


def make_strategy(name="auto", tpu=None, devices=None):
    """Returns `(strategy, kind)` where kind names what was chosen.

    Args:
        name: str. One of STRATEGIES.
        tpu: str or None. TPU name or "local" for `tpu` (and `auto`).
        devices: str, list of str or None. Devices for `mirrored`/`one_device`
            (and `auto`), e.g. "gpu:0,gpu:1".
    """
    import tensorflow as tf

    check_options(name, tpu=tpu, devices=devices)
    kind = resolve_kind(name, tpu, devices)
    devices = parse_devices(devices)
    if kind == "default":
        return tf.distribute.get_strategy(), "default"
    if kind == "one_device":
        device = devices[0] if devices else ("/gpu:0" if _gpus() else "/cpu:0")
        return tf.distribute.OneDeviceStrategy(device), "one_device"
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy(devices), "mirrored"
    if kind == "multiworker":
        parse_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy(), "multiworker"
    return tf.distribute.TPUStrategy(_tpu_resolver(tpu)), "tpu"


def check_strategy(strategy, kind, *, jit_compile=False):
    """Checks that need the built strategy (how many replicas `auto` gave)."""
    replicas = num_replicas(strategy)
    if kind == "multiworker":
        workers = parse_tf_config()["num_workers"]
        if replicas % workers:
            raise Esc50Error(f"{replicas} replicas over {workers} workers: every worker of "
                             "--strategy multiworker needs the same number of devices, so that "
                             "each global batch divides evenly (set CUDA_VISIBLE_DEVICES alike)")
    if jit_compile and kind in ("mirrored", "multiworker") and replicas > 1:
        raise Esc50Error(f"--jit-compile with --strategy {kind} over {replicas} replicas: Keras "
                         "cannot XLA-compile a step that spans devices; drop --jit-compile "
                         "(or train on one device)")


def worker_dir(out, index):
    """Where non-chief worker `index` writes its copy of the run: `OUT-worker{index}`.

    Every worker trains and saves (checkpoints, BackupAndRestore) like the
    chief, but into its own folder, so workers sharing a file system never
    write the same file; the folders are kept, so that a resumed run finds
    every worker's state.
    """
    return f"{str(out).rstrip('/')}-worker{index}"


def prepare_fit(model, strategy, kind, element_spec):
    """Makes a compiled Keras model ready for `fit` under `kind`.

    Keras 3 cannot `fit` under MultiWorkerMirroredStrategy across workers
    (keras-team/keras#20585, tensorflow/tensorflow#72388): its first symbolic
    build all-reduces a whole data batch, which that strategy cannot do for a
    nest of tensors, and it averages scalar logs over an axis 0 they do not
    have. Here the model is built from the dataset's element spec instead, and
    logs are averaged over all replicas, which also makes every worker see the
    same loss and metrics (so callbacks such as EarlyStopping decide alike).
    Nothing changes for the other strategies.
    """
    if kind != "multiworker":
        return model
    _patch_keras_multiworker_logs()
    with strategy.scope():
        model._symbolic_build(data_batch=element_spec)  # noqa: SLF001 - see docstring
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None  # noqa: SLF001
    return model


def _patch_keras_multiworker_logs():
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, "_esc50tf", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    reduce_per_replica._esc50tf = True
    tf_trainer.reduce_per_replica = reduce_per_replica


def resolve_precision(name, strategy_kind="default"):
    """Maps a --mixed-precision choice to a Keras dtype policy name."""
    if name not in PRECISIONS:
        raise Esc50Error(f"unknown --mixed-precision {name!r}; choose one of {', '.join(PRECISIONS)}")
    if strategy_kind == "tpu":
        if name == "fp16":
            raise Esc50Error("--mixed-precision fp16 with a TPU: TPUs compute in bfloat16; "
                             "use --mixed-precision bf16 or auto")
        return "mixed_bfloat16" if name == "auto" else _POLICY[name]
    gpus = _gpus()
    capabilities = []
    if gpus:
        import tensorflow as tf

        capabilities = [tf.config.experimental.get_device_details(g).get("compute_capability", (0, 0))
                        for g in gpus]
    if name == "bf16" and capabilities and min(capabilities) < (8, 0):
        raise Esc50Error(f"--mixed-precision bf16 needs GPUs of compute capability 8.0 or newer "
                         f"(found {'.'.join(map(str, min(capabilities)))}); use fp16 or off")
    if name != "auto":
        return _POLICY[name]
    if capabilities and min(capabilities) >= (8, 0):
        return "mixed_bfloat16"
    return "float32"


def num_replicas(strategy):
    return int(strategy.num_replicas_in_sync)


def num_input_pipelines(strategy, kind):
    """How many hosts each run their own copy of the input pipeline."""
    if kind == "multiworker":
        return parse_tf_config()["num_workers"]
    if kind == "tpu":
        return int(getattr(strategy.extended, "num_hosts", 1) or 1)
    return 1


def is_chief(kind):
    """Whether this process writes the run folder (False only for non-chief workers)."""
    return kind != "multiworker" or parse_tf_config()["is_chief"]


def task_index(kind):
    """This worker's index in its TF_CONFIG job (0 outside multi-worker runs)."""
    return parse_tf_config()["task_index"] if kind == "multiworker" else 0


def global_batch_size(per_replica, strategy_or_replicas):
    """Per-replica batch x replicas in sync."""
    replicas = strategy_or_replicas if isinstance(strategy_or_replicas, int) else \
        num_replicas(strategy_or_replicas)
    return int(per_replica) * replicas


def per_replica_batch_size(global_batch, strategy_or_replicas):
    """The inverse of `global_batch_size`; Esc50Error when it does not divide."""
    replicas = strategy_or_replicas if isinstance(strategy_or_replicas, int) else \
        num_replicas(strategy_or_replicas)
    if global_batch < replicas or global_batch % replicas:
        raise Esc50Error(f"global batch {global_batch} does not divide over {replicas} replicas; "
                         f"use a multiple of {replicas}")
    return global_batch // replicas


def scaled_learning_rate(lr, replicas, scale=True):
    """The linear scaling rule: lr x replicas (`--scale-lr`), else lr unchanged.

    The base rate belongs to the per-replica batch; with N replicas the global
    batch is N times larger and so is the rate (Goyal et al., 2017).
    """
    return float(lr) * int(replicas) if scale else float(lr)


def device_description(strategy=None, kind=None):
    """A short description of the compute device, for reports."""
    if kind == "tpu" and strategy is not None:
        return f"TPU ({num_replicas(strategy)} cores)"
    gpus = _gpus()
    if gpus:
        import tensorflow as tf

        names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
        return f"{len(gpus)} x GPU ({', '.join(sorted(set(names)))})"
    return f"CPU ({os.cpu_count()} cores)"


def enable_determinism():
    """Turns TensorFlow op determinism on; returns a function that restores the old state.

    The switch is process-wide and Keras silently drops jit_compile while it is
    on, so a deterministic run must not leave it on for whatever runs next.

    Op determinism alone is not enough: with several inter-op threads, Keras'
    compiled training step gave weights that differed in the 6th-7th digit
    between reruns (and so different accuracies after 30 epochs). One
    inter-op thread (each op still uses every core) made reruns
    bit-identical. That pool can only be sized before TensorFlow starts, so
    the `esc50tf` command sets TF_NUM_INTEROP_THREADS=1 for deterministic
    runs; a library caller whose TensorFlow already runs gets a warning.
    """
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    if not _single_inter_op_thread(tf):
        warnings.warn(
            "deterministic run, but TensorFlow already started with more than one inter-op "
            "thread, so reruns may differ in the last digits; set TF_NUM_INTEROP_THREADS=1 "
            "before TensorFlow starts (the esc50tf command does this for --deterministic)",
            RuntimeWarning, stacklevel=3,
        )
    was_on = tf_config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    return (lambda: None) if was_on else tf_config.disable_op_determinism


def _single_inter_op_thread(tf):
    """Makes TensorFlow's inter-op pool one thread if it can; True if it is."""
    if os.environ.get(INTER_OP_ENV) == "1" or (
        tf.config.threading.get_inter_op_parallelism_threads() == 1
    ):
        return True
    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # the runtime is already initialised
        return False
    return True
