"""Queries to a running Prometheus server's HTTP API, for tests that check what it scraped."""

from __future__ import annotations

import time
from typing import Any

import requests


def query(url: str, expr: str) -> list[dict[str, Any]]:
    """The instant vector `expr` evaluates to now on the Prometheus at `url`."""
    reply = requests.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    assert reply.status_code == 200, (expr, reply.text)
    return reply.json()["data"]["result"]


def wait_for(url: str, expr: str, timeout_s: float = 60) -> list[dict[str, Any]]:
    """The first non-empty result of `expr` (scrapes and rule evaluations take their time)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            result = query(url, expr)
        except requests.RequestException:
            result = []
        if result:
            return result
        time.sleep(0.5)
    raise TimeoutError(f"no result for {expr} after {timeout_s}s")
