"""Every malformed payload maps to one named InvalidRequest (never another exception)."""

from __future__ import annotations

import json
import math

import pytest

from services.validation import EXPLAIN, FEEDBACK, PREDICT, PREDICT_BATCH, InvalidRequest, decode_json

LIMITS = {"max_items": 3, "max_chars": 10}


def kind_of(call, *args, **kwargs) -> str:
    with pytest.raises(InvalidRequest) as caught:
        call(*args, **kwargs)
    assert str(caught.value)  # a message a client can act on
    return caught.value.kind


def test_valid_predict_payload() -> None:
    reviews = PREDICT.parse({"texts": ["good", "bad"], "summaries": ["a", None]}, **LIMITS)
    assert reviews.texts == ["good", "bad"] and reviews.summaries == ["a", None]
    assert PREDICT.parse({"texts": [""]}, **LIMITS).summaries is None


BAD_PREDICT = [
    ({"texts": []}, "empty"),
    ({"texts": ["a"] * 4}, "too_many"),
    ({"texts": ["x" * 11]}, "too_long"),
    ({"texts": ["ok"], "summaries": ["x" * 11]}, "too_long"),
    ({"texts": "not a list"}, "wrong_type"),
    ({"texts": [1]}, "wrong_type"),
    ({"texts": [None]}, "wrong_type"),
    ({"texts": [["nested"]]}, "wrong_type"),
    ({"texts": ["a"], "summaries": "b"}, "wrong_type"),
    ({"texts": ["a"], "summaries": ["b", "c"]}, "length_mismatch"),
    ({"summaries": ["b"]}, "missing_field"),
    ({"text": ["a"]}, "unknown_field"),
    (["a"], "wrong_type"),
    ("a", "wrong_type"),
    (None, "wrong_type"),
]


@pytest.mark.parametrize(
    ("payload", "kind"),
    BAD_PREDICT,
)
def test_bad_predict_payloads(payload: object, kind: str) -> None:
    assert kind_of(PREDICT.parse, payload, **LIMITS) == kind


def test_records() -> None:
    reviews = PREDICT_BATCH.parse(
        [
            {"reviewText": "fine", "summary": math.nan, "overall": 5},
            {"reviewText": "meh", "summary": "so so"},
        ],
        **LIMITS,
    )
    assert reviews.texts == ["fine", "meh"] and reviews.summaries == [None, "so so"]
    assert PREDICT_BATCH.parse({"records": [{"reviewText": "x"}]}, **LIMITS).summaries is None


BAD_RECORDS = [
    ([], "empty"),
    ([{"reviewText": "a"}] * 4, "too_many"),
    ([{"summary": "a"}], "missing_field"),
    ([{"reviewText": 3}], "wrong_type"),
    (["a"], "wrong_type"),
    ({"texts": ["a"]}, "wrong_type"),
    ([{"reviewText": "x" * 11}], "too_long"),
]


@pytest.mark.parametrize(
    ("payload", "kind"),
    BAD_RECORDS,
)
def test_bad_records(payload: object, kind: str) -> None:
    assert kind_of(PREDICT_BATCH.parse, payload, **LIMITS) == kind


def test_explain_top_k() -> None:
    assert EXPLAIN.parse({"texts": ["a"], "top_k": 3.0}, **LIMITS)[1] == 3
    assert EXPLAIN.parse({"texts": ["a"]}, **LIMITS)[1] == 10
    for bad in (0, 51, 2.5, "3", True):
        assert kind_of(EXPLAIN.parse, {"texts": ["a"], "top_k": bad}, **LIMITS) == "wrong_type"


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"", "empty_body"),
        (b"  ", "empty_body"),
        (b"{", "invalid_json"),
        (b'{"texts": ["\xff\xfe"]}', "invalid_utf8"),
        (b"[" * 100_000, "invalid_json"),
    ],
)
def test_decode_json_refuses(raw: bytes, kind: str) -> None:
    assert kind_of(decode_json, raw) == kind


def test_decode_json_accepts_unicode() -> None:
    assert decode_json('{"texts": ["très bien 👍"]}'.encode()) == {"texts": ["très bien 👍"]}


def test_integer_literals_over_pythons_digit_limit_are_a_client_error() -> None:
    """json.loads raises a plain ValueError (not JSONDecodeError) past 4,300 digits."""
    raw = b'{"texts": ["a"], "top_k": 1' + b"0" * 5000 + b"}"
    assert kind_of(decode_json, raw) == "invalid_json"


def test_published_schemas_accept_what_the_parsers_accept() -> None:
    predict = PREDICT.schema(3, 10)
    assert predict["properties"]["texts"]["maxItems"] == 3
    assert predict["properties"]["texts"]["items"]["maxLength"] == 10
    assert set(EXPLAIN.schema(3, 10)["properties"]) == {"texts", "summaries", "top_k"}
    assert PREDICT_BATCH.schema(3, 10)["oneOf"][0]["items"]["required"] == ["reviewText"]


def test_valid_feedback_payload() -> None:
    labelled = FEEDBACK.parse(
        {"texts": ["good", "bad"], "ratings": [5, 1.0], "request_ids": ["abc", None]}, **LIMITS
    )
    assert labelled.reviews.texts == ["good", "bad"]
    assert labelled.ratings == [5, 1]  # gRPC's Struct sends numbers as doubles
    assert labelled.request_ids == ["abc", None]
    assert FEEDBACK.parse({"texts": ["ok"], "ratings": [3]}, **LIMITS).request_ids is None


BAD_FEEDBACK = [
    ({"texts": ["a"]}, "missing_field"),
    ({"texts": ["a"], "ratings": 5}, "wrong_type"),
    ({"texts": ["a"], "ratings": [6]}, "wrong_value"),
    ({"texts": ["a"], "ratings": [0]}, "wrong_value"),
    ({"texts": ["a"], "ratings": [4.5]}, "wrong_value"),
    ({"texts": ["a"], "ratings": [True]}, "wrong_value"),
    ({"texts": ["a"], "ratings": ["5"]}, "wrong_value"),
    ({"texts": ["a", "b"], "ratings": [5]}, "length_mismatch"),
    ({"texts": ["a"], "ratings": [5], "request_ids": ["x", "y"]}, "length_mismatch"),
    ({"texts": ["a"], "ratings": [5], "request_ids": ["\n"]}, "wrong_value"),
    ({"texts": ["a"], "ratings": [5], "request_ids": ["x" * 129]}, "wrong_value"),
    ({"texts": ["a"], "ratings": [5], "stars": [5]}, "unknown_field"),
    ({"texts": [], "ratings": []}, "empty"),
    ({"texts": ["\ud800"], "ratings": [5]}, "invalid_unicode"),  # stored as UTF-8: refused
    ({"texts": ["ok"], "summaries": ["fine \udfff"], "ratings": [5]}, "invalid_unicode"),
]


@pytest.mark.parametrize(
    ("payload", "kind"),
    BAD_FEEDBACK,
)
def test_invalid_feedback_payloads_name_the_problem(payload: object, kind: str) -> None:
    assert kind_of(FEEDBACK.parse, payload, **LIMITS) == kind


REFUSED = [(PREDICT, payload) for payload, _ in BAD_PREDICT] + [
    *((PREDICT_BATCH, payload) for payload, _ in BAD_RECORDS),
    *((FEEDBACK, payload) for payload, _ in BAD_FEEDBACK),
    *((EXPLAIN, {"texts": ["a"], "top_k": bad}) for bad in (0, 51, 2.5, "3", True)),
]


@pytest.mark.parametrize(("shape", "payload"), REFUSED)
def test_bytes_are_refused_with_the_words_of_their_decoded_json(shape, payload: object) -> None:
    """HTTP bodies and gRPC bytes are validated straight from JSON, Structs and tests' payloads
    as decoded JSON: a refusal is the same either way."""
    bound = shape.bind(**LIMITS)
    with pytest.raises(InvalidRequest) as from_bytes:
        bound.from_json(json.dumps(payload).encode())
    with pytest.raises(InvalidRequest) as decoded:
        bound.from_python(payload)
    assert (from_bytes.value.kind, str(from_bytes.value)) == (decoded.value.kind, str(decoded.value))


@pytest.mark.parametrize(
    ("shape", "payload"),
    [
        (PREDICT, {"texts": ["good", "bad"], "summaries": ["a", math.nan]}),
        (PREDICT, {"texts": ["\ud800"]}),  # a lone surrogate: not Unicode, scored as it always was
        (PREDICT_BATCH, [{"reviewText": "fine", "summary": math.nan, "overall": 5}]),
        (PREDICT_BATCH, {"records": [{"reviewText": "x"}], "source": "kindle"}),
        (EXPLAIN, {"texts": ["a"], "top_k": 5.0}),
        (FEEDBACK, {"texts": ["a", "b"], "ratings": [5, 1.0], "request_ids": ["r-1", None]}),
    ],
)
def test_bytes_are_accepted_as_their_decoded_json_is(shape, payload: object) -> None:
    bound = shape.bind(**LIMITS)
    assert bound.from_json(json.dumps(payload).encode()) == bound.from_python(payload)


def test_feedback_refuses_lone_surrogates_naming_the_field() -> None:
    """Predict scores such texts (it stores nothing); feedback would fail writing its Parquet
    file after accepting them, so it refuses them up front with the field and the position."""
    with pytest.raises(InvalidRequest) as caught:
        FEEDBACK.parse({"texts": ["ok", "ab\ud800"], "ratings": [5, 4]}, **LIMITS)
    assert caught.value.kind == "invalid_unicode"
    assert str(caught.value).startswith("texts[1] is not valid Unicode (a lone surrogate at character 2)")
    with pytest.raises(InvalidRequest) as caught:
        FEEDBACK.parse({"texts": ["ok"], "summaries": ["\udfff"], "ratings": [5]}, **LIMITS)
    assert str(caught.value).startswith("summaries[0] is not valid Unicode")
    assert PREDICT.parse({"texts": ["ab\ud800"], "summaries": ["\udfff"]}, **LIMITS).texts == ["ab\ud800"]
    with pytest.raises(InvalidRequest) as caught:  # over the limit, the length is what is wrong
        FEEDBACK.parse({"texts": ["\ud800" * 11], "ratings": [5]}, **LIMITS)
    assert caught.value.kind == "too_long"
