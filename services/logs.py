"""Structured JSON logs: one object per line, carrying the request id of the call that logged.

Log collectors index JSON fields directly, and the request id (the client's
`x-request-id` or one made up at admission) ties every line of a call together and is
echoed to the client, so a failing request can be found from either side.

Every URL in a line is cut to its scheme and host (`libs.urls`): the webhook
URL's token and the tracking URI's password must not reach the logs, whichever library
quotes them.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar

from libs.urls import redact_urls

REQUEST_ID: ContextVar[str] = ContextVar("kindle_request_id", default="-")

# Attributes every LogRecord has; anything else was passed through `extra=` (or set by a
# filter, e.g. BentoML's `component`) and is logged. BentoML's filter also sets fields that
# only serve its text format, and a `request_id` of its own that must not hide ours.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_TEXT_FORMAT_ONLY = {"levelname_bracketed", "trace_msg"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": REQUEST_ID.get(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in _TEXT_FORMAT_ONLY and not key.startswith("_"):
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact_urls(json.dumps(entry, default=str, ensure_ascii=False))


# The service's own code logs under `kindle.*`; the libraries it runs (drift monitor and its
# alerts, batch writer, bundle loading) under `libs.*`. Both are the service's log output.
SERVICE_LOGGERS = ("kindle", "libs")


def configure(level: str = "INFO") -> None:
    """JSON to stderr for the service's loggers and Python warnings; BentoML's own handlers
    (server start, runner readiness, its errors) get the JSON format too, so every line a
    server process logs is one JSON object."""
    logging.captureWarnings(True)
    for name in (*SERVICE_LOGGERS, "py.warnings"):
        logger = logging.getLogger(name)
        if any(isinstance(handler.formatter, JsonFormatter) for handler in logger.handlers):
            continue
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        logger.setLevel(level if name in SERVICE_LOGGERS else logging.WARNING)
        logger.propagate = False
    for name in ("", "bentoml"):  # the root logger and BentoML's, as BentoML configured them
        for existing in logging.getLogger(name).handlers:
            if not isinstance(existing.formatter, JsonFormatter):
                existing.setFormatter(JsonFormatter())


class _DropClientErrorTracebacks(logging.Filter):
    """BentoML logs every API exception with a traceback at ERROR, bad requests included:
    under abuse that is a log flood and a CPU cost. Client errors are counted in metrics
    and logged once, briefly, by the service instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        from bentoml.exceptions import BadInput

        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, BadInput)


def quiet_client_errors() -> None:
    for name in ("bentoml._internal.server.http_app", "bentoml._internal.server.grpc.servicer.v1"):
        target = logging.getLogger(name)
        if not any(isinstance(f, _DropClientErrorTracebacks) for f in target.filters):
            target.addFilter(_DropClientErrorTracebacks())
