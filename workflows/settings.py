"""One typed settings object for the workflows, read from `KINDLE_WF_*` environment variables.

Why environment variables: the same values must reach `pyflyte run` (defaults of the
workflow inputs), `pyflyte package` (the Spark task's static configuration, the image)
and tests, without a config file to ship. Every default is documented in the field's
comment and in workflows/README.md; workflow inputs override them per run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from libs.features import CONTRACT

WORKFLOW_VERSION = "1"
"""Bump when a task's code changes its outputs: every cache key includes it."""


def cache_version(stage: str, extra: str = "") -> str:
    """Cache key of a stage: workflow version + feature contract hash (+ a library version).

    A new feature contract changes every feature, so every cached artefact downstream of
    it must be recomputed; tying the key to `CONTRACT.hash` makes that automatic.
    """
    parts = [stage, f"wf{WORKFLOW_VERSION}", CONTRACT.hash[:8]]
    if extra:
        parts.append(extra)
    return "-".join(parts)


def _env(name: str, default: str) -> str:
    return os.environ.get(f"KINDLE_WF_{name}", default)


def _env_int(name: str, default: int) -> int:
    raw = _env(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"KINDLE_WF_{name} must be an integer, got {raw!r}") from None


def _env_float(name: str, default: float) -> float:
    raw = _env(name, str(default))
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"KINDLE_WF_{name} must be a number, got {raw!r}") from None


def parse_spark_conf(raw: str) -> dict[str, str]:
    """`key=value,key=value` or a JSON object; a clear error otherwise."""
    raw = raw.strip()
    if not raw:
        return {}
    if raw.startswith("{"):
        data = json.loads(raw)
        return {str(k): str(v) for k, v in data.items()}
    conf = {}
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"Spark conf entry {item!r} is not key=value")
        conf[key.strip()] = value.strip()
    return conf


@dataclass(frozen=True)
class PipelineSettings:
    """Defaults of the training pipeline and the drift check (env var in brackets)."""

    # [KINDLE_WF_OUTPUT_DIR] where MLflow's SQLite store, bundles and reports go.
    output_dir: str = field(default_factory=lambda: _env("OUTPUT_DIR", str(Path.cwd() / "runs")))
    # [KINDLE_WF_MLFLOW_URI] tracking + registry URI; default: SQLite in output_dir.
    mlflow_uri: str = field(default_factory=lambda: _env("MLFLOW_URI", ""))
    # [KINDLE_WF_MODEL_NAME] registered model name in MLflow.
    model_name: str = field(default_factory=lambda: _env("MODEL_NAME", "kindle-sentiment"))
    # [KINDLE_WF_EXPERIMENT] MLflow experiment of training and drift runs.
    experiment: str = field(default_factory=lambda: _env("EXPERIMENT", "kindle-sentiment"))
    # [KINDLE_WF_KINDS] comma-separated model kinds ("" = every scikit-learn kind).
    kinds: str = field(default_factory=lambda: _env("KINDS", ""))
    # [KINDLE_WF_TRIALS] Optuna trials per kind.
    trials: int = field(default_factory=lambda: _env_int("TRIALS", 8))
    # [KINDLE_WF_TIMEOUT_S] Optuna time budget per kind, seconds (0 = none).
    timeout_s: float = field(default_factory=lambda: _env_float("TIMEOUT_S", 120.0))
    # [KINDLE_WF_MAX_PER_CLASS] per-class cap on the training split (0 = no cap).
    max_per_class: int = field(default_factory=lambda: _env_int("MAX_PER_CLASS", 1000))
    # [KINDLE_WF_BALANCE_RATIO] down-sample each training class to at most ratio x the
    # smallest class (0 = off); combined with the cap, the smaller limit wins.
    balance_ratio: float = field(default_factory=lambda: _env_float("BALANCE_RATIO", 0.0))
    # [KINDLE_WF_TRAIN_RATIO] / [KINDLE_WF_VAL_RATIO] split shares; test gets the rest.
    train_ratio: float = field(default_factory=lambda: _env_float("TRAIN_RATIO", 0.7))
    val_ratio: float = field(default_factory=lambda: _env_float("VAL_RATIO", 0.15))
    # [KINDLE_WF_SPLIT] "stratified" (by rating, seeded) or "time" (oldest train, newest test).
    split: str = field(default_factory=lambda: _env("SPLIT", "stratified"))
    # [KINDLE_WF_SEED] seed of the split, the balancing and Optuna.
    seed: int = field(default_factory=lambda: _env_int("SEED", 42))
    # [KINDLE_WF_DRIFT_THRESHOLD] max feature PSI above which the drift check retrains.
    drift_threshold: float = field(default_factory=lambda: _env_float("DRIFT_THRESHOLD", 0.2))
    # [KINDLE_WF_BUILD_BENTO] "true": build the service's Bento after registering.
    build_bento: bool = field(default_factory=lambda: _env("BUILD_BENTO", "true").lower() == "true")
    # [KINDLE_WF_SPARK_CONF] extra Spark conf, `k=v,k=v` or JSON, baked into the Spark task.
    spark_conf: dict[str, str] = field(default_factory=lambda: parse_spark_conf(_env("SPARK_CONF", "")))
    # [KINDLE_WF_IMAGE] pins the task image ("" = the `--image` of pyflyte package/register).
    image: str = field(default_factory=lambda: _env("IMAGE", ""))
    # [KINDLE_WF_DRIFT_CRON] schedule of the drift check LaunchPlan.
    drift_cron: str = field(default_factory=lambda: _env("DRIFT_CRON", "0 6 * * *"))
    # [KINDLE_WF_PRODUCTION] what the scheduled drift check reads (the service's batch folder).
    production: str = field(default_factory=lambda: _env("PRODUCTION", "/data/kindle/batches"))
    # [KINDLE_WF_TRAINING_INPUT] what the scheduled drift check retrains on.
    training_input: str = field(default_factory=lambda: _env("TRAINING_INPUT", ""))
    # [KINDLE_WF_MAX_REVIEW_CHARS] longest review text or summary ingestion accepts. Real
    # Kindle reviews are at most a few thousand characters; a field of megabytes is a broken
    # export (an unclosed quote swallowing the rest of the file) or hostile input.
    max_review_chars: int = field(default_factory=lambda: _env_int("MAX_REVIEW_CHARS", 1_000_000))

    def tracking_uri(self, output_dir: str | None = None) -> str:
        """The MLflow URI: explicit, else a SQLite file in the output folder (no server needed)."""
        if self.mlflow_uri:
            return self.mlflow_uri
        folder = Path(output_dir or self.output_dir).resolve()
        return f"sqlite:///{folder / 'mlflow.db'}"


SETTINGS = PipelineSettings()
"""Read once at import: `pyflyte run` imports the module, then builds the CLI from it."""


def base_spark_conf(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Spark settings that hold on a cluster and locally; `extra` (KINDLE_WF_SPARK_CONF) wins.

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
