"""The batch kernels follow the feature rules as first written, per row, in plain Python.

`tests.fixtures.feature_reference` holds those rules (the specification): any text, in
any batch, must give exactly their text, clean text, counts, ratios and tokens. TF-IDF
values may differ from the reference's in the last places only (1.1.0 sums norms in a
fixed order; the reference uses BLAS's dot product).
"""

import math

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.features import Tfidf, compute_features, tokenize
from tests import fixtures
from tests.fixtures.feature_reference import reference_row, reference_tokens, reference_vector

# Texts built to hit every rule: markup, entities, URLs, dump digits, marks, apostrophes,
# whitespace of all kinds, other scripts, compatibility characters and lone surrogates.
pieces = st.sampled_from(
    [
        "GREAT",
        "book",
        "it's",
        "'tis",
        "a",
        "I",
        " ",
        "  ",
        "\t",
        "\n",
        "\x1c",
        "\u00a0",
        "\u3000",
        "!",
        "!!",
        "??",
        "?!?",
        ".",
        ",",
        "...",
        "<b>",
        "</p>",
        "<a href='x'>",
        "<",
        ">",
        "&amp;",
        "&lt;b&gt;",
        "&quot;",
        "&#8220;",
        "&#x27;",
        "&amp",
        "&ampx;",
        "&notin;",
        "&noti",
        "&#0;",
        "&#128;",
        "8220",
        "8221x8222",
        "82",
        "1982",
        "http://example.com/x?y=1",
        "www.example.org",
        "https://a",
        "\u2019",
        "\u2018",
        "\u02bc",
        "`",
        "_",
        "caf\u00e9",
        "\u00c9L\u00c8VE",
        "\ufb01ne",
        "\u2460",
        "\u24b6",
        "\u2160",
        "\u0130",
        "\u03a3\u0391\u03a3",
        "\u65e5\u672c",
        "\U0001f600",
        "\u0928\u092e\u0938\u094d\u0924\u0947",
        "\ud800",
        "\x00",
    ]
)
# Code points Python 3.11 does not know (Unicode 14.0) follow newer tables (`charclasses`).
known = st.characters(exclude_categories=("Cn",))
texts = st.one_of(
    st.lists(pieces, max_size=12).map("".join), st.text(known, max_size=40), st.none(), st.just(math.nan)
)


def _same_rows(reviews: list, summaries: list) -> None:
    found = compute_features(reviews, summaries)
    expected = pd.DataFrame(
        [reference_row(r, s) for r, s in zip(reviews, summaries, strict=True)], columns=found.columns
    )
    for column in found.columns:
        assert found[column].tolist() == expected[column].tolist(), column
    for clean in found["clean_text"]:
        assert tokenize(clean) == reference_tokens(clean)


@settings(max_examples=400, deadline=None)
@given(st.lists(texts, min_size=1, max_size=6), st.lists(texts, min_size=6, max_size=6))
def test_any_batch_follows_the_rules(reviews: list, summaries: list) -> None:
    _same_rows(reviews, summaries[: len(reviews)])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(max_codepoint=127), max_size=60), min_size=1, max_size=6))
def test_ascii_batches_follow_the_rules(reviews: list) -> None:
    _same_rows(reviews, [None] * len(reviews))


def test_real_reviews_follow_the_rules() -> None:
    sample = fixtures.kindle_sample()
    _same_rows(sample["reviewText"].tolist()[:1500], sample["summary"].tolist()[:1500])


def test_tfidf_vectors_are_the_reference_but_for_the_last_places() -> None:
    cleaned = compute_features(fixtures.kindle_2018()["reviewText"].tolist())["clean_text"].tolist()
    tfidf = Tfidf.fit(cleaned)
    matrix = tfidf.transform(cleaned)
    for row, clean in enumerate(cleaned[:2000]):
        keys, values = reference_vector(tfidf, clean)
        assert matrix[row].indices.tolist() == keys
        np.testing.assert_allclose(matrix[row].data, values, rtol=1e-15, atol=0)
