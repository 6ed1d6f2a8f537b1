"""Numeric features: hand-checked values, contract conformance, any input stays finite."""

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.features import CONTRACT, compute_features
from tests import fixtures


def test_raw_signals_are_counted_before_cleaning() -> None:
    row = compute_features(["GREAT book!! Really?"]).iloc[0]
    assert row["exclamation_count"] == 2
    assert row["question_count"] == 1
    assert row["text_len"] == len("GREAT book!! Really?")
    assert row["caps_ratio"] == 6 / 15  # G,R,E,A,T,R of 15 letters


def test_clean_text_features() -> None:
    row = compute_features(["<p>Good  read</p>"]).iloc[0]
    assert row["clean_text"] == "good read"
    assert row["word_count"] == 2
    assert row["avg_word_length"] == 4.0


def test_summary_adds_to_the_text() -> None:
    row = compute_features(["fine"], ["WOW"]).iloc[0]
    assert row["text"] == "WOW. fine"
    assert row["caps_ratio"] == 3 / 7


def test_empty_input_gives_zeros() -> None:
    row = compute_features([""]).iloc[0]
    assert row[CONTRACT.numeric_names].tolist() == [0, 0.0, 0, 0, 0, 0.0]


def test_mismatched_summaries_are_refused() -> None:
    try:
        compute_features(["a", "b"], ["only one"])
    except ValueError as error:
        assert "1 summaries for 2 reviews" in str(error)
    else:
        raise AssertionError("expected ValueError")


def test_columns_follow_the_contract_on_real_reviews() -> None:
    reviews = fixtures.kindle_sample()
    features = compute_features(reviews["reviewText"].tolist(), reviews["summary"].tolist())
    assert list(features.columns[2:]) == CONTRACT.numeric_names
    CONTRACT.validate(features)
    assert features["exclamation_count"].sum() > 0


hostile = st.one_of(
    st.none(),
    st.floats(allow_nan=True),
    st.text(),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)),
    st.sampled_from(["<script>alert(1)</script>", "😀" * 500, "Здравствуйте!!!", "&#x27;&amp;", "\x00\x1f"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(hostile, min_size=1, max_size=5), st.lists(hostile, min_size=5, max_size=5))
def test_any_input_gives_finite_features_within_contract(reviews: list, summaries: list) -> None:
    features = compute_features(reviews, summaries[: len(reviews)])
    CONTRACT.validate(features)
    assert np.isfinite(features[CONTRACT.numeric_names].to_numpy(dtype=float)).all()
    assert isinstance(features, pd.DataFrame) and len(features) == len(reviews)
