"""``config/training.yaml``, the guide's file verbatim: the hybrid model, its training, data
windows, validation and hardware. The extra keys kubetrade understands (all optional, with
defaults) are documented on each field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from kubetrade.config.base import (
    StrictModel,
    apply_overrides,
    load_yaml_model,
    read_yaml_file,
    validate_model,
)
from kubetrade.errors import ConfigError

__all__ = [
    "CNNConfig",
    "LSTMConfig",
    "FusionConfig",
    "ModelConfig",
    "LossWeights",
    "OptimizerConfig",
    "SchedulerConfig",
    "TrainingSection",
    "AugmentationConfig",
    "FEATURE_NAMES",
    "DataSection",
    "VALIDATION_METRICS",
    "ValidationSection",
    "HardwareSection",
    "TrainingConfig",
    "load_training_config",
]


class CNNConfig(StrictModel):
    input_channels: int = Field(
        5, ge=1, description="input features per time step (overridden by the data)"
    )
    hidden_dim: int = Field(256, ge=4, description="CNN output channels (sum of all branches)")
    filter_sizes: list[int] = Field(default_factory=lambda: [3, 5, 7, 11], min_length=1)
    num_heads: int = Field(8, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check(self) -> CNNConfig:
        if any(k < 1 for k in self.filter_sizes):
            raise ValueError(f"filter_sizes must be positive, got {self.filter_sizes}")
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"hidden_dim ({self.hidden_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        return self


class LSTMConfig(StrictModel):
    hidden_dim: int = Field(128, ge=1)
    num_layers: int = Field(2, ge=1, le=8)
    bidirectional: bool = True
    dropout: float = Field(0.2, ge=0.0, lt=1.0)


class FusionConfig(StrictModel):
    output_dim: int = Field(256, ge=4)
    num_heads: int = Field(8, ge=1)

    @model_validator(mode="after")
    def _check(self) -> FusionConfig:
        if self.output_dim % self.num_heads:
            raise ValueError(
                f"output_dim ({self.output_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        return self


class ModelConfig(StrictModel):
    type: Literal["hybrid_cnn_lstm"] = "hybrid_cnn_lstm"
    cnn: CNNConfig = Field(default_factory=CNNConfig)
    lstm: LSTMConfig = Field(default_factory=LSTMConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    batch_norm: bool = Field(False, description="BatchNorm1d after each conv branch")
    layer_norm: bool = Field(True, description="LayerNorm after attention / LSTM / fusion")


class LossWeights(StrictModel):
    classification: float = Field(0.6, ge=0.0)
    regression: float = Field(0.4, ge=0.0)


class OptimizerConfig(StrictModel):
    type: Literal["adamw", "adam", "sgd"] = "adamw"
    weight_decay: float = Field(0.01, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)


class SchedulerConfig(StrictModel):
    type: Literal[
        "cosine_annealing", "cosine_annealing_warm_restarts", "reduce_on_plateau", "none"
    ] = "cosine_annealing"
    T_max: int = Field(100, ge=1)
    eta_min: float = Field(1e-5, ge=0.0)
    T_0: int = Field(10, ge=1, description="warm restarts: first cycle length (epochs)")
    T_mult: int = Field(2, ge=1, description="warm restarts: cycle growth factor")
    factor: float = Field(0.5, gt=0.0, lt=1.0, description="reduce_on_plateau factor")
    patience: int = Field(5, ge=0, description="reduce_on_plateau patience (epochs)")


class TrainingSection(StrictModel):
    batch_size: int = Field(32, ge=1, le=65536)
    learning_rate: float = Field(1e-3, gt=0.0, le=1.0)
    num_epochs: int = Field(100, ge=1)
    early_stopping_patience: int = Field(10, ge=0)
    gradient_clip_norm: float = Field(1.0, gt=0.0)
    loss_weights: LossWeights = Field(default_factory=LossWeights)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    seed: int = 42
    monitor: Literal["val_loss", "val_sharpe_ratio", "val_fold_mean_sharpe_ratio"] = "val_loss"
    compile: bool = Field(False, description="wrap the model in torch.compile")
    max_train_windows: int | None = Field(
        None, ge=1, description="cap on training windows (most recent kept); None = all"
    )


class AugmentationConfig(StrictModel):
    noise_std: float = Field(0.01, ge=0.0, le=1.0)
    time_shift_max: int = Field(5, ge=0)
    magnitude_warp: bool = True


FEATURE_NAMES = (
    "open", "high", "low", "close", "volume", "returns", "log_returns",
    "rsi", "macd", "bollinger_bands", "atr", "sma", "ema", "stochastic", "obv",
    "wavelet", "fourier", "fractal", "cross_asset",
)  # fmt: skip


class DataSection(StrictModel):
    sequence_length: int = Field(60, ge=2, le=2000)
    prediction_horizon: int = Field(1, ge=1, le=250)
    train_split: float = Field(0.7, gt=0.0, lt=1.0)
    val_split: float = Field(0.15, gt=0.0, lt=1.0)
    test_split: float = Field(0.15, gt=0.0, lt=1.0)
    features: list[str] = Field(
        default_factory=lambda: [
            "open",
            "high",
            "low",
            "close",
            "volume",
            "rsi",
            "macd",
            "bollinger_bands",
        ],
        min_length=1,
    )
    augmentation: AugmentationConfig = Field(default_factory=AugmentationConfig)
    gap_days: int | None = Field(
        None,
        ge=0,
        description="purge gap in bars between splits; default and minimum "
        "sequence_length + prediction_horizon",
    )
    label_threshold: float = Field(
        0.005, ge=0.0, description="forward return above +t is buy, below -t sell, else hold"
    )

    @model_validator(mode="after")
    def _check(self) -> DataSection:
        total = self.train_split + self.val_split + self.test_split
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train_split + val_split + test_split must sum to 1, got {total:g}")
        unknown = [f for f in self.features if f not in FEATURE_NAMES]
        if unknown:
            raise ValueError(f"unknown feature(s) {unknown}; allowed: {list(FEATURE_NAMES)}")
        minimum = self.sequence_length + self.prediction_horizon
        if self.gap_days is not None and self.gap_days < minimum:
            raise ValueError(
                f"gap_days ({self.gap_days}) must be >= sequence_length + prediction_horizon "
                f"({minimum}) so no window straddles two splits"
            )
        return self

    @property
    def purge_gap(self) -> int:
        """Bars left out between consecutive splits."""
        return (
            self.gap_days
            if self.gap_days is not None
            else self.sequence_length + self.prediction_horizon
        )


VALIDATION_METRICS = (
    "accuracy", "precision", "recall", "f1_score", "mse", "mae",
    "sharpe_ratio", "sortino_ratio", "max_drawdown", "calmar_ratio",
)  # fmt: skip


class ValidationSection(StrictModel):
    metrics: list[str] = Field(default_factory=lambda: list(VALIDATION_METRICS[:7]))
    cv_folds: int = Field(5, ge=1, le=50)
    time_series_split: bool = True

    @model_validator(mode="after")
    def _check(self) -> ValidationSection:
        unknown = [m for m in self.metrics if m not in VALIDATION_METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; allowed: {list(VALIDATION_METRICS)}")
        if not self.time_series_split:
            raise ValueError(
                "time_series_split: false would shuffle time and leak the future; only true is supported"
            )
        return self


class HardwareSection(StrictModel):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    mixed_precision: bool | Literal["auto"] = Field(
        True,
        description="true: autocast (fp16 + GradScaler on CUDA, bf16 on CPU); false: fp32; "
        "auto: AMP on CUDA, bf16 on a CPU with native bf16 (avx512_bf16/amx_bf16), else fp32",
    )
    num_workers: int = Field(4, ge=0, le=64)
    pin_memory: bool = True
    nproc_per_node: int = Field(1, ge=1, le=64, description="torchrun processes per node")


class TrainingConfig(StrictModel):
    """The guide's ``config/training.yaml``."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingSection = Field(default_factory=TrainingSection)
    data: DataSection = Field(default_factory=DataSection)
    validation: ValidationSection = Field(default_factory=ValidationSection)
    hardware: HardwareSection = Field(default_factory=HardwareSection)


def load_training_config(
    path: str | Path | None = "config/training.yaml", overrides: dict[str, Any] | None = None
) -> TrainingConfig:
    """Load the guide's training config (defaults when ``path`` is None).

    Args:
        overrides: dotted keys applied before validation, e.g. ``{"training.num_epochs": 3}``.
    """
    if not overrides:
        return load_yaml_model(TrainingConfig, path)
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml_file(path) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    apply_overrides(data, overrides)
    source = f"{path} + training_overrides" if path is not None else "training_overrides"
    return validate_model(TrainingConfig, data, source)
