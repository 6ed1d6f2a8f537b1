"""Per-text term counts of a batch as CSR parts: sorted term indices and their counts.

One compiled pass (numba) over the cleaned texts' UTF-8 bytes finds each token
(`tokens.next_token`), keys it and the n-grams ending at it (`vocabulary.token_key`),
looks the keys up (`vocabulary.find`) and counts the known terms per text. The counts
live in a vocabulary-sized array beside a two-level bitmap of the terms seen, so a text's
distinct terms come out in index order by scanning set bits, with no sort; both are
cleared as they are read, ready for the next text.

Memory safety (numba checks no bounds) rests on two facts, not on what real texts look
like. A token is at least one byte of its text (`next_token` returns `stop > start >=
position` and the scan resumes at `stop`), so a text of L bytes has at most L tokens and
the token-key buffer, sized to the longest text, holds any text's. A text's distinct terms
are counted as they are first seen, and the output arrays are grown to hold them before
they are written; no estimate of terms per byte is trusted (`!?`, two bytes, holds three
terms: `!`, `?` and `! ?`).
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
import pyarrow as pa

from libs.features.charclasses import utf8_bytes
from libs.features.tokens import next_token, not_clean_error
from libs.features.vocabulary import FOLD, TermIndex, find, token_key


class Counts(NamedTuple):
    """CSR parts: text i's terms are `indices[indptr[i]:indptr[i + 1]]` (sorted), with `counts`."""

    indptr: np.ndarray
    indices: np.ndarray
    counts: np.ndarray


# The lowest set bit of a 64-bit word w is _LOWEST[(w ^ (w - 1)) * _DE_BRUIJN >> 58].
_DE_BRUIJN = np.uint64(0x03F79D71B4CB0A89)
_LOWEST = np.zeros(64, dtype=np.int64)
_BELOW = np.uint64(2) ** np.arange(64, dtype=np.uint64) * np.uint64(2) - np.uint64(1)  # w ^ (w - 1), w = 2^i
_LOWEST[(_BELOW * _DE_BRUIJN) >> np.uint64(58)] = np.arange(64)


@numba.njit(cache=True, nogil=True)
def _lowest_bit(word: np.uint64) -> int:
    return _LOWEST[((word ^ (word - np.uint64(1))) * _DE_BRUIJN) >> np.uint64(58)]


@numba.njit(cache=True, nogil=True)
def _grown(array: np.ndarray, filled: int, least: int) -> np.ndarray:
    """`array`'s first `filled` items in a new array of at least `least` (and twice its size)."""
    grown = np.empty(max(least, 2 * len(array)), array.dtype)
    grown[:filled] = array[:filled]
    return grown


@numba.njit(cache=True, nogil=True)
def _count(
    data: np.ndarray,
    offsets: np.ndarray,
    keys: np.ndarray,
    positions: np.ndarray,
    seed: np.uint64,
    size: int,
    ngram_max: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """(indptr, indices, counts, number of tokens, a byte that is not clean text or -1)."""
    texts = len(offsets) - 1
    counts = np.zeros(size, np.int64)
    seen = np.zeros((size + 63) // 64, np.uint64)  # bit v: term v occurs in this text
    seen_words = np.zeros((len(seen) + 63) // 64, np.uint64)  # bit w: word w of `seen` is not 0
    longest = 0
    for text in range(texts):
        longest = max(longest, offsets[text + 1] - offsets[text])
    token_keys = np.empty(longest, np.uint64)  # the current text's, for its n-grams
    # Real texts hold about one term per four bytes; a text that needs more grows them below.
    out_indices = np.empty(len(data) // 2 + 64, np.int32)
    out_counts = np.empty(len(out_indices), np.int64)
    indptr = np.zeros(texts + 1, np.int64)
    filled = tokens = 0
    for text in range(texts):
        position, end, tokens_before, distinct = offsets[text], offsets[text + 1], tokens, 0
        while True:
            start, stop = next_token(data, position, end)
            if start < 0:
                return indptr, out_indices[:0], out_counts[:0], tokens, stop
            if start == end:
                break
            position = stop
            last = tokens - tokens_before
            token_keys[last] = token_key(data, start, stop, seed)
            tokens += 1
            for n in range(1, min(ngram_max, last + 1) + 1):
                key = token_keys[last - n + 1]
                for k in range(last - n + 2, last + 1):
                    key = key * FOLD + token_keys[k]
                term = find(keys, positions, key)
                if term >= 0:
                    if counts[term] == 0:
                        seen[term >> 6] |= np.uint64(1) << np.uint64(term & 63)
                        seen_words[term >> 12] |= np.uint64(1) << np.uint64((term >> 6) & 63)
                        distinct += 1
                    counts[term] += 1
        if filled + distinct > len(out_indices):
            out_indices = _grown(out_indices, filled, filled + distinct)
            out_counts = _grown(out_counts, filled, filled + distinct)
        for high in range(len(seen_words)):
            words = seen_words[high]
            while words:
                word = high * 64 + _lowest_bit(words)
                words &= words - np.uint64(1)
                bits = seen[word]
                while bits:
                    term = word * 64 + _lowest_bit(bits)
                    bits &= bits - np.uint64(1)
                    out_indices[filled] = term
                    out_counts[filled] = counts[term]
                    counts[term] = 0
                    filled += 1
                seen[word] = 0
            seen_words[high] = 0
        indptr[text + 1] = filled
    return indptr, out_indices[:filled], out_counts[:filled], tokens, -1


def count_terms(cleaned: pa.Array, terms: TermIndex, ngram_max: int) -> tuple[Counts, int]:
    """The counts of the vocabulary's n-grams (n <= ngram_max) per text, and the number of tokens."""
    data, offsets = utf8_bytes(cleaned)
    indptr, indices, counts, tokens, bad = _count(
        data, offsets, terms.keys, terms.positions, terms.seed, terms.size, ngram_max
    )
    if bad >= 0:
        raise not_clean_error(data, offsets, bad)
    return Counts(indptr, indices, counts), tokens
