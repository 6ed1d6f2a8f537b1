"""Registration against a store that fails: an unreachable tracking server and a read-only
SQLite store. Either way the error names the store and the step, no version gets the
champion alias, and the aliases stay where they were (real MLflow on SQLite throughout)."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from libs.features import CONTRACT, Tfidf
from libs.models.bundle import ModelBundle, library_versions, new_version, save_bundle
from libs.models.data import fingerprint, labels_of
from libs.models.estimators import build_estimator
from libs.models.settings import TrainingSettings
from libs.models.tracking import CHAMPION, RegistrationError, register_champion
from tests.fixtures.ports import refusing_port

NAME = "kindle-sentiment-faults"


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory, train_df: pd.DataFrame, tfidf: Tfidf) -> Path:
    estimator = build_estimator("logreg", {"C": 1.0}, tfidf).fit(train_df, labels_of(train_df))
    bundle = ModelBundle(
        kind="logreg",
        version=new_version(fingerprint(train_df), "logreg"),
        labels=[1, 2, 3, 4, 5],
        estimator=estimator,
        tfidf=tfidf,
        metrics={},
        data_fingerprint=fingerprint(train_df),
        contract_hash=CONTRACT.hash,
        library_versions=library_versions("logreg"),
    )
    return save_bundle(bundle, tmp_path_factory.mktemp("bundle") / "bundle")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, bundle_path: Path) -> Path:
    """A real SQLite registry whose champion is version 1."""
    work = tmp_path_factory.mktemp("registry")
    register_champion(bundle_path, settings(f"sqlite:///{work / 'mlflow.db'}", work))
    return work


def settings(uri: str, work: Path) -> TrainingSettings:
    return TrainingSettings(mlflow_uri=uri, output_dir=work, registered_model_name=NAME)


def registry_state(store: Path) -> tuple[list[str], dict[str, str]]:
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    versions = sorted(v.version for v in client.search_model_versions(f"name='{NAME}'"))
    return versions, dict(client.get_registered_model(NAME).aliases)


def test_an_unreachable_tracking_server_fails_fast_naming_it(
    store: Path, bundle_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    before = registry_state(store)
    with refusing_port() as port:
        uri = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        with pytest.raises(RegistrationError) as failure:
            register_champion(bundle_path, settings(uri, store))
    assert time.monotonic() - started < 60
    message = str(failure.value)
    assert f"MLflow store {uri}" in message and "connecting to the store" in message, message
    assert "aliases left unchanged" in message
    assert registry_state(store) == before


def test_a_read_only_store_refuses_the_run_and_moves_no_alias(store: Path, bundle_path: Path) -> None:
    before = registry_state(store)
    assert before[1][CHAMPION] == before[0][-1]
    read_only = f"sqlite:///file:{store / 'mlflow.db'}?mode=ro&uri=true"
    with pytest.raises(RegistrationError) as failure:
        register_champion(bundle_path, settings(read_only, store))
    message = str(failure.value)
    assert f"MLflow store {read_only}" in message and "readonly database" in message, message
    assert registry_state(store) == before
    assert not list(store.glob("file:*")), "the read-only URI was taken for a folder name"
