"""``config/serving.yaml``: typed, validated once (unknown keys and bad values name the path)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from kubetrade.config import StrictModel, load_yaml_model

__all__ = ["ABConfig", "ServingConfig", "load_serving_config", "DEFAULT_SERVING_CONFIG"]

DEFAULT_SERVING_CONFIG = Path("config/serving.yaml")


class ABConfig(StrictModel):
    challenger_weight: float = Field(
        0.0, ge=0.0, le=1.0, description="share of requests the challenger answers (0: off)"
    )
    challenger_alias: str = Field("challenger", min_length=1)
    seed: int = Field(0, description="seed of the per-request split (reproducible tests)")


class ServingConfig(StrictModel):
    model_name: str = Field("kubetrade-hybrid", min_length=1, description="registered model")
    alias: str = Field("champion", min_length=1, description="alias served by default")
    tracking_uri: str = Field(
        "sqlite:///runs/mlflow.db", min_length=1, description="MLflow tracking/registry URI"
    )
    feast_repo: str | None = Field(
        None, description="Feast repo folder (a run's features step); None: raw windows only"
    )
    server_name: str = Field("kubetrade", pattern=r"^[a-z0-9][a-z0-9-]*$",
                             description="model name in /v1/models/<name>:predict")  # fmt: skip
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8080, ge=1, le=65535)
    max_feature_age_days: float | None = Field(
        None, gt=0, description="refuse a symbol whose newest online bar is older (None: off)"
    )
    staleness_clock: Literal["wall", "store"] = Field(
        "wall",
        description="age measured against the wall clock, or against the newest bar of any "
        "symbol in the online store (historical data)",
    )
    refresh_seconds: float = Field(5.0, gt=0, description="alias poll interval")
    max_batch: int = Field(256, ge=1, description="most instances in one request")
    micro_batch: int = Field(
        32, ge=1, description="most rows in one model run gathered across concurrent requests "
        "(1: each request runs alone); a lone request is never delayed",
    )  # fmt: skip
    predictions_log: str | None = Field(
        None, description="JSON-lines log of every answer (monitoring's input); None: off"
    )
    access_log: bool = Field(
        False, description="uvicorn's access log and KServe's per-request timing lines "
        "(off by default: two log lines per request on the hot path)",
    )  # fmt: skip
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto", description="the server's event loop: auto = the standard library's asyncio "
        "loop when busy_poll_us > 0 (the polling needs it), else uvloop when installed",
    )  # fmt: skip
    busy_poll_us: int = Field(
        200, ge=0, le=10_000, description="when the event loop runs out of work, it polls its "
        "sockets without blocking for up to this many microseconds before it sleeps, so a "
        "request that arrives meanwhile finds the CPU awake (on a VM that halts idle vCPUs "
        "a 1-client round trip is ~25 percent faster); costs at most this much CPU per idle "
        "wait. 0: off. asyncio loop only",
    )  # fmt: skip
    predict_fast_path: bool = Field(
        True, description="POST /v1/models/<name>:predict goes straight to KServe's own v1 "
        "handler, skipping FastAPI's route matching and dependency solving (same handler, "
        "same error handlers; ~0.13 ms of a ~0.9 ms round trip on the dev box)",
    )  # fmt: skip
    ab: ABConfig = Field(default_factory=ABConfig)

    @model_validator(mode="after")
    def _check(self) -> ServingConfig:
        if self.ab.challenger_weight > 0 and self.ab.challenger_alias == self.alias:
            raise ValueError("ab.challenger_alias must differ from alias")
        if self.busy_poll_us > 0 and self.event_loop == "uvloop":
            raise ValueError("busy_poll_us needs the asyncio loop (uvloop's cannot be "
                             "wrapped): set event_loop: auto or asyncio, or busy_poll_us: 0")  # fmt: skip
        return self


def load_serving_config(path: str | Path | None = None) -> ServingConfig:
    """Parse ``path`` (default ``config/serving.yaml`` when it exists) into ServingConfig."""
    if path is None:
        path = DEFAULT_SERVING_CONFIG if DEFAULT_SERVING_CONFIG.exists() else None
    return load_yaml_model(ServingConfig, path)
