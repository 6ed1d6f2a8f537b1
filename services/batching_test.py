"""The coalescer merges queued requests, splits large ones, splits results back, isolates
failures, and fails every waiting request when it is closed."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from services.batching import Coalescer, CoalescerClosed


class FakeModel:
    """Row i scores [len(text)] and features [i-th text's first character code]; 'boom' fails
    the call; records call sizes. `gate`, when set, holds every call until it is set."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.calls: list[int] = []
        self.gate = gate

    async def __call__(self, texts: list[str], summaries: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append(len(texts))
        await asyncio.sleep(0.01)
        if self.gate is not None:
            await self.gate.wait()
        if "boom" in texts:
            raise ValueError("boom")
        return np.array([[float(len(t))] for t in texts]), np.array([[float(ord(t[0]))] for t in texts])


def test_merges_while_busy_and_splits_back() -> None:
    model = FakeModel()

    async def scenario() -> list[tuple[np.ndarray, ...]]:
        coalescer = Coalescer(model, max_batch_size=100)
        requests = [["a" * (i + 1)] * (i + 1) for i in range(5)]
        return await asyncio.gather(*(coalescer.submit(r, [None] * len(r)) for r in requests))

    results = asyncio.run(scenario())
    assert [scores[:, 0].tolist() for scores, _ in results] == [[float(i + 1)] * (i + 1) for i in range(5)]
    assert all(features[:, 0].tolist() == [97.0] * len(features) for _, features in results)
    assert model.calls == [15]  # queued together: one call


def test_respects_max_batch_size() -> None:
    model = FakeModel()

    async def scenario() -> None:
        coalescer = Coalescer(model, max_batch_size=4)
        await asyncio.gather(*(coalescer.submit(["x", "y", "z"], [None] * 3) for _ in range(4)))

    asyncio.run(scenario())
    assert model.calls == [3, 3, 3, 3]


def test_a_request_over_the_limit_is_scored_in_calls_of_at_most_the_limit() -> None:
    model = FakeModel()
    big = [chr(65 + i % 26) * (i + 1) for i in range(10)]

    async def scenario() -> list[tuple[np.ndarray, ...]]:
        coalescer = Coalescer(model, max_batch_size=4)
        return await asyncio.gather(coalescer.submit(big, [None] * 10), coalescer.submit(["q"], [None]))

    (scores, features), (small, _) = asyncio.run(scenario())
    assert max(model.calls) <= 4 and sum(model.calls) == 11
    assert model.calls == [4, 4, 3]  # the big request's last 2 reviews share a call with the small one
    assert scores[:, 0].tolist() == [float(i + 1) for i in range(10)]  # its parts joined back in order
    assert features[:, 0].tolist() == [float(65 + i % 26) for i in range(10)]
    assert small[:, 0].tolist() == [1.0]


def test_failure_stays_with_its_request() -> None:
    model = FakeModel()

    async def scenario() -> list[object]:
        coalescer = Coalescer(model, max_batch_size=100)
        texts = [["ok"], ["boom"], ["fine"], ["also"]]
        return await asyncio.gather(*(coalescer.submit(t, [None]) for t in texts), return_exceptions=True)

    first, failed, *rest = asyncio.run(scenario())
    assert isinstance(failed, ValueError) and str(failed) == "boom"
    assert first[0][0, 0] == 2.0 and [r[0][0, 0] for r in rest] == [4.0, 4.0]


def test_a_failing_part_fails_its_request_and_no_more_of_it_is_scored() -> None:
    model = FakeModel()

    async def scenario() -> list[object]:
        coalescer = Coalescer(model, max_batch_size=2)
        return await asyncio.gather(
            coalescer.submit(["boom", "a", "b", "c", "d"], [None] * 5),
            coalescer.submit(["ok"], [None]),
            return_exceptions=True,
        )

    failed, fine = asyncio.run(scenario())
    assert isinstance(failed, ValueError)
    assert fine[0][:, 0].tolist() == [2.0]
    assert model.calls == [2, 1]  # [boom a] failed; [b c] and [d] were never scored, [ok] was


def test_closing_fails_every_waiting_request_and_refuses_new_ones() -> None:
    async def scenario() -> tuple[list[object], float, object]:
        gate = asyncio.Event()  # never set: the model call in flight never returns by itself
        coalescer = Coalescer(FakeModel(gate), max_batch_size=2)
        pending = [asyncio.create_task(coalescer.submit([f"r{i}"] * 3, [None] * 3)) for i in range(4)]
        await asyncio.sleep(0.05)  # the first call is in flight, the rest queued
        started = asyncio.get_running_loop().time()
        coalescer.close()
        outcomes = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), timeout=2)
        elapsed = asyncio.get_running_loop().time() - started
        late = await asyncio.gather(coalescer.submit(["late"], [None]), return_exceptions=True)
        return outcomes, elapsed, late[0]

    outcomes, elapsed, late = asyncio.run(scenario())
    assert all(isinstance(outcome, CoalescerClosed) for outcome in outcomes), outcomes
    assert elapsed < 0.5  # settled at once, not when the hung call would have returned
    assert isinstance(late, CoalescerClosed)


def test_bad_input_is_refused_with_a_reason() -> None:
    coalescer = Coalescer(FakeModel(), max_batch_size=2)
    with pytest.raises(ValueError, match="1 texts and 2 summaries"):
        asyncio.run(coalescer.submit(["a"], [None, None]))
    with pytest.raises(ValueError, match="at least one"):
        asyncio.run(coalescer.submit([], []))
    with pytest.raises(ValueError, match="max_batch_size must be at least 1"):
        Coalescer(FakeModel(), max_batch_size=0)
