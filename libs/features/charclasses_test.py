"""The kernels' character classes match Python's for every code point Python knows."""

import re
import unicodedata

import polars as pl
import pyarrow as pa
import pytest

from libs.features.charclasses import ASCII, SPACE_CHARS, UNICODE, Classes, classes_for, has_byte

PYTHON = {
    "word": lambda c: re.match(r"\w", c) is not None,
    "space": str.isspace,
    "letter": str.isalpha,
    "upper": str.isupper,
    "digit": lambda c: re.match(r"\d", c) is not None,
}


def _matches(chars: list[str], classes: Classes, name: str) -> list[bool]:
    return pl.Series(chars).str.contains(f"^[{getattr(classes, name)}]$").to_list()


@pytest.fixture(scope="module")
def assigned() -> list[str]:
    """Every code point Python 3.11 assigns (Unicode 14.0), surrogates excepted."""
    chars = (chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    return [c for c in chars if unicodedata.category(c) != "Cn"]


@pytest.mark.parametrize("name", list(PYTHON))
def test_unicode_classes_match_python_on_every_assigned_code_point(assigned: list[str], name: str) -> None:
    found = _matches(assigned, UNICODE, name)
    wrong = [f"U+{ord(c):04X}" for c, hit in zip(assigned, found, strict=True) if hit != PYTHON[name](c)]
    assert not wrong, f"{name}: {wrong[:20]}"


@pytest.mark.parametrize("name", list(PYTHON))
def test_ascii_classes_match_python_on_ascii(name: str) -> None:
    chars = [chr(c) for c in range(128)]
    assert _matches(chars, ASCII, name) == [PYTHON[name](c) for c in chars]


def test_space_chars_are_what_strip_removes() -> None:
    assert {c for c in map(chr, range(0x110000)) if not 0xD800 <= ord(c) <= 0xDFFF and c.isspace()} == set(
        SPACE_CHARS
    )


def test_lower_case_and_nfkc_match_python(assigned: list[str]) -> None:
    column = pl.Series(assigned)
    lower = column.str.to_lowercase().to_list()
    nfkc = column.str.normalize("NFKC").to_list()
    assert [c for c, low in zip(assigned, lower, strict=True) if low != c.lower()] == []
    assert [
        c for c, norm in zip(assigned, nfkc, strict=True) if norm != unicodedata.normalize("NFKC", c)
    ] == []
    assert pl.Series(["ΑΣ Σ.", "İ"]).str.to_lowercase().to_list() == [
        "ΑΣ Σ.".lower(),
        "İ".lower(),
    ]  # final sigma


def test_a_batch_gets_the_ascii_spelling_only_when_all_of_it_is_ascii() -> None:
    assert classes_for(pa.array(["plain", None]), None) is ASCII
    assert classes_for(pa.array(["plain"]), pa.array(["caf\u00e9"])) is UNICODE
    assert has_byte(b"&", pa.array(["a", "b &amp; c"])) and not has_byte(b"&", pa.array(["a"]), None)
