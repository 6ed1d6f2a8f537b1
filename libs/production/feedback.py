"""Labelled feedback: reviews from production with their true star rating, kept for retraining.

Per row: text, summary, true stars, the request it answers, the client that sent it (the
name its feedback key is configured under), the model version that served it and the time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from libs.production.parquet_log import TIME_COLUMN, VERSION_COLUMN, ParquetLog, read_log

FEEDBACK_PREFIX = "feedback"
FEEDBACK_COLUMNS = ("reviewText", "summary", "overall", "request_id", "client")


class FeedbackWriter(ParquetLog):
    """Labelled reviews from production: text, summary, true stars, the request they answer."""

    def __init__(self, folder: Path, **options: Any) -> None:
        super().__init__(folder, FEEDBACK_PREFIX, **options)

    def write(
        self,
        reviews: Sequence[str],
        summaries: Sequence[str | None] | None,
        ratings: Sequence[int],
        request_ids: Sequence[str | None] | None,
        model_version: str | None,
        client: str | None = None,
    ) -> None:
        n = len(reviews)
        if len(ratings) != n:
            raise ValueError(f"{len(ratings)} ratings for {n} reviews")
        rows = pd.DataFrame(
            {
                "reviewText": list(reviews),
                "summary": list(summaries) if summaries is not None else [None] * n,
                "overall": pd.Series(ratings, dtype="int64"),
                "request_id": list(request_ids) if request_ids is not None else [None] * n,
                "client": [client] * n,
            }
        )
        self.append(rows, model_version)


def read_feedback(folder: Path) -> pd.DataFrame:
    """All labelled feedback of a folder, oldest file first (empty frame if there is none)."""
    try:
        return read_log(folder, FEEDBACK_PREFIX, check_contract=False).rows
    except FileNotFoundError:
        return pd.DataFrame(columns=[TIME_COLUMN, *FEEDBACK_COLUMNS, VERSION_COLUMN])
