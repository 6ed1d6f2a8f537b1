"""TrainingSettings: every knob of a training run in one typed, documented object."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from libs.models.kinds import SKLEARN_KINDS, ModelKind

DEFAULT_MODEL_NAME = "kindle-sentiment"


@dataclass(frozen=True)
class TrainingSettings:
    """Defaults suit one machine (minutes, not hours); the workflow overrides them per run."""

    # Kinds to train; the default leaves out distilbert, which needs a GPU to train in minutes.
    kinds: tuple[ModelKind, ...] = SKLEARN_KINDS
    # Optuna budget per kind: at most n_trials (completed + pruned, resumed ones included) ...
    n_trials: int = 20
    # ... and at most this many seconds of searching per call (None = no time limit).
    timeout_s: float | None = 600.0
    # Seed of the TPE sampler, the estimators, and the bundle's reproducibility.
    seed: int = 42
    # Per-sample inference budget: single-objective trials slower than this are infeasible;
    # multi-objective picks the best F1 among Pareto trials within it.
    max_latency_ms: float = 50.0
    # False: maximise macro-F1 subject to the latency budget. True: Pareto front of (F1, latency).
    multi_objective: bool = False
    # MLflow tracking/registry URI; None = MLFLOW_TRACKING_URI, else sqlite:///<output_dir>/mlflow.db.
    mlflow_uri: str | None = None
    # MLflow experiment holding the training runs.
    experiment: str = "kindle-sentiment"
    # Registered model name of the champion in the MLflow model registry.
    registered_model_name: str = DEFAULT_MODEL_NAME
    # Where studies (optuna.db), reports, plots and bundles go.
    output_dir: Path = field(default_factory=lambda: Path.cwd() / "runs")
    # Optuna storage URL (any SQLAlchemy URL); None = sqlite:///<output_dir>/optuna.db.
    optuna_storage: str | None = None
    # Pretrained folder or hub name of the transformer for `distilbert` (offline: a local folder).
    pretrained: str = "distilbert-base-uncased"

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", tuple(ModelKind.parse(kind) for kind in self.kinds))
        object.__setattr__(self, "output_dir", Path(self.output_dir))
        if not self.kinds:
            raise ValueError("TrainingSettings.kinds is empty: name at least one model kind")
        if self.n_trials < 1:
            raise ValueError(f"TrainingSettings.n_trials must be >= 1, got {self.n_trials}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError(f"TrainingSettings.timeout_s must be positive or None, got {self.timeout_s}")
        if self.max_latency_ms <= 0:
            raise ValueError(f"TrainingSettings.max_latency_ms must be positive, got {self.max_latency_ms}")

    def tracking_uri(self) -> str:
        """Explicit URI, else MLFLOW_TRACKING_URI, else an embedded SQLite store (no server)."""
        if self.mlflow_uri:
            return self.mlflow_uri
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return os.environ["MLFLOW_TRACKING_URI"]
        return f"sqlite:///{self.output_dir.resolve() / 'mlflow.db'}"

    def artifact_location(self) -> str:
        """Artifacts of the embedded store sit beside its database, not in the working directory."""
        return (self.output_dir.resolve() / "mlartifacts").as_uri()

    def storage_url(self) -> str:
        """Optuna storage that survives a crash, so a study resumes where it stopped."""
        return self.optuna_storage or f"sqlite:///{self.output_dir.resolve() / 'optuna.db'}"
