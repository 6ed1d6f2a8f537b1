"""The run's MLflow parent and its champion: thin adapters over `libs.models.training.stages`
(`open_run`, `conclude`).

Why the parent run is opened by a task of its own and closed by `publish_champion`: the
kind branches are cached tasks that may run in other pods; each nests its run under the
parent by id. A branch taken from Flyte's cache keeps the runs it logged when it ran.

Why nothing here is cached: the registry and the parent run are outside Flyte's view;
`decide` is what makes a re-run on unchanged data a no-op (the champion's very model is
not registered again).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from flytekit import Resources, current_context, task
from flytekit.types.directory import FlyteDirectory

from libs.models.training.stages import conclude, open_run
from workflows.etl import EtlStats, Features, Reference
from workflows.image import TASK_IMAGE
from workflows.ingest import FEEDBACK_SOURCE, IngestStats
from workflows.search import Candidate, read_split
from workflows.settings import PipelineSettings


@dataclass
class Publication:
    champion: str  # the kind chosen
    test_metrics: dict[str, float]
    promoted: bool
    reason: str
    version: str  # the promoted version, "" when nothing was registered
    champion_version: str  # the serving champion after this run ("" when there is none)
    run_id: str
    tracking_uri: str
    model_name: str
    bundle: FlyteDirectory  # the champion's final bundle, which the Bento is built from


@task(container_image=TASK_IMAGE, requests=Resources(cpu="250m", mem="512Mi"))
def open_training_run(settings: PipelineSettings, source: str, source_fingerprint: str) -> str:
    """The run's parent MLflow run, left RUNNING for the branches; `publish_champion` finishes it."""
    return open_run(settings, source, source_fingerprint)


@task(
    container_image=TASK_IMAGE,
    requests=Resources(cpu="1", mem="2Gi"),
    limits=Resources(cpu="2", mem="4Gi"),
)
def publish_champion(
    candidates: list[Candidate],
    test: Features,
    reference: Reference,
    settings: PipelineSettings,
    parent_run_id: str,
    ingest_stats: IngestStats,
    etl_stats: EtlStats,
) -> Publication:
    """Picks the champion, writes its final bundle, scores it against the serving champion on
    the same test split and on the lineage's frozen set (the test reviews of its first
    registration that did not come from feedback), and registers and promotes a winner;
    the parent run records it all."""
    from libs.models.registry import CHAMPION
    from libs.models.training.tracking import alias_version, client_for

    test_rows = read_split(test)
    concluded = conclude(
        [candidate.local() for candidate in candidates],
        test_rows,
        reference.open(pd.DataFrame).all(),
        settings,
        parent_run_id,
        Path(current_context().working_directory) / "champion",
        dataclasses.asdict(etl_stats),
        ingest_stats.feedback_until,
        frozen_reviews=test_rows[~test_rows["source_file"].str.endswith(FEEDBACK_SOURCE)],
    )
    finished, decision = concluded.finished, concluded.decision
    print(f"champion: {finished.kind}; test {json.dumps(finished.test, sort_keys=True)}")
    print(f"publish: {decision.reason}")
    now = alias_version(client_for(settings), settings.model_name, CHAMPION)
    return Publication(
        champion=finished.kind,
        test_metrics=finished.test,
        promoted=concluded.version is not None,
        reason=decision.reason,
        version=concluded.version or "",
        champion_version=str(now.version) if now else "",
        run_id=parent_run_id,
        tracking_uri=settings.tracking_uri(),
        model_name=settings.model_name,
        bundle=FlyteDirectory(str(finished.bundle)),
    )
