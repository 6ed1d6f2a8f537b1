"""Printable forms of URLs that may carry credentials.

Webhook URLs often embed a token in their path or query, and tracking URIs a user and
password; logs and error messages show where something was sent, never how to get in.
"""

from __future__ import annotations

from urllib.parse import urlsplit


def redact_url(url: object) -> str:
    """`scheme://host[:port]` of a URL: no user, password, path, query or fragment.

    A value that is not a URL with a host (a file path, `sqlite:///...`) keeps its scheme
    and path, which name a local file and no secret; its query is dropped.
    """
    text = str(url)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    if not parts.scheme:
        return text if "@" not in text else "<redacted>"
    if not parts.hostname:
        return f"{parts.scheme}://{parts.path}" if "@" not in parts.path else f"{parts.scheme}:<redacted>"
    host = parts.hostname + (f":{port}" if port else "")
    return f"{parts.scheme}://{host}"
