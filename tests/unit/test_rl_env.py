"""TradingEnvironment: gymnasium contract, fill timing, no look-ahead, exact cost accounting."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubetrade.data.sources import generate_synthetic
from kubetrade.errors import ConfigError, DataError, DataSourceError
from kubetrade.rl.actions import ActionMapper
from kubetrade.rl.config import load_rl_training_config, load_trading_env_config
from kubetrade.rl.env import ENV_ID, TradingEnvironment

torch.set_num_threads(1)

N_ASSETS = 3
WINDOW = 5


@cache
def prices() -> pd.DataFrame:
    return generate_synthetic(n_symbols=N_ASSETS, n_years=0.5, seed=11)


def simple_features(px: pd.DataFrame) -> pd.DataFrame:
    """Causal test features: log return and close relative to its 5-bar mean."""
    px = px.sort_values(["symbol", "timestamp"])
    by = px.groupby("symbol")["close"]
    out = px[["symbol", "timestamp"]].copy()
    out["ret"] = np.log(px["close"]).groupby(px["symbol"]).diff()
    out["trend"] = px["close"] / by.transform(lambda s: s.rolling(5).mean()) - 1.0
    return out


def make_env(**options: object) -> TradingEnvironment:
    px = options.pop("prices", prices())
    feats = options.pop("features", simple_features(px))  # type: ignore[arg-type]
    base = {"window_size": WINDOW, "slippage": 0.001, "transaction_cost": 0.002}
    return TradingEnvironment(prices=px, features=feats, **{**base, **options})


# ---------------------------------------------------------------- gymnasium contract
@pytest.mark.parametrize(
    "options",
    [
        {"action_type": "continuous"},
        {"action_type": "discrete"},
        {"action_type": "continuous", "allow_short": True, "episode_length": 20},
        {"action_type": "discrete", "allow_short": True, "episode_length": 20},
    ],
    ids=["continuous", "discrete", "continuous-short", "discrete-short"],
)
def test_check_env_passes(options: dict[str, object]) -> None:
    env = make_env(**options)
    check_env(env, skip_render_check=True)
    assert env.observation_space.shape == (WINDOW, N_ASSETS * 2 + N_ASSETS + 2)


def test_registered_id_builds_the_env() -> None:
    env = gym.make(ENV_ID, prices=prices(), window_size=WINDOW, render_mode="ansi")
    obs, _ = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape
    env.step(env.action_space.sample())
    assert "equity=" in env.render()


def test_guide_constructor_with_embedded_data() -> None:
    env = TradingEnvironment(
        symbols=["AAPL", "GOOG", "MSFT"],
        start_date="2010-01-01",
        end_date="2010-12-31",
        initial_balance=100000,
        transaction_cost=0.001,
        reward_config={
            "sharpe_weight": 0.4,
            "return_weight": 0.3,
            "drawdown_penalty": 0.3,
            "transaction_penalty": 0.1,
        },
    )
    assert env.n_assets == 3
    assert env.calendar[env.decision_start] >= pd.Timestamp("2010-01-01", tz="UTC")
    assert env.calendar[env.last_bar] <= pd.Timestamp("2010-12-31", tz="UTC")


# ---------------------------------------------------------------- timing and look-ahead
action_lists = st.lists(
    st.lists(st.floats(-1.0, 1.0, width=32), min_size=N_ASSETS, max_size=N_ASSETS),
    min_size=1,
    max_size=40,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=action_lists)
def test_orders_fill_at_next_open_with_slippage(actions: list[list[float]]) -> None:
    env = make_env()
    obs, _ = env.reset(seed=0)
    for action in actions:
        t = env.current_bar
        _, _, terminated, truncated, info = env.step(np.asarray(action, dtype=np.float32))
        assert info["decision_bar"] == t and info["fill_bar"] == t + 1
        open_next = env.open_prices[t + 1]
        traded = np.abs(info["fill_prices"] - open_next) > 0
        side = np.sign(info["fill_prices"] - open_next)
        expected = open_next * (1.0 + 0.001 * side)
        np.testing.assert_allclose(info["fill_prices"], expected, rtol=1e-12)
        # a fill never happens at a price the agent has seen: not any close/open <= t
        seen = np.concatenate([env.open_prices[: t + 1].ravel(), env.close_prices[: t + 1].ravel()])
        assert not np.isin(info["fill_prices"][traded], seen).any()
        if terminated or truncated:
            break


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=action_lists, cut=st.integers(0, 30))
def test_observation_uses_only_data_up_to_its_bar(actions: list[list[float]], cut: int) -> None:
    base = make_env()
    k = base.decision_start + cut  # bars after k get garbage in the second env
    px = prices().copy()
    late = px["timestamp"] > base.calendar[k]
    px.loc[late, ["open", "high", "low", "close"]] *= 3.0
    feats = simple_features(prices())
    feats.loc[feats["timestamp"] > base.calendar[k], ["ret", "trend"]] = 99.0
    other = make_env(prices=px, features=feats, feature_stats=base.feature_stats)

    obs_a, _ = base.reset(seed=0)
    obs_b, _ = other.reset(seed=0)
    for action in actions:
        if base.current_bar > k:
            break
        np.testing.assert_array_equal(obs_a, obs_b)  # obs at bar t <= k: only bars <= t
        a = np.asarray(action, dtype=np.float32)
        obs_a, *_, trunc_a, _ = base.step(a)
        obs_b, *_, trunc_b, _ = other.step(a)
        if trunc_a:
            break


def test_last_observation_row_is_the_decision_bar() -> None:
    env = make_env(feature_stats=(np.zeros(N_ASSETS * 2), np.ones(N_ASSETS * 2)))
    obs, info = env.reset(seed=0)
    t = env.decision_start
    feats = simple_features(prices())
    row = feats[feats["timestamp"] == env.calendar[t]].set_index("symbol").sort_index()
    expected = row[["ret", "trend"]].to_numpy().ravel()  # asset-major
    np.testing.assert_allclose(obs[-1, : N_ASSETS * 2], expected, rtol=1e-5)
    np.testing.assert_array_equal(obs[-1, N_ASSETS * 2 :], [0, 0, 0, 1, 0])  # all cash


# ---------------------------------------------------------------- accounting
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(action=st.lists(st.floats(-1.0, 1.0, width=32), min_size=N_ASSETS, max_size=N_ASSETS))
def test_costs_reduce_equity_by_traded_notional_times_cost(action: list[float]) -> None:
    a = np.asarray(action, dtype=np.float32)
    with_cost, free = make_env(transaction_cost=0.004), make_env(transaction_cost=0.0)
    with_cost.reset(seed=0)
    free.reset(seed=0)
    _, _, _, _, info_c = with_cost.step(a)
    _, _, _, _, info_f = free.step(a)
    assert info_c["traded_notional"] == pytest.approx(info_f["traded_notional"], rel=1e-12)
    assert info_c["transaction_cost_paid"] == pytest.approx(info_c["traded_notional"] * 0.004)
    assert info_f["equity"] - info_c["equity"] == pytest.approx(
        info_c["traded_notional"] * 0.004, rel=1e-9, abs=1e-9
    )


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=action_lists)
def test_equity_accounting_is_exact_every_step(actions: list[list[float]]) -> None:
    env = make_env(allow_short=True)
    env.reset(seed=0)
    equity, shares = env.equity, np.zeros(N_ASSETS)
    for action in actions:
        t = env.current_bar
        _, _, terminated, truncated, info = env.step(np.asarray(action, dtype=np.float32))
        o, c = env.open_prices[t + 1], env.close_prices[t + 1]
        equity_open = equity + shares @ (o - env.close_prices[t])
        new_shares = info["weights"] * info["equity"] / c
        expected = (
            equity_open
            - info["transaction_cost_paid"]
            - info["slippage_cost"]
            + new_shares @ (c - o)
        )
        assert info["equity"] == pytest.approx(expected, rel=1e-9)
        assert info["transaction_cost_paid"] == pytest.approx(info["traded_notional"] * 0.002)
        equity, shares = info["equity"], new_shares
        if terminated or truncated:
            break


def test_all_cash_agent_keeps_equity_and_earns_zero_reward() -> None:
    env = make_env(action_type="discrete")
    env.reset(seed=0)
    for _ in range(30):
        _, reward, _, _, info = env.step(0)
        assert info["equity"] == env.config.initial_balance
        assert reward == 0.0 and info["traded_notional"] == 0.0


def test_reward_terms_follow_the_config() -> None:
    only_return = {"sharpe_weight": 0, "return_weight": 1, "drawdown_penalty": 0,
                   "transaction_penalty": 0, "scale": 1}  # fmt: skip
    only_turnover = {**only_return, "return_weight": 0, "transaction_penalty": 1}
    a = np.ones(N_ASSETS, dtype=np.float32)
    env = make_env(reward_config=only_return)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(a)
    assert reward == pytest.approx(info["portfolio_return"])
    env = make_env(reward_config=only_turnover)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(a)
    assert reward == pytest.approx(-info["turnover"]) and info["turnover"] > 0.9


# ---------------------------------------------------------------- actions
def test_action_mapping_caps_and_round_trips() -> None:
    mapper = ActionMapper(n_assets=3, max_position=0.5, max_gross_exposure=0.9)
    w = mapper.from_continuous([1.0, 1.0, 1.0])
    assert np.abs(w).sum() == pytest.approx(0.9) and (w <= 0.5).all()
    np.testing.assert_allclose(mapper.from_continuous(mapper.to_continuous(w)), w, atol=1e-6)
    assert (mapper.from_continuous([-1, -1, -1]) == 0).all()  # long-only: -1 is cash
    table = mapper.discrete_table
    assert table.shape == (5, 3) and (table[0] == 0).all()
    np.testing.assert_allclose(table[1], [0.5, 0, 0])
    np.testing.assert_allclose(table[4], [0.3, 0.3, 0.3])
    short = ActionMapper(n_assets=3, allow_short=True)
    assert short.n_discrete == 8 and short.discrete_table[5, 0] == -1.0


def test_random_start_episodes_are_seeded_and_bounded() -> None:
    env = make_env(episode_length=10)
    starts = {env.reset(seed=s)[1]["bar"] for s in range(5)}
    assert env.reset(seed=3)[1]["bar"] == env.reset(seed=3)[1]["bar"]
    assert len(starts) > 1 and min(starts) >= env.decision_start
    steps, done = 0, False
    while not done:
        *_, terminated, truncated, _ = env.step(env.action_space.sample())
        steps, done = steps + 1, terminated or truncated
    assert steps == 10


def test_whole_period_episode_ends_at_last_bar() -> None:
    env = make_env()
    env.reset(seed=0)
    done, info = False, {}
    while not done:
        *_, terminated, truncated, info = env.step(env.action_space.sample())
        done = terminated or truncated
    assert truncated and info["fill_bar"] == env.last_bar
    with pytest.raises(RuntimeError, match="reset"):
        env.step(env.action_space.sample())


# ---------------------------------------------------------------- errors a user can cause
def test_user_errors_name_the_problem() -> None:
    with pytest.raises(DataSourceError, match="ZZZ"):
        make_env(symbols=["ZZZ"])
    with pytest.raises(DataError, match="rsi_14"):
        make_env(feature_columns=["ret", "rsi_14"])
    with pytest.raises(ConfigError, match="window_sise"):
        make_env(window_sise=3)
    with pytest.raises(ConfigError, match="action_type"):
        make_env(action_type="both")
    holes = simple_features(prices())
    holes.loc[holes.index[60], "ret"] = np.nan
    with pytest.raises(DataError, match="NaN"):
        make_env(features=holes)
    with pytest.raises(DataError, match="usable bar"):
        make_env(end_date=str(prices()["timestamp"].iloc[WINDOW + 3].date()))


def test_shipped_configs_load_and_refuse_rainbow(tmp_path: Path) -> None:
    env_cfg = load_trading_env_config("config/trading_env.yaml")
    assert env_cfg.reward_config.sharpe_weight == 0.4
    train_cfg = load_rl_training_config("config/rl_training.yaml")
    assert train_cfg.agents.ppo.clip_range == 0.2
    bad = tmp_path / "rl.yaml"
    bad.write_text("agent_types: [ppo, rainbow_dqn]\n")
    with pytest.raises(ConfigError, match="stable-baselines3 has no Rainbow DQN"):
        load_rl_training_config(bad)
