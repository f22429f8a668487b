"""Typed configs of the RL stage: ``config/trading_env.yaml`` and ``config/rl_training.yaml``.

Both parse through :func:`kubetrade.config.base.load_yaml_model`, so an unknown key or a bad value
raises :class:`~kubetrade.errors.ConfigError` naming the dotted path, the value and what is
allowed. Agent-type names are checked here too, so a config that asks for ``rainbow_dqn`` fails
when it is loaded, before any training starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import Field, field_validator, model_validator

from kubetrade.config.base import StrictModel, load_yaml_model
from kubetrade.errors import ConfigError

__all__ = [
    "AGENT_TYPES",
    "DEFAULT_AGENT_TYPES",
    "BASIC_FEATURES",
    "RewardConfig",
    "TradingEnvConfig",
    "PolicyConfig",
    "CNNLSTMConfig",
    "PPOParams",
    "A2CParams",
    "SACParams",
    "TD3Params",
    "DQNParams",
    "QRDQNParams",
    "AgentsConfig",
    "SplitConfig",
    "EnsembleConfig",
    "RLTrainingConfig",
    "agent_type_error",
    "check_agent_type",
    "load_trading_env_config",
    "load_rl_training_config",
]

AGENT_TYPES = ("a2c", "dqn", "ppo", "qrdqn", "sac", "td3")
"""Agent types kubetrade can build (stable-baselines3 and sb3-contrib algorithms)."""

BASIC_FEATURES = ("log_return", "hl_range", "volume_zscore", "sma_ratio_20")
"""Features :func:`kubetrade.rl.env.basic_features` computes when no feature frame is given."""

_UNAVAILABLE = {
    "rainbow_dqn": "stable-baselines3 has no Rainbow DQN",
    "rainbow": "stable-baselines3 has no Rainbow DQN",
}


def agent_type_error(name: str) -> str:
    """The one-line refusal for an agent type kubetrade cannot build."""
    reason = _UNAVAILABLE.get(name.lower())
    why = f": {reason}" if reason else ""
    return f"agent type {name!r} is not available{why}; available: {', '.join(AGENT_TYPES)}"


def check_agent_type(name: str) -> str:
    """Return ``name`` lower-cased if it is buildable, else raise ConfigError."""
    if name.lower() not in AGENT_TYPES:
        raise ConfigError(agent_type_error(name))
    return name.lower()


def _check_date(value: str | None, key: str) -> None:
    if value is None:
        return
    try:
        pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{key} {value!r} is not a date; use YYYY-MM-DD") from exc


# ---------------------------------------------------------------- trading_env.yaml
class RewardConfig(StrictModel):
    """Reward weights (the guide's four keys) and the two constants that set their units.

    ``reward = scale * (return_weight * r - drawdown_penalty * max(dd - dd_prev, 0))
    + sharpe_weight * rolling_sharpe - transaction_penalty * turnover``; see
    :mod:`kubetrade.rl.env` for each term.
    """

    sharpe_weight: float = Field(0.4, ge=0.0, description="weight of the rolling per-step Sharpe")
    return_weight: float = Field(0.3, ge=0.0, description="weight of the step's portfolio return")
    drawdown_penalty: float = Field(0.3, ge=0.0, description="weight of the drawdown deepening")
    transaction_penalty: float = Field(0.1, ge=0.0, description="weight of turnover (x equity)")
    sharpe_window: int = Field(20, ge=2, le=10_000, description="bars in the rolling Sharpe")
    scale: float = Field(100.0, gt=0.0, description="return/drawdown unit: 100 = percent")


class TradingEnvConfig(StrictModel):
    """``config/trading_env.yaml``: market, costs, action/observation design, reward."""

    symbols: list[str] = Field(
        default_factory=lambda: ["AAPL", "GOOG", "IBM", "MSFT"], min_length=1
    )
    start_date: str | None = Field("2005-01-01", description="first bar traded (whole run)")
    end_date: str | None = Field("2013-03-01", description="last bar traded (whole run)")
    initial_balance: float = Field(100_000.0, gt=0.0)
    transaction_cost: float = Field(0.001, ge=0.0, lt=0.1, description="fee per traded notional")
    slippage: float = Field(
        0.0005, ge=0.0, lt=0.1, description="adverse fill vs the open, fraction"
    )
    window_size: int = Field(30, ge=1, le=2000, description="bars in each observation")
    action_type: Literal["continuous", "discrete"] = "continuous"
    allow_short: bool = Field(False, description="continuous weights in [-1, 1] instead of [0, 1]")
    max_position: float = Field(1.0, gt=0.0, le=1.0, description="cap on |weight| per asset")
    max_gross_exposure: float = Field(1.0, gt=0.0, le=1.0, description="cap on sum |weights|")
    episode_length: int | None = Field(
        None,
        ge=2,
        description="training episodes start at a random bar and last this many "
        "steps; None = the whole period. Evaluation always uses the whole period",
    )
    features: list[str] = Field(
        default_factory=lambda: list(BASIC_FEATURES),
        description="feature columns to observe; [] = every numeric column of the feature frame",
    )
    reward_config: RewardConfig = Field(default_factory=RewardConfig)

    @model_validator(mode="after")
    def _check(self) -> TradingEnvConfig:
        _check_date(self.start_date, "start_date")
        _check_date(self.end_date, "end_date")
        if (
            self.start_date
            and self.end_date
            and pd.Timestamp(self.start_date) > pd.Timestamp(self.end_date)
        ):
            raise ValueError(f"start_date {self.start_date} is after end_date {self.end_date}")
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError(f"symbols has duplicates: {self.symbols}")
        return self


# ---------------------------------------------------------------- rl_training.yaml
class CNNLSTMConfig(StrictModel):
    """Arguments of :class:`kubetrade.rl.agents.CNNLSTMFeatureExtractor`."""

    features_dim: int = Field(64, ge=1)
    conv_channels: int = Field(16, ge=1, description="channels per conv branch")
    kernel_sizes: list[int] = Field(default_factory=lambda: [3, 5, 7], min_length=1)
    lstm_hidden: int = Field(64, ge=1)

    @field_validator("kernel_sizes")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(k < 1 for k in value):
            raise ValueError(f"kernel_sizes must be positive, got {value}")
        return value


class PolicyConfig(StrictModel):
    """SB3 ``policy_kwargs`` in YAML-friendly form (the guide's network by default)."""

    net_arch: list[int] = Field(default_factory=lambda: [256, 256, 128])
    activation_fn: Literal["relu", "tanh", "elu", "leaky_relu"] = "relu"
    features_extractor: Literal["flatten", "cnn_lstm"] = Field(
        "flatten", description="cnn_lstm = CNNLSTMFeatureExtractor over (window, channels)"
    )
    cnn_lstm: CNNLSTMConfig = Field(default_factory=CNNLSTMConfig)


class _AgentParams(StrictModel):
    policy: Literal["MlpPolicy"] = "MlpPolicy"
    n_envs: int = Field(
        1,
        ge=1,
        le=256,
        description="env copies stepped together (TradingVecEnv); SB3's train_freq, n_steps "
        "and eval counts are per vector step, total_timesteps counts every copy's steps",
    )
    learning_rate: float = Field(3e-4, gt=0.0, le=1.0)
    gamma: float = Field(0.99, ge=0.0, le=1.0)
    policy_kwargs: PolicyConfig = Field(default_factory=PolicyConfig)


class PPOParams(_AgentParams):
    """The guide's PPO arguments."""

    n_steps: int = Field(2048, ge=2)
    batch_size: int = Field(64, ge=2)
    n_epochs: int = Field(10, ge=1)
    gae_lambda: float = Field(0.95, ge=0.0, le=1.0)
    clip_range: float = Field(0.2, gt=0.0)
    ent_coef: float = Field(0.01, ge=0.0)
    vf_coef: float = Field(0.5, ge=0.0)
    max_grad_norm: float = Field(0.5, gt=0.0)


class A2CParams(_AgentParams):
    learning_rate: float = Field(7e-4, gt=0.0, le=1.0)
    n_steps: int = Field(5, ge=1)
    gae_lambda: float = Field(1.0, ge=0.0, le=1.0)
    ent_coef: float = Field(0.0, ge=0.0)
    vf_coef: float = Field(0.5, ge=0.0)
    max_grad_norm: float = Field(0.5, gt=0.0)


class _OffPolicyParams(_AgentParams):
    buffer_size: int = Field(100_000, ge=1)
    learning_starts: int = Field(100, ge=0)
    batch_size: int = Field(256, ge=1)
    tau: float = Field(0.005, gt=0.0, le=1.0)
    train_freq: int = Field(1, ge=1)
    gradient_steps: int = Field(1, ge=-1)


class SACParams(_OffPolicyParams):
    ent_coef: str | float = Field("auto", description="'auto', 'auto_0.1' or a float")


class TD3Params(_OffPolicyParams):
    learning_rate: float = Field(1e-3, gt=0.0, le=1.0)
    policy_delay: int = Field(2, ge=1)
    target_policy_noise: float = Field(0.2, ge=0.0)
    target_noise_clip: float = Field(0.5, ge=0.0)
    action_noise_std: float = Field(0.1, ge=0.0, description="Gaussian exploration noise (0 = off)")


class DQNParams(_OffPolicyParams):
    learning_rate: float = Field(1e-4, gt=0.0, le=1.0)
    batch_size: int = Field(32, ge=1)
    tau: float = Field(1.0, gt=0.0, le=1.0)
    train_freq: int = Field(4, ge=1)
    target_update_interval: int = Field(1000, ge=1)
    exploration_fraction: float = Field(0.1, gt=0.0, le=1.0)
    exploration_initial_eps: float = Field(1.0, ge=0.0, le=1.0)
    exploration_final_eps: float = Field(0.05, ge=0.0, le=1.0)
    max_grad_norm: float = Field(10.0, gt=0.0)


class QRDQNParams(DQNParams):
    learning_rate: float = Field(5e-5, gt=0.0, le=1.0)
    exploration_final_eps: float = Field(0.01, ge=0.0, le=1.0)
    n_quantiles: int = Field(50, ge=1)


class AgentsConfig(StrictModel):
    """Per-agent hyperparameters (SB3 argument names)."""

    ppo: PPOParams = Field(default_factory=PPOParams)
    a2c: A2CParams = Field(default_factory=A2CParams)
    sac: SACParams = Field(default_factory=SACParams)
    td3: TD3Params = Field(default_factory=TD3Params)
    dqn: DQNParams = Field(default_factory=DQNParams)
    qrdqn: QRDQNParams = Field(default_factory=QRDQNParams)


class SplitConfig(StrictModel):
    """Train / validation / test periods inside the env's start_date..end_date.

    Fractions count bars of the common calendar; an explicit date overrides its fraction.
    Train < validation < test, never overlapping.
    """

    validation_fraction: float = Field(0.15, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.15, gt=0.0, lt=1.0)
    validation_start: str | None = None
    test_start: str | None = None

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        if self.validation_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                "validation_fraction + test_fraction must be < 0.9 to leave bars for training, "
                f"got {self.validation_fraction + self.test_fraction:g}"
            )
        _check_date(self.validation_start, "validation_start")
        _check_date(self.test_start, "test_start")
        if (
            self.validation_start
            and self.test_start
            and pd.Timestamp(self.validation_start) >= pd.Timestamp(self.test_start)
        ):
            raise ValueError(
                f"validation_start {self.validation_start} must be before test_start {self.test_start}"
            )
        return self


class EnsembleConfig(StrictModel):
    """Constants of the ensemble's weighting (see :mod:`kubetrade.rl.ensemble`)."""

    weighting: Literal["softmax", "positive"] = Field(
        "softmax", description="validation Sharpe -> weights: softmax(s/T) or max(s,0)/sum"
    )
    temperature: float = Field(1.0, gt=0.0, description="softmax temperature (Sharpe units)")
    hedge_learning_rate: float = Field(0.1, gt=0.0, description="Hedge eta per percent return")
    hedge_fixed_share: float = Field(0.01, ge=0.0, lt=1.0, description="mix toward uniform/step")
    thompson_discount: float = Field(0.98, gt=0.0, le=1.0, description="forgetting per step")
    thompson_prior_std: float = Field(0.01, gt=0.0, description="prior sd of mean step return")
    thompson_draws: int = Field(256, ge=1, le=100_000, description="1 = pick one agent per step")
    seed: int = 0


DEFAULT_AGENT_TYPES: tuple[str, ...] = ("ppo", "sac", "td3", "dqn")
"""The agents a run trains when ``rl_training.yaml`` names none (the one default list)."""


class RLTrainingConfig(StrictModel):
    """``config/rl_training.yaml``: which agents, how long, how they are combined."""

    agent_types: list[str] = Field(default_factory=lambda: list(DEFAULT_AGENT_TYPES), min_length=1)
    total_timesteps: int = Field(3000, ge=1)
    eval_freq: int = Field(1000, ge=0, description="EvalCallback on validation; 0 = off")
    n_eval_episodes: int = Field(1, ge=1)
    ensemble_method: Literal["auto", "weighted_voting", "equal", "best"] = Field(
        "weighted_voting",
        description="auto: the combination (method, Hedge, Thompson sampling) with the best "
        "validation Sharpe, the best member alone among the candidates",
    )
    meta_learning: bool = True
    thompson_sampling: bool = True
    test_episodes: int = Field(1, ge=1)
    seed: int = 42
    device: Literal["cpu", "auto", "cuda"] = Field(
        "cpu", description="SB3 device; MLPs run best on cpu"
    )
    torch_threads: int = Field(
        1,
        ge=0,
        le=256,
        description="torch intra-op threads while an agent trains (0 = leave torch's default). "
        "1: SB3's small MLP batches gain nothing from more, and make run trains the agents "
        "side by side, where extra threads only spin against each other",
    )
    output_dir: str = "runs/rl"
    split: SplitConfig = Field(default_factory=SplitConfig)
    ensemble: EnsembleConfig = Field(default_factory=EnsembleConfig)
    agents: AgentsConfig = Field(default_factory=AgentsConfig)

    @field_validator("agent_types")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        out = []
        for name in value:
            if name.lower() not in AGENT_TYPES:
                raise ValueError(agent_type_error(name))
            out.append(name.lower())
        if len(set(out)) != len(out):
            raise ValueError(f"agent_types has duplicates: {value}")
        return out

    def params_for(self, agent_type: str) -> dict[str, Any]:
        """Hyperparameters of ``agent_type`` as a plain dict (policy_kwargs still a dict)."""
        section: StrictModel = getattr(self.agents, check_agent_type(agent_type))
        return section.model_dump()


def load_trading_env_config(
    path: str | Path | None = "config/trading_env.yaml",
) -> TradingEnvConfig:
    """Load ``config/trading_env.yaml`` (defaults when ``path`` is None)."""
    return load_yaml_model(TradingEnvConfig, path)


def load_rl_training_config(
    path: str | Path | None = "config/rl_training.yaml",
) -> RLTrainingConfig:
    """Load ``config/rl_training.yaml`` (defaults when ``path`` is None)."""
    return load_yaml_model(RLTrainingConfig, path)
