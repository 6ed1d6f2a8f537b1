"""PSI: exact on hand-checked examples, and its properties on any data."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.drift import PSI_EPSILON, Band, band, bin_counts, categorical_psi, psi, psi_if_enough

values = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=200)


def test_psi_of_two_bins_by_hand() -> None:
    # (0.25 - 0.5)·ln(0.25/0.5) + (0.75 - 0.5)·ln(0.75/0.5) = 0.25·ln 2 + 0.25·ln 1.5
    expected = 0.25 * math.log(2) + 0.25 * math.log(1.5)
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(expected, rel=1e-12)


def test_counts_and_shares_give_the_same_psi() -> None:
    assert psi([20, 20], [10, 30]) == pytest.approx(psi([0.5, 0.5], [0.25, 0.75]), rel=1e-12)


def test_empty_bin_uses_the_documented_epsilon() -> None:
    # The reference never saw the third bin: its share is floored at 1e-4, not 0.
    expected = (0.4 - 0.5) * math.log(0.4 / 0.5) + (0.1 - 1e-4) * math.log(0.1 / 1e-4)
    assert PSI_EPSILON == 1e-4
    assert psi([0.5, 0.5, 0.0], [0.5, 0.4, 0.1]) == pytest.approx(expected, rel=1e-12)


def test_bin_empty_on_both_sides_adds_nothing() -> None:
    assert psi([0.5, 0.0, 0.5], [0.25, 0.0, 0.75]) == pytest.approx(psi([0.5, 0.5], [0.25, 0.75]), rel=1e-12)


def test_bins_must_match() -> None:
    with pytest.raises(ValueError, match="expected has 2 bins, actual has 3"):
        psi([1, 1], [1, 1, 1])


def test_all_zero_side_is_refused() -> None:
    with pytest.raises(ValueError, match="actual is all zeros"):
        psi([1, 1], [0, 0])


def test_outer_bins_are_open_ended() -> None:
    # Bins (-inf, 1], (1, 2], (2, inf): far-out values are counted, not dropped.
    assert bin_counts([-100.0, 1.0, 1.5, 2.0, 2.5, 1e9], [1.0, 2.0]).tolist() == [2, 2, 2]


def test_non_finite_values_belong_to_no_bin() -> None:
    assert bin_counts([np.nan, np.inf, 0.5], [1.0]).tolist() == [1, 0]


def test_too_few_rows_is_insufficient_not_zero() -> None:
    assert psi_if_enough([0.5, 0.5], [99, 100], min_rows=200) is None
    assert psi_if_enough([0.5, 0.5], [100, 100], min_rows=200) == 0.0


def test_bands_and_their_boundaries() -> None:
    assert band(0.05) is Band.STABLE
    assert band(0.1) is Band.MODERATE
    assert band(0.2) is Band.MODERATE
    assert band(0.2001) is Band.DRIFT
    assert band(None) is Band.INSUFFICIENT


def test_threshold_is_configurable() -> None:
    assert band(0.15, threshold=0.12) is Band.DRIFT
    assert band(0.25, threshold=0.3) is Band.MODERATE


def test_gauge_codes() -> None:
    assert [b.code for b in (Band.INSUFFICIENT, Band.STABLE, Band.MODERATE, Band.DRIFT)] == [-1, 0, 1, 2]


def test_categorical_psi_by_hand_with_a_new_label() -> None:
    # Label "5" never predicted on validation: its expected share is floored at 1e-4.
    expected = (0.5 - 0.6) * math.log(0.5 / 0.6) + (0.4 - 0.4) * 0 + (0.1 - 1e-4) * math.log(0.1 / 1e-4)
    actual = categorical_psi({"1": 0.6, "4": 0.4}, {"1": 0.5, "4": 0.4, "5": 0.1})
    assert actual == pytest.approx(expected, rel=1e-12)


@given(values, values)
@settings(max_examples=200, deadline=None)
def test_psi_is_never_negative(reference: list[float], production: list[float]) -> None:
    edges = np.unique(np.quantile(reference, [0.25, 0.5, 0.75]))
    assert psi(bin_counts(reference, edges), bin_counts(production, edges)) >= 0.0


@given(values)
@settings(max_examples=200, deadline=None)
def test_psi_of_a_sample_with_itself_is_zero(sample: list[float]) -> None:
    edges = np.unique(np.quantile(sample, [0.1, 0.5, 0.9]))
    counts = bin_counts(sample, edges)
    assert psi(counts, counts) == 0.0


@given(values, st.data())
@settings(max_examples=200, deadline=None)
def test_psi_ignores_row_order(production: list[float], data: st.DataObject) -> None:
    shuffled = data.draw(st.permutations(production))
    edges = [-10.0, 0.0, 10.0]
    reference = [5, 1, 1, 3]
    assert psi(reference, bin_counts(shuffled, edges)) == psi(reference, bin_counts(production, edges))


def test_psi_of_a_frame_ignores_row_order_on_shuffled_rows() -> None:
    frame = pd.DataFrame({"x": np.random.default_rng(1).normal(size=500)})
    edges = [-1.0, 0.0, 1.0]
    shuffled = frame.sample(frac=1.0, random_state=3)
    assert psi([1, 2, 2, 1], bin_counts(frame["x"], edges)) == psi(
        [1, 2, 2, 1], bin_counts(shuffled["x"], edges)
    )
