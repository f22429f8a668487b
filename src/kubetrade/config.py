"""Typed configuration.

One config tree, parsed once from YAML, validated on construction. Unknown keys
and bad values raise :class:`~kubetrade.errors.ConfigError` whose one-line
message names the dotted path, the bad value and what is allowed, e.g.::

    config/training.yaml: training.optimizer.typo: unknown key (allowed: type, weight_decay, betas)

``config/training.yaml`` is the guide's file verbatim; the extra keys kubetrade
understands (all optional, with defaults) are documented on each field.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from kubetrade.errors import ConfigError

__all__ = [
    "StrictModel",
    "TrainingConfig",
    "PipelineConfig",
    "load_yaml_model",
    "read_yaml_file",
    "load_training_config",
    "apply_overrides",
    "load_pipeline_config",
    "format_validation_error",
    "flatten",
]

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, values validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ---------------------------------------------------------------- training.yaml
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


# ---------------------------------------------------------------- pipeline.yaml
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
    require_beat_baselines: bool = Field(
        True,
        description="hybrid: beat every naive baseline's test metric; RL ensemble: beat "
        "buy-and-hold after costs on the same test period",
    )


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


# ---------------------------------------------------------------- loading
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_PLAIN_TEXT = re.compile(r"[A-Za-z0-9_ .,:/+\-\[\]]{0,60}")


def _shown_key(part: Any) -> str:
    """A config key as it may appear in an error: plain identifiers only. Anything else (a
    line of some file passed as a config, a secret) is not echoed."""
    text = str(part)
    return text if isinstance(part, int) or _PLAIN_KEY.fullmatch(text) else "<key not shown>"


def _shown_value(value: Any) -> str:
    """A short, bounded repr of a bad value, or '' when it should not be echoed: containers
    (never ``str()``-ed: a YAML alias bomb would take gigabytes), long or unusual text (file
    contents, secrets)."""
    if isinstance(value, bool | int | float) or value is None:
        return repr(value)
    if isinstance(value, date):
        return repr(value.isoformat())
    if isinstance(value, str) and _PLAIN_TEXT.fullmatch(value) and "://" not in value:
        return repr(value)
    return ""


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: ``source: dotted.path: message (got value)``; joined by '; '."""
    parts = []
    for err in exc.errors():
        # a key with whitespace or control characters is quoted, so the message stays one line
        path = ".".join(_shown_key(p) for p in err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            parts.append(f"{path}: unknown key")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        shown = _shown_value(value)
        shown = f" (got {shown})" if shown else ""
        # a whole-model check (no field path) speaks for itself
        parts.append(f"{path}: {msg}{shown}" if path else f"{msg}{shown}")
    return f"{source}: " + "; ".join(parts)


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    current: Any = model
    for part in loc[:-1]:
        field = current.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        current = field.annotation
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
    return list(current.model_fields)


def read_yaml_file(path: str | Path, what: str = "config") -> Any:
    """Parse a YAML file; a missing file or bad YAML is a one-line ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"{what} file not found: {p}; check the path (kubetrade --config, or the "
            "*_config keys in the pipeline config)"
        )
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{p}: not valid YAML (not UTF-8 text: byte {exc.start}); save the file as UTF-8"
        ) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{p}: not valid YAML{where} ({what}); fix the syntax there") from exc


def load_yaml_model(
    model: type[M], path: str | Path | None = None, data: dict[str, Any] | None = None
) -> M:
    """Parse ``path`` (or ``data``) into ``model``; every problem raises ConfigError."""
    source = str(path) if path is not None else model.__name__
    if data is None:
        if path is None:
            return model()
        data = read_yaml_file(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        msg = format_validation_error(exc, source)
        extras = [e for e in exc.errors() if e["type"] == "extra_forbidden"]
        if extras:
            allowed = _allowed_keys(model, tuple(extras[0]["loc"]))
            if allowed:
                msg += f" (allowed: {', '.join(allowed)})"
        raise ConfigError(msg) from None


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
    try:
        return TrainingConfig.model_validate(data)
    except ValidationError as exc:
        msg = format_validation_error(exc, source)
        extras = [e for e in exc.errors() if e["type"] == "extra_forbidden"]
        if extras:
            allowed = _allowed_keys(TrainingConfig, tuple(extras[0]["loc"]))
            if allowed:
                msg += f" (allowed: {', '.join(allowed)})"
        raise ConfigError(msg) from None


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a nested dict in place (``{"a.b": 1}`` -> ``data["a"]["b"] = 1``)."""
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = str(dotted).split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[leaf] = value
    return data


def split_key_value(
    item: str, flag: str, example: str, error: type[Exception] = ConfigError
) -> tuple[str, str]:
    """One ``KEY=VALUE`` option as ``(key, raw value)``; ``error`` names the flag and an example."""
    key, sep, value = str(item).partition("=")
    if not sep or not key.strip():
        raise error(f"{flag} {item!r}: expected KEY=VALUE, e.g. {flag} {example}")
    return key.strip(), value


def parse_key_values(
    items: list[str] | tuple[str, ...] | None, flag: str = "--set", example: str = "a.b=1"
) -> dict[str, Any]:
    """``KEY=VALUE`` options as a dict, values parsed as YAML (numbers, lists, booleans): the
    one parser behind ``--set``, ``--param`` (local), ``--hparam`` and ``torchrun --hparam``."""
    result: dict[str, Any] = {}
    for item in items or []:
        key, value = split_key_value(item, flag, example)
        try:
            result[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or "not valid YAML"
            raise ConfigError(
                f"{flag} {key}=...: {problem}{where}; quote lists like {flag} 'symbols=[AAPL,IBM]'"
            ) from None
        except ValueError:
            # YAML read a date-like value it cannot build (2020-13-01): keep the text, the
            # config's own validation then names the key in one line
            result[key] = value
    return result


def nest_dotted(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}`` (a fresh dict; see :func:`apply_overrides`)."""
    return apply_overrides({}, flat)


def load_pipeline_config(path: str | Path | None = "config/pipeline.yaml") -> PipelineConfig:
    """Load the pipeline config (defaults when ``path`` is None)."""
    return load_yaml_model(PipelineConfig, path)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts/models to ``{"a.b.c": value}`` (for MLflow params)."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    out[prefix.rstrip(".")] = data
    return out
