"""Drift alerts: a structured log line, a counter, and an optional webhook.

The webhook is POSTed from one background thread fed by a bounded queue, with a short
timeout: the request path of the service never waits on, or fails because of, a slow
or dead alert receiver. Failures (and alerts dropped because the queue is full) are
counted and logged.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.request
from typing import Any

from prometheus_client import Counter

from libs.urls import redact_url

logger = logging.getLogger("libs.drift.alerts")

WEBHOOK_TIMEOUT_SECONDS = 2.0
WEBHOOK_QUEUE_SIZE = 100


class Alerter:
    """Raises alert events; owns the webhook thread, started on the first alert."""

    def __init__(
        self,
        alerts: Counter,
        webhook_failures: Counter,
        webhook_url: str | None = None,
        timeout: float = WEBHOOK_TIMEOUT_SECONDS,
    ) -> None:
        self.alerts = alerts
        self.webhook_failures = webhook_failures
        self.webhook_url = webhook_url
        self.timeout = timeout
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=WEBHOOK_QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def alert(self, event: dict[str, Any]) -> None:
        """Logs and counts the event now; the webhook, if any, is posted in the background."""
        logger.warning(json.dumps(event, sort_keys=True))
        self.alerts.labels(feature=str(event.get("feature", ""))).inc()
        if self.webhook_url is None:
            return
        self._start()
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.webhook_failures.inc()
            logger.warning("drift webhook queue full: alert for %s not posted", event.get("feature"))

    def flush(self, timeout: float = 5.0) -> bool:
        """Waits until every queued webhook was attempted; False if `timeout` ran out first."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return self._queue.unfinished_tasks == 0

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._post_forever, name="drift-webhook", daemon=True)
                self._thread.start()

    def _post_forever(self) -> None:
        while True:
            event = self._queue.get()
            try:
                self._post(event)
            except Exception as error:  # any failure of the receiver must stay here
                self.webhook_failures.inc()
                logger.warning("drift webhook %s failed: %s", redact_url(self.webhook_url), error)
            finally:
                self._queue.task_done()

    def _post(self, event: dict[str, Any]) -> None:
        request = urllib.request.Request(
            str(self.webhook_url),
            data=json.dumps(event).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            response.read()
