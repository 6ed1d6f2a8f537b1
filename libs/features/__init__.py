"""libs.features: the one implementation of every feature the models see.

Public API (the Spark path lives in `libs.features.spark`, a separate target, so the
service does not need pyspark):

- `CONTRACT` / `FeatureContract` / `FeatureContractError`: names, dtypes, ranges, hash.
- `compute_features(reviews, summaries=None)`: text, clean text and numeric features.
- `Tfidf`: the fitted vectoriser (fit, transform, save/load, vocabulary coverage).
- `as_text`, `combine`, `clean_text`: the text normalisation every path shares.
"""

from libs.features.contract import CONTRACT, FeatureContract, FeatureContractError, NumericFeature
from libs.features.numeric import CLEAN_COLUMN, TEXT_COLUMN, compute_features
from libs.features.text import MAX_TEXT_CHARS, as_text, clean_text, combine
from libs.features.tfidf import Tfidf, tokenize

__all__ = [
    "CLEAN_COLUMN",
    "CONTRACT",
    "MAX_TEXT_CHARS",
    "TEXT_COLUMN",
    "FeatureContract",
    "FeatureContractError",
    "NumericFeature",
    "Tfidf",
    "as_text",
    "clean_text",
    "combine",
    "compute_features",
    "tokenize",
]
