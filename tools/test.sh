#!/usr/bin/env bash
# The README's test command: installs what is missing (tools/setup.sh), then runs every
# Bazel test (lint included) and closes with "N passed, N failed, N skipped" over the test
# cases of this run's tests, read from its build events (bazel-test-events.json, which
# .ci/run reads again). Extra arguments go to `bazel test` (e.g. a narrower target pattern).
set -uo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh || exit 1
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(//...)
events="$PWD/bazel-test-events.json"
rm -f "$events"  # never the events of an earlier run
bazel test --build_event_json_file="$events" "${targets[@]}"
status=$?
python3 tools/test_summary.py "$events"
exit $status
