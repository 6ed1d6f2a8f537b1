"""Live drift monitoring fed from production traffic, off the request path.

Requests hand their reviews and predicted labels to a bounded queue and return at
once; one background thread computes the contract features (the same `libs/features`
code the model uses), feeds `libs.drift.LiveMonitor` (which publishes the
`kindle_drift_*` gauges and persists its window) and writes the production batches.
When the thread falls behind, rows are dropped and counted instead of slowing requests:
drift is a statistical signal, latency is a promise.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.settings import ServiceSettings

if TYPE_CHECKING:
    from libs.models.bundle import ModelBundle

logger = logging.getLogger("kindle.drift")

QUEUE_REQUESTS = 1024
FLUSH_ROWS = 64
FLUSH_SECONDS = 0.5
_STOP = object()


class DriftFeed:
    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.monitor: Any = None
        self.writer: Any = None
        self.version: str | None = None  # of the bundle being served, recorded with each batch
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_REQUESTS)
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, bundle: ModelBundle) -> None:
        """Builds the monitor from the bundle's drift reference; a failure disables drift only."""
        if not self.settings.drift_enabled or self.running:
            return
        if not bundle.drift_reference:
            logger.warning("bundle %s has no drift reference: live drift monitoring off", bundle.version)
            return
        self.version = str(bundle.version)
        try:
            self.monitor, self.writer = self._build(bundle)
        except Exception:
            logger.exception("live drift monitor not started")
            return
        self._thread = threading.Thread(target=self._run, name="kindle-drift", daemon=True)
        self._thread.start()

    def _build(self, bundle: ModelBundle) -> tuple[Any, Any]:
        # Imported here, in the worker, after BentoML set PROMETHEUS_MULTIPROC_DIR.
        import prometheus_client

        from libs.drift import BatchWriter, LiveMonitor, ReferenceProfile

        # Workers share both folders: LiveMonitor merges the workers' window files there
        # (so every worker's gauges describe all traffic) and batch files carry the pid.
        monitor = LiveMonitor(
            ReferenceProfile.from_dict(bundle.drift_reference, what=f"drift reference of {bundle.version}"),
            registry=prometheus_client.REGISTRY,
            window_rows=self.settings.drift_window_rows,
            recompute_rows=self.settings.drift_recompute_rows,
            state_dir=self.settings.drift_state_dir,
            webhook_url=self.settings.drift_webhook_url,
        )
        writer = (
            BatchWriter(
                Path(self.settings.batch_dir),
                rows_per_file=self.settings.batch_rows_per_file,
                seconds_per_file=self.settings.batch_seconds_per_file,
            )
            if self.settings.batch_dir
            else None
        )
        return monitor, writer

    def switch(self, bundle: ModelBundle) -> None:
        """Follows a reloaded champion: its drift reference replaces the old one (the window
        restarts, since counts binned for the old reference mean nothing for the new one)."""
        if not self.running:
            self.start(bundle)
            return
        self.version = str(bundle.version)
        if not bundle.drift_reference:
            logger.warning("bundle %s has no drift reference: live drift keeps the old one", bundle.version)
            return
        from libs.drift import ReferenceProfile

        self.monitor.use_reference(
            ReferenceProfile.from_dict(bundle.drift_reference, what=f"drift reference of {bundle.version}")
        )

    def submit(self, texts: list[str], summaries: list[str | None] | None, labels: list[int]) -> None:
        """Never blocks: a full queue drops the rows (counted in kindle_drift_dropped_rows)."""
        if self._thread is None:
            return
        try:
            self._queue.put_nowait((texts, summaries, labels))
        except queue.Full:
            from services.metrics import get_metrics

            get_metrics().drift_dropped.inc(len(texts))

    def _run(self) -> None:
        from libs.features import compute_features

        stop = False
        while not stop:
            items = [self._queue.get()]
            rows = len(items[0][0]) if items[0] is not _STOP else 0
            deadline = time.monotonic() + FLUSH_SECONDS
            # Gather up to FLUSH_ROWS rows (or FLUSH_SECONDS) per observation: the fixed
            # cost of a features frame and a monitor update is then paid per batch, not
            # per request, which keeps drift monitoring off the latency budget.
            while rows < FLUSH_ROWS and items[-1] is not _STOP:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                items.append(item)
                rows += len(item[0]) if item is not _STOP else 0
            stop = any(item is _STOP for item in items)
            items = [item for item in items if item is not _STOP]
            if items:
                self._observe(items, compute_features)

    def _observe(self, items: list[Any], compute_features: Any) -> None:
        texts = [text for item in items for text in item[0]]
        summaries = [s for t, ss, _ in items for s in (ss if ss is not None else [None] * len(t))]
        labels = [label for item in items for label in item[2]]
        try:
            frame = compute_features(texts, summaries)
            self.monitor.observe(frame, labels)
            if self.writer is not None:
                self.writer.write(frame, labels, self.version)
        except Exception:
            logger.exception("drift observation failed (%d rows skipped)", len(texts))

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=5)
            self._thread = None
        for closable in (self.writer, self.monitor):
            close = getattr(closable, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    logger.exception("closing %s failed", type(closable).__name__)

    @staticmethod
    def reference_summary(bundle: ModelBundle) -> dict[str, Any] | None:
        """A small view of the drift reference for `metadata` (not the histograms)."""
        reference = bundle.drift_reference
        if not reference:
            return None
        features = reference.get("features") or {}
        return {
            "rows": reference.get("rows"),
            "features": list(features),
            "bins": {name: len(spec.get("expected", [])) for name, spec in features.items()}
            if isinstance(features, dict)
            else None,
            "predicted_label_shares": reference.get("labels"),
            "tfidf_coverage": reference.get("coverage"),
            "contract_hash": reference.get("contract_hash"),
        }
