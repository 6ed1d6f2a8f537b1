"""The features of a batch of reviews: the function both Spark and the service call.

`features_table` is the kernel entry point (Arrow in, Arrow out: Spark hands it the
columns of its record batches); `compute_features` is the pandas view of the same call
for the service and the model code.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import polars as pl
import pyarrow as pa

from libs.features.charclasses import UNICODE, classes_for, has_byte
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
    if summaries is not None and len(summaries) != len(reviews):
        raise ValueError(f"{len(summaries)} summaries for {len(reviews)} reviews")
    inputs = pl.DataFrame({"review": pl.Series(reviews)})
    if summaries is not None:
        inputs = inputs.with_columns(summary=pl.Series(summaries))
    summary = None if summaries is None else pl.col("summary")
    bound = long_texts(reviews, summaries)
    return inputs.select(combined(pl.col("review"), summary, bound).alias(TEXT_COLUMN)).to_series()


def features_table(reviews: pa.Array, summaries: pa.Array | None = None) -> pa.Table:
    """One row per review: `text`, `clean_text` and the contract's numeric features.

    Three Polars queries at most: combining, the rare NFKC/entity rows, and cleaning with
    every numeric feature.
    """
    texts = combined_texts(reviews, summaries)
    classes = classes_for(reviews, summaries)
    decoded = normalised(texts, unicode=classes is UNICODE, entities=has_byte(b"&", reviews, summaries))
    text, clean = pl.col(TEXT_COLUMN), pl.col(CLEAN_COLUMN)
    frame = (
        pl.DataFrame({TEXT_COLUMN: texts, "_decoded": decoded})
        .lazy()
        .with_columns(cleaned(pl.col("_decoded"), classes).alias(CLEAN_COLUMN), *raw_signals(text, classes))
        .with_columns(*clean_signals(clean))
        .select(SCHEMA.names)
        .collect()
    )
    return frame.to_arrow().cast(SCHEMA)


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
