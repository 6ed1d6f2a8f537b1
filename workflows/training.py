"""The training pipeline: ingest -> Spark ETL -> per-kind HPO -> champion -> MLflow -> Bento.

    pyflyte run workflows/training.py training_pipeline --input PATH [--kinds logreg,...]

Without --input it trains on a synthetic, clearly labelled CSV (workflows/synthetic.py),
so a fresh machine can run it end to end. Every expensive step is cached
(`cache_version` = stage + workflow version + feature-contract hash), so running the
same command again skips to the steps whose inputs changed; registration and the Bento
build write to stores Flyte cannot see, so they are idempotent instead of cached.
The run ends with a summary table (also the workflow's output).
"""

from __future__ import annotations

from pathlib import Path

from flytekit import Resources, task, workflow

from workflows import bento, synthetic
from workflows.etl import EtlParams, EtlStats, spark_etl
from workflows.evaluate import Evaluation, evaluate_champion
from workflows.image import TASK_IMAGE
from workflows.ingest import IngestStats, fingerprint_input, ingest
from workflows.register import Registration, register_champion
from workflows.settings import SETTINGS
from workflows.train import KindResult, resolve_kinds, train_all_kinds

SYNTHETIC_NAME = "synthetic_kindle_reviews.csv"


@task(container_image=TASK_IMAGE, requests=Resources(cpu="250m", mem="256Mi"))
def tracking_uri_of(output_dir: str, mlflow_uri: str) -> str:
    """The MLflow URI of this run: explicit, else SQLite in the output folder (created here)."""
    if not mlflow_uri:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
    return SETTINGS.__class__(output_dir=output_dir, mlflow_uri=mlflow_uri).tracking_uri(output_dir)


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


def format_summary(
    ingest_stats: IngestStats,
    etl_stats: EtlStats,
    results: list[KindResult],
    evaluation: Evaluation,
    registration: Registration,
    bento_tag: str,
) -> str:
    """The table printed at the end of a run (pure, so tests can check it)."""
    lines = [
        "=" * 78,
        "Kindle review rating: training pipeline summary",
        "-" * 78,
        f"data: {ingest_stats.rows} rows ingested, {etl_stats.empty_dropped} empty and "
        f"{etl_stats.duplicates_dropped} duplicates dropped, {etl_stats.balanced_dropped} balanced away; "
        f"vocabulary {etl_stats.vocabulary}",
        "splits: "
        + ", ".join(f"{name} {sum(counts.values())}" for name, counts in etl_stats.split_counts.items()),
        "-" * 78,
        f"{'kind':<14}{'val macro-F1':>14}{'val acc':>10}{'latency ms/row':>16}{'trials':>8}  champion",
    ]
    for result in sorted(results, key=lambda r: -r.val_macro_f1):
        mark = "*" if result.kind == evaluation.champion_kind else ""
        lines.append(
            f"{result.kind:<14}{result.val_macro_f1:>14.4f}{result.val_accuracy:>10.4f}"
            f"{result.latency_ms:>16.4f}{result.trials:>8}  {mark}"
        )
    test = evaluation.test_metrics
    lines += [
        "-" * 78,
        f"champion: {evaluation.champion_kind}",
        "test: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(test.items())),
        f"MLflow run id: {registration.run_id}",
        f"registered: {registration.model_name} v{registration.version} (alias champion) at "
        f"{registration.tracking_uri}",
        f"Bento tag: {bento_tag or '(not built)'}",
        "=" * 78,
    ]
    return "\n".join(lines)


@task(container_image=TASK_IMAGE, requests=Resources(cpu="250m", mem="256Mi"))
def summarize(
    ingest_stats: IngestStats,
    etl_stats: EtlStats,
    results: list[KindResult],
    evaluation: Evaluation,
    registration: Registration,
    bento_tag: str,
) -> str:
    """Prints the summary table to the terminal (and returns it as the workflow output)."""
    table = format_summary(ingest_stats, etl_stats, results, evaluation, registration, bento_tag)
    print(table, flush=True)
    return table


@task(container_image=TASK_IMAGE, requests=Resources(cpu="250m", mem="256Mi"))
def make_etl_params(
    max_per_class: int, balance_ratio: float, train_ratio: float, val_ratio: float, split: str, seed: int
) -> EtlParams:
    """Checks the ETL options before Spark starts (bad ratios fail in a second, not a minute)."""
    params = EtlParams(max_per_class, balance_ratio, train_ratio, val_ratio, split, seed)
    params.check()
    return params


@workflow
def training_pipeline(
    input: str = "",
    output_dir: str = SETTINGS.output_dir,
    mlflow_uri: str = SETTINGS.mlflow_uri,
    model_name: str = SETTINGS.model_name,
    experiment: str = SETTINGS.experiment,
    kinds: str = SETTINGS.kinds,
    trials: int = SETTINGS.trials,
    timeout_s: float = SETTINGS.timeout_s,
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
    """End to end on `input` (CSV/Parquet/JSON lines; file, folder or fsspec URL; "" = synthetic)."""
    tracking = tracking_uri_of(output_dir=output_dir, mlflow_uri=mlflow_uri)
    source = resolve_input(input=input, output_dir=output_dir)
    content = fingerprint_input(uri=source)
    reviews, ingest_stats = ingest(uri=source, content_fingerprint=content, encoding=encoding)
    params = make_etl_params(
        max_per_class=max_per_class,
        balance_ratio=balance_ratio,
        train_ratio=train_ratio,
        val_ratio=val_ratio,
        split=split,
        seed=seed,
    )
    etl = spark_etl(reviews=reviews, params=params, spark_conf=spark_conf)
    selected = resolve_kinds(kinds=kinds)
    results = train_all_kinds(
        kinds=selected,
        train=etl.train,
        validation=etl.validation,
        tfidf=etl.tfidf,
        trials=trials,
        timeout_s=timeout_s,
        seed=seed,
    )
    evaluation = evaluate_champion(results=results, test=etl.test)
    registration = register_champion(
        evaluation=evaluation,
        results=results,
        train=etl.train,
        validation=etl.validation,
        tfidf=etl.tfidf,
        etl_stats=etl.stats,
        tracking_uri=tracking,
        model_name=model_name,
        experiment=experiment,
        source=source,
        seed=seed,
    )
    bento_tag = bento.build_bento(
        bundle=registration.bundle,
        model_version=registration.version,
        run_id=registration.run_id,
        enabled=build_bento,
    )
    return summarize(
        ingest_stats=ingest_stats,
        etl_stats=etl.stats,
        results=results,
        evaluation=evaluation,
        registration=registration,
        bento_tag=bento_tag,
    )
