"""Per-text term counts of a batch as CSR parts: sorted term indices and their counts.

A batch's terms arrive as one flat column per n (unigrams, bigrams...), each grouped by
text; Polars joins each text's lists and sorts them (one list sort in Rust), and
run-length counting on the flat result gives distinct indices and counts per text.
"""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa


class Counts(NamedTuple):
    """CSR parts: text i's terms are `indices[indptr[i]:indptr[i + 1]]` (sorted), with `counts`."""

    indptr: np.ndarray
    indices: np.ndarray
    counts: np.ndarray


def count_terms(parts: list[tuple[np.ndarray, np.ndarray]]) -> Counts:
    """`parts`: (term indices, text offsets) per n; index -1 marks a term not in the vocabulary."""
    lists, totals = {}, 0
    for n, (indices, offsets) in enumerate(parts):
        known = indices >= 0
        seen = np.concatenate([[0], np.cumsum(known, dtype=np.int64)])
        kept = seen[offsets]  # known terms before each text's first
        lists[str(n)] = pa.LargeListArray.from_arrays(kept - kept[0], indices[known].astype(np.int32))
        totals = totals + np.diff(kept)
    joined = pl.DataFrame(lists).select(_sorted_lists(len(lists))).to_series()
    ordered = joined.explode(empty_as_null=False, keep_nulls=False).to_numpy()
    return _runs(ordered, np.concatenate([[0], np.cumsum(totals, dtype=np.int64)]))


@cache
def _sorted_lists(parts: int) -> pl.Expr:
    """Columns "0".."parts-1" joined per row and sorted (built once: building costs as much as
    a small batch's run)."""
    return pl.concat_list([str(n) for n in range(parts)]).list.sort()


def _runs(ordered: np.ndarray, offsets: np.ndarray) -> Counts:
    """Distinct indices and their counts per text, from indices sorted within each text."""
    starts = np.ones(len(ordered), dtype=bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    starts[offsets[:-1][np.diff(offsets) > 0]] = True  # a text's first term starts a run
    positions = np.flatnonzero(starts)
    counts = np.diff(np.append(positions, len(ordered)))
    indptr = np.searchsorted(positions, offsets).astype(np.int64)
    return Counts(indptr, ordered[positions].astype(np.int32), counts)
