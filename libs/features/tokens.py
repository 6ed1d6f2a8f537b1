"""Tokens and n-grams of a batch of cleaned texts, as flat columns with text offsets.

The contract's token pattern, `(?u)\\w[\\w']+|[!?]` (words of two or more characters, and
the sentiment marks), runs as one compiled scan (numba) over the batch's UTF-8 bytes.
It relies on what cleaning guarantees: a clean text holds word characters, `'`, `!`,
`?` and single spaces only, so every non-ASCII character in it is a word character and
the scan never has to classify Unicode (an ASCII byte outside that alphabet is refused:
the text was not cleaned). Tokens come back flattened with the offsets where each
text's tokens start, because counting and vocabulary lookups work on flat columns; an
n-gram starts at every token that has n - 1 more tokens of the same text after it.
"""

from __future__ import annotations

import string
from typing import NamedTuple

import numba
import numpy as np
import polars as pl
import pyarrow as pa

from libs.features.charclasses import utf8_bytes
from libs.features.contract import CONTRACT, TfidfSpec

IMPLEMENTED_PATTERN = CONTRACT.tfidf.token_pattern
"""The one token pattern the scan implements."""

# Byte classes, ordered so that `>= APOSTROPHE` is "may continue a word token".
NOT_CLEAN, SPACE, MARK, APOSTROPHE, WORD = range(5)
_BYTE_CLASS = np.full(256, WORD, dtype=np.uint8)  # bytes >= 0x80: parts of word characters
_BYTE_CLASS[:0x80] = NOT_CLEAN
_BYTE_CLASS[np.frombuffer(b" ", np.uint8)] = SPACE
_BYTE_CLASS[np.frombuffer(b"!?", np.uint8)] = MARK
_BYTE_CLASS[np.frombuffer(b"'", np.uint8)] = APOSTROPHE
_BYTE_CLASS[np.frombuffer(string.digits.encode() + b"_" + string.ascii_letters.encode(), np.uint8)] = WORD


@numba.njit(cache=True, nogil=True)
def next_token(data: np.ndarray, position: int, end: int) -> tuple[int, int]:
    """(start, stop) of the first token in `data[position:end]`; (end, end) if there is none,
    (-1, i) if byte i is not one a clean text holds."""
    while position < end:
        kind = _BYTE_CLASS[data[position]]
        if kind == MARK:
            return position, position + 1
        if kind == NOT_CLEAN:
            return -1, position
        if kind == SPACE:
            position += 1
            continue
        while position < end and _BYTE_CLASS[data[position]] == APOSTROPHE:
            position += 1  # `\w` must come first: leading apostrophes start no token
        start, characters = position, 0
        while position < end and _BYTE_CLASS[data[position]] >= APOSTROPHE:
            characters += (data[position] & 0xC0) != 0x80  # a character's first byte (' is one)
            position += 1
        if characters >= 2:
            return start, position
    return end, end


@numba.njit(cache=True, nogil=True)
def _spans(data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Every token's (start, stop) in `data`, each text's first token, and a byte that is not
    clean text (-1: none)."""
    starts = np.empty(len(data), np.int64)
    stops = np.empty(len(data), np.int64)
    firsts = np.empty(len(offsets), np.int64)
    firsts[0] = count = 0
    for text in range(len(offsets) - 1):
        position, end = offsets[text], offsets[text + 1]
        while True:
            start, stop = next_token(data, position, end)
            if start < 0:
                return starts[:count], stops[:count], firsts, stop
            if start == end:
                break
            starts[count], stops[count] = start, stop
            count += 1
            position = stop
        firsts[text + 1] = count
    return starts[:count].copy(), stops[:count].copy(), firsts, -1


class Tokens(NamedTuple):
    """A batch's tokens: text i's are `values[offsets[i]:offsets[i + 1]]`, in order."""

    values: pl.Series
    offsets: np.ndarray


def require_pattern(spec: TfidfSpec) -> None:
    if spec.token_pattern != IMPLEMENTED_PATTERN:
        raise ValueError(f"no kernel implements the token pattern {spec.token_pattern!r}")


def not_clean_error(data: np.ndarray, offsets: np.ndarray, position: int) -> ValueError:
    """The error for a byte that no cleaned text holds, naming the text and the character."""
    text = int(np.searchsorted(offsets, position, side="right")) - 1
    return ValueError(
        f"text {text} is not a cleaned text: it holds {chr(data[position])!r} "
        f"(clean it with libs.features.clean_texts first)"
    )


def unigrams(cleaned: pa.Array, spec: TfidfSpec = CONTRACT.tfidf) -> Tokens:
    """The tokens of every text of the batch."""
    require_pattern(spec)
    data, offsets = utf8_bytes(cleaned)
    starts, stops, firsts, bad = _spans(data, offsets)
    if bad >= 0:
        raise not_clean_error(data, offsets, bad)
    lengths = stops - starts
    value_offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    picked = np.repeat(starts - value_offsets[:-1], lengths) + np.arange(value_offsets[-1])
    values = pa.LargeStringArray.from_buffers(
        len(starts), pa.py_buffer(value_offsets), pa.py_buffer(np.ascontiguousarray(data[picked]))
    )
    return Tokens(pl.Series(values), firsts)


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
