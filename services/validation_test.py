"""Every malformed payload maps to one named InvalidRequest (never another exception)."""

from __future__ import annotations

import math

import pytest

from services.validation import (
    InvalidRequest,
    decode_json,
    parse_explain,
    parse_feedback,
    parse_predict,
    parse_records,
)

LIMITS = {"max_items": 3, "max_chars": 10}


def kind_of(call, *args, **kwargs) -> str:
    with pytest.raises(InvalidRequest) as caught:
        call(*args, **kwargs)
    assert str(caught.value)  # a message a client can act on
    return caught.value.kind


def test_valid_predict_payload() -> None:
    reviews = parse_predict({"texts": ["good", "bad"], "summaries": ["a", None]}, **LIMITS)
    assert reviews.texts == ["good", "bad"] and reviews.summaries == ["a", None]
    assert parse_predict({"texts": [""]}, **LIMITS).summaries is None


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
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
    ],
)
def test_bad_predict_payloads(payload: object, kind: str) -> None:
    assert kind_of(parse_predict, payload, **LIMITS) == kind


def test_records() -> None:
    reviews = parse_records(
        [
            {"reviewText": "fine", "summary": math.nan, "overall": 5},
            {"reviewText": "meh", "summary": "so so"},
        ],
        **LIMITS,
    )
    assert reviews.texts == ["fine", "meh"] and reviews.summaries == [None, "so so"]
    assert parse_records({"records": [{"reviewText": "x"}]}, **LIMITS).summaries is None


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        ([], "empty"),
        ([{"reviewText": "a"}] * 4, "too_many"),
        ([{"summary": "a"}], "missing_field"),
        ([{"reviewText": 3}], "wrong_type"),
        (["a"], "wrong_type"),
        ({"texts": ["a"]}, "wrong_type"),
        ([{"reviewText": "x" * 11}], "too_long"),
    ],
)
def test_bad_records(payload: object, kind: str) -> None:
    assert kind_of(parse_records, payload, **LIMITS) == kind


def test_explain_top_k() -> None:
    assert parse_explain({"texts": ["a"], "top_k": 3.0}, **LIMITS)[1] == 3
    assert parse_explain({"texts": ["a"]}, **LIMITS)[1] == 10
    for bad in (0, 51, 2.5, "3", True):
        assert kind_of(parse_explain, {"texts": ["a"], "top_k": bad}, **LIMITS) == "wrong_type"


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
    from services.validation import explain_schema, predict_schema, records_schema

    predict = predict_schema(3, 10)
    assert predict["properties"]["texts"]["maxItems"] == 3
    assert predict["properties"]["texts"]["items"]["maxLength"] == 10
    assert set(explain_schema(3, 10)["properties"]) == {"texts", "summaries", "top_k"}
    assert records_schema(3, 10)["oneOf"][0]["items"]["required"] == ["reviewText"]


def test_valid_feedback_payload() -> None:
    labelled = parse_feedback(
        {"texts": ["good", "bad"], "ratings": [5, 1.0], "request_ids": ["abc", None]}, **LIMITS
    )
    assert labelled.reviews.texts == ["good", "bad"]
    assert labelled.ratings == [5, 1]  # gRPC's Struct sends numbers as doubles
    assert labelled.request_ids == ["abc", None]
    assert parse_feedback({"texts": ["ok"], "ratings": [3]}, **LIMITS).request_ids is None


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
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
    ],
)
def test_invalid_feedback_payloads_name_the_problem(payload: object, kind: str) -> None:
    assert kind_of(parse_feedback, payload, **LIMITS) == kind
