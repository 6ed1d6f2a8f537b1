"""Text normalisation: every input becomes a safe string, cleaning keeps sentiment marks."""

import math

import numpy as np
import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from libs.features import MAX_TEXT_CHARS, as_text, clean_text, combine, text_array


def test_none_and_nan_become_empty() -> None:
    assert as_text(None) == ""
    assert as_text(math.nan) == ""


def test_lone_surrogate_is_replaced_so_text_encodes_to_utf8() -> None:
    text = as_text("bad \ud800 escape")
    assert text.encode("utf-8") == b"bad ? escape"


def test_text_is_bounded() -> None:
    assert len(as_text("x" * (MAX_TEXT_CHARS + 10))) == MAX_TEXT_CHARS
    assert len(combine("y" * MAX_TEXT_CHARS, "z" * MAX_TEXT_CHARS)) == MAX_TEXT_CHARS


def test_text_array_makes_any_values_valid_arrow_strings() -> None:
    values = ["plain", None, math.nan, 12345, 6.5, "bad \ud800 escape", np.str_("numpy")]
    array = text_array(values)
    assert array.type == pa.large_string()
    assert array.to_pylist() == ["plain", "", "", "12345", "6.5", "bad ? escape", "numpy"]


def test_text_array_keeps_nulls_of_plain_batches_and_passes_arrow_through() -> None:
    assert text_array(["a", None, math.nan]).to_pylist() == ["a", None, None]
    arrow = pa.array(["x", "y"])
    assert text_array(arrow) is arrow
    assert text_array(pa.chunked_array([["x"], ["y"]])).to_pylist() == ["x", "y"]


def test_summary_comes_first_and_is_optional() -> None:
    assert combine("Loved it", "Five stars") == "Five stars. Loved it"
    assert combine("Loved it", None) == "Loved it"
    assert combine(None, "Five stars") == "Five stars"


def test_cleaning_removes_markup_urls_and_entity_digits() -> None:
    raw = "I <b>LOVED</b> it!!! See http://example.com/x 8220quoted8221 &amp; more"
    assert clean_text(raw) == "i loved it! see quoted more"


def test_cleaning_keeps_question_marks_and_apostrophes() -> None:
    assert clean_text("Why?? It’s   GREAT") == "why? it's great"


@given(st.text())
def test_cleaning_is_idempotent(text: str) -> None:
    once = clean_text(text)
    assert clean_text(once) == once
