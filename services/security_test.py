"""API key comparison and token buckets (the Redis bucket, against a real server: redis_limiter_test.py)."""

from __future__ import annotations

import asyncio

import pytest

from services.security import Guard, MemoryTokenBucket, key_matches, make_rate_limiter


def test_key_matches() -> None:
    assert key_matches(None, None) and key_matches(None, "anything")
    assert key_matches("s3cret", "s3cret")
    assert not key_matches("s3cret", "s3cret ") and not key_matches("s3cret", None)
    assert not key_matches("s3cret", "")


def test_bucket_bursts_then_refills() -> None:
    bucket = MemoryTokenBucket(rate_per_s=2.0, burst=3)
    assert [bucket.take("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take("a", now=0.0) == pytest.approx(0.5)
    assert bucket.take("b", now=0.0) == 0.0  # buckets are per client
    assert bucket.take("a", now=0.6) == 0.0  # refilled one token at 2/s


def test_bucket_forgets_oldest_clients() -> None:
    bucket = MemoryTokenBucket(rate_per_s=1.0, burst=1, max_clients=2)
    for client in ("a", "b", "c"):
        bucket.take(client, now=0.0)
    assert set(bucket._buckets) == {"b", "c"}


def test_guard_order_and_off_switch() -> None:
    assert make_rate_limiter(0, 10, None) is None
    guard = Guard("key", MemoryTokenBucket(rate_per_s=0.001, burst=1))
    admit = lambda key: asyncio.run(guard.admit(key, "client"))  # noqa: E731
    assert admit("wrong").status == 401  # a bad key costs no token
    assert admit("key") is None
    denial = admit("key")
    assert denial.status == 429 and denial.kind == "rate_limited" and denial.retry_after_s > 0
