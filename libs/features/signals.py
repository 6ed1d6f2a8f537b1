"""The contract's numeric features, computed from per-text counts over whole columns.

Raw-text signals are taken from the combined text before cleaning, so capitals and `!`
survive; clean-text features from the cleaned text, whose words are separated by exactly
one space (so counting spaces counts words). Every value is finite: ratios of zero
letters or zero words are 0.

Letters, capitals and spaces are the costly counts: the regex engine pays per match, and
a review has hundreds of letters. In an ASCII batch a byte is a character, so they are
counted on the texts' UTF-8 bytes instead, in one compiled pass (numba) per column; other
batches count with regexes over the Unicode classes. Either way the same
`features_from_counts` turns the counts into features.
"""

from __future__ import annotations

import numba
import numpy as np
import polars as pl
import pyarrow as pa

from libs.features.charclasses import Classes, utf8_bytes

LETTERS, UPPER, SPACES, CLEAN_LENGTH = "_letters", "_upper", "_spaces", "_clean_length"
COUNT_COLUMNS = (LETTERS, UPPER, SPACES, CLEAN_LENGTH)
"""The count columns `features_from_counts` reads."""


def raw_signals(text: pl.Expr) -> list[pl.Expr]:
    """`text_len`, `exclamation_count`, `question_count`: cheap in any batch."""
    return [
        text.str.len_chars().cast(pl.Int64).alias("text_len"),
        text.str.count_matches("!", literal=True).cast(pl.Int64).alias("exclamation_count"),
        text.str.count_matches("?", literal=True).cast(pl.Int64).alias("question_count"),
    ]


def regex_counts(text: pl.Expr, clean: pl.Expr, classes: Classes) -> list[pl.Expr]:
    """The count columns by regex (any batch; what non-ASCII batches use)."""
    length = text.str.len_chars().cast(pl.Int64)
    return [
        (length - text.str.count_matches(f"[^{classes.letter}]")).alias(LETTERS),
        text.str.count_matches(f"[{classes.upper}]").cast(pl.Int64).alias(UPPER),
        clean.str.count_matches(" ", literal=True).cast(pl.Int64).alias(SPACES),
        clean.str.len_chars().cast(pl.Int64).alias(CLEAN_LENGTH),
    ]


def ascii_counts(text: pa.Array, clean: pa.Array) -> dict[str, np.ndarray]:
    """The count columns from the bytes of ASCII texts (each byte one character)."""
    raw, raw_offsets = utf8_bytes(text)
    data, offsets = utf8_bytes(clean)
    letters, upper = _letters_and_capitals(raw, raw_offsets)
    return {LETTERS: letters, UPPER: upper, SPACES: _spaces(data, offsets), CLEAN_LENGTH: np.diff(offsets)}


def features_from_counts(counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`caps_ratio`, `word_count` and `avg_word_length` from the count columns."""
    letters, upper, length = counts[LETTERS], counts[UPPER], counts[CLEAN_LENGTH]
    # Other_Uppercase characters (Ⓐ) are upper case but not letters: hence the cap at 1.
    caps = np.where(letters > 0, np.minimum(upper / np.maximum(letters, 1), 1.0), 0.0)
    words = np.where(length > 0, counts[SPACES] + 1, 0)
    average = np.where(words > 0, (length - words + 1) / np.maximum(words, 1), 0.0)
    return {"caps_ratio": caps, "word_count": words.astype(np.int64), "avg_word_length": average}


@numba.njit(cache=True, nogil=True)
def _letters_and_capitals(data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each text's ASCII letters and capitals, in one pass over its bytes."""
    letters = np.zeros(len(offsets) - 1, np.int64)
    upper = np.zeros(len(offsets) - 1, np.int64)
    for text in range(len(offsets) - 1):
        found = capitals = 0
        for position in range(offsets[text], offsets[text + 1]):
            byte = data[position]
            found += int(np.uint8((byte | 0x20) - 0x61) < 26)  # a-z, and A-Z folded onto them
            capitals += int(np.uint8(byte - 0x41) < 26)
        letters[text], upper[text] = found, capitals
    return letters, upper


@numba.njit(cache=True, nogil=True)
def _spaces(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Each text's spaces."""
    spaces = np.zeros(len(offsets) - 1, np.int64)
    for text in range(len(offsets) - 1):
        found = 0
        for position in range(offsets[text], offsets[text + 1]):
            found += data[position] == 0x20
        spaces[text] = found
    return spaces
