"""The transformer and ensemble kinds end to end: the Flyte pipeline, MLflow, the Bento, HTTP and gRPC.

A tiny random-weight BERT made here stands in for the MiniLM checkpoint (same code path,
seconds instead of minutes). On 600 real Kindle reviews the pipeline trains logistic
regression, the transformer and their ensemble; the summary gives each kind's training
time and the ensemble's weight. The transformer's and the ensemble's candidates are then
registered in MLflow, taken back from the registry, packed into Bentos and served over
HTTP and gRPC: every answer equals the offline `predict_proba` of the registered bundle,
and the Bentos install no torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import grpc
import numpy as np
import pytest
from mlflow import MlflowClient

from tests import fixtures
from tests.fixtures.service import Server, grpc_call, http_call, offline, running, texts_and_summaries
from tests.fixtures.tiny_transformer import tiny_distilbert

ROWS = 600
SERVED = ("distilbert", "ensemble")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Private Flyte, MLflow and BentoML homes, the input CSV and the tiny checkpoint."""
    root = tmp_path_factory.mktemp("transformer_pipeline")
    (root / "home").mkdir()
    saved = dict(os.environ)
    os.environ.update(
        HOME=str(root / "home"), BENTOML_HOME=str(root / "bentoml"), BENTOML_DO_NOT_TRACK="true"
    )
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    sample = fixtures.kindle_sample()
    sample.iloc[:ROWS].to_csv(root / "kindle_600.csv")
    tiny = tiny_distilbert(
        root / "tiny", (sample["summary"].fillna("") + " " + sample["reviewText"].fillna("")).tolist()
    )
    yield {"root": root, "input": root / "kindle_600.csv", "tiny": tiny, "out": root / "runs"}
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def summary(env: dict[str, Path]) -> str:
    from workflows.pipeline import training_pipeline
    from workflows.settings import PipelineSettings

    settings = PipelineSettings(
        output_dir=env["out"],
        kinds="logreg,distilbert,ensemble",
        trials=1,
        timeout_s=0,
        seed=7,
        pretrained=str(env["tiny"]),
        transformer_max_length=64,
        latency_budget_ms=1e6,
        build_bento=False,
    )
    return str(training_pipeline(input=str(env["input"]), settings=settings))


def _client(env: dict[str, Path]) -> MlflowClient:
    uri = f"sqlite:///{(env['out'] / 'mlflow.db').resolve()}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_the_summary_gives_each_kind_its_training_time_and_the_ensembles_weight(summary: str) -> None:
    rows = {line.split()[0]: line.split() for line in summary.splitlines() if line.split()[:1]}
    for kind in ("logreg", "distilbert", "ensemble"):
        assert kind in rows, summary
        assert float(rows[kind][5]) >= 0  # the "train s" column
    assert "train s" in summary
    assert "x distilbert +" in summary and "x logreg (weight chosen on validation)" in summary, summary
    assert any(line.startswith("champion: ") for line in summary.splitlines())
    assert "registered: kindle-sentiment v1" in summary


@pytest.fixture(scope="module")
def registered(env: dict[str, Path], summary: str) -> dict[str, Path]:
    """Each transformer kind's candidate, registered under its own model name, back from the registry."""
    from libs.models.training.settings import TrainingSettings
    from libs.models.training.tracking import download_bundle, promote, register

    client = _client(env)
    runs = client.search_runs([client.get_experiment_by_name("kindle-sentiment").experiment_id])
    bundles = {}
    for kind in SERVED:
        (run,) = [r for r in runs if r.info.run_name == f"kind-{kind}"]
        candidate = Path(client.download_artifacts(run.info.run_id, "candidate", str(env["root"] / kind)))
        settings = TrainingSettings(
            output_dir=env["out"], mlflow_tracking_uri=client.tracking_uri, model_name=f"kindle-{kind}"
        )
        version = register(candidate, settings, run.info.run_id)
        promote(str(version.version), settings)
        bundles[kind] = download_bundle(settings, version, env["root"] / f"{kind}-registered")
    return bundles


def test_the_registry_holds_the_candidates_unchanged(
    registered: dict[str, Path], env: dict[str, Path]
) -> None:
    from libs.models.bundle import load_bundle, model_digest

    for kind, path in registered.items():
        assert load_bundle(path).kind == kind
        assert model_digest(path) == model_digest(env["root"] / kind / "candidate")


@pytest.fixture(scope="module")
def servers(registered: dict[str, Path], env: dict[str, Path]) -> Iterator[dict[str, Server]]:
    """Each registered bundle in a Bento of its own, served over HTTP and over gRPC."""
    from workflows.bento import build

    home = env["root"] / "bento_home"
    home.mkdir()
    with ExitStack() as stack:
        started: dict[str, Server] = {}
        for kind, bundle in registered.items():
            tag = build(bundle, env={"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"})
            work = env["root"] / f"serving_{kind}"
            work.mkdir()
            specs = {f"{kind}_http": ("http", {}), f"{kind}_grpc": ("grpc", {})}
            started.update(stack.enter_context(running(specs, tag, home, work)))
        yield started


@pytest.mark.parametrize("kind", SERVED)
def test_http_and_grpc_answer_as_the_registered_bundle_offline(
    kind: str, servers: dict[str, Server], registered: dict[str, Path]
) -> None:
    probe = fixtures.kindle_sample().iloc[ROWS : ROWS + 24]
    texts, summaries = texts_and_summaries(probe)
    expected = offline(registered[kind], texts, summaries)
    body = {"texts": texts, "summaries": summaries}
    reply = http_call(servers[f"{kind}_http"], "predict", body)
    assert reply.status_code == 200, reply.text
    code, over_grpc = grpc_call(servers[f"{kind}_grpc"], "predict", body)
    assert code == grpc.StatusCode.OK, over_grpc
    for answer in (reply.json(), over_grpc):
        np.testing.assert_allclose(np.asarray(answer["probabilities"]), expected, atol=1e-5)
        assert [int(label) for label in answer["labels"]] == (expected.argmax(axis=1) + 1).tolist()
    # Lone requests sent at once (batched across callers by the runner) score as one request.
    # int8's activations are quantised with a scale per batch, so a review's raw probabilities
    # move with its batch-mates by up to about 1e-3; fp32's do not. The bundle's calibration
    # then sharpens or flattens them: a temperature of 0.4 makes that movement 2.5x larger
    # (3.3e-3 seen here once). A wrong row or model would be off by tenths.
    precision = json.loads((registered[kind] / "estimator" / "onnx" / "serving.json").read_text())[
        "precision"
    ]
    tolerance = 1e-5 if precision == "fp32" else 1e-2
    with ThreadPoolExecutor(8) as pool:
        lone = list(
            pool.map(
                lambda i: http_call(
                    servers[f"{kind}_http"], "predict", {"texts": [texts[i]], "summaries": [summaries[i]]}
                ),
                range(8),
            )
        )
    np.testing.assert_allclose([r.json()["probabilities"][0] for r in lone], expected[:8], atol=tolerance)


def test_the_ensemble_explains_with_its_own_predicted_star(
    servers: dict[str, Server], registered: dict[str, Path]
) -> None:
    probe = fixtures.kindle_sample().iloc[ROWS : ROWS + 6]
    texts, _ = texts_and_summaries(probe)
    reply = http_call(servers["ensemble_http"], "explain", {"texts": texts, "top_k": 5})
    assert reply.status_code == 200, reply.text
    expected = offline(registered["ensemble"], texts, [None] * len(texts)).argmax(axis=1) + 1
    assert [int(row["label"]) for row in reply.json()["explanations"]] == expected.tolist()


def test_the_bentos_install_onnxruntime_not_torch_or_transformers(
    servers: dict[str, Server], env: dict[str, Path]
) -> None:
    found = sorted((env["root"] / "bento_home" / "bentos").glob("*/*/env/python/requirements.txt"))
    assert len(found) == len(SERVED)
    for requirements in found:
        lines = requirements.read_text().splitlines()
        names = {line.split("==")[0].strip().lower() for line in lines if line and not line.startswith("#")}
        assert {"onnxruntime", "tokenizers"} <= names, names
        assert not names & {"torch", "transformers", "sentence-transformers"}, names
