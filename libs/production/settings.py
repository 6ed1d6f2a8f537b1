"""Where production data lives: one settings class, so the service that writes it and the
drift check that reads it are pointed at the same folders by the same variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ProductionSettings(BaseSettings):
    """Where the service writes production data and the drift check reads it (env prefix `KINDLE_`)."""

    model_config = SettingsConfigDict(env_prefix="KINDLE_", extra="ignore", frozen=True)

    batch_dir: str | None = Field(
        None,
        description="Folder of the scored production batches (Parquet): the service writes, "
        "the drift check reads.",
    )
    feedback_dir: str | None = Field(
        None,
        description="Folder of the labelled feedback (Parquet, one file per request): the service writes "
        "(unset: its feedback API answers 503), retraining reads.",
    )
