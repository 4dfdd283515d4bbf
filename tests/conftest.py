"""Shared fixtures: small ESC-50-layout datasets made by the project's fake-data builder
(esc50tf.data.synth.synthesize_tfrecords, which the demo and the benchmarks use too)."""

import fcntl
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Deterministic training (train(deterministic=True)) is bit-identical only with
# one inter-op thread, which TensorFlow fixes when it starts, as the esc50tf
# command does for --deterministic (esc50tf.distribute.enable_determinism).
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

import signal  # noqa: E402

# A test runner started in the background by a non-interactive shell (`.ci/run &`)
# ignores SIGINT, and so would every process the tests start: the tests that press
# Ctrl-C need a terminal's default. A handler (unlike SIG_IGN) is not inherited across
# exec, so the processes the tests start get the default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402

def made_once(tmp_path_factory, name, make):
    """The folder `name`, filled by `make(folder)` once per test run.

    Under pytest-xdist every worker runs the session fixtures; the first one to
    get here makes the folder in the run's shared temporary folder while holding
    a lock, the others wait on that lock and then read what it made.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, shared by its workers
    folder = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / f"{name}.done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            (root / f"{name}.done").touch()
    return folder


TINY = dict(num_classes=4, clips_per_class=10, sample_rate=8000, clip_seconds=1.0, seed=0)


def synthesize_quietly(data_dir, tfrecord_dir, synth, shards_per_fold):
    """`synthesize_tfrecords` with one build worker, no progress bars and no log."""
    from esc50tf.data.synth import synthesize_tfrecords
    from esc50tf.data.tfrecords import BuildConfig

    build = BuildConfig(sample_rate=synth["sample_rate"], clip_seconds=synth["clip_seconds"],
                        shards_per_fold=shards_per_fold)
    return synthesize_tfrecords(data_dir, tfrecord_dir, synth, build, workers=1,
                                progress=False, log=lambda _: None)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """(ESC-50 folder, its TFRecords with 2 shards per fold) of the TINY dataset."""
    root = made_once(tmp_path_factory, "tiny", lambda root: synthesize_quietly(
        root / "esc50", root / "tfr", TINY, shards_per_fold=2))
    return root / "esc50", root / "tfr"


@pytest.fixture(scope="session")
def tiny_esc50(tiny_data):
    """4 classes x 10 clips, 1 s at 8 kHz, 5 folds. Treat as read-only."""
    return tiny_data[0]


def build_tiny_tfrecords(tiny_esc50, out, sample_rate=8000, shards_per_fold=2):
    """TFRecords of `tiny_esc50` at `sample_rate` (1 s clips) in the folder `out`."""
    from esc50tf.data.build import build_tfrecords
    from esc50tf.data.tfrecords import BuildConfig

    build_tfrecords(tiny_esc50, out, BuildConfig(sample_rate=sample_rate, clip_seconds=1.0,
                                                  shards_per_fold=shards_per_fold),
                    workers=1, progress=False, log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def tiny_tfrecords(tiny_data):
    """TFRecords of `tiny_esc50` (2 shards per fold). Treat as read-only."""
    return tiny_data[1]


@pytest.fixture
def esc50_copy(tiny_esc50, tmp_path):
    """A private, writable copy of `tiny_esc50` for tests that damage it."""
    dst = tmp_path / "esc50"
    shutil.copytree(tiny_esc50, dst)
    return dst


def write_dataset(root, rows, sample_rate=8000, seconds=0.5, subtype="PCM_16", seed=0):
    """Writes an ESC-50-layout folder from `rows` (dicts of CSV columns).

    Each clip is a short noise burst; returns the DataFrame written.
    """
    rng = np.random.default_rng(seed)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    (root / "meta").mkdir(parents=True, exist_ok=True)
    for row in rows:
        x = 0.3 * rng.standard_normal(int(sample_rate * seconds))
        sf.write(root / "audio" / row["filename"], x, sample_rate, subtype=subtype)
    df = pd.DataFrame(rows)
    df.to_csv(root / "meta" / "esc50.csv", index=False)
    return df


def rows_for(folds, classes=2, per_group=2, groups_per_class_fold=1):
    """CSV rows for a dataset with the given fold numbers."""
    rows = []
    for fold in folds:
        for target in range(classes):
            for g in range(groups_per_class_fold):
                src = f"{fold}{target}{g}"
                for take in "ABC"[:per_group]:
                    rows.append(dict(filename=f"clip_{src}_{take}.wav", fold=fold, target=target,
                                     category=f"class{target}", esc10=target == 0,
                                     src_file=src, take=take))
    return rows


# The demo's data, front end and recipe (esc50tf.demo), shrunk to 1 s clips and 25 epochs:
# trained enough (>= 90% on its 60 test clips, test_train.test_small_model_learns_synthetic_data)
# for the export parity figures to mean something.
TRAINED = dict(num_classes=10, clips_per_class=30, sample_rate=16000, clip_seconds=1.0, seed=0)
TRAINED_EPOCHS = 25


def _train_demo_like(root):
    from esc50tf.presets import DEMO_FEATURES, DEMO_MODEL, DEMO_TRAIN
    from esc50tf.run_config import resolve_config
    from esc50tf.train import train

    synthesize_quietly(root / "esc50", root / "tfr", TRAINED, shards_per_fold=1)
    cfg = resolve_config(DEMO_MODEL, overrides={
        "train": {**DEMO_TRAIN, "epochs": TRAINED_EPOCHS, "data": str(root / "tfr"),
                  "out": str(root / "run"), "seed": 0, "export": False},
        "features": DEMO_FEATURES, "augment": {"mix": "none"}})
    train(cfg, verbose=0)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """A cnn_small run on synthetic demo-like data, test fold 1, made once per test run.
    Treat as read-only. Most tests name it `trained_run`.

    Returns (run_dir, esc50_dir, tfrecord_dir).
    """
    root = made_once(tmp_path_factory, "trained", _train_demo_like)
    return root / "run", root / "esc50", root / "tfr"


@pytest.fixture(scope="session")
def trained_run(demo_run):
    """`demo_run` (test_train.py has a `trained_run` of its own)."""
    return demo_run


EXPORT_VARIANTS = {  # name -> (format, quantize)
    "savedmodel": ("savedmodel", "none"),
    "float": ("tflite", "none"),
    "float16": ("tflite", "float16"),
    "int8": ("tflite", "int8"),
}


@pytest.fixture(scope="session")
def exports(trained_run, tmp_path_factory):
    """Every variant exported once; the savedmodel through the command line."""
    from esc50tf import cli
    from esc50tf.export import ExportConfig, export_run

    run, _, _ = trained_run

    def export_all(root):
        for name, (fmt, quantize) in EXPORT_VARIANTS.items():
            if name == "savedmodel":
                assert cli.main(["export", str(run), "--format", fmt, "--out",
                                 str(root / name)]) == 0
            else:
                export_run(run, ExportConfig(out=str(root / name), format=fmt,
                                             quantize=quantize), log=lambda _: None)

    root = made_once(tmp_path_factory, "exports", export_all)
    return {name: root / name for name in EXPORT_VARIANTS}


def write_skops(path, root, compression=None):
    """Writes a skops file whose schema's root node is `root` (a node dict), the way
    skops.io.dump lays one out: a zip holding `schema.json` with the running protocol."""
    import io
    import json
    import zipfile

    import skops.io as sio

    with zipfile.ZipFile(io.BytesIO(sio.dumps(0))) as zf:
        head = {k: v for k, v in json.loads(zf.read("schema.json")).items()
                if k in ("protocol", "_skops_version")}
    with zipfile.ZipFile(path, "w", compression=compression or zipfile.ZIP_STORED) as zf:
        zf.writestr("schema.json", json.dumps({**root, **head}))
    return path


def skops_call(module, name, *args):
    """A skops node that calls `module.name(*args)` (str args) when it is built
    (skops' ConstructorFromReduceNode): what a hostile model file would hold."""
    import json

    content = [{"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode",
                "content": json.dumps(a), "is_json": True} for a in args]
    return {"__class__": name, "__module__": module, "__loader__": "ConstructorFromReduceNode",
            "content": {"__class__": "tuple", "__module__": "builtins",
                        "__loader__": "TupleNode", "content": content}}


@pytest.fixture(scope="session")
def convert_fixture(tmp_path_factory):
    """`convert(architecture, checkpoint)`: a checkpoint under tests/fixtures converted as
    `esc50tf pretrained convert ARCHITECTURE CHECKPOINT --out FILE` (once a session each)."""
    from pathlib import Path

    from esc50tf.cli import pretrained as cli
    from esc50tf.pretrained import store

    done = {}

    def convert(architecture, checkpoint):
        if (architecture, checkpoint) not in done:
            out = tmp_path_factory.mktemp("weights") / f"{architecture}.weights.npz"
            store.convert_checkpoint(architecture, Path(__file__).parent / "fixtures" / checkpoint,
                                     out, build=cli.build_reference, log=lambda _: None)
            done[architecture, checkpoint] = out
        return done[architecture, checkpoint]

    return convert
