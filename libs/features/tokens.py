"""Tokens and n-grams of a batch of cleaned texts, as flat columns with text offsets.

The contract's token pattern, `(?u)\\w[\\w']+|[!?]` (words of two or more characters, and
the sentiment marks), runs as one regex extraction over the batch. Tokens come back
flattened with the offsets where each text's tokens start, because counting and
vocabulary lookups work on flat columns; an n-gram starts at every token that has n - 1
more tokens of the same text after it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa

from libs.features.charclasses import Classes, classes_for
from libs.features.contract import CONTRACT, TfidfSpec

_PATTERNS = {CONTRACT.tfidf.token_pattern: lambda c: rf"[{c.word}][{c.word}']+|[!?]"}
"""The Python token patterns the kernel implements, spelt for Polars' regex engine."""


@cache
def _extraction(pattern: str) -> pl.Expr:
    """The token lists of column `t` (expressions are built once: building costs as much as a
    small batch's run)."""
    return pl.col("t").fill_null("").str.extract_all(pattern).alias("tokens")


class Tokens(NamedTuple):
    """A batch's tokens: text i's are `values[offsets[i]:offsets[i + 1]]`, in order."""

    values: pl.Series
    offsets: np.ndarray


def unigrams(cleaned: pa.Array, spec: TfidfSpec = CONTRACT.tfidf) -> Tokens:
    """The tokens of every text of the batch."""
    try:
        pattern: Callable[[Classes], str] = _PATTERNS[spec.token_pattern]
    except KeyError:
        raise ValueError(f"no kernel implements the token pattern {spec.token_pattern!r}") from None
    extraction = _extraction(pattern(classes_for(cleaned)))
    lists = pl.DataFrame({"t": pl.Series(cleaned)}).select(extraction).to_series()
    offsets = np.concatenate([[0], np.cumsum(lists.list.len().to_numpy(), dtype=np.int64)])
    return Tokens(lists.explode(empty_as_null=False, keep_nulls=False), offsets)


def ngram_starts(offsets: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask over the first `len - n + 1` token positions: an n-gram starts there, n-gram offsets)."""
    lengths = np.diff(offsets)
    mask = np.ones(max(int(offsets[-1]) - n + 1, 0), dtype=bool)
    for back in range(1, n):  # the last n - 1 tokens of a text start no n-gram
        ends = offsets[1:][lengths >= back] - back
        mask[ends[ends < len(mask)]] = False
    counts = np.maximum(lengths - n + 1, 0)
    return mask, np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])


def ngrams(tokens: Tokens, n: int) -> Tokens:
    """The n-grams (tokens joined by one space) of every text."""
    mask, offsets = ngram_starts(tokens.offsets, n)
    parts = {str(k): tokens.values.slice(k, len(mask)) for k in range(n)}
    joined = pl.DataFrame(parts).select(pl.concat_str(list(parts), separator=" ")).to_series()
    return Tokens(joined.filter(pl.Series(mask)), offsets)


def tokenize(clean: str, spec: TfidfSpec = CONTRACT.tfidf) -> list[str]:
    """Unigrams, then n-grams up to `spec.ngram_max`, of one cleaned text, in order."""
    tokens = unigrams(pa.array([clean], type=pa.large_string()), spec)
    terms = tokens.values.to_list()
    for n in range(2, spec.ngram_max + 1):
        terms += ngrams(tokens, n).values.to_list()
    return terms
