"""Adds up the JUnit reports of one `bazel test` invocation into one closing line.

`bazel test` counts targets; the line `N passed, N failed, N skipped` counts test cases
(pytest functions and parameter sets) across the test runs of that invocation, cached ones
included. Which reports those are comes from the invocation's build event stream
(`--build_event_json_file`, which tools/test.sh asks for): a `testResult` event per run,
shard and attempt names the report it left. Files under `bazel-testlogs` prove nothing by
themselves: it keeps the reports of targets this invocation did not run (other patterns,
tests filtered out, removed targets) and, for a test that failed to build, its last run's.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events of a `--build_event_json_file` (one JSON object per line)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _report(outputs: Iterable[Mapping[str, str]]) -> Path | None:
    for output in outputs:
        if output.get("name") == "test.xml" and output.get("uri", "").startswith("file://"):
            return Path(unquote(urlparse(output["uri"]).path))
    return None


def reports_of(events: Iterable[Mapping[str, Any]]) -> list[Path | None]:
    """The report of each test run of the invocation, `None` for a run without one.

    A run is one of `--runs_per_test` runs of one shard; of a flaky test's attempts the last
    counts. A test target of the invocation that did not run to any report (it failed to
    build, or the build stopped before it ran) is one `None`, which `count` counts as a
    failure: a test that cannot be shown to pass does not disappear from the line.
    """
    tests: set[str] = set()  # labels of the test targets configured
    stopped: set[str] = set()  # labels whose build failed or was cut short
    summarized: set[str] = set()  # labels of the tests the invocation was to run
    attempts: dict[tuple[str, int, int], tuple[int, Path | None]] = {}
    for event in events:
        ids = event["id"]
        if "targetConfigured" in ids and "testSize" in event.get("configured", {}):
            tests.add(ids["targetConfigured"]["label"])
        elif "targetCompleted" in ids and not event.get("completed", {}).get("success", False):
            stopped.add(ids["targetCompleted"]["label"])
        elif "testSummary" in ids:
            summarized.add(ids["testSummary"]["label"])
        elif "testResult" in ids:
            run = ids["testResult"]
            key = (run["label"], run.get("run", 1), run.get("shard", 1))
            attempt = run.get("attempt", 1)
            if key not in attempts or attempts[key][0] < attempt:
                attempts[key] = (attempt, _report(event.get("testResult", {}).get("testActionOutput", [])))
    ran = {label for label, _, _ in attempts}
    missing = ((stopped & tests) | summarized) - ran
    return [report for _, report in attempts.values()] + [None] * len(missing)


def count(reports: Iterable[Path | None]) -> tuple[int, int, int]:
    passed = failed = skipped = 0
    for report in reports:
        if report is None or not report.is_file():  # a run that left no report
            failed += 1
            continue
        for suite in ElementTree.parse(report).getroot().iter("testsuite"):
            total = int(suite.get("tests", 0))
            bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
            skip = int(suite.get("skipped", 0))
            passed += total - bad - skip
            failed += bad
            skipped += skip
    return passed, failed, skipped


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: test_summary.py EVENTS (the --build_event_json_file of a bazel test)")
    events = Path(sys.argv[1])
    if not events.is_file():
        sys.exit(f"{events}: no build events, so no test ran (bazel test did not start?)")
    passed, failed, skipped = count(reports_of(read_events(events)))
    print(f"{passed} passed, {failed} failed, {skipped} skipped")


if __name__ == "__main__":
    main()
