"""Adaptive batching for the embedded runner, which BentoML itself never batches.

Requests that arrive while the model is busy wait in a queue; when the model frees up,
all of them (up to `max_batch_size` reviews) go through in one call and the result is
split back. An idle service therefore adds no latency (a lone request is scored at once,
no timer), and a loaded one pays the per-call cost (DataFrame, sparse matrix, estimator
dispatch) once per batch instead of once per request. Rows are scored independently, so
a review's result does not depend on what it was batched with.

A request larger than `max_batch_size` is cut into parts of at most that many reviews,
so no model call is ever larger than the limit (one 1,000-review request must not hold
the model for one long call while small requests queue behind it); its result is the
parts' results joined back in order.

A model call returns a tuple of row-aligned arrays (probabilities, features, ...): each
array is split back by rows, so every request gets its own rows of every array.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from services.logs import REQUEST_ID

logger = logging.getLogger("kindle.batching")

Rows = tuple[np.ndarray, ...]
"""Row-aligned arrays of one model call: row i of each belongs to review i."""

Score = Callable[[list[str], list[str | None]], Awaitable[Rows]]


def parts(count: int, max_batch_size: int) -> list[slice]:
    """`count` reviews cut, in order, into slices of at most `max_batch_size`: the model calls a
    request larger than one call is scored (or explained) in."""
    return [slice(start, min(start + max_batch_size, count)) for start in range(0, count, max_batch_size)]


class CoalescerClosed(RuntimeError):
    """The coalescer was closed (the server is shutting down): the request was not scored."""


@dataclass
class _Request:
    texts: list[str]
    summaries: list[str | None]
    future: asyncio.Future[Rows]
    results: list[Rows | None]
    request_id: str = field(default_factory=REQUEST_ID.get)


@dataclass
class _Part:
    """Reviews `start:end` of a request: what one model call takes of it."""

    request: _Request
    index: int
    start: int
    end: int

    @property
    def rows(self) -> int:
        return self.end - self.start


class Coalescer:
    def __init__(self, score: Score, max_batch_size: int) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self._score = score
        self.max_batch_size = max_batch_size
        self._queue: list[_Part] = []
        self._running: list[_Part] = []
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    async def submit(self, texts: list[str], summaries: list[str | None]) -> Rows:
        """The model's arrays for these reviews, scored in calls of at most `max_batch_size`."""
        if self._closed:
            raise CoalescerClosed("the server is shutting down")
        if not texts or len(summaries) != len(texts):
            raise ValueError(f"{len(texts)} texts and {len(summaries)} summaries: need as many, at least one")
        future = asyncio.get_running_loop().create_future()
        cuts = parts(len(texts), self.max_batch_size)
        request = _Request(texts, summaries, future, [None] * len(cuts))
        for index, cut in enumerate(cuts):
            self._queue.append(_Part(request, index, cut.start, cut.stop))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    def close(self) -> None:
        """Fails every request still waiting, the one being scored included, and refuses new
        ones: at shutdown no request may wait for a model call that will never come."""
        self._closed = True
        error = CoalescerClosed("the server shut down before the request was scored")
        for part in [*self._running, *self._queue]:
            _settle(part.request.future, error)
        self._queue.clear()
        if self._worker is not None:
            self._worker.cancel()

    def _next_batch(self) -> list[_Part]:
        """The oldest parts, at least one, up to `max_batch_size` reviews together."""
        batch, rows = [self._queue[0]], self._queue[0].rows
        for part in self._queue[1:]:
            if rows + part.rows > self.max_batch_size:
                break
            batch.append(part)
            rows += part.rows
        del self._queue[: len(batch)]
        return batch

    async def _drain(self) -> None:
        while self._queue:
            # A request that failed or whose client went away has a settled future.
            batch = [part for part in self._next_batch() if not part.request.future.done()]
            if batch:
                self._running = batch
                try:
                    await self._run(batch)
                finally:
                    self._running = []

    async def _run(self, batch: list[_Part]) -> None:
        # The drain task was started from whichever request found the model idle; the call
        # belongs to this batch's first request, and logs under its id.
        token = REQUEST_ID.set(batch[0].request.request_id)
        if len(batch) > 1 and logger.isEnabledFor(logging.DEBUG):
            # Ties the batch-mates' ids to the first one's.
            ids = [part.request.request_id for part in batch]
            logger.debug("merged requests", extra={"request_ids": ids})
        texts = [text for part in batch for text in part.request.texts[part.start : part.end]]
        summaries = [s for part in batch for s in part.request.summaries[part.start : part.end]]
        try:
            result = await self._score(texts, summaries)
        except Exception as error:
            if len(batch) == 1:
                _settle(batch[0].request.future, error)
                return
            # Isolate the failure: one bad request must not fail its batch-mates.
            for part in batch:
                await self._run([part])
            return
        finally:
            REQUEST_ID.reset(token)
        start = 0
        for part in batch:
            _deliver(part, tuple(array[start : start + part.rows] for array in result))
            start += part.rows


def _deliver(part: _Part, rows: Rows) -> None:
    """Stores a part's rows; the request is answered once all of its parts are in."""
    request = part.request
    request.results[part.index] = rows
    if any(result is None for result in request.results):
        return
    parts = [result for result in request.results if result is not None]
    if len(parts) == 1:
        _settle(request.future, parts[0])
    else:
        _settle(request.future, tuple(np.concatenate(arrays) for arrays in zip(*parts, strict=True)))


def _settle(future: asyncio.Future[Rows], outcome: Rows | Exception) -> None:
    if future.done():  # the client went away, or the request failed or was closed already
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
