"""Register the champion in MLflow (alias `champion`) with its bundle and drift reference.

The drift reference (libs.drift `ReferenceProfile`) is built here, from the training
split's features, the champion's predicted labels on the validation split, and the
TF-IDF vocabulary coverage of the validation texts, and is stored twice: inside the
bundle (the service's live monitor reads it from there) and as the run artifact
`drift_reference/reference.json` (the drift workflow reads it from the registry).

Why idempotent instead of cached: the registry is outside Flyte's cache. The run is
tagged with a key of everything that determines the champion (bundle content, data,
seed); a re-run that finds a registered version with the same key re-points the alias
to it instead of creating a duplicate version, and a deleted registry is simply
re-populated.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flytekit import Resources, current_context, task
from flytekit.types.directory import FlyteDirectory
from flytekit.types.file import FlyteFile

from libs.drift import ReferenceProfile
from libs.features import CLEAN_COLUMN, CONTRACT, Tfidf
from workflows.etl import EtlStats, Features
from workflows.evaluate import Evaluation
from workflows.image import TASK_IMAGE
from workflows.train import KindResult, read_split

ALIAS = "champion"
REFERENCE_ARTIFACT = "drift_reference/reference.json"
TFIDF_ARTIFACT = "tfidf/tfidf.json"
BUNDLE_ARTIFACT = "bundle"
KEY_TAG = "kindle.pipeline_key"


@dataclass
class Registration:
    model_name: str
    version: str
    run_id: str
    tracking_uri: str
    bundle: FlyteDirectory
    reused: bool


def artifact_location(tracking_uri: str) -> str | None:
    """Artifacts of a SQLite store sit beside its database (not in the working directory)."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///") :]).parent / "mlartifacts").resolve().as_uri()
    return None


def experiment_id(client: object, name: str, tracking_uri: str) -> str:
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(tracking_uri))


def champion_version(tracking_uri: str, model_name: str) -> object:
    """The registry version behind the alias, or a clear error when there is none yet."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        return client.get_model_version_by_alias(model_name, ALIAS)
    except MlflowException as error:
        raise RuntimeError(
            f"no '{ALIAS}' version of model {model_name!r} in {tracking_uri}: run the training pipeline first"
        ) from error


def _tree_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def build_reference(bundle: object, train: object, validation: object, tfidf: Tfidf) -> ReferenceProfile:
    """Training features + validation predictions + validation vocabulary coverage."""
    probabilities = np.asarray(bundle.estimator.predict_proba(validation))
    predicted = np.asarray(bundle.labels)[probabilities.argmax(axis=1)]
    coverage = tfidf.coverage(validation[CLEAN_COLUMN].tolist())
    return ReferenceProfile.build(train[CONTRACT.numeric_names], predicted.tolist(), coverage)


@task(
    container_image=TASK_IMAGE,
    requests=Resources(cpu="1", mem="2Gi"),
    limits=Resources(cpu="2", mem="4Gi"),
)
def register_champion(
    evaluation: Evaluation,
    results: list[KindResult],
    train: Features,
    validation: Features,
    tfidf: FlyteFile,
    etl_stats: EtlStats,
    tracking_uri: str,
    model_name: str,
    experiment: str,
    source: str,
    seed: int,
) -> Registration:
    """Logs the run (params, metrics, bundle, reference, plots) and moves the alias."""
    import mlflow

    from libs.models.bundle import load_bundle, save_bundle
    from libs.models.settings import TrainingSettings
    from libs.models.tracking import configure
    from libs.models.tracking import register_champion as register_in_mlflow

    source_bundle = Path(evaluation.champion_bundle.download())
    key = hashlib.sha256(
        json.dumps(
            {"bundle": _tree_hash(source_bundle), "stats": dataclasses.asdict(etl_stats), "seed": seed},
            sort_keys=True,
        ).encode()
    ).hexdigest()
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    work = Path(current_context().working_directory) / "register"
    existing = [
        v for v in client.search_model_versions(f"name = '{model_name}'") if v.tags.get(KEY_TAG) == key
    ]
    if existing:
        version = max(existing, key=lambda v: int(v.version))
        client.set_registered_model_alias(model_name, ALIAS, version.version)
        folder = client.download_artifacts(version.run_id, BUNDLE_ARTIFACT, str(work))
        print(
            f"register: same champion already registered as v{version.version}; alias '{ALIAS}' points at it"
        )
        return Registration(
            model_name, str(version.version), version.run_id, tracking_uri, FlyteDirectory(folder), True
        )

    bundle = load_bundle(source_bundle)
    vectoriser = Tfidf.load(Path(tfidf.download()))
    reference = build_reference(bundle, read_split(train), read_split(validation), vectoriser)
    settings = TrainingSettings(
        kinds=tuple(r.kind for r in results),
        seed=seed,
        mlflow_uri=tracking_uri,
        experiment=experiment,
        registered_model_name=model_name,
        output_dir=work,
    )
    configure(settings)
    champion = next(r for r in results if r.kind == evaluation.champion_kind)
    with mlflow.start_run(run_name=f"champion-{champion.kind}") as run:
        run_id = run.info.run_id
        final = dataclasses.replace(
            bundle,
            drift_reference=reference.to_dict(),
            mlflow_run_id=run_id,
            metrics={**bundle.metrics, **evaluation.test_metrics},
        )
        bundle_dir = save_bundle(final, work / BUNDLE_ARTIFACT)
        mlflow.set_tags(
            {
                "kind": "training",
                "champion_kind": champion.kind,
                "contract_hash": CONTRACT.hash,
                "source": source,
                KEY_TAG: key,
            }
        )
        mlflow.log_params(
            {
                "champion_kind": champion.kind,
                "kinds": ",".join(r.kind for r in results),
                "seed": seed,
                "contract_version": CONTRACT.version,
                **{f"{r.kind}.best_params": r.best_params[:500] for r in results},
            }
        )
        metrics = {"val_macro_f1": champion.val_macro_f1, **evaluation.test_metrics}
        for r in results:
            metrics[f"{r.kind}.val_macro_f1"] = r.val_macro_f1
            metrics[f"{r.kind}.latency_ms"] = r.latency_ms
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)})
        mlflow.log_artifacts(str(bundle_dir), BUNDLE_ARTIFACT)
        with tempfile.TemporaryDirectory() as tmp:
            reference.save(Path(tmp) / "reference.json")
            mlflow.log_artifact(str(Path(tmp) / "reference.json"), "drift_reference")
            vectoriser.save(Path(tmp) / "tfidf.json")
            mlflow.log_artifact(str(Path(tmp) / "tfidf.json"), "tfidf")
            (Path(tmp) / "etl_stats.json").write_text(json.dumps(dataclasses.asdict(etl_stats), indent=1))
            mlflow.log_artifact(str(Path(tmp) / "etl_stats.json"), "data")
        mlflow.log_artifacts(evaluation.plots.download(), "plots")
        # libs.models: logs the bundle as a pyfunc model in this run, registers it, moves
        # `champion` (and `previous` to the old champion).
        version = register_in_mlflow(bundle_dir, settings, run_id)
    client.set_model_version_tag(model_name, version.version, KEY_TAG, key)
    print(f"register: {model_name} v{version.version} (run {run_id}) is now '{ALIAS}'")
    return Registration(
        model_name, str(version.version), run_id, tracking_uri, FlyteDirectory(str(bundle_dir)), False
    )
