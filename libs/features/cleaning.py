"""Combining and cleaning texts: Polars string expressions over whole columns.

The rules (those of contract 1.0.0, in order, and one bound): the summary and the review
are stripped and joined as "summary. review"; cleaning applies Unicode NFKC and cuts its
result to `MAX_TEXT_CHARS` again (the bound: it changes only texts that NFKC lengthens
past the cut), decodes HTML entities exactly as `html.unescape` does, lower-cases,
removes URLs, HTML tags and the sample dump's leftover entity digits (`8220`...), turns
curly apostrophes into `'`, replaces everything but word characters, whitespace, `'`,
`!` and `?` by a space, collapses repeated `!`/`?` and all whitespace, and strips the
ends.

Most steps are expressions, so a batch runs them in one Polars query (a query costs tens
of microseconds per step whatever its size, which is what a single review pays). NFKC
and entities, which most reviews do not need, run only on the rows that do.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from libs.features.charclasses import ASCII, SPACE_CHARS, UNICODE, Classes, classes_for, has_byte, utf8_bytes
from libs.features.text import MAX_TEXT_CHARS, text_array

_TAG = r"<[^>]{0,200}>"
_APOSTROPHE = "[\u2018\u2019\u02bc`]"
# What `html.unescape` replaces: its own pattern (html/__init__.py, `_charref`).
_CHARREF = r"&(?:#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)"


@dataclass(frozen=True)
class _Patterns:
    url: str
    entity_digits: str
    separators: str


def _patterns(c: Classes) -> _Patterns:
    return _Patterns(
        url=rf"(?:https?://|www\.)[^{c.space}]+",
        # The dump lost "&#;" around typographic entities (8211 dash ... 8230 ellipsis). The
        # rule is "not next to another digit"; without look-around the neighbours are matched
        # and put back, so two entities one character apart need a second pass.
        entity_digits=rf"(^|[^{c.digit}])82(?:1[1-9]|2[{c.digit}]|30)([^{c.digit}]|$)",
        # "Everything but word characters, whitespace, ' ! ? becomes a space; then every run
        # of whitespace becomes one space" in one pass: a run of characters that are neither
        # word characters nor ' ! ?, unless it is a single plain space already.
        separators=rf"[^{c.word}'!?]*[^{c.word}'!? ][^{c.word}'!?]*| {{2,}}",
    )


_PATTERNS = {ASCII: _patterns(ASCII), UNICODE: _patterns(UNICODE)}


def combined(review: pl.Expr, summary: pl.Expr | None, bound: bool = True) -> pl.Expr:
    """The text a model reads: the summary (a strong signal when present), then the review.

    `bound=False` skips cutting to `MAX_TEXT_CHARS`, for inputs known to be short enough.
    """
    review = _cut(review.fill_null(""), bound).str.strip_chars(SPACE_CHARS)
    if summary is None:
        return review
    summary = _cut(summary.fill_null(""), bound).str.strip_chars(SPACE_CHARS)
    both = (summary != "") & (review != "")
    return _cut(
        pl.when(both).then(pl.concat_str(summary, pl.lit(". "), review)).otherwise(summary + review), bound
    )


def normalised(texts: pl.Series, unicode: bool = True, entities: bool = True) -> pl.Series:
    """The first cleaning steps, NFKC then `html.unescape`, on the rows that need them.

    NFKC can lengthen a text 18-fold (U+FDFA is 18 characters), so its result is cut to
    `MAX_TEXT_CHARS` again: the cut bounds the work of every later step, not only the
    input. A text whose NFKC form is within the cut is unchanged by it. The later steps
    cannot undo the bound: `html.unescape` never lengthens a text (every reference is
    longer than what it stands for) and lower-casing at most doubles it (U+0130 alone
    becomes two characters).

    `unicode`/`entities` False promise that no text has non-ASCII characters / `&`.
    """
    if unicode:
        texts = _on_rows(texts, texts.str.len_bytes() != texts.str.len_chars(), _nfkc)
    if entities:
        texts = _on_rows(texts, texts.str.contains("&", literal=True), _unescape)
    return texts


def cleaned(text: pl.Expr, classes: Classes = UNICODE) -> pl.Expr:
    """The remaining cleaning steps, on `normalised` text: lower case to stripped ends.

    `classes=ASCII` promises ASCII text (see `charclasses`).
    """
    p = _PATTERNS[classes]
    text = text.str.to_lowercase().str.replace_all(p.url, " ").str.replace_all(_TAG, " ")
    text = text.str.replace_all(p.entity_digits, "${1} ${2}").str.replace_all(p.entity_digits, "${1} ${2}")
    if classes is UNICODE:
        text = text.str.replace_all(_APOSTROPHE, "'")
    else:
        text = text.str.replace_all("`", "'", literal=True)
    text = text.str.replace_all(p.separators, " ").str.replace_all("!!+", "!").str.replace_all(r"\?\?+", "?")
    return text.str.strip_chars(" ")


def long_texts(*arrays: pa.Array | None) -> bool:
    """Whether the combined texts of these inputs could exceed `MAX_TEXT_CHARS` (from byte sizes)."""
    longest = [_longest_bytes(array) for array in arrays if array is not None]
    return sum(longest) + 2 > MAX_TEXT_CHARS


def clean_texts(texts: pa.Array) -> pa.Array:
    """A batch of texts cleaned (`normalised`, then `cleaned`)."""
    classes = classes_for(texts)
    column = pl.DataFrame({"text": texts}).select(_BOUNDED).to_series()
    decoded = normalised(column, unicode=classes is UNICODE, entities=has_byte(b"&", texts))
    return decoded.to_frame("text").select(_CLEANED[classes]).to_series().to_arrow()


_BOUNDED = pl.col("text").fill_null("").str.slice(0, MAX_TEXT_CHARS)
_CLEANED = {classes: cleaned(pl.col("text"), classes) for classes in (ASCII, UNICODE)}


def clean_text(text: object) -> str:
    """One text cleaned (`clean_texts` of a batch of one)."""
    return clean_texts(text_array([text]))[0].as_py()


def _cut(text: pl.Expr, bound: bool) -> pl.Expr:
    return text.str.slice(0, MAX_TEXT_CHARS) if bound else text


def _on_rows(texts: pl.Series, rows: pl.Series, step: Callable[[pl.Series], pl.Series]) -> pl.Series:
    """`step` applied to the selected rows only, in a new column (`texts` is left as it is)."""
    if not rows.any():
        return texts
    return texts.clone().scatter(np.flatnonzero(rows.to_numpy()), step(texts.filter(rows)))


def _nfkc(texts: pl.Series) -> pl.Series:
    return texts.str.normalize("NFKC").str.slice(0, MAX_TEXT_CHARS)


def _unescape(texts: pl.Series) -> pl.Series:
    """`html.unescape` on every text, run as one multi-pattern replacement.

    The entity references in the batch are found with `html.unescape`'s own pattern; each
    distinct one (a handful per batch) is decoded by `html.unescape` itself, so its full
    HTML5 table and its numeric-reference rules apply; longest first, leftmost matching
    then replaces exactly what `html.unescape` would.
    """
    found = texts.str.extract_all(_CHARREF).explode(empty_as_null=False, keep_nulls=False).unique()
    references = sorted(found.to_list(), key=len, reverse=True)
    if not references:
        return texts
    return texts.str.replace_many(references, [html.unescape(ref) for ref in references], leftmost=True)


def _longest_bytes(array: pa.Array) -> int:
    if not len(array):
        return 0
    _, offsets = utf8_bytes(array)
    return int(np.diff(offsets).max(initial=0))
