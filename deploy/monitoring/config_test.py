"""The monitoring files themselves: the PromQL name extractor, the files' consistency with
each other (compose mounts, scrape targets, datasource uid), and Prometheus's own checks:
`promtool check config`, `promtool check rules` and `promtool test rules` (the alert rules'
unit tests on synthetic series, rules/kindle_alerts_test.yml).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.fixtures.promql import ALERT_RULES, DASHBOARD, Selector, parse, rule_queries
from tests.fixtures.promql import MONITORING as HERE
from tests.fixtures.tools import require_tool


def selectors(expr: str) -> set[tuple[str, frozenset[str]]]:
    return {(s.metric, s.labels) for s in parse(expr).selectors}


@pytest.mark.parametrize(
    ("expr", "expected", "grouping"),
    [
        ("up", {("up", frozenset())}, set()),
        (
            'sum by (le, api) (rate(m_bucket{api=~"predict|sum(x)", protocol!="grpc"}[$__rate_interval]))',
            {("m_bucket", frozenset({"api", "protocol"}))},
            {"le", "api"},
        ),
        (
            "sum(rate(a_total[5m])) without (instance) / on (job) group_left b",
            {("a_total", frozenset()), ("b", frozenset())},
            {"instance", "job"},
        ),
        ("histogram_quantile(0.95, x) > bool 0.5 offset 1h30m", {("x", frozenset())}, set()),
        (
            '{__name__="named", feature="caps"} and max(other) or absent(third)',
            {("named", frozenset({"feature"})), ("other", frozenset()), ("third", frozenset())},
            set(),
        ),
        (
            "count by (type) (errors{type='it\\'s, sum(x)'}) # sum(commented_out)",
            {("errors", frozenset({"type"}))},
            {"type"},
        ),
        (
            "sum(rate(x_sum[1m])) / sum(rate(x_count[1m])) > 1e-3",
            {("x_sum", frozenset()), ("x_count", frozenset())},
            set(),
        ),
    ],
)
def test_extractor_finds_metrics_labels_and_grouping(expr: str, expected: set, grouping: set) -> None:
    assert selectors(expr) == expected
    assert set(parse(expr).grouping) == grouping


def test_extractor_refuses_what_it_cannot_classify() -> None:
    with pytest.raises(ValueError, match="unknown PromQL function"):
        parse("not_a_function(x)")
    with pytest.raises(ValueError, match="unclosed"):
        parse('x{a="b"')
    assert parse("m").selectors == (Selector("m", frozenset()),)


def test_dashboard_uses_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    provisioned = yaml.safe_load((HERE / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = provisioned["datasources"][0]["uid"]
    panels = dashboard["panels"]
    assert dashboard["uid"] and len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"] and all(t["datasource"]["uid"] == uid for t in panel["targets"]), panel[
            "title"
        ]
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in (
        "latency",
        "throughput",
        "errors",
        "label",
        "sentiment",
        "confidence",
        "psi",
        "ready",
        "version",
    ):
        assert topic in titles, topic


def test_compose_mounts_and_scrape_targets_agree() -> None:
    compose = yaml.safe_load((HERE / "compose.yaml").read_text())
    services = compose["services"]
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (HERE / source).exists(), volume
    assert services["kindle-http"]["command"] == ["serve"]
    assert services["kindle-grpc"]["command"] == ["serve-grpc"]
    assert services["kindle-http"]["image"].startswith("${KINDLE_IMAGE:-")
    prometheus = yaml.safe_load((HERE / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: (job["metrics_path"], job["static_configs"][0]["targets"])
        for job in prometheus["scrape_configs"]
    }
    # The service's HTTP port serves /metrics; serve-grpc's metrics port (configuration.yaml) serves /.
    assert targets == {
        "kindle-http": ("/metrics", ["kindle-http:3000"]),
        "kindle-grpc": ("/", ["kindle-grpc:3001"]),
    }
    provider = yaml.safe_load((HERE / "grafana/provisioning/dashboards/kindle.yml").read_text())
    mounted = {
        v.split(":")[1] for v in services["grafana"]["volumes"] if v.startswith("./grafana/dashboards")
    }
    assert provider["providers"][0]["options"]["path"] in mounted
    assert {name for name, _ in rule_queries()} >= {
        "KindleFeatureDrift",
        "KindleHighErrorRate",
        "KindleHighLatencyP95",
    }


def test_grafana_has_no_default_admin_password() -> None:
    """Compose's `${VAR:?message}` stops the whole stack when the variable is unset (docker
    compose also when it is empty): no admin/admin Grafana. podman-compose's refusal is
    checked for real in //deploy/container:image_test."""
    compose = yaml.safe_load((HERE / "compose.yaml").read_text())
    password = compose["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert password.startswith("${GRAFANA_ADMIN_PASSWORD:?") and password.endswith("}"), password


def promtool(*args: str, cwd: Path = HERE) -> str:
    command = [require_tool("promtool"), *args]
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_promtool_accepts_the_config_and_rules() -> None:
    assert "1 rule files found" in promtool("check", "config", "prometheus.yml")
    assert "8 rules found" in promtool("check", "rules", str(ALERT_RULES))


def test_alert_rules_fire_when_they_should_and_only_then() -> None:
    assert "SUCCESS" in promtool("test", "rules", "kindle_alerts_test.yml", cwd=ALERT_RULES.parent)
