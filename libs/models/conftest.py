"""Shared test data: small, real, balanced Kindle samples (features + label) and their TF-IDF."""

from __future__ import annotations

import pandas as pd
import pytest

from libs.features import CLEAN_COLUMN, Tfidf
from libs.models.training.data import LABEL_COLUMN, labelled_features
from tests import fixtures

PER_STAR = {"train": 100, "val": 20, "test": 20}


@pytest.fixture(scope="session")
def splits() -> dict[str, pd.DataFrame]:
    """Disjoint train/val/test rows of the 2018 balanced dump, the same number per star."""
    reviews = fixtures.kindle_2018().dropna(subset=["reviewText"])
    frames: dict[str, list[pd.DataFrame]] = {name: [] for name in PER_STAR}
    for _, group in reviews.groupby(LABEL_COLUMN):
        shuffled = group.sample(frac=1.0, random_state=7)
        start = 0
        for name, count in PER_STAR.items():
            frames[name].append(shuffled.iloc[start : start + count])
            start += count
    return {name: labelled_features(pd.concat(parts)) for name, parts in frames.items()}


@pytest.fixture(scope="session")
def train_df(splits: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return splits["train"]


@pytest.fixture(scope="session")
def val_df(splits: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return splits["val"]


@pytest.fixture(scope="session")
def test_df(splits: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return splits["test"]


@pytest.fixture(scope="session")
def tfidf(train_df: pd.DataFrame) -> Tfidf:
    return Tfidf.fit(train_df[CLEAN_COLUMN].tolist())
