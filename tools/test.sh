#!/usr/bin/env bash
# The README's test command: installs what is missing (tools/setup.sh), then runs every
# Bazel test (lint included) and closes with "N passed, N failed, N skipped" over all
# test cases. Extra arguments go to `bazel test` (e.g. a narrower target pattern).
set -uo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh || exit 1
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(//...)
bazel test "${targets[@]}"
status=$?
python3 tools/test_summary.py bazel-testlogs "${targets[@]}"
exit $status
