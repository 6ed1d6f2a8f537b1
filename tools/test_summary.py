"""Adds up the JUnit reports Bazel keeps for the test targets of a run into one closing line.

`bazel test` counts targets; the line `N passed, N failed, N skipped` counts test cases
(pytest functions and parameter sets) across the targets the patterns name, cached ones
included. Reports are looked up per target because `bazel-testlogs` also keeps those of
targets that no longer exist, which must not be counted.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path


def test_targets(patterns: list[str]) -> list[str]:
    expression = "tests(" + " + ".join(patterns) + ")"
    out = subprocess.run(["bazel", "query", expression], check=True, capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if line.startswith("//")]


def reports_of(testlogs: Path, label: str, repeated: bool) -> list[Path]:
    """The target's report, or under `--runs_per_test` (`repeated`) one per run
    (`run_K_of_N/test.xml`; Bazel leaves the other kind from earlier runs in place). A
    missing report is returned as it is, and `count` counts it as a failure."""
    package, _, name = label.removeprefix("//").partition(":")
    folder = testlogs / package / name
    runs = sorted(folder.glob("run_*_of_*/test.xml")) if repeated else []
    return runs or [folder / "test.xml"]


def count(reports: list[Path]) -> tuple[int, int, int]:
    passed = failed = skipped = 0
    for report in reports:
        if not report.is_file():  # a target that did not run to a report (e.g. a build error)
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
    testlogs = Path(sys.argv[1] if len(sys.argv) > 1 else "bazel-testlogs").resolve()
    # What `bazel test` was given: target patterns, and maybe flags, which name no target.
    flags = [argument for argument in sys.argv[2:] if argument.startswith("-")]
    patterns = [argument for argument in sys.argv[2:] if not argument.startswith("-")] or ["//..."]
    repeated = any(flag.startswith("--runs_per_test") for flag in flags)
    reports = [report for label in test_targets(patterns) for report in reports_of(testlogs, label, repeated)]
    passed, failed, skipped = count(reports)
    print(f"{passed} passed, {failed} failed, {skipped} skipped")


if __name__ == "__main__":
    main()
