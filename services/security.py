"""Who may call the service and how often: credentials, client addresses and rate limits.

The policy lives here, free of any protocol; `transport.py` applies it to HTTP requests
and gRPC calls alike, before a payload is parsed, so refused traffic costs next to nothing.

Two credentials: the API key (`KINDLE_API_KEY`) opens every API but `feedback`; feedback
keys (`KINDLE_FEEDBACK_KEYS`, one per client, `client=key` pairs) open `feedback` only,
and the client's name is recorded with its ratings. Without a feedback key, feedback is
off. A caller's token bucket is its key's when a key names it (a feedback client, or the
one API key), else its address; the address is the TCP peer's, or, when that peer is a
trusted proxy (`KINDLE_TRUSTED_PROXIES`), the one X-Forwarded-For names. Tokens count
reviews: one is taken before the body is read, the rest once the review count is known.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from libs.urls import redact_url

logger = logging.getLogger("kindle.security")

API_KEY_HEADER = "x-api-key"
FORWARDED_FOR_HEADER = "x-forwarded-for"
FEEDBACK_API = "feedback"
"""The API only feedback keys open (and the API key does not)."""
API_KEY_BUCKET = "api-key"
"""The one token bucket of every caller presenting the API key."""


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
FEEDBACK_UNAUTHENTICATED = Denial(
    401,
    "unauthenticated",
    f"missing or invalid feedback key (send it in '{API_KEY_HEADER}'; the API key does not open feedback)",
)
FEEDBACK_OFF = Denial(
    403, "feedback_off", "feedback is off: no feedback key is configured (set KINDLE_FEEDBACK_KEYS)"
)


@dataclass(frozen=True)
class Caller:
    """Who a call comes from, as far as admission knows: `client`, the name its feedback key is
    configured under (None for the API key and for callers without a key), and `bucket`, the
    token bucket its reviews are counted in (the client's, the API key's, or its address)."""

    bucket: str
    client: str | None = None

    def __str__(self) -> str:
        if self.client is not None:
            return f"client {self.client!r}"
        return "the API key" if self.bucket == API_KEY_BUCKET else self.bucket


def key_matches(expected: str | None, presented: str | None) -> bool:
    """Constant-time comparison (of digests, so the key's length does not leak either)."""
    if expected is None:
        return True
    if presented is None:
        return False
    return hmac.compare_digest(
        hashlib.sha256(expected.encode()).digest(), hashlib.sha256(presented.encode()).digest()
    )


class KeyRing:
    """The feedback keys: client name by key, from `client=key,client=key` (KINDLE_FEEDBACK_KEYS).

    Parsing refuses what would make a key ambiguous: an empty name or key, a pair without
    '=', a client named twice, a key given to two clients; messages name the client, never
    a key. `identify` compares the presented key with every configured key in constant
    time (all are compared, whichever matches)."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._pairs: list[tuple[str, bytes]] = []
        names: set[str] = set()
        owners: dict[bytes, str] = {}
        for client, key in pairs:
            if not client:
                raise ValueError("a feedback key has an empty client name (write client=key)")
            if not key:
                raise ValueError(f"feedback client {client!r} has an empty key")
            if client in names:
                raise ValueError(f"feedback client {client!r} is named twice")
            digest = hashlib.sha256(key.encode()).digest()
            if digest in owners:
                raise ValueError(f"feedback clients {owners[digest]!r} and {client!r} have the same key")
            names.add(client)
            owners[digest] = client
            self._pairs.append((client, digest))

    @classmethod
    def parse(cls, text: str | None) -> KeyRing:
        """`client=key` pairs separated by commas; None or blank: no key (feedback off)."""
        pairs = []
        for position, item in enumerate((text or "").split(",")):
            item = item.strip()
            if not item:
                continue
            client, equals, key = item.partition("=")
            if not equals:
                raise ValueError(
                    f"feedback key #{position + 1} has no '=' (KINDLE_FEEDBACK_KEYS is client=key,client=key)"
                )
            pairs.append((client.strip(), key.strip()))
        return cls(pairs)

    @property
    def clients(self) -> list[str]:
        return [client for client, _ in self._pairs]

    def __bool__(self) -> bool:
        return bool(self._pairs)

    def __contains__(self, key: str) -> bool:
        """Whether `key` is one of the configured keys (for cross-checks at load)."""
        return self.identify(key) is not None

    def identify(self, presented: str | None) -> str | None:
        """The client the presented key belongs to, or None."""
        if presented is None:
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for client, expected in self._pairs:
            if hmac.compare_digest(expected, digest) and found is None:
                found = client
        return found


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # '::ffff:10.0.0.1' is 10.0.0.1
    return address


class TrustedProxies:
    """The proxies whose X-Forwarded-For is believed (KINDLE_TRUSTED_PROXIES: IPs or CIDRs).

    A caller's address is its TCP peer's, unless that peer is a trusted proxy: then it is
    the rightmost X-Forwarded-For address that is not itself a trusted proxy (each proxy
    appends the address it received the call from, so only the entries right of the
    nearest untrusted one were written by proxies; what a client puts in the header
    itself lies left of it). Without trusted proxies the header is ignored."""

    def __init__(self, networks: Iterable[Network] = ()) -> None:
        self.networks = tuple(networks)

    @classmethod
    def parse(cls, text: str | None) -> TrustedProxies:
        networks = []
        for item in (text or "").split(","):
            item = item.strip()
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"trusted proxy {item!r} is not an IP address or CIDR network") from None
        return cls(networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: Address | None) -> bool:
        return address is not None and any(address in network for network in self.networks)

    def client_address(self, peer: str, forwarded_for: Iterable[str] = ()) -> str:
        """The caller's address, from the TCP `peer` and the X-Forwarded-For values (in the
        order they arrived; several headers count as one list)."""
        nearest = _address(peer)
        if not self.trusts(nearest):
            return peer
        hops = [hop for value in forwarded_for for hop in value.split(",")]
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:  # not an address: the proxy before it is the last one known
                break
            nearest = address
            if not self.trusts(address):
                break
        return str(nearest)


class RateLimiter(Protocol):
    @property
    def burst(self) -> float:
        """The bucket's size: the most tokens one acquisition can ever get."""
        ...

    async def acquire(self, client: str, cost: float = 1.0) -> float:
        """0.0 when `cost` tokens were taken, else the seconds until there are that many
        (nothing is taken then)."""
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

    def take(self, client: str, now: float | None = None, cost: float = 1.0) -> float:
        now = time.monotonic() if now is None else now
        cost = min(cost, self.burst)
        with self._lock:
            tokens, last = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            wait = 0.0
            if tokens >= cost:
                tokens -= cost
            else:
                wait = (cost - tokens) / self.rate
            self._buckets[client] = (tokens, now)
            if len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            return wait

    async def acquire(self, client: str, cost: float = 1.0) -> float:
        return self.take(client, cost=cost)


# Atomic token bucket in Redis; the server's clock is the only clock, so API replicas agree.
_REDIS_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = math.min(tonumber(ARGV[3]), burst)
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= cost then tokens = tokens - cost else wait = (cost - tokens) / rate end
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

    async def acquire(self, client: str, cost: float = 1.0) -> float:
        if self._down_until is not None and time.monotonic() < self._down_until:
            return self._let_through()
        try:
            wait = await self._script(keys=[self.prefix + client], args=[self.rate, self.burst, cost])
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
    """The admission check both protocols run: the caller's credential for the API it calls,
    then its bucket; and the worker's capacity of `max_in_flight` calls, whose place a call
    takes once admitted. `api_key`: None leaves every API but feedback open; `feedback_keys`:
    none turns feedback off."""

    def __init__(
        self,
        api_key: str | None,
        limiter: RateLimiter | None,
        max_in_flight: int = 2**31 - 1,
        feedback_keys: KeyRing | None = None,
    ) -> None:
        self.api_key = api_key
        self.feedback_keys = feedback_keys or KeyRing()
        self.limiter = limiter
        self.capacity = Capacity(max_in_flight)

    def authenticate(self, api: str, presented_key: str | None, address: str) -> Caller | Denial:
        """Who calls `api` with this key from this address, or why it may not."""
        if api == FEEDBACK_API:
            if not self.feedback_keys:
                return FEEDBACK_OFF
            client = self.feedback_keys.identify(presented_key)
            return FEEDBACK_UNAUTHENTICATED if client is None else Caller(f"key:{client}", client)
        if self.api_key is None:
            return Caller(address)
        if presented_key is not None and key_matches(self.api_key, presented_key):
            return Caller(API_KEY_BUCKET)
        return UNAUTHENTICATED

    def authenticate_any(self, presented_key: str | None) -> Denial | None:
        """Before the API is known (gRPC, from the call's metadata, before the message is read):
        refused unless the key opens some API, or an API is open to all (no API key)."""
        if self.api_key is None or key_matches(self.api_key, presented_key):
            return None
        if self.feedback_keys.identify(presented_key) is not None:
            return None
        return UNAUTHENTICATED

    async def admit(self, api: str, presented_key: str | None, address: str) -> Caller | Denial:
        """The credential, then a first token (the call's first review)."""
        caller = self.authenticate(api, presented_key, address)
        if isinstance(caller, Denial):
            return caller
        return await self.limit(caller) or caller

    async def limit(self, caller: Caller, cost: float = 1.0) -> Denial | None:
        """The caller's token bucket (`cost` tokens are taken when there are as many)."""
        if self.limiter is not None:
            wait = await self.limiter.acquire(caller.bucket, cost)
            if wait > 0:
                return Denial(
                    429, "rate_limited", f"rate limit exceeded for {caller}; retry in {wait:.2f}s", wait
                )
        return None

    async def charge(self, caller: Caller, reviews: int) -> Denial | None:
        """The rest of a call of `reviews` reviews, its first one taken at admission: n - 1
        tokens, at most the bucket's size - 1, so that a call of any size can pass."""
        if self.limiter is None:
            return None
        cost = min(reviews - 1, int(self.limiter.burst) - 1)
        if cost <= 0:
            return None
        denial = await self.limit(caller, cost)
        if denial is None:
            return None
        return Denial(
            denial.status,
            denial.kind,
            f"rate limit exceeded for {caller}: {reviews} reviews need {cost} more tokens "
            f"than the first; retry in {denial.retry_after_s:.2f}s",
            denial.retry_after_s,
        )
