"""The coalescer merges queued requests, splits results back, and isolates failures."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from services.batching import Coalescer


class FakeModel:
    """Row i scores [len(text)]; 'boom' fails the call; records call sizes."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    async def __call__(self, texts: list[str], summaries: list[str | None]) -> np.ndarray:
        self.calls.append(len(texts))
        await asyncio.sleep(0.01)
        if "boom" in texts:
            raise ValueError("boom")
        return np.array([[float(len(t))] for t in texts])


def test_merges_while_busy_and_splits_back() -> None:
    model = FakeModel()

    async def scenario() -> list[np.ndarray]:
        coalescer = Coalescer(model, max_batch_size=100)
        requests = [["a" * (i + 1)] * (i + 1) for i in range(5)]
        return await asyncio.gather(*(coalescer.submit(r, [None] * len(r)) for r in requests))

    results = asyncio.run(scenario())
    assert [r[:, 0].tolist() for r in results] == [[float(i + 1)] * (i + 1) for i in range(5)]
    assert model.calls == [15]  # queued together: one call


def test_respects_max_batch_size() -> None:
    model = FakeModel()

    async def scenario() -> None:
        coalescer = Coalescer(model, max_batch_size=4)
        await asyncio.gather(*(coalescer.submit(["x", "y", "z"], [None] * 3) for _ in range(4)))

    asyncio.run(scenario())
    assert model.calls == [3, 3, 3, 3]


def test_failure_stays_with_its_request() -> None:
    model = FakeModel()

    async def scenario() -> list[object]:
        coalescer = Coalescer(model, max_batch_size=100)
        texts = [["ok"], ["boom"], ["fine"], ["also"]]
        return await asyncio.gather(*(coalescer.submit(t, [None]) for t in texts), return_exceptions=True)

    first, failed, *rest = asyncio.run(scenario())
    assert isinstance(failed, ValueError)
    assert first[0, 0] == 2.0 and [r[0, 0] for r in rest] == [4.0, 4.0]
    with pytest.raises(ValueError):
        raise failed
