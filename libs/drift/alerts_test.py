"""Drift alerts: once per crossing, as a JSON log line, a counter and a webhook POST."""

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from libs.drift import LiveMonitor, ReferenceProfile
from libs.features import compute_features
from tests import fixtures
from tests.fixtures.ports import refusing_port

# Features on which the Kindle device reviews drift from the book reviews (PSI > 0.2).
DRIFTING = {"text_len", "word_count", "exclamation_count", "question_count"}


class Receiver(ThreadingHTTPServer):
    """A real HTTP endpoint on 127.0.0.1 that records what it is sent."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.received: list[dict[str, object]] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/alerts"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append(json.loads(body))
        self.send_response(self.server.status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def serve(status: int) -> Iterator[Receiver]:
    server = Receiver(status)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve(200)


@pytest.fixture
def failing_receiver() -> Iterator[Receiver]:
    yield from serve(500)


@pytest.fixture(scope="module")
def reference() -> ReferenceProfile:
    reviews = fixtures.kindle_sample()
    return ReferenceProfile.build(
        compute_features(reviews["reviewText"].tolist(), reviews["summary"].tolist())
    )


@pytest.fixture(scope="module")
def devices() -> pd.DataFrame:
    reviews = fixtures.kindle_devices()
    return compute_features(reviews["reviewText"].tolist(), reviews["summary"].tolist())


def alerts(registry: CollectorRegistry, feature: str) -> float:
    return registry.get_sample_value("kindle_drift_alerts_total", {"feature": feature}) or 0.0


def failures(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("kindle_drift_webhook_failures_total") or 0.0


def test_crossing_the_threshold_raises_one_alert_per_feature(
    reference: ReferenceProfile, devices: pd.DataFrame
) -> None:
    registry = CollectorRegistry()
    monitor = LiveMonitor(reference, registry=registry, recompute_rows=300)
    for start in range(0, len(devices), 100):
        monitor.observe(devices.iloc[start : start + 100])
    assert {name for name in reference.names if alerts(registry, name) == 1} == DRIFTING
    assert alerts(registry, "caps_ratio") == 0


def test_alert_is_a_structured_json_log_line(
    reference: ReferenceProfile, devices: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="libs.drift.alerts"):
        LiveMonitor(reference).observe(devices)
    events = [
        json.loads(record.getMessage()) for record in caplog.records if record.name == "libs.drift.alerts"
    ]
    assert {event["feature"] for event in events} == DRIFTING
    assert all(event["event"] == "kindle_drift_alert" and event["psi"] > 0.2 for event in events)


def test_webhook_receives_each_alert_as_json(
    reference: ReferenceProfile, devices: pd.DataFrame, receiver: Receiver
) -> None:
    monitor = LiveMonitor(reference, webhook_url=receiver.url)
    monitor.observe(devices)
    assert monitor.alerter.flush(timeout=5)
    assert {event["feature"] for event in receiver.received} == DRIFTING
    assert all(event["threshold"] == 0.2 for event in receiver.received)


def test_webhook_error_status_is_counted_not_raised(
    reference: ReferenceProfile, devices: pd.DataFrame, failing_receiver: Receiver
) -> None:
    registry = CollectorRegistry()
    monitor = LiveMonitor(reference, registry=registry, webhook_url=failing_receiver.url)
    monitor.observe(devices)
    assert monitor.alerter.flush(timeout=5)
    assert failures(registry) == len(DRIFTING)


def test_unreachable_webhook_is_counted_not_raised(
    reference: ReferenceProfile, devices: pd.DataFrame
) -> None:
    with refusing_port() as port:
        registry = CollectorRegistry()
        monitor = LiveMonitor(reference, registry=registry, webhook_url=f"http://127.0.0.1:{port}/")
        monitor.observe(devices)
        assert monitor.alerter.flush(timeout=5)
    assert failures(registry) == len(DRIFTING)


def test_workers_sharing_a_state_folder_alert_once_in_all(
    reference: ReferenceProfile, devices: pd.DataFrame, tmp_path: Path
) -> None:
    registries = [CollectorRegistry(), CollectorRegistry()]
    monitors = [
        LiveMonitor(reference, registry=registry, state_dir=tmp_path, worker_id=str(i))
        for i, registry in enumerate(registries)
    ]
    monitors[0].observe(devices.iloc[:400])
    monitors[1].observe(devices.iloc[400:])
    monitors[0].refresh()
    assert sum(alerts(registry, "text_len") for registry in registries) == 1


def test_a_feature_alerts_again_after_it_came_back(
    reference: ReferenceProfile, devices: pd.DataFrame
) -> None:
    reviews = fixtures.kindle_sample().head(800)
    books = compute_features(reviews["reviewText"].tolist(), reviews["summary"].tolist())
    registry = CollectorRegistry()
    monitor = LiveMonitor(reference, registry=registry, window_rows=700)
    monitor.observe(devices)
    monitor.observe(books)
    assert monitor.report is not None and not monitor.report.retrain
    monitor.observe(devices)
    assert alerts(registry, "text_len") == 2
