"""The contract's numeric features as Polars expressions, counted over whole columns.

Raw-text signals are taken from the combined text before cleaning, so capitals and `!`
survive; clean-text features from the cleaned text, whose words are separated by exactly
one space (so counting spaces counts words). Every value is finite: ratios of zero
letters or zero words are 0.
"""

from __future__ import annotations

import polars as pl

from libs.features.charclasses import UNICODE, Classes


def raw_signals(text: pl.Expr, classes: Classes = UNICODE) -> list[pl.Expr]:
    """`text_len`, `caps_ratio`, `exclamation_count`, `question_count` of each text."""
    length = text.str.len_chars().cast(pl.Int64)
    letters = length - text.str.count_matches(f"[^{classes.letter}]")
    upper = text.str.count_matches(f"[{classes.upper}]")
    # Other_Uppercase characters (Ⓐ) are upper case but not letters: hence the cap at 1.
    caps = pl.when(letters > 0).then(pl.min_horizontal(upper / letters, pl.lit(1.0))).otherwise(pl.lit(0.0))
    return [
        length.alias("text_len"),
        caps.alias("caps_ratio"),
        text.str.count_matches("!", literal=True).cast(pl.Int64).alias("exclamation_count"),
        text.str.count_matches("?", literal=True).cast(pl.Int64).alias("question_count"),
    ]


def clean_signals(clean: pl.Expr) -> list[pl.Expr]:
    """`word_count` and `avg_word_length` of each cleaned text."""
    length = clean.str.len_chars().cast(pl.Int64)
    words = (
        pl.when(length > 0).then(clean.str.count_matches(" ", literal=True).cast(pl.Int64) + 1).otherwise(0)
    )
    average = pl.when(words > 0).then((length - words + 1) / words).otherwise(pl.lit(0.0))
    return [words.alias("word_count"), average.alias("avg_word_length")]
