"""One shared test of a custom Keras layer, run on every esc50tf layer (tests/test_layers.py).

In the spirit of keras-hub's `TestCase.run_layer_test`: given a layer class,
constructor arguments and an input, `run_layer_test` checks in one pass

- the registered name `esc50tf>ClassName` and `get_config` -> `from_config`
  (equal config, JSON-serialisable, same output with the same weights);
- the symbolic call on `keras.Input` (shape and dtype of the eager output);
- a `.keras` round trip of a small functional model holding the layer;
- `Dataset.map`, batched and (flag) unbatched;
- XLA (`jit_compile=True`) against eager;
- the `mixed_float16` policy (runs, finite, the documented dtype; the global
  policy is restored whatever happens);
- for random layers: seeded draws that reproduce, advance and differ by seed,
  and the identity (or a deterministic output) when `training` is False.

Each layer is built once per check family and one functional model serves the
symbolic, `.keras` and XLA checks, so a case costs about one XLA compile.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import tensorflow as tf

MIXED_POLICY = "mixed_float16"


def to_numpy(outputs):
    """Layer outputs (a tensor or a tuple of them) as numpy arrays."""
    return keras.tree.map_structure(keras.ops.convert_to_numpy, outputs)


def _flat(outputs):
    return keras.tree.flatten(to_numpy(outputs))


def _is_multi(data):
    return isinstance(data, (list, tuple))


def _inputs(data):
    """The layer's call argument: a list for multi-input layers."""
    return list(data) if _is_multi(data) else data


def _assert_close(actual, expected, rtol, atol, what):
    actual, expected = _flat(actual), _flat(expected)
    assert len(actual) == len(expected), f"{what}: {len(actual)} outputs, expected {len(expected)}"
    for a, e in zip(actual, expected):
        assert a.shape == e.shape, f"{what}: shape {a.shape}, expected {e.shape}"
        np.testing.assert_allclose(a.astype(np.float64), e.astype(np.float64),
                                   rtol=rtol, atol=atol, err_msg=what)


def _assert_equal(actual, expected, what):
    for a, e in zip(_flat(actual), _flat(expected), strict=True):
        np.testing.assert_array_equal(a, e, err_msg=what)


def _dtypes(outputs):
    return [keras.backend.standardize_dtype(t.dtype) for t in keras.tree.flatten(outputs)]


def _differs(out, x):
    """True when the (first) output is not the input (cut to the output's length on axis 1)."""
    out, x = _flat(out)[0], _flat(x)[0]
    return out.shape != x[:, : out.shape[1]].shape or not np.array_equal(out, x[:, : out.shape[1]])


def _map(layer, data, training, batch_size=None):
    """The layer inside `Dataset.map`, batched (`batch_size`) or per example (None)."""
    if _is_multi(data):
        ds = tf.data.Dataset.from_tensor_slices(tuple(data))
        fn = lambda *t: layer(list(t), training=training)  # noqa: E731
    else:
        ds = tf.data.Dataset.from_tensor_slices(data)
        fn = lambda t: layer(t, training=training)  # noqa: E731
    if batch_size is not None:
        ds = ds.batch(batch_size)
    # Keras ops need no AutoGraph conversion; skipping it saves tracing time.
    ds = ds.map(tf.autograph.experimental.do_not_convert(fn))
    if batch_size is not None:
        # The batch size is unknown while tracing, as in a training pipeline.
        assert all(s.shape[0] is None for s in tf.nest.flatten(ds.element_spec))
    elements = [_flat(e) for e in ds.as_numpy_iterator()]
    join = np.concatenate if batch_size is not None else np.stack
    return [join([e[i] for e in elements]) for i in range(len(elements[0]))]


def run_layer_test(
    cls,
    init_kwargs,
    input_data,
    *,
    tmp_path,
    expected_output_shape=None,
    expected_num_trainable_weights=None,
    reference=None,
    prepare=None,
    supports_unbatched=False,
    random=None,
    training_check=None,
    mixed_dtype="float16",
    xla=True,
    rtol=1e-5,
    atol=1e-5,
    xla_rtol=1e-4,
    xla_atol=1e-3,
):
    """Runs every shared check on `cls(**init_kwargs)` called on `input_data`.

    Args:
        cls: type. A registered esc50tf layer class.
        init_kwargs: dict. Constructor arguments (random layers include `seed`).
        input_data: array, or a list of arrays for a multi-input layer; batched.
        tmp_path: pathlib.Path. Folder for the `.keras` file.
        expected_output_shape: tuple or None. Eager output shape (of each
            output, as a tuple of shapes for several). Defaults to None.
        expected_num_trainable_weights: int or None. Checked on the built and
            the reloaded layer. Defaults to None (not checked).
        reference: callable `(layer, x) -> array(s)` or None. The expected
            eager output, computed independently. Defaults to None.
        prepare: callable `(layer, x)` or None. Called on every new instance
            before use (e.g. `adapt`). Defaults to None.
        supports_unbatched: bool. The layer takes one example without a batch
            axis (checked inside `Dataset.map` per element). Defaults to False.
        random: None, `"identity"` or `"deterministic"`. A random layer that is
            the identity, or a deterministic function, when `training` is
            False. Defaults to None (not random).
        training_check: callable `(x, out)` or None. An invariant of the
            `training=True` output, checked in eager mode, in `Dataset.map` and
            under XLA. Defaults to None.
        mixed_dtype: str, tuple of str, or `"input"`. Output dtype(s) under the
            `mixed_float16` policy; `"input"`: the input's dtype, for float32
            and float16 inputs. Defaults to `"float16"`.
        xla: bool. Run the XLA check; False only where another case compiles
            the same code (XLA compiles cost seconds on a CPU). Defaults to True.
        rtol, atol: float. Tolerances of the eager comparisons.
        xla_rtol, xla_atol: float. Tolerances of XLA against eager.
    """
    x = _inputs(input_data)

    def make(**overrides):
        layer = cls(**{**init_kwargs, **overrides})
        if prepare is not None:
            prepare(layer, x)
        return layer

    name = keras.saving.get_registered_name(cls)
    assert name == f"esc50tf>{cls.__name__}", name

    # --- eager output ------------------------------------------------------
    layer = make()
    expected = to_numpy(layer(x, training=False))
    if expected_output_shape is not None:
        shapes = [a.shape for a in keras.tree.flatten(expected)]
        wanted = expected_output_shape if isinstance(expected_output_shape[0], tuple) else [
            expected_output_shape]
        assert shapes == [tuple(s) for s in wanted], shapes
    if reference is not None:
        _assert_close(expected, reference(layer, x), rtol, atol, "reference")
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights

    # --- config round trip ------------------------------------------------
    config = layer.get_config()
    json.dumps(config)
    clone = cls.from_config(config)
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == name
    assert type(keras.saving.deserialize_keras_object(serialized)) is cls

    if random is not None:
        _check_random(make, cls, config, x, input_data, random, training_check, expected)
    clone(x, training=False)  # builds it
    clone.set_weights(layer.get_weights())
    _assert_close(clone(x, training=False), expected, 0.0, 0.0, "from_config")

    # --- symbolic call and a functional model ----------------------------
    arrays = input_data if _is_multi(input_data) else [input_data]
    inputs = [keras.Input(shape=a.shape[1:], dtype=a.dtype) for a in arrays]
    symbolic = layer(_inputs(inputs) if _is_multi(input_data) else inputs[0], training=False)
    for sym, eager in zip(keras.tree.flatten(symbolic), keras.tree.flatten(expected), strict=True):
        assert tuple(sym.shape) == (None,) + eager.shape[1:], (sym.shape, eager.shape)
        assert keras.backend.standardize_dtype(sym.dtype) == str(eager.dtype)
    model = keras.Model(inputs if _is_multi(input_data) else inputs[0], symbolic)
    _assert_close(model(x, training=False), expected, rtol, atol, "functional model")

    # --- .keras round trip ------------------------------------------------
    path = tmp_path / f"{cls.__name__}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    reloaded = loaded.get_layer(layer.name)
    assert type(reloaded) is cls and reloaded.get_config() == config
    if expected_num_trainable_weights is not None:
        assert len(reloaded.trainable_weights) == expected_num_trainable_weights
    _assert_close(loaded(x, training=False), model(x, training=False), 1e-6, 1e-6,
                  ".keras round trip")
    if random is not None:
        # As Keras' own random layers: the seed is saved, not the generator's
        # position, so the loaded layer draws what a new layer with that seed draws.
        _assert_equal(loaded(x, training=True), make()(x, training=True), ".keras seed")

    # --- tf.data ------------------------------------------------------------
    n = len(arrays[0])
    if random is None:  # a random layer's inference output is checked eagerly
        batched = _map(layer, input_data, False, batch_size=max(1, n - 1))
        _assert_close(batched, expected, rtol, atol, "Dataset.map batched")
    if supports_unbatched:
        _assert_close(_map(layer, input_data, False), expected, rtol, atol,
                      "Dataset.map unbatched")
    if random is not None:
        out = _map(layer, input_data, True, batch_size=max(1, n - 1))
        assert [a.shape for a in out] == [a.shape for a in keras.tree.flatten(expected)]
        assert [a.dtype for a in out] == [a.dtype for a in _flat(input_data)][: len(out)]
        assert _differs(out, input_data), "Dataset.map: training=True changed nothing"
        if training_check is not None:
            training_check(input_data, out[0])

    # --- XLA --------------------------------------------------------------
    step = tf.function(lambda t, training: model(t, training=training), jit_compile=True,
                       autograph=False)
    if xla and random is None:  # a random layer's inference output is checked eagerly
        _assert_close(step(x, False), expected, xla_rtol, xla_atol, "XLA")
    if xla and random is not None:
        first, second = _flat(step(x, True)), _flat(step(x, True))
        assert [a.shape for a in first] == [a.shape for a in keras.tree.flatten(expected)]
        if training_check is not None:
            training_check(input_data, first[0])
        assert not np.array_equal(first[0], second[0]), "XLA: the generator must advance"

    _check_mixed_precision(make, x, input_data, expected, mixed_dtype, random)


def _check_random(make, cls, config, x, input_data, random, training_check, expected):
    """Seeded draws reproduce, advance, differ by seed; inference is fixed."""
    first, twin = make(), cls.from_config(config)
    other = make(seed=config["seed"] + 1)
    a1, a2 = to_numpy(first(x, training=True)), to_numpy(first(x, training=True))
    b1, b2 = to_numpy(twin(x, training=True)), to_numpy(twin(x, training=True))
    _assert_equal(a1, b1, "same seed, first call")
    _assert_equal(a2, b2, "same seed, second call")
    assert not np.array_equal(_flat(a1)[0], _flat(a2)[0]), "the generator must advance"
    assert not np.array_equal(_flat(a1)[0], _flat(other(x, training=True))[0]), (
        "different seeds must give different draws")
    assert [a.shape for a in _flat(a1)] == [a.shape for a in keras.tree.flatten(expected)]
    assert _differs(a1, input_data), "training=True changed nothing"
    if training_check is not None:
        training_check(input_data, _flat(a1)[0])
    outs = [first(x, training=False), first(x), first(x, training=None)]
    for out in outs:
        assert _dtypes(out) == [str(a.dtype) for a in _flat(input_data)][: len(_dtypes(out))]
        if random == "identity":
            _assert_equal(out, input_data, "identity at inference")
        else:
            _assert_equal(out, outs[0], "deterministic at inference")


def _check_mixed_precision(make, x, input_data, expected, mixed_dtype, random):
    """Under mixed_float16: runs, finite, shapes kept, the documented dtype."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(MIXED_POLICY)
    try:
        layer = make()
        assert layer.compute_dtype == "float16"
        input_dtypes = ["float32", "float16"] if mixed_dtype == "input" else [None]
        for dtype in input_dtypes:
            xi = x if dtype is None else keras.tree.map_structure(lambda a: a.astype(dtype), x)
            if mixed_dtype == "input":
                want = [dtype] * len(keras.tree.flatten(expected))
            elif isinstance(mixed_dtype, str):
                want = [mixed_dtype] * len(keras.tree.flatten(expected))
            else:
                want = list(mixed_dtype)
            for training in (False, True) if random else (False,):
                out = layer(xi, training=training)
                assert _dtypes(out) == want, (_dtypes(out), want)
                for a, e in zip(_flat(out), keras.tree.flatten(expected), strict=True):
                    assert a.shape == e.shape and np.isfinite(a.astype(np.float32)).all()
            arrays = xi if _is_multi(xi) else [xi]
            inputs = [keras.Input(shape=a.shape[1:], dtype=a.dtype) for a in arrays]
            symbolic = layer(inputs if _is_multi(xi) else inputs[0])
            assert _dtypes(symbolic) == want, (_dtypes(symbolic), want)
    finally:
        keras.config.set_dtype_policy(previous)


# --- measurements shared by the augmentation cases and their statistics tests ---


def shifts_of(x, out, max_shift):
    """The shift s per row with out[i] == np.roll(x[i], s), or None if none."""
    found = []
    for row_in, row_out in zip(x, out):
        matches = [
            s
            for s in range(-max_shift, max_shift + 1)
            if np.array_equal(np.roll(row_in, s), row_out)
        ]
        found.append(matches[0] if len(matches) == 1 else None)
    return found


def snr_db(x, out):
    """Per-row signal-to-noise ratio of `out` against the clean `x`, in dB."""
    noise = out.astype("float64") - x.astype("float64")
    signal = x.astype("float64")
    return 10 * np.log10(np.mean(signal**2, axis=1) / np.mean(noise**2, axis=1))
