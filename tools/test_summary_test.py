"""The closing line of `tools/test.sh`: test cases counted from the reports of this run's
kind, a run of `--runs_per_test` counted per run, a target without a report a failure."""

from __future__ import annotations

from pathlib import Path

from tools.test_summary import count, reports_of


def _report(path: Path, tests: int, failures: int = 0, skipped: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'<testsuites><testsuite name="t" tests="{tests}" failures="{failures}" errors="0" '
        f'skipped="{skipped}"/></testsuites>'
    )


def test_single_and_repeated_runs_read_their_own_reports(tmp_path: Path) -> None:
    target = tmp_path / "pkg" / "a_test"
    _report(target / "test.xml", tests=4, skipped=1)  # left by an earlier plain run
    for run in (1, 2, 3):
        _report(target / f"run_{run}_of_3" / "test.xml", tests=4, failures=1 if run == 2 else 0)
    assert count(reports_of(tmp_path, "//pkg:a_test", repeated=False)) == (3, 0, 1)
    assert count(reports_of(tmp_path, "//pkg:a_test", repeated=True)) == (11, 1, 0)


def test_a_target_without_a_report_counts_as_a_failure(tmp_path: Path) -> None:
    assert count(reports_of(tmp_path, "//pkg:never_ran", repeated=True)) == (0, 1, 0)
