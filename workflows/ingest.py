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
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, NamedTuple

import fsspec
import pandas as pd
import pyarrow as pa
from flytekit import Resources, StructuredDataset, current_context, kwtypes, task
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
from workflows.settings import SETTINGS, cache_version, spark_task

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


@dataclass
class IngestStats:
    files: int
    rows: int
    rating_counts: dict[str, int]
    feedback_rows: int = 0
    feedback_until: str = ""  # ISO time of the newest feedback row trained on ("" when none)


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


def feedback_reviews(folder: str) -> tuple[pd.DataFrame, str]:
    """The service's labelled feedback as ingested reviews (same schema and checks as files),
    and the ISO time of its newest row ("" when there is none). Small by design (the service
    rotates it), so it is read here, not by a Spark task per file."""
    feedback = read_feedback(Path(folder))
    if feedback.empty:
        return pd.DataFrame(columns=list(COLUMNS)), ""
    stamps = pd.to_datetime(feedback["timestamp"], utc=True)
    frame = feedback[["reviewText", "summary", "overall"]].copy()
    frame["unixReviewTime"] = stamps.astype("int64") // 10**9
    checked = validate_frame(frame, f"feedback in {folder}")
    checked["source_file"] = f"{folder}{FEEDBACK_SOURCE}"
    return checked, stamps.max().isoformat()


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
) -> IngestOutputs:
    """Reads + validates the raw reviews with Spark, and the labelled feedback when a folder is
    given, into one Parquet table (cached by the content fingerprints)."""
    del content_fingerprint, feedback_fingerprint  # only the cache key
    session: SparkSession = current_context().spark_session
    reviews = read_reviews(session, uri, encoding)
    labelled, until = feedback_reviews(feedback) if feedback else (pd.DataFrame(), "")
    if len(labelled):
        table = pa.Table.from_pandas(labelled, schema=_ARROW_SCHEMA, preserve_index=False)
        reviews = reviews.unionByName(session.createDataFrame(table, SPARK_SCHEMA))
    counts = {str(row["overall"]): int(row["count"]) for row in reviews.groupBy("overall").count().collect()}
    stats = IngestStats(
        files=reviews.select("source_file").distinct().count(),
        rows=sum(counts.values()),
        rating_counts=dict(sorted(counts.items())),
        feedback_rows=len(labelled),
        feedback_until=until,
    )
    print(
        f"ingest: {stats.rows} rows ({stats.feedback_rows} of them feedback) from {stats.files} source(s) "
        f"under {uri}; ratings {stats.rating_counts}"
    )
    return IngestOutputs(StructuredDataset(dataframe=reviews), stats)
