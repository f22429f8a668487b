"""Backtesting: numpy/numba engine, shared performance metrics and HTML reports."""

from kubetrade.backtest.engine import (
    EXIT_REASONS,
    METRIC_NAMES,
    BacktestingEngine,
    BacktestResult,
    SignalModel,
)
from kubetrade.backtest.metrics import (
    annual_volatility,
    cagr,
    calmar_ratio,
    max_drawdown,
    max_drawdown_duration,
    sharpe_ratio,
    sortino_ratio,
)
from kubetrade.backtest.report import write_backtest_report

__all__ = [
    "BacktestingEngine",
    "BacktestResult",
    "EXIT_REASONS",
    "METRIC_NAMES",
    "SignalModel",
    "annual_volatility",
    "cagr",
    "calmar_ratio",
    "max_drawdown",
    "max_drawdown_duration",
    "sharpe_ratio",
    "sortino_ratio",
    "write_backtest_report",
]
