"""The service's settings: one typed object, read once from `KINDLE_*` environment variables.

Every knob an operator may turn lives here with its default, so the README's settings
table, the container and the tests all describe the same thing. Settings are read when
the service module is imported, i.e. once per server process.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from libs.models.registry import CHAMPION, MODEL_NAME, RegistrySettings
from libs.production import ProductionSettings
from services.security import KeyRing, TrustedProxies


class ServiceSettings(RegistrySettings, ProductionSettings):
    """Runtime configuration of the rating service (env prefix `KINDLE_`).

    Where the champion comes from, first match wins: `bundle_path`, the MLflow registry
    (`mlflow_tracking_uri` set: `model_name` at `mlflow_alias`), the Bento's model store.
    """

    # A refused value is not repeated in the error: it may be a key.
    model_config = SettingsConfigDict(
        env_prefix="KINDLE_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    bundle_path: Path | None = Field(
        None, description="A bundle folder to serve instead of the one packed in the Bento (dev, tests)."
    )
    bento_model: str = Field(
        CHAMPION,
        description=f"Model alias declared by the Bento, or a model-store tag; outside a Bento, "
        f"'{CHAMPION}' falls back to {MODEL_NAME}:latest.",
    )
    mlflow_alias: str = Field(CHAMPION, description="Registry alias to serve (with `mlflow_tracking_uri`).")
    reload_interval_s: float = Field(
        30.0,
        ge=0,
        description="Seconds between checks of the champion's source (bundle folder or MLflow alias) "
        "for a new version, loaded and checked in the background before it is swapped in; 0: off.",
    )

    # --- request limits (abuse protection: bounded work per request)
    max_items: int = Field(1_000, ge=1, description="Most reviews in one request.")
    max_text_chars: int = Field(20_000, ge=1, description="Longest review or summary, in characters.")
    max_body_bytes: int = Field(
        64 * 2**20, ge=1024, description="Largest request body in bytes, refused before it is parsed."
    )

    # --- runner and batching
    runner_embedded: bool = Field(
        True, description="Run the model in the API process (no IPC hop); false: a separate runner."
    )
    max_batch_size: int = Field(256, ge=1, description="Most reviews the runner scores in one call.")
    runner_max_latency_ms: int = Field(
        1_000,
        ge=1,
        description="Non-embedded runner: latency budget of BentoML's batching; requests it predicts "
        "would exceed it are shed with 503.",
    )

    # --- security
    api_key: SecretStr | None = Field(
        None,
        description="When set, clients of every API but feedback must send it (x-api-key); it never "
        "opens feedback.",
    )
    feedback_keys: SecretStr | None = Field(
        None,
        description="Feedback keys, one per client: `client=key,client=key`. Only these open the "
        "feedback API (x-api-key), and the client's name is stored with its ratings; unset: feedback "
        "is off (403).",
    )
    trusted_proxies: str | None = Field(
        None,
        description="Comma-separated IPs or CIDRs of proxies whose X-Forwarded-For names the client "
        "(the rightmost address not itself a trusted proxy); unset: the header is ignored.",
    )
    rate_limit_per_s: float = Field(
        0.0,
        ge=0,
        description="Reviews per second refilled into each client's bucket (its key's, else its "
        "address's); 0: off.",
    )
    rate_limit_burst: int = Field(
        1_000,
        ge=1,
        description="Bucket size, in reviews: what a client may send at once (a request of n reviews "
        "takes n tokens; at most this many). Default: max_items, so a full request passes a full bucket.",
    )
    redis_url: str | None = Field(None, description="Shared rate-limit buckets in Redis (else in memory).")
    max_in_flight: int = Field(
        128,
        ge=1,
        description="Most requests one API worker holds at once; beyond: 503 + Retry-After / UNAVAILABLE "
        "before the body is read. 128: twice the highest concurrency the benchmarks drive one worker at, "
        "and a bound on a worker's queued work (128 x max_items reviews) and memory.",
    )

    # --- monitoring
    drift_enabled: bool = Field(True, description="Feed live traffic to the drift monitor.")
    drift_window_rows: int = Field(5_000, ge=10, description="Rows in the live drift window (all workers).")
    drift_recompute_rows: int = Field(100, ge=1, description="New rows between PSI recomputations.")
    drift_recompute_seconds: float = Field(
        1.0,
        ge=0,
        description="Least seconds between a worker's PSI recomputations (each merges every worker's "
        "window file); 0: one per drift_recompute_rows rows, however busy.",
    )
    drift_queue_rows: int = Field(
        10_000, ge=1, description="Most feature rows waiting for the drift thread; beyond: dropped, counted."
    )
    drift_queue_bytes: int = Field(
        2**20,
        ge=1024,
        description="Most bytes of feature rows waiting for the drift thread; beyond: dropped, counted.",
    )
    drift_state_dir: Path | None = Field(
        None, description="Shared folder of the workers' drift windows (merged PSI); unset: per worker."
    )
    drift_webhook_url: str | None = Field(None, description="Alert webhook when drift is detected.")
    performance_max_drop: float = Field(
        0.05,  # libs.drift.DEFAULT_MAX_DROP, not imported: it would load prometheus_client too early
        ge=0,
        description="How far the estimated macro-F1 may fall below the champion's test macro-F1: "
        "beyond it the alert rule fires (the service publishes it as kindle_performance_max_drop) "
        "and the drift check retrains, as on drift.",
    )
    batch_queue_rows: int = Field(
        10_000,
        ge=1,
        description="Most scored rows waiting for the batch writer thread (per worker); beyond: dropped, "
        "counted in kindle_batch_dropped_rows_total.",
    )
    batch_keep_text: bool = Field(
        False,
        description="Keep each scored review's text in the batch log, for the drift check's domain "
        "classifier (reviews are customer data: opt in). Its queue then also holds up to 2,000 bytes "
        "of text per row of batch_queue_rows.",
    )
    batch_rows_per_file: int = Field(5_000, ge=1, description="Production batch rows per Parquet file.")
    batch_seconds_per_file: float = Field(
        300.0, gt=0, description="Oldest buffered production row's age, in seconds, that cuts a file."
    )
    log_level: str = Field("INFO", description="Level of the service's JSON logs.")
    access_log: bool = Field(
        False,
        description="BentoML's per-request access log (off: it costs throughput); wins over BENTOML_CONFIG.",
    )

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @field_validator("feedback_keys")
    @classmethod
    def _key_ring(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            KeyRing.parse(value.get_secret_value())  # refused here, at load, not at the first call
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: str | None) -> str | None:
        TrustedProxies.parse(value)
        return value

    @model_validator(mode="after")
    def _separate_credentials(self) -> ServiceSettings:
        if self.api_key is not None and self.feedback_keys is not None:
            ring = KeyRing.parse(self.feedback_keys.get_secret_value())
            if self.api_key.get_secret_value() in ring:
                raise ValueError("a feedback key is the same as KINDLE_API_KEY: it would open every API")
        return self


@lru_cache(maxsize=1)
def get_settings() -> ServiceSettings:
    """The process-wide settings (cached: env vars are read once)."""
    return ServiceSettings()
