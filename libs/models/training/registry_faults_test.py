"""Registration against a store that fails: an unreachable tracking server and a read-only
SQLite store. Either way the error names the store and the step, no version gets the
champion alias, and the aliases stay where they were (real MLflow on SQLite throughout)."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from libs.models.registry import CHAMPION
from libs.models.training.settings import TrainingSettings
from libs.models.training.tracking import RegistrationError, promote, register
from libs.urls import redact_url
from tests.fixtures.models import logreg_bundle
from tests.fixtures.ports import refusing_port

NAME = "kindle-sentiment-faults"


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory, train_df: pd.DataFrame) -> Path:
    return logreg_bundle(train_df, tmp_path_factory.mktemp("bundle") / "bundle", c=1.0)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, bundle_path: Path) -> Path:
    """A real SQLite registry whose champion is version 1."""
    work = tmp_path_factory.mktemp("registry")
    registered = register(bundle_path, settings(f"sqlite:///{work / 'mlflow.db'}", work))
    promote(str(registered.version), settings(f"sqlite:///{work / 'mlflow.db'}", work))
    return work


def settings(uri: str, work: Path) -> TrainingSettings:
    return TrainingSettings(mlflow_tracking_uri=uri, output_dir=work, model_name=NAME)


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
            register(bundle_path, settings(uri, store))
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
        register(bundle_path, settings(read_only, store))
    message = str(failure.value)
    assert f"MLflow store {redact_url(read_only)}" in message and "readonly database" in message, message
    assert registry_state(store) == before
    assert not list(store.glob("file:*")), "the read-only URI was taken for a folder name"
