"""HttpGate in process with a stub ASGI app: readiness, admission, limits, request ids."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from services.champion import ModelState
from services.security import Guard, MemoryTokenBucket
from services.transport import HttpGate, _peer_host


class StubApp:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        self.calls += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def request(gate: HttpGate, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "path": path,
        "client": ("10.0.0.1", 1234),
        "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    asyncio.run(gate(scope, receive, send))
    start, body = sent[0], sent[-1].get("body", b"")
    response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], response_headers, json.loads(body) if body else {}


def make_gate(ready: bool = True, key: str | None = None, limiter: Any = None) -> tuple[HttpGate, StubApp]:
    state = ModelState()
    if ready:
        state.bundle, state.error = object(), None  # type: ignore[assignment]
    else:
        state.error = "BundleError: manifest.json missing"
    app = StubApp()
    return HttpGate(app, Guard(key, limiter), state, max_body_bytes=1000), app


def test_readyz_says_why_until_ready() -> None:
    gate, app = make_gate(ready=False)
    status, _, body = request(gate, "/readyz")
    assert status == 503 and body == {"ready": False, "reason": "BundleError: manifest.json missing"}
    status, _, body = request(gate, "/predict")
    assert status == 503 and "manifest.json missing" in body["error"] and app.calls == 0
    assert request(gate, "/metadata")[0] == 200  # metadata explains the state
    ready_gate, _ = make_gate(ready=True)
    assert request(ready_gate, "/readyz")[0] == 200


def test_api_key_and_request_id() -> None:
    gate, app = make_gate(key="k")
    status, headers, body = request(gate, "/predict", {"x-request-id": "abc-1"})
    assert status == 401 and body["kind"] == "unauthenticated" and headers["x-request-id"] == "abc-1"
    assert "retry-after" not in headers
    status, headers, _ = request(gate, "/predict", {"x-api-key": "k"})
    assert status == 200 and len(headers["x-request-id"]) == 32 and app.calls == 1
    assert request(gate, "/livez")[0] == 200  # probes and /metrics need no key


def test_rate_limit_and_body_limit() -> None:
    gate, _ = make_gate(limiter=MemoryTokenBucket(rate_per_s=0.5, burst=1))
    assert request(gate, "/predict")[0] == 200
    status, headers, body = request(gate, "/predict")
    assert status == 429 and body["kind"] == "rate_limited" and int(headers["retry-after"]) >= 1
    gate, _ = make_gate()
    assert request(gate, "/predict", {"content-length": "5000"})[0] == 413
    assert request(gate, "/predict", {"content-length": "abc"})[0] == 400


def test_a_grpc_peer_is_named_as_http_names_the_client() -> None:
    """One client, one rate-limit bucket, whichever protocol it calls over."""
    assert _peer_host("ipv4:127.0.0.1:50412") == "127.0.0.1"
    assert _peer_host("ipv6:[::1]:50412") == _peer_host("ipv6:%5B::1%5D:50412") == "::1"
    assert _peer_host("unix:/run/kindle.sock") == "unix:/run/kindle.sock"
