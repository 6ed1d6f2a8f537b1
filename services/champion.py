"""The champion in this process: the loaded bundle, its checks, and the background reloader.

Loading never raises. A missing or corrupt bundle leaves the server up with `ready`
false and `error` saying why, so an orchestrator sees a failing readiness probe with a
reason instead of a crash loop, and the bundle can be fixed without a redeploy.

`Reloader` follows the source (a bundle folder or an MLflow alias): a new champion is
loaded and checked off the request path and swapped in only when it passes, so a bad
release never replaces a good model, and the good one keeps serving while it is fixed.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from libs.features import CONTRACT, compute_features
from libs.models.kinds import LABELS
from libs.urls import redact_urls
from services import heap
from services.model_source import Source, resolve_bundle_path, source_fingerprint
from services.settings import ServiceSettings, get_settings

if TYPE_CHECKING:
    from libs.models.bundle import ModelBundle

logger = logging.getLogger("kindle.runtime")


@dataclass
class ModelState:
    """The loaded bundle, or why there is none."""

    bundle: ModelBundle | None = None
    source: str = ""
    error: str | None = "model not loaded yet"
    loaded_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def ready(self) -> bool:
        return self.bundle is not None


STATE = ModelState()


def check_bundle(bundle: ModelBundle) -> None:
    """The service's own checks on top of `load_bundle`'s: contract and label set; then one
    review is scored, which compiles the TF-IDF scan (numba; read from its on-disk cache
    after the first start) before the server says ready instead of in the first request."""
    CONTRACT.require_hash(bundle.contract_hash, f"model bundle {bundle.version}")
    if list(bundle.labels) != LABELS:
        raise ValueError(f"bundle labels are {list(bundle.labels)}; the service needs {LABELS}")
    bundle.predict_features(compute_features(["a first review, scored before any request"]))


def load_checked(settings: ServiceSettings, mlflow_version: str | None = None) -> tuple[ModelBundle, str]:
    """(bundle, source) that passed every check; raises with the reason otherwise."""
    return load_fetched(resolve_bundle_path(settings, mlflow_version))


def load_fetched(source: Source) -> tuple[ModelBundle, str]:
    """(bundle, description) of a fetched source that passed every check; raises with the
    reason otherwise. What was downloaded for it is removed either way: `load_bundle` reads
    every file into memory."""
    from libs.models.bundle import load_bundle

    try:
        bundle = load_bundle(source.path)
        check_bundle(bundle)
    finally:
        if source.download_dir is not None:
            shutil.rmtree(source.download_dir, ignore_errors=True)
    return bundle, source.description


def _reason(error: Exception) -> str:
    """Why a load failed, for logs, /readyz and metadata: URLs cut to scheme and host, since
    the registry's errors quote its URI, credentials included."""
    return redact_urls(f"{type(error).__name__}: {error}")


def load(settings: ServiceSettings | None = None, state: ModelState = STATE) -> ModelState:
    """Loads the champion into `state` once; safe to call from several threads."""
    settings = settings or get_settings()
    with state.lock:
        if state.ready:
            return state
        started = time.perf_counter()
        try:
            bundle, source = load_checked(settings)
        except Exception as error:
            state.error = _reason(error)
            logger.error("champion not loaded: %s", state.error)
            return state
        _install(state, bundle, source, time.perf_counter() - started)
    return state


def _install(state: ModelState, bundle: ModelBundle, source: str, load_s: float) -> None:
    """Makes `bundle` the served one (caller holds `state.lock`): one reference assignment,
    so a request sees either the old bundle or the new one, never a mix."""
    state.bundle, state.source, state.error = bundle, source, None
    state.loaded_at = time.time()
    logger.info(
        "champion loaded",
        extra={
            "model_kind": bundle.kind,
            "model_version": bundle.version,
            "source": source,
            "load_s": round(load_s, 3),
        },
    )


RETRY_CAP_S = 300.0  # the longest wait between two tries of a champion that could not be fetched


def retry_delay(interval_s: float, failures: int) -> float:
    """Seconds before the next try of a champion that could not be fetched `failures` times
    in a row: the poll interval, doubled per failure, capped at `RETRY_CAP_S` (or at the
    interval, if longer). A registry that is down for a moment is tried again at once; one
    that is down for long is asked every five minutes, not every poll."""
    return max(interval_s, min(interval_s * 2 ** (failures - 1), RETRY_CAP_S))


class Reloader:
    """Polls the champion's source every `reload_interval_s` from a background thread.

    Each API worker runs one, so every worker swaps on its own, off the event loop. A new
    source value counts as seen only once it was fetched and checked:

    - fetched and refused (corrupt, another contract...): the served bundle stays, the
      refusal is logged (JSON, with the reason) and counted as `failed`, and that value is
      not tried again; only the next change of the source is;
    - not fetched (the registry or its artifact store did not answer, the download broke):
      counted as `unfetched` and tried again after `retry_delay` (exponential backoff), so a
      passing fault never leaves the worker on an older champion for good.

    `kindle_model_behind` is 1 while the source points at something other than what the
    worker serves (a fetch being retried, or a refused champion). The same rules cover a
    server that started without a valid bundle: it becomes ready when a good one appears.
    """

    def __init__(
        self,
        settings: ServiceSettings,
        on_swap: Callable[[ModelBundle], None],
        state: ModelState = STATE,
    ) -> None:
        self.settings = settings
        self.on_swap = on_swap
        self.state = state
        self.seen: str | None = None  # the source value last loaded or refused
        self.served: str | None = None  # the source value of the served bundle
        self.failures = 0  # fetches of `retrying` failed in a row
        self.retrying: str | None = None
        self.retry_at = 0.0  # time.monotonic() of the next try of `retrying`
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def remember_current(self) -> None:
        """Records the source as it is before the first load, so only later changes reload."""
        self.seen = self.served = self._fingerprint()

    def start(self) -> None:
        """Starts polling. A worker that loaded nothing at start (say, the registry was down)
        tries the source as it is at the first poll, not only after its next change."""
        if self.settings.reload_interval_s <= 0 or self._thread is not None:
            return
        if self.state.bundle is None:
            self.seen = self.served = None
        self._thread = threading.Thread(target=self._run, name="kindle-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.settings.reload_interval_s):
            self.check()

    def _fingerprint(self) -> str | None:
        try:
            return source_fingerprint(self.settings)
        except Exception as error:  # e.g. the registry is unreachable: try again next time
            logger.warning("champion source not checked: %s", _reason(error))
            return self.seen

    def check(self) -> str | None:
        """One poll: 'loaded', 'failed' (refused), 'unfetched' (tried again later), or None
        when there was nothing to try (the source did not change, or a retry is not due)."""
        from services.metrics import get_metrics

        metrics = get_metrics()
        current = self._fingerprint()
        if current is not None:
            metrics.model_behind.set(int(current != self.served))
        if current is None or current == self.seen:
            return None
        if current == self.retrying and time.monotonic() < self.retry_at:
            return None
        served = self.state.bundle.version if self.state.bundle is not None else None
        started = time.perf_counter()
        try:
            mlflow_version = current if self.settings.bundle_path is None else None
            fetched = resolve_bundle_path(self.settings, mlflow_version)
        except Exception as error:
            return self._unfetched(current, served, error)
        self.retrying, self.failures = None, 0
        self.seen = current
        try:
            bundle, source = load_fetched(fetched)
        except Exception as error:
            metrics.model_reloads.labels("failed").inc()
            self._log_failure("failed", served, error)
            return "failed"
        with self.state.lock:
            _install(self.state, bundle, source, time.perf_counter() - started)
        self.served = current
        metrics.model_behind.set(0)
        metrics.model_reloads.labels("loaded").inc()
        metrics.set_served(bundle.version, bundle.kind)
        try:
            self.on_swap(bundle)
        except Exception:
            logger.exception("after the swap to %s", bundle.version)
        heap.settle()
        return "loaded"

    def _unfetched(self, current: str, served: str | None, error: Exception) -> str:
        """Schedules the next try of `current`, which could not be fetched."""
        from services.metrics import get_metrics

        self.failures = self.failures + 1 if current == self.retrying else 1
        self.retrying = current
        delay = retry_delay(self.settings.reload_interval_s, self.failures)
        self.retry_at = time.monotonic() + delay
        get_metrics().model_reloads.labels("unfetched").inc()
        self._log_failure("unfetched", served, error, retry_in_s=round(delay, 3))
        return "unfetched"

    def _log_failure(self, result: str, served: str | None, error: Exception, **extra: float) -> None:
        """A JSON log line of a reload that did not happen; a server still without a bundle
        says why on /readyz."""
        reason = _reason(error)
        logger.error(
            "champion reload %s; still serving %s",
            result,
            served or "nothing",
            extra={"event": "model_reload", "result": result, "reason": reason, "served": served, **extra},
        )
        if self.state.bundle is None:
            self.state.error = reason
