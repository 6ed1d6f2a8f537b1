"""Text normalisation shared by every feature: the one place input strings are made safe.

Reviews arrive from CSV files, Spark rows and JSON requests. Whatever arrives (None,
NaN, lone surrogates from bad JSON escapes, control characters, HTML remnants), the
features must be finite and identical on every path, so every path calls `as_text`
before anything else and `clean_text` for the clean-text features.
"""

from __future__ import annotations

import html
import math
import re
import unicodedata

# Texts longer than this are cut before feature extraction: the cost of a feature call
# must be bounded whatever a client sends (the service's own limit is lower).
MAX_TEXT_CHARS = 100_000

_URL = re.compile(r"(?:https?://|www\.)\S+")
_TAG = re.compile(r"<[^>]{0,200}>")
# The sample dump lost "&#;" around typographic entities (8211 dash ... 8230 ellipsis).
_ENTITY_DIGITS = re.compile(r"(?<!\d)82(?:1[1-9]|2\d|30)(?!\d)")
_APOSTROPHE = re.compile(r"[\u2018\u2019\u02bc`]")
_NON_WORD = re.compile(r"[^\w\s'!?]+")
_REPEATED_MARK = re.compile(r"([!?])\1+")


def as_text(value: object) -> str:
    """Any value as a valid, bounded Python string (None and NaN become empty)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = value if isinstance(value, str) else str(value)
    text = text[:MAX_TEXT_CHARS]
    # Lone surrogates cannot be encoded to UTF-8 (Arrow, Parquet and JSON all need it).
    return text.encode("utf-8", "replace").decode("utf-8")


def combine(review: object, summary: object = None) -> str:
    """The text a model reads: the summary (a strong signal when present) then the review."""
    review_text, summary_text = as_text(review).strip(), as_text(summary).strip()
    if summary_text and review_text:
        return f"{summary_text}. {review_text}"[:MAX_TEXT_CHARS]
    return summary_text or review_text


def clean_text(text: str) -> str:
    """Lower-cased text with URLs, HTML tags and entities removed and punctuation normalised.

    `!` and `?` survive (collapsed to one) because they carry sentiment; the
    Kindle dump's stripped HTML entities (`8220`, `8217`, ...) are dropped as noise.
    """
    text = html.unescape(unicodedata.normalize("NFKC", as_text(text))).lower()
    # The substring checks skip regexes that would find nothing (most reviews): the
    # cleaning cost is paid on every request and every ETL row.
    if "http" in text or "www." in text:
        text = _URL.sub(" ", text)
    if "<" in text:
        text = _TAG.sub(" ", text)
    if "82" in text:
        text = _ENTITY_DIGITS.sub(" ", text)
    text = _NON_WORD.sub(" ", _APOSTROPHE.sub("'", text))
    if "!!" in text or "??" in text:
        text = _REPEATED_MARK.sub(r"\1", text)
    return " ".join(text.split())
