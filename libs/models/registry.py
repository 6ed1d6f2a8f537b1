"""Where champions are published: the model registry's names, defined once for every deployable.

Training registers the champion in MLflow under `model_name` with the alias `champion`
(the version it replaced keeps `previous`, the rollback target); the service and the
drift check read the same alias. `RegistrySettings` is the part of every deployable's
settings that names the registry, so the training pipeline, the drift check and the
service read one variable per concept (`KINDLE_MLFLOW_TRACKING_URI`, `KINDLE_MODEL_NAME`).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MODEL_NAME = "kindle-sentiment"
"""Registered model name (MLflow) and BentoML model name of the champion's bundle."""
CHAMPION = "champion"
"""Alias of the version that is served."""
PREVIOUS = "previous"
"""Alias of the version the champion replaced: the rollback target."""
ENV_PREFIX = "KINDLE_"


class RegistrySettings(BaseSettings):
    """The MLflow registry a deployable talks to."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    mlflow_tracking_uri: str | None = Field(
        None,
        description="MLflow tracking and registry URI. Unset: training uses an embedded SQLite store "
        "in its output folder; the service serves the model packed in its Bento.",
    )
    model_name: str = Field(MODEL_NAME, min_length=1, description="Registered model name of the champion.")
