"""The rating service's container image, built and run with Podman on this machine.

tools/image_base.sh builds the Debian 12 base and Debian's Prometheus from the Debian
mirror; a champion trained on real reviews is packed into a Bento, and `bentoml
containerize --backend podman` builds the image on that base, its Python packages
downloaded from the package index. HTTP and gRPC containers of the image then run as
users run them (host network, bound to loopback on reserved ports) and must answer real
reviews exactly as offline scoring of the same bundle does, export their metrics, run as
a non-root user and stop within the grace period with their production batches on disk.
deploy/monitoring/compose.yaml runs the service and Prometheus with podman-compose, and
refuses to start without a Grafana admin password. The build times, the image size and
the comparison figures go to the test log.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import requests
import yaml
from packaging.utils import canonicalize_name

from services.packaging import BENTOFILE, lock_pins
from tests import fixtures
from tests.fixtures import prometheus_api
from tests.fixtures.podman import (
    GRACE_S,
    ComposeProject,
    Container,
    build_base,
    compose_down,
    containerize,
    environment,
    podman,
    unsupported,
)
from tests.fixtures.promql import MONITORING
from tests.fixtures.servers import START_TIMEOUT_S, started_together
from tests.fixtures.service import (
    ServiceProcess,
    build_test_bento,
    grpc_call,
    grpc_metrics_options,
    http_call,
    metric_sum,
    offline,
    scrape,
    texts_and_summaries,
)
from tests.fixtures.tools import unavailable

PROTOCOLS = ("http", "grpc")
SCORED = 300  # real reviews each container scores, compared with offline scoring
BUILD_CACHE = "localhost/kindle-sentiment-test:build-cache"
BASE = yaml.safe_load(BENTOFILE.read_text())["docker"]["base_image"]


@dataclass(frozen=True)
class Image:
    name: str
    bento_dir: Path
    bundle_dir: Path
    base_id: str  # of the base the image was built on


def image_id(name: str) -> str:
    return podman("image", "inspect", "--format", "{{.Id}}", name).strip()


def keep_as_build_cache(image: str) -> None:
    """Leaves the newest test image under BUILD_CACHE instead of removing it: removing an
    image removes the layers only it uses, the Python packages' among them, so the next
    build would download and install them all again. The image it replaces goes."""
    try:
        previous: str | None = image_id(BUILD_CACHE)
    except RuntimeError:  # the first build on this machine
        previous = None
    podman("tag", image, BUILD_CACHE)
    podman("rmi", image)  # the test's own tag only
    if previous not in (None, image_id(BUILD_CACHE)):
        with contextlib.suppress(RuntimeError):  # still used by a run in parallel: it stays
            podman("rmi", previous)


@pytest.fixture(scope="module", autouse=True)
def podman_runs_here() -> None:
    """Every test here builds or runs images: where Podman cannot, each test is skipped with
    the reason (failed in CI) before any fixture builds anything."""
    reason = unsupported()
    if reason is not None:
        unavailable(reason)


@pytest.fixture(scope="module")
def reviews() -> pd.DataFrame:
    return fixtures.kindle_reviews().sample(frac=1.0, random_state=11).reset_index(drop=True)


@pytest.fixture(scope="module")
def image(reviews: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    """The bases from the Debian mirror (their default tags: the bentofile's and the
    compose file's), then the image of a fresh champion's Bento, kept afterwards only as
    the next run's build cache."""
    work = tmp_path_factory.mktemp("image")
    print(f"\n{build_base('python')}\n{build_base('prometheus')}")
    tag, home, bundle_dir = build_test_bento(work, reviews.iloc[SCORED : SCORED + 1500])
    name, version = tag.split(":")
    image_name = f"localhost/kindle-sentiment-test:{version}"
    build_s = containerize(tag, home, image_name)
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image_name))
    print(f"containerize: {image_name} in {build_s:.1f} s, {size / 1e6:.0f} MB")
    try:
        yield Image(image_name, home / "bentos" / name / version, bundle_dir, image_id(BASE))
    finally:
        keep_as_build_cache(image_name)


class ServiceContainer(ServiceProcess, Container):
    """`serve` or `serve-grpc` of the image as users run it, on the host network bound to
    loopback, with its state folder (drift window, production batches) mounted from `work`."""

    def __init__(self, protocol: str, image: str, work: Path) -> None:
        self.protocol = protocol
        self.state_dir = work / f"state_{protocol}"
        self.state_dir.mkdir()

        def arguments(ports: Sequence[int]) -> list[str]:
            # :U gives the folder to the image's user, as a named volume would be.
            options = ["--volume", f"{self.state_dir}:/home/bentoml/state:U"]
            if protocol == "grpc":
                options += ["--env", f"BENTOML_CONFIG_OPTIONS={grpc_metrics_options(ports[1])}"]
            command = "serve" if protocol == "http" else "serve-grpc"
            return [*options, image, command, "--host", "127.0.0.1", "--port", str(ports[0])]

        super().__init__(f"kindle-{protocol}", arguments, work / f"{protocol}.log", self.port_count(protocol))


@pytest.fixture(scope="module")
def containers(
    image: Image, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ServiceContainer]]:
    work = tmp_path_factory.mktemp("containers")
    makers = {protocol: partial(ServiceContainer, protocol, image.name, work) for protocol in PROTOCOLS}
    with started_together(makers) as started:
        yield started


def in_image(image: Image, script: str) -> object:
    """What a Python script run by the image's own interpreter prints, as JSON."""
    return json.loads(podman("run", "--rm", "--entrypoint", "python", image.name, "-c", script))


def test_image_holds_the_bentos_pinned_packages_on_debians_python(image: Image) -> None:
    """On the bentofile's base: exactly the Bento's lock-pinned packages, installed from the
    package index, on the Debian package's CPython; no torch for a scikit-learn champion."""
    layers = "{{json .RootFS.Layers}}"
    base_layers = json.loads(podman("image", "inspect", "--format", layers, BASE))
    assert (
        json.loads(podman("image", "inspect", "--format", layers, image.name))[: len(base_layers)]
        == base_layers
    )
    found = in_image(
        image,
        "import json, sys, importlib.metadata as m; print(json.dumps({'python': sys.version,"
        " 'base': sys.base_prefix, 'packages': {d.metadata['Name'].lower(): d.version"
        " for d in m.distributions()}}))",
    )
    assert isinstance(found, dict)
    pins = (image.bento_dir / "env" / "python" / "requirements.txt").read_text().splitlines()
    wanted = {canonicalize_name(name): version for name, _, version in (pin.partition("==") for pin in pins)}
    packages = {canonicalize_name(name): version for name, version in found["packages"].items()}
    assert packages == wanted
    assert "torch" not in packages and packages["scikit-learn"] == lock_pins()["scikit-learn"]
    assert found["base"] == "/usr" and found["python"].startswith("3.11."), found
    print(f"image: {len(packages)} distributions, Python {found['python'].split()[0]} from /usr")


def test_the_base_rebuilds_to_the_same_image(image: Image) -> None:
    """Reproducible: built again from the same mirror, the base keeps its image ID (and so
    every image built on it keeps its cached layers)."""
    again = build_base("python")
    assert f"{BASE} unchanged" in again and image_id(BASE) == image.base_id, again


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_answers_equal_offline_scoring(
    containers: dict[str, ServiceContainer], image: Image, reviews: pd.DataFrame, protocol: str
) -> None:
    server = containers[protocol]
    texts, summaries = texts_and_summaries(reviews.iloc[:SCORED])
    probabilities, labels = [], []
    for start in range(0, SCORED, 100):
        body = {"texts": texts[start : start + 100], "summaries": summaries[start : start + 100]}
        if protocol == "http":
            reply = http_call(server, "predict", body)
            assert reply.status_code == 200, reply.text
            answer = reply.json()
        else:
            code, answer = grpc_call(server, "predict", body)
            assert code.name == "OK", answer
        probabilities += answer["probabilities"]
        labels += [int(label) for label in answer["labels"]]
    expected = offline(image.bundle_dir, texts, summaries)
    difference = float(np.abs(np.asarray(probabilities) - expected).max())
    print(f"{protocol}: {SCORED} reviews, max |container - offline predict_proba| = {difference:.1e}")
    assert difference <= 1e-9
    assert labels == (expected.argmax(axis=1) + 1).tolist()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_metrics_are_scraped(
    containers: dict[str, ServiceContainer], reviews: pd.DataFrame, protocol: str
) -> None:
    server = containers[protocol]
    before = metric_sum(scrape(server), "kindle_predictions_total")
    records = [{"reviewText": text} for text in reviews["reviewText"].iloc[:7]]
    if protocol == "http":
        assert http_call(server, "predict_batch", records).status_code == 200
    else:
        assert grpc_call(server, "predict_batch", records)[0].name == "OK"
    values = scrape(server)
    assert metric_sum(values, "kindle_predictions_total") == before + 7
    assert values["kindle_model_ready"] == 1
    assert metric_sum(values, "kindle_requests_total", api="predict_batch", protocol=protocol) >= 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_server_runs_as_a_non_root_user(
    containers: dict[str, ServiceContainer], image: Image, protocol: str
) -> None:
    assert podman("image", "inspect", "--format", "{{.Config.User}}", image.name).strip() == "bentoml"
    processes = [psutil.Process(pid) for pid in containers[protocol].pids()]
    assert len(processes) > 1  # BentoML's supervisor and its workers
    users = {(process.pid, *process.uids()) for process in processes}
    assert all(0 not in ids for _, *ids in users), users


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_stopping_is_clean(containers: dict[str, ServiceContainer], protocol: str) -> None:
    """SIGTERM: exit status 0 well within the grace period, and every prediction the drift
    feed took is in a production batch file (the workers flush theirs on shutdown)."""
    server = containers[protocol]
    values = scrape(server)
    predicted = metric_sum(values, "kindle_predictions_total")
    dropped = metric_sum(values, "kindle_drift_dropped_rows_total")
    server.stop()
    assert server.process.returncode == 0, server.tail()
    assert server.stop_seconds is not None and server.stop_seconds < GRACE_S / 2, server.stop_seconds
    folder = server.state_dir / "batches"
    rows = sum(len(pd.read_parquet(path)) for path in folder.glob("batch-*.parquet"))
    print(f"{protocol}: stopped in {server.stop_seconds:.1f} s, {rows} of {predicted:.0f} rows in batches")
    assert predicted >= SCORED and rows == predicted - dropped
    assert not [path.name for path in folder.iterdir() if path.name.startswith(".")]


class MonitoringStack(ComposeProject):
    """The service's HTTP and gRPC servers and Prometheus from compose.yaml (Grafana's image
    is not reachable here). Ready once Prometheus and the HTTP server are: conmon holds a
    published port from the start, whether or not the server behind it listens yet."""

    def __init__(self, image: Image, folder: Path) -> None:
        password = secrets.token_urlsafe(12)

        def variables(ports: Sequence[int]) -> dict[str, str]:
            return {
                "PROMETHEUS_PORT": str(ports[0]),
                "KINDLE_HTTP_PORT": str(ports[1]),
                "KINDLE_GRPC_PORT": str(ports[2]),
                "KINDLE_IMAGE": image.name,
                "GRAFANA_ADMIN_PASSWORD": password,
            }

        super().__init__(
            f"kindle-stack-{os.getpid()}",
            folder / "compose.yaml",
            ["kindle-http", "kindle-grpc", "prometheus"],
            variables,
            folder / "compose.log",
            n_ports=3,
        )

    def _probe(self, need_ready: bool) -> bool:
        http = f"http://127.0.0.1:{self.ports[1]}/readyz"
        return all(requests.get(url, timeout=2).status_code == 200 for url in (f"{self.url}/-/ready", http))


@pytest.fixture(scope="module")
def monitoring(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/monitoring as real files (Bazel's runfiles are symlinks no container can follow)."""
    folder = tmp_path_factory.mktemp("stack") / "monitoring"
    shutil.copytree(MONITORING, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return folder


def test_the_stack_refuses_to_start_without_a_grafana_password(monitoring: Path) -> None:
    """No default admin password: podman-compose reads the whole file before it runs anything
    (`--dry-run` prints the commands instead), and stops at the unset variable, naming it.
    (podman-compose 1.0.3 lets an empty value through, which docker compose refuses.)"""
    compose_file, project = monitoring / "compose.yaml", f"kindle-password-{os.getpid()}"
    command = ["podman-compose", "-f", str(compose_file), "-p", project, "--dry-run", "up", "-d"]
    env = {key: value for key, value in environment().items() if key != "GRAFANA_ADMIN_PASSWORD"}
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0
    assert "set GRAFANA_ADMIN_PASSWORD" in refused.stderr, refused.stderr[-2000:]
    try:
        env["GRAFANA_ADMIN_PASSWORD"] = "chosen"
        accepted = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert accepted.returncode == 0, accepted.stderr[-2000:]
        assert "-e GF_SECURITY_ADMIN_PASSWORD=chosen" in accepted.stdout
    finally:  # even a dry run creates the project's volumes and network
        compose_down(compose_file, project, {"GRAFANA_ADMIN_PASSWORD": "chosen"})


def scraped(stack: MonitoringStack, expr: str) -> None:
    """Waits until `expr` holds on the stack's Prometheus (every 15 s a scrape, slower on a
    loaded machine); if it never does, says what each target's last scrape reported."""
    try:
        prometheus_api.wait_for(stack.url, expr, timeout_s=START_TIMEOUT_S)
    except TimeoutError as error:
        targets = requests.get(f"{stack.url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        last = [(t["labels"]["job"], t["health"], t["lastError"], t["lastScrapeDuration"]) for t in targets]
        raise AssertionError(f"{error}; targets: {last}\n{stack.tail()}") from None


def test_compose_runs_the_service_and_prometheus_scrapes_it(image: Image, monitoring: Path) -> None:
    """podman-compose up: the HTTP server answers on its published loopback port (with the
    compose file's settings: no API key unless one is set), and the Debian-built Prometheus
    loads the alert rules and scrapes both servers, model ready, that prediction counted."""
    with started_together({"stack": partial(MonitoringStack, image, monitoring)}) as started:
        stack = started["stack"]
        http = f"http://127.0.0.1:{stack.ports[1]}"
        reply = requests.post(f"{http}/predict", json={"texts": ["Could not put it down."]}, timeout=30)
        assert reply.status_code == 200, reply.text
        scraped(stack, 'count(kindle_model_ready{job=~"kindle-http|kindle-grpc"} == 1) == 2')
        scraped(stack, 'sum(kindle_predictions_total{job="kindle-http"}) == 1')
        rules = requests.get(f"{stack.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        names = {rule["name"] for group in rules for rule in group["rules"]}
        assert {"KindleFeatureDrift", "KindleHighErrorRate", "KindleHighLatencyP95"} <= names
