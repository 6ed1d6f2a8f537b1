"""Live drift monitoring fed from production traffic, off the request path.

Requests hand the numeric contract features that scoring computed (one row per review),
the predicted labels and their calibrated probabilities to a bounded queue
(`services.row_queue`) and return at once; one background thread feeds
`libs.drift.LiveMonitor` (which publishes the `kindle_drift_*` and `kindle_performance_*`
gauges and persists its window). Accepted feedback is handed over too, to a bounded queue
of its own (`FEEDBACK_QUEUE_REVIEWS`): the same thread scores it with the served model and
counts true against predicted stars, the window's realised performance. Features are
computed once per request, by the model call: the feed never sees the scored texts. The
scored-batch log (`services.batch_log`) takes the same rows on a queue and thread of its
own, so nothing drift does can lose a batch.

The queue is bounded by rows and by bytes (`KINDLE_DRIFT_QUEUE_ROWS`,
`KINDLE_DRIFT_QUEUE_BYTES`), not by requests, so its memory does not depend on how large
requests are. When the thread falls behind (a hung shared state folder, say), rows that
do not fit are dropped and counted instead of slowing requests or growing memory: drift
is a statistical signal, latency is a promise.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from services.metrics import get_metrics
from services.row_queue import Block, RowQueue, rows_frame
from services.settings import ServiceSettings

if TYPE_CHECKING:
    from libs.drift import LiveMonitor, ReferenceProfile
    from libs.models.bundle import ModelBundle

logger = logging.getLogger("kindle.drift")

FLUSH_ROWS = 64
FLUSH_SECONDS = 0.5
FEEDBACK_QUEUE_REVIEWS = 1_000
"""Labelled reviews waiting to be scored for the live realised metrics; beyond: not counted
live (they are stored all the same: the feedback log is what retraining and reports read)."""


class DriftFeed:
    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.monitor: Any = None
        self._queue = RowQueue(settings.drift_queue_rows, settings.drift_queue_bytes)
        self._feedback: deque[tuple[list[str], list[str | None] | None, list[int]]] = deque()
        self._feedback_reviews = 0
        self._feedback_lock = threading.Lock()
        self._bundle: ModelBundle | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, bundle: ModelBundle) -> None:
        """Builds the monitor from the bundle's drift reference; a failure disables drift only."""
        if not self.settings.drift_enabled or self.running:
            return
        if bundle.drift_reference is None:
            logger.warning("bundle %s has no drift reference: live drift monitoring off", bundle.version)
            return
        try:
            self.monitor = self._build(bundle.drift_reference, bundle)
            self._bundle = bundle
        except Exception:
            logger.exception("live drift monitor not started")
            return
        self._thread = threading.Thread(target=self._run, name="kindle-drift", daemon=True)
        self._thread.start()

    def _build(self, reference: ReferenceProfile, bundle: ModelBundle) -> LiveMonitor:
        # Imported here, in the worker, after BentoML set PROMETHEUS_MULTIPROC_DIR.
        import prometheus_client

        from libs.drift import LiveMonitor

        # Workers share the state folder: LiveMonitor merges the workers' window files there
        # (so every worker's gauges describe all traffic).
        return LiveMonitor(
            reference,
            registry=prometheus_client.REGISTRY,
            window_rows=self.settings.drift_window_rows,
            recompute_rows=self.settings.drift_recompute_rows,
            recompute_seconds=self.settings.drift_recompute_seconds,
            state_dir=self.settings.drift_state_dir,
            webhook_url=self.settings.drift_webhook_url,
            test_metrics=bundle.test_metrics,
            max_drop=self.settings.performance_max_drop,
        )

    def switch(self, bundle: ModelBundle) -> None:
        """Follows a reloaded champion: its drift reference replaces the old one (the window
        restarts, since counts binned for the old reference mean nothing for the new one)."""
        if not self.running:
            self.start(bundle)
            return
        if bundle.drift_reference is None:
            logger.warning("bundle %s has no drift reference: live drift keeps the old one", bundle.version)
            return
        self.monitor.use_reference(bundle.drift_reference, bundle.test_metrics)
        self._bundle = bundle

    def submit(self, features: np.ndarray, labels: list[int], probabilities: np.ndarray) -> None:
        """Never blocks: rows beyond the queue's bounds are dropped (kindle_drift_dropped_rows);
        the arguments are `RowQueue.put`'s."""
        if self._thread is None:
            return
        dropped = self._queue.put(features, labels, probabilities=probabilities)
        metrics = get_metrics()
        metrics.drift_queue_rows.set(self._queue.rows)
        if dropped:
            metrics.drift_dropped.inc(dropped)

    def submit_feedback(
        self, texts: Sequence[str], summaries: Sequence[str | None] | None, ratings: Sequence[int]
    ) -> None:
        """Never blocks: accepted feedback, to be scored and counted by the drift thread; what
        does not fit in `FEEDBACK_QUEUE_REVIEWS` is left out of the live realised metrics."""
        if self._thread is None:
            return
        with self._feedback_lock:
            if self._feedback_reviews + len(texts) > FEEDBACK_QUEUE_REVIEWS:
                logger.warning("live feedback queue full: %d labelled reviews not counted live", len(texts))
                return
            self._feedback.append(
                (list(texts), None if summaries is None else list(summaries), list(ratings))
            )
            self._feedback_reviews += len(texts)

    def _score_feedback(self) -> None:
        with self._feedback_lock:
            waiting = list(self._feedback)
            self._feedback.clear()
            self._feedback_reviews = 0
        bundle = self._bundle  # set with the monitor, before the thread starts
        for texts, summaries, ratings in waiting:
            try:
                predicted = bundle.predict_proba(texts, summaries).argmax(axis=1) + 1  # type: ignore[union-attr]
                self.monitor.observe_feedback(ratings, predicted.tolist())
            except Exception:
                logger.exception("live feedback not counted (%d labelled reviews)", len(texts))

    def _run(self) -> None:
        # Gather up to FLUSH_ROWS rows (or FLUSH_SECONDS) per observation: the fixed cost
        # of a frame and a monitor update is then paid per batch, not per request, which
        # keeps drift monitoring off the latency budget. The monitor recomputes at most once
        # per drift_recompute_seconds; when traffic pauses, the rows that interval held back
        # are taken once it has passed.
        # Idle waits are bounded, so that feedback is counted when no traffic comes.
        idle_s = self.settings.drift_recompute_seconds or FLUSH_SECONDS
        while True:
            blocks = self._queue.take(FLUSH_ROWS, FLUSH_SECONDS, idle_s)
            if self._feedback:
                self._score_feedback()
            if blocks:
                get_metrics().drift_queue_rows.set(self._queue.rows)
                self._observe(blocks)
            elif self._queue.closed:
                return
            else:
                self._catch_up()

    def _catch_up(self) -> None:
        try:
            self.monitor.refresh_if_due()
        except Exception:
            logger.exception("drift recompute failed")

    def _observe(self, blocks: list[Block]) -> None:
        frame, labels, probabilities = rows_frame(blocks)
        try:
            self.monitor.observe(frame, labels, probabilities)
        except Exception:
            logger.exception("drift observation failed (%d rows skipped)", len(frame))

    def stop(self) -> None:
        self._queue.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        close = getattr(self.monitor, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                logger.exception("closing the drift monitor failed")

    @staticmethod
    def reference_summary(bundle: ModelBundle) -> dict[str, Any] | None:
        """A small view of the drift reference for `metadata` (not the histograms)."""
        reference = bundle.drift_reference
        if reference is None:
            return None
        return {
            "rows": reference.rows,
            "features": reference.names,
            "bins": {feature.name: len(feature.expected) for feature in reference.features},
            "predicted_label_shares": dict(reference.labels),
            "tfidf_coverage": reference.coverage,
            "contract_hash": reference.contract_hash,
        }
