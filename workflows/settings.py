"""The workflows' settings: `TrainingSettings` plus the ETL, the drift check and deployment,
read from `KINDLE_*` environment variables (pydantic-settings, like every deployable).

Why environment variables: the same values must reach `pyflyte run` (defaults of the
workflow inputs), `pyflyte package` (the Spark task's static configuration, the image)
and tests, without a config file to ship.

Why `PipelineSettings` is a workflow input as it is: one typed value carries a run's
settings from the CLI (`--settings '{"trials": 20}'`: the fields not given keep their
environment defaults) to the last task, so a new setting is one field here or in
`TrainingSettings`. Cached tasks take small projections of it (`EtlParams`,
`search_settings`), so a setting they do not read never invalidates them.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated

from flytekitplugins.spark import Spark
from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from libs.drift import DEFAULT_MAX_DROP, DRIFT_THRESHOLD
from libs.features import CONTRACT
from libs.models.training.settings import TrainingSettings
from libs.production import ProductionSettings

DEFAULT_FEEDBACK_CLIENT_SHARE = 0.2

WORKFLOW_VERSION = "7"
"""Bump when a task's code changes its outputs: every cache key includes it."""


def cache_version(stage: str) -> str:
    """Cache key of a stage: workflow version + feature contract hash.

    A new feature contract changes every feature, so every cached artefact downstream of
    it must be recomputed; tying the key to `CONTRACT.hash` makes that automatic.
    """
    return f"{stage}-wf{WORKFLOW_VERSION}-{CONTRACT.hash[:8]}"


def parse_spark_conf(raw: object) -> dict[str, str]:
    """`key=value,key=value` or a JSON object; a clear error otherwise."""
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    text = str(raw).strip()
    if not text:
        return {}
    if text.startswith("{"):
        return {str(k): str(v) for k, v in json.loads(text).items()}
    conf = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"Spark conf entry {item!r} is not key=value")
        conf[key.strip()] = value.strip()
    return conf


class PipelineSettings(TrainingSettings):
    """One training run: the search, the selection, the ETL and the Bento (env prefix `KINDLE_`)."""

    max_per_class: int = Field(
        0,
        ge=0,
        description="Per-star cap on the training split (0: no cap; class weights balance the stars).",
    )
    balance_ratio: float = Field(
        0.0,
        ge=0,
        description="Down-sample each training star to at most ratio x the rarest one (0: off).",
    )
    train_ratio: float = Field(0.7, gt=0, lt=1, description="Share of reviews in the training split.")
    val_ratio: float = Field(
        0.15, gt=0, lt=1, description="Share in the validation split; test gets the rest."
    )
    split: str = Field(
        "hash",
        pattern="^(hash|time)$",
        description="'hash': each review's split is fixed by a seeded hash of its text, so adding data "
        "never moves a review between splits; 'time': oldest train, newest test.",
    )
    feedback_client_share: float = Field(
        DEFAULT_FEEDBACK_CLIENT_SHARE,
        gt=0,
        le=1,
        description="Most labelled feedback rows one client may add to a training run, as a share of the "
        "training input's rows (its newest kept; rows without a client count as one client, "
        "'unknown'): one client cannot flood the training set.",
    )
    build_bento: bool = Field(True, description="Build the service's Bento for a promoted champion.")
    transformer_gpus: int = Field(
        0,
        ge=0,
        description="GPUs the transformer's search task requests on a Flyte cluster (Resources(gpu=N)); "
        "0: it trains on CPUs. Locally a GPU is used whenever torch sees one.",
    )


class WorkflowSettings(PipelineSettings, ProductionSettings):
    """The environment's defaults of the training pipeline and the drift check, and what is
    fixed when the workflows are packaged (image, Spark configuration, schedule)."""

    drift_threshold: float = Field(
        DRIFT_THRESHOLD,
        gt=0,
        description="Largest feature PSI of a stable window; above it the drift check retrains.",
    )
    performance_max_drop: float = Field(
        DEFAULT_MAX_DROP,
        ge=0,
        description="How far the estimated macro-F1 may fall below the champion's test macro-F1: "
        "beyond it the alert rule fires (the service publishes it as kindle_performance_max_drop) "
        "and the drift check retrains, as on drift.",
    )
    drift_window_hours: float = Field(
        0.0,
        ge=0,
        description="Production traffic the drift check compares: the last N hours (0: since the "
        "champion was registered).",
    )
    spark_conf: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="Extra Spark configuration (`k=v,k=v` or JSON), baked into the Spark task's config.",
    )
    spark_master: str = Field(
        "",
        description="Spark master of the Spark tasks in local runs (pyflyte run without --remote): '' is "
        "Spark's default, local[*]; spark://HOST:PORT a standalone cluster, whose executors get the "
        "project's code with the job. A Flyte cluster ignores it (the Spark operator runs the task).",
    )
    image: str = Field("", description="Task image to pin ('': the `--image` of pyflyte package/register).")
    build_image: bool = Field(
        False, description="Tasks use the ImageSpec, which `pyflyte register` builds (Docker or envd)."
    )
    image_registry: str = Field("ghcr.io/kindle-sentiment", description="Registry the ImageSpec goes to.")
    drift_cron: str = Field("0 6 * * *", description="Schedule of the daily drift check LaunchPlan.")
    training_input: str = Field(
        "", description="Training data of drift-triggered retraining (file, folder, URL)."
    )
    max_review_chars: int = Field(
        1_000_000,
        ge=1,
        description="Longest review text or summary ingestion accepts (real ones are a few thousand "
        "characters; megabytes mean a broken export).",
    )

    @field_validator("spark_conf", mode="before")
    @classmethod
    def _spark_conf(cls, value: object) -> dict[str, str]:
        return parse_spark_conf(value)


SETTINGS = WorkflowSettings()
"""Read once at import: `pyflyte run` imports the module, then builds the CLI from it."""
RUN_SETTINGS = PipelineSettings()
"""The training run's part of the same environment: the default of the workflows' `settings` input."""


def base_spark_conf(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Spark settings that hold on a cluster and locally; `extra` (KINDLE_SPARK_CONF) wins.

    Nothing machine-specific (master, driver host) goes here: this dict is serialised
    into the SparkJob that the Spark operator runs on Kubernetes.
    """
    conf = {
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": "4",
        "spark.driver.memory": "2g",
        "spark.executor.memory": "2g",
        "spark.executor.instances": "2",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
    }
    conf.update(extra or {})
    return conf


def spark_task() -> Spark:
    """The task config of every Spark task (`ingest`, `spark_etl`): `base_spark_conf` plus
    KINDLE_SPARK_CONF.

    Local runs only (no Flyte execution id) also get loopback networking, this interpreter
    for the Python workers and the master of KINDLE_SPARK_MASTER. The Flyte Spark plugin
    builds the session before the task body runs, from the static spark_conf, which must
    stay valid on a cluster (it is serialised at registration); these process settings are
    the local-only part, and a cluster pod never sees them.
    """
    if "FLYTE_INTERNAL_EXECUTION_ID" not in os.environ:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        if SETTINGS.spark_master:  # read by spark-submit, which the plugin's session starts
            os.environ["MASTER"] = SETTINGS.spark_master
    return Spark(spark_conf=base_spark_conf(SETTINGS.spark_conf))
