"""Backtest result types: :class:`BacktestResult`, its metric names and the trade table."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from kubetrade.backtest import metrics as m

__all__ = [
    "EXIT_REASONS",
    "METRIC_NAMES",
    "RESULT_NAMES",
    "BacktestResult",
    "curve_metrics",
    "trades_frame",
]

EXIT_REASONS = ("signal", "stop_loss", "take_profit", "open", "ruin")
# Codes of EXIT_REASONS as the kernel records them (the position in EXIT_REASONS).
REASON_SIGNAL, REASON_STOP, REASON_TAKE, REASON_OPEN, REASON_RUIN = range(5)

METRIC_NAMES = (
    "total_return",
    "cagr",
    "annual_volatility",
    "sharpe_ratio",
    "sortino_ratio",
    "calmar_ratio",
    "max_drawdown",
    "max_drawdown_duration",
    "win_rate",
    "profit_factor",
    "num_trades",
    "turnover",
    "exposure",
    "average_gross_exposure",
    "total_costs",
    "final_equity",
    "buy_and_hold_return",
)


@dataclass(frozen=True)
class BacktestResult:
    """Outcome of one backtest; readable as attributes or as ``res["sharpe_ratio"]``.

    Conventions: returns are fractions (``0.12`` = +12 %); ``max_drawdown`` is
    negative (``-0.25``); ``max_drawdown_duration`` is in bars; ``turnover`` is
    annualized one-way traded notional over equity; ``exposure`` is the fraction
    of bars with any position at the close; ``win_rate`` and ``profit_factor``
    count closed trades only (``nan`` when there are none), ``num_trades``
    counts every trade including ones still open at the end.

    Attributes:
        equity: account equity at each bar's close.
        returns: per-bar returns (the first relative to ``initial_capital``).
        positions: signed weight of each asset at each close (fraction of equity).
        shares: signed share count of each asset at each close.
        trades: one row per round trip (see :data:`EXIT_REASONS`).
        buy_and_hold_equity: equal-weight buy & hold of the same assets, bought
            at the second bar's open (the first fill any signal can get) with the
            same costs, slippage and share rounding, never sold.
        buy_and_hold_metrics: the scalar metrics of that buy & hold curve.
        params: the settings the backtest ran with.
    """

    name: str
    total_return: float
    cagr: float
    annual_volatility: float
    sharpe_ratio: float
    sortino_ratio: float
    calmar_ratio: float
    max_drawdown: float
    max_drawdown_duration: int
    win_rate: float
    profit_factor: float
    num_trades: int
    turnover: float
    exposure: float
    average_gross_exposure: float
    total_costs: float
    final_equity: float
    initial_capital: float
    buy_and_hold_return: float
    equity: pd.Series
    returns: pd.Series
    positions: pd.DataFrame
    shares: pd.DataFrame
    buy_and_hold_equity: pd.Series
    buy_and_hold_metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    # The trade table is built on first access: optimization loops that only
    # read metrics skip the DataFrame construction (a large share of a run).
    trades_source: Callable[[], pd.DataFrame] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def trades(self) -> pd.DataFrame:
        """One row per round trip: symbol, direction, entry/exit time and price,
        size (signed shares at entry), pnl (net of all costs), return_pct, costs,
        bars_held, exit_reason (one of :data:`EXIT_REASONS`)."""
        cached = self.__dict__.get("_trades")
        if cached is None:
            cached = (
                self.trades_source()
                if self.trades_source
                else trades_frame(
                    np.empty((0, 4), dtype=np.int64), np.empty((0, 5)), self.equity.index, []
                )
            )
            object.__setattr__(self, "_trades", cached)
        return cached

    def __getitem__(self, key: str) -> Any:
        if key not in RESULT_NAMES:
            raise KeyError(f"{key!r} is not a backtest result; available: {list(RESULT_NAMES)}")
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in RESULT_NAMES

    def __iter__(self) -> Iterator[str]:
        return iter(RESULT_NAMES)

    def keys(self) -> list[str]:
        """All result names (metrics, series and tables), like ``dict.keys``."""
        return list(RESULT_NAMES)

    def get(self, key: str, default: Any = None) -> Any:
        """``res.get("sharpe_ratio")``, like ``dict.get``."""
        return getattr(self, key) if key in RESULT_NAMES else default

    def metrics(self) -> dict[str, float]:
        """The scalar metrics as plain floats (for MLflow, JSON and reports)."""
        return {name: float(getattr(self, name)) for name in METRIC_NAMES}


RESULT_NAMES = (
    "name",
    *METRIC_NAMES,
    "initial_capital",
    "equity",
    "returns",
    "positions",
    "shares",
    "trades",
    "buy_and_hold_equity",
    "buy_and_hold_metrics",
    "params",
)


def curve_metrics(
    equity: np.ndarray, initial_capital: float, periods_per_year: float, risk_free_rate: float
) -> dict[str, float]:
    """The scalar metrics of an equity curve that starts from ``initial_capital``."""
    path = np.concatenate(([initial_capital], equity))
    rets = m.returns_from_equity(path)
    return {
        "total_return": m.total_return(path),
        "cagr": m.cagr(path, periods_per_year),
        "annual_volatility": m.annual_volatility(rets, periods_per_year),
        "sharpe_ratio": m.sharpe_ratio(rets, risk_free_rate, periods_per_year),
        "sortino_ratio": m.sortino_ratio(rets, risk_free_rate, periods_per_year),
        "calmar_ratio": m.calmar_ratio(path, periods_per_year),
        "max_drawdown": m.max_drawdown(path),
        "max_drawdown_duration": float(m.max_drawdown_duration(path)),
        "final_equity": float(path[-1]),
    }


def trades_frame(
    rec_int: np.ndarray, rec_float: np.ndarray, index: pd.DatetimeIndex, symbols: list[str]
) -> pd.DataFrame:
    """The trade table of :attr:`BacktestResult.trades` from the kernel's trade records."""
    order = np.lexsort((rec_int[:, 0], rec_int[:, 1]))
    rec_int, rec_float = rec_int[order], rec_float[order]
    size = rec_float[:, 0]
    entry_price = rec_float[:, 1]
    reason = rec_int[:, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        return_pct = rec_float[:, 3] / (np.abs(size) * entry_price)
    # copy=False: the record arrays are fresh, and copying them doubles the build time.
    return pd.DataFrame(
        {
            "symbol": np.asarray(symbols, dtype=object)[rec_int[:, 0]],
            "direction": np.asarray(["short", "long"], dtype=object)[(size > 0).astype(np.int64)],
            "entry_time": index[rec_int[:, 1]],
            "exit_time": index[rec_int[:, 2]].where(reason != REASON_OPEN),
            "entry_price": entry_price,
            "exit_price": rec_float[:, 2],
            "size": size,
            "pnl": rec_float[:, 3],
            "return_pct": return_pct,
            "costs": rec_float[:, 4],
            "bars_held": rec_int[:, 2] - rec_int[:, 1],
            "exit_reason": np.asarray(EXIT_REASONS, dtype=object)[reason],
        },
        copy=False,
    )
