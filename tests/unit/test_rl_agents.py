"""SB3 agents, the CNN+LSTM extractor, the ensemble's weighting and the RL pipeline."""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from stable_baselines3.common.monitor import Monitor

from kubetrade.data.sources import generate_synthetic
from kubetrade.errors import ConfigError
from kubetrade.rl.actions import ActionMapper
from kubetrade.rl.agents import (
    CNNLSTMFeatureExtractor,
    PPOAgent,
    action_type_for,
    load_agent,
    make_agent,
)
from kubetrade.rl.config import AGENT_TYPES, EnsembleConfig, RLTrainingConfig, TradingEnvConfig
from kubetrade.rl.ensemble import EnsembleAgent, Member, validation_weights
from kubetrade.rl.env import TradingEnvironment
from kubetrade.rl.pipeline import COMBINATIONS, RLTrainingPipeline, build_ensemble
from kubetrade.rl.progress import ProgressPrinter, format_duration
from kubetrade.rl.vec_env import TradingVecEnv

torch.set_num_threads(1)

SMALL_NET = {"net_arch": [16, 16]}


@cache
def prices() -> pd.DataFrame:
    return generate_synthetic(n_symbols=2, n_years=1.5, seed=7)


def make_env(action_type: str) -> TradingEnvironment:
    return TradingEnvironment(
        prices=prices(), window_size=6, action_type=action_type, episode_length=40
    )


def tiny_kwargs(agent_type: str) -> dict[str, Any]:
    if agent_type in ("ppo", "a2c"):
        extra = {"batch_size": 16} if agent_type == "ppo" else {}
        return {"n_steps": 32, **extra}
    return {"learning_starts": 32, "batch_size": 16, "buffer_size": 256}


# ---------------------------------------------------------------- every agent type
@pytest.mark.parametrize("agent_type", AGENT_TYPES)
def test_agent_learns_predicts_and_round_trips(agent_type: str, tmp_path: Path) -> None:
    env = make_env(action_type_for(agent_type))
    model = make_agent(agent_type, env, seed=0, policy_kwargs=SMALL_NET, **tiny_kwargs(agent_type))
    model.learn(total_timesteps=96)
    assert model.num_timesteps >= 96
    obs, _ = env.reset(seed=1)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(np.asarray(action, dtype=env.action_space.dtype))
    env.step(action)
    model.save(tmp_path / "agent.zip")
    loaded = load_agent(agent_type, tmp_path / "agent.zip")
    again, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(action, again)


def test_guide_ppo_arguments_with_cnn_lstm_extractor() -> None:
    env = make_env("continuous")
    agent = PPOAgent(
        env=env,
        policy="MlpPolicy",
        learning_rate=3e-4,
        n_steps=32,
        batch_size=16,
        n_epochs=2,
        gamma=0.99,
        gae_lambda=0.95,
        clip_range=0.2,
        ent_coef=0.01,
        vf_coef=0.5,
        max_grad_norm=0.5,
        policy_kwargs={
            "net_arch": [256, 256, 128],
            "activation_fn": torch.nn.ReLU,
            "features_extractor_class": CNNLSTMFeatureExtractor,
            "features_extractor_kwargs": {"features_dim": 32, "lstm_hidden": 16},
        },
    )
    assert isinstance(agent.policy.features_extractor, CNNLSTMFeatureExtractor)
    assert agent.ent_coef == 0.01  # the guide's value, not SB3's 0.0
    agent.learn(total_timesteps=32)
    obs = torch.as_tensor(env.reset(seed=0)[0][None])
    assert agent.policy.features_extractor(obs).shape == (1, 32)


def test_yaml_policy_kwargs_select_the_extractor() -> None:
    model = make_agent(
        "a2c",
        make_env("continuous"),
        n_steps=8,
        policy_kwargs={"net_arch": [8], "activation_fn": "tanh", "features_extractor": "cnn_lstm"},
    )
    assert isinstance(model.policy.features_extractor, CNNLSTMFeatureExtractor)
    assert model.policy.activation_fn is torch.nn.Tanh


def test_rainbow_dqn_is_refused_not_substituted() -> None:
    message = (
        "agent type 'rainbow_dqn' is not available: stable-baselines3 has no Rainbow DQN; "
        "available: a2c, dqn, ppo, qrdqn, sac, td3"
    )
    with pytest.raises(ConfigError) as err:
        make_agent("rainbow_dqn", make_env("discrete"))
    assert str(err.value) == message
    with pytest.raises(ConfigError, match="needs a discrete action space"):
        make_agent("dqn", make_env("continuous"))
    with pytest.raises(ConfigError, match="unexpected keyword argument 'bogus'"):
        make_agent("ppo", make_env("continuous"), bogus=1)


def test_extractor_needs_a_window_observation() -> None:
    import gymnasium as gym

    with pytest.raises(ConfigError, match="window, channels"):
        CNNLSTMFeatureExtractor(gym.spaces.Box(-1, 1, (12,)))


# ---------------------------------------------------------------- ensemble weighting
class ConstantPolicy:
    """Stands in for a trained agent whose action is fixed (for weighting tests)."""

    def __init__(self, action: Any) -> None:
        self.action = np.asarray(action)

    def predict(self, obs: Any, deterministic: bool = True) -> tuple[np.ndarray, None]:
        return self.action, None


def constant_ensemble(sharpes: dict[str, float], **kwargs: Any) -> EnsembleAgent:
    mapper = ActionMapper(n_assets=2)
    actions = {"long_a": [1.0, -1.0], "long_b": [-1.0, 1.0]}  # continuous, long-only map
    members = [Member(n, "ppo", "continuous", ConstantPolicy(actions[n])) for n in sharpes]  # type: ignore[arg-type]
    return EnsembleAgent(members, sharpes, mapper, **kwargs)


@pytest.mark.parametrize("weighting", ["softmax", "positive"])
def test_validation_weights_sum_to_one_and_favour_the_better_agent(weighting: str) -> None:
    w = validation_weights([1.2, -0.3, 0.4], weighting=weighting)
    assert w.sum() == pytest.approx(1.0)
    assert w[0] > w[2] >= w[1] and (w >= 0).all()
    np.testing.assert_allclose(validation_weights([1, 2], method="equal"), [0.5, 0.5])
    np.testing.assert_array_equal(validation_weights([1, 2], method="best"), [0, 1])


def test_meta_learning_shifts_weight_to_the_agent_that_earned_more() -> None:
    ens = constant_ensemble({"long_a": 0.5, "long_b": 0.5}, thompson_sampling=False)
    obs = np.zeros((6, 10), dtype=np.float32)
    for _ in range(20):
        ens.act(obs)
        ens.observe({"asset_returns": np.array([0.01, -0.01])})  # asset a rises
    assert ens.hedge.sum() == pytest.approx(1.0)
    assert ens.hedge[0] > 0.9
    w = ens.act(obs)
    assert w[0] > w[1]  # the vote now leans to asset a


def test_thompson_sampling_picks_the_agent_with_better_recent_returns() -> None:
    ens = constant_ensemble(
        {"long_a": 0.0, "long_b": 0.0},
        meta_learning=False,
        settings=EnsembleConfig(thompson_draws=1, seed=3),
    )
    obs = np.zeros((6, 10), dtype=np.float32)
    for _ in range(40):
        ens.act(obs)
        ens.observe({"asset_returns": np.array([-0.005, 0.01])})
    mean, sd = ens.posterior()
    assert mean[1] > mean[0] and (sd > 0).all()
    picks = [ens.vote_weights() for _ in range(50)]
    assert all(sorted(p.tolist()) == [0.0, 1.0] for p in picks)  # one agent per step
    assert np.mean([p[1] for p in picks]) > 0.9


def test_ensemble_save_load_keeps_weights(tmp_path: Path) -> None:
    env = make_env("continuous")
    members = [
        Member(t, t, action_type_for(t), make_agent(t, make_env(action_type_for(t)), policy_kwargs=SMALL_NET, **tiny_kwargs(t)))
        for t in ("ppo", "dqn")
    ]  # fmt: skip
    ens = EnsembleAgent(members, {"ppo": 1.0, "dqn": -1.0}, env.mapper)
    ens.save(tmp_path)
    loaded = EnsembleAgent.load(tmp_path)
    np.testing.assert_allclose(loaded.prior, ens.prior)
    assert loaded.prior.sum() == pytest.approx(1.0) and loaded.prior[0] > loaded.prior[1]
    obs, _ = env.reset(seed=0)
    assert env.action_space.contains(loaded.predict(obs)[0])


# ---------------------------------------------------------------- pipeline
def tiny_configs() -> tuple[TradingEnvConfig, RLTrainingConfig]:
    env_cfg = TradingEnvConfig(
        symbols=sorted(prices()["symbol"].unique()),
        start_date=None,
        end_date=None,
        window_size=6,
        episode_length=40,
    )
    train_cfg = RLTrainingConfig.model_validate(
        {
            "agent_types": ["ppo", "dqn"],
            "total_timesteps": 96,
            "eval_freq": 48,
            "agents": {
                "ppo": {"n_steps": 32, "batch_size": 16, "policy_kwargs": SMALL_NET},
                "dqn": {"learning_starts": 32, "policy_kwargs": SMALL_NET},
            },
        }
    )
    return env_cfg, train_cfg


def test_pipeline_trains_weights_and_evaluates_on_held_out_periods(tmp_path: Path) -> None:
    env_cfg, train_cfg = tiny_configs()
    pipe = RLTrainingPipeline("ppo", env_cfg, train_cfg, prices=prices(), output_dir=tmp_path)
    train, val, test = pipe.periods.train, pipe.periods.validation, pipe.periods.test
    assert train[1] < val[0] <= val[1] < test[0] <= test[1]
    for name, (start, end) in {"train": train, "validation": val, "test": test}.items():
        env = pipe.make_env(name)
        first_fill = env.calendar[env.decision_start + 1]
        assert pd.Timestamp(start, tz="UTC") <= first_fill
        assert env.calendar[env.last_bar] <= pd.Timestamp(end, tz="UTC")

    ensemble = pipe.train_ensemble(
        agent_types=["ppo", "dqn"],
        total_timesteps=96,
        eval_freq=48,
        n_eval_episodes=1,
        ensemble_method="weighted_voting",
        meta_learning=True,
        thompson_sampling=True,
    )
    assert ensemble.prior.sum() == pytest.approx(1.0)
    sharpe = ensemble.validation_sharpe
    better = max(sharpe, key=lambda k: sharpe[k])
    assert ensemble.prior[ensemble.names.index(better)] >= 0.5
    assert (tmp_path / "ensemble" / "ensemble.json").is_file()

    results = pipe.evaluate_ensemble(agents=ensemble, test_episodes=2, render=False)
    for key in ("sharpe_ratio", "total_return", "max_drawdown"):
        assert np.isfinite(results[key])
    assert set(results["agents"]) == {"ppo", "dqn"}
    assert results["period"] == {"start": test[0], "end": test[1]}
    assert results["timestamps"][1] > val[1]  # first marked bar is after validation
    assert "sharpe_ratio" in results["buy_and_hold"]

    rebuilt = build_ensemble(
        {"ppo": tmp_path / "ppo", "dqn": tmp_path / "dqn" / "model.zip"},
        {"ppo": {"sharpe_ratio": 2.0}, "dqn": {"sharpe_ratio": -2.0}},
        env_cfg,
        train_cfg,
    )
    assert rebuilt.prior[0] > 0.9


def test_pipeline_refuses_rainbow_before_training(tmp_path: Path) -> None:
    env_cfg, train_cfg = tiny_configs()
    pipe = RLTrainingPipeline("ppo", env_cfg, train_cfg, prices=prices(), output_dir=tmp_path)
    with pytest.raises(ConfigError, match="no Rainbow DQN"):
        pipe.train_ensemble(agent_types=["ppo", "sac", "td3", "rainbow_dqn"])
    assert not any(tmp_path.iterdir())


def test_auto_combination_is_chosen_on_validation_and_never_below_the_best_member(
    tmp_path: Path,
) -> None:
    env_cfg, train_cfg = tiny_configs()
    pipe = RLTrainingPipeline("ppo", env_cfg, train_cfg, prices=prices(), output_dir=tmp_path)
    results = [pipe.train_agent(t, 96, 48, 1) for t in ("ppo", "dqn")]
    ensemble = build_ensemble(
        {r.agent_type: r.path for r in results},
        None,
        env_cfg,
        train_cfg,
        ensemble_method="auto",
        prices=prices(),
    )
    chosen, scores = ensemble.selection["chosen"], ensemble.selection["validation"]
    assert set(scores) == set(COMBINATIONS) and chosen in COMBINATIONS
    assert (ensemble.method, ensemble.meta_learning, ensemble.thompson_sampling) == COMBINATIONS[
        chosen
    ]
    top = max(s["sharpe_ratio"] for s in scores.values())
    assert scores[chosen]["sharpe_ratio"] == top
    # 'best' acts as the best member alone: its validation Sharpe is that member's own
    best_member = max(r.validation["sharpe_ratio"] for r in results)
    assert scores["best"]["sharpe_ratio"] == pytest.approx(best_member, abs=1e-3)
    assert scores[chosen]["sharpe_ratio"] >= best_member - 1e-3
    ensemble.save(tmp_path / "ens")
    loaded = EnsembleAgent.load(tmp_path / "ens")
    assert loaded.method != "auto" and loaded.selection["chosen"] == chosen
    report = pipe.evaluate_ensemble(loaded, test_episodes=1)
    assert report["combination"]["chosen"] == chosen and set(report["agents"]) == {"ppo", "dqn"}


def test_agents_train_on_n_vectorised_copies() -> None:
    env = make_env("continuous")
    model = make_agent("sac", env, seed=0, n_envs=3, policy_kwargs=SMALL_NET, **tiny_kwargs("sac"))
    assert model.n_envs == 3 and isinstance(model.get_env().unwrapped, TradingVecEnv)
    model.learn(total_timesteps=96)
    assert model.num_timesteps >= 96 and model.replay_buffer.size() * 3 >= 96
    with pytest.raises(ConfigError, match="n_envs"):
        make_agent("sac", Monitor(env), n_envs=2, policy_kwargs=SMALL_NET)


def test_progress_callback_prints_rate_and_eta_every_interval() -> None:
    now = [0.0]
    stream = io.StringIO()
    printer = ProgressPrinter("rl sac", 1000, every=10.0, stream=stream, clock=lambda: now[0])
    for step in range(0, 1001, 50):
        now[0] = step * 0.1  # 10 steps/s -> a line each 100 steps
        printer.update(step)
    printer.update(1000, force=True)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11 and all(line.startswith("[kubetrade] rl sac: ") for line in lines)
    assert "500/1,000 steps (50%), 10 steps/s, 50s elapsed, ETA 50s" in lines[4]
    assert "ETA" not in lines[-1] and "(100%)" in lines[-1]
    assert format_duration(3725) == "1h02m" and format_duration(65) == "1m05s"
