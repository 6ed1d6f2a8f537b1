"""The live monitor: bounded window, gauges in a real registry, exact merge across workers."""

import math
import multiprocessing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from libs.drift import LiveMonitor, ReferenceProfile, compare, estimate_performance
from libs.drift.window import SLOTS
from libs.features import FeatureContractError, compute_features
from tests import fixtures


@pytest.fixture(scope="module")
def kindle() -> pd.DataFrame:
    reviews = fixtures.kindle_sample()
    return compute_features(reviews["reviewText"].tolist(), reviews["summary"].tolist())


@pytest.fixture(scope="module")
def halves(kindle: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    order = np.random.default_rng(3).permutation(len(kindle))
    return kindle.iloc[order[:1952]], kindle.iloc[order[1952:]]


@pytest.fixture(scope="module")
def reference(halves: tuple[pd.DataFrame, pd.DataFrame]) -> ReferenceProfile:
    return ReferenceProfile.build(halves[0], predicted_labels=[1, 2, 3, 4, 5] * 100)


@pytest.fixture(scope="module")
def devices() -> pd.DataFrame:
    reviews = fixtures.kindle_devices()
    return compute_features(reviews["reviewText"].tolist(), reviews["summary"].tolist())


def gauge(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_psi_is_recomputed_once_enough_new_rows_arrived(
    reference: ReferenceProfile, halves: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    monitor = LiveMonitor(reference, recompute_rows=100, min_rows=50)
    production = halves[1]
    assert monitor.observe(production.iloc[:60]) is None
    report = monitor.observe(production.iloc[60:120])
    assert report is not None and report.rows == 120


def test_recomputes_are_at_most_one_per_interval_and_held_back_rows_are_taken_later(
    reference: ReferenceProfile, halves: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    now = [1_000.0]
    monitor = LiveMonitor(reference, recompute_rows=100, recompute_seconds=1.0, clock=lambda: now[0])
    production = halves[1]
    first = monitor.observe(production.iloc[:100])
    assert first is not None and first.rows == 100  # the first recompute is not held back
    now[0] += 0.5
    assert monitor.observe(production.iloc[100:300]) is None  # 200 new rows, inside the interval
    assert monitor.refresh_if_due() is None
    assert monitor.report is first
    now[0] += 0.5
    late = monitor.refresh_if_due()
    assert late is not None and late.rows == 300
    assert monitor.refresh_if_due() is None  # nothing new since
    now[0] += 5.0
    assert monitor.observe(production.iloc[300:350]) is None  # too few rows, however long ago
    assert monitor.refresh_if_due() is None
    with pytest.raises(ValueError, match="recompute_seconds"):
        LiveMonitor(reference, recompute_seconds=-1.0)


def test_live_psi_equals_the_batch_psi_of_the_same_rows(
    reference: ReferenceProfile, halves: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    monitor = LiveMonitor(reference, window_rows=10_000)
    for start in range(0, len(halves[1]), 250):
        monitor.observe(halves[1].iloc[start : start + 250])
    live = monitor.refresh()
    batch = compare(reference, halves[1])
    assert [f.psi for f in live.features] == pytest.approx([f.psi for f in batch.features], rel=1e-12)


def test_gauges_are_published_into_the_given_registry(
    reference: ReferenceProfile, halves: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    registry = CollectorRegistry()
    monitor = LiveMonitor(reference, registry=registry)
    report = monitor.observe(halves[1].iloc[:500], predicted_labels=[5] * 500)
    assert report is not None
    assert gauge(registry, "kindle_drift_psi", feature="caps_ratio") == report.feature("caps_ratio").psi
    assert gauge(registry, "kindle_drift_max_psi") == report.max_psi
    assert gauge(registry, "kindle_drift_state") == 0
    assert gauge(registry, "kindle_drift_window_rows") == 500
    assert report.prediction is not None
    assert gauge(registry, "kindle_drift_prediction_psi") == report.prediction.psi


def test_too_few_rows_show_as_insufficient_not_as_zero(
    reference: ReferenceProfile, halves: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    registry = CollectorRegistry()
    monitor = LiveMonitor(reference, registry=registry, min_rows=200, recompute_rows=1)
    monitor.observe(halves[1].iloc[:150])
    assert gauge(registry, "kindle_drift_state") == -1
    assert math.isnan(gauge(registry, "kindle_drift_psi", feature="word_count") or 0.0)


def test_count_window_keeps_only_the_latest_rows(
    reference: ReferenceProfile, kindle: pd.DataFrame, devices: pd.DataFrame
) -> None:
    monitor = LiveMonitor(reference, window_rows=500)
    monitor.observe(devices.iloc[:500])
    for start in range(0, 1000, 50):
        monitor.observe(kindle.iloc[start : start + 50])
    report = monitor.refresh()
    assert 500 <= report.rows <= 550  # the window's edge is resolved to one slot (a tenth)
    assert not report.retrain  # the device reviews have left the window


def test_memory_stays_bounded_whatever_the_traffic(reference: ReferenceProfile, kindle: pd.DataFrame) -> None:
    monitor = LiveMonitor(reference, window_rows=1000)
    for _ in range(40):
        monitor.observe(kindle.iloc[:97])
    assert len(monitor.window.slots) <= SLOTS + 1


def test_time_window_forgets_rows_older_than_its_seconds(
    reference: ReferenceProfile, kindle: pd.DataFrame, devices: pd.DataFrame
) -> None:
    now = [1_000.0]
    monitor = LiveMonitor(reference, window_rows=None, window_seconds=600, clock=lambda: now[0])
    monitor.observe(devices)
    assert monitor.refresh().retrain
    now[0] += 700
    monitor.observe(kindle.iloc[:400])
    report = monitor.refresh()
    assert report.rows == 400
    assert not report.retrain


def test_observing_rows_without_the_features_is_refused(
    reference: ReferenceProfile, kindle: pd.DataFrame
) -> None:
    with pytest.raises(FeatureContractError, match="text_len"):
        LiveMonitor(reference).observe(kindle.drop(columns=["text_len"]))


def test_two_workers_publish_the_psi_of_all_their_rows_together(
    reference: ReferenceProfile, halves: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    production = halves[1]
    one = LiveMonitor(reference, registry=CollectorRegistry(), state_dir=tmp_path, worker_id="one")
    two_registry = CollectorRegistry()
    two = LiveMonitor(reference, registry=two_registry, state_dir=tmp_path, worker_id="two")
    one.observe(production.iloc[:700], predicted_labels=[4] * 700)
    report = two.observe(production.iloc[700:], predicted_labels=[5] * (len(production) - 700))
    together = compare(reference, production, predicted_labels=[4] * 700 + [5] * (len(production) - 700))
    assert report is not None and report.rows == len(production)
    for feature in together.features:
        assert gauge(two_registry, "kindle_drift_psi", feature=feature.name) == pytest.approx(feature.psi)
    assert report.prediction is not None and together.prediction is not None
    assert report.prediction.psi == pytest.approx(together.prediction.psi)
    assert one.refresh().to_dict() == report.to_dict()


def _worker(reference: ReferenceProfile, rows: pd.DataFrame, state_dir: Path) -> None:
    LiveMonitor(reference, state_dir=state_dir).observe(rows)


def test_worker_processes_merge_through_the_state_folder(
    reference: ReferenceProfile, halves: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    production = halves[1]
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_worker, args=(reference, part, tmp_path))
        for part in (production.iloc[:900], production.iloc[900:])
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert [worker.exitcode for worker in workers] == [0, 0]
    assert len(list(tmp_path.glob("worker-*.json"))) == 2
    merged = LiveMonitor(reference, state_dir=tmp_path).refresh()
    together = compare(reference, production)
    assert merged.rows == len(production)
    assert [f.psi for f in merged.features] == pytest.approx([f.psi for f in together.features])


def test_state_of_another_reference_is_ignored(
    reference: ReferenceProfile, halves: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    other = ReferenceProfile.build(halves[1])
    LiveMonitor(other, state_dir=tmp_path, worker_id="old", recompute_rows=1).observe(halves[1].iloc[:300])
    report = LiveMonitor(reference, state_dir=tmp_path, worker_id="new").refresh()
    assert report.rows == 0


def test_unwritable_state_folder_degrades_to_this_worker_only(
    reference: ReferenceProfile,
    halves: tuple[pd.DataFrame, pd.DataFrame],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monitor = LiveMonitor(reference, state_dir=blocker / "state")
    report = monitor.observe(halves[1].iloc[:300])
    assert report is not None and report.rows == 300
    assert "drift state" in caplog.text and "not written" in caplog.text


def test_a_window_needs_a_size(reference: ReferenceProfile) -> None:
    with pytest.raises(ValueError, match="rows, seconds or both"):
        LiveMonitor(reference, window_rows=None, window_seconds=None)


def test_two_workers_publish_the_performance_of_all_their_rows_and_feedback_together(
    reference: ReferenceProfile, halves: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    """Estimated metrics over both workers' rows equal the batch estimate of all of them; the
    realised ones count both workers' feedback; test metrics and the allowed drop are there."""
    production = halves[1].iloc[:400]
    proba = np.random.default_rng(5).dirichlet(np.ones(5) * 0.5, size=len(production))
    test = {"accuracy": 0.6, "macro_f1": 0.5, "mae_stars": 0.6}
    registries = [CollectorRegistry(), CollectorRegistry()]
    workers = [
        LiveMonitor(
            reference,
            registry=r,
            recompute_rows=1,
            min_rows=300,
            state_dir=tmp_path,
            worker_id=f"w{i}",
            test_metrics=test,
            max_drop=0.07,
        )
        for i, r in enumerate(registries)
    ]
    stars = (proba.argmax(axis=1) + 1).tolist()
    workers[0].observe(production.iloc[:200], stars[:200], proba[:200])
    assert math.isnan(gauge(registries[0], "kindle_performance_estimated", metric="macro_f1") or 0.0)  # < 300
    workers[1].observe(production.iloc[200:], stars[200:], proba[200:])
    workers[0].observe_feedback([5, 4, 1], [5, 5, 1])
    workers[1].observe_feedback([2], [2])
    workers[1].refresh()
    batch = estimate_performance(proba)
    for metric, value in batch.values.items():
        assert gauge(registries[1], "kindle_performance_estimated", metric=metric) == pytest.approx(value)
    assert gauge(registries[1], "kindle_performance_feedback_rows") == 4
    assert gauge(registries[1], "kindle_performance_realised", metric="accuracy") == pytest.approx(0.75)
    assert gauge(registries[1], "kindle_performance_realised", metric="mae_stars") == pytest.approx(0.25)
    assert gauge(registries[0], "kindle_performance_test", metric="macro_f1") == 0.5
    assert gauge(registries[0], "kindle_performance_max_drop") == 0.07


def test_without_feedback_the_realised_metrics_are_not_a_number(
    reference: ReferenceProfile, halves: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    registry = CollectorRegistry()
    monitor = LiveMonitor(reference, registry=registry, recompute_rows=1, min_rows=10)
    monitor.observe(halves[1].iloc[:50], [5] * 50, np.tile([0.1, 0.1, 0.1, 0.1, 0.6], (50, 1)))
    assert gauge(registry, "kindle_performance_estimated", metric="accuracy") == pytest.approx(0.6)
    assert math.isnan(gauge(registry, "kindle_performance_realised", metric="accuracy") or 0.0)
    assert math.isnan(gauge(registry, "kindle_performance_test", metric="macro_f1") or 0.0)
    monitor.use_reference(reference, {"macro_f1": 0.52})  # a new champion brings its test metrics
    assert gauge(registry, "kindle_performance_test", metric="macro_f1") == 0.52
    assert monitor.performance == {}
    with pytest.raises(ValueError, match="40 probability rows for 50 rows"):
        monitor.observe(halves[1].iloc[:50], [5] * 50, np.tile([0.2] * 5, (40, 1)))
