#!/usr/bin/env bash
# Re-resolves requirements.in into the hash-checked requirements_lock.txt with uv
# (from .venv), for CPython 3.11 on x86-64 Linux; torch's CPU wheel comes from /opt/wheels.
set -euo pipefail
cd "${BUILD_WORKSPACE_DIRECTORY:-$(dirname "$0")/../..}/third_party/python"
uv=../../.venv/bin/uv
[ -x "$uv" ] || uv=$(command -v uv) || { echo "no uv: run tools/setup.sh (it puts uv in .venv)" >&2; exit 1; }
"$uv" pip compile requirements.in --generate-hashes --python-version 3.11 \
  --python-platform x86_64-manylinux_2_28 --find-links /opt/wheels \
  --no-header --quiet -o requirements_lock.txt
echo "locked $(grep -c '^[a-z0-9]' requirements_lock.txt) distributions into third_party/python/requirements_lock.txt"
