""":class:`RunConfig`: everything a pipeline run needs, resolved once and passed to every
step as JSON — the pipeline config, the training config it points at (with its overrides),
the RL configs, and the tune step's search space (overrides applied, checked against the
training config)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from kubetrade.config.base import StrictModel, apply_overrides, load_yaml_model, read_yaml_file
from kubetrade.config.pipeline import PipelineConfig, load_pipeline_config
from kubetrade.config.rl import RLTrainingConfig, TradingEnvConfig
from kubetrade.config.training import TrainingConfig, load_training_config

__all__ = ["RLSection", "RunConfig", "load_run_config", "resolve_search_space"]


class RLSection(StrictModel):
    """The RL stage's two files, validated at load (unknown keys, ``rainbow_dqn`` ...)."""

    trading_env: TradingEnvConfig = Field(default_factory=TradingEnvConfig)
    rl_training: RLTrainingConfig = Field(default_factory=RLTrainingConfig)


class RunConfig(StrictModel):
    """Everything a run needs, resolved once and passed to every step as JSON."""

    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    rl: RLSection = Field(default_factory=RLSection, description="trading_env + rl_training")
    search_space: dict[str, Any] = Field(
        default_factory=dict, description="the tune step's tuning file, overrides applied"
    )

    def to_json(self) -> str:
        return self.model_dump_json()

    def agent_types(self) -> list[str]:
        """RL agent types to train (one pipeline task each)."""
        return list(self.rl.rl_training.agent_types)

    def fold_indices(self) -> list[int]:
        """Walk-forward folds to evaluate (one pipeline task each): ``validation.cv_folds``."""
        return list(range(self.training.validation.cv_folds))

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        return cls.model_validate_json(text)

    @classmethod
    def from_file(cls, path: str | Path) -> RunConfig:
        """The ``run_config`` artifact the pipeline's resolve task writes."""
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))


def load_run_config(
    pipeline_path: str | Path | None = "config/pipeline.yaml",
    overrides: dict[str, Any] | None = None,
) -> RunConfig:
    """Load pipeline.yaml and the files it points at into one :class:`RunConfig`.

    ``overrides`` are dotted keys into the pipeline config (``symbols``, ``source.type`` ...)
    applied before validation. (The run form's values are applied on top by
    :func:`kubetrade.pipeline.steps.load_run_config`.)
    """
    if overrides:
        base: dict[str, Any] = {}
        if pipeline_path is not None:
            base = read_yaml_file(pipeline_path, "pipeline config") or {}
        pipe = load_yaml_model(PipelineConfig, data=apply_overrides(base, overrides))
    else:
        pipe = load_pipeline_config(pipeline_path)
    train = load_training_config(pipe.training_config, pipe.training_overrides)
    # validated now (unknown keys, rainbow_dqn, ...) so a bad file fails before any run
    rl = RLSection(
        trading_env=load_yaml_model(TradingEnvConfig, pipe.trading_env_config),
        rl_training=load_yaml_model(RLTrainingConfig, pipe.rl_training_config),
    )
    space = resolve_search_space(pipe, train)
    return RunConfig(pipeline=pipe, training=train, rl=rl, search_space=space)


def resolve_search_space(pipe: PipelineConfig, train: TrainingConfig) -> dict[str, Any]:
    """The tune step's tuning file with ``tuning.overrides``, checked against the training
    config now (a bad range or a width the model cannot take fails before any run); ``{}``
    when tuning is off."""
    if not pipe.tuning.enabled:
        return {}
    from kubetrade.tuning.spec import apply_spec_overrides, load_tuning_spec

    data = read_yaml_file(pipe.tuning.search_space, "search space") or {}
    spec = load_tuning_spec(apply_spec_overrides(data, pipe.tuning.overrides))
    spec.validate(train.model_dump(mode="json"))
    return spec.to_dict()
