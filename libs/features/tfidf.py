"""TF-IDF whose vocabulary is fitted from document frequencies, so Spark can fit it.

Fitting needs only each term's document frequency. Spark aggregates those across the
cluster and hands back at most `max_features` terms; on one machine a Counter does the
same. Both feed `Tfidf.from_document_frequencies`, and both transform with
`Tfidf.row`, so the training ETL and the service produce the same vectors bit for bit.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
from scipy import sparse

from libs.features.atomic import write_json
from libs.features.contract import CONTRACT, FeatureContractError, TfidfSpec

FORMAT_VERSION = 1


def tokenize(clean: str, spec: TfidfSpec = CONTRACT.tfidf) -> list[str]:
    """Unigrams and n-grams (up to `spec.ngram_max`) of a cleaned text."""
    words = re.findall(spec.token_pattern, clean)
    terms = list(words)
    for n in range(2, spec.ngram_max + 1):
        # zip of shifted word lists (the shortest ends it): the n-grams in order, no Python loop
        terms.extend(map(" ".join, zip(*(words[k:] for k in range(n)), strict=False)))
    return terms


def document_frequencies(cleaned: Iterable[str], spec: TfidfSpec = CONTRACT.tfidf) -> Counter[str]:
    counts: Counter[str] = Counter()
    for text in cleaned:
        counts.update(set(tokenize(text, spec)))
    return counts


def select_vocabulary(frequencies: Mapping[str, int], spec: TfidfSpec) -> list[tuple[str, int]]:
    """The kept terms: df >= min_df, the `max_features` most frequent, ties by term."""
    kept = [(term, df) for term, df in frequencies.items() if df >= spec.min_df]
    kept.sort(key=lambda item: (-item[1], item[0]))
    return sorted(kept[: spec.max_features])


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
        cls, frequencies: Mapping[str, int], n_docs: int, spec: TfidfSpec = CONTRACT.tfidf
    ) -> Tfidf:
        if n_docs <= 0:
            raise ValueError("cannot fit TF-IDF on zero documents")
        vocabulary = select_vocabulary(frequencies, spec)
        if not vocabulary:
            raise ValueError(f"no term occurs in at least min_df={spec.min_df} documents")
        idf = [math.log((1 + n_docs) / (1 + df)) + 1.0 for _, df in vocabulary]
        return cls([term for term, _ in vocabulary], np.array(idf), n_docs, spec)

    @classmethod
    def fit(cls, cleaned: Sequence[str], spec: TfidfSpec = CONTRACT.tfidf) -> Tfidf:
        """In-memory fit (tests, small data); the ETL fits with `libs.features.spark`."""
        return cls.from_document_frequencies(document_frequencies(cleaned, spec), len(cleaned), spec)

    @property
    def size(self) -> int:
        return len(self.terms)

    def row(self, clean: str) -> tuple[np.ndarray, np.ndarray]:
        """One L2-normalised TF-IDF vector as sorted (indices, values)."""
        # Counting in C (Counter over map) and dropping the out-of-vocabulary key afterwards
        # is what makes serving fast: this is the hottest loop of a prediction.
        counts = Counter(map(self.index.get, tokenize(clean, self.spec)))
        counts.pop(None, None)
        if not counts:
            return np.empty(0, dtype=np.int32), np.empty(0, dtype=np.float64)
        keys = sorted(counts)
        indices = np.array(keys, dtype=np.int32)
        tf = np.fromiter(map(counts.__getitem__, keys), dtype=np.float64, count=len(keys))
        if self.spec.sublinear_tf:
            tf = 1.0 + np.log(tf)
        values = tf * self.idf[indices]
        return indices, values / math.sqrt(float(np.dot(values, values)))

    def transform(self, cleaned: Sequence[str]) -> sparse.csr_matrix:
        rows = [self.row(text) for text in cleaned]
        indptr = np.cumsum([0] + [len(indices) for indices, _ in rows])
        indices = np.concatenate([r[0] for r in rows]) if rows else np.empty(0, np.int32)
        values = np.concatenate([r[1] for r in rows]) if rows else np.empty(0)
        return sparse.csr_matrix((values, indices, indptr), shape=(len(rows), self.size))

    def coverage(self, cleaned: Iterable[str]) -> float:
        """Share of unigram tokens that are in the vocabulary (text drift signal)."""
        total = known = 0
        for text in cleaned:
            words = re.findall(self.spec.token_pattern, text)
            total += len(words)
            known += sum(1 for word in words if word in self.index)
        return known / total if total else 1.0

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
