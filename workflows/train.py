"""HPO + training: one Optuna study per model kind, in parallel branches (`@dynamic`).

Why `@dynamic` rather than `map_task`: the kinds are chosen at run time, and each branch
is then an ordinary cached task with its own resources, so a re-run with one more kind
trains only that kind, and on a cluster every kind is its own pod. The search and the
final fit of the best trial are libs.models' (`train_kind`); this module only moves
data in and the bundle out.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from flytekit import Resources, current_context, dynamic, task
from flytekit.types.directory import FlyteDirectory
from flytekit.types.file import FlyteFile

from libs.features import Tfidf
from libs.models.kinds import SKLEARN_KINDS, ModelKind
from workflows.etl import Features
from workflows.image import TASK_IMAGE
from workflows.settings import cache_version


@dataclass
class KindResult:
    """One branch's outcome: the fitted bundle and what selection and the summary need."""

    kind: str
    bundle: FlyteDirectory
    val_macro_f1: float
    val_accuracy: float
    latency_ms: float
    trials: int
    feasible: bool  # within libs.models' per-review latency budget
    best_params: str  # JSON
    seconds: float


@task(container_image=TASK_IMAGE, requests=Resources(cpu="250m", mem="256Mi"))
def resolve_kinds(kinds: str) -> list[str]:
    """Comma-separated kinds -> checked names; "" = every scikit-learn kind (distilbert is opt-in)."""
    names = [name for name in (part.strip() for part in kinds.split(",")) if name]
    parsed = [ModelKind.parse(name) for name in names] or list(SKLEARN_KINDS)
    return list(dict.fromkeys(kind.value for kind in parsed))


def read_split(split: Features) -> pd.DataFrame:
    """A Parquet split as the features frame libs.models expects (texts + numeric features)."""
    frame = split.open(pd.DataFrame).all()
    return frame.reset_index(drop=True)


def _train(
    kind: str,
    train: pd.DataFrame,
    validation: pd.DataFrame,
    tfidf: Tfidf,
    trials: int,
    timeout_s: float,
    seed: int,
    work: Path,
) -> tuple[Path, dict]:
    """The one call into libs.models: study, final fit of the best trial, bundle on disk.

    The Optuna study's SQLite storage sits in this task's own sandbox: branches run in
    parallel (SQLite is not a shared store), and a re-run is a cache hit anyway.
    """
    from libs.features import CONTRACT
    from libs.models.bundle import ModelBundle, library_versions, new_version, save_bundle
    from libs.models.data import fingerprint
    from libs.models.settings import TrainingSettings
    from libs.models.training import train_kind

    settings = TrainingSettings(
        kinds=(kind,), n_trials=trials, timeout_s=timeout_s or None, seed=seed, output_dir=work
    )
    trained = train_kind(kind, train, validation, settings, tfidf)
    data_fingerprint = fingerprint(train)
    metrics = {f"val_{name}": float(value) for name, value in trained.validation.metrics.items()}
    bundle = ModelBundle(
        kind=trained.kind.value,
        version=new_version(data_fingerprint, trained.kind),
        labels=[int(label) for label in trained.estimator.classes_],
        estimator=trained.estimator,
        tfidf=tfidf,
        metrics=metrics,
        data_fingerprint=data_fingerprint,
        contract_hash=CONTRACT.hash,
        library_versions=library_versions(trained.kind),
    )
    path = save_bundle(bundle, work / "bundle")
    return path, {
        "val_macro_f1": trained.val_macro_f1,
        "val_accuracy": trained.validation.metrics.get("accuracy", float("nan")),
        "latency_ms": trained.latency_ms,
        "trials": trained.trials,
        "feasible": trained.feasible,
        "best_params": trained.params,
    }


@task(
    cache=True,
    cache_version=cache_version("train"),
    container_image=TASK_IMAGE,
    requests=Resources(cpu="2", mem="4Gi"),
    limits=Resources(cpu="2", mem="8Gi"),
)
def train_kind_task(
    kind: str,
    train: Features,
    validation: Features,
    tfidf: FlyteFile,
    trials: int,
    timeout_s: float,
    seed: int,
) -> KindResult:
    """One kind: its Optuna study (trials and/or time budget) and the final fit, as a bundle."""
    started = time.perf_counter()
    work = Path(current_context().working_directory) / f"train-{kind}"
    vectoriser = Tfidf.load(Path(tfidf.download()))
    bundle_dir, metrics = _train(
        kind, read_split(train), read_split(validation), vectoriser, trials, timeout_s, seed, work
    )
    result = KindResult(
        kind=kind,
        bundle=FlyteDirectory(str(bundle_dir)),
        val_macro_f1=float(metrics["val_macro_f1"]),
        val_accuracy=float(metrics.get("val_accuracy", float("nan"))),
        latency_ms=float(metrics.get("latency_ms", float("nan"))),
        trials=int(metrics.get("trials", trials)),
        feasible=bool(metrics.get("feasible", True)),
        best_params=json.dumps(metrics.get("best_params", {}), sort_keys=True, default=str),
        seconds=time.perf_counter() - started,
    )
    print(f"train[{kind}]: val macro-F1 {result.val_macro_f1:.4f} in {result.seconds:.1f} s")
    return result


@dynamic(container_image=TASK_IMAGE, requests=Resources(cpu="250m", mem="512Mi"))
def train_all_kinds(
    kinds: list[str],
    train: Features,
    validation: Features,
    tfidf: FlyteFile,
    trials: int,
    timeout_s: float,
    seed: int,
) -> list[KindResult]:
    """Fans out one `train_kind_task` per kind (parallel pods on a cluster)."""
    return [
        train_kind_task(
            kind=kind,
            train=train,
            validation=validation,
            tfidf=tfidf,
            trials=trials,
            timeout_s=timeout_s,
            seed=seed,
        )
        for kind in kinds
    ]
