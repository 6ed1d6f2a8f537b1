"""The lock file carries no known vulnerability that is neither fixed nor accepted with a reason."""

from __future__ import annotations

import audit


def test_every_finding_on_the_lock_is_accepted_with_a_reason() -> None:
    findings = audit.audit(audit.pins((audit.HERE / "requirements_lock.txt").read_text()))
    allowed = audit.accepted()
    open_findings = [f for f in findings if (f.package, f.advisory) not in allowed]
    assert not open_findings, "upgrade these pins or accept them in audit_accepted.toml:\n" + "\n".join(
        f"{f.package}=={f.version} {f.advisory} {f.severity} (fixed in {f.fixed_in}): {f.summary}"
        for f in open_findings
    )


def test_no_acceptance_outlives_its_finding() -> None:
    findings = audit.audit(audit.pins((audit.HERE / "requirements_lock.txt").read_text()))
    stale = set(audit.accepted()) - {(f.package, f.advisory) for f in findings}
    assert not stale, f"remove these from audit_accepted.toml: {sorted(stale)}"


def test_every_acceptance_gives_a_reason() -> None:
    assert all(len(reason.split()) >= 10 for reason in audit.accepted().values())


def test_the_database_knows_old_vulnerable_releases() -> None:
    """The audit is only as good as its data: a release with well-known advisories is caught."""
    findings = audit.audit({"requests": "2.5.0", "urllib3": "1.24.1", "jinja2": "2.10"})
    assert {f.package for f in findings} == {"requests", "urllib3", "jinja2"}
    assert all(f.advisory.startswith(("GHSA-", "CVE-", "PYSEC-")) for f in findings)


def test_pins_reads_names_and_versions_but_not_hashes() -> None:
    text = "Foo_Bar==1.2.3 \\\n    --hash=sha256:abc\ntorch==2.13.0+cpu ; sys_platform == 'linux'\n# c==1\n"
    assert audit.pins(text) == {"foo-bar": "1.2.3", "torch": "2.13.0+cpu"}
