"""The model as BentoML runs it: the batchable runnable, its runner, and explanations.

Embedded (the default) the runnable lives in the API worker and shares the champion with
the API code through `champion.STATE`; as a runner process of its own it loads the
champion and follows its source like an API worker does.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import bentoml
import numpy as np

from libs.features import CONTRACT, compute_features
from services import heap
from services.champion import Reloader, load
from services.settings import ServiceSettings, get_settings

if TYPE_CHECKING:
    from libs.models.bundle import ModelBundle

logger = logging.getLogger("kindle.runtime")


class KindleRunnable(bentoml.legacy.Runnable):
    """Scores reviews with the bundle; batchable, so the runner may merge requests.

    A call computes the reviews' features once and returns the probabilities together with
    the numeric contract features, which the drift feed takes as they are.

    One instance per runner worker (embedded: the API process). The bundle is shared with
    the API code through `champion.STATE`, so embedded mode holds one copy of the model.
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
    from services.metrics import get_metrics

    get_metrics().batch_size.observe(len(texts))
    try:
        return bundle.explain(texts, summaries, top_k)
    except ExplanationUnavailable as error:
        raise BadInput(str(error)) from None
