"""Ingest: raw reviews (CSV, Parquet, JSON lines; file, folder, fsspec URL) -> one validated table.

Spark reads the input: the driver only lists the files, and every file is read, parsed
and checked by a Spark task of its own (`readers.read_file`), so no process ever holds
the whole input and the files are read in parallel on the executors. The rows stay in
Spark and the task writes them as Parquet for the ETL.

Nothing is written before everything is checked: a task that finds a problem returns it
as a row instead of data, and the first problem in file-name order is raised as
`InputValidationError` (the file, the column, the row, the line) before the task returns,
so a failed ingest writes nothing. Why the strict per-file parser rather than Spark's own
CSV and JSON readers: those report a bad record without its file line, and a CSV review
spans lines (a quoted field with newlines), so Spark cannot split such a file either.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Annotated, NamedTuple

import fsspec
import pandas as pd
import pyarrow as pa
from flytekit import Resources, StructuredDataset, kwtypes, task
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from libs.production import read_feedback
from workflows.image import TASK_IMAGE
from workflows.readers import (
    COLUMNS,
    CSV_SUFFIXES,
    JSON_SUFFIXES,
    PARQUET_SUFFIXES,
    InputValidationError,
    read_file,
    strip_compression,
    validate_frame,
)
from workflows.settings import DEFAULT_FEEDBACK_CLIENT_SHARE, SETTINGS, cache_version, spark_task
from workflows.spark_session import task_session

ReviewsSchema = kwtypes(
    reviewText=str,
    summary=str,
    overall=int,
    asin=str,
    reviewerID=str,
    unixReviewTime=int,
    source_file=str,
    source_row=int,
)
Reviews = Annotated[StructuredDataset, ReviewsSchema]
"""The ingested table: canonical columns, `source_file`/`source_row` for tracing a row back."""

_TYPES = {str: (T.StringType(), pa.string()), int: (T.LongType(), pa.int64())}
SPARK_SCHEMA = T.StructType([T.StructField(c, _TYPES[ReviewsSchema[c]][0]) for c in COLUMNS])
_ARROW_SCHEMA = pa.schema([pa.field(c, _TYPES[ReviewsSchema[c]][1]) for c in COLUMNS])
FEEDBACK_SOURCE = "#feedback"
"""The end of `source_file` on rows that came from production feedback (`<folder>#feedback`)."""
_FILE_INDEX = "_file_index"
_ERROR = "_error"
_PARSED = pa.schema([*_ARROW_SCHEMA, pa.field(_FILE_INDEX, pa.int32()), pa.field(_ERROR, pa.string())])
_SPARK_PARSED = T.StructType(
    [*SPARK_SCHEMA.fields, T.StructField(_FILE_INDEX, T.IntegerType()), T.StructField(_ERROR, T.StringType())]
)
_BATCH_ROWS = 10_000
UNKNOWN_CLIENT = "unknown"
"""The client of feedback rows that name none (files written before rows recorded it)."""


@dataclass
class IngestStats:
    files: int
    rows: int
    rating_counts: dict[str, int]
    feedback_rows: int = 0  # labelled feedback rows kept (part of `rows`)
    feedback_until: str = ""  # ISO time of the newest feedback row read ("" when none)
    feedback_capped_rows: int = 0  # feedback rows left out, over their client's share
    feedback_capped: dict[str, int] = field(default_factory=dict)  # client -> rows left out
    feedback_client_share: float = DEFAULT_FEEDBACK_CLIENT_SHARE  # the share they were over


class IngestOutputs(NamedTuple):
    reviews: Reviews
    stats: IngestStats


# ----------------------------------------------------------------------------- discovery


def list_input_files(uri: str) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    """A file, or the data files of a folder (recursively; hidden, `_SUCCESS` and such skipped)."""
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        raise InputValidationError(f"input {uri}: no such file or folder")
    if fs.isdir(path):
        files = sorted(
            f
            for f in fs.find(path)
            if not any(part.startswith((".", "_")) for part in posixpath.relpath(f, path).split("/"))
            and strip_compression(f.lower()).endswith(CSV_SUFFIXES + JSON_SUFFIXES + PARQUET_SUFFIXES)
        )
        if not files:
            raise InputValidationError(f"input folder {uri}: no .csv, .tsv, .parquet or .jsonl files in it")
        return fs, files
    return fs, [path]


def fingerprint(uri: str) -> str:
    """Content fingerprint of the input, the cache key of ingestion.

    A path alone is not a key (the file behind it changes); hashing every byte of a large
    remote input is slow. Size + modification time + a hash of the first and last MiB of
    each file changes whenever the data does in practice, at a bounded cost.
    """
    fs, files = list_input_files(uri)
    digest = hashlib.sha256()
    for name in files:
        info = fs.info(name)
        size = int(info.get("size") or 0)
        digest.update(f"{name}|{size}|{info.get('mtime') or info.get('LastModified') or ''}".encode())
        with fs.open(name, "rb") as handle:
            digest.update(handle.read(1 << 20))
            if size > 2 << 20:
                handle.seek(size - (1 << 20))
                digest.update(handle.read())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- the Spark read


def _parse_files(
    listings: Iterator[pa.RecordBatch], encoding: str, max_chars: int
) -> Iterator[pa.RecordBatch]:
    """In a Spark task: each listed file read and validated whole, as Arrow batches, or, when
    it is broken, one row carrying the problem."""
    for listing in listings:
        rows = listing.to_pylist()
        for row in rows:
            index = pa.array([row["file_index"]], pa.int32())
            try:
                frame = read_file(row["url"], row["name"], encoding, max_chars)
            except InputValidationError as error:
                nulls = [pa.nulls(1, field.type) for field in _ARROW_SCHEMA]
                yield pa.RecordBatch.from_arrays([*nulls, index, pa.array([str(error)])], schema=_PARSED)
                continue
            table = pa.Table.from_pandas(frame, schema=_ARROW_SCHEMA, preserve_index=False)
            table = table.append_column(_FILE_INDEX, pa.repeat(index[0], len(table)))
            table = table.append_column(_ERROR, pa.nulls(len(table), pa.string()))
            yield from table.to_batches(max_chunksize=_BATCH_ROWS)


def read_reviews(
    spark: SparkSession,
    uri: str,
    encoding: str = "utf-8",
    max_chars: int = SETTINGS.max_review_chars,
) -> DataFrame:
    """Everything under `uri` as a Spark DataFrame (`SPARK_SCHEMA`), one Spark task per file.

    Raises the first problem, in file-name order, before returning anything: the parsed rows
    are kept (memory, then disk) for the write that follows, so no file is read twice.
    """
    fs, files = list_input_files(uri)
    listing = spark.createDataFrame(
        spark.sparkContext.parallelize(
            [(index, fs.unstrip_protocol(name), name) for index, name in enumerate(files)], len(files)
        ),
        "file_index int, url string, name string",
    )
    parse = partial(_parse_files, encoding=encoding, max_chars=max_chars)
    parsed = listing.mapInArrow(parse, _SPARK_PARSED).persist(StorageLevel.MEMORY_AND_DISK)
    problem = parsed.where(F.col(_ERROR).isNotNull()).orderBy(_FILE_INDEX).select(_ERROR).first()
    if problem is not None:
        parsed.unpersist()
        raise InputValidationError(problem[_ERROR])
    return parsed.drop(_FILE_INDEX, _ERROR)


# ----------------------------------------------------------------------------- tasks


@task(
    container_image=TASK_IMAGE,
    requests=Resources(cpu="500m", mem="512Mi"),
    limits=Resources(cpu="1", mem="1Gi"),
)
def fingerprint_input(uri: str) -> str:
    """Not cached on purpose: it is what tells the cached `ingest` that the data changed."""
    return fingerprint(uri)


@task(container_image=TASK_IMAGE, requests=Resources(cpu="250m", mem="256Mi"))
def fingerprint_feedback(folder: str) -> str:
    """The feedback files' names, sizes and times ("" when there are none): files are only
    ever added or rotated away, never rewritten, so this changes exactly when they do."""
    files = sorted(Path(folder).glob("feedback-*.parquet")) if folder else []
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest() if files else ""


class LabelledFeedback(NamedTuple):
    """The feedback a training run takes: as ingested reviews, the ISO time of the newest row
    read ("" when none), and per client the rows left out over its share."""

    reviews: pd.DataFrame
    until: str
    capped: dict[str, int]


def cap_per_client(feedback: pd.DataFrame, most: int) -> tuple[pd.DataFrame, dict[str, int]]:
    """Each client's newest `most` rows, oldest first, and per client the rows left out.

    The client is the `client` column; rows without one (or files older than the column)
    are one client, `UNKNOWN_CLIENT`. Ties in time keep the rows read last.
    """
    feedback = feedback.reset_index(drop=True)
    clients = (
        feedback["client"].astype(object) if "client" in feedback else pd.Series(None, index=feedback.index)
    )
    clients = clients.where(clients.notna() & (clients != ""), UNKNOWN_CLIENT).astype(str)
    stamps = pd.to_datetime(feedback["timestamp"], utc=True)
    order = stamps.sort_values(kind="stable").index
    rank = clients[order].groupby(clients[order]).cumcount(ascending=False)  # 0: a client's newest
    keep = rank < most
    left_out = clients[order][~keep].value_counts()
    capped = {str(client): int(rows) for client, rows in sorted(left_out.items())}
    return feedback.loc[order[keep.to_numpy()]].reset_index(drop=True), capped


def feedback_reviews(folder: str, most_per_client: int | None = None) -> LabelledFeedback:
    """The service's labelled feedback as ingested reviews (same schema and checks as files),
    each client's rows capped at its newest `most_per_client` (None: all). Small by design
    (the service bounds the folder), so it is read here, not by a Spark task per file.

    Rows are capped before they are checked: a client's flood of rows left out cannot fail
    the run. `until` is the newest row read, kept or not, so the drift check does not retrain
    again for rows this run deliberately left out."""
    feedback = read_feedback(Path(folder))
    if feedback.empty:
        return LabelledFeedback(pd.DataFrame(columns=list(COLUMNS)), "", {})
    until = pd.to_datetime(feedback["timestamp"], utc=True).max().isoformat()
    capped: dict[str, int] = {}
    if most_per_client is not None:
        feedback, capped = cap_per_client(feedback, most_per_client)
    if feedback.empty:
        return LabelledFeedback(pd.DataFrame(columns=list(COLUMNS)), until, capped)
    stamps = pd.to_datetime(feedback["timestamp"], utc=True)
    frame = feedback[["reviewText", "summary", "overall"]].copy()
    frame["unixReviewTime"] = stamps.astype("int64") // 10**9
    checked = validate_frame(frame, f"feedback in {folder}")
    checked["source_file"] = f"{folder}{FEEDBACK_SOURCE}"
    return LabelledFeedback(checked, until, capped)


@task(
    task_config=spark_task(),
    cache=True,
    cache_version=cache_version("ingest"),
    container_image=TASK_IMAGE,
    requests=Resources(cpu="1", mem="2Gi"),
    limits=Resources(cpu="2", mem="4Gi"),
)
def ingest(
    uri: str,
    content_fingerprint: str,
    encoding: str = "utf-8",
    feedback: str = "",
    feedback_fingerprint: str = "",
    feedback_client_share: float = DEFAULT_FEEDBACK_CLIENT_SHARE,
) -> IngestOutputs:
    """Reads + validates the raw reviews with Spark, and the labelled feedback when a folder is
    given, into one Parquet table (cached by the content fingerprints and the share).

    Each feedback client adds at most `feedback_client_share` x the input's rows (its newest),
    so one client (a leaked or abused key) cannot flood the training set."""
    del content_fingerprint, feedback_fingerprint  # only the cache key
    if not 0 < feedback_client_share <= 1:
        raise ValueError(f"feedback_client_share {feedback_client_share} is not in (0, 1]")
    session = task_session()
    reviews = read_reviews(session, uri, encoding)
    labelled = LabelledFeedback(pd.DataFrame(), "", {})
    if feedback:
        labelled = feedback_reviews(feedback, int(feedback_client_share * reviews.count()))
    if len(labelled.reviews):
        table = pa.Table.from_pandas(labelled.reviews, schema=_ARROW_SCHEMA, preserve_index=False)
        reviews = reviews.unionByName(session.createDataFrame(table, SPARK_SCHEMA))
    counts = {str(row["overall"]): int(row["count"]) for row in reviews.groupBy("overall").count().collect()}
    stats = IngestStats(
        files=reviews.select("source_file").distinct().count(),
        rows=sum(counts.values()),
        rating_counts=dict(sorted(counts.items())),
        feedback_rows=len(labelled.reviews),
        feedback_until=labelled.until,
        feedback_capped_rows=sum(labelled.capped.values()),
        feedback_capped=labelled.capped,
        feedback_client_share=feedback_client_share,
    )
    print(
        f"ingest: {stats.rows} rows ({feedback_note(stats)}) from {stats.files} source(s) "
        f"under {uri}; ratings {stats.rating_counts}"
    )
    return IngestOutputs(StructuredDataset(dataframe=reviews), stats)


def feedback_note(stats: IngestStats) -> str:
    """ "741 labelled feedback, 5,900 over a client's 20 % share left out (mallory 5,900)"."""
    note = f"{stats.feedback_rows:,} labelled feedback"
    if stats.feedback_capped_rows:
        worst = sorted(stats.feedback_capped.items(), key=lambda item: -item[1])
        named = ", ".join(f"{client} {rows:,}" for client, rows in worst[:3]) + (
            " ..." if len(worst) > 3 else ""
        )
        note += (
            f", {stats.feedback_capped_rows:,} over a client's {stats.feedback_client_share * 100:g} % share "
            f"left out ({named})"
        )
    return note
