"""``config/pipeline.yaml``: what to run, on which data, where; the data source, quality
gate, tuning step, backtest settings and the registry's gates."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from kubetrade.config.base import StrictModel, load_yaml_model

__all__ = [
    "DataSourceConfig",
    "QualityConfig",
    "TuningStepConfig",
    "BacktestConfig",
    "RegistryGateConfig",
    "RL_FEATURES",
    "PipelineConfig",
    "load_pipeline_config",
]


class DataSourceConfig(StrictModel):
    type: Literal["embedded", "files", "synthetic"] = "embedded"
    paths: list[str] = Field(default_factory=list, description="files: CSV/Parquet paths")
    column_map: dict[str, str] = Field(
        default_factory=dict, description="files: file column -> canonical"
    )
    synthetic_symbols: int = Field(10, ge=1, le=5000)
    synthetic_years: float = Field(5.0, gt=0.0, le=100.0)
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> DataSourceConfig:
        if self.type == "files" and not self.paths:
            raise ValueError("type 'files' needs at least one entry in paths")
        return self


class QualityConfig(StrictModel):
    min_score: float = Field(0.8, ge=0.0, le=1.0, description="the guide's overall_score threshold")
    max_abs_daily_return: float = Field(0.5, gt=0.0, description="return-outlier bound")
    max_calendar_gap_days: int = Field(10, ge=1, description="largest allowed gap between bars")


class TuningStepConfig(StrictModel):
    """The pipeline's ``tune`` step (before ``train``): Optuna locally, Katib on Kubeflow."""

    enabled: bool = Field(True, description="false: train uses the configured values as they are")
    search_space: str = Field(
        "config/search_space.yaml", description="tuning file (objective, pruner, parameters)"
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="dotted keys applied on top of the tuning file, e.g. "
        "{'objective.num_trials': 8}; keeps the guide's search space while runs stay short",
    )
    threads_per_trial: int = Field(1, ge=1, le=64, description="torch threads in each trial")


class BacktestConfig(StrictModel):
    """The backtest step: capital, costs and the hybrid model's risk controls. Both
    strategies (the hybrid model's signals, the RL ensemble's weights) trade through one
    engine with the same capital and costs."""

    initial_capital: float = Field(100_000.0, gt=0.0, description="starting equity")
    transaction_costs: float = Field(
        0.001, ge=0.0, lt=0.1, description="fee per traded notional, fraction"
    )
    slippage: float = Field(
        0.0005, ge=0.0, lt=0.1, description="adverse fill vs the open, fraction"
    )
    max_position_size: float | None = Field(
        None, gt=0.0, le=1.0,
        description="hybrid model: cap on each symbol's weight; null = 1 / number of symbols",
    )  # fmt: skip
    stop_loss_pct: float | None = Field(
        0.05, gt=0.0, lt=1.0, description="hybrid model: stop loss per position; null = none"
    )
    take_profit_pct: float | None = Field(
        0.15, gt=0.0, description="hybrid model: take profit per position; null = none"
    )


class RegistryGateConfig(StrictModel):
    """The champion gate of the register step (and ``kubetrade register``): a challenger
    becomes champion only if it beats its baselines and the champion, scored on the same test
    period and symbols, by more than the margin (in the metric's own units)."""

    metric: str = Field("sharpe_ratio", description="out-of-sample metric that decides")
    margin: float = Field(
        0.05, ge=0.0, allow_inf_nan=False,
        description="hybrid model: improvement over the champion's metric needed to promote "
        "(Sharpe units; within it the difference is treated as noise)",
    )  # fmt: skip
    rl_margin: float = Field(
        0.05, ge=0.0, allow_inf_nan=False, description="the same for the RL ensemble"
    )
    evaluation_tolerance: float = Field(
        0.02, ge=0.0, le=1.0, allow_inf_nan=False,
        description="evaluation gate: the model's test accuracy may trail the majority-class "
        "baseline's by at most this much before nothing is registered",
    )  # fmt: skip
    require_beat_baselines: bool = Field(
        True,
        description="hybrid: beat every naive baseline's test metric; RL ensemble: beat "
        "buy-and-hold after costs on the same test period",
    )


#: engineered, scale-free columns the trading env observes in a pipeline run (when present)
RL_FEATURES = (
    "rsi", "macd_hist_norm", "bb_pct", "bb_width", "atr_pct",
    "wavelet_entropy", "fourier_entropy", "hurst", "xa_corr", "xa_rel_return",
)  # fmt: skip


class PipelineConfig(StrictModel):
    """``config/pipeline.yaml``: what to run, on which data, where."""

    name: str = "kubetrade-training"
    symbols: list[str] = Field(
        default_factory=lambda: ["AAPL", "GOOG", "IBM", "MSFT"], min_length=1
    )
    start_date: str | None = "2005-01-01"
    end_date: str | None = "2013-03-01"
    source: DataSourceConfig = Field(default_factory=DataSourceConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    indicators: list[str] = Field(
        default_factory=lambda: ["rsi", "macd", "bollinger_bands", "atr"], min_length=1
    )
    advanced_features: list[Literal["wavelet", "fourier", "fractal", "cross_asset"]] = Field(
        default_factory=lambda: ["wavelet", "fourier", "fractal", "cross_asset"]  # type: ignore[arg-type]
    )
    backend: Literal["local", "kubeflow"] = "local"
    run_root: str = Field("runs", description="run folders go under this directory")
    training_config: str = "config/training.yaml"
    training_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="dotted keys applied on top of training_config, e.g. "
        "{'training.num_epochs': 3}; keeps the guide's file verbatim while runs stay short",
    )
    trading_env_config: str = "config/trading_env.yaml"
    rl_training_config: str = "config/rl_training.yaml"
    tuning: TuningStepConfig = Field(default_factory=TuningStepConfig)
    registry: RegistryGateConfig = Field(default_factory=RegistryGateConfig)
    backtest: BacktestConfig = Field(default_factory=BacktestConfig)
    rl_features: list[str] = Field(
        default_factory=lambda: list(RL_FEATURES),
        description="feature columns the RL agents observe in a pipeline run (those the "
        "features step made); replaces trading_env.yaml's features, which are the "
        "standalone env's (kubetrade rl); [] = every numeric column of the feature table",
    )

    @field_validator("start_date", "end_date", mode="before")
    @classmethod
    def _date_to_text(cls, value: Any) -> Any:
        # YAML turns unquoted 2010-01-01 into a date; accept it
        return value.isoformat() if isinstance(value, date) else value

    @model_validator(mode="after")
    def _check(self) -> PipelineConfig:
        import pandas as pd

        for key in ("start_date", "end_date"):
            value = getattr(self, key)
            if value is not None:
                try:
                    pd.Timestamp(value)
                except (ValueError, TypeError) as exc:
                    raise ValueError(f"{key} {value!r} is not a date; use YYYY-MM-DD") from exc
        if (
            self.start_date
            and self.end_date
            and pd.Timestamp(self.start_date) > pd.Timestamp(self.end_date)
        ):
            raise ValueError(
                f"start_date {self.start_date} is after end_date {self.end_date}; swap them"
            )
        return self


def load_pipeline_config(path: str | Path | None = "config/pipeline.yaml") -> PipelineConfig:
    """Load the pipeline config (defaults when ``path`` is None)."""
    return load_yaml_model(PipelineConfig, path)
