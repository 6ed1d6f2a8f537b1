"""Term -> vocabulary index for whole columns of tokens, with a table built once.

The lookup must be cheap for one review (the service) and for 10,000 (a Spark batch):
Polars' Enum casts and Arrow's `index_in` rebuild their table of 50,000 terms on every
call (1.7-5 ms), so the vectoriser keeps its own. A term is a 64-bit key: a token's is
Polars' hash of its text, an n-gram's folds its tokens' keys, so n-gram keys come from
the token keys without building n-gram strings. The keys go into a pandas index, whose
hash table is built on first use and kept. The vocabulary's keys are checked distinct;
another term shares a key with one of them with odds of about 1 in 10^14 per token.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import polars as pl

from libs.features.tokens import Tokens, ngram_starts

_FOLD = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier (the golden ratio's bits)


class TermIndex:
    """The vocabulary as a persistent key table: `index(keys)` gives positions, -1 if absent."""

    def __init__(self, terms: Sequence[str]) -> None:
        for seed in range(8):
            keys = _term_keys(terms, seed)
            if len(np.unique(keys)) == len(keys):
                break
        else:
            raise ValueError("vocabulary terms do not hash to distinct keys")
        self.seed = seed
        self._index = pd.Index(keys)

    def keys(self, tokens: Tokens, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(keys of every n-gram of the batch in text order, their text offsets); n=1: tokens."""
        keys = tokens.values.hash(seed=self.seed).to_numpy()
        if n == 1:
            return keys, tokens.offsets
        mask, offsets = ngram_starts(tokens.offsets, n)
        folded = keys[: len(mask)].copy()
        for k in range(1, n):
            folded = folded * _FOLD + keys[k : k + len(mask)]
        return folded[mask], offsets

    def index(self, keys: np.ndarray) -> np.ndarray:
        return self._index.get_indexer(keys)


def _term_keys(terms: Sequence[str], seed: int) -> np.ndarray:
    """Each term's key: its words' hashes folded as `TermIndex.keys` folds n-grams."""
    words = pl.Series(list(terms), dtype=pl.String).str.split(" ")
    counts = words.list.len().to_numpy()
    hashes = words.explode(empty_as_null=False, keep_nulls=False).hash(seed=seed).to_numpy()
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    keys = hashes[starts] if len(hashes) else np.empty(0, dtype=np.uint64)
    for k in range(1, int(counts.max(initial=1))):
        longer = counts > k
        keys[longer] = keys[longer] * _FOLD + hashes[starts[longer] + k]
    return keys
