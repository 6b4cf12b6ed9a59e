#!/usr/bin/env bash
# Plain and DP-SGD training steps and DDIM sampling on a CUDA GPU, timed
# (benchmarks/gpu_check.py). Writes $OUT/gpu_check.json when OUT is set, else
# benchmarks/results/gpu_check.json. Nothing in the tests needs a GPU.
#
#   benchmarks/gpu_check.sh                 # on the GPU machine, from a copy of the repo
#   benchmarks/gpu_check.sh --fetch-wheels  # beforehand, where pip reaches a registry
#   .venv/bin/python benchmarks/gpu_check.py --device cpu --quick   # the code path, on CPU
#
# Set-up, in the spirit of `make .venv/.installed`: the GPU machine's python3
# already holds a CUDA build of torch (and numpy, scipy, opt-einsum,
# safetensors); a multi-GB torch must not be installed over it. The few
# packages securediff needs beyond those are installed, once (a stamp file), with
# --no-deps into $GPU_SITE and put on PYTHONPATH: from the registry when it is
# reachable, else from the wheels in $WHEELS (default .whl/, see --fetch-wheels;
# the device machine of this workplace reaches no registry).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
WHEELS=${WHEELS:-.whl}
GPU_SITE=${GPU_SITE:-/tmp/securediff-gpu-site}
PYVER=${PYVER:-3.12}
PINS="opacus==1.6.0 cryptography==50.0.2 cffi==2.1.1 tomli-w==1.2.0"

if [ "${1:-}" = "--fetch-wheels" ]; then
    mkdir -p "$WHEELS"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$WHEELS" $PINS
    echo "gpu_check: wheels for Python $PYVER in $WHEELS/ (carry that folder to the GPU machine)"
    exit 0
fi

if ! command -v "$PY" >/dev/null 2>&1; then
    echo "gpu_check: no '$PY' on this machine (set PY=...)" >&2
    exit 3
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA device for $PY here (no torch, a CPU-only torch, or no GPU); nothing measured." >&2
    echo "gpu_check: to check the code path on CPU: .venv/bin/python benchmarks/gpu_check.py --device cpu --quick" >&2
    exit 3
fi

stamp="$GPU_SITE/.installed"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$PINS" ]; then
    mkdir -p "$GPU_SITE"
    opts=(-q --disable-pip-version-check --no-deps --no-compile --upgrade --target "$GPU_SITE")
    if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        "$PY" -m pip install "${opts[@]}" --no-index --find-links "$WHEELS" $PINS
    elif ! "$PY" -m pip install "${opts[@]}" --timeout 15 --retries 0 $PINS; then
        echo "gpu_check: could not install $PINS: no registry here and no wheels in $WHEELS/." >&2
        echo "gpu_check: run 'benchmarks/gpu_check.sh --fetch-wheels' where pip works and bring $WHEELS/ along." >&2
        exit 3
    fi
    echo "$PINS" > "$stamp"
fi

export PYTHONPATH="$GPU_SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" benchmarks/gpu_check.py "$@"
