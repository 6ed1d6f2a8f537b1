"""TF-IDF: fitted from document frequencies, exact IDF, round-trips, refuses foreign files."""

import json
import math
import pickle

import numpy as np
import pytest
from scipy import sparse

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


def test_a_vector_does_not_depend_on_its_batch() -> None:
    """Spark's batches and the service's requests hold different neighbours: bit-identical rows."""
    cleaned = fixtures.kindle_sample()["reviewText"].head(300).map(clean_text).tolist()
    tfidf = Tfidf.fit(cleaned)
    whole = tfidf.transform(cleaned)
    halves = [tfidf.transform(cleaned[:137]), tfidf.transform(cleaned[137:])]
    assert (whole != sparse.vstack(halves)).nnz == 0
    for position in (0, 5, 299):
        indices, values = tfidf.row(cleaned[position])
        assert indices.tolist() == whole[position].indices.tolist()
        assert values.tolist() == whole[position].data.tolist()


def test_the_matrix_is_canonical_csr() -> None:
    tfidf = Tfidf.fit(["good book", "bad book", "good read"], SPEC)
    matrix = tfidf.transform(["read good good book zz", "", "book"])
    assert isinstance(matrix, sparse.csr_matrix) and matrix.has_canonical_format
    assert matrix.indptr.tolist() == [0, 4, 4, 5]  # read, good, book, "good book"; ""; book
    assert matrix.indices.dtype == np.int32


def test_bigrams_are_counted_across_their_text_only() -> None:
    tfidf = Tfidf.fit(["good book", "book good"], SPEC)
    # "book good" would be the bigram over the boundary of the two texts.
    matrix = tfidf.transform(["good", "book"])
    assert [tfidf.terms[i] for i in matrix[0].indices] == ["good"]
    assert [tfidf.terms[i] for i in matrix[1].indices] == ["book"]


def test_a_vectoriser_survives_pickling_for_spark_workers() -> None:
    tfidf = Tfidf.fit(["good book", "bad book"], SPEC)
    before = tfidf.transform(["good book"])
    copy = pickle.loads(pickle.dumps(tfidf))
    assert (copy.transform(["good book"]) != before).nnz == 0


def test_a_text_that_was_not_cleaned_is_refused_by_name() -> None:
    """The scan relies on cleaning's alphabet; punctuation means a raw text slipped through."""
    tfidf = Tfidf.fit(["good book", "bad book"], SPEC)
    for call in (tfidf.transform, tfidf.coverage, lambda texts: tokenize(texts[1], SPEC)):
        with pytest.raises(ValueError, match=r"text \d is not a cleaned text: it holds ','"):
            call(["good book", "good, bad"])


def test_words_of_other_scripts_are_tokens_of_two_characters_or_more() -> None:
    # "é" is two bytes but one character: no token; "日本" and "ça" are.
    assert tokenize("é 日本 ça 'é a'", SPEC)[:3] == ["日本", "ça", "a'"]
