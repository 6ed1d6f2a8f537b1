"""The features of a batch of reviews: the function both Spark and the service call.

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

from libs.features.charclasses import UNICODE, Classes, classes_for, has_byte
from libs.features.cleaning import cleaned, combined, long_texts, normalised
from libs.features.contract import CONTRACT
from libs.features.signals import clean_signals, raw_signals
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

    One Polars query does it all, unless some texts need NFKC or entity decoding (which
    runs on those rows only, between combining and cleaning).
    """
    frame, decoded = _texts(reviews, summaries), TEXT_COLUMN
    classes, entities = classes_for(reviews, summaries), has_byte(b"&", reviews, summaries)
    if classes is UNICODE or entities:
        texts = frame.collect().to_series()
        frame = pl.DataFrame(
            {TEXT_COLUMN: texts, "_decoded": normalised(texts, classes is UNICODE, entities)}
        )
        frame, decoded = frame.lazy(), "_decoded"
    first, then = _feature_expressions(classes, decoded)
    return (
        frame.with_columns(*first).with_columns(*then).select(SCHEMA.names).collect().to_arrow().cast(SCHEMA)
    )


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
    """(clean text and raw signals, then the clean-text signals, which read the clean text)."""
    first = [
        cleaned(pl.col(decoded), classes).alias(CLEAN_COLUMN),
        *raw_signals(pl.col(TEXT_COLUMN), classes),
    ]
    return first, clean_signals(pl.col(CLEAN_COLUMN))


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
