"""The closing line of `tools/test.sh`: test cases counted from the reports the invocation's
build events name, a run of `--runs_per_test` counted per run, a flaky test by its last
attempt, a test without a report a failure, and no report the invocation did not leave
(bazel-testlogs keeps those of earlier runs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tools.test_summary import count, reports_of

SCRIPT = Path(__file__).with_name("test_summary.py")


def _report(path: Path, tests: int, failures: int = 0, skipped: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'<testsuites><testsuite name="t" tests="{tests}" failures="{failures}" errors="0" '
        f'skipped="{skipped}"/></testsuites>'
    )
    return path


def _configured(label: str) -> dict[str, Any]:
    """A test target's configuration event (Bazel gives tests a size)."""
    return {"id": {"targetConfigured": {"label": label}}, "configured": {"testSize": "SMALL"}}


def _completed(label: str, success: bool) -> dict[str, Any]:
    return {"id": {"targetCompleted": {"label": label}}, "completed": {"success": success}}


def _result(label: str, report: Path, run: int = 1, attempt: int = 1) -> dict[str, Any]:
    """A test run's event as Bazel writes it: file URIs of the test's log and report."""
    outputs = [{"name": name, "uri": (report.parent / name).as_uri()} for name in ("test.log", "test.xml")]
    return {
        "id": {"testResult": {"label": label, "run": run, "shard": 1, "attempt": attempt}},
        "testResult": {"testActionOutput": outputs, "status": "PASSED"},
    }


def _summary(label: str) -> dict[str, Any]:
    return {"id": {"testSummary": {"label": label}}, "testSummary": {"overallStatus": "PASSED"}}


def test_single_and_repeated_runs_read_their_own_reports(tmp_path: Path) -> None:
    target = tmp_path / "pkg" / "a_test"
    plain = _report(target / "test.xml", tests=4, skipped=1)  # left by an earlier plain run
    runs = [
        _report(target / f"run_{run}_of_3" / "test.xml", tests=4, failures=1 if run == 2 else 0)
        for run in (1, 2, 3)
    ]
    label = "//pkg:a_test"
    plain_run = [_configured(label), _completed(label, True), _result(label, plain), _summary(label)]
    repeated = [_configured(label), _completed(label, True)]
    repeated += [_result(label, report, run=run) for run, report in enumerate(runs, 1)] + [_summary(label)]
    assert count(reports_of(plain_run)) == (3, 0, 1)
    assert count(reports_of(repeated)) == (11, 1, 0)


def test_a_target_without_a_report_counts_as_a_failure(tmp_path: Path) -> None:
    label = "//pkg:never_ran"
    assert count(reports_of([_configured(label), _completed(label, True), _summary(label)])) == (0, 1, 0)


def test_a_test_that_failed_to_build_is_a_failure_not_its_last_runs_report(tmp_path: Path) -> None:
    """Its earlier report still lies in bazel-testlogs; the build events name none, Bazel
    giving it a failed target and maybe a summary."""
    _report(tmp_path / "pkg" / "broken_test" / "test.xml", tests=7)
    label = "//pkg:broken_test"
    assert count(reports_of([_configured(label), _completed(label, False)])) == (0, 1, 0)
    assert count(reports_of([_configured(label), _completed(label, False), _summary(label)])) == (0, 1, 0)


def test_a_flaky_test_counts_its_last_attempt(tmp_path: Path) -> None:
    label = "//pkg:flaky_test"
    folder = tmp_path / "pkg" / "flaky_test"
    first = _report(folder / "test_attempts" / "attempt_1" / "test.xml", tests=2, failures=1)
    last = _report(folder / "test.xml", tests=2)
    events = [_configured(label), _result(label, last, attempt=2), _result(label, first, attempt=1)]
    assert count(reports_of(events)) == (2, 0, 0)


def test_reports_of_targets_this_run_did_not_run_are_not_counted(tmp_path: Path) -> None:
    """After `tools/test.sh //libs/...`, the //services reports of an earlier run of `//...`
    still lie beside this run's in bazel-testlogs, and a test filtered out of this run (built,
    never run) keeps its old one too; only this run's are counted, by the script itself."""
    testlogs = tmp_path / "testlogs"
    libs = _report(testlogs / "libs" / "a_test" / "test.xml", tests=3, skipped=1)
    _report(testlogs / "services" / "b_test" / "test.xml", tests=50, failures=2, skipped=5)
    _report(testlogs / "libs" / "slow_test" / "test.xml", tests=9)
    label, filtered = "//libs:a_test", "//libs:slow_test"
    events = [_configured(label), _configured(filtered), _completed(label, True), _completed(filtered, True)]
    events += [_result(label, libs), _summary(label)]
    path = tmp_path / "events.json"
    path.write_text("".join(json.dumps(event) + "\n" for event in events))
    line = subprocess.run(
        [sys.executable, str(SCRIPT), str(path)], check=True, capture_output=True, text=True
    ).stdout
    assert line == "2 passed, 0 failed, 1 skipped\n"


def test_without_build_events_the_script_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "missing.json")], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "no build events" in result.stderr
