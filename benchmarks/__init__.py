"""esc50tf's benchmarks, one module per benchmark, run from the repository root.

    python -m benchmarks.bench_pipeline --quick
    python -m benchmarks.bench_frontend --quick
    python -m benchmarks.bench_train --quick
    python -m benchmarks.bench_export --quick
    python -m benchmarks.recipe_experiment --quick
    KERAS_BACKEND=jax python -m benchmarks.device_check --quick

`python -m` from the repository root puts it first on `sys.path`, so the
benchmarks measure this checkout's `esc50tf`. Shared flags, timing,
environment and report writing are in :mod:`benchmarks.common`. Importing this
package imports nothing.
"""
