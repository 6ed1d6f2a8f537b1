"""The model search: one branch per model kind (`@dynamic`), each a thin adapter over
`libs.models.training.stages.search_kind`, nested under the run's parent MLflow run; then
the ensemble kind, when asked for, from the transformer's and the TF-IDF kinds' candidates
(`libs.models.training.ensemble`).

On a cluster the transformer's branch requests `transformer_gpus` GPUs
(`Resources(gpu=N)` through `with_overrides`); with 0 it trains on its 2 CPUs, which the
CPU recipe is made for.

Why `@dynamic` rather than `map_task`: the kinds are chosen at run time, and each branch
is then an ordinary cached task with its own resources, so a re-run with one more kind
trains only that kind, and on a cluster every kind is its own pod.

Why a branch takes `search_settings(settings)`, not the run's settings: that is its cache
key, so a setting the search does not read (the kinds, the promotion margin, the ETL's)
never throws a finished search away.

Why the Optuna study lives in the output folder, not the task's sandbox: Flyte gives
every execution a fresh working directory, so a search killed mid-way would otherwise
restart from zero. The study is named by kind, search settings and data, so the re-run
of a killed branch finishes only the trials still owed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from flytekit import Resources, current_context, dynamic, task
from flytekit.types.directory import FlyteDirectory
from flytekit.types.file import FlyteFile

from libs.features import Tfidf
from libs.models.kinds import ModelKind
from libs.models.training.ensemble import build_ensemble
from libs.models.training.settings import TrainingSettings
from libs.models.training.stages import KindResult, search_kind, search_settings
from workflows.etl import Features
from workflows.image import TASK_IMAGE
from workflows.settings import PipelineSettings, cache_version


@dataclass
class Candidate:
    """A kind's result as it crosses tasks: its bundle folder travels as a FlyteDirectory
    (a local path means nothing in another pod); `local()` is the result with it downloaded."""

    result: KindResult
    bundle: FlyteDirectory

    def local(self) -> KindResult:
        return dataclasses.replace(self.result, bundle=Path(self.bundle.download()))


def read_split(split: Features) -> pd.DataFrame:
    """A Parquet split as the features frame libs.models expects (texts + numeric features)."""
    frame = split.open(pd.DataFrame).all()
    return frame.reset_index(drop=True)


def candidate_task(stage: str) -> Any:
    """The decorator of a task that makes a kind's candidate: cached by `stage` (not by the
    parent run it logs under), 2 CPUs, as a cluster pod."""
    return task(
        cache=True,
        cache_version=cache_version(stage),
        cache_ignore_input_vars=("parent_run_id",),
        container_image=TASK_IMAGE,
        requests=Resources(cpu="2", mem="4Gi"),
        limits=Resources(cpu="2", mem="8Gi"),
    )


@candidate_task("search")
def search_kind_task(
    kind: str,
    train: Features,
    validation: Features,
    search_tfidf: FlyteFile,
    final_tfidf: FlyteFile,
    settings: TrainingSettings,
    parent_run_id: str,
) -> Candidate:
    """One kind: its Optuna study and the chosen configuration refit on train + validation."""
    result = search_kind(
        kind,
        read_split(train),
        read_split(validation),
        Tfidf.load(Path(search_tfidf.download())),
        Tfidf.load(Path(final_tfidf.download())),
        settings,
        Path(current_context().working_directory) / "candidate",
        parent_run_id=parent_run_id,
    )
    print(f"search[{kind}]: val macro-F1 {result.val_macro_f1:.4f}, {result.trials} trials")
    return Candidate(result, FlyteDirectory(str(result.bundle)))


@candidate_task("ensemble")
def ensemble_task(
    candidates: list[Candidate], validation: Features, settings: TrainingSettings, parent_run_id: str
) -> Candidate:
    """The soft vote of the transformer and the best TF-IDF kind, its weight chosen on validation."""
    result = build_ensemble(
        [candidate.local() for candidate in candidates],
        read_split(validation),
        settings,
        Path(current_context().working_directory) / "candidate",
        parent_run_id=parent_run_id,
    )
    weight = result.params["weight"]
    print(
        f"search[ensemble]: {weight:.2f} x transformer + {result.params['tfidf_kind']}, "
        f"val macro-F1 {result.val_macro_f1:.4f}"
    )
    return Candidate(result, FlyteDirectory(str(result.bundle)))


@dynamic(container_image=TASK_IMAGE, requests=Resources(cpu="250m", mem="512Mi"))
def search_all_kinds(
    train: Features,
    validation: Features,
    search_tfidf: FlyteFile,
    final_tfidf: FlyteFile,
    settings: PipelineSettings,
    parent_run_id: str,
) -> list[Candidate]:
    """Fans out one `search_kind_task` per searched kind of `settings` (parallel pods on a
    cluster), then builds the ensemble from their candidates when `settings` name it."""
    searched = []
    for kind in settings.kinds:
        if not kind.searched:
            continue
        branch = search_kind_task(
            kind=kind.value,
            train=train,
            validation=validation,
            search_tfidf=search_tfidf,
            final_tfidf=final_tfidf,
            settings=search_settings(settings),
            parent_run_id=parent_run_id,
        )
        if kind.needs_torch and settings.transformer_gpus:
            branch = branch.with_overrides(
                requests=Resources(cpu="2", mem="8Gi", gpu=str(settings.transformer_gpus)),
                limits=Resources(cpu="4", mem="16Gi", gpu=str(settings.transformer_gpus)),
            )
        searched.append(branch)
    candidates = list(searched)
    if ModelKind.ENSEMBLE in settings.kinds:
        candidates.append(
            ensemble_task(
                candidates=searched,  # build_ensemble picks its members
                validation=validation,
                settings=search_settings(settings),
                parent_run_id=parent_run_id,
            )
        )
    return candidates
