"""TF-IDF: fitted from document frequencies, exact IDF, round-trips, refuses foreign files."""

import json
import math

import numpy as np
import pytest

from libs.features import CONTRACT, FeatureContractError, Tfidf, clean_text, tokenize
from libs.features.contract import TfidfSpec
from tests import fixtures

SPEC = TfidfSpec(min_df=1, ngram_max=2, max_features=100)


def test_tokens_include_bigrams_and_sentiment_marks() -> None:
    assert tokenize("good book !", SPEC) == ["good", "book", "!", "good book", "book !"]


def test_idf_is_smoothed_log_of_document_frequency() -> None:
    tfidf = Tfidf.fit(["good book", "bad book"], SPEC)
    assert tfidf.idf[tfidf.index["book"]] == pytest.approx(math.log(3 / 3) + 1)
    assert tfidf.idf[tfidf.index["good"]] == pytest.approx(math.log(3 / 2) + 1)


def test_rows_are_l2_normalised_and_unknown_terms_ignored() -> None:
    tfidf = Tfidf.fit(["good book", "bad book"], SPEC)
    matrix = tfidf.transform(["good good book", "nothing known", ""])
    assert matrix.shape == (3, tfidf.size)
    assert np.linalg.norm(matrix[0].toarray()) == pytest.approx(1.0)
    assert matrix[1].nnz == 0 and matrix[2].nnz == 0


def test_vocabulary_keeps_the_most_frequent_terms_with_ties_by_term() -> None:
    spec = TfidfSpec(min_df=2, ngram_max=1, max_features=2)
    tfidf = Tfidf.fit(["bb aa cc", "bb aa cc", "bb aa", "dd dd"], spec)
    assert tfidf.terms == ["aa", "bb"]


def test_fit_on_nothing_frequent_enough_is_an_error() -> None:
    with pytest.raises(ValueError, match="min_df=2"):
        Tfidf.fit(["one", "two"], TfidfSpec(min_df=2))


def test_save_load_round_trip_is_exact(tmp_path) -> None:
    reviews = fixtures.kindle_sample()["reviewText"].head(500).map(clean_text).tolist()
    tfidf = Tfidf.fit(reviews)
    tfidf.save(tmp_path / "tfidf.json")
    loaded = Tfidf.load(tmp_path / "tfidf.json")
    assert loaded.terms == tfidf.terms
    assert (loaded.transform(reviews) != tfidf.transform(reviews)).nnz == 0


def test_vectoriser_from_another_contract_is_refused(tmp_path) -> None:
    Tfidf.fit(["good book", "good read"], SPEC).save(tmp_path / "tfidf.json")
    data = json.loads((tmp_path / "tfidf.json").read_text())
    data["contract_hash"] = "0" * 64
    (tmp_path / "tfidf.json").write_text(json.dumps(data))
    with pytest.raises(FeatureContractError, match="feature contract 000000000000"):
        Tfidf.load(tmp_path / "tfidf.json")


def test_unreadable_file_is_named(tmp_path) -> None:
    (tmp_path / "tfidf.json").write_text("{not json")
    with pytest.raises(FeatureContractError, match="cannot read TF-IDF vectoriser"):
        Tfidf.load(tmp_path / "tfidf.json")


def test_coverage_is_share_of_known_words() -> None:
    tfidf = Tfidf.fit(["good book", "good read"], TfidfSpec(min_df=2, ngram_max=1))
    assert tfidf.coverage(["good unknown", "good"]) == pytest.approx(2 / 3)
    assert CONTRACT.tfidf.ngram_max == 2
