"""The Kindle review rating service: one BentoML service, served over HTTP and gRPC.

Written with BentoML's legacy API (`bentoml.legacy.Service` + a Runner) because in
BentoML 1.4 only legacy services can be served by `bentoml serve-grpc`; the same module
and the same API functions answer `bentoml serve` (HTTP) and `bentoml serve-grpc`.
The runner is embedded by default (the model runs in the API process, no IPC hop) and
batchable, so with `KINDLE_RUNNER_EMBEDDED=false` BentoML's adaptive batching merges
concurrent requests in a separate runner process.

Import must stay cheap and must not fail: the arbiter process imports this module only
to learn the runners, and a bad bundle must leave a server that says why it is not ready.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import bentoml
import numpy as np
from bentoml.exceptions import InternalServerError, ServiceUnavailable

from libs.features import CONTRACT
from libs.production import FeedbackWriter, age_seconds
from services import champion, heap, logs
from services.batch_log import BatchLog
from services.batching import Coalescer, CoalescerClosed, Rows, parts
from services.descriptors import ReviewsJSON, answer_json
from services.drift_feed import DriftFeed
from services.metrics import get_metrics, protocol, record_error
from services.model_source import bento_model
from services.runner import explain as explain_reviews
from services.runner import make_runner
from services.security import Guard, KeyRing, TrustedProxies, make_rate_limiter
from services.settings import get_settings
from services.transport import GrpcGate, HttpGate, charge_reviews, client
from services.validation import EXPLAIN, FEEDBACK, METADATA, PREDICT, PREDICT_BATCH, Feedback, Reviews

if TYPE_CHECKING:
    from libs.models.bundle import ModelBundle

SERVICE_NAME = "kindle_sentiment"

settings = get_settings()
logs.configure(settings.log_level)
logs.quiet_client_errors()
logger = logging.getLogger("kindle.service")


def _apply_server_defaults() -> None:
    """Access logs off unless asked for: set here so that `bentoml serve <tag>` anywhere, not
    only a container reading configuration.yaml, gets the fast default (read by BentoML
    when it builds the HTTP app / gRPC server, after this import).

    Tracing: BentoML's sampler *records* every request's spans even at `sample_rate: 0`
    (it only skips exporting them), which costs each request span objects, attributes and
    ids. With nothing sampled, the OpenTelemetry SDK's own off switch (read when BentoML
    creates its tracer provider, also after this import) skips that work; an operator's
    explicit OTEL_SDK_DISABLED, or a sample rate above 0, keeps tracing on.

    MLflow draws a progress bar on stderr for every download of a champion: the only lines of
    a server's output that would not be JSON.

    Client addresses: uvicorn would replace a request's peer with its X-Forwarded-For
    whenever the peer is in FORWARDED_ALLOW_IPS (default: loopback), before the gate sees
    it, so any local process could pick its own rate-limit bucket. The gate alone decides,
    from KINDLE_TRUSTED_PROXIES; uvicorn trusts no one (read when it builds its config,
    after this import)."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    BentoMLContainer.api_server_config.logging.access.enabled.set(settings.access_log)
    BentoMLContainer.runners_config.logging.access.enabled.set(settings.access_log)
    if not BentoMLContainer.tracing.sample_rate.get():
        os.environ.setdefault("OTEL_SDK_DISABLED", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ["FORWARDED_ALLOW_IPS"] = ""


_apply_server_defaults()

runner = make_runner(settings)
_model = bento_model(settings) if settings.bundle_path is None else None
svc = bentoml.legacy.Service(SERVICE_NAME, runners=[runner], models=[_model] if _model else [])

_guard = Guard(
    settings.api_key.get_secret_value() if settings.api_key else None,
    make_rate_limiter(settings.rate_limit_per_s, settings.rate_limit_burst, settings.redis_url),
    settings.max_in_flight,
    feedback_keys=KeyRing.parse(
        settings.feedback_keys.get_secret_value() if settings.feedback_keys else None
    ),
)
_proxies = TrustedProxies.parse(settings.trusted_proxies)

batches = BatchLog(settings)
drift = DriftFeed(settings)


def _serve(bundle: ModelBundle) -> None:
    """Follows a reloaded champion: drift uses its reference (each scored batch row carries
    the version of the bundle that scored it, whenever it is written)."""
    drift.switch(bundle)


reloader = champion.Reloader(settings, on_swap=_serve)
_feedback = (
    FeedbackWriter(
        Path(settings.feedback_dir),
        rows_per_file=1,
        max_bytes=settings.feedback_max_bytes,
        max_age_s=age_seconds(settings.feedback_max_age_days),
        strict=True,
    )
    if settings.feedback_dir
    else None
)


async def _run_model(texts: list[str], summaries: list[str | None]) -> Rows:
    """(probabilities, numeric contract features) of the reviews, from one model call."""
    probabilities, features = await runner.score.async_run(texts, summaries)
    return np.asarray(probabilities), np.asarray(features)


# BentoML batches only non-embedded runners; the embedded one gets the coalescer.
_coalescer = Coalescer(_run_model, settings.max_batch_size) if settings.runner_embedded else None


@svc.on_startup
def _startup(_: bentoml.Context) -> None:
    """In each API worker, before the embedded runner starts: load the model, start feeds
    and the reloader (which takes over from the source as it was before this load), then
    freeze the start-up heap out of the collector's walks (`heap.settle`)."""
    reloader.remember_current()
    state = champion.load(settings)
    metrics = get_metrics()
    metrics.model_ready.set(0)
    if state.bundle is not None:  # ready
        metrics.set_served(state.bundle.version, state.bundle.kind)
        drift.start(state.bundle)
    batches.start()
    reloader.start()
    _shut_down_on_sigterm()
    heap.settle()


@svc.on_shutdown
def _shutdown(_: bentoml.Context | None) -> None:
    """Requests still waiting for the model are answered 503 / UNAVAILABLE, none hangs."""
    if _coalescer is not None:
        _coalescer.close()
    reloader.stop()
    drift.stop()
    batches.close()


def _shut_down_on_sigterm() -> None:
    """BentoML's gRPC workers leave SIGTERM at its default action, which ends the process at
    once: no shutdown hook runs, and the scored rows the batch log still holds are
    lost. Where the worker has no handler of its own (uvicorn has one for HTTP), SIGTERM
    runs the shutdown hook on the event loop, then ends the process as it would have."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return
    loop = asyncio.get_running_loop()

    def shut_down() -> None:
        _shutdown(None)
        loop.remove_signal_handler(signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)

    loop.add_signal_handler(signal.SIGTERM, shut_down)


def _require_model(api: str) -> Any:
    bundle = champion.STATE.bundle
    if bundle is None:
        record_error(api, "not_ready")
        raise ServiceUnavailable(f"model not loaded: {champion.STATE.error}")
    return bundle


async def _take(api: str, reviews: Reviews) -> None:
    """Every API taking reviews, once they are parsed: the caller's bucket pays one token
    per review (the gate took the first; a shortfall is 429 / RESOURCE_EXHAUSTED)."""
    await charge_reviews(api, len(reviews))


async def _score(api: str, reviews: Reviews) -> dict[str, Any]:
    """The one scoring path of every predicting API: runner, labels, metrics, drift feed and
    batch log (which take the features the model call computed)."""
    await _take(api, reviews)
    bundle = _require_model(api)
    summaries = reviews.summaries or [None] * len(reviews)
    try:
        if _coalescer is not None:
            probabilities, features = await _coalescer.submit(reviews.texts, summaries)
        else:
            probabilities, features = await _run_model(reviews.texts, summaries)
    except bentoml.exceptions.BentoMLException:
        raise
    except CoalescerClosed as error:
        raise ServiceUnavailable(str(error)) from None
    except Exception as error:
        record_error(api, "internal")
        logger.exception("scoring failed")
        raise InternalServerError(f"scoring failed: {type(error).__name__}") from None
    winners = probabilities.argmax(axis=1)
    labels = [int(bundle.labels[i]) for i in winners]
    sentiments = list(type(bundle).sentiment(labels))
    metrics = get_metrics()
    metrics.request_items.labels(api).observe(len(reviews))
    metrics.record_predictions(labels, sentiments, probabilities.max(axis=1))
    drift.submit(features, labels, probabilities)
    # The version that scored them; the texts are queued only where the log keeps them.
    batches.submit(features, labels, str(bundle.version), probabilities, reviews.texts)
    if logger.isEnabledFor(logging.DEBUG):  # the hot path: build the record only when it is kept
        logger.debug("scored", extra={"api": api, "protocol": protocol(), "reviews": len(labels)})
    return {
        "labels": labels,
        "probabilities": probabilities.tolist(),
        "sentiment": sentiments,
        "model_version": str(bundle.version),
    }


_body = settings.max_body_bytes
_limits = (settings.max_items, settings.max_text_chars)


# Each input descriptor validates its API's request shape (`validation`) and hands the
# function what it describes; a refused request never reaches the function.
@svc.api(input=ReviewsJSON(PREDICT.bind(*_limits), _body), output=answer_json(), route="/predict")
async def predict(reviews: Reviews) -> dict[str, Any]:
    """Star ratings of reviews: `{"texts": [...], "summaries": [...]?}`."""
    return await _score("predict", reviews)


@svc.api(input=ReviewsJSON(PREDICT_BATCH.bind(*_limits), _body), output=answer_json(), route="/predict_batch")
async def predict_batch(reviews: Reviews) -> dict[str, Any]:
    """Star ratings of dataset records: `[{"reviewText": ..., "summary": ...?, ...}, ...]`."""
    return await _score("predict_batch", reviews)


@svc.api(input=ReviewsJSON(EXPLAIN.bind(*_limits), _body), output=answer_json(), route="/explain")
async def explain(request: tuple[Reviews, int]) -> dict[str, Any]:
    """The TF-IDF terms that pushed each prediction (linear champions only)."""
    reviews, top_k = request
    await _take("explain", reviews)
    bundle = _require_model("explain")
    explanations: list[Any] = []
    try:
        # CPU-bound and rarer than predict: off the event loop, so it cannot stall other calls;
        # in model calls of at most max_batch_size reviews, as predict's, so a large request
        # does not hold the model in one long call.
        for part in parts(len(reviews), settings.max_batch_size):
            summaries = reviews.summaries[part] if reviews.summaries is not None else None
            explanations += await anyio.to_thread.run_sync(
                explain_reviews, bundle, reviews.texts[part], summaries, top_k
            )
    except bentoml.exceptions.BentoMLException as error:
        record_error("explain", "unsupported")
        raise error
    return {"explanations": explanations, "model_version": str(bundle.version)}


@svc.api(input=ReviewsJSON(FEEDBACK.bind(*_limits), _body), output=answer_json(), route="/feedback")
async def feedback(labelled: Feedback) -> dict[str, Any]:
    """True star ratings of reviews: `{"texts": [...], "summaries": [...]?, "ratings": [1-5],
    "request_ids": [...]?}`, stored with the serving model's version and the client whose
    feedback key sent them, for retraining."""
    await _take("feedback", labelled.reviews)
    if _feedback is None:
        record_error("feedback", "not_configured")
        raise ServiceUnavailable("feedback is not stored here: set KINDLE_FEEDBACK_DIR")
    bundle = champion.STATE.bundle
    version = str(bundle.version) if bundle is not None else None
    reviews = labelled.reviews
    # Written (atomic, fsynced) before the answer: an accepted rating is on disk.
    try:
        await anyio.to_thread.run_sync(
            partial(
                _feedback.write,
                reviews.texts,
                reviews.summaries,
                labelled.ratings,
                labelled.request_ids,
                version,
                client=client(),
            )
        )
    except OSError as error:
        record_error("feedback", "not_written")
        raise InternalServerError(f"feedback could not be written: {type(error).__name__}") from None
    drift.submit_feedback(reviews.texts, reviews.summaries, labelled.ratings)  # live realised metrics
    get_metrics().request_items.labels("feedback").observe(len(reviews))
    return {"accepted": len(reviews), "model_version": version}


@svc.api(
    input=ReviewsJSON(METADATA.bind(*_limits), _body, allow_empty=True),
    output=answer_json(),
    route="/metadata",
)
async def metadata(_: Any) -> dict[str, Any]:
    """What is being served: model, metrics, feature contract, drift reference, limits."""
    state = champion.STATE
    body: dict[str, Any] = {
        "service": SERVICE_NAME,
        "ready": state.ready,
        "not_ready_reason": state.error,
        "source": state.source,
        "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.loaded_at))
        if state.ready
        else None,
        "feature_contract": {"version": CONTRACT.version, "hash": CONTRACT.hash, **CONTRACT.to_dict()},
        "limits": {"max_items": settings.max_items, "max_text_chars": settings.max_text_chars},
    }
    if state.bundle is not None:
        body["model"] = state.bundle.metadata()
        body["drift_reference"] = drift.reference_summary(state.bundle)
    return body


# Registered once every API is declared: the gates cover each of them (`svc.apis`).
svc.add_asgi_middleware(
    HttpGate,
    guard=_guard,
    state=champion.STATE,
    max_body_bytes=settings.max_body_bytes,
    routes={api.route: name for name, api in svc.apis.items()},
    proxies=_proxies,
)
svc.add_grpc_interceptor(
    GrpcGate, guard=_guard, state=champion.STATE, api_names=tuple(svc.apis), proxies=_proxies
)
