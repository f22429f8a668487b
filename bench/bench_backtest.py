"""Benchmark: SMA-crossover backtests per second, kubetrade vs backtesting.py vs vectorbt.

Same data (``backtesting.test.GOOG``, 2148 daily bars), same strategy (long
after SMA(fast) crosses above SMA(slow), short after it crosses below), same
conventions: fill at the next bar's open, all-in whole-share sizing,
commission as a fraction of traded notional on entry and exit, open trade
left open at the end. Each timed call computes the signals and runs one full
backtest (kubetrade: every metric, equity, positions -- its trade table is
built lazily on first access, so a second row times it too; backtesting.py:
``Backtest.run()`` with its stats; vectorbt: ``Portfolio.from_signals`` and
final value, total return, Sharpe and max drawdown). A warm-up call (numba
compilation for kubetrade and vectorbt) is not timed.

    python bench/bench_backtest.py --repeats 20

Prints a markdown table and writes ``bench/results/backtest.json``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from kubetrade.backtest import BacktestingEngine


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _crossings(close: pd.Series, fast: int, slow: int) -> tuple[np.ndarray, np.ndarray]:
    # Same test as backtesting.lib.crossover: strictly below on the previous bar,
    # strictly above on this one.
    fast_ma = close.rolling(fast).mean().to_numpy()
    slow_ma = close.rolling(slow).mean().to_numpy()
    up = np.zeros(close.size, dtype=bool)
    down = np.zeros(close.size, dtype=bool)
    up[1:] = (fast_ma[:-1] < slow_ma[:-1]) & (fast_ma[1:] > slow_ma[1:])
    down[1:] = (slow_ma[:-1] < fast_ma[:-1]) & (slow_ma[1:] > fast_ma[1:])
    return up, down


def run_kubetrade(
    data: pd.DataFrame,
    fast: int,
    slow: int,
    cash: float,
    commission: float,
    with_trades: bool = False,
) -> Callable[[], float]:
    prices = pd.DataFrame(
        {
            "symbol": "GOOG",
            "timestamp": pd.DatetimeIndex(data.index).tz_localize("UTC"),
            "open": data["Open"].to_numpy(),
            "high": data["High"].to_numpy(),
            "low": data["Low"].to_numpy(),
            "close": data["Close"].to_numpy(),
            "volume": data["Volume"].to_numpy(dtype=np.float64),
        }
    )
    engine = BacktestingEngine()
    bar_index = pd.DatetimeIndex(prices["timestamp"])

    def once() -> float:
        up, down = _crossings(data["Close"], fast, slow)
        target = np.where(up, 1.0, np.where(down, -1.0, np.nan))
        signal = pd.Series(target, index=bar_index, name="GOOG")
        result = engine.run_backtest(
            signal,
            prices=prices,
            initial_capital=cash,
            transaction_costs=commission,
            fractional_shares=False,
        )
        if with_trades:
            assert len(result.trades) == result.num_trades
        return result.final_equity

    return once


def run_kubetrade_with_trades(
    data: pd.DataFrame, fast: int, slow: int, cash: float, commission: float
) -> Callable[[], float]:
    return run_kubetrade(data, fast, slow, cash, commission, with_trades=True)


def run_backtesting_py(
    data: pd.DataFrame, fast: int, slow: int, cash: float, commission: float
) -> Callable[[], float]:
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover
    from backtesting.test import SMA

    class SmaCross(Strategy):
        def init(self) -> None:
            self.fast_ma = self.I(SMA, self.data.Close, fast)
            self.slow_ma = self.I(SMA, self.data.Close, slow)

        def next(self) -> None:
            if crossover(self.fast_ma, self.slow_ma):
                self.buy()
            elif crossover(self.slow_ma, self.fast_ma):
                self.sell()

    def once() -> float:
        bt = Backtest(
            data,
            SmaCross,
            cash=cash,
            commission=commission,
            exclusive_orders=True,
            trade_on_close=False,
        )
        return float(bt.run()["Equity Final [$]"])

    return once


def run_vectorbt(
    data: pd.DataFrame, fast: int, slow: int, cash: float, commission: float
) -> Callable[[], float]:
    import vectorbt as vbt

    def once() -> float:
        up, down = _crossings(data["Close"], fast, slow)
        # vectorbt fills on the signal's bar at `price`: shift one bar and use
        # the open to get next-bar-open execution.
        up = np.r_[False, up[:-1]]
        down = np.r_[False, down[:-1]]
        pf = vbt.Portfolio.from_signals(
            data["Close"],
            entries=up,
            exits=np.zeros_like(up),
            short_entries=down,
            short_exits=np.zeros_like(down),
            price=data["Open"],
            fees=commission,
            size=np.inf,
            size_granularity=1.0,
            init_cash=cash,
            upon_opposite_entry="reverse",
            freq="1D",
        )
        pf.total_return()
        pf.sharpe_ratio()
        pf.max_drawdown()
        return float(pf.final_value())

    return once


def _time_interleaved(
    runs: dict[str, Callable[[], float]], repeats: int
) -> dict[str, tuple[float, list[float]]]:
    """Warm each up once (numba compilation, imports), then time them round-robin.

    Interleaving puts every library under the same background load, which
    matters on a shared machine more than the order of a sequential run.
    """
    finals = {label: once() for label, once in runs.items()}
    seconds: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(repeats):
        for label, once in runs.items():
            start = time.perf_counter()
            once()
            seconds[label].append(time.perf_counter() - start)
    return {label: (finals[label], seconds[label]) for label in runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per library")
    parser.add_argument("--fast", type=int, default=10)
    parser.add_argument("--slow", type=int, default=20)
    parser.add_argument("--cash", type=float, default=10_000.0)
    parser.add_argument("--commission", type=float, default=0.002)
    parser.add_argument("--out", type=Path, default=Path("bench/results/backtest.json"))
    args = parser.parse_args()

    # backtesting.py draws a tqdm progress bar per run; it is noise here.
    os.environ.setdefault("TQDM_DISABLE", "1")
    from backtesting.test import GOOG

    warnings.filterwarnings("ignore")
    runners = {
        "kubetrade": run_kubetrade,
        "kubetrade (+ trades table)": run_kubetrade_with_trades,
        "backtesting.py": run_backtesting_py,
        "vectorbt": run_vectorbt,
    }
    packages = {
        "kubetrade": "kubetrade",
        "kubetrade (+ trades table)": "kubetrade",
        "backtesting.py": "backtesting",
        "vectorbt": "vectorbt",
    }
    rows = []
    runs = {}
    for label, factory in runners.items():
        try:
            runs[label] = factory(GOOG, args.fast, args.slow, args.cash, args.commission)
        except ImportError as exc:
            rows.append({"library": label, "version": "not installed", "error": str(exc)})
    for label, (final, seconds) in _time_interleaved(runs, args.repeats).items():
        mean = statistics.fmean(seconds)
        rows.append(
            {
                "library": label,
                "version": _version(packages[label]),
                "mean_seconds": mean,
                "median_seconds": statistics.median(seconds),
                "min_seconds": min(seconds),
                "backtests_per_second": 1.0 / mean,
                "final_equity": final,
            }
        )
    reference = next(r for r in rows if r["library"] == "backtesting.py")
    ours = next(r for r in rows if r["library"] == "kubetrade")
    for row in rows:
        if "mean_seconds" in row:
            row["speedup_vs_backtesting_py"] = reference["mean_seconds"] / row["mean_seconds"]
            row["final_equity_vs_backtesting_py"] = (
                row["final_equity"] / reference["final_equity"] - 1.0
            )

    print(
        f"SMA({args.fast}/{args.slow}) crossover on backtesting.test GOOG ({len(GOOG)} bars), "
        f"cash {args.cash:,.0f}, commission {args.commission}, {args.repeats} timed runs\n"
    )
    print(
        "| library | version | mean ms | median ms | min ms | backtests/s | x backtesting.py "
        "| final equity | vs backtesting.py |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        if "mean_seconds" not in row:
            print(f"| {row['library']} | not installed | | | | | | | |")
            continue
        print(
            f"| {row['library']} | {row['version']} | {row['mean_seconds'] * 1e3:.2f} | "
            f"{row['median_seconds'] * 1e3:.2f} | {row['min_seconds'] * 1e3:.2f} | "
            f"{row['backtests_per_second']:.1f} | "
            f"{row['speedup_vs_backtesting_py']:.1f} | {row['final_equity']:,.2f} | "
            f"{row['final_equity_vs_backtesting_py']:+.2e} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "sma_crossover_goog",
        "bars": len(GOOG),
        "params": vars(args) | {"out": str(args.out)},
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
        "results": rows,
        "kubetrade_speedup_vs_backtesting_py": ours.get("speedup_vs_backtesting_py"),
    }
    args.out.write_text(json.dumps(payload, indent=2, default=str))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
