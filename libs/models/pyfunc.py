"""The bundle as an MLflow pyfunc model: the registry's champion scores a DataFrame of reviews.

The pyfunc's only artifact is the bundle folder, so MLflow and the service load the very
same files (and the same checks in `load_bundle`). `libs` must be importable where the
pyfunc is loaded (the repository or the service image).
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from libs.models.bundle import ModelBundle, load_bundle

BUNDLE_ARTIFACT = "bundle"
PROBABILITY_COLUMNS = [f"p_{star}" for star in (1, 2, 3, 4, 5)]


def _optional_texts(column: pd.Series) -> list[str | None]:
    return [
        None if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
        for value in column
    ]


def predict_frame(bundle: ModelBundle, reviews: pd.DataFrame) -> pd.DataFrame:
    """`reviewText` (+ optional `summary`) in; p_1..p_5, `stars` and `sentiment` out."""
    if not isinstance(reviews, pd.DataFrame) or "reviewText" not in reviews:
        raise ValueError("input must be a DataFrame with a reviewText column (and optionally summary)")
    summaries = _optional_texts(reviews["summary"]) if "summary" in reviews else None
    proba = bundle.predict_proba(_optional_texts(reviews["reviewText"]), summaries)
    result = pd.DataFrame(proba, columns=PROBABILITY_COLUMNS, index=reviews.index)
    result["stars"] = np.asarray(bundle.labels)[np.argmax(proba, axis=1)] if len(proba) else []
    result["sentiment"] = ModelBundle.sentiment(result["stars"])
    return result


class BundlePythonModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        self.bundle = load_bundle(context.artifacts[BUNDLE_ARTIFACT])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        return predict_frame(self.bundle, model_input)
