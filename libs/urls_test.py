"""URLs lose credentials, tokens, paths and queries; the text around them is kept."""

from __future__ import annotations

import json

import pytest

from libs.urls import redact_url, redact_urls


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://hooks.slack.com/services/T000/B000/XXXXSECRET", "https://hooks.slack.com"),
        ("http://127.0.0.1:8080/drift?token=SECRET#frag", "http://127.0.0.1:8080"),
        ("http://kindle:SECRET@mlflow.internal:5000/api/2.0/mlflow", "http://mlflow.internal:5000"),
        ("https://user:SECRET@[::1]:443", "https://[::1]:443"),
        ("postgresql://mlflow:SECRET@db/mlflow", "postgresql://db"),
        ("redis://:SECRET@cache:6379/0", "redis://cache:6379"),
        ("sqlite:////tmp/store/mlflow.db", "sqlite:////tmp/store/mlflow.db"),
        ("sqlite:///file:/tmp/mlflow.db?mode=ro&uri=true", "sqlite:///file:/tmp/mlflow.db"),
        ("file:///srv/bundles/a", "file:///srv/bundles/a"),
        ("user:SECRET@cache:6379/0", "cache:6379"),
        ("/data/runs", "/data/runs"),
        ("file:///x?key=SECRET", "file:///x"),
    ],
)
def test_redact_url(url: str, kept: str) -> None:
    assert redact_url(url) == kept
    assert "SECRET" not in redact_url(url) and "token" not in redact_url(url)


def test_every_url_in_a_line_is_cut_and_the_rest_kept() -> None:
    line = "drift webhook https://hooks.example/T/B/SECRET failed; store http://u:SECRET@h:5000/api, ok"
    assert redact_urls(line) == "drift webhook https://hooks.example failed; store http://h:5000, ok"
    assert redact_urls("no url here: a/b?c") == "no url here: a/b?c"


def test_a_json_line_stays_valid_json() -> None:
    entry = {"msg": 'posting to "https://hooks.example/x/SECRET?t=1"', "url": "http://a:SECRET@b/c"}
    redacted = json.loads(redact_urls(json.dumps(entry)))
    assert redacted == {"msg": 'posting to "https://hooks.example"', "url": "http://b"}
