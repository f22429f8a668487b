"""The backtest step: the hybrid model's signals and the RL ensemble's weights through one
engine on the test period, with ``pipeline.backtest``'s capital, costs and risk controls."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from kubetrade.config.run import RunConfig
from kubetrade.pipeline.steps.common import atomic_path, load_trained, read_json, write_json

__all__ = ["backtest_step"]


def backtest_step(
    run: RunConfig,
    ohlcv_path: str | Path,
    bundle_path: str | Path,
    model_dir: str | Path,
    ensemble_eval_path: str | Path,
    report_path: str | Path,
    results_path: str | Path,
) -> dict[str, Any]:
    """Backtest on the held-out test period: the hybrid model's signals and the RL
    ensemble's target weights through one engine (next-open fills, costs, risk
    controls), beside equal-weight buy-and-hold."""
    import numpy as np

    from kubetrade.backtest import BacktestingEngine, write_backtest_report
    from kubetrade.data.splits import load_bundle
    from kubetrade.models import CLASS_POSITIONS
    from kubetrade.training.evaluation import predict

    prices = pd.read_parquet(ohlcv_path)
    bundle = load_bundle(bundle_path)
    start, end = bundle.periods["test"]
    model, _ = load_trained(model_dir)
    probs, _ = predict(model, bundle.test.X, 512, "cpu")
    signal = np.asarray(CLASS_POSITIONS, dtype=float)[probs.argmax(axis=1)]
    hybrid_signals = pd.DataFrame(
        {
            "symbol": bundle.test.symbols,
            "timestamp": pd.to_datetime(bundle.test.timestamps).tz_localize("UTC"),
            "signal": signal,
        }
    )
    engine = BacktestingEngine()
    cfg = run.pipeline.backtest
    common = dict(
        prices=prices, start_date=start, end_date=end, initial_capital=cfg.initial_capital,
        transaction_costs=cfg.transaction_costs, slippage=cfg.slippage,
    )  # fmt: skip
    max_position = cfg.max_position_size or 1.0 / prices["symbol"].nunique()
    results = {
        "hybrid_cnn_lstm": engine.run_backtest(
            hybrid_signals,
            **common,
            max_position_size=max_position,
            stop_loss_pct=cfg.stop_loss_pct,
            take_profit_pct=cfg.take_profit_pct,
            name="hybrid_cnn_lstm",
        ),  # fmt: skip
    }
    rl = read_json(ensemble_eval_path)
    stamps = pd.to_datetime(rl["timestamps"][: len(rl["target_weights"])]).tz_localize("UTC")
    weights = pd.DataFrame(rl["target_weights"], index=stamps, columns=rl["symbols"])
    results["rl_ensemble"] = engine.run_backtest(
        weights, **common, signal_mode="weights", rebalance="every_bar", name="rl_ensemble"
    )
    tmp = atomic_path(report_path)
    write_backtest_report(results, tmp, title=f"kubetrade backtest, test period {start}..{end}")
    os.replace(tmp, report_path)
    summary: dict[str, Any] = {}
    for name, res in results.items():
        m = res.metrics()
        for key in ("total_return", "sharpe_ratio", "max_drawdown", "num_trades"):
            summary[f"{name}_{key}"] = float(m[key])
    bh = results["hybrid_cnn_lstm"]
    summary["buy_and_hold_total_return"] = float(bh["buy_and_hold_return"])
    summary["buy_and_hold_sharpe_ratio"] = float(bh.buy_and_hold_metrics["sharpe_ratio"])
    write_json({name: res.metrics() for name, res in results.items()}, results_path)
    return summary
