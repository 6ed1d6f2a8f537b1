"""MLflow: where runs go, what every run is tagged with, registration and promotion.

One parent run per training, a nested run per kind, and under it a nested run per Optuna
trial. Every run carries the git commit (when there is one), the training data's sha256
and the feature contract hash, so any number in MLflow traces back to code and data.

Registering and promoting are separate steps: `register` adds a model version (the
bundle as a pyfunc model, with signature and input example) and moves no alias;
`promote` then makes it `champion` and the version it replaces `previous`. Aliases only
move forwards: a version older than the current champion is never made champion, also when
several trainings promote at once (the check and the move run under `promotion_lock`).
Failures raise `RegistrationError` naming the store (credentials redacted) and the step,
with the aliases as they were.
"""

from __future__ import annotations

import logging
import os
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import mlflow
import optuna
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.environment_variables import (
    MLFLOW_PRINT_MODEL_URLS_ON_CREATION,
    MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT,
)
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from optuna.trial import FrozenTrial, TrialState

from libs.features import CONTRACT
from libs.models.bundle import load_bundle
from libs.models.pyfunc import BUNDLE_ARTIFACT, BundlePythonModel, predict_frame
from libs.models.registry import CHAMPION, PREVIOUS
from libs.models.training.selection import SelectionMetric
from libs.models.training.settings import TrainingSettings
from libs.urls import redact_url

logger = logging.getLogger("kindle.models.tracking")

BUNDLE_VERSION_TAG = "bundle_version"
MODEL_ARTIFACT = "champion_model"


class RegistrationError(RuntimeError):
    """The model could not be registered or promoted; the registry's aliases were left as they were."""


def git_commit() -> str | None:
    try:
        result = subprocess.run(
            # from this file's folder: git finds the checkout it is in, if any
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
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
    not in whatever the working directory happens to be. For a URI that carries more than
    scheme and host (credentials, a token), MLflow's own "View run at <URI>" lines are
    switched off: they would print it whole.
    """
    uri = settings.tracking_uri()
    database = sqlite_file(uri)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
    if redact_url(uri) != uri.rstrip("/"):  # credentials, a token, a path: MLflow would print them
        os.environ[MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.name] = "true"
        os.environ[MLFLOW_PRINT_MODEL_URLS_ON_CREATION.name] = "false"
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


def trial_logger(
    kind: str, data_fingerprint: str, metric: SelectionMetric
) -> Callable[[optuna.Study, FrozenTrial], None]:
    """An Optuna callback logging each finished trial as a nested run of the active (kind) run.

    A complete trial logs all its validation metrics (`val_macro_f1` among them, whichever
    metric the study was searched by, tagged `selection_metric`); the intermediate scores
    the pruner saw are the selection metric's, `val_<metric>_step`.
    """
    tags = {**run_tags(data_fingerprint), "kind": kind, "selection_metric": metric.value}

    def log(study: optuna.Study, trial: FrozenTrial) -> None:
        with mlflow.start_run(run_name=f"{kind}-trial-{trial.number}", nested=True):
            mlflow.set_tags({**tags, "trial_state": trial.state.name, "study": study.study_name})
            mlflow.log_params(trial.params)
            metrics = {
                key: float(trial.user_attrs[key])
                for key in ("latency_ms", "latency_p95_ms", "size_bytes")
                if key in trial.user_attrs
            }
            if trial.state is TrialState.COMPLETE:
                metrics |= {
                    f"val_{key}": float(value) for key, value in trial.user_attrs["val_metrics"].items()
                }
            for step, value in trial.intermediate_values.items():
                mlflow.log_metric(f"val_{metric}_step", float(value), step=step)
            mlflow.log_metrics(metrics)

    return log


def client_for(settings: TrainingSettings) -> MlflowClient:
    uri = settings.tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


# What the registry answers for a model (RESOURCE_DOES_NOT_EXIST) or alias (INVALID_PARAMETER_VALUE)
# that does not exist.
_ABSENT = {ErrorCode.Name(RESOURCE_DOES_NOT_EXIST), ErrorCode.Name(INVALID_PARAMETER_VALUE)}


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version behind `alias`, or None when the model or the alias does not exist yet.

    Any other failure (the store locked or unreachable) raises: read as "no champion", it
    would let `promote` move the alias without comparing, possibly backwards."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if error.error_code in _ABSENT:
            return None
        raise


def download_bundle(settings: TrainingSettings, version: ModelVersion, into: Path) -> Path:
    """The bundle folder of a registered version (inside its pyfunc model's artifacts)."""
    client = client_for(settings)
    local = Path(client.download_artifacts(version.run_id, MODEL_ARTIFACT, str(into)))
    manifests = sorted(local.rglob("manifest.json"))
    if not manifests:
        raise RegistrationError(f"version {version.version} of {settings.model_name!r} holds no bundle")
    return manifests[0].parent


def current_champion(settings: TrainingSettings, into: Path) -> tuple[ModelVersion, Path] | None:
    """(the champion's version, its bundle folder downloaded into `into`), or None if there is none."""
    version = alias_version(client_for(settings), settings.model_name, CHAMPION)
    if version is None:
        return None
    return version, download_bundle(settings, version, into)


def _failure(settings: TrainingSettings, what: str, step: str, error: Exception) -> RegistrationError:
    return RegistrationError(
        f"{what} {settings.model_name!r} in MLflow store {redact_url(settings.tracking_uri())} failed "
        f"while {step} ({type(error).__name__}: {error}); aliases left unchanged"
    )


def register(bundle_path: Path, settings: TrainingSettings, run_id: str | None = None) -> ModelVersion:
    """Logs the bundle as a pyfunc model in `run_id` (or a new run) and registers a version.

    No alias moves here: that is `promote`'s decision.
    """
    step = "connecting to the store"
    try:
        configure(settings)
        bundle = load_bundle(bundle_path)
        example = pd.DataFrame(
            {"reviewText": ["A gripping story, I could not put it down."], "summary": ["Loved it"]}
        )
        signature = infer_signature(example, predict_frame(bundle, example))
        requirements = [f"{lib}=={v}" for lib, v in bundle.library_versions.items() if lib != "python"]
        active = mlflow.active_run()
        same_run = active is not None and active.info.run_id == run_id
        step = "opening the run"
        context = nullcontext() if same_run else mlflow.start_run(run_id=run_id, run_name="register")
        with context:
            step = "logging the model"
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT,
                python_model=BundlePythonModel(),
                artifacts={BUNDLE_ARTIFACT: str(bundle_path)},
                signature=signature,
                input_example=example,
                pip_requirements=[*requirements, f"mlflow=={mlflow.__version__}"],
            )
            step = "registering the model version"
            version = mlflow.register_model(
                info.model_uri, settings.model_name, tags={BUNDLE_VERSION_TAG: bundle.version}
            )
    except Exception as error:
        raise _failure(settings, f"registering bundle {bundle_path} as", step, error) from error
    logger.info("registered %s version %s", settings.model_name, version.version)
    return version


PROMOTION_LOCK_SUFFIX = ".promoting"  # the registered model that is the promotion lock of a model
PROMOTION_LOCK_WAIT_S = 120.0  # how long a promotion waits for another one to finish
PROMOTION_LOCK_STALE_S = 60.0  # a lock this old was left by a promotion that died: it is broken


@contextmanager
def promotion_lock(client: MlflowClient, name: str) -> Iterator[None]:
    """Holds the promotion lock of model `name`: only one promotion reads and moves its aliases
    at a time, in any number of processes, on SQLite as on a tracking server.

    MLflow's aliases have no compare-and-set, but creating a registered model that already
    exists fails (RESOURCE_ALREADY_EXISTS) atomically in every store: the lock is the
    registered model `<name>.promoting`, created to take it and deleted to give it back. A
    promotion takes milliseconds, so a lock older than `PROMOTION_LOCK_STALE_S` (by the
    store's clock against this one's) was left by a process that died, and is broken.
    """
    lock = f"{name}{PROMOTION_LOCK_SUFFIX}"
    deadline = time.monotonic() + PROMOTION_LOCK_WAIT_S
    while True:
        try:
            client.create_registered_model(lock, description=f"held by pid {os.getpid()} promoting {name}")
            break
        except MlflowException as error:
            # Taken; or (a store that looks the name up after a failed insert) taken and
            # given back in between: either way, try again.
            if error.error_code not in (
                ErrorCode.Name(RESOURCE_ALREADY_EXISTS),
                ErrorCode.Name(RESOURCE_DOES_NOT_EXIST),
            ):
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"promotion lock {lock!r} held for over {PROMOTION_LOCK_WAIT_S:.0f} s")
        _break_if_stale(client, lock)
        time.sleep(random.uniform(0.01, 0.1))  # jittered, so waiting promotions do not move in step
    try:
        yield
    finally:
        try:
            client.delete_registered_model(lock)
        except MlflowException as error:  # it goes stale and is broken by the next promotion
            logger.error("could not release promotion lock %s: %s", lock, error)


def _break_if_stale(client: MlflowClient, lock: str) -> None:
    try:
        held_s = time.time() - client.get_registered_model(lock).creation_timestamp / 1000
        if held_s > PROMOTION_LOCK_STALE_S:
            logger.warning("breaking promotion lock %s, held for %.0f s", lock, held_s)
            client.delete_registered_model(lock)
    except MlflowException:  # released (or broken) meanwhile: the next try takes it
        pass


def promote(version: str, settings: TrainingSettings) -> ModelVersion | None:
    """Makes `version` the champion and the old champion `previous`; returns the old champion.

    Refuses to move `champion` backwards (to a version older than the current one). The
    check and the move happen under `promotion_lock`, so concurrent promotions never move it
    backwards either: the newest version promoted ends as champion. If moving an alias
    fails, the aliases are put back as they were.
    """
    try:
        client = client_for(settings)
        with promotion_lock(client, settings.model_name):
            return _move_aliases(client, version, settings)
    except (MlflowException, TimeoutError) as error:
        step = "taking the promotion lock"
        raise _failure(settings, f"promoting version {version} of", step, error) from error


def _move_aliases(client: MlflowClient, version: str, settings: TrainingSettings) -> ModelVersion | None:
    """`promote`'s read-check-write of the aliases; the caller holds the promotion lock."""
    name = settings.model_name
    try:
        current = alias_version(client, name, CHAMPION)
        old_previous = alias_version(client, name, PREVIOUS)
    except Exception as error:
        raise _failure(settings, "promoting a version of", "reading the aliases", error) from error
    if current is not None and int(current.version) >= int(version):
        if int(current.version) == int(version):
            return current
        raise RegistrationError(
            f"refusing to move {CHAMPION!r} of {name!r} backwards, "
            f"from version {current.version} to {version}"
        )
    try:
        if current is not None:
            client.set_registered_model_alias(name, PREVIOUS, current.version)
        client.set_registered_model_alias(name, CHAMPION, version)
    except MlflowException as error:
        _restore_alias(client, name, PREVIOUS, old_previous)
        raise _failure(settings, f"promoting version {version} of", "moving the aliases", error) from error
    logger.info(
        "%s version %s is now %s (previous: %s)",
        name,
        version,
        CHAMPION,
        current.version if current else "none",
    )
    return current


def _restore_alias(client: MlflowClient, name: str, alias: str, version: ModelVersion | None) -> None:
    """Best effort: puts `alias` back where it was (the store may be the thing that failed)."""
    try:
        if version is None:
            client.delete_registered_model_alias(name, alias)
        else:
            client.set_registered_model_alias(name, alias, version.version)
    except MlflowException as error:
        logger.error("could not restore alias %s of %s: %s", alias, name, error)
