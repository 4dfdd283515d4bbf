#!/usr/bin/env bash
# Wheels the GPU machine lacks for benchmarks/device_check.py, into an ignored folder.
#
# The lent GPU machine (python 3.12, JAX with CUDA, no network) has numpy,
# ml-dtypes, absl-py, h5py, rich and packaging but no Keras, no TensorFlow and
# no esc50tf. This downloads Keras and the two dependencies missing there
# (namex, optree), at the versions installed in the Python that runs this
# script (the combination tested here), for CPython $PYVER manylinux x86_64,
# builds an esc50tf wheel from this checkout (installed there with --no-deps:
# device_check needs only numpy and Keras from it, never TensorFlow), and
# checks that the set stays far under the 64 MiB a device call may carry.
#
# Usage: tools/device_wheels.sh [DEST]     (DEST defaults to .whl, ignored by git)
#   env: PYTHON (default: the venv's python3), PYVER (default 3.12),
#        MAX_MIB (default 16).
# Then, on the device (the `run` tool, carry [".whl"]), from the repository root:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#     --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site && \
#   KERAS_BACKEND=jax PYTHONUNBUFFERED=1 python3 -m benchmarks.device_check --out "$OUT"
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/.whl}
python=${PYTHON:-python3}
pyver=${PYVER:-3.12}
max_mib=${MAX_MIB:-16}

versions=$("$python" - <<'PY'
import importlib.metadata as m
print(" ".join(f"{n}=={m.version(n)}" for n in ("keras", "namex", "optree")))
PY
)
rm -rf "$dest"
mkdir -p "$dest"
echo "downloading $versions for CPython $pyver manylinux x86_64 into $dest" >&2
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$dest" $versions
echo "building the esc50tf wheel from $root" >&2
had_build=$([ -e "$root/build" ] && echo yes || echo no)
"$python" -m pip wheel -q --no-deps --no-build-isolation -w "$dest" "$root"
[ "$had_build" = no ] && rm -rf "$root/build"  # setuptools' scratch folder, if it made it

ls -l "$dest"/*.whl >&2
total=$(cat "$dest"/*.whl | wc -c)
count=$(ls "$dest"/*.whl | wc -l)
if [ "$count" -ne 4 ]; then
  echo "error: expected 4 wheels (keras, namex, optree, esc50tf), found $count" >&2
  exit 1
fi
if [ "$total" -gt $((max_mib * 1024 * 1024)) ]; then
  echo "error: the wheels take $total bytes, over $max_mib MiB (a device call carries 64 MiB)" >&2
  exit 1
fi
echo "$count wheels, $total bytes ($(( total / 1024 )) KiB) in $dest: under $max_mib MiB"
