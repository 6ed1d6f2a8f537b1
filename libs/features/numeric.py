"""Numeric features of a batch of reviews: the function both Spark and the service call."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from libs.features.contract import CONTRACT
from libs.features.text import clean_text, combine

TEXT_COLUMN = "text"
CLEAN_COLUMN = "clean_text"


_ASCII_LETTERS = bytes(range(65, 91)) + bytes(range(97, 123))
_ASCII_UPPER = bytes(range(65, 91))


def _letter_counts(text: str) -> tuple[int, int]:
    """(letters, upper-case letters), by Unicode rules; a byte-level fast path for ASCII."""
    if text.isascii():
        raw = text.encode("ascii")
        letters = len(raw) - len(raw.translate(None, _ASCII_LETTERS))
        return letters, len(raw) - len(raw.translate(None, _ASCII_UPPER))
    return sum(map(str.isalpha, text)), sum(map(str.isupper, text))


def _raw_signals(text: str) -> tuple[int, float, int, int]:
    letters, upper = _letter_counts(text)
    caps_ratio = upper / letters if letters else 0.0
    return len(text), min(caps_ratio, 1.0), text.count("!"), text.count("?")


def _clean_signals(clean: str) -> tuple[int, float]:
    words = clean.split()
    if not words:
        return 0, 0.0
    return len(words), sum(map(len, words)) / len(words)


def compute_features(reviews: Sequence[object], summaries: Sequence[object] | None = None) -> pd.DataFrame:
    """One row per review: `text`, `clean_text` and the contract's numeric features.

    Raw-text signals are taken before cleaning, so capitals and `!` survive it.
    """
    if summaries is not None and len(summaries) != len(reviews):
        raise ValueError(f"{len(summaries)} summaries for {len(reviews)} reviews")
    pairs = zip(reviews, summaries if summaries is not None else [None] * len(reviews), strict=False)
    texts = [combine(review, summary) for review, summary in pairs]
    cleaned = [clean_text(text) for text in texts]
    raw = np.array([_raw_signals(text) for text in texts], dtype=np.float64).reshape(-1, 4)
    clean = np.array([_clean_signals(text) for text in cleaned], dtype=np.float64).reshape(-1, 2)
    values = {
        "text_len": raw[:, 0],
        "caps_ratio": raw[:, 1],
        "exclamation_count": raw[:, 2],
        "question_count": raw[:, 3],
        "word_count": clean[:, 0],
        "avg_word_length": clean[:, 1],
    }
    frame = pd.DataFrame({TEXT_COLUMN: texts, CLEAN_COLUMN: cleaned})
    for feature in CONTRACT.numeric:
        frame[feature.name] = values[feature.name].astype(feature.dtype)
    return frame
