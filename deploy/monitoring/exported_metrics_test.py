"""Every metric and label the dashboard and the alert rules query is exported by real servers.

A real HTTP and a real gRPC server (a Bento of a small champion trained on real reviews)
get traffic that exercises predictions, every scoring API, refused requests and input
drift (upper-cased reviews push `caps_ratio` over the alert threshold); then their
metrics endpoints are scraped, directly and by a real Prometheus (Debian's, installed
with promtool) running prometheus.yml's scrape jobs and the alert rules, which answers
every dashboard query and evaluates the alerts on this traffic.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pandas as pd
import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests import fixtures
from tests.fixtures import prometheus_api
from tests.fixtures.promql import ALERT_RULES, Query, all_queries, dashboard_queries
from tests.fixtures.promql import MONITORING as HERE
from tests.fixtures.servers import ServerProcess, started
from tests.fixtures.service import (
    Server,
    build_test_bento,
    grpc_call,
    http_call,
    running,
    texts_and_summaries,
)
from tests.fixtures.tools import require_tool

# Labels Prometheus attaches to every scraped series (prometheus.yml's jobs and targets).
TARGET_LABELS = frozenset({"job", "instance"})
QUERIES = all_queries()

Samples = dict[str, list[tuple[dict[str, str], float]]]  # sample name -> (labels, value) of each series


def exposition(server: Server) -> Samples:
    text = requests.get(server.metrics_url, timeout=10).text
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def send(server: Server, api: str, body: object) -> str:
    if server.protocol == "http":
        return str(http_call(server, api, body).status_code)
    return grpc_call(server, api, body)[0].name


def drive(server: Server, reviews: pd.DataFrame) -> None:
    """Predictions over every scoring API, refused requests, then drifted traffic."""
    ok = "200" if server.protocol == "http" else grpc.StatusCode.OK.name
    texts, summaries = texts_and_summaries(reviews.iloc[:300])
    for start in range(0, 300, 100):
        body = {"texts": texts[start : start + 100], "summaries": summaries[start : start + 100]}
        assert send(server, "predict", body) == ok
    assert send(server, "predict_batch", [{"reviewText": text} for text in texts[:10]]) == ok
    assert send(server, "explain", {"texts": texts[:3], "top_k": 3}) == ok
    assert send(server, "predict", {"texts": []}) != ok
    assert send(server, "predict", {"texts": ["fine", 3]}) != ok
    shouting, _ = texts_and_summaries(reviews.iloc[300:600])
    for start in range(0, 300, 100):
        assert send(server, "predict", {"texts": [t.upper() for t in shouting[start : start + 100]]}) == ok


class Prometheus(ServerProcess):
    """A Prometheus server scraping the test servers with prometheus.yml's jobs every second."""

    def __init__(self, servers: dict[str, Server], work: Path) -> None:
        binary = require_tool("prometheus")
        config = yaml.safe_load((HERE / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(ALERT_RULES)]
        address = {"kindle-http": servers["http"].port, "kindle-grpc": servers["grpc"].metrics_port}
        for job in config["scrape_configs"]:
            job["static_configs"] = [{"targets": [f"127.0.0.1:{address[job['job_name']]}"]}]
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        command = [binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'tsdb'}"]
        super().__init__(
            "prometheus",
            lambda ports: ([*command, f"--web.listen-address=127.0.0.1:{ports[0]}"], dict(os.environ)),
            work / "prometheus.log",
        )

    def _probe(self, need_ready: bool) -> bool:
        return requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200

    def query(self, expr: str) -> list[dict[str, Any]]:
        return prometheus_api.query(self.url, expr)

    def wait_for(self, expr: str, timeout_s: float = 60) -> None:
        prometheus_api.wait_for(self.url, expr, timeout_s)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Samples], Prometheus]]:
    """(each server's scraped samples, a Prometheus that has scraped them a few times)."""
    reviews = fixtures.kindle_reviews().sample(frac=1.0, random_state=5).reset_index(drop=True)
    work = tmp_path_factory.mktemp("monitoring")
    tag, home, _ = build_test_bento(work, reviews.iloc[600:2100])
    with (
        running({"http": ("http", {}), "grpc": ("grpc", {})}, tag, home, work) as servers,
        started(Prometheus(servers, work)) as prometheus,
    ):
        for server in servers.values():
            drive(server, reviews)
        result: dict[str, Samples] = {}
        for name, server in servers.items():
            # The drift feed works off the request path: wait for its window and alert.
            deadline = time.monotonic() + 60
            samples = exposition(server)
            while time.monotonic() < deadline and "kindle_drift_alerts_total" not in samples:
                time.sleep(0.5)
                samples = exposition(server)
            result[name] = samples
        # Both targets up, and enough scrapes since the drift alert for rates over them.
        prometheus.wait_for('count(up{job=~"kindle-http|kindle-grpc"} == 1) == 2')
        prometheus.wait_for("count_over_time(kindle_drift_alerts_total[1m]) >= 5")
        yield result, prometheus


@pytest.fixture(scope="module")
def exported(stack: tuple[dict[str, Samples], Prometheus]) -> dict[str, Samples]:
    return stack[0]


def test_queries_were_found() -> None:
    where = {label.split(" ", 1)[0] for label, _ in QUERIES}
    assert where == {"panel", "rule"} and len(QUERIES) >= 20
    assert all(query.metrics for _, query in QUERIES)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_every_queried_metric_is_exported(exported: dict[str, Samples], protocol: str) -> None:
    samples = exported[protocol]
    missing = {(where, name) for where, query in QUERIES for name in query.metrics if name not in samples}
    assert not missing, sorted(missing)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_every_queried_label_exists(exported: dict[str, Samples], protocol: str) -> None:
    samples = exported[protocol]
    problems = []
    for where, query in QUERIES:
        for selector in query.selectors:
            present = {label for labels, _ in samples.get(selector.metric, []) for label in labels}
            problems += [(where, selector.metric, label) for label in selector.labels - present]
        problems += [(where, "grouping", label) for label in _unknown_grouping(query, samples)]
    assert not problems, problems


def _unknown_grouping(query: Query, samples: Samples) -> set[str]:
    present = {label for metric in query.metrics for labels, _ in samples.get(metric, []) for label in labels}
    return set(query.grouping) - present - TARGET_LABELS


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_traffic_shows_in_the_queried_series(exported: dict[str, Samples], protocol: str) -> None:
    """The series the alerts and panels read carry this traffic: the drift alert's condition
    holds for caps_ratio only, errors are counted by kind, every API's latency is observed."""
    values = exported[protocol]
    drifting = {
        labels["feature"]
        for labels, value in values["kindle_drift_psi"]
        if value > 0.2  # the KindleFeatureDrift threshold
    }
    assert drifting == {"caps_ratio"}, values["kindle_drift_psi"]
    assert {labels["feature"] for labels, _ in values["kindle_drift_alerts_total"]} == {"caps_ratio"}
    error_kinds = {labels["type"] for labels, value in values["kindle_errors_total"] if value > 0}
    assert {"empty", "wrong_type"} <= error_kinds, error_kinds
    observed = {labels["api"] for labels, value in values["kindle_request_duration_seconds_count"] if value}
    assert {"predict", "predict_batch", "explain"} <= observed
    assert {labels["protocol"] for labels, _ in values["kindle_requests_total"]} == {protocol}
    assert sum(value for _, value in values["kindle_predictions_total"]) >= 610
    info = [labels for labels, value in values["kindle_model_info"] if value == 1]
    assert len(info) == 1 and info[0]["kind"] == "logreg" and info[0]["model_version"]


RATE_INTERVAL = "30s"  # what Grafana's $__rate_interval stands for at a 1 s scrape interval


def test_prometheus_answers_every_dashboard_query(stack: tuple[dict[str, Samples], Prometheus]) -> None:
    _, prometheus = stack
    empty = [
        (title, expr)
        for title, expr in dashboard_queries()
        if not prometheus.query(expr.replace("$__rate_interval", RATE_INTERVAL))
    ]
    assert not empty, empty


def test_prometheus_evaluates_the_alert_rules_on_this_traffic(
    stack: tuple[dict[str, Samples], Prometheus],
) -> None:
    """Drift on caps_ratio makes KindleFeatureDrift pending (it fires after 10 minutes); servers
    with a model and no server-side failures raise no error-rate or readiness alert. (Latency
    depends on how loaded the test machine is, so KindleHighLatencyP95 is not asserted here;
    promtool's unit tests cover it.)"""
    _, prometheus = stack
    prometheus.wait_for('ALERTS{alertname="KindleFeatureDrift"}', timeout_s=30)
    alerts = {
        (a["metric"]["alertname"], a["metric"].get("feature"), a["metric"]["alertstate"])
        for a in prometheus.query("ALERTS")
        if a["metric"]["alertname"] != "KindleHighLatencyP95"
    }
    assert alerts == {("KindleFeatureDrift", "caps_ratio", "pending")}, alerts
