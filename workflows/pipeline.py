"""The training pipeline: ingest -> Spark ETL -> per-kind search and refit -> champion ->
challenger-vs-champion decision -> MLflow registration and promotion -> Bento.

    pyflyte run workflows/pipeline.py training_pipeline --input PATH \
        [--settings '{"kinds": "logreg,hist_gb", "trials": 20}']

Without --input it trains on a synthetic, clearly labelled CSV (workflows/synthetic.py),
so a fresh machine can run it end to end. With --feedback_dir (the service's labelled
feedback folder) those reviews are trained on too, each client's at most
`feedback_client_share` of the input (its newest). Every knob is a field of `--settings`
(`PipelineSettings`): the fields a run does not give keep their `KINDLE_*` defaults.

Every expensive step is cached (`cache_version` = stage + workflow version +
feature-contract hash), keyed by the settings it reads only; registration,
promotion and the Bento build write to stores Flyte cannot see, so they are decided
afresh on every run instead (a re-run on unchanged data registers nothing). The run ends
with a summary table (also the workflow's output).
"""

from __future__ import annotations

from flytekit import Resources, task, workflow

from libs.models.training.stages import KindResult
from libs.urls import redact_url
from workflows import bento, synthetic
from workflows.champion import Publication, open_training_run, publish_champion
from workflows.etl import EtlParams, EtlStats, spark_etl
from workflows.image import TASK_IMAGE
from workflows.ingest import IngestStats, feedback_note, fingerprint_feedback, fingerprint_input, ingest
from workflows.search import Candidate, search_all_kinds
from workflows.settings import RUN_SETTINGS, SETTINGS, PipelineSettings

SYNTHETIC_NAME = "synthetic_kindle_reviews.csv"


@task(container_image=TASK_IMAGE, requests=Resources(cpu="250m", mem="256Mi"))
def resolve_settings(settings: PipelineSettings) -> PipelineSettings:
    """The run's settings as every later step reads them: output folder absolute (created),
    MLflow URI explicit (by default SQLite in the output folder)."""
    return settings.resolved()


@task(container_image=TASK_IMAGE, requests=Resources(cpu="250m", mem="512Mi"))
def resolve_input(input: str, settings: PipelineSettings) -> str:
    """The input, or (none given) the synthetic CSV in the output folder.

    The synthetic file is rewritten only when its bytes would change, so its fingerprint,
    and with it every cached step, stays the same from one run to the next.
    """
    if input:
        return input
    path = settings.output_dir / SYNTHETIC_NAME
    content = synthetic.generate().to_csv(index=True).encode()
    if not path.is_file() or path.read_bytes() != content:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    print(f"input: none given, training on SYNTHETIC data {path} (see workflows/synthetic.py)")
    return str(path)


@task(container_image=TASK_IMAGE, requests=Resources(cpu="250m", mem="256Mi"))
def make_etl_params(settings: PipelineSettings) -> EtlParams:
    """The ETL's part of the settings (its cache key), checked before Spark starts (bad
    ratios fail in a second, not a minute)."""
    params = EtlParams(
        settings.max_per_class,
        settings.balance_ratio,
        settings.train_ratio,
        settings.val_ratio,
        settings.split,
        settings.seed,
    )
    params.check()
    return params


@task(container_image=TASK_IMAGE, requests=Resources(cpu="250m", mem="256Mi"))
def feedback_client_share(settings: PipelineSettings) -> float:
    """The most one feedback client may add, as a share of the input (ingest's cache key)."""
    return settings.feedback_client_share


@task(container_image=TASK_IMAGE, requests=Resources(cpu="250m", mem="256Mi"))
def bento_enabled(settings: PipelineSettings) -> bool:
    """Whether this run builds the Bento (`build_bento`)."""
    return settings.build_bento


@task(container_image=TASK_IMAGE, requests=Resources(cpu="250m", mem="256Mi"))
def summarize(
    ingest_stats: IngestStats,
    etl_stats: EtlStats,
    candidates: list[Candidate],
    publication: Publication,
    bento_tag: str,
) -> str:
    """Prints the run's summary table to the terminal and returns it as the workflow output."""
    lines = [
        "=" * 78,
        "Kindle review rating: training pipeline summary",
        "-" * 78,
        f"data: {ingest_stats.rows} rows ingested ({feedback_note(ingest_stats)}), "
        f"{etl_stats.empty_dropped} empty and {etl_stats.duplicates_dropped} duplicates dropped, "
        f"{etl_stats.balanced_dropped} balanced away; vocabulary {etl_stats.vocabulary}",
        "splits: "
        + ", ".join(f"{name} {sum(counts.values())}" for name, counts in etl_stats.split_counts.items()),
        "-" * 78,
        f"{'kind':<12}{'val macro-F1':>13}{'val acc':>9}{'ms/review':>11}{'trials':>8}{'train s':>9}"
        "  champion",
    ]
    for result in sorted((c.result for c in candidates), key=lambda r: -r.val_macro_f1):
        mark = "*" if result.kind == publication.champion else ""
        lines.append(
            f"{result.kind:<12}{result.validation['macro_f1']:>13.4f}{result.validation['accuracy']:>9.4f}"
            f"{result.latency_ms:>11.3f}{result.trials:>8}{result.seconds:>9.0f}  {mark}"
        )
    lines += [f"ensemble: {ensemble_note(c.result)}" for c in candidates if c.result.kind == "ensemble"]
    test = publication.test_metrics
    registered = (
        f"registered: {publication.model_name} v{publication.version} (alias champion) at "
        f"{redact_url(publication.tracking_uri)}"
        if publication.promoted
        else f"registered: nothing new; champion stays v{publication.champion_version or '-'}"
    )
    lines += [
        "-" * 78,
        f"champion: {publication.champion}",
        "test: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(test.items())),
        f"decision: {publication.reason}",
        f"MLflow run id: {publication.run_id}",
        registered,
        f"Bento tag: {bento_tag or '(not built)'}",
        "=" * 78,
    ]
    table = "\n".join(lines)
    print(table, flush=True)
    return table


def ensemble_note(result: KindResult) -> str:
    """How the ensemble votes, e.g. `0.45 x distilbert + 0.55 x logreg (weight chosen on validation)`."""
    weight = float(result.params["weight"])
    tfidf_kind = result.params["tfidf_kind"]
    return f"{weight:.2f} x distilbert + {1 - weight:.2f} x {tfidf_kind} (weight chosen on validation)"


@workflow
def training_pipeline(
    input: str = "",
    feedback_dir: str = SETTINGS.feedback_dir or "",
    settings: PipelineSettings = RUN_SETTINGS,
    encoding: str = "utf-8",
    spark_conf: dict[str, str] = {},  # noqa: B006  (Flyte default literal, never mutated)
) -> str:
    """End to end on `input` (CSV/Parquet/JSON lines in `encoding`; file, folder or fsspec URL;
    "" = synthetic) and the labelled feedback folder `feedback_dir` ("" = none), as `settings`
    say; `spark_conf`: runtime Spark SQL settings of this run's ETL."""
    run = resolve_settings(settings=settings)
    source = resolve_input(input=input, settings=run)
    content = fingerprint_input(uri=source)
    reviews, ingest_stats = ingest(
        uri=source,
        content_fingerprint=content,
        encoding=encoding,
        feedback=feedback_dir,
        feedback_fingerprint=fingerprint_feedback(folder=feedback_dir),
        feedback_client_share=feedback_client_share(settings=run),
    )
    etl = spark_etl(reviews=reviews, params=make_etl_params(settings=run), spark_conf=spark_conf)
    parent = open_training_run(settings=run, source=source, source_fingerprint=content)
    candidates = search_all_kinds(
        train=etl.train,
        validation=etl.validation,
        search_tfidf=etl.search_tfidf,
        final_tfidf=etl.final_tfidf,
        settings=run,
        parent_run_id=parent,
    )
    publication = publish_champion(
        candidates=candidates,
        test=etl.test,
        reference=etl.reference,
        settings=run,
        parent_run_id=parent,
        ingest_stats=ingest_stats,
        etl_stats=etl.stats,
    )
    bento_tag = bento.build_bento(
        bundle=publication.bundle,
        promoted=publication.promoted,
        model_version=publication.version,
        enabled=bento_enabled(settings=run),
    )
    return summarize(
        ingest_stats=ingest_stats,
        etl_stats=etl.stats,
        candidates=candidates,
        publication=publication,
        bento_tag=bento_tag,
    )
