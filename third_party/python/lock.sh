#!/usr/bin/env bash
# Re-resolves requirements.in into the hash-checked requirements_lock.txt with uv
# (from .venv), for CPython 3.11 on x86-64 Linux. torch itself is left out of the lock
# (torch.txt pins it; tools/setup.sh installs it as a separate step, docs/torch.md), but
# its dependencies are locked, resolved against its CPU build: the CPU wheel must lie in
# the wheel folder KINDLE_WHEELS (default /opt/wheels).
set -euo pipefail
cd "${BUILD_WORKSPACE_DIRECTORY:-$(dirname "$0")/../..}/third_party/python"
uv=../../.venv/bin/uv
[ -x "$uv" ] || uv=$(command -v uv) || { echo "no uv: run tools/setup.sh (it puts uv in .venv)" >&2; exit 1; }
wheels=${KINDLE_WHEELS:-/opt/wheels}
torch=$(sed -n 's/^torch==\([^ ]*\).*/\1/p' torch.txt)
[ -n "$torch" ] || { echo "torch.txt pins no torch==VERSION" >&2; exit 1; }
if ! compgen -G "$wheels/torch-$torch+cpu-cp311-*.whl" >/dev/null; then
  echo "lock.sh resolves torch's dependencies against its CPU build: put" \
    "torch-$torch+cpu-cp311-cp311-manylinux_2_28_x86_64.whl (https://download.pytorch.org/whl/cpu/torch/)" \
    "into $wheels, or point KINDLE_WHEELS at the folder that holds it" >&2
  exit 1
fi
echo "torch==$torch+cpu" | "$uv" pip compile requirements.in - --no-emit-package torch \
  --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
  --find-links "$wheels" --no-header --quiet -o requirements_lock.txt
if grep -qE '^(torch|triton|nvidia-[a-z0-9-]*-cu[0-9]+)==|^[a-z0-9._-]+==[^ ]*\+' requirements_lock.txt; then
  echo "requirements_lock.txt holds torch, a CUDA library or a local (+label) build" >&2
  exit 1
fi
echo "locked $(grep -c '^[a-z0-9]' requirements_lock.txt) distributions into third_party/python/requirements_lock.txt"
