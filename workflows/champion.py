"""The run's MLflow parent, the champion's final bundle, and its promotion: thin adapters over
`libs.models.training.stages` (`finish_bundle`, `decide`, `publish`).

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
from typing import TYPE_CHECKING

import pandas as pd
from flytekit import Resources, current_context, task
from flytekit.types.directory import FlyteDirectory

from workflows.etl import EtlStats, Features, Reference
from workflows.image import TASK_IMAGE
from workflows.ingest import IngestStats
from workflows.train import KindOutcome, SearchOptions, read_split, training_settings

if TYPE_CHECKING:
    from libs.models.training.stages import KindResult


@dataclass
class Champion:
    kind: str
    bundle: FlyteDirectory
    test_metrics: dict[str, float]
    reports: FlyteDirectory


@dataclass
class Publication:
    promoted: bool
    reason: str
    version: str  # the promoted version, "" when nothing was registered
    champion_version: str  # the serving champion after this run ("" when there is none)
    run_id: str
    tracking_uri: str
    model_name: str
    bundle: FlyteDirectory  # the bundle the Bento is built from (the final one)


def _kind_result(outcome: KindOutcome) -> KindResult:
    from libs.models.training.stages import KindResult

    return KindResult(
        kind=outcome.kind,
        params=json.loads(outcome.params),
        validation=dict(outcome.validation),
        latency_ms=outcome.latency_ms,
        trials=outcome.trials,
        feasible=outcome.feasible,
        study=outcome.study,
        seconds=outcome.seconds,
        bundle=Path(outcome.bundle.download()),
        run_id=outcome.run_id or None,
    )


@task(container_image=TASK_IMAGE, requests=Resources(cpu="250m", mem="512Mi"))
def open_training_run(options: SearchOptions, source: str, source_fingerprint: str) -> str:
    """Creates the run's parent MLflow run, left RUNNING for the branches to nest under;
    `publish_champion` finishes it."""
    import mlflow

    from libs.models.training.tracking import configure, run_tags

    settings = training_settings(options)
    configure(settings)
    experiment = mlflow.get_experiment_by_name(settings.experiment)
    assert experiment is not None  # configure() created it
    client = mlflow.MlflowClient(settings.tracking_uri())
    run = client.create_run(
        experiment.experiment_id,
        run_name="training",
        tags={**run_tags(source_fingerprint), "kind": "training", "source": source},
    )
    return run.info.run_id


@task(
    container_image=TASK_IMAGE,
    requests=Resources(cpu="1", mem="2Gi"),
    limits=Resources(cpu="2", mem="4Gi"),
)
def finish_champion(
    results: list[KindOutcome], test: Features, reference: Reference, parent_run_id: str
) -> Champion:
    """Picks the champion by validation macro-F1; writes its final bundle (test report, drift reference)."""
    from libs.models.training.stages import finish_bundle, select_champion

    champion = select_champion([_kind_result(outcome) for outcome in results])
    out = Path(current_context().working_directory) / "champion"
    finished = finish_bundle(
        champion, read_split(test), reference.open(pd.DataFrame).all(), out, parent_run_id
    )
    print(f"champion: {finished.kind}; test {json.dumps(finished.test, sort_keys=True)}")
    return Champion(
        finished.kind,
        FlyteDirectory(str(finished.bundle)),
        finished.test,
        FlyteDirectory(str(out / "reports")),
    )


@task(
    container_image=TASK_IMAGE,
    requests=Resources(cpu="1", mem="2Gi"),
    limits=Resources(cpu="2", mem="4Gi"),
)
def publish_champion(
    champion: Champion,
    results: list[KindOutcome],
    test: Features,
    options: SearchOptions,
    model_name: str,
    promotion_margin: float,
    parent_run_id: str,
    ingest_stats: IngestStats,
    etl_stats: EtlStats,
) -> Publication:
    """Scores the challenger against the serving champion on the same test split, records the
    decision in the parent run, and registers and promotes a winner."""
    import mlflow

    from libs.models.registry import CHAMPION
    from libs.models.training.stages import Finished, decide, publish
    from libs.models.training.tracking import alias_version, client_for, configure, current_champion

    settings = training_settings(options).model_copy(
        update={"model_name": model_name, "promotion_margin": promotion_margin}
    )
    configure(settings)
    work = Path(current_context().working_directory)
    serving = current_champion(settings, work / "serving")
    bundle = Path(champion.bundle.download())
    decision = decide(
        bundle,
        serving[1] if serving else None,
        read_split(test),
        promotion_margin,
        str(serving[0].version) if serving else None,
    )
    finished = Finished(champion.kind, bundle, champion.test_metrics, [])
    with mlflow.start_run(run_id=parent_run_id):
        mlflow.log_params(
            {
                "champion_kind": champion.kind,
                "kinds": ",".join(r.kind for r in results),
                **{f"{r.kind}.best_params": r.params[:500] for r in results},
            }
        )
        metrics = {f"test_{k}": v for k, v in champion.test_metrics.items()}
        metrics |= {f"{r.kind}.val_macro_f1": r.validation["macro_f1"] for r in results}
        metrics["challenger_macro_f1"] = decision.challenger_macro_f1
        if decision.champion_macro_f1 is not None:
            metrics["champion_macro_f1"] = decision.champion_macro_f1
        mlflow.log_metrics(metrics)
        mlflow.set_tags({"decision": decision.reason, "promoted": str(decision.promote).lower()})
        mlflow.log_artifacts(champion.reports.download(), "reports")
        mlflow.log_text(json.dumps(dataclasses.asdict(etl_stats), indent=1), "data/etl_stats.json")
        version = publish(finished, decision, settings, parent_run_id, ingest_stats.feedback_until)
    print(f"publish: {decision.reason}")
    now = alias_version(client_for(settings), model_name, CHAMPION)
    return Publication(
        promoted=version is not None,
        reason=decision.reason,
        version=version or "",
        champion_version=str(now.version) if now else "",
        run_id=parent_run_id,
        tracking_uri=settings.tracking_uri(),
        model_name=model_name,
        bundle=champion.bundle,
    )
