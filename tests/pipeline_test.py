"""The real pipeline, locally: Spark local mode, MLflow on SQLite, a real Bento build.

On 600 real Kindle reviews, logistic regression, 2 trials. Then the drift workflow on
same-domain reviews (no retrain) and on Kindle *device* reviews (retrain launched), and
a second pipeline run that must come from Flyte's local cache.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from tests import fixtures

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
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'unused.db'}"
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


def _pipeline_kwargs(env: dict[str, Path]) -> dict:
    return {
        "input": str(env["data"] / "kindle_600.csv"),
        "output_dir": str(env["out"]),
        "kinds": "logreg",
        "trials": 2,
        "timeout_s": 60.0,
        "max_per_class": 300,
        "seed": 7,
        "build_bento": True,
    }


@pytest.fixture(scope="module")
def first_run(env: dict[str, Path]) -> tuple[str, float]:
    from workflows.training import training_pipeline

    started = time.perf_counter()
    summary = training_pipeline(**_pipeline_kwargs(env))
    return summary, time.perf_counter() - started


def test_pipeline_registers_a_loadable_champion(env: dict[str, Path], first_run: tuple[str, float]) -> None:
    import mlflow

    from libs.features import CONTRACT
    from libs.models.bundle import load_bundle

    summary, _ = first_run
    for line in ("champion: logreg", "MLflow run id: ", "registered: kindle-sentiment v1 (alias champion)"):
        assert line in summary
    uri = f"sqlite:///{(env['out'] / 'mlflow.db').resolve()}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = client.get_model_version_by_alias("kindle-sentiment", "champion")
    assert version.run_id in summary
    run = client.get_run(version.run_id)
    assert run.data.metrics["val_macro_f1"] > 0.2
    assert {"test_macro_f1", "test_accuracy"} <= set(run.data.metrics)
    folder = client.download_artifacts(version.run_id, "bundle", str(env["root"] / "downloaded"))
    bundle = load_bundle(Path(folder))
    assert bundle.contract_hash == CONTRACT.hash
    assert bundle.drift_reference and bundle.drift_reference["rows"] > 100
    probabilities = bundle.predict_proba(["Loved every page, wonderful!"], None)
    assert probabilities.shape == (1, 5)
    artifacts = {a.path for a in client.list_artifacts(version.run_id, "plots")}
    assert any(path.endswith(".png") for path in artifacts)


def test_bento_is_built_with_the_champion(first_run: tuple[str, float]) -> None:
    import bentoml

    summary, _ = first_run
    tag = next(line.split("Bento tag: ")[1] for line in summary.splitlines() if "Bento tag: " in line)
    bento = bentoml.get(tag)
    assert [model.alias for model in bento.info.models] == ["champion"]


def test_second_run_comes_from_the_cache(env: dict[str, Path], first_run: tuple[str, float]) -> None:
    from workflows.training import training_pipeline

    _, first = first_run
    started = time.perf_counter()
    summary = training_pipeline(**{**_pipeline_kwargs(env), "build_bento": False})
    second = time.perf_counter() - started
    print(f"\ncache timings: first run {first:.1f} s, second run {second:.1f} s")
    (env["root"] / "timings.txt").write_text(f"first={first:.1f}s second={second:.1f}s\n")
    assert "champion: logreg" in summary
    assert second < first / 2


def test_drift_same_domain_ends_with_no_drift(env: dict[str, Path], first_run: tuple[str, float]) -> None:
    from workflows.drift import drift_check

    result = drift_check(
        production=str(env["data"] / "same_domain.csv"), output_dir=str(env["out"]), build_bento=False
    )
    assert result.startswith("no drift")


def test_drift_other_domain_launches_retraining(env: dict[str, Path], first_run: tuple[str, float]) -> None:
    import mlflow

    from workflows.drift import drift_check

    kwargs = _pipeline_kwargs(env)
    result = drift_check(
        production=str(env["data"] / "devices.csv"),
        training_input=kwargs["input"],
        output_dir=kwargs["output_dir"],
        kinds="logreg",
        trials=2,
        timeout_s=60.0,
        max_per_class=300,
        seed=7,
        build_bento=False,
    )
    assert "training pipeline summary" in result and "champion: logreg" in result
    uri = f"sqlite:///{(env['out'] / 'mlflow.db').resolve()}"
    runs = mlflow.MlflowClient(tracking_uri=uri).search_runs(
        [mlflow.get_experiment_by_name("kindle-sentiment").experiment_id]
        if False
        else [mlflow.MlflowClient(tracking_uri=uri).get_experiment_by_name("kindle-sentiment").experiment_id],
        filter_string="tags.kind = 'drift_check'",
    )
    assert {run.data.metrics["drift_retrain"] for run in runs} == {0.0, 1.0}
    assert pd.notna(max(run.data.metrics["drift_max_psi"] for run in runs))
