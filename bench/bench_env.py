"""Benchmark: trading-env steps per second, kubetrade vs FinRL vs gym-anytrading.

Same data, same run, random actions drawn up front (so sampling is not timed), episodes reset
when they end (reset time counted):

* multi-asset: the 4 embedded symbols (AAPL, GOOG, IBM, MSFT), 2005-01-01..2012-12-31, with the
  same four features (``kubetrade.rl.env.basic_features``). kubetrade's ``TradingEnvironment``
  (continuous target weights, window 30) vs FinRL's ``StockTradingEnv``
  (``finrl.meta.env_stock_trading.env_stocktrading``, loaded from its file because the
  ``finrl`` package's ``__init__`` imports live-trading extras).
* vectorised: kubetrade's ``TradingVecEnv`` (the form SB3 agents train on) with N copies of the
  same 4-asset env stepped together (``--vec-envs``, default 16 and 64); steps/s counts every
  copy's steps, so it compares env throughput per transition with the single envs.
* single-asset: GOOG, same dates. kubetrade's env (discrete actions) vs gym-anytrading's
  ``StocksEnv`` (window 30).

Rounds alternate between the envs so a busy machine slows them alike; the table reports the
median steps/s over rounds. ::

    python bench/bench_env.py --steps 5000 --rounds 7

Prints a markdown table and writes ``bench/results/env.json``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kubetrade.data.sources import load_embedded, select
from kubetrade.rl.env import TradingEnvironment, basic_features
from kubetrade.rl.vec_env import TradingVecEnv

SYMBOLS = ["AAPL", "GOOG", "IBM", "MSFT"]
FEATURES = ["log_return", "hl_range", "volume_zscore", "sma_ratio_20"]


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _finrl_env_class() -> Any:
    spec = importlib.util.find_spec("finrl")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("finrl is not installed (pip install --no-deps finrl)")
    path = Path(next(iter(spec.submodule_search_locations)))
    path = path / "meta" / "env_stock_trading" / "env_stocktrading.py"
    module_spec = importlib.util.spec_from_file_location("finrl_env_stocktrading", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.StockTradingEnv


def build_envs(
    start: str, end: str, window: int, vec_envs: tuple[int, ...] = ()
) -> dict[str, tuple[Any, Any]]:
    """``label -> (env, action sampler factory)`` for each env that can be built."""
    prices = select(load_embedded(), SYMBOLS, None, end)
    features = basic_features(prices)
    envs: dict[str, tuple[Any, Any]] = {}

    ours = TradingEnvironment.from_config(
        _env_config(SYMBOLS, start, end, window), prices=prices, features=features
    )
    envs["kubetrade (4 assets)"] = (ours, "box")
    for n in vec_envs:
        envs[f"kubetrade TradingVecEnv (4 assets, {n} envs)"] = (TradingVecEnv(ours, n), "vec")

    try:
        finrl_cls = _finrl_env_class()
        df = prices.merge(features, on=["symbol", "timestamp"])
        in_range = (df["timestamp"] >= pd.Timestamp(start, tz="UTC")) & (
            df["timestamp"] <= pd.Timestamp(end, tz="UTC")
        )
        df = df[in_range].dropna().rename(columns={"symbol": "tic", "timestamp": "date"})
        df = df.sort_values(["date", "tic"])
        df["date"] = df["date"].dt.strftime("%Y-%m-%d")
        df.index = df["date"].factorize()[0]
        n = len(SYMBOLS)
        finrl = finrl_cls(
            df=df,
            stock_dim=n,
            hmax=100,
            initial_amount=100_000,
            num_stock_shares=[0] * n,
            buy_cost_pct=[0.001] * n,
            sell_cost_pct=[0.001] * n,
            reward_scaling=1e-4,
            state_space=1 + 2 * n + len(FEATURES) * n,
            action_space=n,
            tech_indicator_list=FEATURES,
            print_verbosity=10**9,
        )
        envs["FinRL StockTradingEnv (4 assets)"] = (finrl, "box")
    except ImportError as exc:
        envs["FinRL StockTradingEnv (4 assets)"] = (None, str(exc))

    single = TradingEnvironment.from_config(
        _env_config(["GOOG"], start, end, window),
        prices=prices,
        features=features,
        action_type="discrete",
    )
    envs["kubetrade (GOOG, discrete)"] = (single, "discrete")
    try:
        from gym_anytrading.envs import StocksEnv

        goog = prices[prices["symbol"] == "GOOG"].set_index("timestamp")
        goog = goog[(goog.index >= pd.Timestamp(start, tz="UTC")) & (goog.index <= end)]
        goog = goog.rename(columns=str.capitalize)
        anytrading = StocksEnv(df=goog, window_size=window, frame_bound=(window, len(goog)))
        envs["gym-anytrading StocksEnv (GOOG)"] = (anytrading, "discrete")
    except ImportError as exc:
        envs["gym-anytrading StocksEnv (GOOG)"] = (None, str(exc))
    return envs


def _env_config(symbols: list[str], start: str, end: str, window: int) -> Any:
    from kubetrade.rl.config import TradingEnvConfig

    return TradingEnvConfig(
        symbols=symbols, start_date=start, end_date=end, window_size=window, features=FEATURES
    )


def _actions(env: Any, steps: int, seed: int) -> list[Any]:
    rng = np.random.default_rng(seed)
    space = env.action_space
    if isinstance(env, TradingVecEnv):  # one batch of actions per vector step
        k = env.num_envs
        return list(rng.uniform(-1.0, 1.0, (max(steps // k, 200), k, *space.shape)))
    if hasattr(space, "n"):
        return [int(a) for a in rng.integers(0, space.n, steps)]
    shape = space.shape
    return list(rng.uniform(-1.0, 1.0, (steps, *shape)).astype(np.float32))


def _timer(env: Any, actions: list[Any]) -> Callable[[], float]:
    if isinstance(env, TradingVecEnv):  # resets itself; steps/s over all copies

        def run_vec() -> float:
            env.seed(0)
            env.reset()
            start = time.perf_counter()
            for action in actions:
                env.step(action)
            return len(actions) * env.num_envs / (time.perf_counter() - start)

        return run_vec

    def run() -> float:
        env.reset(seed=0)
        start = time.perf_counter()
        for action in actions:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        return len(actions) / (time.perf_counter() - start)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000, help="steps per round per env")
    parser.add_argument("--rounds", type=int, default=7, help="alternating timed rounds")
    parser.add_argument("--start", default="2005-01-01")
    parser.add_argument("--end", default="2012-12-31")
    parser.add_argument("--window", type=int, default=30)
    parser.add_argument(
        "--vec-envs", type=int, nargs="*", default=[16, 64], help="TradingVecEnv sizes to time"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/env.json"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    envs = build_envs(args.start, args.end, args.window, tuple(args.vec_envs))
    timers = {
        label: _timer(env, _actions(env, args.steps, seed=1))
        for label, (env, kind) in envs.items()
        if env is not None
    }
    for run in timers.values():  # warm-up, untimed
        run()
    samples: dict[str, list[float]] = {label: [] for label in timers}
    for _ in range(args.rounds):
        for label, run in timers.items():
            samples[label].append(run())

    packages = {
        "kubetrade": "kubetrade",
        "FinRL": "finrl",
        "gym-anytrading": "gym-anytrading",
    }
    rows = []
    for label, (env, kind) in envs.items():
        package = packages[label.split(" ")[0]]
        if env is None:
            rows.append({"env": label, "version": "not installed", "error": kind})
            continue
        rows.append(
            {
                "env": label,
                "version": _version(package),
                "median_steps_per_second": statistics.median(samples[label]),
                "best_steps_per_second": max(samples[label]),
                "rounds": samples[label],
            }
        )
    by_env = {r["env"]: r for r in rows if "median_steps_per_second" in r}
    pairs = {
        "kubetrade (4 assets)": "FinRL StockTradingEnv (4 assets)",
        **{
            f"kubetrade TradingVecEnv (4 assets, {n} envs)": "FinRL StockTradingEnv (4 assets)"
            for n in args.vec_envs
        },
        "kubetrade (GOOG, discrete)": "gym-anytrading StocksEnv (GOOG)",
    }
    speedups = {}
    for ours, peer in pairs.items():
        if ours in by_env and peer in by_env:
            speedups[f"{ours} vs {peer}"] = {
                stat: by_env[ours][f"{stat}_steps_per_second"]
                / by_env[peer][f"{stat}_steps_per_second"]
                for stat in ("median", "best")
            }

    print(
        f"Random-action env steps/s, {args.start}..{args.end}, window {args.window}, "
        f"{args.steps} steps x {args.rounds} alternating rounds (median)\n"
    )
    print("| env | version | steps/s (median) | steps/s (best) |")
    print("|---|---|---:|---:|")
    for row in rows:
        if "median_steps_per_second" not in row:
            print(f"| {row['env']} | not installed | | |")
            continue
        print(
            f"| {row['env']} | {row['version']} | {row['median_steps_per_second']:,.0f} | "
            f"{row['best_steps_per_second']:,.0f} |"
        )
    print()
    for name, value in speedups.items():
        print(f"- {name}: {value['median']:.1f}x (median), {value['best']:.1f}x (best)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "env_steps_per_second",
        "params": vars(args) | {"out": str(args.out)},
        "machine": {
            "python": platform.python_version(),
            "processor": platform.machine(),
            "numpy": np.__version__,
            "gymnasium": _version("gymnasium"),
        },
        "results": rows,
        "speedups": speedups,
    }
    args.out.write_text(json.dumps(payload, indent=2, default=str))
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
