"""Printable forms of URLs that may carry credentials: cut down to scheme and host before
they reach a log line, an error message or a client.

Webhook URLs carry their token in the path or the query (Slack, Teams and most alert
receivers work that way), tracking and database URIs carry `user:password@`, and
libraries quote the URL they were given in their own messages (MLflow's request errors,
the drift webhook's failure line). So every URL in a line is cut to `scheme://host:port`;
a URL without a host (`sqlite:////path/db`, `file:///path`) keeps its path, never its
credentials or query.
"""

from __future__ import annotations

import re

# Stops at whitespace, quotes, angle brackets and backslashes (inside a JSON line a URL
# ends before the `\"` that closes its string, which must stay intact) and leaves the
# punctuation of the sentence around it.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>\\]*[^\s\"'<>\\.,;:!?)]")
_AFTER_PATH = re.compile(r"[?#]")


def redact_url(url: str) -> str:
    """`scheme://host:port` of `url`; hostless URLs keep their path; no user, password,
    path (when there is a host), query or fragment survives."""
    scheme, separator, rest = url.partition("://")
    if not separator:  # no scheme: "user:secret@host:6379/0" is still a URL to cut
        rest = url
    prefix = f"{scheme}://" if separator else ""
    end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    host = rest[:end].rpartition("@")[2]
    return prefix + (host or _AFTER_PATH.split(rest[end:], maxsplit=1)[0])


def redact_urls(text: str) -> str:
    """`text` with every URL in it cut by `redact_url`."""
    if "://" not in text:  # the common case, checked without the regex
        return text
    return _URL.sub(lambda match: redact_url(match.group(0)), text)
