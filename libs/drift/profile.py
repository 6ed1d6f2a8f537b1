"""The reference profile: what "no drift" looks like, fixed when the model is trained.

Bins come from the training split, so every later comparison (batch or live, in any
worker process) uses the same bins and bin counts from anywhere can simply be added.

The profile also keeps the reference side of text drift: a seeded sample of at most
`REFERENCE_TEXTS` cleaned training texts, which the batch drift check's domain classifier
(`libs.drift.domain`) sets against production texts. Bounded, so that a bundle stays small
whatever the training set; left out of the fingerprint, which identifies the bins.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from libs.atomic import write_json
from libs.drift.psi import bin_counts
from libs.features import CONTRACT, FeatureContractError

FORMAT_VERSION = 1
DEFAULT_BINS = 10
REFERENCE_TEXTS = 2_000
"""Cleaned training texts a profile keeps at most: the domain classifier's AUC and terms are
stable from a few hundred texts a side, and 2,000 reviews are about 1 MB."""


@dataclass(frozen=True)
class FeatureBins:
    """Interior edges of one feature's bins and the training share per bin (len(edges) + 1)."""

    name: str
    edges: tuple[float, ...]
    expected: tuple[float, ...]

    @classmethod
    def fit(cls, name: str, values: np.ndarray, bins: int) -> FeatureBins:
        """Quantile edges, deduplicated: count features with many zeros repeat a quantile.

        `inverted_cdf` quantiles are observed values, so every interior bin holds training
        rows; repeated edges collapse into one, giving fewer but well-defined bins.
        """
        data = np.asarray(values, dtype=np.float64)
        data = data[np.isfinite(data)]
        if data.size == 0:
            raise ValueError(f"feature {name!r} has no finite training values")
        quantiles = np.linspace(0.0, 1.0, bins + 1)[1:-1]
        edges = np.unique(np.quantile(data, quantiles, method="inverted_cdf"))
        if edges.size == 0:  # bins=1: one interior edge at the median keeps two open bins
            edges = np.array([float(np.median(data))])
        counts = bin_counts(data, edges)
        return cls(name, tuple(edges.tolist()), tuple((counts / counts.sum()).tolist()))

    def counts(self, values: Any) -> np.ndarray:
        return bin_counts(values, self.edges)


@dataclass(frozen=True)
class ReferenceProfile:
    """Per-feature bins, predicted-label shares, TF-IDF coverage, and the contract hash."""

    features: tuple[FeatureBins, ...]
    rows: int
    labels: Mapping[str, float] = field(default_factory=dict)
    coverage: float | None = None
    contract_hash: str = CONTRACT.hash
    texts: tuple[str, ...] = ()  # a sample of cleaned training texts, the reference of text drift

    @classmethod
    def build(
        cls,
        features: pd.DataFrame,
        predicted_labels: Sequence[object] | None = None,
        coverage: float | None = None,
        bins: int = DEFAULT_BINS,
        texts: Sequence[str] = (),
        seed: int = 0,
    ) -> ReferenceProfile:
        """From the training split's features; labels are the model's predictions on validation;
        `texts` are cleaned training texts, of which a seeded sample of `REFERENCE_TEXTS` is kept."""
        if bins < 1:
            raise ValueError(f"bins must be at least 1, got {bins}")
        missing = [name for name in CONTRACT.numeric_names if name not in features.columns]
        if missing:
            raise FeatureContractError(f"feature columns missing: {missing}")
        if len(features) == 0:
            raise ValueError("cannot build a reference profile from zero rows")
        fitted = tuple(
            FeatureBins.fit(name, features[name].to_numpy(), bins) for name in CONTRACT.numeric_names
        )
        return cls(
            fitted,
            len(features),
            label_shares([] if predicted_labels is None else predicted_labels),
            coverage,
            texts=sample_texts(texts, REFERENCE_TEXTS, seed),
        )

    @property
    def names(self) -> list[str]:
        return [feature.name for feature in self.features]

    @property
    def fingerprint(self) -> str:
        """Identifies the bins: live counts are only addable under the same profile."""
        bins = {key: value for key, value in self.to_dict().items() if key != "texts"}
        canonical = json.dumps(bins, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "contract_hash": self.contract_hash,
            "rows": self.rows,
            "features": {
                f.name: {"edges": list(f.edges), "expected": list(f.expected)} for f in self.features
            },
            "labels": dict(self.labels),
            "coverage": self.coverage,
            "texts": list(self.texts),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], what: str = "reference profile") -> ReferenceProfile:
        if data.get("format_version") != FORMAT_VERSION:
            raise FeatureContractError(
                f"{what}: format version {data.get('format_version')!r}, this code reads {FORMAT_VERSION}"
            )
        CONTRACT.require_hash(str(data.get("contract_hash", "")), what)
        stored = data.get("features", {})
        if list(stored) != CONTRACT.numeric_names:
            raise FeatureContractError(
                f"{what}: features {list(stored)}, the contract has {CONTRACT.numeric_names}"
            )
        features = tuple(_feature_from_dict(name, stored[name], what) for name in stored)
        labels = {str(k): float(v) for k, v in data.get("labels", {}).items()}
        coverage = data.get("coverage")
        texts = tuple(str(text) for text in data.get("texts", []))
        return cls(
            features, int(data["rows"]), labels, None if coverage is None else float(coverage), texts=texts
        )

    def save(self, path: Path) -> None:
        """Atomic: a reader sees the old profile or the new one, never half a file."""
        write_json(Path(path), self.to_dict(), indent=1)

    @classmethod
    def load(cls, path: Path) -> ReferenceProfile:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise FeatureContractError(f"cannot read reference profile {path}: {error}") from error
        return cls.from_dict(data, f"reference profile {path}")


def sample_texts(texts: Sequence[str], limit: int, seed: int = 0) -> tuple[str, ...]:
    """At most `limit` of the texts, drawn without replacement (seeded), in their order."""
    if len(texts) <= limit:
        return tuple(texts)
    chosen = np.sort(np.random.default_rng(seed).choice(len(texts), size=limit, replace=False))
    return tuple(texts[i] for i in chosen)


def label_counts(labels: Sequence[object]) -> dict[str, int]:
    """Rows per predicted label, keyed by `str(label)` so they survive JSON."""
    counts = Counter(str(label) for label in labels)
    return {label: counts[label] for label in sorted(counts)}


def label_shares(labels: Sequence[object]) -> dict[str, float]:
    counts = label_counts(labels)
    return {label: count / len(labels) for label, count in counts.items()}


def _feature_from_dict(name: str, data: Mapping[str, Any], what: str) -> FeatureBins:
    edges = np.asarray(data.get("edges", []), dtype=np.float64)
    expected = np.asarray(data.get("expected", []), dtype=np.float64)
    if edges.size == 0 or np.any(np.diff(edges) <= 0):
        raise FeatureContractError(f"{what}: edges of {name!r} must be non-empty and strictly increasing")
    if expected.size != edges.size + 1 or not np.isclose(expected.sum(), 1.0):
        raise FeatureContractError(
            f"{what}: {name!r} needs {edges.size + 1} expected shares summing to 1, "
            f"got {expected.size} summing to {expected.sum():.6f}"
        )
    return FeatureBins(name, tuple(edges.tolist()), tuple(expected.tolist()))
