"""Text normalisation: every input becomes a safe string, cleaning keeps sentiment marks."""

import math

from hypothesis import given
from hypothesis import strategies as st

from libs.features.text import MAX_TEXT_CHARS, as_text, clean_text, combine


def test_none_and_nan_become_empty() -> None:
    assert as_text(None) == ""
    assert as_text(math.nan) == ""


def test_lone_surrogate_is_replaced_so_text_encodes_to_utf8() -> None:
    text = as_text("bad \ud800 escape")
    assert text.encode("utf-8") == b"bad ? escape"


def test_text_is_bounded() -> None:
    assert len(as_text("x" * (MAX_TEXT_CHARS + 10))) == MAX_TEXT_CHARS
    assert len(combine("y" * MAX_TEXT_CHARS, "z" * MAX_TEXT_CHARS)) == MAX_TEXT_CHARS


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
