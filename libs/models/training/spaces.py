"""Optuna search spaces, one per model kind: what HPO may change, in ranges that train in minutes."""

from __future__ import annotations

from typing import Any

import optuna

from libs.models.kinds import ModelKind
from libs.models.training.settings import TrainingSettings


def suggest(kind: ModelKind, trial: optuna.Trial, settings: TrainingSettings) -> dict[str, Any]:
    """The hyperparameters of one trial: `build_estimator(kind, params, ...)` takes them as they are."""
    if kind is ModelKind.LOGREG:
        return {
            "C": trial.suggest_float("C", 0.05, 20.0, log=True),
            # The numeric features can swamp the TF-IDF terms of a linear model: searched.
            "numeric": trial.suggest_categorical("numeric", [True, False]),
        }
    if kind is ModelKind.RF:
        return {
            "n_components": trial.suggest_int("n_components", 50, 200, step=50),
            "n_estimators": trial.suggest_int("n_estimators", 100, 300, step=100),
            "max_features": trial.suggest_categorical("max_features", ["sqrt", "log2"]),
            "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 8),
        }
    if kind is ModelKind.HIST_GB:
        return {
            "n_components": trial.suggest_int("n_components", 50, 200, step=50),
            "max_iter": trial.suggest_int("max_iter", 30, 150, step=30),
            "learning_rate": trial.suggest_float("learning_rate", 0.03, 0.3, log=True),
            "max_leaf_nodes": trial.suggest_int("max_leaf_nodes", 7, 31),
            "l2_regularization": trial.suggest_float("l2_regularization", 1e-3, 10.0, log=True),
        }
    if kind is ModelKind.MLP:
        return {
            "hidden": trial.suggest_categorical("hidden", [32, 64, 128]),
            "alpha": trial.suggest_float("alpha", 1e-6, 1e-2, log=True),
            "learning_rate": trial.suggest_float("learning_rate", 1e-4, 3e-3, log=True),
            "epochs": trial.suggest_int("epochs", 2, 8),
        }
    if kind is ModelKind.DISTILBERT:
        # What moves macro-F1 on this CPU: the peak learning rate, the epochs and how much of
        # each review is read. Batches of 32 and weight decay 0.01 stay (transformer.py).
        return {
            "pretrained": settings.pretrained,
            "learning_rate": trial.suggest_float("learning_rate", 2e-5, 2e-4, log=True),
            # The first trial's recipe (the settings) always lies inside the space.
            "epochs": trial.suggest_int("epochs", 1, max(3, settings.transformer_epochs)),
            "max_length": trial.suggest_categorical(
                "max_length", sorted({128, 256, settings.transformer_max_length})
            ),
        }
    raise ValueError(f"no search space for model kind {kind!r}")


def starting_points(kind: ModelKind, settings: TrainingSettings) -> list[dict[str, Any]]:
    """Configurations every new study tries first, before TPE samples: the learner's own
    defaults, so a short search never ends worse than an untuned model. They also win
    ties: a sampled configuration replaces them only by beating them clearly."""
    if kind is ModelKind.LOGREG:
        return [{"C": 1.0, "numeric": False}, {"C": 1.0, "numeric": True}]
    if kind is ModelKind.DISTILBERT:  # the CPU recipe (transformer.py), its length and epochs set
        return [
            {
                "learning_rate": 8e-5,
                "epochs": settings.transformer_epochs,
                "max_length": settings.transformer_max_length,
            }
        ]
    return []
