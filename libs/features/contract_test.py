"""The contract's hash pins every definition; validation names what is wrong."""

import dataclasses

import pandas as pd
import pytest

from libs.features import CONTRACT, FeatureContractError, compute_features


def test_hash_is_stable_and_changes_with_any_definition() -> None:
    assert CONTRACT.hash == dataclasses.replace(CONTRACT).hash
    changed = dataclasses.replace(CONTRACT, tfidf=dataclasses.replace(CONTRACT.tfidf, min_df=3))
    assert changed.hash != CONTRACT.hash
    assert dataclasses.replace(CONTRACT, version="9.9.9").hash != CONTRACT.hash


def test_foreign_hash_is_refused_with_both_hashes_named() -> None:
    with pytest.raises(FeatureContractError, match="model bundle x was built with feature contract abc"):
        CONTRACT.require_hash("abc" * 10, "model bundle x")


def test_missing_column_is_named() -> None:
    features = compute_features(["hello there"]).drop(columns=["caps_ratio"])
    with pytest.raises(FeatureContractError, match="caps_ratio"):
        CONTRACT.validate(features)


def test_wrong_dtype_is_named() -> None:
    features = compute_features(["hello there"])
    features["word_count"] = features["word_count"].astype("float64")
    with pytest.raises(FeatureContractError, match="'word_count' has dtype float64"):
        CONTRACT.validate(features)


def test_out_of_range_value_is_named() -> None:
    features = compute_features(["hello there"])
    features.loc[0, "caps_ratio"] = 1.5
    with pytest.raises(FeatureContractError, match="'caps_ratio' outside"):
        CONTRACT.validate(features)


def test_empty_frame_with_all_columns_is_valid() -> None:
    CONTRACT.validate(compute_features([]).iloc[0:0])
    assert isinstance(compute_features([]), pd.DataFrame)
