"""Features micro-benchmark: candidate kernel libraries, and the chosen kernels, per core.

Every candidate does the same task on the real Kindle reviews (both files, replicated):
clean the review text and split it into the contract's tokens, the work all of them can
do. The chosen kernels (`libs.features`, on Polars, with the token scan and TF-IDF
counting compiled by numba) are then timed on the whole job: text, clean text and
numeric features (`features_table`), TF-IDF vectors (`Tfidf.transform`, unigrams +
bigrams, 50,000 terms) beside scikit-learn's `TfidfVectorizer` with the same vocabulary,
and both; the per-row Python rules of contract 1.0.0 are the baseline. The chosen kernels
are called on record batches of `BATCH_ROWS`, as the Spark ETL calls them. Figures are
reviews per CPU-second (per core) in a process whose libraries are held to one thread.

`python -m tools.benchmarks.features [--quick]` measures and prints JSON lines; the
`features` suite of `tools/bench` runs it in such a process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable

from tools.benchmarks.report import Report, Row

BATCH_ROWS = 10_000
"""Rows per kernel call: Spark's Arrow record batch (`spark.sql.execution.arrow.maxRecordsPerBatch`)."""
ONE_THREAD = {"POLARS_MAX_THREADS": "1", "RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def run(report: Report, quick: bool) -> None:
    command = [sys.executable, "-m", "tools.benchmarks.features", *(["--quick"] if quick else [])]
    out = subprocess.run(
        command, env={**os.environ, **ONE_THREAD}, check=True, capture_output=True, text=True
    )
    for line in out.stdout.splitlines():
        measured = json.loads(line)
        report.add(Row("features", measured.pop("system"), measured.pop("settings"), measured))


def _clock(task: Callable[[], object], reviews: int, repeats: int) -> dict[str, float]:
    """The best of `repeats` runs after a warm-up (compiled patterns, the vocabulary's key
    table): reviews per CPU-second, and that run's CPU seconds."""
    task()
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        task()
        best = min(best, time.process_time() - started)
    return {"reviews_per_s_per_core": reviews / best, "cpu_s": best}


def _candidates(reviews: list[str]) -> dict[str, Callable[[], object]]:
    """Clean + tokenise, the same task, in each library (only `libs.features` is the product's)."""
    import pyarrow.compute as pc
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    from libs.features import CONTRACT, text_array
    from libs.features.cleaning import clean_texts
    from libs.features.tokens import unigrams
    from tests.fixtures.feature_reference import reference_clean

    token = re.compile(CONTRACT.tfidf.token_pattern)
    arrow = text_array(reviews)

    def python_re() -> object:
        return [token.findall(reference_clean(text)) for text in reviews]

    def pyarrow_compute() -> object:
        text = pc.utf8_lower(pc.utf8_normalize(pc.fill_null(arrow, ""), "NFKC"))
        for pattern, value in _RE2_STEPS:
            text = pc.replace_substring_regex(text, pattern, value)
        return pc.split_pattern(pc.utf8_trim(text, " "), " ")

    steps = [normalizers.NFKC(), normalizers.Lowercase()]
    steps += [normalizers.Replace(Regex(pattern), value) for pattern, value in _ONIG_STEPS]
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(CONTRACT.tfidf.token_pattern[4:]), "isolated")

    def hf_tokenizers() -> object:
        return [
            encoding.offsets
            for encoding in tokenizer.encode_batch([t if isinstance(t, str) else "" for t in reviews])
        ]

    def polars_kernels() -> object:
        return unigrams(clean_texts(arrow))

    return {
        "python re, per row (contract 1.0.0)": python_re,
        "pyarrow.compute (RE2)": pyarrow_compute,
        "tokenizers (onig, Rust)": hf_tokenizers,
        "polars + numba scan (libs.features)": polars_kernels,
    }


# The cleaning steps after NFKC and lower-casing, for the comparison candidates (RE2 has no
# look-around, Oniguruma has; neither decodes HTML entities, which they skip).
_RE2_STEPS = [
    (r"(?:https?://|www\.)\S+", " "),
    (r"<[^>]{0,200}>", " "),
    (r"(^|\D)82(?:1[1-9]|2\d|30)(\D|$)", r"\1 \2"),
    ("[\u2018\u2019\u02bc`]", "'"),
    (r"[^\pL\pN_\s'!?]+", " "),
    (r"!!+", "!"),
    (r"\?\?+", "?"),
    (r"\s+", " "),
]
_ONIG_STEPS = [
    (r"(?:https?://|www\.)\S+", " "),
    (r"<[^>]{0,200}>", " "),
    (r"(?<!\d)82(?:1[1-9]|2\d|30)(?!\d)", " "),
    ("[\u2018\u2019\u02bc`]", "'"),
    (r"[^\w\s'!?]+", " "),
    (r"!!+", "!"),
    (r"\?\?+", "?"),
    (r"\s+", " "),
]


def _kernels(reviews: list[str], summaries: list[object]) -> dict[tuple[str, str], Callable[[], object]]:
    """The whole feature job: the chosen kernels, and the per-row rules they replaced."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from libs.features import CONTRACT, Tfidf, features_table, text_array
    from tests.fixtures.feature_reference import reference_row, reference_vector

    arrow, arrow_summaries = text_array(reviews), text_array(summaries)
    cleaned = features_table(arrow, arrow_summaries)["clean_text"].combine_chunks()
    tfidf = Tfidf.fit(cleaned)
    spec, texts = CONTRACT.tfidf, cleaned.to_pylist()
    starts = range(0, len(reviews), BATCH_ROWS)
    batches = [(arrow.slice(i, BATCH_ROWS), arrow_summaries.slice(i, BATCH_ROWS)) for i in starts]
    cleaned_batches = [cleaned.slice(i, BATCH_ROWS) for i in starts]
    scikit = TfidfVectorizer(
        vocabulary=tfidf.terms,
        token_pattern=spec.token_pattern,
        ngram_range=(1, spec.ngram_max),
        sublinear_tf=spec.sublinear_tf,
        lowercase=False,
    ).fit(texts)

    def features() -> object:
        return [features_table(*batch) for batch in batches]

    def tfidf_transform() -> object:
        return [tfidf.transform(batch) for batch in cleaned_batches]

    def features_and_tfidf() -> object:
        return [tfidf.transform(features_table(*batch)["clean_text"].combine_chunks()) for batch in batches]

    def python_rows() -> object:
        pairs = zip(reviews, summaries, strict=True)
        return [
            reference_vector(tfidf, reference_row(review, summary)["clean_text"]) for review, summary in pairs
        ]

    chosen = "chosen kernels (libs.features)"
    return {
        (chosen, "features"): features,
        (chosen, "tfidf transform"): tfidf_transform,
        ("scikit-learn TfidfVectorizer, same vocabulary", "tfidf transform"): lambda: scikit.transform(texts),
        (chosen, "features + tfidf"): features_and_tfidf,
        ("python re, per row (contract 1.0.0)", "features + tfidf"): python_rows,
    }


def main() -> None:
    from tests import fixtures

    quick = "--quick" in sys.argv
    sample, recent = fixtures.kindle_sample(), fixtures.kindle_2018()
    copies = 1 if quick else 10
    reviews = [*sample["reviewText"].tolist(), *recent["reviewText"].tolist()] * copies
    summaries = [*sample["summary"].tolist(), *[None] * len(recent)] * copies
    repeats = 1 if quick else 3
    jobs = [(system, "clean + tokenise", task) for system, task in _candidates(reviews).items()]
    jobs += [(system, job, task) for (system, job), task in _kernels(reviews, summaries).items()]
    for system, job, task in jobs:
        settings = {"task": job, "reviews": len(reviews), "threads": 1}
        if system.startswith("chosen"):
            settings["batch_rows"] = BATCH_ROWS
        print(
            json.dumps({"system": system, "settings": settings, **_clock(task, len(reviews), repeats)}),
            flush=True,
        )


if __name__ == "__main__":
    main()
