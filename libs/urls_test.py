"""Credentials never survive redaction; harmless locations stay readable."""

import pytest

from libs.urls import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example.com/services/T000/B000/XXXXSECRET", "https://hooks.example.com"),
        ("http://user:p4ss@mlflow.internal:5000/api?token=abc", "http://mlflow.internal:5000"),
        ("https://example.com/hook?token=SECRET#frag", "https://example.com"),
        ("sqlite:////tmp/runs/mlflow.db", "sqlite:////tmp/runs/mlflow.db"),
        ("/data/runs", "/data/runs"),
        ("postgresql://admin:SECRET@db:5432/mlflow", "postgresql://db:5432"),
        ("file:///x?key=SECRET", "file:///x"),
        ("sqlite:///file:/runs/mlflow.db?mode=ro&uri=true", "sqlite:///file:/runs/mlflow.db"),
    ],
)
def test_redacted_urls_keep_scheme_and_host_only(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    for secret in ("SECRET", "p4ss", "token=abc"):
        assert secret not in redact_url(url)
