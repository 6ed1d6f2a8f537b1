"""The JSON IO descriptor of the APIs: BentoML's, with decoding that cannot fail with a 500.

BentoML's `JSON` passes the body to `json.loads`, which raises `UnicodeDecodeError` (a
500) on invalid UTF-8 and reads bodies of any size. This subclass reads at most
`max_body_bytes`, decodes strictly, and turns every failure into `InvalidRequest`
(400 / INVALID_ARGUMENT) on both protocols; gRPC clients may send the JSON either as a
`google.protobuf.Value` (`json`) or as raw bytes (`serialized_bytes`). An HTTP body over
the limit is a 413, whether or not the client announced its length (the ASGI gate
refuses an announced one before reading anything; a chunked one stops being read at
the limit).

BentoML documents a plain `JSON` input as `{"type": "object"}`; each API passes its
real JSON schema (`validation.*_schema`), which goes into the OpenAPI document.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bentoml.io import JSON

from services.metrics import record_error
from services.validation import BodyTooLarge, InvalidRequest, decode_json

if TYPE_CHECKING:
    from bentoml._internal.service.openapi.specification import Schema
    from google.protobuf import struct_pb2
    from starlette.requests import Request


class ReviewsJSON(JSON, descriptor_id="kindle.ReviewsJSON", proto_fields=("json",)):
    def __init__(
        self, api: str, max_body_bytes: int, schema: dict[str, Any], allow_empty: bool = False
    ) -> None:
        super().__init__()
        self.api = api
        self.max_body_bytes = max_body_bytes
        self.schema = schema
        self.allow_empty = allow_empty

    def openapi_schema(self) -> Schema:
        from bentoml._internal.service.openapi.specification import Schema

        return Schema(**self.schema)

    def _decode(self, raw: bytes) -> Any:
        if self.allow_empty and not raw.strip():
            return {}
        try:
            return decode_json(raw)
        except InvalidRequest as error:
            record_error(self.api, error.kind)
            raise

    def _too_large_message(self, size: int) -> str:
        record_error(self.api, "too_large")
        return f"request body over {self.max_body_bytes} bytes ({size}+)"

    async def from_http_request(self, request: Request) -> Any:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BodyTooLarge(self._too_large_message(size))
            chunks.append(chunk)
        return self._decode(b"".join(chunks))

    async def from_proto(self, field: struct_pb2.Value | bytes) -> Any:
        if isinstance(field, bytes):
            if len(field) > self.max_body_bytes:
                raise InvalidRequest("too_large", self._too_large_message(len(field)))
            return self._decode(field)
        try:
            return await super().from_proto(field)
        except ValueError as error:  # a NaN or infinite number_value has no JSON form
            record_error(self.api, "invalid_json")
            raise InvalidRequest("invalid_json", f"request is not valid JSON: {error}") from None
