"""Credentials, token buckets and client addresses (the Redis bucket, against a real server:
redis_limiter_test.py)."""

from __future__ import annotations

import asyncio
import re

import pytest

from services.security import (
    API_KEY_BUCKET,
    Caller,
    Denial,
    Guard,
    KeyRing,
    MemoryTokenBucket,
    TrustedProxies,
    key_matches,
    make_rate_limiter,
)


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


def test_a_bucket_takes_a_cost_whole_or_not_at_all() -> None:
    bucket = MemoryTokenBucket(rate_per_s=1.0, burst=10)
    assert bucket.take("a", now=0.0, cost=7) == 0.0  # 3 left
    assert bucket.take("a", now=0.0, cost=5) == pytest.approx(2.0)  # 2 short at 1/s; nothing taken
    assert bucket.take("a", now=0.0, cost=3) == 0.0  # so the 3 are still there
    assert bucket.take("a", now=0.0, cost=1) == pytest.approx(1.0)
    assert bucket.take("b", now=0.0, cost=50) == 0.0  # a cost over the bucket's size is its size
    assert bucket.take("b", now=0.0) == pytest.approx(1.0)


def test_key_ring_parses_client_key_pairs() -> None:
    ring = KeyRing.parse(" acme = k-1 ,, shop=k=2 ")
    assert ring.clients == ["acme", "shop"]
    assert ring.identify("k-1") == "acme" and ring.identify("k=2") == "shop"  # split at the first '='
    assert ring.identify("k-1 ") is None and ring.identify("") is None and ring.identify(None) is None
    assert "k-1" in ring and "acme" not in ring
    assert not KeyRing.parse(None) and not KeyRing.parse(" , ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("acme=k1,shop", "feedback key #2 has no '='"),
        ("=k1", "empty client name"),
        ("acme=", "'acme' has an empty key"),
        ("acme=k1,acme=k2", "'acme' is named twice"),
        ("acme=k1,shop=k1", "'acme' and 'shop' have the same key"),
    ],
)
def test_key_ring_refuses_ambiguous_keys_without_naming_them(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        KeyRing.parse(text)
    assert "k1" not in str(error.value) and "k2" not in str(error.value)


def test_forwarded_for_is_believed_from_trusted_proxies_only() -> None:
    proxies = TrustedProxies.parse("10.0.0.0/8, 192.168.1.5, ::1")
    assert proxies.client_address("203.0.113.9", ["198.51.100.1"]) == "203.0.113.9"  # untrusted peer
    assert proxies.client_address("10.1.2.3", ["198.51.100.1"]) == "198.51.100.1"
    # The rightmost address that is not a proxy: what the client wrote itself lies left of it.
    assert proxies.client_address("10.1.2.3", ["6.6.6.6, 198.51.100.1, 192.168.1.5"]) == "198.51.100.1"
    assert proxies.client_address("10.1.2.3", ["6.6.6.6", "198.51.100.1, 10.9.9.9"]) == "198.51.100.1"
    assert proxies.client_address("::1", ["2001:db8::7"]) == "2001:db8::7"
    assert proxies.client_address("10.1.2.3", []) == "10.1.2.3"  # no header: the proxy itself
    assert proxies.client_address("10.1.2.3", ["10.4.4.4"]) == "10.4.4.4"  # only proxies: the farthest
    assert proxies.client_address("10.1.2.3", ["junk, 10.4.4.4"]) == "10.4.4.4"  # not an address: stop
    assert proxies.client_address("10.1.2.3", ["1.2.3.4, junk"]) == "10.1.2.3"
    assert proxies.client_address("::ffff:10.1.2.3", ["198.51.100.1"]) == "198.51.100.1"
    assert proxies.client_address("unix:/run/kindle.sock", ["198.51.100.1"]) == "unix:/run/kindle.sock"
    untrusting = TrustedProxies.parse(None)
    assert untrusting.client_address("127.0.0.1", ["198.51.100.1"]) == "127.0.0.1"
    with pytest.raises(ValueError, match=re.escape("'10.0.0.300' is not an IP address or CIDR")):
        TrustedProxies.parse("10.0.0.1,10.0.0.300")


def test_guard_order_and_off_switch() -> None:
    assert make_rate_limiter(0, 10, None) is None
    guard = Guard("key", MemoryTokenBucket(rate_per_s=0.001, burst=1))
    admit = lambda key: asyncio.run(guard.admit("predict", key, "10.0.0.1"))  # noqa: E731
    assert admit("wrong").status == 401  # a bad key costs no token
    assert admit("key") == Caller(API_KEY_BUCKET)
    denial = admit("key")
    assert denial.status == 429 and denial.kind == "rate_limited" and denial.retry_after_s > 0
    assert "for the API key" in denial.message


def test_each_credential_opens_its_own_apis() -> None:
    ring = KeyRing.parse("acme=fk")
    keyed = Guard("key", None, feedback_keys=ring)
    authenticate = keyed.authenticate
    assert authenticate("feedback", "fk", "10.0.0.1") == Caller("key:acme", "acme")
    assert authenticate("feedback", "key", "10.0.0.1").kind == "unauthenticated"  # the API key: no
    assert "feedback key" in authenticate("feedback", None, "10.0.0.1").message
    assert authenticate("predict", "fk", "10.0.0.1").kind == "unauthenticated"  # a feedback key: no
    assert authenticate("predict", "key", "10.0.0.1") == Caller(API_KEY_BUCKET)
    # Before the API is known (gRPC's check from metadata): a key that opens some API.
    assert keyed.authenticate_any("fk") is None and keyed.authenticate_any("key") is None
    assert keyed.authenticate_any("nope").status == 401 and keyed.authenticate_any(None).status == 401

    open_guard = Guard(None, None, feedback_keys=ring)
    assert open_guard.authenticate("predict", None, "10.0.0.1") == Caller("10.0.0.1")  # by address
    assert open_guard.authenticate("predict", "fk", "10.0.0.1") == Caller("10.0.0.1")
    assert open_guard.authenticate_any(None) is None

    off = Guard("key", None).authenticate("feedback", "key", "10.0.0.1")
    assert isinstance(off, Denial) and (off.status, off.kind) == (403, "feedback_off")
    assert "KINDLE_FEEDBACK_KEYS" in off.message
    assert Guard(None, None).authenticate("feedback", None, "10.0.0.1") == off  # never open
    assert Guard("key", None).authenticate_any("fk") is not None


def test_a_call_pays_one_token_per_review() -> None:
    guard = Guard(None, MemoryTokenBucket(rate_per_s=0.001, burst=10))
    caller = Caller("10.0.0.1")

    async def call(reviews: int) -> Denial | None:
        admitted = await guard.admit("predict", None, caller.bucket)
        return admitted if isinstance(admitted, Denial) else await guard.charge(caller, reviews)

    assert asyncio.run(call(10)) is None  # 1 at admission, 9 once counted: the bucket is empty
    refused = asyncio.run(call(1))
    assert refused is not None and refused.status == 429 and "10.0.0.1" in refused.message
    big = Guard(None, MemoryTokenBucket(rate_per_s=0.001, burst=10))
    assert asyncio.run(big.charge(Caller("a"), 1000)) is None  # capped at the bucket: 9 after the first
    assert asyncio.run(big.charge(Caller("a"), 3)) is not None  # 1 token left, 2 needed
    short = Guard(None, MemoryTokenBucket(rate_per_s=0.001, burst=10))
    assert asyncio.run(short.charge(Caller("b"), 6)) is None  # 5 taken, 5 left
    denial = asyncio.run(short.charge(Caller("b"), 7))  # 6 more needed
    assert denial is not None and "7 reviews need 6 more tokens" in denial.message
    assert denial.retry_after_s > 0


def test_settings_refuse_bad_credentials_and_proxies_at_load_without_quoting_them() -> None:
    from pydantic import ValidationError

    from services.settings import ServiceSettings

    for options, message in (
        ({"feedback_keys": "acme=s3cret-1,shop"}, "feedback key #2 has no '='"),
        ({"feedback_keys": "acme=s3cret-1,shop=s3cret-1"}, "'acme' and 'shop' have the same key"),
        ({"feedback_keys": "=s3cret-1"}, "empty client name"),
        ({"feedback_keys": "acme=s3cret-1", "api_key": "s3cret-1"}, "same as KINDLE_API_KEY"),
        ({"trusted_proxies": "10.0.0.0/8,proxy.local"}, "'proxy.local' is not an IP address or CIDR"),
    ):
        with pytest.raises(ValidationError, match=message) as error:
            ServiceSettings(**options)  # type: ignore[arg-type]
        assert "s3cret" not in str(error.value)
    loaded = ServiceSettings(feedback_keys="acme=s3cret-1", trusted_proxies="10.0.0.0/8")  # type: ignore[arg-type]
    assert loaded.rate_limit_burst == loaded.max_items == 1000
    assert KeyRing.parse(loaded.feedback_keys.get_secret_value()).clients == ["acme"]  # type: ignore[union-attr]
