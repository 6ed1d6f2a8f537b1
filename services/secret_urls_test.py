"""Secrets inside configured URLs never reach a server's log, nor its readiness answer.

Two real servers (from the source tree, at DEBUG): one posts drift alerts to a webhook
whose URL carries a token (path and query) and cannot reach it, so the drift library logs
the failed post; the other is pointed at an MLflow tracking server with `user:password`
in its URI that refuses connections, so MLflow's errors (quoting the URI) are logged at
start and at every poll. Each log must name the host, and never the secret.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pandas as pd
import pytest
import requests

from tests.fixtures.ports import refusing_port
from tests.fixtures.service import (
    SOURCE_SERVICE,
    Server,
    http_call,
    metric_sum,
    running,
    scrape,
    source_home,
    train_small_bundle,
    wait_until,
)

TOKEN = "xoxb-T0K3N-4b1d9e"  # made-up secrets the logs must not show
PASSWORD = "pw-5ecr3t-77"
USER = "kindle-reader"


@pytest.fixture(scope="module")
def ports() -> Iterator[tuple[int, int]]:
    with refusing_port() as webhook, refusing_port() as mlflow:
        yield webhook, mlflow


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, sample: pd.DataFrame, ports: tuple[int, int]
) -> Iterator[dict[str, Server]]:
    work = tmp_path_factory.mktemp("kindle_secret_urls")
    bundle = train_small_bundle(sample.iloc[:1500], work / "bundle")
    webhook, mlflow = ports
    debug = {"KINDLE_LOG_LEVEL": "DEBUG", "KINDLE_RELOAD_INTERVAL_S": "0.5"}
    specs = {
        "webhook": (
            "http",
            {
                **debug,
                "KINDLE_BUNDLE_PATH": str(bundle),
                "KINDLE_DRIFT_WEBHOOK_URL": f"http://127.0.0.1:{webhook}/hooks/T000/B000/{TOKEN}?token={TOKEN}",
            },
        ),
        "mlflow": (
            "http",
            {
                **debug,
                "KINDLE_MLFLOW_TRACKING_URI": f"http://{USER}:{PASSWORD}@127.0.0.1:{mlflow}",
                "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",  # fail at once: nothing listens there
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "2",
            },
        ),
    }
    with running(specs, SOURCE_SERVICE, source_home(work), work, unready={"mlflow"}) as started:
        yield started


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text, (
            f"{secret!r} appears in: ...{text[max(0, text.find(secret) - 300) :][:600]}"
        )


def test_a_webhook_token_is_not_logged(
    servers: dict[str, Server], sample: pd.DataFrame, ports: tuple[int, int]
) -> None:
    server = servers["webhook"]
    shouting = sample["reviewText"].iloc[:400].str.upper().tolist()  # drifts on caps_ratio
    for start in range(0, len(shouting), 50):
        assert http_call(server, "predict", {"texts": shouting[start : start + 50]}).status_code == 200
    wait_until(
        lambda: metric_sum(scrape(server), "kindle_drift_webhook_failures_total") >= 1,
        "a failed post to the webhook",
        server,
    )
    lines = server.output()
    assert_no_secret("\n".join(lines), TOKEN, "/hooks/T000")
    failures = [json.loads(line) for line in lines if "drift webhook" in line]
    assert failures, "the failed post was not logged"
    assert all(f"http://127.0.0.1:{ports[0]}" in entry["msg"] for entry in failures), failures


def test_tracking_uri_credentials_are_not_logged_nor_answered(
    servers: dict[str, Server], ports: tuple[int, int]
) -> None:
    server = servers["mlflow"]
    where = f"127.0.0.1:{ports[1]}"
    wait_until(
        lambda: sum("champion source not checked" in line for line in server.output()) >= 2,
        "two polls of the unreachable registry",
        server,
    )
    readiness = requests.get(f"{server.url}/readyz", timeout=10)
    assert readiness.status_code == 503
    metadata = http_call(server, "metadata", {}).text
    text = "\n".join(server.output())
    for answered in (text, readiness.text, metadata):
        assert_no_secret(answered, PASSWORD, f"{USER}:")
    assert where in text and where in readiness.json()["reason"], readiness.text  # the host, cut down
