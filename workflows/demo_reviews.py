"""The three reviews the README's main job sends the service it has just started.

Why one module: `tools/run.sh` prints the service's answers to them, and
`workflows/synthetic_test.py` checks that a model trained on the default synthetic sample
rates the clearly positive one positive and the clearly negative one negative; both must
read the same reviews.

    python -m workflows.demo_reviews   # label TAB the /predict request body, one line each
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class DemoReview:
    label: str
    text: str
    summary: str

    def request(self) -> str:
        """The JSON body of a `/predict` request for this review alone."""
        return json.dumps({"texts": [self.text], "summaries": [self.summary]})


POSITIVE = DemoReview(
    "clearly positive",
    "A wonderful book: the characters felt real and the ending was beautiful. I loved every page!",
    "Loved it",
)
NEGATIVE = DemoReview(
    "clearly negative",
    "Boring and badly written. The plot was a mess and the ending was terrible, a waste of money.",
    "Awful",
)
MIXED = DemoReview(
    "mixed",
    "Great characters and a charming setting, but the plot was slow and the ending disappointing.",
    "Good but flawed",
)
DEMO_REVIEWS = (POSITIVE, NEGATIVE, MIXED)


def main() -> None:
    for review in DEMO_REVIEWS:
        print(f"{review.label}\t{review.request()}")


if __name__ == "__main__":
    main()
