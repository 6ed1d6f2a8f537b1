"""Training frames: features + label, the stratified split, and the data fingerprint."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from libs.features import TEXT_COLUMN, compute_features
from libs.models.kinds import LABELS

LABEL_COLUMN = "overall"


def labelled_features(reviews: pd.DataFrame) -> pd.DataFrame:
    """compute_features of `reviewText` (+ `summary` when present) with the star label `overall`."""
    missing = [column for column in ("reviewText", LABEL_COLUMN) if column not in reviews]
    if missing:
        raise ValueError(f"reviews lack columns {missing}")
    reviews = reviews[reviews["reviewText"].notna() & reviews[LABEL_COLUMN].isin(LABELS)]
    summaries = reviews["summary"].tolist() if "summary" in reviews else None
    frame = compute_features(reviews["reviewText"].tolist(), summaries)
    frame[LABEL_COLUMN] = reviews[LABEL_COLUMN].astype(int).to_numpy()
    return frame


def stratified_split(
    frame: pd.DataFrame, seed: int, val: float = 0.15, test: float = 0.15
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train, val, test) with the star mix of `frame` in each; reproducible for a seed."""
    rest, test_df = train_test_split(frame, test_size=test, stratify=frame[LABEL_COLUMN], random_state=seed)
    train_df, val_df = train_test_split(
        rest, test_size=val / (1 - test), stratify=rest[LABEL_COLUMN], random_state=seed
    )
    return train_df.reset_index(drop=True), val_df.reset_index(drop=True), test_df.reset_index(drop=True)


def labels_of(frame: pd.DataFrame) -> np.ndarray:
    if LABEL_COLUMN not in frame:
        raise ValueError(f"training frame lacks the label column {LABEL_COLUMN!r}")
    return frame[LABEL_COLUMN].to_numpy(dtype=int)


def fingerprint(frame: pd.DataFrame) -> str:
    """sha256 of the training rows (text and label, in order): which data a model saw."""
    digest = hashlib.sha256()
    for text, label in zip(frame[TEXT_COLUMN], labels_of(frame), strict=True):
        digest.update(f"{label}\t{text}\n".encode())
    return digest.hexdigest()
