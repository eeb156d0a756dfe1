#!/usr/bin/env bash
# One check of ppokit on a GPU machine, <= 8 minutes on one GPU: prints a table (batched torch env
# at 4096 envs: SPS, learner share, peak GPU memory; pointmass-4096 learning; the update in
# bf16 and compiled, on/off; 2-process NCCL data-parallel if > 1 GPU). benchmarks/gpu_check.py
# does the measuring; this script makes a Python that can run it.
#
#   bash benchmarks/gpu_check.sh                      # on the GPU machine (--device cuda)
#   bash benchmarks/gpu_check.sh --device cpu --quick # the dry run the tests exercise (~20 s)
#
# The GPU machine's Python has torch with CUDA but neither gymnasium nor mujoco, and no network.
# So ppokit and the packages torch does not bring are installed from wheels shipped next to this
# script, in benchmarks/wheels/ (without network: pip --no-index --find-links), into a venv that
# sees the system's torch (--system-site-packages). Fill the folder on a machine with network,
# for the GPU machine's Python version and platform (here CPython 3.11, x86_64 Linux):
#
#   pip wheel --no-deps -w benchmarks/wheels .          # ppokit itself
#   pip download -d benchmarks/wheels --only-binary=:all: \
#       --python-version 3.11 --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#       "gymnasium[mujoco,classic-control]>=1.1,<2" mujoco pyyaml tensorboard rich \
#       threadpoolctl portalocker numpy
#
# (pip download resolves their dependencies too; torch is not needed: the machine has it.)
# Environment: PYTHON (default python3) is the interpreter with torch; GPU_CHECK_VENV (default
# /tmp/ppokit-gpu-check-venv) the venv made when packages are missing.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
PYTHON="${PYTHON:-python3}"
WHEELS="${GPU_CHECK_WHEELS:-$HERE/wheels}"
VENV="${GPU_CHECK_VENV:-/tmp/ppokit-gpu-check-venv}"

has() {  # are these modules installed? (found, not imported: importing costs seconds)
    "$PYTHON" -c "import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in sys.argv[1:]))" "$@"
}
if ! has torch; then
    echo "gpu_check: $PYTHON has no torch; set PYTHON to the interpreter with torch (CUDA)" >&2
    exit 2
fi
if ! has ppokit gymnasium mujoco yaml; then
    if [ ! -d "$WHEELS" ]; then
        echo "gpu_check: $PYTHON lacks ppokit/gymnasium/mujoco and $WHEELS does not exist;" \
            "fill it as this script's header says" >&2
        exit 2
    fi
    echo "gpu_check: installing ppokit, gymnasium and mujoco from $WHEELS into $VENV"
    "$PYTHON" -m venv --system-site-packages "$VENV"
    "$VENV/bin/python" -m pip install --quiet --no-index --find-links "$WHEELS" \
        ppokit "gymnasium[mujoco,classic-control]" mujoco
    PYTHON="$VENV/bin/python"
    export PATH="$VENV/bin:$PATH"  # torchrun, ppokit
fi
# presets are read from the checkout (configs/), so run from the repository root
cd "$REPO"
exec timeout 480 "$PYTHON" "$HERE/gpu_check.py" "$@"
