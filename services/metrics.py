"""The service's Prometheus metrics (all prefixed `kindle_`), created on first use.

BentoML serves `/metrics` from prometheus_client's multiprocess files and sets
PROMETHEUS_MULTIPROC_DIR in each worker only after the service module is imported, so
prometheus_client must not be imported, nor a metric created, at import time: a metric
made too early lives in process memory and never reaches `/metrics`. `get_metrics()` is
first called from the startup hook or a request, when the directory is set.
"""

from __future__ import annotations

import threading
from collections import Counter
from functools import cached_property
from typing import Any

import numpy as np

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONFIDENCE_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServiceMetrics:
    """Request, error, prediction and batching metrics; label sets are small and fixed."""

    def __init__(self) -> None:
        import prometheus_client as prom

        self.requests = prom.Counter(
            "kindle_requests", "Requests by API, protocol and outcome.", ["api", "protocol", "status"]
        )
        self.latency = prom.Histogram(
            "kindle_request_duration_seconds",
            "Request latency by API and protocol, from admission to response.",
            ["api", "protocol"],
            buckets=LATENCY_BUCKETS,
        )
        self.errors = prom.Counter(
            "kindle_errors",
            "Refused or failed requests by API, protocol and error type.",
            ["api", "protocol", "type"],
        )
        self.predictions = prom.Counter(
            "kindle_predictions", "Predicted star ratings (one per review).", ["label", "sentiment"]
        )
        self.confidence = prom.Histogram(
            "kindle_prediction_confidence", "Probability of the predicted label.", buckets=CONFIDENCE_BUCKETS
        )
        self.batch_size = prom.Histogram(
            "kindle_batch_size",
            "Reviews per model call (scoring, after adaptive batching; or explaining).",
            buckets=BATCH_BUCKETS,
        )
        self.request_items = prom.Histogram(
            "kindle_request_items", "Reviews per request.", ["api"], buckets=BATCH_BUCKETS
        )
        self.model_ready = prom.Gauge(
            "kindle_model_ready", "1 when a valid bundle is loaded.", multiprocess_mode="min"
        )
        self.drift_dropped = prom.Counter(
            "kindle_drift_dropped_rows", "Reviews not fed to the drift monitor (queue full)."
        )
        self.drift_queue_rows = prom.Gauge(
            "kindle_drift_queue_rows",
            "Reviews waiting for the drift thread (bounded by KINDLE_DRIFT_QUEUE_ROWS per worker).",
            multiprocess_mode="livesum",
        )
        self.batch_dropped = prom.Counter(
            "kindle_batch_dropped_rows",
            "Scored reviews not written to KINDLE_BATCH_DIR by reason: queue_full, disk (OSError), error.",
            ["reason"],
        )
        self.rate_limiter_errors = prom.Counter(
            "kindle_rate_limiter_errors",
            "Rate-limit decisions let through because the shared rate limiter (Redis) did not answer "
            "(a call of several reviews asks twice: its first review at admission, the rest once parsed).",
        )
        self.model_reloads = prom.Counter(
            "kindle_model_reloads",
            "Champion reloads after the source changed: loaded; failed (fetched and refused, the old "
            "one kept serving); unfetched (not downloaded, tried again with backoff).",
            ["result"],
        )
        self.model_behind = prom.Gauge(
            "kindle_model_behind",
            "1 while the champion's source points at another bundle than the one this worker serves "
            "(a fetch being retried, or a refused bundle).",
            multiprocess_mode="livemax",
        )
        # One series per version a live worker serves: 1 while served, 0 once replaced; workers
        # that exit drop out ("live"), so a redeploy does not leave the old version behind.
        self.model_info = prom.Gauge(
            "kindle_model_info",
            "The served champion (value 1) by version and kind.",
            ["model_version", "kind"],
            multiprocess_mode="livemax",
        )
        self._served: tuple[str, str] | None = None

    def set_served(self, version: str, kind: str) -> None:
        """Marks `version` as this worker's served champion and the one before as replaced."""
        if self._served is not None and self._served != (version, kind):
            self.model_info.labels(*self._served).set(0)
        self.model_info.labels(version, kind).set(1)
        self.model_ready.set(1)
        self._served = (version, kind)

    @cached_property
    def _label_children(self) -> dict[tuple[int, str], Any]:
        return {}

    def record_predictions(self, labels: list[int], sentiments: list[str], confidences: np.ndarray) -> None:
        """One counter update per (label, sentiment) and one per confidence bucket, whatever the
        batch size: in multiprocess mode every update is a locked write to a shared file, so
        per-review updates cost a batch of 1,000 reviews 2,000 of them."""
        children = self._label_children
        for (label, sentiment), count in Counter(zip(labels, sentiments, strict=True)).items():
            child = children.get((label, sentiment))
            if child is None:
                child = children[(label, sentiment)] = self.predictions.labels(str(label), sentiment)
            child.inc(count)
        observe_all(self.confidence, confidences)


def observe_all(histogram: Any, values: np.ndarray) -> None:
    """`histogram.observe(v)` for every v, with one update per bucket that got values.

    prometheus_client has no bulk observe; this does what its `Histogram.observe` does
    (the sum grows by each value, the first bucket whose upper bound is >= the value counts
    it), through the same attributes (prometheus-client is pinned; `metrics_test` compares
    the two on a real histogram).
    """
    histogram._raise_if_not_observable()
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return
    bounds = np.asarray(histogram._upper_bounds, dtype=np.float64)
    # A NaN sorts past every bound and, as in `observe`, counts in no bucket.
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds) + 1)
    histogram._sum.inc(float(values.sum()))
    for bucket, count in zip(histogram._buckets, counts[: len(bounds)].tolist(), strict=True):
        if count:
            bucket.inc(count)


_lock = threading.Lock()
_metrics: ServiceMetrics | None = None


def get_metrics() -> ServiceMetrics:
    global _metrics
    if _metrics is None:
        with _lock:
            if _metrics is None:
                _metrics = ServiceMetrics()
    return _metrics


# Which server this process is: an API worker serves exactly one protocol, set by
# `transport` when BentoML builds its HTTP middleware or gRPC interceptor.
_protocol = "http"


def set_protocol(protocol: str) -> None:
    global _protocol
    _protocol = protocol


def protocol() -> str:
    return _protocol


def record_error(api: str, kind: str) -> None:
    get_metrics().errors.labels(api, _protocol, kind).inc()
