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
from services.model_source import resolve_bundle_path, source_fingerprint
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
    """(bundle, source) that passed every check; raises with the reason otherwise. What was
    downloaded for it is removed either way: `load_bundle` reads every file into memory."""
    from libs.models.bundle import load_bundle

    source = resolve_bundle_path(settings, mlflow_version)
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


class Reloader:
    """Polls the champion's source every `reload_interval_s` from a background thread.

    Each API worker runs one, so every worker swaps on its own, off the event loop. A new
    source value is loaded and checked once: if it fails, the served bundle stays, the
    failure is logged (JSON, with the reason) and counted, and that value is not tried
    again; only the next change of the source is. The same rule covers a server that
    started without a valid bundle: it becomes ready when a good one appears.
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
        self.seen: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def remember_current(self) -> None:
        """Records the source as it is before the first load, so only later changes reload."""
        self.seen = self._fingerprint()

    def start(self) -> None:
        if self.settings.reload_interval_s <= 0 or self._thread is not None:
            return
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
        """One poll: 'loaded', 'failed', or None when the source did not change."""
        current = self._fingerprint()
        if current is None or current == self.seen:
            return None
        self.seen = current
        from services.metrics import get_metrics

        metrics = get_metrics()
        served = self.state.bundle.version if self.state.bundle is not None else None
        started = time.perf_counter()
        try:
            mlflow_version = current if self.settings.bundle_path is None else None
            bundle, source = load_checked(self.settings, mlflow_version)
        except Exception as error:
            metrics.model_reloads.labels("failed").inc()
            reason = _reason(error)
            logger.error(
                "champion reload failed; still serving %s",
                served or "nothing",
                extra={"event": "model_reload", "result": "failed", "reason": reason, "served": served},
            )
            if self.state.bundle is None:
                self.state.error = reason
            return "failed"
        with self.state.lock:
            _install(self.state, bundle, source, time.perf_counter() - started)
        metrics.model_reloads.labels("loaded").inc()
        metrics.set_served(bundle.version, bundle.kind)
        try:
            self.on_swap(bundle)
        except Exception:
            logger.exception("after the swap to %s", bundle.version)
        heap.settle()
        return "loaded"
