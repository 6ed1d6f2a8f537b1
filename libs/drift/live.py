"""Live drift monitoring inside the service, correct with several worker processes.

Multi-worker design: a BentoML service runs several worker processes and each sees
only its share of the traffic. Each `LiveMonitor` therefore keeps only bin COUNTS per
window slot (bins are fixed by the reference, so counts from different processes add
up exactly) and, when `state_dir` is set, writes its slots to `state_dir/worker-<host>-<pid>.json`
(temp file + `os.replace`, so readers never see half a file). Every recompute sums the
slots of all workers' files, keeps the newest ones that form the window, and computes
PSI from those sums: whichever worker Prometheus scrapes, its gauges describe all
traffic. Files written under another reference profile are ignored; a file none of
whose slots is still in the window is deleted (a live worker rewrites its file at its
next recompute). An alert is raised once per crossing across all workers: the worker
that creates `state_dir/alert-<feature>` (O_EXCL) raises it, and the marker goes when
the feature is back under the threshold. Without `state_dir` the monitor sees its own
process only. A state directory that cannot be written degrades to that, with a warning.

Performance is merged the same way: each slot sums the expected confusion matrix of its
scored rows (from their calibrated probabilities) and the observed confusion matrix of
the labelled feedback that arrived in it, so the kindle_performance_* gauges give the
accuracy, macro-F1 and MAE in stars estimated over the whole window (NaN below `min_rows`
scored rows), the same metrics realised on the window's feedback (NaN without any), and,
for the alert rule, the champion's test metrics and the drop allowed.

Gauges are set with multiprocess_mode="mostrecent", so under Prometheus multiprocess
mode the value shown is the latest merged one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry, Counter, Gauge

from libs.atomic import write_json
from libs.drift.alerts import Alerter
from libs.drift.compare import DriftReport, feature_drift, label_drift
from libs.drift.performance import DEFAULT_MAX_DROP, METRICS, expected_confusion, observed_confusion
from libs.drift.profile import ReferenceProfile, label_counts
from libs.drift.psi import DEFAULT_MIN_ROWS, DRIFT_THRESHOLD, Band
from libs.drift.window import CountWindow, Slot, recent, total
from libs.features import FeatureContractError

logger = logging.getLogger("libs.drift.live")

DEFAULT_WINDOW_ROWS = 5_000
DEFAULT_RECOMPUTE_ROWS = 100


class LiveMonitor:
    """Accumulates production feature counts and publishes PSI gauges and alerts.

    Defaults: window of the last 5,000 rows (`window_rows`, and/or `window_seconds`),
    PSI "insufficient" below 200 rows (`min_rows`), recomputed every 100 new rows
    (`recompute_rows`) but at most once per `recompute_seconds` (default 0: no limit),
    drift above 0.2 (`threshold`). A recompute merges every worker's state file, so
    under heavy traffic its cost is paid per interval, not per batch; rows the interval
    held back are taken by the next `observe` or `refresh_if_due`. `registry` is where the gauges
    go (the service passes its own); a private one is made when none is given.
    `worker_id` names this process's state file (default host-pid); `clock` gives the time
    slots are stamped with (default `time.time`). `test_metrics` are the model's own test
    accuracy, macro_f1 and mae_stars, published beside the estimates with `max_drop`.
    """

    def __init__(
        self,
        reference: ReferenceProfile,
        registry: CollectorRegistry | None = None,
        window_rows: int | None = DEFAULT_WINDOW_ROWS,
        window_seconds: float | None = None,
        min_rows: int = DEFAULT_MIN_ROWS,
        recompute_rows: int = DEFAULT_RECOMPUTE_ROWS,
        recompute_seconds: float = 0.0,
        threshold: float = DRIFT_THRESHOLD,
        state_dir: Path | None = None,
        webhook_url: str | None = None,
        worker_id: str | None = None,
        clock: Callable[[], float] = time.time,
        test_metrics: Mapping[str, float] | None = None,
        max_drop: float = DEFAULT_MAX_DROP,
    ) -> None:
        self.reference = reference
        self.registry = registry if registry is not None else CollectorRegistry()
        self.window = CountWindow(window_rows, window_seconds)
        self.min_rows = min_rows
        self.recompute_rows = max(recompute_rows, 1)
        if recompute_seconds < 0:
            raise ValueError(f"recompute_seconds must be >= 0, got {recompute_seconds}")
        self.recompute_seconds = recompute_seconds
        self.threshold = threshold
        self.state_dir = None if state_dir is None else Path(state_dir)
        self.clock = clock
        # Host and pid: containers sharing a volume may all run as pid 1.
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.report: DriftReport | None = None
        self.performance: dict[str, dict[str, float]] = {}
        self._pending = 0
        self._refreshed_at = -math.inf
        self._drifting: set[str] = set()
        self._lock = threading.Lock()
        self._sizes = {bins.name: len(bins.expected) for bins in reference.features}
        self._gauges = _Gauges(self.registry)
        self.max_drop = max_drop
        self._gauges.publish_reference(test_metrics or {}, max_drop)
        self.alerter = Alerter(self._gauges.alerts, self._gauges.webhook_failures, webhook_url)

    def observe(
        self,
        features: pd.DataFrame,
        predicted_labels: Sequence[object] | None = None,
        probabilities: np.ndarray | None = None,
    ) -> DriftReport | None:
        """Counts a batch (with `probabilities`, the calibrated star probabilities its labels
        were chosen from, into the performance estimate); returns the fresh report when this
        batch triggered a recompute."""
        missing = [name for name in self.reference.names if name not in features.columns]
        if missing:
            raise FeatureContractError(f"live features lack columns {missing}")
        if predicted_labels is not None and len(predicted_labels) != len(features):
            raise ValueError(f"{len(predicted_labels)} predicted labels for {len(features)} rows")
        if probabilities is not None and len(probabilities) != len(features):
            raise ValueError(f"{len(probabilities)} probability rows for {len(features)} rows")
        labels = label_counts(() if predicted_labels is None else predicted_labels)
        expected = None if probabilities is None else expected_confusion(probabilities)
        with self._lock:  # binned under the lock: `use_reference` may swap the bins meanwhile
            bins = {b.name: b.counts(features[b.name]) for b in self.reference.features}
            self.window.add(bins, labels, len(features), self.clock(), expected)
            self._pending += len(features)
            return self._refresh() if self._due() else None

    def observe_feedback(
        self, true_stars: Sequence[int], predicted_stars: Sequence[int]
    ) -> DriftReport | None:
        """Labelled feedback scored by the served model: the window's realised performance.
        Recomputes as `observe` does (feedback rows count toward `recompute_rows`)."""
        realised = observed_confusion(true_stars, predicted_stars)
        with self._lock:
            self.window.add_feedback(realised, self.clock())
            self._pending += len(true_stars)
            return self._refresh() if self._due() else None

    def refresh_if_due(self) -> DriftReport | None:
        """Recomputes when enough rows are waiting and the interval has passed: the rows a
        busy interval held back, once traffic pauses (the service's drift thread calls it)."""
        with self._lock:
            return self._refresh() if self._due() else None

    def _due(self) -> bool:
        return (
            self._pending >= self.recompute_rows
            and self.clock() - self._refreshed_at >= self.recompute_seconds
        )

    def use_reference(
        self, reference: ReferenceProfile, test_metrics: Mapping[str, float] | None = None
    ) -> None:
        """Compares from now on with `reference` (a new champion's, whose test metrics are
        `test_metrics`): the window starts empty.

        Other workers' state files of the old reference are ignored by its fingerprint.
        """
        with self._lock:
            self._gauges.publish_reference(test_metrics or {}, self.max_drop)
            self.reference = reference
            self._sizes = {bins.name: len(bins.expected) for bins in reference.features}
            self.window = CountWindow(self.window.rows, self.window.seconds)
            self._pending = 0
            self.report = None
            self.performance = {}

    def refresh(self) -> DriftReport:
        """Persists this worker's counts, merges all workers', and updates gauges and alerts."""
        with self._lock:
            return self._refresh()

    def _refresh(self) -> DriftReport:
        self._pending = 0
        now = self._refreshed_at = self.clock()
        summed = total(self._window_slots(now), self.reference.names, self._sizes)
        report = DriftReport(
            features=tuple(
                feature_drift(b, summed.bins[b.name], self.threshold, self.min_rows)
                for b in self.reference.features
            ),
            rows=summed.rows,
            threshold=self.threshold,
            min_rows=self.min_rows,
            prediction=label_drift(self.reference.labels, summed.labels, self.threshold, self.min_rows),
        )
        self.performance = {
            "estimated": _metrics_of(summed.expected, self.min_rows),
            "realised": _metrics_of(summed.realised, 1),
        }
        self._gauges.publish(report, self.performance, int(summed.realised.sum()))
        self._raise_alerts(report)
        self.report = report
        return report

    def _window_slots(self, now: float) -> list[Slot]:
        """The newest slots of all workers: own ones from memory, the others' from their files."""
        own = list(self.window.slots)
        if self.state_dir is None:
            return recent(own, self.window.rows, self.window.seconds, now)
        mine = self.state_dir / f"worker-{self.worker_id}.json"
        self._write_own(mine)
        others: dict[Path, list[Slot]] = {}
        for path in sorted(self.state_dir.glob("worker-*.json")):
            if path != mine:
                slots = self._read_worker(path)
                if slots is not None:
                    others[path] = slots
        everything = own + [slot for slots in others.values() for slot in slots]
        window = recent(everything, self.window.rows, self.window.seconds, now)
        kept = {id(slot) for slot in window}
        for path, slots in others.items():
            if not any(id(slot) in kept for slot in slots):
                path.unlink(missing_ok=True)
        return window

    def _write_own(self, path: Path) -> None:
        state = {
            "fingerprint": self.reference.fingerprint,
            "worker": self.worker_id,
            "slots": [slot.to_dict() for slot in self.window.slots],
        }
        try:
            write_json(path, state)
        except OSError as error:
            logger.warning("drift state %s not written (this worker's counts stay local): %s", path, error)

    def _read_worker(self, path: Path) -> list[Slot] | None:
        try:
            state = json.loads(path.read_text())
            if state.get("fingerprint") != self.reference.fingerprint:
                return None
            return [Slot.from_dict(slot) for slot in state["slots"]]
        except FileNotFoundError:  # that worker's file was pruned meanwhile
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            logger.warning("drift state %s unreadable, skipped: %s", path, error)
            return None

    def _raise_alerts(self, report: DriftReport) -> None:
        for feature in report.features:
            if not feature.drift:
                if feature.band is not Band.INSUFFICIENT:
                    self._clear_alert(feature.name)
                continue
            if feature.name in self._drifting:
                continue
            self._drifting.add(feature.name)
            if self._claim_alert(feature.name):
                self.alerter.alert(
                    {
                        "event": "kindle_drift_alert",
                        "feature": feature.name,
                        "psi": feature.psi,
                        "threshold": report.threshold,
                        "window_rows": report.rows,
                        "time": datetime.now(UTC).isoformat(),
                        "worker": self.worker_id,
                    }
                )

    def _claim_alert(self, name: str) -> bool:
        """True for exactly one worker per crossing (the one that creates the marker)."""
        if self.state_dir is None:
            return True
        try:
            os.close(os.open(self.state_dir / f"alert-{name}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        except OSError as error:
            logger.warning("drift alert marker for %s not written: %s", name, error)
        return True

    def _clear_alert(self, name: str) -> None:
        self._drifting.discard(name)
        if self.state_dir is not None:
            try:
                (self.state_dir / f"alert-{name}").unlink(missing_ok=True)
            except OSError as error:
                logger.warning("drift alert marker for %s not removed: %s", name, error)


class _Gauges:
    """The kindle_drift_* metrics of one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.psi = Gauge(
            "kindle_drift_psi",
            "PSI per feature over the window (NaN: too few rows)",
            ["feature"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.max_psi = Gauge(
            "kindle_drift_max_psi", "Largest feature PSI", registry=registry, multiprocess_mode="mostrecent"
        )
        self.state = Gauge(
            "kindle_drift_state",
            "0 stable, 1 moderate, 2 drift, -1 insufficient data",
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.window_rows = Gauge(
            "kindle_drift_window_rows",
            "Rows in the window, all workers",
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.prediction_psi = Gauge(
            "kindle_drift_prediction_psi",
            "PSI of predicted labels (NaN: too few rows)",
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.estimated = Gauge(
            "kindle_performance_estimated",
            "Metric estimated from calibrated probabilities over the drift window (NaN: too few rows)",
            ["metric"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.realised = Gauge(
            "kindle_performance_realised",
            "Metric realised on the labelled feedback of the drift window (NaN: no feedback)",
            ["metric"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.feedback_rows = Gauge(
            "kindle_performance_feedback_rows",
            "Labelled feedback reviews in the drift window, all workers",
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.test = Gauge(
            "kindle_performance_test",
            "The served model's metric on its test split (NaN: not in its bundle)",
            ["metric"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.max_drop = Gauge(
            "kindle_performance_max_drop",
            "How far the estimated macro-F1 may fall below the test macro-F1 before the alert",
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.alerts = Counter("kindle_drift_alerts", "Drift alerts raised", ["feature"], registry=registry)
        self.webhook_failures = Counter(
            "kindle_drift_webhook_failures", "Alert webhooks that failed or were dropped", registry=registry
        )

    def publish_reference(self, test_metrics: Mapping[str, float], max_drop: float) -> None:
        for name in METRICS:
            self.test.labels(metric=name).set(_or_nan(test_metrics.get(name)))
        self.max_drop.set(max_drop)

    def publish(
        self, report: DriftReport, performance: Mapping[str, Mapping[str, float]], feedback: int
    ) -> None:
        for name, value in performance["estimated"].items():
            self.estimated.labels(metric=name).set(value)
        for name, value in performance["realised"].items():
            self.realised.labels(metric=name).set(value)
        self.feedback_rows.set(feedback)
        for feature in report.features:
            self.psi.labels(feature=feature.name).set(_or_nan(feature.psi))
        self.max_psi.set(_or_nan(report.max_psi))
        self.state.set(report.state.code)
        self.window_rows.set(report.rows)
        self.prediction_psi.set(_or_nan(None if report.prediction is None else report.prediction.psi))


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else value


def _metrics_of(confusion: np.ndarray, min_rows: int) -> dict[str, float]:
    """Each performance metric of a summed confusion matrix; NaN below `min_rows` rows."""
    enough = confusion.sum() >= max(min_rows, 1)
    return {name: metric(confusion) if enough else math.nan for name, metric in METRICS.items()}
