"""The training run on a real local SQLite MLflow store: run hierarchy, tags, registration,
promotion and the aliases."""

import shutil
import threading
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from libs.features import CLEAN_COLUMN, CONTRACT, Tfidf
from libs.models.bundle import load_bundle
from libs.models.kinds import ModelKind
from libs.models.registry import CHAMPION, PREVIOUS
from libs.models.training.data import fingerprint
from libs.models.training.selection import SelectionMetric
from libs.models.training.settings import TrainingSettings
from libs.models.training.stages import Decision, Finished, KindResult, conclude, open_run, search_kind
from libs.models.training.tracking import RegistrationError, alias_version, promote, register

NAME = "kindle-sentiment-test"
Outcome = tuple[list[KindResult], Finished, Decision, str | None]
ORDINAL = ("mae_stars", "off_by_one_accuracy", "quadratic_kappa")
"""The ordinal metrics every evaluation reports beside macro-F1."""
CALIBRATION = tuple(
    f"{name}_{stage}" for name in ("ece", "brier", "log_loss") for stage in ("before", "after")
)
"""What every candidate (on validation) and the champion's test report log about calibration."""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> TrainingSettings:
    work = tmp_path_factory.mktemp("mlflow")
    return TrainingSettings(
        kinds=(ModelKind.LOGREG, ModelKind.MLP),
        trials=2,
        timeout_s=120,
        output_dir=work,
        mlflow_tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
        model_name=NAME,
    )


def run_stages(
    train_df: pd.DataFrame,
    validation: pd.DataFrame,
    test: pd.DataFrame,
    reference: pd.DataFrame,
    settings: TrainingSettings,
) -> Outcome:
    """The stages the pipeline's tasks run, in their order, in this process; TF-IDF is fitted
    in memory where the pipeline fits it with Spark."""
    search_tfidf = Tfidf.fit(train_df[CLEAN_COLUMN].tolist())
    final_tfidf = Tfidf.fit(pd.concat([train_df, validation])[CLEAN_COLUMN].tolist())
    run_id = open_run(settings, "in-memory", fingerprint(train_df))
    work = settings.output_dir / "runs" / run_id
    results = [
        search_kind(
            kind, train_df, validation, search_tfidf, final_tfidf, settings, work / "candidates", run_id
        )
        for kind in settings.kinds
    ]
    concluded = conclude(results, test, reference, settings, run_id, work, {"rows_in": len(train_df)})
    return results, concluded.finished, concluded.decision, concluded.version


@pytest.fixture(scope="module")
def trainings(
    store: TrainingSettings, train_df: pd.DataFrame, val_df: pd.DataFrame, test_df: pd.DataFrame
) -> list[Outcome]:
    """Two trainings in a row: the second, on more data and selecting by MAE, is scored against
    the first's champion."""
    reference = pd.concat([train_df, val_df])
    first = run_stages(train_df, val_df, test_df, reference, store)
    more = pd.concat([train_df, val_df.iloc[: len(val_df) // 2]], ignore_index=True)
    return [
        first,
        run_stages(
            more,
            val_df.iloc[len(val_df) // 2 :],
            test_df,
            reference,
            store.model_copy(update={"promotion_margin": 1.0, "selection_metric": SelectionMetric.MAE_STARS}),
        ),
    ]


def client(store: TrainingSettings) -> MlflowClient:
    return MlflowClient(store.tracking_uri())


def aliases(store: TrainingSettings) -> dict[str, str]:
    return {
        alias: str(version) for alias, version in client(store).get_registered_model(NAME).aliases.items()
    }


def test_one_parent_run_with_a_nested_run_per_kind_and_per_trial(
    store: TrainingSettings, trainings: list[Outcome]
) -> None:
    parent = client(store).get_run(load_bundle(trainings[0][1].bundle).mlflow_run_id)
    runs = mlflow.search_runs(experiment_ids=[parent.info.experiment_id], output_format="list")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["kind"] for r in children) == ["logreg", "mlp"]
    for kind_run in children:
        trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == kind_run.info.run_id]
        assert len(trials) == 2
        assert all(t.data.tags["selection_metric"] == "macro_f1" for t in trials)
        assert all({"val_macro_f1", "val_mae_stars"} <= set(t.data.metrics) for t in trials)
        assert kind_run.data.params["selection_metric"] == "macro_f1"
        assert {f"val_{name}" for name in ("macro_f1", *ORDINAL, *CALIBRATION)} <= set(kind_run.data.metrics)
        assert kind_run.data.params["calibration"] in {"temperature", "isotonic", "sigmoid"}
    assert {f"test_{name}" for name in ("macro_f1", *ORDINAL, *CALIBRATION)} <= set(parent.data.metrics)
    artifacts = {a.path for a in client(store).list_artifacts(parent.info.run_id, "reports")}
    assert "reports/test_reliability.png" in artifacts, artifacts
    assert parent.data.tags["contract_hash"] == CONTRACT.hash
    assert len(parent.data.tags["data_fingerprint"]) == 64


def test_the_first_champion_is_promoted_and_the_next_one_moves_it_to_previous(
    store: TrainingSettings, trainings: list[Outcome]
) -> None:
    (_, _, first, v1), (_, _, second, v2) = trainings
    assert first.promote and first.champion_score is None
    assert second.promote and second.champion_version == v1 and second.champion_score is not None
    assert aliases(store) == {CHAMPION: v2, PREVIOUS: v1}


def test_each_training_records_the_metric_it_selected_by_and_its_decision_s_scores(
    store: TrainingSettings, trainings: list[Outcome]
) -> None:
    parents = [
        client(store).get_run(load_bundle(finished.bundle).mlflow_run_id) for _, finished, _, _ in trainings
    ]
    assert [parent.data.params["selection_metric"] for parent in parents] == ["macro_f1", "mae_stars"]
    assert "challenger_macro_f1" in parents[0].data.metrics
    assert {"challenger_mae_stars", "champion_mae_stars"} <= set(parents[1].data.metrics)
    second = trainings[1][2]
    assert second.metric is SelectionMetric.MAE_STARS and "challenger mae_stars" in second.reason
    assert parents[1].data.metrics["champion_mae_stars"] == pytest.approx(second.champion_score)


def test_the_champion_alias_never_moves_backwards(store: TrainingSettings, trainings: list[Outcome]) -> None:
    before = aliases(store)
    with pytest.raises(RegistrationError, match="backwards, from version 2 to 1"):
        promote(before[PREVIOUS], store)
    assert aliases(store) == before


def test_the_registered_champion_scores_reviews_as_a_pyfunc(
    store: TrainingSettings, trainings: list[Outcome]
) -> None:
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    reviews = pd.DataFrame(
        {"reviewText": ["Wonderful, loved it", "Dull and too long"], "summary": ["Yes", None]}
    )
    scores = model.predict(reviews)
    assert list(scores.columns) == ["p_1", "p_2", "p_3", "p_4", "p_5", "stars", "sentiment"]
    assert set(scores["stars"]) <= {1, 2, 3, 4, 5}
    assert model.metadata.signature is not None


def test_the_final_bundle_has_test_metrics_and_a_drift_reference_of_the_reference_rows(
    trainings: list[Outcome], train_df: pd.DataFrame, val_df: pd.DataFrame
) -> None:
    results, finished, _, _ = trainings[1]
    bundle = load_bundle(finished.bundle)
    assert bundle.kind == finished.kind and bundle.kind in {r.kind for r in results}
    assert bundle.metrics["test_macro_f1"] == pytest.approx(finished.test["macro_f1"])
    assert bundle.drift_reference is not None and bundle.drift_reference.rows == len(train_df) + len(val_df)


def test_a_failed_registration_says_why_and_leaves_the_aliases(
    store: TrainingSettings, trainings: list[Outcome]
) -> None:
    before = aliases(store)
    artifacts = store.output_dir / "mlartifacts"
    shutil.rmtree(artifacts)
    artifacts.write_text("an artifact store that cannot be written")  # a broken store
    try:
        with pytest.raises(RegistrationError, match=f"as '{NAME}'.*aliases left unchanged"):
            register(trainings[1][1].bundle, store)
    finally:
        artifacts.unlink()
    assert aliases(store) == before


def test_the_default_store_is_sqlite_in_the_output_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KINDLE_MLFLOW_TRACKING_URI", raising=False)
    assert (
        TrainingSettings(output_dir=tmp_path).tracking_uri()
        == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    )
    monkeypatch.setenv("KINDLE_MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert TrainingSettings(output_dir=tmp_path).tracking_uri() == "sqlite:///elsewhere.db"


RACE_ROUNDS = 25


def promote_at(
    start: threading.Barrier, version: str, settings: TrainingSettings, outcomes: dict[str, str]
) -> None:
    """Promotes `version` once every racer is at `start`; records "promoted" or the refusal."""
    start.wait()
    try:
        promote(version, settings)
        outcomes[version] = "promoted"
    except RegistrationError as error:
        outcomes[version] = str(error)


def test_concurrent_promotions_end_on_the_newer_version_and_never_move_it_backwards(tmp_path: Path) -> None:
    """Two threads promote a newer and an older version at the same instant, round after
    round, on a real SQLite store, while a third reads `champion` all along: without the
    promotion lock both read the same champion and the older one's write can land last."""
    name = "kindle-sentiment-race"
    settings = TrainingSettings(
        output_dir=tmp_path, mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", model_name=name
    )
    registry = MlflowClient(settings.tracking_uri())
    registry.create_registered_model(name)

    def new_version() -> str:
        return str(registry.create_model_version(name, source=tmp_path.as_uri()).version)

    def champion() -> int:
        version = alias_version(registry, name, CHAMPION)
        assert version is not None
        return int(version.version)

    promote(new_version(), settings)
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.002):
            seen.append(champion())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(RACE_ROUNDS):
            older, newer = new_version(), new_version()
            start = threading.Barrier(2)
            outcomes: dict[str, str] = {}
            racers = [
                threading.Thread(target=promote_at, args=(start, version, settings, outcomes))
                for version in (older, newer)
            ]
            for racer in racers:
                racer.start()
            for racer in racers:
                racer.join()
            assert outcomes[newer] == "promoted", outcomes
            assert outcomes[older] == "promoted" or "backwards" in outcomes[older], outcomes
            assert champion() == int(newer), outcomes
    finally:
        done.set()
        watcher.join()
    assert seen and seen == sorted(seen), seen
    assert not [m.name for m in registry.search_registered_models() if m.name != name]  # no lock left
