"""Request validation: every way a payload can be wrong becomes one named 400-class error.

Both protocols hand the API functions the same decoded JSON, so the checks below run
once for HTTP and gRPC alike. Each failure raises `InvalidRequest`, a `BadInput`, which
BentoML turns into HTTP 400 and gRPC INVALID_ARGUMENT; its `kind` feeds the error metric
and its message names the field and the limit, so a client can fix the request.
Nothing here touches the model: a bad request costs no inference.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from bentoml.exceptions import BadInput

PREDICT_FIELDS = ("texts", "summaries")
EXPLAIN_FIELDS = (*PREDICT_FIELDS, "top_k")
FEEDBACK_FIELDS = (*PREDICT_FIELDS, "ratings", "request_ids")
MAX_TOP_K = 50
MAX_REQUEST_ID_CHARS = 128
STARS = (1, 2, 3, 4, 5)


class InvalidRequest(BadInput):
    """A client error; `kind` is a short stable label (metrics, logs, tests)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class BodyTooLarge(InvalidRequest):
    """A body over the size limit: HTTP 413 (BentoML has no gRPC code for 413, so gRPC callers
    get a plain `InvalidRequest` instead)."""

    error_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE

    def __init__(self, message: str) -> None:
        super().__init__("too_large", message)


@dataclass(frozen=True)
class Feedback:
    """Validated labelled reviews: the reviews, their true stars, the requests they answer."""

    reviews: Reviews
    ratings: list[int]
    request_ids: list[str | None] | None


@dataclass(frozen=True)
class Reviews:
    """A validated batch: review texts and, aligned with them, optional summaries."""

    texts: list[str]
    summaries: list[str | None] | None

    def __len__(self) -> int:
        return len(self.texts)


def decode_json(raw: bytes) -> Any:
    """Bytes to JSON, refusing invalid UTF-8 (json.loads would raise a non-JSON error)."""
    if not raw.strip():
        raise InvalidRequest("empty_body", "request body is empty; send a JSON document")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidRequest(
            "invalid_utf8", f"request body is not valid UTF-8 (byte {error.start}: {error.reason})"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidRequest("invalid_json", f"request body is not valid JSON: {error}") from None
    except ValueError as error:  # e.g. an integer literal over Python's 4,300-digit conversion limit
        raise InvalidRequest("invalid_json", f"request body is not usable JSON: {str(error)[:200]}") from None
    except RecursionError:
        raise InvalidRequest("invalid_json", "request body is nested too deeply") from None


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _check_count(count: int, what: str, max_items: int) -> None:
    if count == 0:
        raise InvalidRequest("empty", f"'{what}' is empty; send at least one review")
    if count > max_items:
        raise InvalidRequest("too_many", f"'{what}' has {count} items; at most {max_items} per request")


def _check_text(value: object, where: str, max_chars: int, *, optional: bool) -> str | None:
    if value is None or (optional and isinstance(value, float) and math.isnan(value)):
        if optional:
            return None
        raise InvalidRequest("wrong_type", f"{where} is null; expected a string")
    if not isinstance(value, str):
        raise InvalidRequest("wrong_type", f"{where} is {_type_name(value)}; expected a string")
    if len(value) > max_chars:
        raise InvalidRequest(
            "too_long", f"{where} has {len(value)} characters; at most {max_chars} are accepted"
        )
    return value


def _require_object(payload: object, fields: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise InvalidRequest(
            "wrong_type", f"request is a JSON {_type_name(payload)}; expected an object with 'texts'"
        )
    unknown = sorted(set(payload) - set(fields))
    if unknown:
        raise InvalidRequest("unknown_field", f"unknown field(s) {unknown}; accepted: {list(fields)}")
    if "texts" not in payload:
        raise InvalidRequest("missing_field", "missing field 'texts' (a list of review strings)")
    return payload


def parse_predict(payload: object, *, max_items: int, max_chars: int, fields=PREDICT_FIELDS) -> Reviews:
    """`{"texts": [str], "summaries": [str|null] (optional)}` to `Reviews`."""
    body = _require_object(payload, fields)
    texts = body["texts"]
    if not isinstance(texts, list):
        raise InvalidRequest("wrong_type", f"'texts' is {_type_name(texts)}; expected a list of strings")
    _check_count(len(texts), "texts", max_items)
    checked = [_check_text(text, f"texts[{i}]", max_chars, optional=False) for i, text in enumerate(texts)]
    summaries = body.get("summaries")
    if summaries is not None:
        if not isinstance(summaries, list):
            raise InvalidRequest(
                "wrong_type", f"'summaries' is {_type_name(summaries)}; expected a list of strings"
            )
        if len(summaries) != len(texts):
            raise InvalidRequest(
                "length_mismatch", f"{len(summaries)} summaries for {len(texts)} texts; send one per text"
            )
        summaries = [
            _check_text(summary, f"summaries[{i}]", max_chars, optional=True)
            for i, summary in enumerate(summaries)
        ]
    return Reviews(texts=checked, summaries=summaries)  # type: ignore[arg-type]


def parse_records(payload: object, *, max_items: int, max_chars: int) -> Reviews:
    """A list of dataset records (`reviewText`, optional `summary`, other fields ignored)."""
    if isinstance(payload, dict) and "records" in payload:
        payload = payload["records"]
    if not isinstance(payload, list):
        raise InvalidRequest(
            "wrong_type", f"request is a JSON {_type_name(payload)}; expected a list of review records"
        )
    _check_count(len(payload), "records", max_items)
    texts: list[str] = []
    summaries: list[str | None] = []
    for i, record in enumerate(payload):
        if not isinstance(record, dict):
            raise InvalidRequest("wrong_type", f"records[{i}] is {_type_name(record)}; expected an object")
        if "reviewText" not in record:
            raise InvalidRequest("missing_field", f"records[{i}] has no 'reviewText'")
        texts.append(_check_text(record["reviewText"], f"records[{i}].reviewText", max_chars, optional=False))
        summaries.append(
            _check_text(record.get("summary"), f"records[{i}].summary", max_chars, optional=True)
        )
    return Reviews(texts=texts, summaries=summaries if any(s is not None for s in summaries) else None)


def parse_explain(payload: object, *, max_items: int, max_chars: int) -> tuple[Reviews, int]:
    """Like `predict`, plus `top_k` (1..50, default 10) tokens to report per review."""
    reviews = parse_predict(payload, max_items=max_items, max_chars=max_chars, fields=EXPLAIN_FIELDS)
    top_k = payload.get("top_k", 10)  # type: ignore[union-attr]
    # gRPC's Struct carries every number as a double: 5.0 is a valid top_k.
    if isinstance(top_k, float) and top_k.is_integer():
        top_k = int(top_k)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise InvalidRequest("wrong_type", f"'top_k' is {top_k!r:.40}; expected an integer in 1..{MAX_TOP_K}")
    return reviews, top_k


def _aligned_list(body: dict[str, Any], field: str, count: int, what: str) -> list[Any]:
    value = body[field]
    if not isinstance(value, list):
        raise InvalidRequest("wrong_type", f"'{field}' is {_type_name(value)}; expected a list of {what}")
    if len(value) != count:
        raise InvalidRequest("length_mismatch", f"{len(value)} {field} for {count} texts; send one per text")
    return value


def _star(value: object, where: str) -> int:
    # gRPC's Struct carries every number as a double: 5.0 is a valid rating.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value not in STARS:
        raise InvalidRequest("wrong_value", f"{where} is {value!r:.40}; expected a star rating 1..5")
    return value


def _request_id(value: object, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.isprintable() or len(value) > MAX_REQUEST_ID_CHARS:
        raise InvalidRequest(
            "wrong_value", f"{where} must be a printable string of at most {MAX_REQUEST_ID_CHARS} characters"
        )
    return value


def parse_feedback(payload: object, *, max_items: int, max_chars: int) -> Feedback:
    """Like `predict`, plus `ratings` (one true star rating 1..5 per text, required) and
    `request_ids` (optional: the `x-request-id` of the prediction each one answers)."""
    reviews = parse_predict(payload, max_items=max_items, max_chars=max_chars, fields=FEEDBACK_FIELDS)
    body: dict[str, Any] = payload  # type: ignore[assignment]  (parse_predict checked it)
    if "ratings" not in body:
        raise InvalidRequest("missing_field", "missing field 'ratings' (the true star rating of each text)")
    ratings = [
        _star(v, f"ratings[{i}]") for i, v in enumerate(_aligned_list(body, "ratings", len(reviews), "stars"))
    ]
    request_ids = None
    if body.get("request_ids") is not None:
        given = _aligned_list(body, "request_ids", len(reviews), "request ids")
        request_ids = [_request_id(v, f"request_ids[{i}]") for i, v in enumerate(given)]
    return Feedback(reviews, ratings, request_ids)


# ----------------------------------------------------------------------------- OpenAPI schemas
# The same rules as the parsers above, as JSON schemas (OpenAPI 3.0 dialect: `nullable`): the
# service publishes them in its OpenAPI document, so clients and fuzzers see the real contract.
# Not expressible here and checked by the parsers only: one summary per text.


def _texts_schema(max_items: int, max_chars: int, nullable: bool = False) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "string", "maxLength": max_chars}
    if nullable:
        item["nullable"] = True
    return {"type": "array", "minItems": 1, "maxItems": max_items, "items": item}


def predict_schema(max_items: int, max_chars: int) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["texts"],
        "additionalProperties": False,
        "properties": {
            "texts": _texts_schema(max_items, max_chars),
            "summaries": {**_texts_schema(max_items, max_chars, nullable=True), "nullable": True},
        },
    }


def explain_schema(max_items: int, max_chars: int) -> dict[str, Any]:
    schema = predict_schema(max_items, max_chars)
    schema["properties"]["top_k"] = {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K, "default": 10}
    return schema


def feedback_schema(max_items: int, max_chars: int) -> dict[str, Any]:
    schema = predict_schema(max_items, max_chars)
    schema["required"] = ["texts", "ratings"]
    stars = {"type": "integer", "minimum": 1, "maximum": 5}
    schema["properties"]["ratings"] = {"type": "array", "minItems": 1, "maxItems": max_items, "items": stars}
    ids = {"type": "string", "maxLength": MAX_REQUEST_ID_CHARS, "nullable": True}
    schema["properties"]["request_ids"] = {
        "type": "array",
        "minItems": 1,
        "maxItems": max_items,
        "items": ids,
        "nullable": True,
    }
    return schema


def records_schema(max_items: int, max_chars: int) -> dict[str, Any]:
    record = {
        "type": "object",
        "required": ["reviewText"],
        "properties": {
            "reviewText": {"type": "string", "maxLength": max_chars},
            "summary": {"type": "string", "maxLength": max_chars, "nullable": True},
        },
        "additionalProperties": True,  # the dataset's other fields (overall, asin...) are ignored
    }
    records = {"type": "array", "minItems": 1, "maxItems": max_items, "items": record}
    return {
        "oneOf": [
            records,
            {"type": "object", "required": ["records"], "properties": {"records": records}},
        ]
    }


METADATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Ignored: send `{}` or an empty body.",
}
