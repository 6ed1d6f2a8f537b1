"""The baseline the serving benchmark compares against: the design this service replaces.

A plain FastAPI endpoint, run by gunicorn's uvicorn workers, that loads the champion bundle with
`libs.models.bundle.load_bundle` and scores each request on its own through the same
`libs/features` code: no runner, no batching, no metrics or drift feed. Scoring runs
inline in the event loop, so a worker scores exactly one request at a time (a threadpool
would only add thread hops: the GIL serialises scoring either way). Its start-up heap is
frozen out of the garbage collector's walks (`services.heap.settle`) as the service's is,
so the two differ in their design, not in that tuning.

    KINDLE_BASELINE_BUNDLE=BUNDLE gunicorn -k uvicorn.workers.UvicornWorker -w N \\
        tools.benchmarks.serving_baseline:app
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from pydantic import BaseModel

from libs.models.bundle import load_bundle
from services import heap

BUNDLE_ENV = "KINDLE_BASELINE_BUNDLE"

bundle = load_bundle(Path(os.environ[BUNDLE_ENV]))
app = FastAPI()
heap.settle()


class Reviews(BaseModel):
    """The service's `predict` body, so both systems get the same requests."""

    texts: list[str]
    summaries: list[str | None] | None = None


@app.get("/livez")
@app.get("/readyz")
async def alive() -> dict[str, bool]:
    return {"ready": True}


@app.post("/predict")
async def predict(reviews: Reviews) -> dict[str, object]:
    probabilities = bundle.predict_proba(reviews.texts, reviews.summaries)
    labels = [int(bundle.labels[i]) for i in probabilities.argmax(axis=1)]
    return {
        "labels": labels,
        "probabilities": probabilities.tolist(),
        "sentiment": bundle.sentiment(labels),
        "model_version": str(bundle.version),
    }
