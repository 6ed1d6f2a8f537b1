"""The contract's numeric features, computed from per-text counts over whole columns.

Raw-text signals are taken from the combined text before cleaning, so capitals and `!`
survive; clean-text features from the cleaned text, whose words are separated by exactly
one space (so counting spaces counts words). Every value is finite: ratios of zero
letters or zero words are 0.

Letters, capitals and spaces are the costly counts: the regex engine pays per match, and
a review has hundreds of letters. In an ASCII batch a byte is a character, so they are
counted on the texts' UTF-8 bytes instead (a comparison and a sum per text, several times
faster); other batches count with regexes over the Unicode classes. Either way the same
`features_from_counts` turns the counts into features.
"""

from __future__ import annotations

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
    folded = (raw | 0x20) - ord("a")  # ASCII letters fold to 0..25 (uint8 arithmetic wraps)
    data, offsets = utf8_bytes(clean)
    return {
        LETTERS: _per_text(folded < 26, raw_offsets),
        UPPER: _per_text(raw - np.uint8(ord("A")) < 26, raw_offsets),
        SPACES: _per_text(data == ord(" "), offsets),
        CLEAN_LENGTH: np.diff(offsets),
    }


def features_from_counts(counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`caps_ratio`, `word_count` and `avg_word_length` from the count columns."""
    letters, upper, length = counts[LETTERS], counts[UPPER], counts[CLEAN_LENGTH]
    # Other_Uppercase characters (Ⓐ) are upper case but not letters: hence the cap at 1.
    caps = np.where(letters > 0, np.minimum(upper / np.maximum(letters, 1), 1.0), 0.0)
    words = np.where(length > 0, counts[SPACES] + 1, 0)
    average = np.where(words > 0, (length - words + 1) / np.maximum(words, 1), 0.0)
    return {"caps_ratio": caps, "word_count": words.astype(np.int64), "avg_word_length": average}


def _per_text(hits: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """How many of each text's bytes are hits (`offsets` delimit the texts)."""
    if len(offsets) < 2:
        return np.zeros(0, dtype=np.int64)
    padded = np.append(hits, False).view(np.uint8)  # a last index equal to the length stays in range
    # 32-bit sums are exact (a text is at most MAX_TEXT_CHARS bytes) and twice as fast.
    sums = np.add.reduceat(padded, offsets[:-1], dtype=np.int32)
    sums[offsets[:-1] == offsets[1:]] = 0  # reduceat gives an empty text its next byte
    return sums.astype(np.int64)
