"""MLflow on a real local SQLite store: run hierarchy, tags, the champion's registration and aliases."""

import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from libs.features import CONTRACT, Tfidf
from libs.models.bundle import load_bundle
from libs.models.kinds import ModelKind
from libs.models.settings import TrainingSettings
from libs.models.tracking import RegistrationError, register_champion
from libs.models.training import TrainingOutcome, train_and_register

NAME = "kindle-sentiment-test"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> TrainingSettings:
    work = tmp_path_factory.mktemp("mlflow")
    return TrainingSettings(
        kinds=(ModelKind.LOGREG, ModelKind.MLP),
        n_trials=2,
        timeout_s=120,
        output_dir=work,
        mlflow_uri=f"sqlite:///{work / 'mlflow.db'}",
        registered_model_name=NAME,
    )


@pytest.fixture(scope="module")
def trainings(
    store: TrainingSettings, train_df: pd.DataFrame, val_df: pd.DataFrame, test_df: pd.DataFrame, tfidf: Tfidf
) -> list[TrainingOutcome]:
    """Two trainings in a row: the second champion replaces the first."""
    return [train_and_register(train_df, val_df, test_df, tfidf, store) for _ in range(2)]


def client(store: TrainingSettings) -> MlflowClient:
    return MlflowClient(store.tracking_uri())


def test_one_parent_run_with_a_nested_run_per_kind_and_per_trial(
    store: TrainingSettings, trainings: list[TrainingOutcome]
) -> None:
    parent = client(store).get_run(trainings[0].mlflow_run_id)
    runs = mlflow.search_runs(experiment_ids=[parent.info.experiment_id], output_format="list")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["kind"] for r in children) == ["logreg", "mlp"]
    for kind_run in children:
        trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == kind_run.info.run_id]
        assert len(trials) == 2
        assert "val_macro_f1" in kind_run.data.metrics
    assert "test_macro_f1" in parent.data.metrics
    assert parent.data.tags["contract_hash"] == CONTRACT.hash
    assert len(parent.data.tags["data_fingerprint"]) == 64


def test_the_champion_is_registered_with_champion_and_previous_aliases(
    store: TrainingSettings, trainings: list[TrainingOutcome]
) -> None:
    first, second = (int(t.registered_version) for t in trainings)
    assert int(client(store).get_model_version_by_alias(NAME, "champion").version) == second
    assert int(client(store).get_model_version_by_alias(NAME, "previous").version) == first


def test_the_registered_champion_scores_reviews_as_a_pyfunc(
    store: TrainingSettings, trainings: list[TrainingOutcome]
) -> None:
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    reviews = pd.DataFrame(
        {"reviewText": ["Wonderful, loved it", "Dull and too long"], "summary": ["Yes", None]}
    )
    scores = model.predict(reviews)
    assert list(scores.columns) == ["p_1", "p_2", "p_3", "p_4", "p_5", "stars", "sentiment"]
    assert set(scores["stars"]) <= {1, 2, 3, 4, 5}
    assert model.metadata.signature is not None


def test_the_bundle_records_the_training_run(trainings: list[TrainingOutcome]) -> None:
    bundle = load_bundle(trainings[1].bundle_path)
    assert bundle.mlflow_run_id == trainings[1].mlflow_run_id
    assert bundle.kind == trainings[1].champion.kind.value
    assert bundle.metrics["test_macro_f1"] == pytest.approx(trainings[1].test.metrics["macro_f1"])


def test_a_failed_registration_says_why_and_leaves_the_aliases(
    store: TrainingSettings, trainings: list[TrainingOutcome]
) -> None:
    before = {a: client(store).get_model_version_by_alias(NAME, a).version for a in ("champion", "previous")}
    artifacts = store.output_dir / "mlartifacts"
    shutil.rmtree(artifacts)
    artifacts.write_text("an artifact store that cannot be written")  # a broken store
    try:
        with pytest.raises(RegistrationError, match=f"as '{NAME}'.*aliases left unchanged"):
            register_champion(trainings[1].bundle_path, store, trainings[1].mlflow_run_id)
    finally:
        artifacts.unlink()
    after = {a: client(store).get_model_version_by_alias(NAME, a).version for a in ("champion", "previous")}
    assert after == before


def test_the_default_store_is_sqlite_in_the_output_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert (
        TrainingSettings(output_dir=tmp_path).tracking_uri()
        == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert TrainingSettings(output_dir=tmp_path).tracking_uri() == "sqlite:///elsewhere.db"
