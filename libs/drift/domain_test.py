"""The domain classifier on real reviews: Kindle books as the reference, other products as production."""

import pytest

from libs.drift.domain import DOMAIN_AUC_THRESHOLD, MIN_ROWS, DomainDrift, domain_drift
from tests import fixtures

DEVICE_WORDS = {"kindle", "screen", "battery", "light", "paperwhite", "voyage", "device", "tablet", "charge"}


@pytest.fixture(scope="module")
def halves() -> tuple[list[str], list[str]]:
    """The book sample's reviews in two halves: reference, and production from the same domain."""
    texts = fixtures.kindle_reviews()["reviewText"].astype(str).tolist()
    return texts[::2], texts[1::2]


def test_two_halves_of_one_domain_are_not_told_apart(halves: tuple[list[str], list[str]]) -> None:
    result = domain_drift(*halves)
    assert abs(result.roc_auc - 0.5) < 0.1
    assert not result.drifted
    assert (result.reference_rows, result.production_rows) == tuple(map(len, halves))


def test_device_reviews_drift_and_their_terms_name_the_device(halves: tuple[list[str], list[str]]) -> None:
    devices = fixtures.kindle_devices()["reviewText"].dropna().astype(str).tolist()
    result = domain_drift(halves[0], devices)
    assert result.roc_auc > 0.95 and result.drifted
    production = [term for term, _ in result.production_terms]
    assert len(production) == 20
    assert len(DEVICE_WORDS & set(production)) >= 5, production
    assert "book" in {term for term, _ in result.reference_terms}
    weights = [weight for _, weight in result.production_terms]
    assert weights == sorted(weights, reverse=True) and weights[-1] > 0


def test_print_book_reviews_drift_less_than_device_reviews_but_still_drift(
    halves: tuple[list[str], list[str]],
) -> None:
    books = fixtures.print_books()["reviewText"].dropna().astype(str).tolist()
    result = domain_drift(halves[0], books)
    assert DOMAIN_AUC_THRESHOLD <= result.roc_auc < 0.99
    assert result.drifted


def test_the_verdict_follows_the_threshold(halves: tuple[list[str], list[str]]) -> None:
    reference, production = halves[0][:400], halves[1][:400]
    assert domain_drift(reference, production, threshold=0.0).drifted
    strict = domain_drift(reference, production, threshold=1.01)
    assert not strict.drifted and strict.threshold == 1.01


def test_a_side_too_small_to_cross_validate_is_refused(halves: tuple[list[str], list[str]]) -> None:
    with pytest.raises(ValueError, match=f"needs {MIN_ROWS} production texts or more, got 3"):
        domain_drift(halves[0], halves[1][:3])


def test_the_result_serialises_for_the_report() -> None:
    result = DomainDrift(0.9, 0.6, True, [("screen", 2.0)], [("book", 1.5)], 10, 12)
    assert result.to_dict() == {
        "roc_auc": 0.9,
        "threshold": 0.6,
        "drifted": True,
        "production_terms": [{"term": "screen", "weight": 2.0}],
        "reference_terms": [{"term": "book", "weight": 1.5}],
        "reference_rows": 10,
        "production_rows": 12,
    }
