"""Quality: the training pipeline with its defaults against a plain baseline, on reviews neither saw.

How the evaluation set is drawn: the newest reviews held out by source. The 2018 Kindle
book file is split by a seeded hash of each review's text; one half (about 2,000 reviews,
~400 per star) is the evaluation set, never given to the pipeline. The pipeline's input
is the whole 2006-2014 sample plus the other 2018 half; the baseline trains on those very
rows. So both are scored on newer reviews than most of what they trained on.

For each kind (its candidate: the configuration the search chose, refit on train +
validation; the transformer's best trial; the ensemble's vote and weight) and for the
champion the pipeline registered: macro-F1, per-star F1, binary accuracy and the ordinal
metrics (MAE in stars, off-by-one accuracy, quadratic-weighted kappa) on the
evaluation set, and the kind's training time (its MLflow run: study, refit, export);
beside them the baseline, a plain
`TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)` +
`LogisticRegression(class_weight="balanced")` on the same text (summary + review).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import make_pipeline

from libs.features import combine
from libs.models.bundle import load_bundle
from libs.models.kinds import LABELS
from libs.models.registry import CHAMPION, MODEL_NAME
from libs.models.training.evaluation import binary_accuracy, ordinal_metrics
from libs.models.training.stages import CANDIDATE_ARTIFACT
from tests import fixtures
from tools.benchmarks.report import Report, Row

QUICK = {"training_rows": 600, "evaluation_rows": 300, "trials": 1, "kinds": "logreg"}
TARGET_MARGIN = 0.03
"""Macro-F1 the champion must gain over the baseline on the evaluation set."""


def held_out_by_source(seed: int = 42) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pipeline input, evaluation set): the evaluation set is half of the 2018 file."""
    sample = fixtures.kindle_sample()[["reviewText", "summary", "overall", "unixReviewTime"]]
    recent = fixtures.kindle_2018().dropna(subset=["reviewText"])[["reviewText", "overall"]]
    held = recent["reviewText"].map(
        lambda text: int(hashlib.sha256(f"{seed}|{text}".encode()).hexdigest(), 16) % 2 == 0
    )
    training = pd.concat([sample, recent[~held]], ignore_index=True)
    return training, recent[held].reset_index(drop=True)


def _texts(frame: pd.DataFrame) -> list[str]:
    summaries = frame["summary"] if "summary" in frame else [None] * len(frame)
    return [combine(review, summary) for review, summary in zip(frame["reviewText"], summaries, strict=True)]


def scores(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    per_star = f1_score(truth, predicted, labels=LABELS, average=None, zero_division=0)
    return {
        "macro_f1": float(np.mean(per_star)),
        **{f"f1_{star}": float(value) for star, value in zip(LABELS, per_star, strict=True)},
        "binary_accuracy": binary_accuracy(truth, predicted),
        **ordinal_metrics(truth, predicted),
    }


def baseline(training: pd.DataFrame) -> Any:
    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        LogisticRegression(class_weight="balanced", max_iter=3000),
    )
    return model.fit(_texts(training), training["overall"].astype(int).to_numpy())


def run_pipeline(training: pd.DataFrame, work: Path, quick: bool) -> tuple[str, Any]:
    """The training pipeline with its defaults (quick: fewer trials, one kind) in private stores."""
    from workflows.pipeline import training_pipeline
    from workflows.settings import PipelineSettings

    folder = work / "input"
    folder.mkdir()
    training.to_csv(folder / "reviews.csv", index=False)
    settings: dict[str, Any] = {"output_dir": work / "runs", "build_bento": False}
    if quick:
        settings |= {"kinds": QUICK["kinds"], "trials": QUICK["trials"]}
    saved = dict(os.environ)
    os.environ["HOME"] = str(work / "home")  # a private Flyte cache: a run from scratch
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    try:
        (work / "home").mkdir()
        summary = training_pipeline(input=str(folder), settings=PipelineSettings(**settings))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    from mlflow import MlflowClient

    uri = f"sqlite:///{(work / 'runs' / 'mlflow.db').resolve()}"
    return summary, MlflowClient(tracking_uri=uri, registry_uri=uri)


def bundles(client: Any, work: Path) -> tuple[dict[str, Path], dict[str, str], dict[str, float]]:
    """({kind: candidate bundle, "champion": its bundle}, {kind: the configuration chosen},
    {kind: training seconds}) of the run that made the champion."""
    champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    parent = client.get_run(champion.run_id)
    kinds = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    found, chosen, seconds = {}, {}, {}
    for run in kinds:
        kind = run.data.tags["kind"]
        seconds[kind] = (run.info.end_time - run.info.start_time) / 1000
        found[kind] = Path(client.download_artifacts(run.info.run_id, CANDIDATE_ARTIFACT, str(work / kind)))
        chosen[kind] = " ".join(
            f"{key.removeprefix('best_')}={value}"
            for key, value in sorted(run.data.params.items())
            if key.startswith("best_")
        )
    model = Path(client.download_artifacts(champion.run_id, "champion_model", str(work / "champion")))
    found["champion"] = next(model.rglob("manifest.json")).parent
    return found, chosen, seconds


def run(report: Report, quick: bool) -> None:
    training, evaluation = held_out_by_source()
    if quick:
        training = training.sample(n=QUICK["training_rows"], random_state=1)
        evaluation = evaluation.sample(n=QUICK["evaluation_rows"], random_state=1)
    truth = evaluation["overall"].astype(int).to_numpy()
    base = {
        "training_rows": len(training),
        "evaluation_rows": len(evaluation),
        "evaluation": "2018 half, by hash",
    }
    with tempfile.TemporaryDirectory(prefix="quality-bench-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        summary, client = run_pipeline(training, work, quick)
        seconds = time.perf_counter() - started
        champion_kind = next(
            line.split(": ")[1] for line in summary.splitlines() if line.startswith("champion: ")
        )
        results: dict[str, dict[str, float]] = {}
        found, chosen, train_seconds = bundles(client, work)
        for name, path in sorted(found.items()):
            predicted = np.asarray(LABELS)[
                load_bundle(path).predict_proba(evaluation["reviewText"].tolist()).argmax(axis=1)
            ]
            results[name] = scores(truth, predicted)
            system = f"champion ({champion_kind})" if name == "champion" else name
            settings = (
                {**base, "pipeline_s": round(seconds)}
                if name == "champion"
                else {**base, "chosen": chosen[name], "train_s": round(train_seconds[name])}
            )
            report.add(Row("quality", system, settings, results[name]))
    plain = baseline(training).predict(_texts(evaluation))
    results["baseline"] = scores(truth, plain)
    report.add(Row("quality", "baseline: tfidf + logreg", base, results["baseline"]))
    margin = results["champion"]["macro_f1"] - results["baseline"]["macro_f1"]
    report.add(
        Row(
            "quality",
            "champion - baseline",
            base,
            {
                "macro_f1_difference": margin,
                "champion_at_least_baseline": str(margin >= 0),
                f"target_plus_{TARGET_MARGIN:g}_met": str(margin >= TARGET_MARGIN),
            },
        )
    )
