"""The real pipeline, locally: Spark local mode, MLflow on SQLite, a real Bento build.

On 600 real Kindle reviews, logistic regression, 2 trials: the champion is registered
with the MLflow layout the README describes, its Bento built; a second run comes from
Flyte's cache and registers nothing new; the drift check says "no drift" on same-domain
reviews and, on Kindle *device* reviews without labelled feedback, that it will not
retrain. (Retraining on feedback is `tests/lifecycle_test.py`.)
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests
from mlflow import MlflowClient

from tests import fixtures
from tests.fixtures.servers import ServerProcess, started

if TYPE_CHECKING:
    from workflows.settings import PipelineSettings

ROWS = 600


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Private FLYTE / MLflow / BentoML homes: tests never touch the user's stores."""
    root = tmp_path_factory.mktemp("pipeline")
    home = root / "home"
    home.mkdir()
    saved = dict(os.environ)
    os.environ["HOME"] = str(home)  # flytekit's local cache lives in ~/.flyte
    os.environ["BENTOML_HOME"] = str(root / "bentoml")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    data = root / "data"
    data.mkdir()
    sample = fixtures.kindle_sample()
    sample.iloc[:ROWS].to_csv(data / "kindle_600.csv")
    # Same domain, other reviews: no drift expected.
    sample.iloc[ROWS : ROWS + 1200][["reviewText", "summary"]].to_csv(data / "same_domain.csv", index=False)
    fixtures.kindle_devices()[["reviewText", "summary"]].to_csv(data / "devices.csv", index=False)
    yield {"root": root, "data": data, "out": root / "runs"}
    os.environ.clear()
    os.environ.update(saved)


def _settings(env: dict[str, Path], **changes: object) -> PipelineSettings:
    from workflows.settings import PipelineSettings

    values = {
        "output_dir": env["out"],
        "kinds": "logreg",
        "trials": 2,
        "timeout_s": 60.0,
        "seed": 7,
        "build_bento": True,
    }
    return PipelineSettings(**{**values, **changes})


def _pipeline_kwargs(env: dict[str, Path], **changes: object) -> dict:
    return {"input": str(env["data"] / "kindle_600.csv"), "settings": _settings(env, **changes)}


def _client(env: dict[str, Path]) -> MlflowClient:
    uri = f"sqlite:///{(env['out'] / 'mlflow.db').resolve()}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture(scope="module")
def first_run(env: dict[str, Path]) -> tuple[str, float]:
    from workflows.pipeline import training_pipeline

    started = time.perf_counter()
    summary = training_pipeline(**_pipeline_kwargs(env))
    return summary, time.perf_counter() - started


def test_pipeline_registers_a_loadable_champion(env: dict[str, Path], first_run: tuple[str, float]) -> None:
    from libs.features import CONTRACT
    from libs.models.bundle import load_bundle
    from libs.models.training.settings import TrainingSettings
    from libs.models.training.tracking import download_bundle

    summary, _ = first_run
    for line in (
        "champion: logreg",
        "decision: promoted: no champion yet",
        "registered: kindle-sentiment v1",
    ):
        assert line in summary, summary
    client = _client(env)
    version = client.get_model_version_by_alias("kindle-sentiment", "champion")
    run = client.get_run(version.run_id)
    assert run.info.run_id in summary
    assert {"test_macro_f1", "test_accuracy", "challenger_macro_f1"} <= set(run.data.metrics)
    settings = TrainingSettings(output_dir=env["out"], mlflow_tracking_uri=client.tracking_uri)
    bundle = load_bundle(download_bundle(settings, version, env["root"] / "downloaded"))
    assert bundle.contract_hash == CONTRACT.hash
    assert bundle.drift_reference and bundle.drift_reference.rows > 500  # every kept review, no cap
    assert bundle.predict_proba(["Loved every page, wonderful!"], None).shape == (1, 5)
    assert any(a.path.endswith(".png") for a in client.list_artifacts(version.run_id, "reports"))


def test_the_real_pipeline_writes_parent_kind_and_trial_runs(
    env: dict[str, Path], first_run: tuple[str, float]
) -> None:
    client = _client(env)
    parent = client.get_run(client.get_model_version_by_alias("kindle-sentiment", "champion").run_id)
    runs = client.search_runs([parent.info.experiment_id])
    kinds = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert [r.data.tags["kind"] for r in kinds] == ["logreg"]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == kinds[0].info.run_id]
    assert len(trials) == 2 and all("val_macro_f1" in r.data.metrics for r in trials)
    assert parent.info.status == "FINISHED"


def test_the_optuna_study_lives_in_the_output_folder(
    env: dict[str, Path], first_run: tuple[str, float]
) -> None:
    assert len(list((env["out"] / "optuna").glob("logreg-*.db"))) == 1


def test_bento_is_built_with_the_champion(first_run: tuple[str, float]) -> None:
    import bentoml

    summary, _ = first_run
    tag = next(line.split("Bento tag: ")[1] for line in summary.splitlines() if "Bento tag: " in line)
    assert [model.alias for model in bentoml.get(tag).info.models] == ["champion"]


def test_the_bento_holds_no_test_training_or_development_code(first_run: tuple[str, float]) -> None:
    import bentoml

    summary, _ = first_run
    tag = next(line.split("Bento tag: ")[1] for line in summary.splitlines() if "Bento tag: " in line)
    src = Path(bentoml.get(tag).path) / "src"
    files = sorted(str(path.relative_to(src)) for path in src.rglob("*.py"))
    size = sum(path.stat().st_size for path in src.parent.rglob("*") if path.is_file())
    print(f"\nBento {tag}: {len(files)} Python files, {size / 1024:.0f} KiB")
    assert "services/service.py" in files and "libs/models/bundle.py" in files
    leaked = [
        name
        for name in files
        if name.endswith("_test.py")
        or Path(name).name == "conftest.py"
        or name.split("/")[0] in ("tests", "tools", "workflows")
        or name.startswith(("libs/models/training/", "libs/drift/reports/"))
        or name in ("libs/models/pyfunc.py", "libs/features/spark.py")
    ]
    assert not leaked, leaked


def test_second_run_comes_from_the_cache_and_registers_nothing(
    env: dict[str, Path], first_run: tuple[str, float]
) -> None:
    from workflows.pipeline import training_pipeline

    _, first = first_run
    started = time.perf_counter()
    summary = training_pipeline(**_pipeline_kwargs(env, build_bento=False))
    second = time.perf_counter() - started
    print(f"\ncache timings: first run {first:.1f} s, second run {second:.1f} s")
    assert "decision: unchanged: the champion v1 is this very model" in summary, summary
    assert "registered: nothing new; champion stays v1" in summary
    assert second < first / 2
    versions = _client(env).search_model_versions("name='kindle-sentiment'")
    assert [v.version for v in versions] == [1]


def test_drift_same_domain_ends_with_no_drift(env: dict[str, Path], first_run: tuple[str, float]) -> None:
    from workflows.drift import drift_check
    from workflows.settings import PipelineSettings

    result = drift_check(
        batch_dir=str(env["data"] / "same_domain.csv"),
        settings=PipelineSettings(output_dir=env["out"], build_bento=False),
    )
    assert result.startswith("no drift"), result


def test_drift_without_new_feedback_does_not_retrain(
    env: dict[str, Path], first_run: tuple[str, float]
) -> None:
    from workflows.drift import drift_check
    from workflows.settings import PipelineSettings

    result = drift_check(
        batch_dir=str(env["data"] / "devices.csv"),
        training_input=str(env["data"] / "kindle_600.csv"),
        settings=PipelineSettings(output_dir=env["out"], build_bento=False),
    )
    assert result.startswith("drift (max PSI") and "no labelled feedback newer" in result, result
    runs = _client(env).search_runs(
        [_client(env).get_experiment_by_name("kindle-sentiment").experiment_id],
        filter_string="tags.kind = 'drift_check'",
    )
    assert {run.data.metrics["drift_retrain"] for run in runs} == {0.0, 1.0}


class TrackingServer(ServerProcess):
    """A real MLflow tracking server (SQLite behind it, artifacts proxied) on a reserved port."""

    def __init__(self, work: Path) -> None:
        command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--workers", "1"]
        command += ["--backend-store-uri", f"sqlite:///{work / 'server.db'}"]
        command += ["--artifacts-destination", (work / "artifacts").as_uri()]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        super().__init__(
            "mlflow", lambda ports: ([*command, "--port", str(ports[0])], env), work / "mlflow.log"
        )

    def _probe(self, need_ready: bool) -> bool:
        return requests.get(f"{self.url}/health", timeout=2).status_code == 200


def test_credentials_in_the_tracking_uri_never_reach_the_pipeline_output(
    env: dict[str, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    from workflows.pipeline import training_pipeline

    secret = "s3cret-token-5e1f"
    work = env["root"] / "remote"
    work.mkdir()
    with started(TrackingServer(work)) as server:
        uri = f"http://kindle:{secret}@127.0.0.1:{server.port}"
        summary = training_pipeline(
            **_pipeline_kwargs(env, output_dir=work / "runs", mlflow_tracking_uri=uri, build_bento=False)
        )
    output = capfd.readouterr()
    assert f"registered: kindle-sentiment v1 (alias champion) at http://127.0.0.1:{server.port}" in summary
    assert secret not in output.out + output.err + summary
