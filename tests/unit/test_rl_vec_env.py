"""The env's speed work keeps its trajectories: today's ``TradingEnvironment`` and its vectorised
``TradingVecEnv`` replay the golden trajectories recorded from the env before the change
(``tests/unit/rl_golden.py``), and N vectorised copies equal N single envs."""

from __future__ import annotations

import numpy as np
import pytest
from rl_golden import CASES, GOLDEN, SEED, case_actions, make_case_env, record
from stable_baselines3.common.env_checker import check_env
from stable_baselines3.common.vec_env import VecMonitor

from kubetrade.errors import ConfigError
from kubetrade.rl.vec_env import TradingVecEnv

RTOL, ATOL = 1e-9, 1e-9


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN) as z:
        return {k: z[k] for k in z.files}


def _vec_record(vec: TradingVecEnv, actions: np.ndarray, seed: int) -> list[dict[str, list]]:
    """Per copy: the same series as ``record`` (every copy gets the same action each step)."""
    k = vec.num_envs
    keys = ("reward", "done", "last_row", "first_obs", "equity")
    out = [{key: [] for key in keys} for _ in range(k)]
    vec.seed(seed)
    obs = vec.reset()
    for i in range(k):
        out[i]["first_obs"].append(obs[i])
    for action in actions:
        batch = np.repeat(np.asarray(action)[None], k, axis=0)
        obs, rewards, dones, infos = vec.step(batch)
        for i in range(k):
            done = bool(dones[i])
            last = infos[i]["terminal_observation"] if done else obs[i]
            out[i]["reward"].append(rewards[i])
            out[i]["done"].append(done)
            out[i]["last_row"].append(last[-1])
            out[i]["equity"].append(infos[i]["equity"] if done else vec.equity[i])
            if done:
                out[i]["first_obs"].append(obs[i])
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_single_env_replays_the_golden_trajectory(case: str, golden: dict) -> None:
    env = make_case_env(case)
    got = record(env, case_actions(case, env))
    assert golden[f"{case}/done"].sum() >= 5  # resets are part of the replay
    for key, value in got.items():
        np.testing.assert_allclose(value, golden[f"{case}/{key}"], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", list(CASES))
def test_vec_env_replays_the_golden_trajectory(case: str, golden: dict) -> None:
    env = make_case_env(case)
    vec = TradingVecEnv(env, num_envs=1)
    (got,) = _vec_record(vec, case_actions(case, env), SEED)
    for key in ("reward", "done", "last_row", "first_obs", "equity"):
        # rewards are float32 on SB3's VecEnv interface
        rtol = 1e-6 if key == "reward" else RTOL
        np.testing.assert_allclose(
            np.asarray(got[key], dtype=np.float64),
            golden[f"{case}/{key}"],
            rtol=rtol,
            atol=1e-6 if key == "reward" else ATOL,
            err_msg=f"{case}/{key}",
        )


@pytest.mark.parametrize("case", ["long", "short"])
def test_n_vec_copies_equal_n_single_envs_seeded_seed_plus_i(case: str) -> None:
    env = make_case_env(case)
    actions = case_actions(case, env)[:200]
    vec = TradingVecEnv(env, num_envs=3)
    got = _vec_record(vec, actions, seed=100)
    starts = set()
    for i in range(3):
        ref_env = make_case_env(case)
        obs, info = ref_env.reset(seed=100 + i)
        starts.add(info["bar"])
        np.testing.assert_allclose(got[i]["first_obs"][0], obs)
        for t, action in enumerate(actions):
            obs, reward, term, trunc, info = ref_env.step(action)
            assert got[i]["done"][t] == (term or trunc)
            assert got[i]["reward"][t] == pytest.approx(reward, rel=1e-6, abs=1e-6)
            assert got[i]["equity"][t] == pytest.approx(info["equity"], rel=RTOL)
            if term or trunc:
                ref_env.reset()
    assert len(starts) == 3  # the copies really start at different bars


def test_vec_env_signals_truncation_and_passes_sb3_checks() -> None:
    env = make_case_env("long")
    check_env(env, warn=False)
    vec = VecMonitor(TradingVecEnv(env, num_envs=2))
    vec.seed(0)
    obs = vec.reset()
    assert obs.shape == (2, *env.observation_space.shape) and obs.dtype == np.float32
    for _ in range(59):
        obs, _, dones, _ = vec.step(np.zeros((2, env.n_assets), np.float32))
        assert not dones.any()
    obs, _, dones, infos = vec.step(np.zeros((2, env.n_assets), np.float32))
    assert dones.all()
    for info in infos:
        assert info["TimeLimit.truncated"] is True
        assert info["episode"]["l"] == 60
        assert info["terminal_observation"].shape == env.observation_space.shape
    # the next episode starts all cash
    assert np.allclose(obs[:, -1, -2], 1.0) and np.allclose(obs[:, -1, -6:-2], 0.0)


def test_vec_env_refuses_bad_input() -> None:
    env = make_case_env("long")
    with pytest.raises(ConfigError, match="num_envs"):
        TradingVecEnv(env, num_envs=0)
    vec = TradingVecEnv(env, num_envs=2)
    vec.reset()
    with pytest.raises(ValueError, match="non-finite"):
        vec.step(np.full((2, env.n_assets), np.nan, np.float32))
