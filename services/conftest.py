"""Fixtures the server tests share: a working folder per test module and the real reviews."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests import fixtures


@pytest.fixture(scope="module")
def work(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder per test module (bundles, Bento store, server logs), named after it."""
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    """The real Kindle reviews the servers are trained on and asked about."""
    return fixtures.kindle_reviews()
