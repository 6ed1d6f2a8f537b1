"""Who may call the service and how often: API key check and per-client rate limiting.

The policy lives here, free of any protocol; `transport.py` applies it to HTTP requests
and gRPC calls alike, before a payload is parsed, so refused traffic costs next to nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from libs.urls import redact_url

logger = logging.getLogger("kindle.security")

API_KEY_HEADER = "x-api-key"


@dataclass(frozen=True)
class Denial:
    """Why a call is refused: `status` is the HTTP code, `kind` the metric label."""

    status: int
    kind: str
    message: str
    retry_after_s: float = 0.0


UNAUTHENTICATED = Denial(
    401, "unauthenticated", f"missing or invalid API key (send it in '{API_KEY_HEADER}')"
)


def key_matches(expected: str | None, presented: str | None) -> bool:
    """Constant-time comparison (of digests, so the key's length does not leak either)."""
    if expected is None:
        return True
    if presented is None:
        return False
    return hmac.compare_digest(
        hashlib.sha256(expected.encode()).digest(), hashlib.sha256(presented.encode()).digest()
    )


class RateLimiter(Protocol):
    async def acquire(self, client: str) -> float:
        """0.0 when the call may proceed, else the seconds until a token is available."""
        ...


class MemoryTokenBucket:
    """One token bucket per client in this process (bounded LRU of clients).

    With several API workers each keeps its own buckets, so the effective limit is
    workers x rate; set REDIS_URL for one shared limit.
    """

    def __init__(self, rate_per_s: float, burst: int, max_clients: int = 100_000) -> None:
        self.rate = rate_per_s
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, client: str, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[client] = (tokens, now)
            if len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            return wait

    async def acquire(self, client: str) -> float:
        return self.take(client)


# Atomic token bucket in Redis; the server's clock is the only clock, so API replicas agree.
_REDIS_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


class RedisTokenBucket:
    """The same bucket shared by every worker and replica through Redis.

    Fail-open: if Redis does not answer, the call is let through, since losing the limiter
    must not take the service down with it. What that costs a request is bounded: one
    attempt (no retries, pinned: redis-py's `Redis()` constructor would retry 10 times
    with backoff), `timeout_s` to answer and as long again to close the broken connection;
    after a failure Redis is left alone for `retry_after_s`, and calls meanwhile pass at
    once, so while Redis hangs most calls pay nothing instead of every call paying the
    timeout. Every call let through without a decision is counted in
    kindle_rate_limiter_errors_total; the outage is logged once when it starts and once
    when Redis answers again, not once per call. Each worker names its connection
    (`CLIENT LIST` shows kindle-<host>-<pid>).
    """

    def __init__(
        self,
        url: str,
        rate_per_s: float,
        burst: int,
        prefix: str = "kindle:ratelimit:",
        timeout_s: float = 0.25,
        retry_after_s: float = 1.0,
    ) -> None:
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self._client = redis.asyncio.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            client_name=f"kindle-{socket.gethostname()}-{os.getpid()}",
        )
        self._script = self._client.register_script(_REDIS_BUCKET)
        self.rate, self.burst, self.prefix = rate_per_s, burst, prefix
        self.where = redact_url(url)
        self.retry_after_s = retry_after_s
        self._down_until: float | None = None  # set while Redis is considered unavailable

    async def acquire(self, client: str) -> float:
        if self._down_until is not None and time.monotonic() < self._down_until:
            return self._let_through()
        try:
            wait = await self._script(keys=[self.prefix + client], args=[self.rate, self.burst])
        except Exception as error:
            if self._down_until is None:
                logger.warning(
                    "rate limiter unavailable (Redis at %s), letting calls through: %s: %s",
                    self.where,
                    type(error).__name__,
                    error,
                )
            self._down_until = time.monotonic() + self.retry_after_s
            return self._let_through()
        if self._down_until is not None:
            logger.info("rate limiter available again (Redis at %s)", self.where)
            self._down_until = None
        return float(wait)

    @staticmethod
    def _let_through() -> float:
        from services.metrics import get_metrics  # in the worker, after BentoML's metrics setup

        get_metrics().rate_limiter_errors.inc()
        return 0.0


def make_rate_limiter(rate_per_s: float, burst: int, redis_url: str | None) -> RateLimiter | None:
    """None when rate limiting is off (rate 0)."""
    if rate_per_s <= 0:
        return None
    if redis_url:
        return RedisTokenBucket(redis_url, rate_per_s, burst)
    return MemoryTokenBucket(rate_per_s, burst)


class Capacity:
    """At most `limit` calls admitted at once in this worker (one event loop: no lock).

    Past the limit a call is refused at once (503 / UNAVAILABLE, with a Retry-After) instead
    of queueing: every admitted call holds its body, its parsed reviews and its place in the
    model's queue, so an unbounded number of them grows memory and latency until the
    worker is killed; a refused one costs the client a retry and the worker nothing.
    """

    def __init__(self, limit: int, retry_after_s: float = 1.0) -> None:
        if limit < 1:
            raise ValueError(f"the in-flight limit must be at least 1, got {limit}")
        self.limit = limit
        self.in_flight = 0
        self.busy = Denial(
            503, "overloaded", f"server busy: {limit} requests in flight in this worker", retry_after_s
        )

    def full(self) -> Denial | None:
        """The refusal a call arriving now gets, without taking a place."""
        return self.busy if self.in_flight >= self.limit else None

    def take(self) -> Denial | None:
        """Takes a place (give it back with `release`), or says why there is none."""
        if self.in_flight >= self.limit:
            return self.busy
        self.in_flight += 1
        return None

    def release(self) -> None:
        self.in_flight -= 1


class Guard:
    """The admission check both protocols run: API key first, then the client's bucket; and
    the worker's capacity of `max_in_flight` calls, whose place a call takes once admitted."""

    def __init__(
        self, api_key: str | None, limiter: RateLimiter | None, max_in_flight: int = 2**31 - 1
    ) -> None:
        self.api_key = api_key
        self.limiter = limiter
        self.capacity = Capacity(max_in_flight)

    def authenticate(self, presented_key: str | None) -> Denial | None:
        """The key check alone: gRPC runs it from the call's metadata, before the message is read."""
        return None if key_matches(self.api_key, presented_key) else UNAUTHENTICATED

    async def admit(self, presented_key: str | None, client: str) -> Denial | None:
        return self.authenticate(presented_key) or await self.limit(client)

    async def limit(self, client: str) -> Denial | None:
        """The client's token bucket (a token is taken when there is one)."""
        if self.limiter is not None:
            wait = await self.limiter.acquire(client)
            if wait > 0:
                return Denial(
                    429, "rate_limited", f"rate limit exceeded for {client}; retry in {wait:.2f}s", wait
                )
        return None
