"""The reference profile: quantile bins with ties, JSON round trip, refusal of foreign profiles."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from libs.drift import FeatureBins, ReferenceProfile
from libs.features import CONTRACT, FeatureContractError, compute_features
from tests import fixtures


@pytest.fixture(scope="module")
def kindle() -> pd.DataFrame:
    reviews = fixtures.kindle_sample()
    return compute_features(reviews["reviewText"].tolist(), reviews["summary"].tolist())


@pytest.fixture(scope="module")
def profile(kindle: pd.DataFrame) -> ReferenceProfile:
    return ReferenceProfile.build(kindle, predicted_labels=[1, 5, 5, 4], coverage=0.93)


def test_ten_quantile_bins_hold_a_tenth_each(kindle: pd.DataFrame) -> None:
    bins = FeatureBins.fit("word_count", kindle["word_count"].to_numpy(), 10)
    assert len(bins.edges) == 9
    assert np.allclose(bins.expected, 0.1, atol=0.01)


def test_bin_count_is_configurable(kindle: pd.DataFrame) -> None:
    profile = ReferenceProfile.build(kindle, bins=4)
    assert len(profile.features[0].edges) == 3


def test_heavy_ties_collapse_into_fewer_well_defined_bins(kindle: pd.DataFrame) -> None:
    # Most reviews ask no question, so most deciles of question_count are 0.
    bins = FeatureBins.fit("question_count", kindle["question_count"].to_numpy(), 10)
    assert list(bins.edges) == sorted(set(bins.edges))
    assert bins.edges[0] == 0.0
    assert len(bins.expected) == len(bins.edges) + 1
    assert bins.expected[0] == pytest.approx(float((kindle["question_count"] == 0).mean()))


def test_constant_feature_still_has_two_open_bins() -> None:
    bins = FeatureBins.fit("x", np.zeros(50), 10)
    assert bins.edges == (0.0,)
    assert bins.expected == (1.0, 0.0)


def test_profile_covers_every_contract_feature_in_order(profile: ReferenceProfile) -> None:
    assert profile.names == CONTRACT.numeric_names
    assert profile.contract_hash == CONTRACT.hash
    assert profile.rows == 3904


def test_labels_and_coverage_are_recorded(profile: ReferenceProfile) -> None:
    assert profile.labels == {"1": 0.25, "4": 0.25, "5": 0.5}
    assert profile.coverage == 0.93


def test_json_round_trip_is_exact(profile: ReferenceProfile, tmp_path: Path) -> None:
    path = tmp_path / "profiles" / "reference.json"
    profile.save(path)
    assert ReferenceProfile.load(path) == profile
    assert ReferenceProfile.from_dict(profile.to_dict()) == profile


def test_save_leaves_no_temporary_file(profile: ReferenceProfile, tmp_path: Path) -> None:
    profile.save(tmp_path / "reference.json")
    profile.save(tmp_path / "reference.json")
    assert [p.name for p in tmp_path.iterdir()] == ["reference.json"]


def test_profile_of_another_contract_is_refused_by_name(profile: ReferenceProfile) -> None:
    data = {**profile.to_dict(), "contract_hash": "0123456789abcdef"}
    with pytest.raises(FeatureContractError, match="built with feature contract 0123456789ab"):
        ReferenceProfile.from_dict(data)


def test_unknown_format_version_is_refused(profile: ReferenceProfile) -> None:
    with pytest.raises(FeatureContractError, match="format version 99"):
        ReferenceProfile.from_dict({**profile.to_dict(), "format_version": 99})


def test_unsorted_edges_are_named(profile: ReferenceProfile) -> None:
    data = json.loads(json.dumps(profile.to_dict()))
    data["features"]["caps_ratio"]["edges"] = [0.5, 0.1]
    data["features"]["caps_ratio"]["expected"] = [0.3, 0.3, 0.4]
    with pytest.raises(FeatureContractError, match=r"edges of 'caps_ratio' must be .* strictly increasing"):
        ReferenceProfile.from_dict(data)


def test_missing_feature_is_named(profile: ReferenceProfile) -> None:
    data = json.loads(json.dumps(profile.to_dict()))
    del data["features"]["word_count"]
    with pytest.raises(FeatureContractError, match="the contract has"):
        ReferenceProfile.from_dict(data)


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(FeatureContractError, match=r"cannot read reference profile .*broken\.json"):
        ReferenceProfile.load(path)


def test_training_frame_without_a_feature_is_refused(kindle: pd.DataFrame) -> None:
    with pytest.raises(FeatureContractError, match="caps_ratio"):
        ReferenceProfile.build(kindle.drop(columns=["caps_ratio"]))
