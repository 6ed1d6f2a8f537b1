"""TF-IDF whose vocabulary is fitted from document frequencies, so Spark can fit it.

Fitting needs only each term's document frequency. Spark aggregates those across the
cluster and hands back at most `max_features` terms; on one machine Polars does the
same. Both feed `Tfidf.from_document_frequencies`, and both transform with
`Tfidf.transform`, one batch kernel, so the training ETL and the service produce the
same vectors bit for bit: every value depends on its own text only (counts, a fixed
table of 1 + log(tf), the IDF, and an L2 norm summed in one fixed order per text).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from functools import cached_property
from pathlib import Path
from typing import TypeAlias

import numpy as np
import polars as pl
import pyarrow as pa
from scipy import sparse

from libs.atomic import write_json
from libs.features.contract import CONTRACT, FeatureContractError, TfidfSpec
from libs.features.counting import Counts, count_terms
from libs.features.text import MAX_TEXT_CHARS, text_array
from libs.features.tokens import ngrams, require_pattern, unigrams
from libs.features.vocabulary import TermIndex

FORMAT_VERSION = 1

# 1 + ln(tf) at index tf for every count a bounded text can hold (a count is never 0),
# computed once so the value of a count never depends on the array it was computed in.
_SUBLINEAR_TF = np.concatenate([[np.nan], 1.0 + np.log(np.arange(1, MAX_TEXT_CHARS + 1, dtype=np.float64))])

CleanTexts: TypeAlias = Sequence[str] | pa.Array | pa.ChunkedArray | pl.Series


def document_frequencies(cleaned: CleanTexts, spec: TfidfSpec = CONTRACT.tfidf) -> pl.DataFrame:
    """`term` and `df` (the number of texts holding it) for every term of the batch."""
    tokens = unigrams(_arrow(cleaned), spec)
    frames = []
    for terms in [tokens] + [ngrams(tokens, n) for n in range(2, spec.ngram_max + 1)]:
        rows = np.repeat(np.arange(len(terms.offsets) - 1), np.diff(terms.offsets))
        frames.append(pl.DataFrame({"row": rows, "term": terms.values}))
    return pl.concat(frames).unique().group_by("term").len(name="df")


def select_vocabulary(
    frequencies: Mapping[str, int] | pl.DataFrame, spec: TfidfSpec
) -> list[tuple[str, int]]:
    """The kept terms: df >= min_df, the `max_features` most frequent, ties by term."""
    if not isinstance(frequencies, pl.DataFrame):
        frequencies = pl.DataFrame(
            {"term": list(frequencies), "df": list(frequencies.values())},
            schema={"term": pl.String, "df": pl.Int64},
        )
    kept = frequencies.filter(pl.col("df") >= spec.min_df).sort(["df", "term"], descending=[True, False])
    return list(kept.head(spec.max_features).sort("term").iter_rows())


class Tfidf:
    """A fitted vectoriser: vocabulary, smoothed IDF, and the contract it belongs to."""

    def __init__(self, terms: Sequence[str], idf: np.ndarray, n_docs: int, spec: TfidfSpec) -> None:
        self.terms = list(terms)
        self.index = {term: i for i, term in enumerate(self.terms)}
        self.idf = np.asarray(idf, dtype=np.float64)
        self.n_docs = n_docs
        self.spec = spec

    @classmethod
    def from_document_frequencies(
        cls, frequencies: Mapping[str, int] | pl.DataFrame, n_docs: int, spec: TfidfSpec = CONTRACT.tfidf
    ) -> Tfidf:
        if n_docs <= 0:
            raise ValueError("cannot fit TF-IDF on zero documents")
        vocabulary = select_vocabulary(frequencies, spec)
        if not vocabulary:
            raise ValueError(f"no term occurs in at least min_df={spec.min_df} documents")
        idf = [math.log((1 + n_docs) / (1 + df)) + 1.0 for _, df in vocabulary]
        return cls([term for term, _ in vocabulary], np.array(idf), n_docs, spec)

    @classmethod
    def fit(cls, cleaned: CleanTexts, spec: TfidfSpec = CONTRACT.tfidf) -> Tfidf:
        """In-memory fit (tests, small data); the ETL fits with `libs.features.spark`."""
        return cls.from_document_frequencies(document_frequencies(cleaned, spec), len(cleaned), spec)

    @property
    def size(self) -> int:
        return len(self.terms)

    @cached_property
    def _terms(self) -> TermIndex:
        return TermIndex(self.terms)

    def __getstate__(self) -> dict[str, object]:
        """Pickles (Spark ships the vectoriser to its workers) without the key table."""
        return {key: value for key, value in self.__dict__.items() if key != "_terms"}

    def counts(self, cleaned: CleanTexts) -> Counts:
        """Per-text counts of the vocabulary's terms, as CSR parts."""
        require_pattern(self.spec)
        return count_terms(_arrow(cleaned), self._terms, self.spec.ngram_max)[0]

    def vectors(self, counts: Counts) -> np.ndarray:
        """The L2-normalised TF-IDF values for `counts` (the data of the CSR matrix)."""
        # In place where it can be: a batch's arrays are large, and every fresh one costs
        # its pages' first-touch faults, which cost more than the arithmetic.
        values = _sublinear(counts.counts) if self.spec.sublinear_tf else counts.counts.astype(np.float64)
        scratch = self.idf[counts.indices]
        values *= scratch
        lengths = np.diff(counts.indptr)
        filled = lengths > 0
        squares = np.zeros(len(lengths))
        if len(values):
            squared = np.multiply(values, values, out=scratch)
            squares[filled] = np.add.reduceat(squared, counts.indptr[:-1][filled])
        values /= np.repeat(np.sqrt(squares), lengths)
        return values

    def transform(self, cleaned: CleanTexts) -> sparse.csr_matrix:
        counts = self.counts(cleaned)
        return sparse.csr_matrix(
            (self.vectors(counts), counts.indices, counts.indptr), shape=(len(counts.indptr) - 1, self.size)
        )

    def row(self, clean: str) -> tuple[np.ndarray, np.ndarray]:
        """One L2-normalised TF-IDF vector as sorted (indices, values)."""
        counts = self.counts([clean])
        return counts.indices, self.vectors(counts)

    def coverage(self, cleaned: CleanTexts) -> float:
        """Share of unigram tokens that are in the vocabulary (text drift signal)."""
        require_pattern(self.spec)
        known, tokens = count_terms(_arrow(cleaned), self._terms, 1)
        return float(known.counts.sum() / tokens) if tokens else 1.0

    def to_dict(self) -> dict[str, object]:
        return {
            "format_version": FORMAT_VERSION,
            "contract_hash": CONTRACT.hash,
            "spec": asdict(self.spec),
            "n_docs": self.n_docs,
            "terms": self.terms,
            "idf": self.idf.tolist(),
        }

    def save(self, path: Path) -> None:
        """Writes JSON atomically (floats round-trip exactly through `repr`)."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> Tfidf:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise FeatureContractError(f"cannot read TF-IDF vectoriser {path}: {error}") from error
        if data.get("format_version") != FORMAT_VERSION:
            raise FeatureContractError(f"{path}: unknown vectoriser format {data.get('format_version')}")
        CONTRACT.require_hash(data.get("contract_hash", ""), f"TF-IDF vectoriser {path}")
        if len(data["terms"]) != len(data["idf"]):
            raise FeatureContractError(
                f"{path}: {len(data['terms'])} terms but {len(data['idf'])} IDF values"
            )
        return cls(data["terms"], np.array(data["idf"]), data["n_docs"], TfidfSpec(**data["spec"]))


def _sublinear(counts: np.ndarray) -> np.ndarray:
    """1 + ln(count), from the table (a count beyond it, far past any bounded text, directly)."""
    if counts.max(initial=0) < len(_SUBLINEAR_TF):
        return _SUBLINEAR_TF[counts]
    return 1.0 + np.log(counts.astype(np.float64))


def _arrow(cleaned: CleanTexts) -> pa.Array:
    """Cleaned texts as an Arrow string array (Arrow arrays pass as they are)."""
    return cleaned.to_arrow() if isinstance(cleaned, pl.Series) else text_array(cleaned)
