"""A synthetic, clearly labelled Kindle-like review CSV, for a fresh machine with no data at hand.

Why: the pipeline's main command must run end to end without the real dump, and the model
it serves should then rate reviews by what their words mean. The rows follow the public
Kindle CSV layout (leading unnamed index column, `asin, helpful, overall, reviewText,
reviewTime, reviewerID, reviewerName, summary, unixReviewTime`) and carry the label
everywhere a human looks: ids start with `SYNTH`, the reviewer is `synthetic-generator`,
every summary starts with `[synthetic]`, and the extra column `synthetic` is `true`.

The opinions come from the VADER sentiment lexicon (`vader_lexicon.txt` of the MIT-licensed
`vaderSentiment` package, read at run time: thousands of words with the valence ten raters
gave them), so the model learns word polarity rather than a few templates: 5 and 1 stars
praise or pan with strong words (often boosted: "truly", "utterly"), 4 and 2 stars with
milder or hedged ones, and negation flips a word ("not good" in a 2-star review, "not
dull" in a 4-star one); 3 stars mix both polarities. Neutral sentences (genre, names,
reading details) surround them. The metrics of a model trained on it say nothing about
real reviews.

    python -m workflows.synthetic --rows 2000 --out /tmp/synthetic_kindle_reviews.csv
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path

import pandas as pd

_NAMES = ["Anna", "Ben", "Clara", "Dev", "Elena", "Farid", "Grace", "Hugo", "Iris", "Jonah", "Kira", "Liam"]
_GENRES = ["romance", "mystery", "thriller", "fantasy", "western", "memoir", "sci-fi", "cozy mystery"]
_DETAILS = [
    "I read it on my Kindle over {n} evenings.",
    "The {genre} part with {name} takes up half the book.",
    "{name} and {other} carry the story.",
    "It is book {n} of the series.",
    "Got it as a free download.",
    "The cover says {genre}, and it is.",
]
_ASPECTS = ["plot", "story", "writing", "cast", "ending", "pacing", "dialogue", "heroine", "premise"]
_OPINIONS = [
    "The {aspect} was {word}.",
    "I found the {aspect} {word}.",
    "{word} {aspect}.",
    "In a word: {word}.",
]
_NEGATED = ["The {aspect} was not {word}.", "Not {word} at all.", "I would never call the {aspect} {word}."]
_CONJUNCTIONS = ["and", "but", "while", "though"]
_BOOSTERS = ["really", "truly", "absolutely", "so", "very", "incredibly", "utterly"]
_HEDGES = ["a bit", "somewhat", "rather", "fairly", "slightly"]
_STAR_WEIGHTS = (0.05, 0.07, 0.13, 0.27, 0.48)  # roughly the real Kindle mix

_LEXICON = ("vaderSentiment", "vader_lexicon.txt")
_STRONG = 2.0
"""|Mean valence| from which a word is strong enough for 5 or 1 stars (VADER's scale is -4..4)."""
_LUKEWARM = 0.5
"""|Mean valence| from which a word is lukewarm (below 1: an opinion word)."""
# Valid polarity, but not prose a demo should print: profanity, slurs and crime words, then
# the lexicon's chat acronyms (lol, xoxo, wtf ...), which would crowd out the short words.
_EXCLUDED = re.compile(
    r"ass$|asshole|bastard|bitch|bullshit|cocksuck|crap|cunt|damn|dick|dipshit|douche|dumbass|fag|"
    r"fuck|fuk|goddam|jackass|kill|molest|murder|nigg|pervert|piss|rape|rapist|retard|shit|slut|"
    r"smartass|suicid|tard|terror|tortur|twat|wank|whore|"
    r"(?:aayf|afu|alol|ambw|aml|aok|atab|awol|ayor|bfd|bfe|bff|bsod|btd|bwaha\w*|cwot|doa|fab|fav|"
    r"fave|fcol|fkm|foaf|ftw|fwb|gga|gla|hagd|hagn|hago|haha\w*|hak|hhoj|hhok|hugz|ilu|ily|iyq|"
    r"jho|kewl|kfy|kia|kmuf|lmao|lmfao|lmso|lol\w*|lulz|lya|lyb|lyl|lylb|mia|mml|muah|musm|mwah|"
    r"nfc|nfw|nimby|nitl|nme|noyb|ntmu|pita|ptl|rofl\w*|rotf\w*|sete|sfete|sgtm|smh|sux|swak|tgif|"
    r"thx|tia|tnx|tyvm|ugh|urw|vbg|vip|vwd|vwp|woo|wtf|wtg|wth|xlnt|xoxo|yay|yep|yvw|ywia)$"
)


@dataclass(frozen=True)
class Pool:
    """Words of one polarity and strength, drawn with weight 1/length²: shorter words are the
    commoner ones (Zipf's law of abbreviation), so "good" and "dull" recur as in real reviews
    and a sample of sensible size still teaches them, while the long tail shows up now and then."""

    words: tuple[str, ...]
    cum_weights: tuple[float, ...]

    @classmethod
    def of(cls, words: list[str]) -> Pool:
        ordered = tuple(sorted(words))  # the draws depend on the words, not the file's order
        return cls(ordered, tuple(itertools.accumulate(len(word) ** -2.0 for word in ordered)))

    def draw(self, rng: random.Random) -> str:
        return rng.choices(self.words, cum_weights=self.cum_weights)[0]


@dataclass(frozen=True)
class Lexicon:
    """The opinion words, by (positive, strong), and the lukewarm ones of 3-star reviews."""

    pools: dict[tuple[bool, bool], Pool]
    lukewarm: Pool

    @classmethod
    def parse(cls, text: str) -> Lexicon:
        """Words of the lexicon's `token, mean, std, [ten ratings]` lines that can carry an opinion.

        Kept: alphabetic words of 3+ letters (no emoticons), no plural (the singular is there),
        none of `_EXCLUDED`. Opinion words: |mean| >= 1 and at least 9 of the 10 raters on the
        mean's side (clear polarity); strong from `_STRONG`. Lukewarm: `_LUKEWARM` <= |mean| < 1
        ("okay", "fine", "adequate"), either sign, 7 of 10 raters on the mean's side.
        """
        found: dict[tuple[bool, bool], list[str]] = {(p, s): [] for p in (True, False) for s in (True, False)}
        lukewarm: list[str] = []
        for line in text.splitlines():
            token, mean_text, _, ratings_text = line.split("\t")
            mean = float(mean_text)
            if not re.fullmatch(r"[a-z]{3,}", token) or abs(mean) < _LUKEWARM or _EXCLUDED.match(token):
                continue
            if token.endswith("s") and not token.endswith(("ous", "ss")):
                continue
            agreeing = sum(1 for rating in json.loads(ratings_text) if rating * mean > 0)
            if abs(mean) < 1.0 and agreeing >= 7:
                lukewarm.append(token)
            elif abs(mean) >= 1.0 and agreeing >= 9:
                found[(mean > 0, abs(mean) >= _STRONG)].append(token)
        return cls({key: Pool.of(words) for key, words in found.items()}, Pool.of(lukewarm))

    def pool(self, rng: random.Random, positive: bool, strong: bool | None = None) -> Pool:
        """The strong or the mild words of a polarity; `None`: either, as often."""
        return self.pools[(positive, rng.random() < 0.5 if strong is None else strong)]


@functools.cache
def lexicon() -> Lexicon:
    """The bundled VADER lexicon, parsed once per process."""
    package, name = _LEXICON
    return Lexicon.parse(files(package).joinpath(name).read_text(encoding="utf-8"))


def _opinion(rng: random.Random, phrase: str, negated: bool = False) -> str:
    template = rng.choice(_NEGATED if negated else _OPINIONS)
    sentence = template.format(aspect=rng.choice(_ASPECTS), word=phrase)
    return sentence[0].upper() + sentence[1:]


def _graded(rng: random.Random, pool: Pool, grades: list[str]) -> str:
    """One word of `pool` or two joined by "and", half the time after a booster or hedge."""
    phrase = " and ".join(pool.draw(rng) for _ in range(rng.choice((1, 2))))
    return f"{rng.choice(grades)} {phrase}" if rng.random() < 0.5 else phrase


def _pair(rng: random.Random, first: str, second: str) -> str:
    """Two aspects in one sentence; every star uses it, so neither "but" nor a second "was"
    gives a rating away."""
    aspect, other = rng.sample(_ASPECTS, k=2)
    return f"The {aspect} was {first}, {rng.choice(_CONJUNCTIONS)} the {other} was {second}."


def _opinions(rng: random.Random, star: int, words: Lexicon) -> tuple[list[str], str]:
    """The opinion sentences of a `star` review and its summary (without the label).

    5 and 1 stars use strong words (boosted half the time), 4 and 2 strong or mild ones
    (hedged half the time), 3 one word of each polarity and lukewarm ones. Any review may
    negate a word of the other polarity ("not dull" praises, "not good" pans), so "not" alone
    tells no rating.
    """
    more = rng.randrange(4)  # opinions besides the two-aspect one: the length tells no rating
    if star == 3:
        good, bad = words.pool(rng, True).draw(rng), words.pool(rng, False).draw(rng)
        sentences = [
            _pair(rng, *rng.sample((good, bad), k=2)),
            *(_opinion(rng, _graded(rng, words.lukewarm, _HEDGES)) for _ in range(more)),
        ]
        summary = rng.choice((f"{good} {rng.choice(_CONJUNCTIONS)} {bad}", words.lukewarm.draw(rng)))
        negated = words.pool(rng, rng.random() < 0.5, strong=False)
    else:
        praise, strong = star > 3, (True if star in (1, 5) else None)
        grades = _BOOSTERS if strong else _HEDGES
        sentences = [_pair(rng, *(words.pool(rng, praise, strong).draw(rng) for _ in range(2)))]
        sentences += [
            _opinion(rng, _graded(rng, words.pool(rng, praise, strong), grades)) for _ in range(more)
        ]
        summary = words.pool(rng, praise, strong).draw(rng)
        if rng.random() < 0.5:
            summary = f"{rng.choice(grades)} {summary}"
        negated = words.pool(rng, not praise, strong=False if praise else None)
    if rng.random() < 0.4:
        sentences.append(_opinion(rng, negated.draw(rng), negated=True))
    if rng.random() < 0.3:
        summary += "!"
    return sentences, summary[0].upper() + summary[1:]


def generate(rows: int = 2000, seed: int = 7) -> pd.DataFrame:
    """`rows` synthetic reviews; deterministic for a seed (and the pinned lexicon)."""
    rng = random.Random(seed)
    words = lexicon()
    start = int(datetime(2010, 1, 1, tzinfo=UTC).timestamp())
    records = []
    for i in range(rows):
        star = rng.choices(range(1, 6), weights=_STAR_WEIGHTS)[0]
        parts, summary = _opinions(rng, star, words)
        for template in rng.sample(_DETAILS, k=rng.randrange(4)):
            parts.append(
                template.format(
                    n=rng.randrange(2, 9),
                    genre=rng.choice(_GENRES),
                    name=rng.choice(_NAMES),
                    other=rng.choice(_NAMES),
                )
            )
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
                "summary": f"[synthetic] {summary}",
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
