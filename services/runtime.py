"""The champion in this process: where it is loaded from, whether it is usable, and the runner.

Loading never raises. A missing or corrupt bundle leaves the server up with `ready`
false and `error` saying why, so an orchestrator sees a failing readiness probe with a
reason instead of a crash loop, and the bundle can be fixed without a redeploy.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bentoml
import numpy as np

from libs.features import CONTRACT
from services.settings import ServiceSettings, get_settings

if TYPE_CHECKING:
    from libs.models.bundle import ModelBundle

logger = logging.getLogger("kindle.runtime")

BUNDLE_DIR = "bundle"  # the bundle's folder inside the BentoML model
MODEL_NAME = "kindle-sentiment"  # the bundle's name in the BentoML model store
MODEL_ALIAS = "champion"  # the Bento's alias for the model it packs
EXPECTED_LABELS = [1, 2, 3, 4, 5]


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
    if settings.bento_model == MODEL_ALIAS:  # not inside a Bento: the newest import
        candidates.append(f"{MODEL_NAME}:latest")
    for tag in candidates:
        try:
            return bentoml.models.get(tag)
        except Exception as error:
            logger.debug("no BentoML model %s: %s", tag, error)
    return None


def _download_from_mlflow(settings: ServiceSettings) -> Path:
    """The champion's bundle folder from the MLflow registry (alias, e.g. `champion`)."""
    import mlflow  # only when configured: the Bento does not need mlflow otherwise

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    uri = f"models:/{settings.mlflow_model_name}@{settings.mlflow_alias}"
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    # A bundle is the folder holding the manifest; it may sit one level down.
    for candidate in (local, *sorted(p.parent for p in local.rglob("*.json"))):
        if (candidate / "manifest.json").is_file() or (candidate / "bundle.json").is_file():
            return candidate
    return local


def resolve_bundle_path(settings: ServiceSettings) -> tuple[Path, str]:
    """(bundle folder, human-readable source); raises with a reason when there is none."""
    if settings.bundle_path is not None:
        return settings.bundle_path, f"path {settings.bundle_path}"
    if settings.mlflow_tracking_uri and settings.mlflow_model_name:
        path = _download_from_mlflow(settings)
        return path, f"mlflow {settings.mlflow_model_name}@{settings.mlflow_alias}"
    model = bento_model(settings)
    if model is None:
        raise FileNotFoundError(
            f"no bundle: KINDLE_BUNDLE_PATH unset, MLflow not configured and BentoML model "
            f"{settings.bento_model!r} not found"
        )
    return Path(model.path_of(BUNDLE_DIR)), f"bentoml model {model.tag}"


def check_bundle(bundle: ModelBundle) -> None:
    """The service's own checks on top of `load_bundle`'s: contract and label set."""
    CONTRACT.require_hash(bundle.contract_hash, f"model bundle {bundle.version}")
    if list(bundle.labels) != EXPECTED_LABELS:
        raise ValueError(f"bundle labels are {list(bundle.labels)}; the service needs {EXPECTED_LABELS}")


def load(settings: ServiceSettings | None = None, state: ModelState = STATE) -> ModelState:
    """Loads the champion into `state` once; safe to call from several threads."""
    settings = settings or get_settings()
    with state.lock:
        if state.ready:
            return state
        started = time.perf_counter()
        try:
            from libs.models.bundle import load_bundle

            path, source = resolve_bundle_path(settings)
            bundle = load_bundle(path)
            check_bundle(bundle)
        except Exception as error:
            state.error = f"{type(error).__name__}: {error}"
            logger.error("champion not loaded: %s", state.error)
            return state
        state.bundle, state.source, state.error = bundle, source, None
        state.loaded_at = time.time()
        logger.info(
            "champion loaded",
            extra={
                "model_kind": bundle.kind,
                "model_version": bundle.version,
                "source": source,
                "load_s": round(time.perf_counter() - started, 3),
            },
        )
    return state


class KindleRunnable(bentoml.legacy.Runnable):
    """Scores reviews with the bundle; batchable, so the runner may merge requests.

    One instance per runner worker (embedded: the API process). The bundle is shared with
    the API code through `STATE`, so embedded mode holds one copy of the model.
    """

    SUPPORTED_RESOURCES = ("cpu",)
    SUPPORTS_CPU_MULTI_THREADING = False

    def __init__(self) -> None:
        self.state = load()

    @bentoml.legacy.Runnable.method(batchable=True, batch_dim=0)
    def predict_proba(self, texts: list[str], summaries: list[str | None]) -> np.ndarray:
        bundle = self.state.bundle
        if bundle is None:
            # Reached only when a runner process could not load the bundle.
            from bentoml.exceptions import ServiceUnavailable

            raise ServiceUnavailable(f"model not loaded: {self.state.error}")
        from services.metrics import get_metrics

        get_metrics().batch_size.observe(len(texts))
        has_summaries = any(summary is not None for summary in summaries)
        started = time.perf_counter()
        probabilities = np.asarray(bundle.predict_proba(texts, summaries if has_summaries else None))
        # Embedded, this runs in the context of the request that started the model call (for a
        # merged batch: its first request; the coalescer logs the others' ids).
        logger.debug(
            "model call",
            extra={"rows": len(texts), "model_ms": round((time.perf_counter() - started) * 1000, 2)},
        )
        return probabilities


def make_runner(settings: ServiceSettings) -> bentoml.legacy.Runner:
    return bentoml.legacy.Runner(
        KindleRunnable,
        name="kindle_model",
        embedded=settings.runner_embedded,
        max_batch_size=settings.max_batch_size,
        max_latency_ms=settings.max_latency_ms,
    )


def explain(bundle: ModelBundle, texts: list[str], summaries: list[str | None] | None, top_k: int) -> Any:
    """Per review, the TF-IDF terms that pushed the predicted class most (linear champions).

    contribution(term) = tfidf(term) x (coef[predicted] - mean coef over classes): the
    logit a term adds to the predicted class relative to the others.
    """
    from bentoml.exceptions import BadInput

    from libs.features import compute_features

    coefficients = _text_coefficients(bundle)
    if coefficients is None:
        raise BadInput(f"model kind {bundle.kind!r} has no linear coefficients over TF-IDF terms to explain")
    frame = compute_features(texts, summaries)
    matrix = bundle.tfidf.transform(frame["clean_text"].tolist())
    probabilities = np.asarray(bundle.predict_proba(texts, summaries))
    relative = coefficients - coefficients.mean(axis=0, keepdims=True)
    explanations = []
    for row, probs in enumerate(probabilities):
        predicted = int(np.argmax(probs))
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        indices, values = matrix.indices[start:end], matrix.data[start:end]
        scores = values * relative[predicted, indices]
        order = np.argsort(-scores)[:top_k]
        explanations.append(
            {
                "label": int(bundle.labels[predicted]),
                "tokens": [
                    {"token": bundle.tfidf.terms[indices[i]], "weight": float(scores[i])}
                    for i in order
                    if scores[i] > 0
                ],
            }
        )
    return explanations


def _text_coefficients(bundle: ModelBundle) -> np.ndarray | None:
    """(classes, tfidf terms) coefficients when the estimator is linear over TF-IDF first."""
    estimator = bundle.estimator
    if hasattr(estimator, "steps"):  # a Pipeline: its final step holds the coefficients
        estimator = estimator.steps[-1][1]
    coef = getattr(estimator, "coef_", None)
    if coef is None or bundle.tfidf is None:
        return None
    coef = np.asarray(coef.toarray() if hasattr(coef, "toarray") else coef, dtype=np.float64)
    if coef.ndim != 2 or coef.shape[0] != len(bundle.labels) or coef.shape[1] < bundle.tfidf.size:
        return None
    return coef[:, : bundle.tfidf.size]
