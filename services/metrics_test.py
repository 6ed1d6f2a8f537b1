"""`observe_all` leaves a histogram exactly as one `observe` per value does, bucket edges,
values past the last finite bound and NaN included."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from services.metrics import CONFIDENCE_BUCKETS, observe_all


def samples(histogram: Histogram) -> dict[str, float]:
    return {f"{s.name}{sorted(s.labels.items())}": s.value for m in histogram.collect() for s in m.samples}


def same(left: dict[str, float], right: dict[str, float]) -> bool:
    return left.keys() == right.keys() and all(
        math.isclose(left[k], right[k]) or (math.isnan(left[k]) and math.isnan(right[k])) for k in left
    )


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(3).uniform(0.1, 1.0, size=1_000),
        np.array([0.2, 0.3, 0.99, 1.0, 0.2000001, 0.0]),  # on and just past the bounds
        np.array([1.5, -0.1, 7.0]),  # only the +Inf bucket, and the first
        np.array([0.5, math.nan]),
        np.array([]),
    ],
)
def test_bulk_observe_equals_one_observe_per_value(values: np.ndarray) -> None:
    one_by_one = Histogram("one", "per value", buckets=CONFIDENCE_BUCKETS, registry=CollectorRegistry())
    bulk = Histogram("one", "per value", buckets=CONFIDENCE_BUCKETS, registry=CollectorRegistry())
    for value in values:
        one_by_one.observe(float(value))
    observe_all(bulk, values)
    assert same(samples(bulk), samples(one_by_one)), (samples(bulk), samples(one_by_one))


def test_a_labelled_parent_is_refused_as_by_observe() -> None:
    parent = Histogram("labelled", "a parent", ["api"], registry=CollectorRegistry())
    with pytest.raises(ValueError, match="missing label values"):
        parent.observe(0.5)
    with pytest.raises(ValueError, match="missing label values"):
        observe_all(parent, np.array([0.5]))
