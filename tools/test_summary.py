"""Adds up the JUnit reports Bazel keeps for every test target into one closing line.

`bazel test` counts targets; the line `N passed, N failed, N skipped` counts test cases
(pytest functions and parameter sets) across all targets, cached ones included.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path


def count(testlogs: Path) -> tuple[int, int, int]:
    passed = failed = skipped = 0
    for report in sorted(testlogs.rglob("test.xml")):
        for suite in ElementTree.parse(report).getroot().iter("testsuite"):
            total = int(suite.get("tests", 0))
            bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
            skip = int(suite.get("skipped", 0))
            passed += total - bad - skip
            failed += bad
            skipped += skip
    return passed, failed, skipped


def main() -> None:
    testlogs = Path(sys.argv[1] if len(sys.argv) > 1 else "bazel-testlogs")
    passed, failed, skipped = count(testlogs.resolve())
    print(f"{passed} passed, {failed} failed, {skipped} skipped")


if __name__ == "__main__":
    main()
