"""The champion in this process: where it is loaded from, whether it is usable, and the runner.

Loading never raises. A missing or corrupt bundle leaves the server up with `ready`
false and `error` saying why, so an orchestrator sees a failing readiness probe with a
reason instead of a crash loop, and the bundle can be fixed without a redeploy.

`Reloader` follows the source (a bundle folder or an MLflow alias): a new champion is
loaded and checked off the request path and swapped in only when it passes, so a bad
release never replaces a good model, and the good one keeps serving while it is fixed.

A champion from MLflow is downloaded into a temporary folder of its own, removed as soon
as the bundle is loaded (it is served from memory) or refused: a server that follows its
alias for months must not fill its disk with old downloads, and nothing is left to clean
up at exit (BentoML's workers exit without running `atexit` handlers).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bentoml
import numpy as np

from libs.features import CONTRACT, compute_features
from libs.models.kinds import LABELS
from libs.models.registry import CHAMPION, MODEL_NAME
from libs.urls import redact_urls
from services import heap
from services.settings import ServiceSettings, get_settings

if TYPE_CHECKING:
    from libs.models.bundle import ModelBundle

logger = logging.getLogger("kindle.runtime")

BUNDLE_DIR = "bundle"  # the bundle's folder inside the BentoML model
DOWNLOAD_PREFIX = "kindle-mlflow-"  # temporary folders of MLflow downloads, in the system temp dir


@dataclass(frozen=True)
class Source:
    """Where a bundle was found: its folder, a description for logs and metadata, and the
    temporary download folder holding it (MLflow only), to remove once it is loaded."""

    path: Path
    description: str
    download_dir: Path | None = None


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


def bento_model(settings: ServiceSettings) -> bentoml.Model | None:
    """The bundle's entry in the BentoML model store (inside a Bento: the Bento's own models)."""
    candidates = [settings.bento_model]
    if settings.bento_model == CHAMPION:  # not inside a Bento: the newest import
        candidates.append(f"{MODEL_NAME}:latest")
    for tag in candidates:
        try:
            return bentoml.models.get(tag)
        except Exception as error:
            logger.debug("no BentoML model %s: %s", tag, error)
    return None


def _download_from_mlflow(settings: ServiceSettings, version: str | None = None) -> tuple[Path, Path]:
    """(bundle folder, the temporary folder holding it) of the MLflow registry's `version`,
    else the alias's; the temporary folder is the caller's to remove."""
    import mlflow  # only when configured: the Bento does not need mlflow otherwise

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    name = settings.model_name
    uri = f"models:/{name}/{version}" if version else f"models:/{name}@{settings.mlflow_alias}"
    folder = Path(tempfile.mkdtemp(prefix=DOWNLOAD_PREFIX))
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(folder)))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    # A bundle is the folder holding the manifest; it may sit one level down.
    for candidate in (local, *sorted(p.parent for p in local.rglob("*.json"))):
        if (candidate / "manifest.json").is_file() or (candidate / "bundle.json").is_file():
            return candidate, folder
    return local, folder


def _mlflow_configured(settings: ServiceSettings) -> bool:
    return bool(settings.mlflow_tracking_uri)


def resolve_bundle_path(settings: ServiceSettings, mlflow_version: str | None = None) -> Source:
    """Where the champion is now; raises with a reason when there is none."""
    if settings.bundle_path is not None:
        return Source(settings.bundle_path, f"path {settings.bundle_path}")
    if _mlflow_configured(settings):
        path, download_dir = _download_from_mlflow(settings, mlflow_version)
        pinned = f" (version {mlflow_version})" if mlflow_version else ""
        described = f"mlflow {settings.model_name}@{settings.mlflow_alias}{pinned}"
        return Source(path, described, download_dir)
    model = bento_model(settings)
    if model is None:
        raise FileNotFoundError(
            f"no bundle: KINDLE_BUNDLE_PATH unset, MLflow not configured and BentoML model "
            f"{settings.bento_model!r} not found"
        )
    return Source(Path(model.path_of(BUNDLE_DIR)), f"bentoml model {model.tag}")


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


def source_fingerprint(settings: ServiceSettings) -> str | None:
    """What the source points at now, cheaply: a changed value means a new champion may be there.

    A bundle folder: its real path (a symlink swap changes it) and its manifest's inode,
    size and mtime (an atomic rename of a new bundle changes them; `save_bundle` writes the
    manifest last). MLflow: the alias's version number (one registry call). The Bento's
    own model never changes while the server runs: None.
    """
    if settings.bundle_path is not None:
        real = os.path.realpath(settings.bundle_path)
        try:
            stat = os.stat(os.path.join(real, "manifest.json"))
        except OSError as error:
            return f"{real}|{type(error).__name__}"
        return f"{real}|{stat.st_ino}|{stat.st_size}|{stat.st_mtime_ns}"
    if _mlflow_configured(settings):
        return _alias_version(settings)
    return None


def _alias_version(settings: ServiceSettings) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(settings.mlflow_tracking_uri)
    return str(client.get_model_version_by_alias(settings.model_name, settings.mlflow_alias).version)


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


class KindleRunnable(bentoml.legacy.Runnable):
    """Scores reviews with the bundle; batchable, so the runner may merge requests.

    A call computes the reviews' features once and returns the probabilities together with
    the numeric contract features, which the drift feed takes as they are.

    One instance per runner worker (embedded: the API process). The bundle is shared with
    the API code through `STATE`, so embedded mode holds one copy of the model.
    """

    SUPPORTED_RESOURCES = ("cpu",)
    SUPPORTS_CPU_MULTI_THREADING = False

    def __init__(self) -> None:
        settings = get_settings()
        # A runner process of its own follows the source like the API workers do.
        reloader = None if settings.runner_embedded else Reloader(settings, on_swap=lambda bundle: None)
        if reloader is not None:
            reloader.remember_current()
        self.state = load(settings)
        if reloader is not None:
            reloader.start()
            heap.settle()  # embedded, the API worker's start-up settles once everything is up

    @bentoml.legacy.Runnable.method(batchable=True, batch_dim=0)
    def score(self, texts: list[str], summaries: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (n, 5), numeric features (n, k): `CONTRACT.numeric_names`, float64)."""
        from libs.features import compute_features

        bundle = self.state.bundle
        if bundle is None:
            # Reached only when a runner process could not load the bundle.
            from bentoml.exceptions import ServiceUnavailable

            raise ServiceUnavailable(f"model not loaded: {self.state.error}")
        from services.metrics import get_metrics

        get_metrics().batch_size.observe(len(texts))
        has_summaries = any(summary is not None for summary in summaries)
        started = time.perf_counter()
        frame = compute_features(texts, summaries if has_summaries else None)
        probabilities = np.asarray(bundle.predict_features(frame))
        features = frame[CONTRACT.numeric_names].to_numpy(dtype=np.float64)
        # Embedded, this runs in the context of the request that started the model call (for a
        # merged batch: its first request; the coalescer logs the others' ids).
        if logger.isEnabledFor(logging.DEBUG):
            model_ms = round((time.perf_counter() - started) * 1000, 2)
            logger.debug("model call", extra={"rows": len(texts), "model_ms": model_ms})
        return probabilities, features


def make_runner(settings: ServiceSettings) -> bentoml.legacy.Runner:
    return bentoml.legacy.Runner(
        KindleRunnable,
        name="kindle_model",
        embedded=settings.runner_embedded,
        max_batch_size=settings.max_batch_size,
        max_latency_ms=settings.runner_max_latency_ms,
    )


def explain(bundle: ModelBundle, texts: list[str], summaries: list[str | None] | None, top_k: int) -> Any:
    """Per review, the terms that pushed its predicted star (the model's own `explain`); a
    model that cannot explain itself is a client error (400), not a server fault."""
    from bentoml.exceptions import BadInput

    from libs.models.components import ExplanationUnavailable

    try:
        return bundle.explain(texts, summaries, top_k)
    except ExplanationUnavailable as error:
        raise BadInput(str(error)) from None
