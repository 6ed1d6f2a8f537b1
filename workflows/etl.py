"""Spark ETL: clean, de-duplicate, split, balance, featurise, fit TF-IDF; Parquet out.

Why Spark: the same task runs on the laptop (local mode, the Flyte Spark plugin makes
the session) and on a Spark-on-Kubernetes cluster for the full dump, unchanged. The
features come from `libs.features.spark`, i.e. the very functions the service calls,
so there is no training/serving skew to test for here.

Order matters and is deliberate:
1. features first (`with_features`), because cleaning and de-duplication use `clean_text`;
2. rows with no text at all are dropped (counted, not an ingest error: real data has them);
3. exact duplicates (same cleaned text) are dropped, keeping the earliest review, so the
   same text cannot land in train and test;
4. the split comes before balancing, so validation and test keep the natural star mix
   the service will see. By default (`hash`) a review's split is a function of its cleaned
   text and the seed alone, so adding data (new feedback) never moves a review from test
   to train: the champion's test split stays held out from every later challenger;
5. balancing (per-class cap and/or down-sampling towards the smallest class) is off by
   default (the models weight the stars instead) and touches the training split only;
6. the drift reference rows are the numeric features and cleaned text of every kept review
   before balancing, i.e. the natural star mix (the text is the reference side of text
   drift; the bundle keeps a sample of it);
7. TF-IDF is fitted twice by Spark (`fit_tfidf`): on the training split, for the search,
   and on train + validation, for the final models.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, NamedTuple

from flytekit import Resources, StructuredDataset, current_context, kwtypes, task
from flytekit.types.file import FlyteFile
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from libs.features import CLEAN_COLUMN, CONTRACT, TEXT_COLUMN, Tfidf
from libs.features.spark import fit_tfidf, with_features
from workflows.image import TASK_IMAGE
from workflows.ingest import Reviews
from workflows.settings import cache_version, spark_task
from workflows.spark_session import task_session

SPLITS = ("train", "validation", "test")

FeatureSchema = kwtypes(
    overall=int,
    text=str,
    clean_text=str,
    **{f.name: (int if f.dtype == "int64" else float) for f in CONTRACT.numeric},
    reviewText=str,
    summary=str,
    source_file=str,
)
Features = Annotated[StructuredDataset, FeatureSchema]
"""One split: the label, the texts, the contract's numeric features, and the raw review with
where it came from (the frozen evaluation set keeps test reviews not from feedback)."""

OUTPUT_COLUMNS = [
    "overall",
    TEXT_COLUMN,
    CLEAN_COLUMN,
    *CONTRACT.numeric_names,
    "reviewText",
    "summary",
    "unixReviewTime",
    "asin",
    "reviewerID",
    "source_file",
]


@dataclass
class EtlParams:
    """The ETL's knobs (see settings.PipelineSettings for their defaults and env vars)."""

    max_per_class: int = 0
    balance_ratio: float = 0.0
    train_ratio: float = 0.7
    val_ratio: float = 0.15
    split: str = "hash"
    seed: int = 42

    def check(self) -> None:
        if not (
            0 < self.train_ratio < 1 and 0 < self.val_ratio < 1 and self.train_ratio + self.val_ratio < 1
        ):
            raise ValueError(
                f"split ratios train={self.train_ratio}, validation={self.val_ratio} must be in (0, 1) and "
                "leave a test share (train + validation < 1)"
            )
        if self.split not in ("hash", "time"):
            raise ValueError(f"split must be 'hash' or 'time', got {self.split!r}")
        if self.max_per_class < 0 or self.balance_ratio < 0:
            raise ValueError("max_per_class and balance_ratio must be >= 0 (0 = off)")


@dataclass
class EtlStats:
    rows_in: int = 0
    empty_dropped: int = 0
    duplicates_dropped: int = 0
    balanced_dropped: int = 0
    split_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    vocabulary: int = 0
    contract_hash: str = CONTRACT.hash


def _class_counts(frame: DataFrame) -> dict[str, int]:
    return {str(row["overall"]): int(row["count"]) for row in frame.groupBy("overall").count().collect()}


def _order_key(seed: int) -> F.Column:
    """Seeded hash of the cleaned text: a reproducible random order whatever the partitioning."""
    return F.xxhash64(F.col(CLEAN_COLUMN), F.lit(seed))


HASH_BUCKETS = 1_000_000


def hash_split(frame: DataFrame, params: EtlParams) -> DataFrame:
    """Adds `split` from a seeded hash of each review's cleaned text alone: the same review
    lands in the same split whatever else is in the data (stars keep their mix in expectation)."""
    position = F.pmod(_order_key(params.seed), F.lit(HASH_BUCKETS)) / F.lit(float(HASH_BUCKETS))
    return frame.withColumn(
        "split",
        F.when(position < params.train_ratio, "train")
        .when(position < params.train_ratio + params.val_ratio, "validation")
        .otherwise("test"),
    )


def time_split(frame: DataFrame, params: EtlParams) -> DataFrame:
    """Adds `split` by review time: oldest train, newest test (what a deployed model faces)."""
    if frame.where(F.col("unixReviewTime").isNull()).limit(1).count():
        raise ValueError("split='time' needs unixReviewTime on every row; some rows have none")
    cuts = frame.approxQuantile(
        "unixReviewTime", [params.train_ratio, params.train_ratio + params.val_ratio], 0.0
    )
    return frame.withColumn(
        "split",
        F.when(F.col("unixReviewTime") <= cuts[0], "train")
        .when(F.col("unixReviewTime") <= cuts[1], "validation")
        .otherwise("test"),
    )


def balance(train: DataFrame, params: EtlParams) -> DataFrame:
    """Per-class cap and/or down-sampling to balance_ratio x the smallest class (train only)."""
    counts = _class_counts(train)
    limits = {}
    smallest = min(counts.values()) if counts else 0
    for label, count in counts.items():
        limit = count
        if params.max_per_class:
            limit = min(limit, params.max_per_class)
        if params.balance_ratio:
            limit = min(limit, max(1, math.ceil(params.balance_ratio * smallest)))
        limits[label] = limit
    if all(limits[label] == counts[label] for label in counts):
        return train
    limit_col = F.create_map(*[x for label, n in limits.items() for x in (F.lit(int(label)), F.lit(n))])
    rank = F.row_number().over(
        Window.partitionBy("overall").orderBy(_order_key(params.seed + 1), CLEAN_COLUMN)
    )
    return train.withColumn("_rank", rank).where(F.col("_rank") <= limit_col[F.col("overall")]).drop("_rank")


@dataclass
class EtlResult:
    """The splits, the drift reference rows and the two vectorisers, as Spark DataFrames."""

    splits: dict[str, DataFrame]
    reference: DataFrame
    search_tfidf: Tfidf
    final_tfidf: Tfidf
    stats: EtlStats


def run_etl(reviews: DataFrame, params: EtlParams) -> EtlResult:
    """The whole ETL on a Spark DataFrame of ingested reviews (see the module docstring)."""
    params.check()
    stats = EtlStats()
    featured = with_features(reviews, review_col="reviewText", summary_col="summary").persist()
    stats.rows_in = featured.count()
    non_empty = featured.where(F.length(F.trim(F.col(CLEAN_COLUMN))) > 0)
    kept = non_empty.count()
    stats.empty_dropped = stats.rows_in - kept
    first = Window.partitionBy(CLEAN_COLUMN).orderBy(
        F.col("unixReviewTime").asc_nulls_last(), "source_file", "source_row"
    )
    unique = non_empty.withColumn("_n", F.row_number().over(first)).where(F.col("_n") == 1).drop("_n")
    split = (hash_split if params.split == "hash" else time_split)(unique, params).persist()
    stats.duplicates_dropped = kept - split.count()

    parts = {name: split.where(F.col("split") == name).drop("split") for name in SPLITS}
    before = parts["train"].count()
    parts["train"] = balance(parts["train"], params).persist()
    stats.balanced_dropped = before - parts["train"].count()
    for name in SPLITS:
        counts = _class_counts(parts[name])
        if not counts:
            raise ValueError(
                f"the {name} split is empty after cleaning ({kept} usable rows): give more data or "
                "change the split ratios"
            )
        stats.split_counts[name] = dict(sorted(counts.items()))
    if len(stats.split_counts["train"]) < 2:
        raise ValueError(f"the training split has one rating only: {stats.split_counts['train']}")

    search_tfidf = fit_tfidf(parts["train"])
    final_tfidf = fit_tfidf(parts["train"].unionByName(parts["validation"]))
    stats.vocabulary = final_tfidf.size
    outputs = {name: parts[name].select(*OUTPUT_COLUMNS) for name in SPLITS}
    featured.unpersist()
    reference = split.select(*CONTRACT.numeric_names, CLEAN_COLUMN)
    return EtlResult(outputs, reference, search_tfidf, final_tfidf, stats)


ReferenceSchema = kwtypes(
    **{f.name: (int if f.dtype == "int64" else float) for f in CONTRACT.numeric}, **{CLEAN_COLUMN: str}
)
Reference = Annotated[StructuredDataset, ReferenceSchema]
"""The drift reference rows: numeric features and cleaned text of every kept review, natural star mix."""


class EtlOutputs(NamedTuple):
    train: Features
    validation: Features
    test: Features
    reference: Reference
    search_tfidf: FlyteFile
    final_tfidf: FlyteFile
    stats: EtlStats


@task(
    task_config=spark_task(),
    cache=True,
    cache_version=cache_version("etl"),
    container_image=TASK_IMAGE,
    requests=Resources(cpu="2", mem="4Gi"),
    limits=Resources(cpu="2", mem="6Gi"),
)
def spark_etl(reviews: Reviews, params: EtlParams, spark_conf: dict[str, str]) -> EtlOutputs:
    """Runs `run_etl` in the session the Flyte Spark plugin made; writes Parquet splits, the
    drift reference rows and both vectorisers.

    `spark_conf` holds runtime-settable SQL settings for this run (e.g. shuffle
    partitions); static ones (memory, instances) belong in KINDLE_SPARK_CONF, which is
    baked into the task's Spark config at registration.
    """
    session = task_session()
    for key, value in spark_conf.items():
        session.conf.set(key, value)
    result = run_etl(reviews.open(DataFrame).all(), params)
    folder = Path(current_context().working_directory) / "etl"
    folder.mkdir(parents=True, exist_ok=True)
    result.search_tfidf.save(folder / "search_tfidf.json")
    result.final_tfidf.save(folder / "final_tfidf.json")
    (folder / "etl_stats.json").write_text(json.dumps(asdict(result.stats), indent=1))
    print(f"etl: {json.dumps(asdict(result.stats))}")
    train, validation, test = (StructuredDataset(dataframe=result.splits[name]) for name in SPLITS)
    return EtlOutputs(
        train,
        validation,
        test,
        StructuredDataset(dataframe=result.reference),
        FlyteFile(str(folder / "search_tfidf.json")),
        FlyteFile(str(folder / "final_tfidf.json")),
        result.stats,
    )
