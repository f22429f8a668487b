"""Golden trajectories of ``TradingEnvironment`` (issue #17: a faster env must keep rewards and
costs). ``python tests/unit/rl_golden.py`` wrote ``tests/unit/data/rl_env_golden.npz`` from the
env as it was *before* the speed work (commit 226f49c); ``test_rl_vec_env.py`` replays the same
seeded actions through today's env and its vectorised form and compares.

Cases: long-only continuous, short-allowed continuous with caps, discrete; each 400 steps of
random-start 60-step episodes (resets included) on the embedded data's four symbols.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

GOLDEN = Path(__file__).with_name("data") / "rl_env_golden.npz"
CASES: dict[str, dict[str, Any]] = {
    "long": {"action_type": "continuous"},
    "short": {
        "action_type": "continuous",
        "allow_short": True,
        "max_position": 0.6,
        "max_gross_exposure": 0.9,
    },
    "discrete": {"action_type": "discrete"},
}
STEPS = 400
SEED = 7


def make_case_env(name: str) -> Any:
    from kubetrade.rl.config import TradingEnvConfig
    from kubetrade.rl.env import TradingEnvironment

    cfg = TradingEnvConfig(
        symbols=["AAPL", "GOOG", "IBM", "MSFT"],
        start_date="2006-01-01",
        end_date="2008-12-31",
        window_size=10,
        episode_length=60,
        transaction_cost=0.002,
        slippage=0.001,
    )
    return TradingEnvironment.from_config(cfg, **CASES[name])


def case_actions(name: str, env: Any) -> np.ndarray:
    rng = np.random.default_rng(SEED)
    if name == "discrete":
        return rng.integers(0, env.action_space.n, STEPS)
    return rng.uniform(-1.0, 1.0, (STEPS, env.n_assets)).astype(np.float32)


def record(env: Any, actions: np.ndarray) -> dict[str, np.ndarray]:
    """Per step: reward, equity, fee, slippage cost, turnover, done flags, the newest
    observation row; plus the observation at every reset (first rows included)."""
    keys = ("equity", "transaction_cost_paid", "slippage_cost", "turnover", "traded_notional")
    out: dict[str, list[Any]] = {k: [] for k in ("reward", "done", "last_row", "first_obs", *keys)}
    obs, _ = env.reset(seed=SEED)
    out["first_obs"].append(obs)
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        out["reward"].append(reward)
        out["done"].append(terminated or truncated)
        out["last_row"].append(obs[-1])
        for k in keys:
            out[k].append(info[k])
        if terminated or truncated:
            obs, _ = env.reset()
            out["first_obs"].append(obs)
    return {k: np.asarray(v) for k, v in out.items()}


def main() -> None:
    arrays = {}
    for name in CASES:
        env = make_case_env(name)
        for key, value in record(env, case_actions(name, env)).items():
            arrays[f"{name}/{key}"] = value
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(GOLDEN, **arrays)
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
