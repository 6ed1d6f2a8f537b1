"""The model search: one branch per model kind (`@dynamic`), each a thin adapter over
`libs.models.training.stages.search_kind`, nested under the run's parent MLflow run.

Why `@dynamic` rather than `map_task`: the kinds are chosen at run time, and each branch
is then an ordinary cached task with its own resources, so a re-run with one more kind
trains only that kind, and on a cluster every kind is its own pod.

Why the Optuna study lives in the output folder, not the task's sandbox: Flyte gives
every execution a fresh working directory, so a search killed mid-way would otherwise
restart from zero. The study is named by kind, search settings and data, so the re-run
of a killed branch finishes only the trials still owed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from flytekit import Resources, current_context, dynamic, task
from flytekit.types.directory import FlyteDirectory
from flytekit.types.file import FlyteFile

from libs.features import Tfidf
from libs.models.kinds import ModelKind
from libs.models.training.settings import TrainingSettings
from workflows.etl import Features
from workflows.image import TASK_IMAGE
from workflows.settings import SETTINGS, cache_version


@dataclass
class KindOutcome:
    """One branch's outcome: the candidate bundle and what selection and the summary need."""

    kind: str
    bundle: FlyteDirectory
    params: str  # JSON
    validation: dict[str, float]
    latency_ms: float
    trials: int
    feasible: bool
    study: str
    seconds: float
    run_id: str


@dataclass
class SearchOptions:
    """The search settings a run overrides (the rest are libs.models' TrainingSettings defaults)."""

    trials: int
    timeout_s: float
    seed: int
    latency_budget_ms: float
    output_dir: str
    tracking_uri: str
    experiment: str


@task(container_image=TASK_IMAGE, requests=Resources(cpu="250m", mem="256Mi"))
def resolve_kinds(kinds: str) -> list[str]:
    """Comma-separated kinds -> checked names; "" = the default kinds."""
    names = [name for name in (part.strip() for part in kinds.split(",")) if name]
    parsed = [ModelKind.parse(name) for name in names] or list(SETTINGS.kinds)
    return list(dict.fromkeys(kind.value for kind in parsed))


def read_split(split: Features) -> pd.DataFrame:
    """A Parquet split as the features frame libs.models expects (texts + numeric features)."""
    frame = split.open(pd.DataFrame).all()
    return frame.reset_index(drop=True)


def training_settings(options: SearchOptions, kinds: str = "") -> TrainingSettings:
    """libs.models' settings for this run: the pipeline's inputs over the environment's defaults."""
    values = {
        "trials": options.trials,
        "timeout_s": options.timeout_s,
        "seed": options.seed,
        "latency_budget_ms": options.latency_budget_ms,
        "output_dir": Path(options.output_dir),
        "mlflow_tracking_uri": options.tracking_uri,
        "experiment": options.experiment,
    }
    return TrainingSettings(**values, **({"kinds": kinds} if kinds else {}))


@task(
    cache=True,
    cache_version=cache_version("train"),
    cache_ignore_input_vars=("parent_run_id",),
    container_image=TASK_IMAGE,
    requests=Resources(cpu="2", mem="4Gi"),
    limits=Resources(cpu="2", mem="8Gi"),
)
def train_kind_task(
    kind: str,
    train: Features,
    validation: Features,
    search_tfidf: FlyteFile,
    final_tfidf: FlyteFile,
    options: SearchOptions,
    parent_run_id: str,
) -> KindOutcome:
    """One kind: its Optuna study and the chosen configuration refit on train + validation."""
    from libs.models.training.stages import search_kind

    result = search_kind(
        kind,
        read_split(train),
        read_split(validation),
        Tfidf.load(Path(search_tfidf.download())),
        Tfidf.load(Path(final_tfidf.download())),
        training_settings(options, kind),
        Path(current_context().working_directory) / "candidate",
        parent_run_id=parent_run_id,
    )
    print(f"train[{kind}]: val macro-F1 {result.val_macro_f1:.4f}, {result.trials} trials")
    return KindOutcome(
        kind=result.kind,
        bundle=FlyteDirectory(str(result.bundle)),
        params=json.dumps(result.params, sort_keys=True, default=str),
        validation=result.validation,
        latency_ms=result.latency_ms,
        trials=result.trials,
        feasible=result.feasible,
        study=result.study,
        seconds=result.seconds,
        run_id=result.run_id or "",
    )


@dynamic(container_image=TASK_IMAGE, requests=Resources(cpu="250m", mem="512Mi"))
def train_all_kinds(
    kinds: list[str],
    train: Features,
    validation: Features,
    search_tfidf: FlyteFile,
    final_tfidf: FlyteFile,
    options: SearchOptions,
    parent_run_id: str,
) -> list[KindOutcome]:
    """Fans out one `train_kind_task` per kind (parallel pods on a cluster)."""
    return [
        train_kind_task(
            kind=kind,
            train=train,
            validation=validation,
            search_tfidf=search_tfidf,
            final_tfidf=final_tfidf,
            options=options,
            parent_run_id=parent_run_id,
        )
        for kind in kinds
    ]
