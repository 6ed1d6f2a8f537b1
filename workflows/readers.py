"""Strict readers: one raw file (CSV, Parquet, JSON lines) -> validated reviews in the canonical schema.

Why so strict: every later stage is cached and expensive, and a model trained on a
half-read file looks fine until it is served. A file is read and checked whole; the first
problem raises `InputValidationError` naming the file, the column and the row.

What is checked: the file is non-empty UTF-8 text (CSV/JSON) or valid Parquet; CSV
records have exactly the header's field count (a truncated file or a wrong delimiter
shows up here) and no quoted field runs into the end of the file; the required columns
`reviewText` and `overall` exist; every rating is an integer 1-5; `unixReviewTime`, when
present, is an integer; no review text or summary is longer than
`KINDLE_MAX_REVIEW_CHARS` (1,000,000). Not checked, on purpose: id lengths (the real Kindle dump has
short, dirty `asin`/`reviewerID` values, see shared/README.md) and empty texts (the ETL
drops rows with no text at all and counts them).

This module knows nothing of Spark: `ingest.read_reviews` runs `read_file` in Spark tasks,
one per file, and the feedback rows go through `validate_frame` too.
"""

from __future__ import annotations

import csv
import io
import json
import math

import fsspec
import pandas as pd
import pyarrow.parquet as pq

from workflows.settings import SETTINGS

REQUIRED = ("reviewText", "overall")
OPTIONAL = ("summary", "asin", "reviewerID", "unixReviewTime")
"""Kept when present; other columns of the public dump (helpful, reviewerName...) are dropped."""
COLUMNS = (
    "reviewText",
    "summary",
    "overall",
    "asin",
    "reviewerID",
    "unixReviewTime",
    "source_file",
    "source_row",
)
"""The canonical schema; `source_file`/`source_row` trace a row back to its file."""

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
COMPRESSIONS = (".gz", ".bz2", ".zst", ".xz")


class InputValidationError(ValueError):
    """The input cannot be trained on; the message names the file, column and row."""


def strip_compression(name: str) -> str:
    for suffix in COMPRESSIONS:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _read_bytes(url: str) -> bytes:
    with fsspec.open(url, "rb", compression="infer") as handle:
        return handle.read()


def _decode(data: bytes, name: str, encoding: str) -> str:
    if not data.strip():
        raise InputValidationError(f"file {name}: empty file (no header, no rows)")
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise InputValidationError(
            f"file {name}: binary data (NUL byte at offset {nul}, line {line}); expected {encoding} text"
        )
    try:
        return data.decode("utf-8-sig" if encoding.lower().replace("_", "-") == "utf-8" else encoding)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise InputValidationError(
            f"file {name}: not valid {encoding} at byte {error.start} (line {line}): {error.reason}"
        ) from None


def _guess_delimiter(header: str) -> str | None:
    counts = {d: header.count(d) for d in (";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else None


def read_csv_text(
    text: str, name: str, delimiter: str = ",", max_chars: int = SETTINGS.max_review_chars
) -> pd.DataFrame:
    """Strict CSV: every record must have the header's field count; quoted fields must close;
    no field is longer than `max_chars` (csv's own process-wide limit, 131,072 by default,
    would otherwise call a long field "malformed", so it is set to ours while reading)."""
    previous_limit = csv.field_size_limit(max_chars)
    try:
        return _read_csv_records(text, name, delimiter, max_chars)
    finally:
        csv.field_size_limit(previous_limit)


def _read_csv_records(text: str, name: str, delimiter: str, max_chars: int) -> pd.DataFrame:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as error:
        raise InputValidationError(f"file {name}: unreadable CSV header: {error}") from None
    width = len(header)
    rows: list[list[str]] = []
    lines: list[int] = []
    start = reader.line_num + 1
    try:
        for record in reader:
            if not record:  # a blank line
                start = reader.line_num + 1
                continue
            if len(record) != width:
                hint = "truncated file?" if len(record) < width else "wrong delimiter or an unquoted field?"
                raise InputValidationError(
                    f"file {name}, row {len(rows) + 1} (line {start}): {len(record)} fields, the header "
                    f"has {width} ({hint})"
                )
            rows.append(record)
            lines.append(start)
            start = reader.line_num + 1
    except csv.Error as error:
        if "field larger than field limit" in str(error):
            raise InputValidationError(
                f"file {name}, row {len(rows) + 1} (line {start}): a field is longer than the limit of "
                f"{max_chars} characters (KINDLE_MAX_REVIEW_CHARS); an unclosed quote or not a review"
            ) from None
        raise InputValidationError(
            f"file {name}, row {len(rows) + 1} (line {start}): malformed CSV ({error}); "
            "a quoted field that never closes usually means a truncated file"
        ) from None
    # The public Kindle CSV has a leading unnamed index column (pandas' `index_col=0`).
    header = [column.strip() for column in header]
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    if header and header[0] in ("", "Unnamed: 0"):
        frame = frame.iloc[:, 1:]
    frame.attrs["lines"] = lines
    frame.attrs["raw_header"] = delimiter.join(header)
    return frame


def read_jsonl_text(text: str, name: str) -> pd.DataFrame:
    """JSON lines (one object per line); a JSON array of objects is accepted too."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            records = json.loads(stripped)
        except json.JSONDecodeError as error:
            raise InputValidationError(
                f"file {name}: invalid JSON at line {error.lineno}: {error.msg}"
            ) from None
        lines = list(range(1, len(records) + 1))
    else:
        records, lines = [], []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise InputValidationError(
                    f"file {name}, row {len(records) + 1} (line {number}): invalid JSON: {error.msg}"
                ) from None
            lines.append(number)
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise InputValidationError(
                f"file {name}, row {index + 1}: expected a JSON object, got {record!r:.60}"
            )
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    frame.attrs["lines"] = lines
    return frame


def read_parquet_bytes(data: bytes, name: str) -> pd.DataFrame:
    if not data:
        raise InputValidationError(f"file {name}: empty file")
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as error:  # pyarrow raises several types for corrupt files
        raise InputValidationError(f"file {name}: not a readable Parquet file ({error})") from None
    return table.to_pandas()


def read_one(
    url: str, name: str, encoding: str = "utf-8", max_chars: int = SETTINGS.max_review_chars
) -> pd.DataFrame:
    """The file at `url` as a table of strings (CSV, JSON) or typed columns (Parquet), unchecked;
    `name` is what messages call it."""
    data = _read_bytes(url)
    lowered = strip_compression(name.lower())
    if lowered.endswith(PARQUET_SUFFIXES) or data[:4] == b"PAR1":
        return read_parquet_bytes(data, name)
    text = _decode(data, name, encoding)
    if lowered.endswith(JSON_SUFFIXES):
        return read_jsonl_text(text, name)
    return read_csv_text(text, name, "\t" if lowered.endswith(".tsv") else ",", max_chars)


# ----------------------------------------------------------------------------- validation


def _row_label(frame: pd.DataFrame, position: int) -> str:
    lines = frame.attrs.get("lines")
    if lines and position < len(lines):
        return f"row {position + 1} (line {lines[position]})"
    return f"row {position + 1}"


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def _as_rating(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    if not math.isfinite(number) or number != int(number):
        return None
    return int(number)


def _check_lengths(frame: pd.DataFrame, name: str, max_chars: int) -> None:
    """JSON and Parquet have no field limit of their own: the same bound as CSV, per column."""
    for column in ("reviewText", "summary"):
        if column not in frame.columns:
            continue
        for position, value in enumerate(frame[column].tolist()):
            if isinstance(value, str) and len(value) > max_chars:
                raise InputValidationError(
                    f"file {name}, column {column!r}, {_row_label(frame, position)}: {len(value)} "
                    f"characters; the limit is {max_chars} (KINDLE_MAX_REVIEW_CHARS)"
                )


def validate_frame(
    frame: pd.DataFrame, name: str, max_chars: int = SETTINGS.max_review_chars
) -> pd.DataFrame:
    """Checks one file's table and returns it in the canonical schema (`COLUMNS`)."""
    missing = [column for column in REQUIRED if column not in frame.columns]
    if missing:
        found = list(frame.columns)
        hint = ""
        if len(found) == 1:
            guess = _guess_delimiter(str(found[0]))
            hint = f" - wrong delimiter? the header looks {guess!r}-separated" if guess else ""
        raise InputValidationError(
            f"file {name}: required column(s) {missing} missing; found {found[:12]}{hint}"
        )
    if len(frame) == 0:
        raise InputValidationError(f"file {name}: header only, no rows")
    _check_lengths(frame, name, max_chars)
    ratings = []
    for position, value in enumerate(frame["overall"].tolist()):
        rating = _as_rating(value)
        if rating is None or not 1 <= rating <= 5:
            shown = "empty" if _blank(value) else repr(value)
            raise InputValidationError(
                f"file {name}, column 'overall', {_row_label(frame, position)}: rating {shown} "
                "is not an integer from 1 to 5"
            )
        ratings.append(rating)
    out = pd.DataFrame(
        {
            "reviewText": [None if _blank(v) else str(v) for v in frame["reviewText"].tolist()],
            "overall": pd.Series(ratings, dtype="int64"),
        }
    )
    for column in ("summary", "asin", "reviewerID"):
        values = frame[column].tolist() if column in frame.columns else [None] * len(frame)
        out[column] = [None if _blank(v) else str(v) for v in values]
    times: list[int | None] = []
    if "unixReviewTime" in frame.columns:
        for position, value in enumerate(frame["unixReviewTime"].tolist()):
            if _blank(value):
                times.append(None)
                continue
            number = _as_rating(value)  # same integer parsing
            if number is None or number < 0:
                raise InputValidationError(
                    f"file {name}, column 'unixReviewTime', {_row_label(frame, position)}: {value!r} "
                    "is not a Unix time in seconds"
                )
            times.append(number)
    else:
        times = [None] * len(frame)
    out["unixReviewTime"] = pd.array(times, dtype="Int64")
    out["source_file"] = name
    out["source_row"] = pd.Series(range(1, len(frame) + 1), dtype="int64")
    return out[list(COLUMNS)]


def read_file(
    url: str, name: str, encoding: str = "utf-8", max_chars: int = SETTINGS.max_review_chars
) -> pd.DataFrame:
    """One file, read and validated whole, in the canonical schema (`COLUMNS`)."""
    return validate_frame(read_one(url, name, encoding, max_chars), name, max_chars)
