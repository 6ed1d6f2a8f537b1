"""Quality on real data: every scikit-learn kind on the Kindle sample, champion scored on test.

    python -m libs.models.quality_report [--trials N] [--timeout S] [--output DIR]

Stratified 70/15/15 split of fixtures.kindle_sample() (seed 42), summary + review text,
TF-IDF fitted on train only; selection on validation macro-F1, test reported once.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from libs.features import CLEAN_COLUMN, Tfidf
from libs.models.data import labelled_features, labels_of, stratified_split
from libs.models.evaluation import evaluate
from libs.models.kinds import SKLEARN_KINDS, ModelKind
from libs.models.settings import TrainingSettings
from libs.models.training import select_champion, train_kind


def quality_splits(
    reviews: pd.DataFrame, seed: int = 42
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, Tfidf]:
    """(train, val, test, TF-IDF): the stratified 70/15/15 split, TF-IDF fitted on train only."""
    train_df, val_df, test_df = stratified_split(labelled_features(reviews), seed=seed)
    return train_df, val_df, test_df, Tfidf.fit(train_df[CLEAN_COLUMN].tolist())


def search_settings(
    kinds: Sequence[ModelKind], trials: int, timeout_s: float, output: Path
) -> TrainingSettings:
    """HPO that compares kinds on quality alone: no latency budget rules a trial out."""
    return TrainingSettings(
        kinds=tuple(kinds), n_trials=trials, timeout_s=timeout_s, output_dir=output, max_latency_ms=1e9
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12, help="Optuna trials per kind")
    parser.add_argument("--timeout", type=float, default=120.0, help="Optuna seconds per kind")
    parser.add_argument("--output", type=Path, default=None, help="reports and studies (default: temp)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from tests import fixtures  # real data lives beside the checkout; only this script needs it

    started = time.perf_counter()
    output = args.output or Path(tempfile.mkdtemp(prefix="kindle-quality-"))
    train_df, val_df, test_df, tfidf = quality_splits(fixtures.kindle_sample())
    settings = search_settings(SKLEARN_KINDS, args.trials, args.timeout, output)
    results = [train_kind(kind, train_df, val_df, settings, tfidf) for kind in settings.kinds]
    champion = select_champion(results)
    test = evaluate(champion.estimator, test_df, labels_of(test_df), output / "reports" / "champion", "test")
    print(f"\nrows train/val/test: {len(train_df)}/{len(val_df)}/{len(test_df)}; TF-IDF terms {tfidf.size}")
    print(f"{'kind':<8} {'val macro-F1':>12} {'p50 ms':>8} {'trials':>6}  params")
    for result in results:
        print(
            f"{result.kind.value:<8} {result.val_macro_f1:>12.4f} {result.latency_ms:>8.2f} "
            f"{result.trials:>6}  {result.params}"
        )
    m = test.metrics
    print(
        f"champion {champion.kind.value}: test macro-F1 {m['macro_f1']:.4f}, accuracy {m['accuracy']:.4f}, "
        f"binary accuracy {m['binary_accuracy']:.4f}, weighted F1 {m['weighted_f1']:.4f}"
    )
    print(f"reports in {output}; {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
