"""The features table of a batch of reviews (its text, clean text and numeric features):
the function both Spark and the service call.

`features_table` is the kernel entry point (Arrow in, Arrow out: Spark hands it the
columns of its record batches); `compute_features` is the pandas view of the same call
for the service and the model code.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import pandas as pd
import polars as pl
import pyarrow as pa

from libs.features.charclasses import ASCII, UNICODE, Classes, classes_for, has_byte
from libs.features.cleaning import cleaned, combined, long_texts, normalised
from libs.features.contract import CONTRACT
from libs.features.signals import (
    COUNT_COLUMNS,
    ascii_counts,
    features_from_counts,
    raw_signals,
    regex_counts,
)
from libs.features.text import text_array

TEXT_COLUMN = "text"
CLEAN_COLUMN = "clean_text"

SCHEMA = pa.schema(
    [
        pa.field(TEXT_COLUMN, pa.large_string(), nullable=False),
        pa.field(CLEAN_COLUMN, pa.large_string(), nullable=False),
        *[
            pa.field(feature.name, pa.from_numpy_dtype(feature.dtype), nullable=False)
            for feature in CONTRACT.numeric
        ],
    ]
)
"""The columns `features_table` returns, in this order."""


def combined_texts(reviews: pa.Array, summaries: pa.Array | None = None) -> pl.Series:
    """The `text` column alone: the summary (a strong signal when present), then the review.

    Null reviews and summaries count as empty.
    """
    return _texts(reviews, summaries).collect().to_series()


def features_table(reviews: pa.Array, summaries: pa.Array | None = None) -> pa.Table:
    """One row per review: `text`, `clean_text` and the contract's numeric features.

    One Polars query makes the texts and the cheap signals, unless some texts need NFKC or
    entity decoding (which runs on those rows only, between combining and cleaning); the
    letter, capital and space counts come from the bytes or from regexes (see `signals`).
    """
    frame, decoded = _texts(reviews, summaries), TEXT_COLUMN
    classes, entities = classes_for(reviews, summaries), has_byte(b"&", reviews, summaries)
    if classes is UNICODE or entities:
        texts = frame.collect().to_series()
        frame = pl.DataFrame(
            {TEXT_COLUMN: texts, "_decoded": normalised(texts, classes is UNICODE, entities)}
        ).lazy()
        decoded = "_decoded"
    first, then = _feature_expressions(classes, decoded)
    table = frame.with_columns(*first).with_columns(*then).collect().to_arrow()
    if classes is ASCII:
        counts = ascii_counts(*(table[c].combine_chunks() for c in (TEXT_COLUMN, CLEAN_COLUMN)))
    else:
        counts = {name: table[name].to_numpy() for name in COUNT_COLUMNS}
    computed = features_from_counts(counts)
    columns = {name: computed[name] if name in computed else table[name] for name in SCHEMA.names}
    return pa.table(columns).cast(SCHEMA)


def _texts(reviews: pa.Array, summaries: pa.Array | None) -> pl.LazyFrame:
    """A query of one column, `text`, combining the review and summary columns."""
    if summaries is not None and len(summaries) != len(reviews):
        raise ValueError(f"{len(summaries)} summaries for {len(reviews)} reviews")
    columns = {"review": pl.Series(reviews)}
    if summaries is not None:
        columns["summary"] = pl.Series(summaries)
    return (
        pl.DataFrame(columns)
        .lazy()
        .select(_text_expression(summaries is not None, long_texts(reviews, summaries)))
    )


# Building a Polars expression costs about as much as running it on one review, so each
# variant is built once and reused.
@cache
def _text_expression(summary: bool, bound: bool) -> pl.Expr:
    return combined(pl.col("review"), pl.col("summary") if summary else None, bound).alias(TEXT_COLUMN)


@cache
def _feature_expressions(classes: Classes, decoded: str) -> tuple[list[pl.Expr], list[pl.Expr]]:
    """(clean text and the cheap raw signals, then, for non-ASCII batches, the regex counts,
    which read the clean text too)."""
    first = [cleaned(pl.col(decoded), classes).alias(CLEAN_COLUMN), *raw_signals(pl.col(TEXT_COLUMN))]
    then = [] if classes is ASCII else regex_counts(pl.col(TEXT_COLUMN), pl.col(CLEAN_COLUMN), classes)
    return first, then


def combine(review: object, summary: object = None) -> str:
    """One review's text (`combined_texts` of a batch of one)."""
    return combined_texts(text_array([review]), text_array([summary]))[0]


def compute_features(reviews: Sequence[object], summaries: Sequence[object] | None = None) -> pd.DataFrame:
    """`features_table` as a pandas frame, for any values (see `text_array`)."""
    if summaries is not None and len(summaries) != len(reviews):
        raise ValueError(f"{len(summaries)} summaries for {len(reviews)} reviews")
    return features_table(
        text_array(reviews), None if summaries is None else text_array(summaries)
    ).to_pandas()
