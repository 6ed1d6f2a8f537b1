"""libs.features: the one implementation of every feature the models see.

Public API (the Spark path lives in `libs.features.spark`, a separate target, so the
service does not need pyspark):

- `CONTRACT` / `FeatureContract` / `FeatureContractError`: names, dtypes, ranges, hash.
- `features_table(reviews, summaries=None)`: the batch kernel, Arrow arrays in, an Arrow
  table of text, clean text and numeric features out; `compute_features` is its pandas
  view for any Python values.
- `Tfidf`: the fitted vectoriser (fit, transform, save/load, vocabulary coverage).
- `as_text`, `text_array`, `combine`, `clean_text`, `tokenize`: the same rules for one
  value, and where outside values become safe text.
"""

from libs.features.cleaning import clean_text
from libs.features.contract import CONTRACT, FeatureContract, FeatureContractError, NumericFeature
from libs.features.table import CLEAN_COLUMN, TEXT_COLUMN, combine, compute_features, features_table
from libs.features.text import MAX_TEXT_CHARS, as_text, text_array
from libs.features.tfidf import Tfidf
from libs.features.tokens import tokenize

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
    "features_table",
    "text_array",
    "tokenize",
]
