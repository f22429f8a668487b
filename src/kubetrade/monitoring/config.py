"""``config/monitoring.yaml``: typed, validated once."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import Field

from kubetrade.config import StrictModel

__all__ = ["MonitoringConfig", "RetrainConfig", "Thresholds"]


class Thresholds(StrictModel):
    max_drifted_share: float = Field(
        0.5, ge=0.0, le=1.0, description="alert when a larger share of features drifted"
    )
    prediction_drift_p: float = Field(
        0.01, ge=0.0, le=1.0,
        description="alert when the recent predicted returns differ from the earlier ones "
        "with a K-S p-value below this (0: off)",
    )  # fmt: skip
    min_hit_rate: float = Field(
        0.0, ge=0.0, le=1.0, description="alert when the champion's realized hit rate is lower"
    )
    min_outcomes: int = Field(20, ge=1, description="outcomes needed before scoring decay")


class RetrainConfig(StrictModel):
    backend: Literal["local", "kubeflow"] = "local"
    pipeline_config: str = "config/pipeline.yaml"
    set: list[str] = Field(default_factory=list, description="--set KEY=VALUE for kubetrade run")
    package: str = "pipelines/compiled/kubetrade_training.yaml"
    host: str | None = Field(None, description="KFP API for backend kubeflow")


class MonitoringConfig(StrictModel):
    feast_repo: str = Field(..., min_length=1, description="the served Feast repo")
    predictions_log: str | None = Field(None, description="the server's predictions_log")
    features: list[str] | None = Field(None, description="features to watch (None: all)")
    reference_start: date | None = None
    reference_end: date = Field(..., description="last day of the training reference")
    current_days: int = Field(60, ge=1, description="recent window: days before the newest bar")
    recent_predictions: int = Field(200, ge=2, description="newest log entries = 'recent'")
    horizon: int = Field(1, ge=1, description="bars to the realized outcome")
    report_dir: str = "runs/monitoring"
    tracking_uri: str | None = Field(None, description="MLflow store for the metrics (None: off)")
    experiment: str = "kubetrade-monitoring"
    thresholds: Thresholds = Field(default_factory=Thresholds)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
