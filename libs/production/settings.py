"""Where production data lives and how much of it is kept: one settings class, so the
service that writes it and the drift check that reads it are pointed at the same folders
by the same variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

GIB = 2**30
DAY_S = 86_400.0


def age_seconds(days: float) -> float | None:
    """A `*_max_age_days` setting as `ParquetLog`'s `max_age_s` (0: no bound, None)."""
    return days * DAY_S if days > 0 else None


class ProductionSettings(BaseSettings):
    """Where the service writes production data and the drift check reads it, and the bounds
    on what is kept (env prefix `KINDLE_`).

    Retention is by bytes and age, never by file count: a file count lets a flood of tiny
    files (one per feedback request) push out everything older. Each bound is per folder,
    shared by every worker and host writing to it (`ParquetLog` says by how much concurrent
    writers may overshoot it: at most 10 s of their writes).
    """

    model_config = SettingsConfigDict(env_prefix="KINDLE_", extra="ignore", frozen=True)

    batch_dir: str | None = Field(
        None,
        description="Folder of the scored production batches (Parquet): the service writes, "
        "the drift check reads.",
    )
    batch_max_bytes: int = Field(
        GIB,
        ge=1,
        description="Most bytes of production batch files kept (1 GiB; the oldest go first).",
    )
    batch_max_age_days: float = Field(
        30.0,
        ge=0,
        description="Production batch files older than this many days are deleted (0: no age bound); "
        "the drift check reads the traffic since the champion was registered.",
    )
    feedback_dir: str | None = Field(
        None,
        description="Folder of the labelled feedback (Parquet, one file per request): the service writes "
        "(unset: its feedback API answers 503), retraining reads.",
    )
    feedback_max_bytes: int = Field(
        GIB,
        ge=1,
        description="Most bytes of feedback files kept (1 GiB, ~200,000 one-review files; the oldest go "
        "first).",
    )
    feedback_max_age_days: float = Field(
        365.0,
        ge=0,
        description="Feedback files older than this many days are deleted (0: no age bound).",
    )
