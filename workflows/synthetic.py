"""A synthetic, clearly labelled Kindle-like review CSV, for a fresh machine with no data at hand.

Why: the pipeline's main command must run end to end without the real dump. The rows
follow the public Kindle CSV layout (leading unnamed index column, `asin, helpful,
overall, reviewText, reviewTime, reviewerID, reviewerName, summary, unixReviewTime`) and
carry the label everywhere a human looks: ids start with `SYNTH`, the reviewer is
`synthetic-generator`, every summary starts with `[synthetic]`, and the extra column
`synthetic` is `true`. Texts are templated per star rating so a model learns something,
but their metrics say nothing about real reviews.

    python -m workflows.synthetic --rows 2000 --out /tmp/synthetic_kindle_reviews.csv
"""

from __future__ import annotations

import argparse
import random
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

_OPENERS = {
    1: ["I could not finish this book.", "What a waste of money.", "Terrible from the first page."],
    2: ["Disappointing read.", "I expected much more.", "Not my cup of tea at all."],
    3: ["An okay story.", "It was fine, nothing special.", "Average book with some good moments."],
    4: ["A really good read.", "I enjoyed this book.", "Well written and engaging."],
    5: ["Absolutely loved it!", "One of the best books I have read!", "Wonderful, could not put it down!"],
}
_BODIES = {
    1: ["The plot made no sense and the editing was awful.", "Boring characters, endless typos."],
    2: ["The characters were flat and the ending rushed.", "Slow pacing and a predictable plot."],
    3: ["Some chapters dragged but the ending was decent.", "The characters were fine, the plot thin."],
    4: ["The characters felt real and the plot kept me reading.", "Good pacing and a satisfying end."],
    5: ["Brilliant characters, a gripping plot and a perfect ending.", "Beautifully written, I cried."],
}
_NAMES = ["Anna", "Ben", "Clara", "Dev", "Elena", "Farid", "Grace", "Hugo", "Iris", "Jonah", "Kira", "Liam"]
_GENRES = ["romance", "mystery", "thriller", "fantasy", "western", "memoir", "sci-fi", "cozy mystery"]
_DETAILS = [
    "I read it on my Kindle over {n} evenings.",
    "The {genre} part with {name} was {adverb} {adjective}.",
    "{name} and {other} carry the story.",
    "It is book {n} of the series.",
    "Got it as a free download.",
    "The cover says {genre}, and it is.",
]
_ADJECTIVES = {
    1: ["painful", "dull", "annoying"],
    2: ["weak", "bland", "forgettable"],
    3: ["decent", "uneven", "acceptable"],
    4: ["charming", "solid", "enjoyable"],
    5: ["stunning", "magical", "unforgettable"],
}
_SUMMARIES = {1: "Awful", 2: "Meh", 3: "It was ok", 4: "Good read", 5: "Loved it"}
_STAR_WEIGHTS = (0.05, 0.07, 0.13, 0.27, 0.48)  # roughly the real Kindle mix


def generate(rows: int = 2000, seed: int = 7) -> pd.DataFrame:
    """`rows` synthetic reviews; deterministic for a seed."""
    rng = random.Random(seed)
    start = int(datetime(2010, 1, 1, tzinfo=UTC).timestamp())
    records = []
    for i in range(rows):
        star = rng.choices(range(1, 6), weights=_STAR_WEIGHTS)[0]
        # A neighbouring star's sentence now and then keeps the task from being trivial.
        other = min(5, max(1, star + rng.choice((-1, 1))))
        parts = [rng.choice(_OPENERS[star]), rng.choice(_BODIES[star])]
        for template in rng.sample(_DETAILS, k=2):
            parts.append(
                template.format(
                    n=rng.randrange(2, 9),
                    genre=rng.choice(_GENRES),
                    name=rng.choice(_NAMES),
                    other=rng.choice(_NAMES),
                    adverb=rng.choice(["really", "quite", "so", "rather"]),
                    adjective=rng.choice(_ADJECTIVES[star]),
                )
            )
        if rng.random() < 0.3:
            parts.append(rng.choice(_BODIES[other]))
        rng.shuffle(parts)
        unix = start + rng.randrange(0, 4 * 365 * 86400)
        records.append(
            {
                "asin": f"SYNTH{rng.randrange(10**5):05d}",
                "helpful": "[0, 0]",
                "overall": star,
                "reviewText": " ".join(parts),
                "reviewTime": datetime.fromtimestamp(unix, tz=UTC).strftime("%m %d, %Y"),
                "reviewerID": f"SYNTHR{i:06d}",
                "reviewerName": "synthetic-generator",
                "summary": f"[synthetic] {_SUMMARIES[star]}",
                "unixReviewTime": unix,
                "synthetic": True,
            }
        )
    return pd.DataFrame.from_records(records)


def write(path: Path, rows: int = 2000, seed: int = 7) -> Path:
    """Writes the CSV with the public dump's leading unnamed index column."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    generate(rows, seed).to_csv(path, index=True)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a synthetic (clearly labelled) Kindle review CSV.")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("runs/synthetic_kindle_reviews.csv"))
    args = parser.parse_args(argv)
    print(write(args.out, args.rows, args.seed))


if __name__ == "__main__":
    main()
