"""Structured JSON logs: one object per line, carrying the request id of the call that logged.

Log collectors index JSON fields directly, and the request id (the client's
`x-request-id` or one made up at admission) ties every line of a call together and is
echoed to the client, so a failing request can be found from either side.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar

REQUEST_ID: ContextVar[str] = ContextVar("kindle_request_id", default="-")

# Attributes every LogRecord has; anything else was passed through `extra=` and is logged.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


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
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(level: str = "INFO") -> None:
    """JSON to stderr for the `kindle.*` loggers (BentoML keeps its own handlers)."""
    logger = logging.getLogger("kindle")
    if any(isinstance(handler.formatter, JsonFormatter) for handler in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


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
