"""Champion selection (validation macro-F1) and its test metrics and plots.

Why selection uses validation and never test: test is looked at once, for the chosen
model, so its numbers are an honest estimate of what the service will do. Test metrics
and plots (confusion matrix, PR/ROC curves, misclassified rows, end-to-end latency) come
from libs.models' `evaluate`, the same report every training run gets.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: tasks run without a display

import matplotlib.pyplot as plt
import pandas as pd
from flytekit import Resources, current_context, task
from flytekit.types.directory import FlyteDirectory

from workflows.etl import Features
from workflows.image import TASK_IMAGE
from workflows.settings import cache_version
from workflows.train import KindResult, read_split


@dataclass
class Evaluation:
    champion_kind: str
    champion_bundle: FlyteDirectory
    test_metrics: dict[str, float]
    plots: FlyteDirectory


def select_champion(results: list[KindResult]) -> KindResult:
    """libs.models' rule on the branch results: highest validation macro-F1 (4 decimals;
    below that it is noise) among kinds within the latency budget; ties go to the faster."""
    if not results:
        raise ValueError("no model kind was trained")
    usable = [r for r in results if not math.isnan(r.val_macro_f1)]
    if not usable:
        raise ValueError(f"every kind failed to produce a validation macro-F1: {[r.kind for r in results]}")
    pool = [r for r in usable if r.feasible] or usable
    return max(
        pool,
        key=lambda r: (round(r.val_macro_f1, 4), -(r.latency_ms if not math.isnan(r.latency_ms) else 1e9)),
    )


def plot_kinds(results: list[KindResult], folder: Path) -> Path:
    """The per-kind validation comparison (the champion's own plots come from libs.models)."""
    folder.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(6, 3))
    ordered = sorted(results, key=lambda r: r.val_macro_f1)
    axis.barh([r.kind for r in ordered], [r.val_macro_f1 for r in ordered], color="tab:blue")
    axis.set_xlabel("validation macro-F1")
    axis.set_title("model kinds")
    figure.tight_layout()
    path = folder / "kinds_val_macro_f1.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


@task(
    cache=True,
    cache_version=cache_version("evaluate"),
    container_image=TASK_IMAGE,
    requests=Resources(cpu="1", mem="2Gi"),
    limits=Resources(cpu="2", mem="4Gi"),
)
def evaluate_champion(results: list[KindResult], test: Features) -> Evaluation:
    """Picks the champion and scores it once on the untouched test split."""
    from libs.models.bundle import load_bundle
    from libs.models.evaluation import evaluate

    champion = select_champion(results)
    bundle = load_bundle(Path(champion.bundle.download()))
    frame: pd.DataFrame = read_split(test)
    folder = Path(current_context().working_directory) / "plots"
    result = evaluate(bundle.estimator, frame, frame["overall"].to_numpy(dtype=int), folder, split="test")
    plot_kinds(results, folder)
    (folder / "test_report.json").write_text(
        json.dumps({"report": result.report, "confusion": result.confusion})
    )
    metrics = {f"test_{name}": float(value) for name, value in result.metrics.items()}
    print(f"evaluate: champion {champion.kind} (val macro-F1 {champion.val_macro_f1:.4f}); {metrics}")
    return Evaluation(champion.kind, champion.bundle, metrics, FlyteDirectory(str(folder)))
