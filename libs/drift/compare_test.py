"""The batch check on real reviews: same domain is stable, another domain drifts."""

import numpy as np
import pandas as pd
import pytest

from libs.drift import Band, DriftReport, ReferenceProfile, compare
from libs.features import CONTRACT, FeatureContractError, compute_features
from tests import fixtures


def features_of(reviews: pd.DataFrame) -> pd.DataFrame:
    summaries = reviews["summary"].tolist() if "summary" in reviews.columns else None
    return compute_features(reviews["reviewText"].tolist(), summaries)


@pytest.fixture(scope="module")
def kindle_reviews() -> pd.DataFrame:
    return fixtures.kindle_sample()


@pytest.fixture(scope="module")
def kindle(kindle_reviews: pd.DataFrame) -> pd.DataFrame:
    return features_of(kindle_reviews)


@pytest.fixture(scope="module")
def reference(kindle: pd.DataFrame) -> ReferenceProfile:
    return ReferenceProfile.build(kindle)


def psi_values(report: DriftReport) -> dict[str, float | None]:
    return {f.name: None if f.psi is None else round(f.psi, 4) for f in report.features}


def test_two_random_halves_of_kindle_reviews_are_stable(kindle: pd.DataFrame) -> None:
    order = np.random.default_rng(7).permutation(len(kindle))
    first, second = kindle.iloc[order[: len(kindle) // 2]], kindle.iloc[order[len(kindle) // 2 :]]
    report = compare(ReferenceProfile.build(first), second)
    print("halves", psi_values(report))
    assert all(f.psi is not None and f.psi < 0.1 for f in report.features)
    assert report.state is Band.STABLE
    assert not report.retrain


def test_kindle_device_reviews_drift_and_call_for_retraining(reference: ReferenceProfile) -> None:
    report = compare(reference, features_of(fixtures.kindle_devices()))
    print("devices", psi_values(report))
    assert report.max_psi is not None and report.max_psi > 0.2
    assert report.retrain
    assert report.state is Band.DRIFT


def test_print_book_reviews_are_measured(reference: ReferenceProfile) -> None:
    report = compare(reference, features_of(fixtures.print_books()))
    print("print books", psi_values(report), "max", report.max_psi)
    assert report.rows == len(fixtures.print_books())
    assert all(f.psi is not None for f in report.features)


def test_upper_casing_30_percent_of_texts_shows_on_caps_ratio_only(kindle_reviews: pd.DataFrame) -> None:
    order = np.random.default_rng(11).permutation(len(kindle_reviews))
    half = len(order) // 2
    reference = ReferenceProfile.build(features_of(kindle_reviews.iloc[order[:half]]))
    production = kindle_reviews.iloc[order[half:]].copy()
    shouted = production.sample(frac=0.3, random_state=5).index
    production.loc[shouted, "reviewText"] = production.loc[shouted, "reviewText"].str.upper()
    report = compare(reference, features_of(production))
    print("synthetic shift", psi_values(report))
    assert report.feature("caps_ratio").psi > 0.2
    assert report.feature("caps_ratio").drift
    assert report.feature("word_count").psi < 0.1
    assert report.feature("question_count").psi < 0.1
    assert report.feature("text_len").psi < 0.1


def test_too_few_rows_are_insufficient_data_not_stable(
    reference: ReferenceProfile, kindle: pd.DataFrame
) -> None:
    report = compare(reference, kindle.head(50))
    assert all(f.psi is None and f.band is Band.INSUFFICIENT for f in report.features)
    assert report.max_psi is None
    assert report.state is Band.INSUFFICIENT
    assert not report.retrain


def test_min_rows_and_threshold_are_configurable(reference: ReferenceProfile, kindle: pd.DataFrame) -> None:
    report = compare(reference, kindle.head(50), min_rows=10, threshold=0.01)
    assert report.max_psi is not None
    assert report.threshold == 0.01


def test_prediction_drift_compares_predicted_label_shares(kindle_reviews: pd.DataFrame) -> None:
    stars = kindle_reviews["overall"].tolist()
    reference = ReferenceProfile.build(features_of(kindle_reviews), predicted_labels=stars)
    same = compare(reference, features_of(kindle_reviews), predicted_labels=stars)
    all_negative = compare(reference, features_of(kindle_reviews), predicted_labels=[1] * len(stars))
    assert same.prediction is not None and same.prediction.psi == 0.0
    assert all_negative.prediction is not None and all_negative.prediction.band is Band.DRIFT


def test_no_labels_means_no_prediction_drift(reference: ReferenceProfile, kindle: pd.DataFrame) -> None:
    assert compare(reference, kindle, predicted_labels=[5] * len(kindle)).prediction is None


def test_report_as_dict_names_band_and_decision(reference: ReferenceProfile, kindle: pd.DataFrame) -> None:
    data = compare(reference, kindle).to_dict()
    assert data["retrain"] is False
    assert data["state"] == "stable"
    assert [f["name"] for f in data["features"]] == CONTRACT.numeric_names
    assert data["features"][0]["band"] == "stable"


def test_production_without_a_feature_is_refused(reference: ReferenceProfile, kindle: pd.DataFrame) -> None:
    with pytest.raises(FeatureContractError, match="avg_word_length"):
        compare(reference, kindle.drop(columns=["avg_word_length"]))
