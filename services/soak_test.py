"""Soak: 50,000 single-review requests of real Kindle reviews at concurrency 32 against a real
`bentoml serve` of the Bento (default API worker count), from an asyncio client.

What must hold over the whole run:
- no errors: every request is a 200 with one label;
- latency is stable: p99 of the last 10% of the measured requests is at most 3x the p99
  of the first 10% plus 50 ms. Stable means "no trend": a leak, a growing queue or a
  window that costs more as it fills would make late requests slower than early ones.
  The tolerance is wide because the machine is shared; a real trend (O(n) work per
  request, a backlog) multiplies p99 many times over 45,000 requests;
- memory is flat: RSS of the server's process tree grows less than 5% over the second
  half of the measured requests. A leak grows it in both halves alike (this is as strict
  as 10% over the whole run); a worker that first takes a share of the traffic after the
  warm-up, or allocator arenas settling, grow it once, early, which is not a leak;
- the drift window is bounded: its merged row count and every worker's state file stay
  within `KINDLE_DRIFT_WINDOW_ROWS` (plus one slot, a tenth, which is the window's edge
  resolution, and a margin for one feed batch).

The first 5,000 requests are warm-up: they fill the drift window (5,000 rows by
default), so memory is compared between full-window states. One client session (the same
keep-alive connections) sends every request. The figures are printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator

import aiohttp
import numpy as np
import psutil
import pytest

from services.settings import ServiceSettings
from tests import fixtures
from tests.fixtures.servers import started
from tests.fixtures.service import Server, build_test_bento, metric_sum, scrape

TOTAL = 50_000
WARM_UP = 5_000
CONCURRENCY = 32
WINDOW_SHARE = 0.10
WINDOW_ROWS = ServiceSettings().drift_window_rows


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("kindle_soak")
    tag, home, _ = build_test_bento(work, fixtures.kindle_reviews().head(2500))
    with started(Server("soak", "http", tag, home, work, {}, api_workers=None)) as server:
        yield server


def tree_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants (the arbiter and its workers)."""
    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):  # a worker may exit between the two calls
            total += process.memory_info().rss
    return total


async def _drive(
    url: str,
    bodies: list[bytes],
    latencies: np.ndarray,
    errors: list[str],
    marks: dict[int, Callable[[], None]],
) -> None:
    """`len(latencies)` requests, CONCURRENCY at a time; request i's latency goes to
    latencies[i]; `marks[i]` runs when request i is sent."""
    next_index = 0
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal next_index
            while next_index < len(latencies):
                index = next_index
                next_index += 1
                if index in marks:
                    marks[index]()
                started = time.perf_counter()
                try:
                    async with session.post(
                        url, data=bodies[index % len(bodies)], headers={"content-type": "application/json"}
                    ) as reply:
                        text = await reply.text()
                        if reply.status != 200 or len(json.loads(text)["labels"]) != 1:
                            errors.append(f"{index}: {reply.status} {text[:200]}")
                except (TimeoutError, aiohttp.ClientError, ValueError, KeyError) as error:
                    errors.append(f"{index}: {type(error).__name__} {error}")
                latencies[index] = time.perf_counter() - started

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


def _p(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q) * 1000)


def test_soak_50k_requests(server: Server) -> None:
    reviews = fixtures.kindle_reviews()
    bodies = [
        json.dumps({"texts": [text], "summaries": [summary if isinstance(summary, str) else None]}).encode()
        for text, summary in zip(reviews["reviewText"], reviews["summary"], strict=True)
    ]
    url = f"{server.url}/predict"
    errors: list[str] = []

    measured = TOTAL - WARM_UP
    half = WARM_UP + measured // 2
    rss: dict[str, int] = {}
    times: dict[str, float] = {}

    def sample(name: str) -> Callable[[], None]:
        def record() -> None:
            rss[name], times[name] = tree_rss(server.process.pid), time.perf_counter()

        return record

    everything = np.zeros(TOTAL)
    asyncio.run(_drive(url, bodies, everything, errors, {WARM_UP: sample("warm"), half: sample("half")}))
    sample("end")()
    latencies = everything[WARM_UP:]
    seconds = times["end"] - times["warm"]
    rss_before, rss_half, rss_after = rss["warm"], rss["half"], rss["end"]

    edge = int(measured * WINDOW_SHARE)
    first, last = latencies[:edge], latencies[-edge:]
    p99_first, p99_last = _p(first, 99), _p(last, 99)
    growth, late_growth = rss_after / rss_before - 1, rss_after / rss_half - 1
    after = scrape(server)
    window_rows = metric_sum(after, "kindle_drift_window_rows")
    files = sorted((server.state_dir / "drift").glob("worker-*.json"))
    file_rows = [sum(slot["rows"] for slot in json.loads(path.read_text())["slots"]) for path in files]
    workers = len(psutil.Process(server.process.pid).children(recursive=True))
    print(
        f"soak: {TOTAL} requests ({WARM_UP} warm-up) at concurrency {CONCURRENCY}, {workers} server "
        f"child processes, errors {len(errors)}; measured {measured} in {seconds:.1f} s "
        f"({measured / seconds:.0f} req/s); "
        f"p50/p99 first 10% {_p(first, 50):.1f}/{p99_first:.1f} ms, "
        f"last 10% {_p(last, 50):.1f}/{p99_last:.1f} ms, "
        f"all {_p(latencies, 50):.1f}/{_p(latencies, 99):.1f} ms; "
        f"RSS {rss_before / 2**20:.0f} -> {rss_half / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB "
        f"({growth:+.1%} in all, {late_growth:+.1%} over the second half); "
        f"drift window {window_rows:.0f} rows (limit {WINDOW_ROWS}), worker files {file_rows}"
    )

    assert not errors, errors[:5]
    assert p99_last <= 3 * p99_first + 50, (p99_first, p99_last)
    assert late_growth < 0.05, (rss_before, rss_half, rss_after)
    bound = WINDOW_ROWS * 1.2
    assert 0 < window_rows <= bound, window_rows
    assert files and all(rows <= bound for rows in file_rows), file_rows
    assert metric_sum(after, "kindle_predictions_total") >= TOTAL  # multiprocess metrics: all workers
