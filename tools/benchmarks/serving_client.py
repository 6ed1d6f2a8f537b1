"""Python asyncio load client of the serving benchmark, run in its own process.

The same client shape for both protocols, so gRPC and HTTP compare like for like:
`concurrency` coroutines each send one request, wait for its answer and send the next,
for `seconds` (after `warmup` seconds that are not counted). HTTP goes through aiohttp
with one keep-alive connection per coroutine; gRPC through `grpc.aio` with one channel
(one HTTP/2 connection) per coroutine, so both spread over all API workers alike. Both
send the same pre-encoded JSON bodies (gRPC as `serialized_bytes`).

    python -m tools.benchmarks.serving_client {http,grpc} PORT BODIES --concurrency 1,16,64 --seconds 10

Per concurrency, prints one JSON line when the measured phase starts (so a caller can meter
the server over exactly that phase) and one with requests, errors, duration and latency
percentiles when it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

Send = Callable[[bytes], Awaitable[bool]]  # True: a successful answer


async def _http_senders(port: int, count: int) -> tuple[list[Send], Callable[[], Awaitable[None]]]:
    import aiohttp

    url = f"http://127.0.0.1:{port}/predict"
    timeout = aiohttp.ClientTimeout(total=30)
    sessions = [
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), timeout=timeout) for _ in range(count)
    ]
    headers = {"content-type": "application/json"}

    def sender(session: aiohttp.ClientSession) -> Send:
        async def send(body: bytes) -> bool:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                return 200 <= response.status < 300

        return send

    async def close() -> None:
        await asyncio.gather(*(session.close() for session in sessions))

    return [sender(session) for session in sessions], close


async def _grpc_senders(port: int, count: int) -> tuple[list[Send], Callable[[], Awaitable[None]]]:
    import grpc
    from bentoml.grpc.v1 import service_pb2 as pb
    from bentoml.grpc.v1 import service_pb2_grpc as services

    # A local subchannel pool per channel: each channel gets its own connection, as each
    # HTTP coroutine does, instead of all channels sharing one.
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_send_message_length", 64 * 2**20)]
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) for _ in range(count)]

    def sender(channel: grpc.aio.Channel) -> Send:
        call = services.BentoServiceStub(channel).Call

        async def send(body: bytes) -> bool:
            try:
                await call(pb.Request(api_name="predict", serialized_bytes=body), timeout=30)
            except grpc.RpcError:
                return False
            return True

        return send

    async def close() -> None:
        await asyncio.gather(*(channel.close() for channel in channels))

    return [sender(channel) for channel in channels], close


async def _load(senders: list[Send], bodies: list[bytes], seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(index: int, send: Send) -> None:
        nonlocal errors
        position = index * 7919
        while time.perf_counter() < deadline:
            body = bodies[position % len(bodies)]
            position += 1
            started = time.perf_counter()
            try:
                ok = await send(body)
            except Exception:
                ok = False
            latencies.append(time.perf_counter() - started)
            errors += not ok

    started = time.perf_counter()
    await asyncio.gather(*(worker(i, send) for i, send in enumerate(senders)))
    duration = time.perf_counter() - started
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) if latencies else (0.0, 0.0, 0.0)
    return {
        "requests": len(latencies),
        "errors": errors,
        "duration_s": duration,
        "p50_s": float(p50),
        "p95_s": float(p95),
        "p99_s": float(p99),
    }


async def _main(args: argparse.Namespace) -> None:
    bodies = [line.encode() for line in Path(args.bodies).read_text().splitlines() if line]
    make = _http_senders if args.protocol == "http" else _grpc_senders
    for concurrency in args.concurrency:
        senders, close = await make(args.port, concurrency)
        try:
            await _load(senders, bodies, args.warmup)
            print(json.dumps({"phase": "start", "concurrency": concurrency}), flush=True)
            result = await _load(senders, bodies, args.seconds)
            print(json.dumps({"concurrency": concurrency, **result}), flush=True)
        finally:
            await close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("protocol", choices=["http", "grpc"])
    parser.add_argument("port", type=int)
    parser.add_argument("bodies", type=Path, help="pre-encoded JSON request bodies, one per line")
    parser.add_argument("--concurrency", type=lambda s: [int(c) for c in s.split(",")], default=[1, 16, 64])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
