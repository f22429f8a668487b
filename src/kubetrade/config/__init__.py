"""Typed configuration: one config tree, parsed once from YAML, validated on construction.

- :mod:`kubetrade.config.base`: :class:`StrictModel`, YAML loading, ``KEY=VALUE`` parsing,
  dotted paths, one-line validation errors.
- :mod:`kubetrade.config.training`: ``config/training.yaml`` (the guide's file verbatim).
- :mod:`kubetrade.config.pipeline`: ``config/pipeline.yaml`` (data, quality, tuning step,
  backtest, registry gates, RL features).
- :mod:`kubetrade.config.rl`: ``config/trading_env.yaml`` and ``config/rl_training.yaml``.
- :mod:`kubetrade.config.run`: :class:`~kubetrade.config.run.RunConfig`, all of the above
  resolved once for a pipeline run (imported from there: it reads the tuning file, so it is
  not loaded with this package).
"""

from kubetrade.config.base import (
    StrictModel,
    apply_overrides,
    check_dotted_path,
    flatten,
    format_validation_error,
    load_yaml_model,
    nest_dotted,
    parse_key_values,
    read_yaml_file,
    split_key_value,
    validate_model,
)
from kubetrade.config.pipeline import (
    BacktestConfig,
    DataSourceConfig,
    PipelineConfig,
    QualityConfig,
    RegistryGateConfig,
    TuningStepConfig,
    load_pipeline_config,
)
from kubetrade.config.training import (
    FEATURE_NAMES,
    VALIDATION_METRICS,
    AugmentationConfig,
    CNNConfig,
    DataSection,
    FusionConfig,
    HardwareSection,
    LossWeights,
    LSTMConfig,
    ModelConfig,
    OptimizerConfig,
    SchedulerConfig,
    TrainingConfig,
    TrainingSection,
    ValidationSection,
    load_training_config,
)

__all__ = [
    "StrictModel",
    "TrainingConfig",
    "PipelineConfig",
    "load_yaml_model",
    "validate_model",
    "read_yaml_file",
    "load_training_config",
    "apply_overrides",
    "load_pipeline_config",
    "format_validation_error",
    "flatten",
    "split_key_value",
    "parse_key_values",
    "nest_dotted",
    "check_dotted_path",
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
    "DataSourceConfig",
    "QualityConfig",
    "TuningStepConfig",
    "BacktestConfig",
    "RegistryGateConfig",
]
