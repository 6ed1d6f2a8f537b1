"""The training pipeline: ingest -> Spark ETL -> per-kind search and refit -> champion ->
challenger-vs-champion decision -> MLflow registration and promotion -> Bento.

    pyflyte run workflows/training.py training_pipeline --input PATH [--kinds logreg,...]

Without --input it trains on a synthetic, clearly labelled CSV (workflows/synthetic.py),
so a fresh machine can run it end to end. With --feedback_dir (the service's labelled
feedback folder) those reviews are trained on too. Every expensive step is cached
(`cache_version` = stage + workflow version + feature-contract hash); registration,
promotion and the Bento build write to stores Flyte cannot see, so they are decided
afresh on every run instead (a re-run on unchanged data registers nothing). The run ends
with a summary table (also the workflow's output).
"""

from __future__ import annotations

from pathlib import Path

from flytekit import Resources, task, workflow

from libs.urls import redact_url
from workflows import bento, synthetic
from workflows.champion import Champion, Publication, finish_champion, open_training_run, publish_champion
from workflows.etl import EtlParams, EtlStats, spark_etl
from workflows.image import TASK_IMAGE
from workflows.ingest import IngestStats, fingerprint_feedback, fingerprint_input, ingest
from workflows.settings import SETTINGS
from workflows.train import KindOutcome, SearchOptions, resolve_kinds, train_all_kinds

SYNTHETIC_NAME = "synthetic_kindle_reviews.csv"


@task(container_image=TASK_IMAGE, requests=Resources(cpu="250m", mem="512Mi"))
def resolve_input(input: str, output_dir: str) -> str:
    """The input, or (none given) the synthetic CSV in the output folder.

    The synthetic file is rewritten only when its bytes would change, so its fingerprint,
    and with it every cached step, stays the same from one run to the next.
    """
    if input:
        return input
    path = Path(output_dir).resolve() / SYNTHETIC_NAME
    content = synthetic.generate().to_csv(index=True).encode()
    if not path.is_file() or path.read_bytes() != content:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    print(f"input: none given, training on SYNTHETIC data {path} (see workflows/synthetic.py)")
    return str(path)


@task(container_image=TASK_IMAGE, requests=Resources(cpu="250m", mem="256Mi"))
def make_options(
    output_dir: str,
    mlflow_tracking_uri: str,
    experiment: str,
    trials: int,
    timeout_s: float,
    seed: int,
    latency_budget_ms: float,
) -> SearchOptions:
    """The run's search options; the MLflow URI defaults to SQLite in the output folder (created here)."""
    folder = Path(output_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    uri = mlflow_tracking_uri or f"sqlite:///{folder / 'mlflow.db'}"
    return SearchOptions(trials, timeout_s, seed, latency_budget_ms, str(folder), uri, experiment)


@task(container_image=TASK_IMAGE, requests=Resources(cpu="250m", mem="256Mi"))
def make_etl_params(
    max_per_class: int, balance_ratio: float, train_ratio: float, val_ratio: float, split: str, seed: int
) -> EtlParams:
    """Checks the ETL options before Spark starts (bad ratios fail in a second, not a minute)."""
    params = EtlParams(max_per_class, balance_ratio, train_ratio, val_ratio, split, seed)
    params.check()
    return params


@task(container_image=TASK_IMAGE, requests=Resources(cpu="250m", mem="256Mi"))
def summarize(
    ingest_stats: IngestStats,
    etl_stats: EtlStats,
    results: list[KindOutcome],
    champion: Champion,
    publication: Publication,
    bento_tag: str,
) -> str:
    """Prints the run's summary table to the terminal and returns it as the workflow output."""
    lines = [
        "=" * 78,
        "Kindle review rating: training pipeline summary",
        "-" * 78,
        f"data: {ingest_stats.rows} rows ingested ({ingest_stats.feedback_rows} labelled feedback), "
        f"{etl_stats.empty_dropped} empty and {etl_stats.duplicates_dropped} duplicates dropped, "
        f"{etl_stats.balanced_dropped} balanced away; vocabulary {etl_stats.vocabulary}",
        "splits: "
        + ", ".join(f"{name} {sum(counts.values())}" for name, counts in etl_stats.split_counts.items()),
        "-" * 78,
        f"{'kind':<14}{'val macro-F1':>14}{'val acc':>10}{'latency ms/row':>16}{'trials':>8}  champion",
    ]
    for result in sorted(results, key=lambda r: -r.validation["macro_f1"]):
        mark = "*" if result.kind == champion.kind else ""
        lines.append(
            f"{result.kind:<14}{result.validation['macro_f1']:>14.4f}{result.validation['accuracy']:>10.4f}"
            f"{result.latency_ms:>16.4f}{result.trials:>8}  {mark}"
        )
    test = champion.test_metrics
    registered = (
        f"registered: {publication.model_name} v{publication.version} (alias champion) at "
        f"{redact_url(publication.tracking_uri)}"
        if publication.promoted
        else f"registered: nothing new; champion stays v{publication.champion_version or '-'}"
    )
    lines += [
        "-" * 78,
        f"champion: {champion.kind}",
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


@workflow
def training_pipeline(
    input: str = "",
    feedback_dir: str = SETTINGS.feedback_dir or "",
    output_dir: str = str(SETTINGS.output_dir),
    mlflow_tracking_uri: str = SETTINGS.mlflow_tracking_uri or "",
    model_name: str = SETTINGS.model_name,
    experiment: str = SETTINGS.experiment,
    kinds: str = SETTINGS.kinds_text(),
    trials: int = SETTINGS.trials,
    timeout_s: float = SETTINGS.timeout_s,
    latency_budget_ms: float = SETTINGS.latency_budget_ms,
    promotion_margin: float = SETTINGS.promotion_margin,
    max_per_class: int = SETTINGS.max_per_class,
    balance_ratio: float = SETTINGS.balance_ratio,
    train_ratio: float = SETTINGS.train_ratio,
    val_ratio: float = SETTINGS.val_ratio,
    split: str = SETTINGS.split,
    seed: int = SETTINGS.seed,
    spark_conf: dict[str, str] = {},  # noqa: B006  (Flyte default literal, never mutated)
    encoding: str = "utf-8",
    build_bento: bool = SETTINGS.build_bento,
) -> str:
    """End to end on `input` (CSV/Parquet/JSON lines; file, folder or fsspec URL; "" = synthetic)
    and the labelled feedback folder `feedback_dir` ("" = none)."""
    options = make_options(
        output_dir=output_dir,
        mlflow_tracking_uri=mlflow_tracking_uri,
        experiment=experiment,
        trials=trials,
        timeout_s=timeout_s,
        seed=seed,
        latency_budget_ms=latency_budget_ms,
    )
    source = resolve_input(input=input, output_dir=output_dir)
    content = fingerprint_input(uri=source)
    reviews, ingest_stats = ingest(
        uri=source,
        content_fingerprint=content,
        encoding=encoding,
        feedback=feedback_dir,
        feedback_fingerprint=fingerprint_feedback(folder=feedback_dir),
    )
    params = make_etl_params(
        max_per_class=max_per_class,
        balance_ratio=balance_ratio,
        train_ratio=train_ratio,
        val_ratio=val_ratio,
        split=split,
        seed=seed,
    )
    etl = spark_etl(reviews=reviews, params=params, spark_conf=spark_conf)
    parent = open_training_run(options=options, source=source, source_fingerprint=content)
    results = train_all_kinds(
        kinds=resolve_kinds(kinds=kinds),
        train=etl.train,
        validation=etl.validation,
        search_tfidf=etl.search_tfidf,
        final_tfidf=etl.final_tfidf,
        options=options,
        parent_run_id=parent,
    )
    champion = finish_champion(results=results, test=etl.test, reference=etl.reference, parent_run_id=parent)
    publication = publish_champion(
        champion=champion,
        results=results,
        test=etl.test,
        options=options,
        model_name=model_name,
        promotion_margin=promotion_margin,
        parent_run_id=parent,
        ingest_stats=ingest_stats,
        etl_stats=etl.stats,
    )
    bento_tag = bento.build_bento(
        bundle=publication.bundle,
        promoted=publication.promoted,
        model_version=publication.version,
        enabled=build_bento,
    )
    return summarize(
        ingest_stats=ingest_stats,
        etl_stats=etl.stats,
        results=results,
        champion=champion,
        publication=publication,
        bento_tag=bento_tag,
    )
