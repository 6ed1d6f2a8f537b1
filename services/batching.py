"""Adaptive batching for the embedded runner, which BentoML itself never batches.

Requests that arrive while the model is busy wait in a queue; when the model frees up,
all of them (up to `max_batch_size` reviews) go through in one call and the result is
split back. An idle service therefore adds no latency (a lone request is scored at once,
no timer), and a loaded one pays the per-call cost (DataFrame, sparse matrix, estimator
dispatch) once per batch instead of once per request. Rows are scored independently, so
a review's probabilities do not depend on what it was batched with.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from services.logs import REQUEST_ID

logger = logging.getLogger("kindle.batching")

Score = Callable[[list[str], list[str | None]], Awaitable[np.ndarray]]


@dataclass
class _Request:
    texts: list[str]
    summaries: list[str | None]
    future: asyncio.Future
    request_id: str = field(default_factory=REQUEST_ID.get)


class Coalescer:
    def __init__(self, score: Score, max_batch_size: int) -> None:
        self._score = score
        self.max_batch_size = max_batch_size
        self._queue: list[_Request] = []
        self._worker: asyncio.Task | None = None

    async def submit(self, texts: list[str], summaries: list[str | None]) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Request(texts, summaries, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    def _next_batch(self) -> list[_Request]:
        """The oldest requests, at least one, up to `max_batch_size` reviews together."""
        batch, rows = [self._queue[0]], len(self._queue[0].texts)
        for request in self._queue[1:]:
            if rows + len(request.texts) > self.max_batch_size:
                break
            batch.append(request)
            rows += len(request.texts)
        del self._queue[: len(batch)]
        return batch

    async def _drain(self) -> None:
        while self._queue:
            batch = [r for r in self._next_batch() if not r.future.cancelled()]
            if batch:
                await self._run(batch)

    async def _run(self, batch: list[_Request]) -> None:
        # The drain task was started from whichever request found the model idle; the call
        # belongs to this batch's first request, and logs under its id.
        token = REQUEST_ID.set(batch[0].request_id)
        if len(batch) > 1 and logger.isEnabledFor(logging.DEBUG):
            # Ties the batch-mates' ids to the first one's.
            logger.debug("merged requests", extra={"request_ids": [request.request_id for request in batch]})
        texts = [text for request in batch for text in request.texts]
        summaries = [summary for request in batch for summary in request.summaries]
        try:
            probabilities = await self._score(texts, summaries)
        except Exception as error:
            if len(batch) == 1:
                _settle(batch[0].future, error=error)
                return
            # Isolate the failure: one bad request must not fail its batch-mates.
            for request in batch:
                await self._run([request])
            return
        finally:
            REQUEST_ID.reset(token)
        start = 0
        for request in batch:
            end = start + len(request.texts)
            _settle(request.future, result=probabilities[start:end])
            start = end


def _settle(future: asyncio.Future, result: np.ndarray | None = None, error: Exception | None = None) -> None:
    if future.done():  # the client went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
