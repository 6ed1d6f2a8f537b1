"""The compiled kernels follow the reference rules on texts built to break them.

`rules_test` checks typical hostile batches; these are the extremes that the kernels'
buffers and bounds must survive: texts holding more terms than bytes (`!?` is two bytes
and three terms), runs of marks, apostrophes and marks between letters, every Unicode
general category, lone surrogates, and texts at and past `MAX_TEXT_CHARS`, among them
texts that NFKC lengthens 18-fold. Batches repeat their short texts so that the counting
pass's output arrays run full at every point of a text: numba checks no bounds, so an
overflow is silent corruption, seen here as a wrong row or a refused batch.
"""

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse

from libs.features import MAX_TEXT_CHARS, Tfidf, compute_features, tokenize
from libs.features.cleaning import normalised
from libs.features.contract import TfidfSpec
from tests.fixtures.feature_reference import reference_row, reference_tokens, reference_vector

# Every term of a batch is in its vocabulary, so every term is counted and written out.
EVERY_TERM = TfidfSpec(min_df=1, max_features=10**7)

# Unassigned code points (Cn) are left out: they follow newer Unicode tables than Python's
# (`charclasses`). Cs is the lone surrogates.
CATEGORIES = (
    *("Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No"),
    *("Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So"),
    *("Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co"),
)
marks = st.text(st.sampled_from("!? "), min_size=1, max_size=12)
# Letters, apostrophes (curly ones become '), marks, NFKC's longest expansion (U+FDFA),
# lower-casing's (U+0130) and lone surrogates, to be joined in any order.
pieces = st.sampled_from(
    [
        *("a", "b", "ab", "\u00e9", "'", "''", "`", "\u2019", "!", "?", " "),
        *("\ufdfa", "\u0130", "\ud800", "\udfff"),
    ]
)
mixed = st.lists(pieces, min_size=1, max_size=16).map("".join)
one_category = st.sampled_from(CATEGORIES).flatmap(
    lambda category: st.text(st.characters(categories=(category,)), min_size=1, max_size=12)
)
short = st.one_of(marks, mixed, one_category)


def _repeated(piece: str, length: int) -> str:
    return (piece * (length // len(piece) + 1))[:length]


longest = st.builds(_repeated, short, st.integers(MAX_TEXT_CHARS - 2, MAX_TEXT_CHARS + 2))


def _same_as_reference(reviews: list[str]) -> None:
    """Features, tokens and TF-IDF rows of the batch are the reference's, row by row."""
    found = compute_features(reviews)
    expected = {review: reference_row(review, None) for review in set(reviews)}
    for column in found.columns:
        assert found[column].tolist() == [expected[review][column] for review in reviews], column
    cleaned = found["clean_text"].tolist()
    for clean in set(cleaned):
        assert tokenize(clean) == reference_tokens(clean)
    tfidf = Tfidf.fit([*cleaned, "!?"], EVERY_TERM)
    _same_vectors(tfidf, cleaned)


def _same_vectors(tfidf: Tfidf, cleaned: list[str]) -> None:
    matrix = tfidf.transform(cleaned)
    assert isinstance(matrix, sparse.csr_matrix) and matrix.shape[0] == len(cleaned)
    vectors = {clean: reference_vector(tfidf, clean) for clean in set(cleaned)}
    for row, clean in enumerate(cleaned):
        keys, values = vectors[clean]
        row_slice = slice(matrix.indptr[row], matrix.indptr[row + 1])
        assert matrix.indices[row_slice].tolist() == keys
        # The kernels sum a norm in one fixed order and the reference with BLAS: the
        # difference grows with the number of terms, up to some units in the 13th place.
        np.testing.assert_allclose(matrix.data[row_slice], values, rtol=1e-12, atol=0)


@settings(max_examples=200, deadline=None)
@given(st.lists(short, min_size=1, max_size=4), st.integers(1, 200), st.lists(longest, max_size=1))
def test_adversarial_batches_follow_the_rules(shorts: list[str], repeats: int, longs: list[str]) -> None:
    # Apart: a long text in the batch would leave its short texts room to spare.
    _same_as_reference(shorts * repeats)
    _same_as_reference([*longs, *shorts])


def test_texts_with_more_terms_than_bytes_are_counted_in_batches_of_every_size() -> None:
    """`!?` holds three terms in two bytes; a batch of them once wrote past its buffers."""
    marks_only = ["!?", "!?" * 5000]
    tfidf = Tfidf.fit(compute_features(marks_only)["clean_text"].tolist(), EVERY_TERM)
    _same_vectors(tfidf, marks_only)
    for size in [*range(1, 300), 1000]:
        _same_vectors(tfidf, ["!?"] * size)


def test_nfkc_never_lengthens_a_text_past_the_cut() -> None:
    """U+FDFA is 18 characters under NFKC: the regex passes after it get at most the cut."""
    within, past = "\ufdfa" * (MAX_TEXT_CHARS // 18), "\ufdfa" * 20_000
    lengths = normalised(pl.Series([within, past])).str.len_chars().to_list()
    assert lengths == [MAX_TEXT_CHARS // 18 * 18, MAX_TEXT_CHARS]
