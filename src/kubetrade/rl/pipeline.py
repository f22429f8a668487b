"""RL training pipeline: one agent per task, then an ensemble step, evaluated on held-out data.

Periods. The env's ``start_date..end_date`` calendar (bars common to all symbols) is cut into
train < validation < test (``split`` in ``rl_training.yaml``). Each period gets its own env whose
fills and marks all lie inside the period; observation windows may look back into earlier bars
(past data only). Features are z-scored with the *training* period's statistics everywhere.
Agents learn on train; their checkpoint (SB3 ``EvalCallback``) and their ensemble weight are
chosen on validation; only :meth:`RLTrainingPipeline.evaluate_ensemble` touches test.

Distributed use (one pipeline task per agent type, then one ensemble task)::

    result = train_single_agent("ppo", env_cfg, train_cfg, prices, features, out_dir)
    ensemble = build_ensemble({r.agent_type: r.path for r in results}, None, env_cfg, train_cfg)
    report = evaluate_ensemble(ensemble, env_cfg, train_cfg, prices, features)

Each task writes ``<out_dir>/<agent_type>/model.zip`` and ``agent.json`` (agent and action type,
validation metrics, periods, feature statistics); :func:`build_ensemble` reads them back.
The periods and their envs are :mod:`kubetrade.rl.periods`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, EvalCallback
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

from kubetrade.config import load_yaml_model
from kubetrade.errors import ConfigError
from kubetrade.rl.actions import ActionMapper
from kubetrade.rl.agents import action_type_for, load_agent, make_agent
from kubetrade.rl.config import (
    BASIC_FEATURES,
    RLTrainingConfig,
    TradingEnvConfig,
    check_agent_type,
)
from kubetrade.rl.ensemble import (
    EnsembleAgent,
    Member,
    buy_and_hold_metrics,
    run_episode,
)
from kubetrade.rl.env import TradingEnvironment
from kubetrade.rl.periods import Periods, period_env, prepare_data, split_periods
from kubetrade.rl.progress import ProgressCallback

__all__ = [
    "AgentResult",
    "Periods",
    "RLTrainingPipeline",
    "build_ensemble",
    "evaluate_ensemble",
    "prepare_data",
    "split_periods",
    "train_single_agent",
]


@dataclass
class AgentResult:
    """What one training task produced."""

    agent_type: str
    action_type: str
    path: Path
    validation: dict[str, float]
    periods: Periods
    feature_stats: tuple[list[float], list[float]] = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def _env_cfg(value: TradingEnvConfig | str | Path | None) -> TradingEnvConfig:
    return (
        value if isinstance(value, TradingEnvConfig) else load_yaml_model(TradingEnvConfig, value)
    )


def _train_cfg(value: RLTrainingConfig | str | Path | None) -> RLTrainingConfig:
    return (
        value if isinstance(value, RLTrainingConfig) else load_yaml_model(RLTrainingConfig, value)
    )


def _metrics_only(result: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in result.items() if isinstance(v, int | float)}


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """``torch.set_num_threads(n)`` for the block, then back (0: leave as is)."""
    import torch

    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_single_agent(
    agent_type: str,
    env_config: TradingEnvConfig | str | Path | None,
    training_config: RLTrainingConfig | str | Path | None,
    prices: pd.DataFrame | None = None,
    features: pd.DataFrame | None = None,
    out_dir: str | Path | None = None,
    total_timesteps: int | None = None,
    eval_freq: int | None = None,
    n_eval_episodes: int | None = None,
) -> AgentResult:
    """Train one agent on the train period; select and score it on validation.

    Writes ``<out_dir>/<agent_type>/model.zip`` and ``agent.json``; returns the same facts.
    """
    env_cfg, train_cfg = _env_cfg(env_config), _train_cfg(training_config)
    agent_type = check_agent_type(agent_type)
    prices, features = prepare_data(env_cfg, prices, features)
    periods = split_periods(env_cfg, train_cfg, prices)
    action_type = action_type_for(agent_type, env_cfg.action_type)
    train_env = period_env(env_cfg, prices, features, periods.train, action_type, training=True)
    stats = train_env.feature_stats
    val_env = period_env(env_cfg, prices, features, periods.validation, action_type, False, stats)

    agent_dir = Path(out_dir or train_cfg.output_dir) / agent_type
    agent_dir.mkdir(parents=True, exist_ok=True)
    params = train_cfg.params_for(agent_type)
    n_envs = int(params["n_envs"])
    model = make_agent(
        agent_type,
        train_env,  # TradingVecEnv of n_envs copies (make_agent vectorises it)
        policy=params.pop("policy"),
        seed=train_cfg.seed,
        device=train_cfg.device,
        verbose=0,
        **params,
    )
    steps = total_timesteps or train_cfg.total_timesteps
    freq = train_cfg.eval_freq if eval_freq is None else eval_freq
    callbacks: list[BaseCallback] = [ProgressCallback(f"rl {agent_type}", steps)]
    if 0 < freq < steps:
        callbacks.append(
            EvalCallback(
                VecMonitor(DummyVecEnv([lambda: val_env])),  # same wrapper type as training
                n_eval_episodes=n_eval_episodes or train_cfg.n_eval_episodes,
                eval_freq=max(freq // n_envs, 1),  # SB3 counts calls: one per vector step
                best_model_save_path=str(agent_dir),
                deterministic=True,
                verbose=0,
            )
        )
    with torch_threads(train_cfg.torch_threads):
        model.learn(total_timesteps=steps, callback=CallbackList(callbacks))
    path = agent_dir / "model.zip"
    best = agent_dir / "best_model.zip"
    final_val = run_episode(val_env, model)
    if best.is_file():  # keep the final weights unless the validation checkpoint beats them
        best_model = load_agent(agent_type, best, device=train_cfg.device)
        best_val = run_episode(val_env, best_model)
        if best_val["total_reward"] > final_val["total_reward"]:
            model, final_val = best_model, best_val
        best.unlink()
    model.save(path)
    result = AgentResult(
        agent_type=agent_type,
        action_type=action_type,
        path=path,
        validation=_metrics_only(final_val),
        periods=periods,
        feature_stats=(stats[0].tolist(), stats[1].tolist()),
    )
    (agent_dir / "agent.json").write_text(json.dumps(result.to_json(), indent=2), encoding="utf-8")
    return result


def _read_agent_json(path: Path) -> dict[str, Any]:
    meta = path.parent / "agent.json" if path.suffix == ".zip" else path / "agent.json"
    return json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else {}


#: ``ensemble_method: auto`` candidates: name -> (method, meta_learning, thompson_sampling)
#: (each is one validation episode of every member; on the make-run agents the two dropped
#: ones, weighted_voting+hedge and equal+hedge, scored below these: docs/benchmarks.md)
COMBINATIONS: dict[str, tuple[str, bool, bool]] = {
    "weighted_voting+hedge+thompson": ("weighted_voting", True, True),
    "weighted_voting": ("weighted_voting", False, False),
    "equal": ("equal", False, False),
    "best": ("best", False, False),
}


def choose_combination(
    members: Sequence[Member],
    sharpe: Mapping[str, float],
    env_cfg: TradingEnvConfig,
    train_cfg: RLTrainingConfig,
    prices: pd.DataFrame | None = None,
    features: pd.DataFrame | None = None,
) -> tuple[str, dict[str, dict[str, float]]]:
    """Score every combination of :data:`COMBINATIONS` on the **validation** period (never
    test); return the best by Sharpe and each one's validation metrics. ``best`` (the member
    with the best validation Sharpe, alone) is a candidate, so the choice never scores below
    it; on a tie the earlier candidate in :data:`COMBINATIONS` order wins."""
    prices, features = prepare_data(env_cfg, prices, features)
    periods = split_periods(env_cfg, train_cfg, prices)
    stats = period_env(env_cfg, prices, features, periods.train, "continuous").feature_stats
    env = period_env(env_cfg, prices, features, periods.validation, "continuous", False, stats)
    mapper = ActionMapper.from_config(env_cfg)
    scores: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    for number, (name, (method, meta, thompson)) in enumerate(COMBINATIONS.items(), 1):
        agent = EnsembleAgent(
            members, sharpe, mapper, method, meta, thompson, settings=train_cfg.ensemble
        )
        scores[name] = _metrics_only(run_episode(env, agent, seed=train_cfg.ensemble.seed))
        print(
            f"[kubetrade] rl ensemble: {number}/{len(COMBINATIONS)} {name} validation "
            f"Sharpe {scores[name]['sharpe_ratio']:.3f}, {time.perf_counter() - started:.0f}s "
            "elapsed",
            flush=True,
        )  # progress: each candidate is a validation episode of every member
    best = max(scores, key=lambda k: scores[k]["sharpe_ratio"])  # first of equals
    return best, scores


def build_ensemble(
    agent_paths: Mapping[str, str | Path],
    validation_metrics: Mapping[str, Mapping[str, float]] | None = None,
    env_config: TradingEnvConfig | str | Path | None = None,
    training_config: RLTrainingConfig | str | Path | None = None,
    ensemble_method: str | None = None,
    meta_learning: bool | None = None,
    thompson_sampling: bool | None = None,
    prices: pd.DataFrame | None = None,
    features: pd.DataFrame | None = None,
) -> EnsembleAgent:
    """Load saved agents and weight them by validation Sharpe.

    Args:
        agent_paths: name -> ``model.zip`` (or its folder). The agent type and validation
            metrics come from the ``agent.json`` beside it; without one the name must be an
            agent type.
        validation_metrics: name -> metrics with ``sharpe_ratio``; overrides ``agent.json``.
        env_config, training_config: configs (objects or YAML paths); the latter's ensemble
            settings apply unless overridden by the three keyword arguments.
        prices, features: the data the agents trained on; only ``ensemble_method: auto``
            reads them (its validation runs; default: embedded data, basic features).

    ``ensemble_method: auto`` resolves to the combination :func:`choose_combination` picks
    on validation; the ensemble keeps the candidates' scores in ``selection``.
    """
    env_cfg, train_cfg = _env_cfg(env_config), _train_cfg(training_config)
    mapper = ActionMapper.from_config(env_cfg)
    members, sharpe = [], {}
    for name, raw in agent_paths.items():
        path = Path(raw)
        meta = _read_agent_json(path)
        model_path = path / "model.zip" if path.is_dir() else path
        agent_type = check_agent_type(meta.get("agent_type", name))
        action_type = meta.get("action_type") or action_type_for(agent_type, env_cfg.action_type)
        metrics = (validation_metrics or {}).get(name) or meta.get("validation")
        if not metrics or "sharpe_ratio" not in metrics:
            raise ConfigError(
                f"no validation sharpe_ratio for agent {name!r}: pass validation_metrics or keep "
                f"the agent.json that train_single_agent wrote next to {model_path}"
            )
        model = load_agent(agent_type, model_path, device=train_cfg.device)
        members.append(Member(name, agent_type, action_type, model))
        sharpe[name] = float(metrics["sharpe_ratio"])
    method = ensemble_method or train_cfg.ensemble_method
    hedge = train_cfg.meta_learning if meta_learning is None else meta_learning
    thompson = train_cfg.thompson_sampling if thompson_sampling is None else thompson_sampling
    selection: dict[str, Any] = {}
    if method == "auto":
        if features is None and not set(env_cfg.features) <= set(BASIC_FEATURES):
            raise ConfigError(
                "ensemble_method auto scores the combinations on the validation period: pass "
                "the agents' prices and features to build_ensemble (the env observes "
                f"{env_cfg.features}), or choose weighted_voting, equal or best"
            )
        chosen, scores = choose_combination(members, sharpe, env_cfg, train_cfg, prices, features)
        method, hedge, thompson = COMBINATIONS[chosen]
        selection = {"chosen": chosen, "validation": scores}
    ensemble = EnsembleAgent(
        members,
        sharpe,
        mapper,
        method=method,
        meta_learning=hedge,
        thompson_sampling=thompson,
        settings=train_cfg.ensemble,
    )
    ensemble.selection = selection
    return ensemble


def evaluate_ensemble(
    ensemble: EnsembleAgent,
    env_config: TradingEnvConfig | str | Path | None,
    training_config: RLTrainingConfig | str | Path | None,
    prices: pd.DataFrame | None = None,
    features: pd.DataFrame | None = None,
    test_episodes: int | None = None,
    render: bool = False,
) -> dict[str, Any]:
    """Score the ensemble, each member and equal-weight buy-and-hold on the **test** period.

    The ensemble runs ``test_episodes`` episodes (its Thompson sampling is seeded per episode;
    headline metrics are means); each member, being deterministic, runs once.
    """
    env_cfg, train_cfg = _env_cfg(env_config), _train_cfg(training_config)
    prices, features = prepare_data(env_cfg, prices, features)
    periods = split_periods(env_cfg, train_cfg, prices)
    stats = period_env(env_cfg, prices, features, periods.train, "continuous").feature_stats

    def test_env(action_type: str) -> TradingEnvironment:
        return period_env(env_cfg, prices, features, periods.test, action_type, False, stats)

    env = test_env("continuous")
    episodes = [
        run_episode(env, ensemble, seed=ensemble.settings.seed + i, render=render)
        for i in range(test_episodes or train_cfg.test_episodes)
    ]
    agents = {
        m.name: _metrics_only(run_episode(test_env(m.action_type), m.model))
        for m in ensemble.members
    }
    headline = {
        key: float(np.mean([e[key] for e in episodes]))
        for key in ("sharpe_ratio", "total_return", "max_drawdown", "mean_turnover", "costs_paid")
    }
    return {
        **headline,
        "episodes": len(episodes),
        "steps": episodes[0]["steps"],
        "period": {"start": periods.test[0], "end": periods.test[1]},
        "weights": dict(zip(ensemble.names, ensemble.prior.tolist(), strict=True)),
        "combination": {
            "method": ensemble.method,
            "meta_learning": ensemble.meta_learning,
            "thompson_sampling": ensemble.thompson_sampling,
            **ensemble.selection,
        },
        "validation_sharpe": ensemble.validation_sharpe,
        "agents": agents,
        "buy_and_hold": buy_and_hold_metrics(env),
        "equity": episodes[0]["equity"],
        "timestamps": episodes[0]["timestamps"],
        "target_weights": episodes[0]["target_weights"],
        "symbols": list(env_cfg.symbols),
    }


class RLTrainingPipeline:
    """The guide's RL pipeline over kubetrade's configs and data.

    Args:
        agent_type: default agent of :meth:`train_agent`.
        environment_config: ``trading_env.yaml`` path or a :class:`TradingEnvConfig`.
        training_config: ``rl_training.yaml`` path or a :class:`RLTrainingConfig`.
        prices: canonical OHLCV table (default: embedded data).
        features: long feature frame (default: :func:`~kubetrade.rl.env.basic_features`).
        output_dir: where agents and the ensemble are saved (default ``output_dir`` of the
            training config).
    """

    def __init__(
        self,
        agent_type: str = "ppo",
        environment_config: TradingEnvConfig | str | Path | None = "config/trading_env.yaml",
        training_config: RLTrainingConfig | str | Path | None = "config/rl_training.yaml",
        prices: pd.DataFrame | None = None,
        features: pd.DataFrame | None = None,
        output_dir: str | Path | None = None,
    ) -> None:
        self.env_config = _env_cfg(environment_config)
        self.training_config = _train_cfg(training_config)
        self.agent_type = check_agent_type(agent_type)
        self.prices, self.features = prepare_data(self.env_config, prices, features)
        self.periods = split_periods(self.env_config, self.training_config, self.prices)
        self.output_dir = Path(output_dir or self.training_config.output_dir)
        self.results: dict[str, AgentResult] = {}

    def make_env(self, period: str = "train", action_type: str | None = None) -> TradingEnvironment:
        """An env over one period (``train`` uses random-start episodes if configured)."""
        bounds = self.periods[period]
        action = action_type or self.env_config.action_type
        stats = None
        if period != "train":
            stats = self.make_env("train", "continuous").feature_stats
        return period_env(
            self.env_config, self.prices, self.features, bounds, action, period == "train", stats
        )

    def train_agent(
        self,
        agent_type: str | None = None,
        total_timesteps: int | None = None,
        eval_freq: int | None = None,
        n_eval_episodes: int | None = None,
    ) -> AgentResult:
        """Train one agent (see :func:`train_single_agent`)."""
        result = train_single_agent(
            agent_type or self.agent_type,
            self.env_config,
            self.training_config,
            self.prices,
            self.features,
            self.output_dir,
            total_timesteps,
            eval_freq,
            n_eval_episodes,
        )
        self.results[result.agent_type] = result
        return result

    def train_ensemble(
        self,
        agent_types: Sequence[str] | None = None,
        total_timesteps: int | None = None,
        eval_freq: int | None = None,
        n_eval_episodes: int | None = None,
        ensemble_method: str | None = None,
        meta_learning: bool | None = None,
        thompson_sampling: bool | None = None,
    ) -> EnsembleAgent:
        """Train each agent type in turn, then combine them; saved under ``output_dir/ensemble``.

        All names are checked before any training, so ``rainbow_dqn`` fails at once.
        """
        names = [check_agent_type(a) for a in (agent_types or self.training_config.agent_types)]
        if len(set(names)) != len(names):
            raise ConfigError(f"agent_types has duplicates: {list(agent_types or [])}")
        results = [
            self.train_agent(name, total_timesteps, eval_freq, n_eval_episodes) for name in names
        ]
        ensemble = build_ensemble(
            {r.agent_type: r.path for r in results},
            None,
            self.env_config,
            self.training_config,
            ensemble_method,
            meta_learning,
            thompson_sampling,
        )
        ensemble.save(self.output_dir / "ensemble")
        return ensemble

    def evaluate_ensemble(
        self, agents: EnsembleAgent, test_episodes: int | None = None, render: bool = False
    ) -> dict[str, Any]:
        """Test-period report of the ensemble (see :func:`evaluate_ensemble`)."""
        return evaluate_ensemble(
            agents,
            self.env_config,
            self.training_config,
            self.prices,
            self.features,
            test_episodes,
            render,
        )
