"""Reinforcement learning: trading environment, SB3 agents, ensemble and training pipeline.

The guide's names: :class:`TradingEnvironment` (gymnasium id ``kubetrade/Trading-v0``),
:class:`PPOAgent` / :class:`SACAgent` / ... (SB3 models), :class:`CNNLSTMFeatureExtractor`,
:class:`RLTrainingPipeline` with ``train_ensemble`` and ``evaluate_ensemble``.
"""

from kubetrade.rl.actions import ActionMapper
from kubetrade.rl.agents import (
    AGENT_CLASSES,
    A2CAgent,
    CNNLSTMFeatureExtractor,
    DQNAgent,
    PPOAgent,
    QRDQNAgent,
    SACAgent,
    TD3Agent,
    action_type_for,
    load_agent,
    make_agent,
)
from kubetrade.rl.config import (
    AGENT_TYPES,
    RewardConfig,
    RLTrainingConfig,
    TradingEnvConfig,
    load_rl_training_config,
    load_trading_env_config,
)
from kubetrade.rl.ensemble import EnsembleAgent, Member, run_episode, validation_weights
from kubetrade.rl.env import ENV_ID, TradingEnvironment, basic_features
from kubetrade.rl.periods import Periods, split_periods
from kubetrade.rl.pipeline import (
    AgentResult,
    RLTrainingPipeline,
    build_ensemble,
    evaluate_ensemble,
    train_single_agent,
)

__all__ = [
    "AGENT_CLASSES",
    "AGENT_TYPES",
    "ENV_ID",
    "A2CAgent",
    "ActionMapper",
    "AgentResult",
    "CNNLSTMFeatureExtractor",
    "DQNAgent",
    "EnsembleAgent",
    "Member",
    "PPOAgent",
    "Periods",
    "QRDQNAgent",
    "RLTrainingConfig",
    "RLTrainingPipeline",
    "RewardConfig",
    "SACAgent",
    "TD3Agent",
    "TradingEnvConfig",
    "TradingEnvironment",
    "action_type_for",
    "basic_features",
    "build_ensemble",
    "evaluate_ensemble",
    "load_agent",
    "load_rl_training_config",
    "load_trading_env_config",
    "make_agent",
    "run_episode",
    "split_periods",
    "train_single_agent",
    "validation_weights",
]
