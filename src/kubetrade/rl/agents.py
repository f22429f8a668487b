"""RL agents: stable-baselines3 / sb3-contrib models with the guide's arguments.

``PPOAgent``, ``SACAgent``, ``TD3Agent``, ``A2CAgent``, ``DQNAgent`` and ``QRDQNAgent`` *are* SB3
models (subclasses that only change defaults), so ``learn``, ``predict``, ``save`` and ``load``
are SB3's. :func:`make_agent` builds one by name. ``rainbow_dqn`` (and any other name) is refused
with a :class:`~kubetrade.errors.ConfigError`: SB3 has no Rainbow DQN and kubetrade does not
substitute another algorithm silently.

Action spaces: SAC and TD3 need the env's ``continuous`` actions, DQN and QR-DQN its
``discrete`` ones, PPO and A2C take either (:func:`action_type_for`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib import QRDQN
from stable_baselines3 import A2C, DQN, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from kubetrade.errors import ConfigError
from kubetrade.rl.config import (
    A2CParams,
    AgentsConfig,
    DQNParams,
    PolicyConfig,
    PPOParams,
    QRDQNParams,
    SACParams,
    TD3Params,
    check_agent_type,
)

__all__ = [
    "AGENT_CLASSES",
    "A2CAgent",
    "CNNLSTMFeatureExtractor",
    "DQNAgent",
    "PPOAgent",
    "QRDQNAgent",
    "SACAgent",
    "TD3Agent",
    "action_type_for",
    "build_policy_kwargs",
    "load_agent",
    "make_agent",
    "vectorize",
]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
}
_ACTION_TYPES: dict[str, tuple[str, ...]] = {
    "a2c": ("continuous", "discrete"),
    "ppo": ("continuous", "discrete"),
    "sac": ("continuous",),
    "td3": ("continuous",),
    "dqn": ("discrete",),
    "qrdqn": ("discrete",),
}


def action_type_for(agent_type: str, preferred: str = "continuous") -> str:
    """The env ``action_type`` an agent trains on: ``preferred`` when it supports it."""
    supported = _ACTION_TYPES[check_agent_type(agent_type)]
    return preferred if preferred in supported else supported[0]


class CNNLSTMFeatureExtractor(BaseFeaturesExtractor):
    """Multi-scale Conv1d + LSTM over a ``(window, channels)`` observation.

    Parallel ``Conv1d`` branches (one per kernel size, 'same' padding) read the window; their
    concatenated maps feed an LSTM whose last hidden state is joined with the newest row of the
    raw observation (so the current portfolio state reaches the policy directly) and projected to
    ``features_dim``. Use through ``policy_kwargs={"features_extractor_class":
    CNNLSTMFeatureExtractor, "features_extractor_kwargs": {...}}``.
    """

    def __init__(
        self,
        observation_space: gym.Space[Any],
        features_dim: int = 64,
        conv_channels: int = 16,
        kernel_sizes: tuple[int, ...] | list[int] = (3, 5, 7),
        lstm_hidden: int = 64,
    ) -> None:
        shape = getattr(observation_space, "shape", None)
        if shape is None or len(shape) != 2:
            raise ConfigError(
                f"CNNLSTMFeatureExtractor needs a (window, channels) Box observation, got shape "
                f"{shape}; use TradingEnvironment's observation or the 'flatten' extractor"
            )
        super().__init__(observation_space, features_dim)
        _, channels = shape
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv1d(channels, conv_channels, k, padding="same"), nn.ReLU())
            for k in kernel_sizes
        )
        self.lstm = nn.LSTM(conv_channels * len(kernel_sizes), lstm_hidden, batch_first=True)
        self.head = nn.Sequential(nn.Linear(lstm_hidden + channels, features_dim), nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        x = observations.transpose(1, 2)  # (batch, channels, window)
        maps = torch.cat([branch(x) for branch in self.branches], dim=1)
        _, (hidden, _) = self.lstm(maps.transpose(1, 2))
        return self.head(torch.cat([hidden[-1], observations[:, -1, :]], dim=1))


def build_policy_kwargs(policy: PolicyConfig | dict[str, Any] | None) -> dict[str, Any]:
    """SB3 ``policy_kwargs`` from the YAML form (names for activation and extractor).

    A dict already in SB3 form (classes, not names) is returned unchanged.
    """
    if policy is None:
        return {}
    if isinstance(policy, dict):
        if not any(isinstance(policy.get(k), str) for k in ("activation_fn", "features_extractor")):
            return dict(policy)
        policy = PolicyConfig.model_validate(policy)
    out: dict[str, Any] = {
        "net_arch": list(policy.net_arch),
        "activation_fn": _ACTIVATIONS[policy.activation_fn],
    }
    if policy.features_extractor == "cnn_lstm":
        out["features_extractor_class"] = CNNLSTMFeatureExtractor
        out["features_extractor_kwargs"] = policy.cnn_lstm.model_dump()
    return out


def _check_space(agent_type: str, env: Any) -> None:
    if env is None:
        return
    space = env.action_space
    kind = "discrete" if isinstance(space, spaces.Discrete) else "continuous"
    if kind not in _ACTION_TYPES[agent_type]:
        need = _ACTION_TYPES[agent_type][0]
        raise ConfigError(
            f"agent '{agent_type}' needs a {need} action space but the env's is {kind} "
            f"({space}); build the env with action_type='{need}'"
        )


def _sb3_kwargs(agent_type: str, params: dict[str, Any], env: Any) -> dict[str, Any]:
    kwargs = dict(params)
    kwargs["policy_kwargs"] = build_policy_kwargs(kwargs.get("policy_kwargs"))
    if agent_type == "td3":
        std = kwargs.pop("action_noise_std", 0.0)
        if std and env is not None and kwargs.get("action_noise") is None:
            dim = int(np.prod(env.action_space.shape))
            kwargs["action_noise"] = NormalActionNoise(np.zeros(dim), np.full(dim, float(std)))
    if agent_type == "qrdqn" and "n_quantiles" in kwargs:
        kwargs["policy_kwargs"]["n_quantiles"] = kwargs.pop("n_quantiles")
    return kwargs


def vectorize(env: Any, n_envs: int = 1) -> Any:
    """A :class:`TradingEnvironment` as SB3 trains on it: ``n_envs`` copies stepped together in
    numpy (:class:`~kubetrade.rl.vec_env.TradingVecEnv`) under ``VecMonitor`` (episode
    statistics). Any other env is returned unchanged (``n_envs`` must then be 1)."""
    from stable_baselines3.common.vec_env import VecMonitor

    from kubetrade.rl.env import TradingEnvironment
    from kubetrade.rl.vec_env import TradingVecEnv

    if isinstance(env, TradingEnvironment):
        return VecMonitor(TradingVecEnv(env, n_envs))
    if n_envs != 1:
        raise ConfigError(
            f"n_envs {n_envs} needs a TradingEnvironment to copy, got {type(env).__name__}; "
            "pass the env itself (not a wrapper) or n_envs: 1"
        )
    return env


class _AgentMixin:
    """Merges kubetrade's defaults (the guide's for PPO) under the caller's arguments."""

    agent_type: ClassVar[str]
    params_model: ClassVar[type[Any]]

    def __init__(self, env: Any = None, policy: Any = "MlpPolicy", **kwargs: Any) -> None:
        if not kwargs.pop("_init_setup_model", True):  # SB3's load(): saved values win
            merged = {"policy": policy, "env": env, "_init_setup_model": False, **kwargs}
        else:
            _check_space(self.agent_type, env)
            defaults = self.params_model().model_dump(exclude={"policy"})
            params = {**defaults, **kwargs}
            n_envs = params.pop("n_envs", 1)
            if env is not None:
                env = vectorize(env, int(n_envs))
            params.setdefault("device", "cpu")  # SB3's advice for MLP policies
            merged = {"policy": policy, "env": env, **_sb3_kwargs(self.agent_type, params, env)}
        try:
            super().__init__(**merged)
        except TypeError as exc:
            if "unexpected keyword argument" not in str(exc):
                raise
            raise ConfigError(f"agent '{self.agent_type}': {exc}") from None


class PPOAgent(_AgentMixin, PPO):
    """PPO with the guide's defaults (:class:`~kubetrade.rl.config.PPOParams`)."""

    agent_type = "ppo"
    params_model = PPOParams


class A2CAgent(_AgentMixin, A2C):
    """A2C with :class:`~kubetrade.rl.config.A2CParams` defaults."""

    agent_type = "a2c"
    params_model = A2CParams


class SACAgent(_AgentMixin, SAC):
    """SAC with :class:`~kubetrade.rl.config.SACParams` defaults (continuous actions)."""

    agent_type = "sac"
    params_model = SACParams


class TD3Agent(_AgentMixin, TD3):
    """TD3 with :class:`~kubetrade.rl.config.TD3Params` defaults and Gaussian action noise."""

    agent_type = "td3"
    params_model = TD3Params


class DQNAgent(_AgentMixin, DQN):
    """DQN with :class:`~kubetrade.rl.config.DQNParams` defaults (discrete actions)."""

    agent_type = "dqn"
    params_model = DQNParams


class QRDQNAgent(_AgentMixin, QRDQN):
    """QR-DQN (sb3-contrib) with :class:`~kubetrade.rl.config.QRDQNParams` defaults."""

    agent_type = "qrdqn"
    params_model = QRDQNParams


AGENT_CLASSES: dict[str, type[BaseAlgorithm]] = {
    "a2c": A2CAgent,
    "dqn": DQNAgent,
    "ppo": PPOAgent,
    "qrdqn": QRDQNAgent,
    "sac": SACAgent,
    "td3": TD3Agent,
}
assert set(AGENT_CLASSES) == set(AgentsConfig.model_fields)


def make_agent(agent_type: str, env: Any, **kwargs: Any) -> BaseAlgorithm:
    """Build the SB3 model for ``agent_type`` on ``env``.

    ``kwargs`` are SB3 arguments (``learning_rate``, ``policy_kwargs``, ``seed``, ...) on top of
    kubetrade's defaults; ``policy_kwargs`` may use the YAML form of :class:`PolicyConfig`
    (``activation_fn: relu``, ``features_extractor: cnn_lstm``). A :class:`TradingEnvironment`
    is trained on as :func:`vectorize` makes it: ``n_envs`` (default 1) copies in one
    :class:`~kubetrade.rl.vec_env.TradingVecEnv`.

    Raises:
        ConfigError: unknown or unavailable agent type (e.g. ``rainbow_dqn``), an action space
            the algorithm cannot use, or an argument SB3 does not accept.
    """
    return AGENT_CLASSES[check_agent_type(agent_type)](env=env, **kwargs)


def load_agent(
    agent_type: str, path: str | Path, env: Any = None, device: str = "cpu"
) -> BaseAlgorithm:
    """Load a model saved with ``.save(path)``."""
    if not Path(path).is_file() and not Path(f"{path}.zip").is_file():
        raise ConfigError(f"agent file not found: {path}")
    return AGENT_CLASSES[check_agent_type(agent_type)].load(path, env=env, device=device)
