"""MLflow: where runs go, what every run is tagged with, and the champion's registration.

One parent run per training, a nested run per kind, and under it a nested run per Optuna
trial. Every run carries the git commit (when there is one), the training data's sha256
and the feature contract hash, so any number in MLflow traces back to code and data.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import mlflow
import optuna
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from optuna.trial import FrozenTrial, TrialState

from libs.features import CONTRACT
from libs.models.bundle import load_bundle
from libs.models.pyfunc import BUNDLE_ARTIFACT, BundlePythonModel, predict_frame
from libs.models.settings import TrainingSettings

logger = logging.getLogger("kindle.models.tracking")

CHAMPION = "champion"
PREVIOUS = "previous"
REPO_ROOT = Path(__file__).resolve().parents[2]


class RegistrationError(RuntimeError):
    """The champion could not be registered; the registry's aliases were left as they were."""


def git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def run_tags(data_fingerprint: str) -> dict[str, str]:
    tags = {"data_fingerprint": data_fingerprint, "contract_hash": CONTRACT.hash}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def configure(settings: TrainingSettings) -> str:
    """Points MLflow at the settings' store and experiment; returns the tracking URI.

    An embedded SQLite store keeps its artifacts in `mlartifacts` beside the database,
    not in whatever the working directory happens to be.
    """
    uri = settings.tracking_uri()
    database = sqlite_file(uri)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(settings.experiment) is None:
        location = None if database is None else (database.parent / "mlartifacts").resolve().as_uri()
        mlflow.create_experiment(settings.experiment, artifact_location=location)
    mlflow.set_experiment(settings.experiment)
    return uri


def sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///` store, also in SQLite's URI form
    (`sqlite:///file:/path/db?mode=ro&uri=true`); None for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///")
    if "uri=true" in path.partition("?")[2]:
        path = path.partition("?")[0].removeprefix("file:")
    return Path(path)


def trial_logger(kind: str, data_fingerprint: str) -> Callable[[optuna.Study, FrozenTrial], None]:
    """An Optuna callback logging each finished trial as a nested run of the active (kind) run."""
    tags = run_tags(data_fingerprint)

    def log(study: optuna.Study, trial: FrozenTrial) -> None:
        with mlflow.start_run(run_name=f"{kind}-trial-{trial.number}", nested=True):
            mlflow.set_tags(
                {**tags, "kind": kind, "trial_state": trial.state.name, "study": study.study_name}
            )
            mlflow.log_params(trial.params)
            metrics = {
                key: float(trial.user_attrs[key])
                for key in ("latency_ms", "latency_p95_ms", "size_bytes")
                if key in trial.user_attrs
            }
            if trial.state is TrialState.COMPLETE:
                metrics["val_macro_f1"] = float(trial.values[0])
            for step, value in trial.intermediate_values.items():
                mlflow.log_metric("val_macro_f1_step", float(value), step=step)
            mlflow.log_metrics(metrics)

    return log


def _alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def register_champion(
    bundle_path: Path, settings: TrainingSettings, run_id: str | None = None
) -> ModelVersion:
    """Logs the bundle as a pyfunc model in `run_id`, registers it, and moves the aliases.

    The new version gets `champion`; the version that had it gets `previous` (the rollback
    target). If logging or registering fails, a RegistrationError says why and no alias moves.
    """
    name = settings.registered_model_name
    uri = settings.tracking_uri()
    step = "connecting to the store"
    try:
        configure(settings)
        client = MlflowClient(uri)
        step = "reading the current champion"
        previous = _alias_version(client, name, CHAMPION)
        bundle = load_bundle(bundle_path)
        example = pd.DataFrame(
            {"reviewText": ["A gripping story, I could not put it down."], "summary": ["Loved it"]}
        )
        signature = infer_signature(example, predict_frame(bundle, example))
        requirements = [f"{lib}=={v}" for lib, v in bundle.library_versions.items() if lib != "python"]
        active = mlflow.active_run()
        same_run = active is not None and active.info.run_id == run_id
        step = "opening the run"
        context = nullcontext() if same_run else mlflow.start_run(run_id=run_id, run_name="register-champion")
        with context:
            step = "logging the model"
            info = mlflow.pyfunc.log_model(
                name="champion_model",
                python_model=BundlePythonModel(),
                artifacts={BUNDLE_ARTIFACT: str(bundle_path)},
                signature=signature,
                input_example=example,
                pip_requirements=[*requirements, f"mlflow=={mlflow.__version__}"],
            )
            step = "registering the model version"
            version = mlflow.register_model(info.model_uri, name, tags={"bundle_version": bundle.version})
    except Exception as error:
        raise RegistrationError(
            f"registering bundle {bundle_path} as {name!r} in MLflow store {uri} failed while {step} "
            f"({type(error).__name__}: {error}); aliases left unchanged"
        ) from error
    old_previous = _alias_version(client, name, PREVIOUS)
    try:
        if previous is not None:
            client.set_registered_model_alias(name, PREVIOUS, previous.version)
        client.set_registered_model_alias(name, CHAMPION, version.version)
    except MlflowException as error:
        _restore_alias(client, name, PREVIOUS, old_previous)
        raise RegistrationError(
            f"version {version.version} of {name!r} registered in MLflow store {uri}, but moving aliases "
            f"failed ({error}); "
            "aliases left unchanged"
        ) from error
    logger.info(
        "registered %s version %s as %s (previous: %s)",
        name,
        version.version,
        CHAMPION,
        previous.version if previous else "none",
    )
    return version


def _restore_alias(client: MlflowClient, name: str, alias: str, version: ModelVersion | None) -> None:
    """Best effort: puts `alias` back where it was (the store may be the thing that failed)."""
    try:
        if version is None:
            client.delete_registered_model_alias(name, alias)
        else:
            client.set_registered_model_alias(name, alias, version.version)
    except MlflowException as error:
        logger.error("could not restore alias %s of %s: %s", alias, name, error)
