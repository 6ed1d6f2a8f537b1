"""Request validation: each request shape is declared once, as pydantic models, and both the
parser and the JSON schema the service publishes are derived from that declaration.

Both protocols hand the IO descriptor the same body (HTTP: bytes; gRPC: bytes, or a
`Struct` already decoded to JSON values), so the checks below run once for HTTP and gRPC
alike. Each failure raises `InvalidRequest`, a `BadInput`, which BentoML turns into HTTP
400 and gRPC INVALID_ARGUMENT; its `kind` feeds the error metric and its message names the
field and the limit, so a client can fix the request. Nothing here touches the model: a
bad request costs no inference.

Why pydantic: its validators are compiled (pydantic-core, Rust), so a valid 1,000-review
body is checked without a Python call per review, and bytes are validated straight from
JSON (`validate_json`) without building Python objects first. Why the messages are not
pydantic's: clients and tests rely on the service's own wording, which names the field,
the index and the limit. A refused body is therefore decoded again with `json` and the
first problem in the request's own order (the body, its unknown fields, then field by
field, container before items) is worded by `_refusal`, the one place that knows the
wording. The error path may be slow; the valid path is not.

The published schemas follow OpenAPI 3.0 (`nullable`, no `$defs`): BentoML puts them in
its OpenAPI document, so clients and fuzzers see the real contract. Not expressible there
and checked by the parser only: one summary, rating and request id per text.
"""

import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Annotated, Any, Generic, NotRequired, TypeVar

from bentoml.exceptions import BadInput
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    Strict,
    StrictStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    with_config,
)
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, SkipJsonSchema
from pydantic_core import ErrorDetails, PydanticCustomError, core_schema
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

MAX_TOP_K = 50
MAX_REQUEST_ID_CHARS = 128
STARS = (1, 5)  # the lowest and the highest star rating
T = TypeVar("T")


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
class Reviews:
    """A validated batch: review texts and, aligned with them, optional summaries."""

    texts: list[str]
    summaries: list[str | None] | None

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class Feedback:
    """Validated labelled reviews: the reviews, their true stars, the requests they answer."""

    reviews: Reviews
    ratings: list[int]
    request_ids: list[str | None] | None


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


# ----------------------------------------------------------------------------- field types


@dataclass(frozen=True)
class WholeNumber:
    """An integer in `minimum..maximum`. A float without a fraction counts too, since gRPC's
    Struct carries every number as a double (5.0 is a valid rating); booleans and numeric
    strings do not. Compiled: a strict float (ints included) converted to an int."""

    minimum: int
    maximum: int

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        whole = core_schema.int_schema(ge=self.minimum, le=self.maximum)
        return core_schema.chain_schema([core_schema.float_schema(strict=True), whole])

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}


def _nan_is_none(value: float) -> None:
    """A missing summary as pandas writes it (NaN) is no summary; any other number is refused."""
    if math.isnan(value):
        return None
    raise PydanticCustomError("string_type", "not a string")


@dataclass(frozen=True)
class _Surrogates:
    """Texts holding lone surrogates (JSON escapes such as `\\ud800`, which `json` decodes)
    are not Unicode, so the compiled length check refuses them; they have always been scored,
    so they are counted here instead. Only they reach this Python check: a valid text is
    accepted by the compiled branch before it."""

    max_chars: int

    def within(self, value: str) -> str:
        if len(value) > self.max_chars:
            raise PydanticCustomError("string_too_long", "too long")
        return value

    @property
    def text(self) -> Any:
        return Annotated[StrictStr, AfterValidator(self.within)]


def _printable(value: str) -> str:
    """Request ids end up in logs: no control or invisible characters."""
    if not value.isprintable():
        raise PydanticCustomError("not_printable", "not printable")
    return value


def _one_per_text(value: Any, info: ValidationInfo) -> Any:
    """A list aligned with `texts`: its count is checked before its items (a miscount says more
    than any one item); skipped when `texts` itself failed, whose error comes first anyway."""
    texts = info.data.get("texts")
    if isinstance(value, list) and texts is not None and len(value) != len(texts):
        raise PydanticCustomError("length_mismatch", "one per text: {texts}", {"texts": len(texts)})
    return value


class _Strict(BaseModel):
    """A request object: unknown fields are refused, so a misspelt optional field is not silently ignored."""

    model_config = ConfigDict(extra="forbid")


@functools.cache
def declare(max_items: int, max_chars: int) -> dict[str, TypeAdapter[Any]]:
    """Every request shape under `max_items` reviews per request and `max_chars` per text, as
    compiled validators by API name ("records": a batch's list alone, to word its errors).
    Built once per pair of limits: the service has one, tests use small ones to reach them."""
    # Built at run time from the limits, so mypy sees these annotations as plain values.
    # Stored text (feedback) must be Unicode: Parquet strings are UTF-8, so a lone surrogate
    # would fail the write after the request was accepted. Scored text may hold them.
    StoredText: Any = Annotated[StrictStr, Field(max_length=max_chars)]
    Text: Any = Annotated[
        StoredText | SkipJsonSchema[_Surrogates(max_chars).text],  # type: ignore[misc]
        Field(union_mode="left_to_right"),
    ]

    def summary_of(text: Any) -> Any:
        return Annotated[
            text | SkipJsonSchema[Annotated[float, Strict(), AfterValidator(_nan_is_none)]] | None,
            Field(union_mode="left_to_right"),
        ]

    Summary: Any = summary_of(Text)
    RequestId = Annotated[StrictStr, Field(max_length=MAX_REQUEST_ID_CHARS), AfterValidator(_printable)]

    def batch(item: Any) -> Any:
        return Annotated[list[item], Field(min_length=1, max_length=max_items)]

    class PredictRequest(_Strict):
        """Reviews to rate: texts and, optionally, one summary (or null) per text."""

        texts: batch(Text)  # type: ignore[valid-type]
        summaries: batch(Summary) | None = None  # type: ignore[valid-type]

        aligned = field_validator("summaries", mode="before")(_one_per_text)

    class ExplainRequest(PredictRequest):
        """Reviews to explain, and how many terms to report per review."""

        top_k: Annotated[int, WholeNumber(1, MAX_TOP_K)] = 10

    class FeedbackRequest(PredictRequest):
        """Reviews with their true star ratings and, optionally, the requests they answer."""

        texts: batch(StoredText)  # type: ignore[valid-type]
        summaries: batch(summary_of(StoredText)) | None = None  # type: ignore[valid-type]
        ratings: batch(Annotated[int, WholeNumber(*STARS)])  # type: ignore[valid-type]
        request_ids: batch(RequestId | None) | None = None  # type: ignore[valid-type]

        feedback_aligned = field_validator("ratings", "request_ids", mode="before")(_one_per_text)

    # A typed dict, not a model: a batch validates a thousand of them, and dicts are cheaper.
    @with_config(ConfigDict(extra="ignore", json_schema_extra={"additionalProperties": True}))
    class Record(TypedDict):
        """A dataset record: its review text and summary; other fields (overall, asin...) are ignored."""

        reviewText: Text  # the dataset's field names
        summary: NotRequired[Summary]

    Records = batch(Record)

    class RecordsEnvelope(BaseModel):
        """The records, wrapped in an object."""

        records: Records  # type: ignore[valid-type]

    metadata = Annotated[
        Any, WithJsonSchema({"type": "object", "description": "Ignored: send `{}` or an empty body."})
    ]
    return {
        "predict": TypeAdapter(PredictRequest),
        "predict_batch": TypeAdapter(
            Annotated[Records | RecordsEnvelope, Field(union_mode="left_to_right")]  # type: ignore[arg-type]
        ),
        "explain": TypeAdapter(ExplainRequest),
        "feedback": TypeAdapter(FeedbackRequest),
        "metadata": TypeAdapter(metadata),
        "records": TypeAdapter(Records),
    }


# ----------------------------------------------------------------------------- the published schema


class OpenAPI30Schema(GenerateJsonSchema):
    """JSON schemas in the OpenAPI 3.0 dialect BentoML's document uses: `nullable` instead of a
    null type, `oneOf` for unions (their members never overlap here), no field titles."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return {**self.generate_inner(schema["schema"]), "nullable": True}

    def union_schema(self, schema: core_schema.UnionSchema) -> JsonSchemaValue:
        generated = super().union_schema(schema)
        if "anyOf" in generated:
            generated["oneOf"] = generated.pop("anyOf")
        return generated

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def _inline(schema: Any, definitions: dict[str, Any]) -> Any:
    """`$ref`s replaced by their definitions: the schema goes into someone else's document."""
    if isinstance(schema, list):
        return [_inline(item, definitions) for item in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if ref is not None:
        rest = {key: value for key, value in schema.items() if key != "$ref"}
        return _inline({**definitions[ref.rsplit("/", 1)[-1]], **rest}, definitions)
    return {key: _inline(value, definitions) for key, value in schema.items()}


def _published_schema(adapter: TypeAdapter[Any]) -> dict[str, Any]:
    """The request schema as the OpenAPI document publishes it."""
    schema = adapter.json_schema(schema_generator=OpenAPI30Schema)
    definitions = schema.pop("$defs", {})
    return _inline(schema, definitions)


# ----------------------------------------------------------------------------- refusals, worded

LIST_OF = {"texts": "strings", "summaries": "strings", "ratings": "stars", "request_ids": "request ids"}
MISSING = {
    "texts": "missing field 'texts' (a list of review strings)",
    "ratings": "missing field 'ratings' (the true star rating of each text)",
}


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _whole(value: object) -> object:
    """A number as the client meant it: gRPC's 5.0 is 5."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _rank(error: ErrorDetails, fields: list[str]) -> tuple[int, ...]:
    """The request's own order: `fields` as declared, a list before its items, items by index.
    Union branches (deeper, unnamed) are worded alike, so their order does not matter."""
    return tuple(
        part if isinstance(part, int) else fields.index(part) if part in fields else len(fields)
        for part in error["loc"]
    )


def _lone_surrogate(value: str) -> int | None:
    """Index of the first character UTF-8 cannot encode (a lone surrogate), if any."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        return error.start
    return None


def _text_wording(where: str, value: object, max_chars: int) -> tuple[str, str]:
    if isinstance(value, str) and len(value) <= max_chars and (at := _lone_surrogate(value)) is not None:
        return (
            "invalid_unicode",
            f"{where} is not valid Unicode (a lone surrogate at character {at}); stored text must be UTF-8",
        )
    if isinstance(value, str):
        return "too_long", f"{where} has {len(value)} characters; at most {max_chars} are accepted"
    return "wrong_type", f"{where} is {_type_name(value)}; expected a string"


def _wording(path: tuple[Any, ...], error: ErrorDetails, max_items: int, max_chars: int) -> tuple[str, str]:
    """(kind, message) of the first error; `path` is its location from the field on
    (`records` stands for a batch's list of records)."""
    field, kind, value = path[0], error["type"], error["input"]
    if len(path) == 1:
        if kind == "missing":
            return "missing_field", MISSING[field]
        if kind == "length_mismatch":
            texts = error.get("ctx", {})["texts"]
            return "length_mismatch", f"{len(value)} {field} for {texts} texts; send one per text"
        if field == "top_k":
            return "wrong_type", f"'top_k' is {_whole(value)!r:.40}; expected an integer in 1..{MAX_TOP_K}"
        if kind == "too_short":
            return "empty", f"'{field}' is empty; send at least one review"
        if kind == "too_long":
            return "too_many", f"'{field}' has {len(value)} items; at most {max_items} per request"
        return "wrong_type", f"'{field}' is {_type_name(value)}; expected a list of {LIST_OF[field]}"
    where = f"{field}[{path[1]}]"
    if field == "ratings":
        return "wrong_value", f"{where} is {_whole(value)!r:.40}; expected a star rating 1..5"
    if field == "request_ids":
        return (
            "wrong_value",
            f"{where} must be a printable string of at most {MAX_REQUEST_ID_CHARS} characters",
        )
    if field == "records":
        if len(path) == 2:
            return "wrong_type", f"{where} is {_type_name(value)}; expected an object"
        if kind == "missing":
            return "missing_field", f"{where} has no '{path[2]}'"
        where = f"{where}.{path[2]}"
    return _text_wording(where, value, max_chars)


# ----------------------------------------------------------------------------- request shapes


@dataclass(frozen=True)
class RequestShape(Generic[T]):
    """One API's request: what the API receives from a valid one (`build`, from the validated
    declaration named `name` in `declare`), and whether it is a batch of dataset records
    (a list, alone or in an envelope) rather than an object. `bind` compiles it under the
    service's limits."""

    name: str
    build: Callable[[Any], T]
    records: bool = False

    def bind(self, max_items: int, max_chars: int) -> "BoundShape[T]":
        return _bind(self, max_items, max_chars)

    def parse(self, payload: object, *, max_items: int, max_chars: int) -> T:
        """Decoded JSON to what the API receives; raises `InvalidRequest`."""
        return self.bind(max_items, max_chars).from_python(payload)

    def schema(self, max_items: int, max_chars: int) -> dict[str, Any]:
        """The request's JSON schema, as the OpenAPI document publishes it."""
        return self.bind(max_items, max_chars).schema


@dataclass(frozen=True)
class BoundShape(Generic[T]):
    """A request shape compiled under one pair of limits: its parsers and its published schema."""

    shape: RequestShape[T]
    adapter: TypeAdapter[Any]
    max_items: int
    max_chars: int

    @functools.cached_property
    def schema(self) -> dict[str, Any]:
        return _published_schema(self.adapter)

    def from_json(self, raw: bytes) -> T:
        """Request bytes to what the API receives, validated straight from JSON. A refused body
        is decoded again with `json`: what it accepts is what the service accepts (the JSON
        parser pydantic uses is stricter: lone surrogates, nesting past 200 levels), and
        its errors get the service's wording."""
        try:
            return self.shape.build(self.adapter.validate_json(raw))
        except ValidationError:
            return self.from_python(decode_json(raw))

    def from_python(self, payload: object) -> T:
        """Decoded JSON (a gRPC Struct's, a test's) to what the API receives."""
        try:
            return self.shape.build(self.adapter.validate_python(payload))
        except ValidationError as error:
            raise self._refusal(error, payload) from None

    def _refusal(self, error: ValidationError, payload: object) -> InvalidRequest:
        if self.shape.records:
            return self._records_refusal(payload)
        if not isinstance(payload, dict):
            return InvalidRequest(
                "wrong_type", f"request is a JSON {_type_name(payload)}; expected an object with 'texts'"
            )
        errors = error.errors(include_url=False)
        unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
        if unknown:
            accepted = list(self.schema["properties"])
            return InvalidRequest("unknown_field", f"unknown field(s) {unknown}; accepted: {accepted}")
        return self._worded(errors, (), list(self.schema["properties"]))

    def _records_refusal(self, payload: object) -> InvalidRequest:
        records = payload["records"] if isinstance(payload, dict) and "records" in payload else payload
        if not isinstance(records, list):
            return InvalidRequest(
                "wrong_type", f"request is a JSON {_type_name(records)}; expected a list of review records"
            )
        try:  # the list alone: its errors are located as the client sent them (a union's are not)
            declare(self.max_items, self.max_chars)["records"].validate_python(records)
        except ValidationError as error:
            record = self.schema["oneOf"][0]["items"]
            return self._worded(error.errors(include_url=False), ("records",), list(record["properties"]))
        raise AssertionError("a refused batch whose records are all valid")

    def _worded(
        self, errors: list[ErrorDetails], prefix: tuple[str, ...], fields: list[str]
    ) -> InvalidRequest:
        """The first of `errors` (located below `prefix`; `fields` in their declared order), worded."""
        first = min(errors, key=lambda error: _rank(error, fields))
        return InvalidRequest(*_wording((*prefix, *first["loc"]), first, self.max_items, self.max_chars))


@functools.cache
def _bind(shape: RequestShape[T], max_items: int, max_chars: int) -> BoundShape[T]:
    return BoundShape(shape, declare(max_items, max_chars)[shape.name], max_items, max_chars)


def _reviews(request: Any) -> Reviews:
    return Reviews(texts=request.texts, summaries=request.summaries)


def _records(request: Any) -> Reviews:
    records = request if isinstance(request, list) else request.records
    summaries = [record.get("summary") for record in records]
    return Reviews(
        texts=[record["reviewText"] for record in records],
        summaries=summaries if any(summary is not None for summary in summaries) else None,
    )


PREDICT = RequestShape("predict", _reviews)
"""`{"texts": [str], "summaries": [str|null] (optional)}` to `Reviews`."""

PREDICT_BATCH = RequestShape("predict_batch", _records, records=True)
"""A list of dataset records (`reviewText`, optional `summary`, other fields ignored), or
`{"records": [...]}`, to `Reviews`."""

EXPLAIN = RequestShape("explain", lambda request: (_reviews(request), request.top_k))
"""Like `predict`, plus `top_k` (1..50, default 10) tokens to report per review."""

FEEDBACK = RequestShape(
    "feedback",
    lambda request: Feedback(_reviews(request), request.ratings, request.request_ids),
)
"""Like `predict`, plus `ratings` (one true star rating 1..5 per text, required) and
`request_ids` (optional: the `x-request-id` of the prediction each one answers)."""

METADATA = RequestShape("metadata", lambda _: None)
"""Any JSON, ignored."""
