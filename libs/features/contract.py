"""The feature contract: what a feature row is, versioned and hashed.

Training records the contract hash in the model bundle; the service and every loader
compare it with the hash of the code they run. A mismatch means the model would see
features computed differently from the ones it was trained on (training/serving skew),
so it is refused with an error instead of served silently.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from libs.features.text import MAX_TEXT_CHARS


class FeatureContractError(ValueError):
    """Features or a saved artefact do not match the contract this code implements."""


@dataclass(frozen=True)
class NumericFeature:
    name: str
    dtype: str
    minimum: float
    maximum: float
    source: str  # "raw": computed before cleaning; "clean": on the cleaned text
    description: str


@dataclass(frozen=True)
class TfidfSpec:
    """How text becomes TF-IDF; part of the contract because it changes every vector."""

    token_pattern: str = r"(?u)\w[\w']+|[!?]"
    ngram_max: int = 2
    min_df: int = 2
    max_features: int = 50_000
    sublinear_tf: bool = True


@dataclass(frozen=True)
class FeatureContract:
    version: str
    numeric: tuple[NumericFeature, ...]
    tfidf: TfidfSpec

    @property
    def numeric_names(self) -> list[str]:
        return [feature.name for feature in self.numeric]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "numeric": [asdict(feature) for feature in self.numeric],
            "tfidf": asdict(self.tfidf),
        }

    @property
    def hash(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def require_hash(self, found: str, what: str) -> None:
        """Refuses an artefact built under another contract, naming both hashes."""
        if found != self.hash:
            raise FeatureContractError(
                f"{what} was built with feature contract {found[:12]}, but this code "
                f"implements contract {self.version} ({self.hash[:12]}): retrain or "
                "deploy the matching code"
            )

    def validate(self, frame: pd.DataFrame) -> None:
        """Checks a feature frame against names, order, dtypes and value ranges."""
        missing = [name for name in self.numeric_names if name not in frame.columns]
        if missing:
            raise FeatureContractError(f"feature columns missing: {missing}")
        for feature in self.numeric:
            column = frame[feature.name]
            if str(column.dtype) != feature.dtype:
                raise FeatureContractError(
                    f"feature {feature.name!r} has dtype {column.dtype}, contract says {feature.dtype}"
                )
            values = column.to_numpy(dtype=np.float64)
            if not np.isfinite(values).all():
                raise FeatureContractError(f"feature {feature.name!r} has non-finite values")
            if len(values) and (values.min() < feature.minimum or values.max() > feature.maximum):
                raise FeatureContractError(
                    f"feature {feature.name!r} outside [{feature.minimum}, {feature.maximum}]: "
                    f"min {values.min()}, max {values.max()}"
                )


# 1.1.0: TF-IDF norms are summed in one fixed order per text (values move by at most one
# unit in the last place, and no longer depend on the CPU's BLAS); code points assigned
# after Unicode 14.0 follow the kernel's newer Unicode tables. See docs/features.md.
CONTRACT = FeatureContract(
    version="1.1.0",
    numeric=(
        NumericFeature("text_len", "int64", 0, MAX_TEXT_CHARS, "raw", "characters in summary + review"),
        NumericFeature("caps_ratio", "float64", 0.0, 1.0, "raw", "upper-case share of letters (shouting)"),
        NumericFeature("exclamation_count", "int64", 0, MAX_TEXT_CHARS, "raw", "count of '!'"),
        NumericFeature("question_count", "int64", 0, MAX_TEXT_CHARS, "raw", "count of '?'"),
        NumericFeature("word_count", "int64", 0, MAX_TEXT_CHARS, "clean", "tokens in the cleaned text"),
        NumericFeature(
            "avg_word_length", "float64", 0.0, MAX_TEXT_CHARS, "clean", "mean token length, cleaned text"
        ),
    ),
    tfidf=TfidfSpec(),
)
