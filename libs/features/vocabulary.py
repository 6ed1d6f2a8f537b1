"""Term -> vocabulary index: 64-bit term keys in an open-addressing table built once.

The lookup must be cheap for one review (the service) and for 10,000 (a Spark batch),
and it runs inside the compiled counting scan (`counting.py`), so the table is two plain
arrays (keys, positions) probed linearly. A term's key is a seeded 64-bit hash of its
token's bytes (FNV-1a, then a finaliser that spreads the bits); an n-gram's folds its
tokens' keys, so n-gram keys come from the token keys without building n-gram strings.
The vocabulary's keys are checked distinct (another seed is tried otherwise); another
term shares a key with one of them with odds of about 1 in 10^14 per token.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np
import pyarrow as pa

from libs.features.charclasses import utf8_bytes
from libs.features.tokens import next_token

FOLD = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier (the golden ratio's bits)
_EMPTY = -1


@numba.njit(cache=True, nogil=True)
def token_key(data: np.ndarray, start: int, stop: int, seed: np.uint64) -> np.uint64:
    """The key of the token `data[start:stop]`."""
    key = np.uint64(0xCBF29CE484222325) ^ seed
    for position in range(start, stop):
        key = (key ^ np.uint64(data[position])) * np.uint64(0x100000001B3)
    key ^= key >> np.uint64(33)
    key *= np.uint64(0xFF51AFD7ED558CCD)
    return key ^ (key >> np.uint64(33))


@numba.njit(cache=True, nogil=True)
def find(keys: np.ndarray, positions: np.ndarray, key: np.uint64) -> int:
    """The vocabulary position of `key`, or -1."""
    mask = np.uint64(len(keys) - 1)
    slot = key & mask
    while positions[slot] != _EMPTY:
        if keys[slot] == key:
            return positions[slot]
        slot = (slot + np.uint64(1)) & mask
    return -1


@numba.njit(cache=True, nogil=True)
def _term_keys(data: np.ndarray, offsets: np.ndarray, seed: np.uint64) -> np.ndarray:
    """Each term's key: its tokens' keys folded as the counting scan folds n-grams."""
    keys = np.empty(len(offsets) - 1, np.uint64)
    for term in range(len(offsets) - 1):
        position, end, key, first = offsets[term], offsets[term + 1], np.uint64(0), True
        while True:
            start, stop = next_token(data, position, end)
            if start < 0 or start == end:
                break
            word = token_key(data, start, stop, seed)
            key = word if first else key * FOLD + word
            first, position = False, stop
        keys[term] = key
    return keys


@numba.njit(cache=True, nogil=True)
def _table(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Open addressing with linear probing, at most half full."""
    size = 1
    while size < 2 * len(keys):
        size *= 2
    slots = np.zeros(size, np.uint64)
    positions = np.full(size, _EMPTY, np.int32)
    mask = np.uint64(size - 1)
    for position in range(len(keys)):
        slot = keys[position] & mask
        while positions[slot] != _EMPTY:
            slot = (slot + np.uint64(1)) & mask
        slots[slot] = keys[position]
        positions[slot] = position
    return slots, positions


class TermIndex:
    """The vocabulary as a persistent key table (`keys`, `positions`, `seed` go to the scan)."""

    def __init__(self, terms: Sequence[str]) -> None:
        data, offsets = utf8_bytes(pa.array(list(terms), type=pa.large_string()))
        for seed in range(8):
            keys = _term_keys(data, offsets, np.uint64(seed))
            if len(np.unique(keys)) == len(keys):
                break
        else:
            raise ValueError("vocabulary terms do not hash to distinct keys")
        self.seed = np.uint64(seed)
        self.size = len(keys)
        self.keys, self.positions = _table(keys)
